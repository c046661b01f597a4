"""
The quick start's main job, run as a user runs it: the demo conversation
must end by itself with exit code 0 and translated speech at the partner.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SkipTest, TestCase

from xlbridge.tools.demo import SCRIPT

from tests.engines.whisper.folders import NO_MODEL_REASON, real_model


class DemoTests(TestCase):
    def test_demo_translates_and_exits_zero(self) -> None:
        if not all(os.path.exists(path) for _, _, path in SCRIPT):
            raise SkipTest("asterisk-core-sounds-en-g722/-es-g722 are not installed")
        if real_model() is None:
            raise SkipTest(NO_MODEL_REASON)
        out = self.mktemp()
        run = subprocess.run(
            [sys.executable, "-m", "xlbridge.tools.demo", "--engines", "local", "--out", out,
             "--monitor", "tcp:0:interface=127.0.0.1"],
            capture_output=True, text=True, timeout=180,
        )
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("engines: asr=whisper, mt=apertium, tts=espeak-ng", run.stdout)
        self.assertRegex(run.stdout, r"7777 \(en\) said: You are currently the only person in this conference")
        self.assertRegex(run.stdout, r"8888 \(es\) said: Por el momento,? usted es la única persona en la conferencia")
        self.assertIn("8888 hears:", run.stdout)
        self.assertIn("7777 hears:", run.stdout)
        self.assertRegex(run.stdout, r"7777 \(en\) -> 8888 \(es\): [1-9]\d* recognised, [1-9]\d* played, translated speech reached")
        self.assertRegex(run.stdout, r"8888 \(es\) -> 7777 \(en\): [1-9]\d* recognised, [1-9]\d* played, translated speech reached")
        self.assertIn("result: OK (both directions translated)", run.stdout)
        self.assertIn("monitor (live captions, listen-in): http://127.0.0.1:", run.stdout)
        for name in ("heard-by-7777.wav", "heard-by-8888.wav"):
            self.assertGreater(os.path.getsize(os.path.join(out, name)), 100_000)
