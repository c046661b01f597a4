"""
The Whisper stream's voice activity detectors: Silero (ONNX, per-caller
state over a shared session) and the WebRTC VAD, on a real prompt.
"""

from __future__ import annotations

import os

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.base import EngineRequestError
from xlbridge.engines.local_asr.stream_clock import FRAME_BYTES
from xlbridge.engines.whisper import vad as vad_module
from xlbridge.engines.whisper.settings import WhisperSettings
from xlbridge.engines.whisper.vad import SileroVAD, make_vad, silero_model_path, tail_pad_frames
from xlbridge.errors import ConfigError
from xlbridge.tools.demo import EN_DIR, load_g722

PROMPT = os.path.join(EN_DIR, "conf-onlyperson.g722")


def frames(samples: np.ndarray) -> list[bytes]:
    data = samples[: len(samples) // 320 * 320].astype(np.int16).tobytes()
    return [data[i:i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]


def decisions(detector: object, audio: np.ndarray) -> list[bool]:
    return [bool(detector.is_speech(f)) for f in frames(audio)]  # type: ignore[attr-defined]


class DetectorTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not os.path.exists(PROMPT):
            self.skipTest("asterisk-core-sounds-en-g722 is not installed")
        self.audio = np.concatenate([np.zeros(16000, np.int16), load_g722(PROMPT), np.zeros(16000, np.int16)])

    def check(self, kind: str) -> list[bool]:
        d = decisions(make_vad(kind), self.audio)
        n = len(d)
        self.assertFalse(any(d[:40]), "voiced in the leading silence")  # first 0.8 s
        self.assertFalse(any(d[-30:]), "voiced in the trailing silence")  # last 0.6 s
        middle = d[60:n - 60]
        self.assertGreater(sum(middle) / len(middle), 0.6)
        return d

    def test_silero_finds_the_speech(self) -> None:
        if silero_model_path() is None:
            self.skipTest("faster-whisper's Silero model is not installed")
        self.check("silero")

    def test_webrtc_finds_the_speech(self) -> None:
        self.check("webrtc")

    def test_silero_callers_keep_their_own_state(self) -> None:
        """Two callers on one shared session: one speaking does not make the other 'voiced'."""
        if silero_model_path() is None:
            self.skipTest("faster-whisper's Silero model is not installed")
        a, b = SileroVAD(), SileroVAD()
        self.assertIs(a.session, b.session)
        speech = frames(self.audio)[50:150]
        quiet = frames(np.zeros(len(speech) * 320, np.int16))
        heard = [(a.is_speech(s), b.is_speech(q)) for s, q in zip(speech, quiet)]
        self.assertTrue(any(x for x, _ in heard))
        self.assertFalse(any(y for _, y in heard))

    def test_unknown_detector(self) -> None:
        e = self.assertRaises(EngineRequestError, make_vad, "magic")
        self.assertIn("silero, webrtc", str(e))

    def test_missing_silero_model_says_what_to_do(self) -> None:
        self.patch(vad_module, "_session", None)
        self.patch(vad_module, "silero_model_path", lambda: None)
        e = self.assertRaises(EngineRequestError, SileroVAD)
        self.assertIn('vad = "webrtc"', str(e))

    def test_tail_pad_only_for_silero(self) -> None:
        self.assertEqual((tail_pad_frames("silero"), tail_pad_frames("webrtc")), (5, 0))

    def test_setting(self) -> None:
        self.assertEqual(WhisperSettings.from_options({"vad": "silero"}).spec("/m").vad, "silero")
        e = self.assertRaises(ConfigError, WhisperSettings.from_options, {"vad": "energy"})
        self.assertIn("local_asr.whisper.vad", str(e))
