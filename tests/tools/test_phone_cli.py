"""
Tests for xlbridge.tools.phone_cli, the simulated phone's command line
(``xlbridge-phone``): argument errors exit 1 with a message naming the
problem, before any reactor runs; a run that heard nothing back exits 1
too.  The phone itself is tested in tests/tools/test_phone.py.
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stderr
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from xlbridge.rtp.packet import build
from xlbridge.tools.phone_cli import heard_nothing, main
from xlbridge.tools.recorder import Recorder

USAGE = "usage: xlbridge-phone"


class CommandLineErrorTests(SynchronousTestCase):
    """
    Error exits happen before the reactor runs, so they can be tested here.
    """

    def run_main(self, *argv: str) -> tuple[int, str]:
        err = io.StringIO()
        with redirect_stderr(err):
            status = main(list(argv))
        return status, err.getvalue()

    def test_bad_arguments_exit_1(self) -> None:
        for argv, fragment in [
            ([], "--to"),
            (["--to", "127.0.0.1:7777"], "--play"),
            (["--to", "nowhere", "--tone", "440"], "HOST:PORT"),
            (["--to", "127.0.0.1:99999", "--tone", "440"], "outside"),
            (["--to", "127.0.0.1:7777", "--tone", "440", "--codec", "opus"], "opus"),
            (["--to", "127.0.0.1:7777", "--tone", "440", "--pt", "200"], "0..127"),
            (["--to", "127.0.0.1:7777", "--tone", "20000"], "frequency"),
        ]:
            status, err = self.run_main(*argv)
            self.assertEqual(status, 1, argv)
            self.assertIn(fragment, err, argv)

    def test_unreadable_wav_exit_1(self) -> None:
        status, err = self.run_main("--to", "127.0.0.1:7777", "--play", "/nonexistent/x.wav")
        self.assertEqual(status, 1)
        self.assertIn("cannot read", err)

    def test_port_in_use_exit_1(self) -> None:
        from twisted.internet import reactor

        busy: Any = reactor
        port = busy.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        status, err = self.run_main(
            "--to", "127.0.0.1:7777", "--tone", "440", "--bind", f"127.0.0.1:{port.getHost().port}"
        )
        self.assertEqual(status, 1)
        self.assertIn("cannot bind", err)


class ArgumentErrorTests(SynchronousTestCase):
    """
    More argument errors: each exits 1 with ``xlbridge-phone: error:`` and
    the reason; usage errors also print the usage line.
    """

    def run_main(self, *argv: str) -> tuple[int, str]:
        err = io.StringIO()
        with redirect_stderr(err):
            status = main(list(argv))
        return status, err.getvalue()

    def assertUsageError(self, argv: list[str], fragment: str) -> None:
        status, err = self.run_main(*argv)
        self.assertEqual(status, 1, argv)
        self.assertIn(USAGE, err, argv)
        self.assertIn(f"xlbridge-phone: error: {fragment}", err, argv)

    def test_bad_to(self) -> None:
        for to, fragment in [
            ("127.0.0.1:0", "--to: port 0 is not a destination"),
            ("127.0.0.1:abc", "--to: 'abc' is not a port number"),
            ("127.0.0.1:-1", "--to: port -1 is outside 0..65535"),
            (":7777", "--to: expected HOST:PORT, got ':7777'"),
            ("127.0.0.1", "--to: expected HOST:PORT, got '127.0.0.1'"),
            ("[::1]:99999", "--to: port 99999 is outside 0..65535"),
        ]:
            self.assertUsageError(["--to", to, "--tone", "440"], fragment)

    def test_unresolvable_to(self) -> None:
        """A host name that cannot even be encoded fails without a DNS query."""
        host = "a" * 64 + ".example"
        self.assertUsageError(["--to", f"{host}:7777", "--tone", "440"], f"--to: cannot resolve {host!r}")

    def test_missing_to(self) -> None:
        self.assertUsageError(["--tone", "440"], "the following arguments are required: --to")

    def test_sources(self) -> None:
        to = ["--to", "127.0.0.1:7777"]
        self.assertUsageError(to, "one of the arguments --play --tone is required")
        self.assertUsageError(to + ["--tone", "440", "--play", "x.wav"], "argument --play: not allowed with argument --tone")
        self.assertUsageError(to + ["--tone", "loud"], "argument --tone: invalid float value: 'loud'")

    def test_bad_codec_and_payload_type(self) -> None:
        to = ["--to", "127.0.0.1:7777", "--tone", "440"]
        self.assertUsageError(to + ["--codec", "gsm"], "argument --codec: invalid choice: 'gsm'")
        self.assertUsageError(to + ["--pt", "x"], "argument --pt: invalid int value: 'x'")
        status, err = self.run_main(*to, "--pt", "-1")
        self.assertEqual(status, 1)
        self.assertIn("0..127", err)

    def test_bad_bind_and_tail(self) -> None:
        to = ["--to", "127.0.0.1:7777", "--tone", "440"]
        self.assertUsageError(to + ["--bind", "nowhere"], "--bind: expected HOST:PORT, got 'nowhere'")
        self.assertUsageError(to + ["--bind", "127.0.0.1:65536"], "--bind: port 65536 is outside 0..65535")
        self.assertUsageError(to + ["--tail", "-0.5"], "--tail must be >= 0")
        self.assertUsageError(to + ["--echo-delay", "soon"], "argument --echo-delay: invalid int value")
        self.assertUsageError(to + ["--verbose"], "unrecognized arguments: --verbose")

    def test_bad_tone_duration(self) -> None:
        status, err = self.run_main("--to", "127.0.0.1:7777", "--tone", "440", "--seconds", "-1")
        self.assertEqual(status, 1)
        self.assertIn("xlbridge-phone: error: ", err)
        self.assertIn("seconds", err)

    def test_not_a_wav_exit_1(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        path = os.path.join(base, "x.wav")
        with open(path, "wb") as f:
            f.write(b"not a wav file at all")
        status, err = self.run_main("--to", "127.0.0.1:7777", "--play", path)
        self.assertEqual(status, 1)
        self.assertIn(f"xlbridge-phone: error: {path}", err)


class HeardNothingTests(SynchronousTestCase):
    """
    A run that got no packet back is a failure: the bridge answers every
    20 ms from the first packet it receives, so silence means it never
    heard the phone.
    """

    def test_message_only_when_nothing_came_back(self) -> None:
        silent = Recorder().report(packets_sent=20)
        message = heard_nothing(silent, ("127.0.0.1", 7777))
        assert message is not None
        self.assertTrue(message.startswith("received 0 packets from 127.0.0.1:7777"))
        self.assertNotIn("\n", message)
        answered = Recorder()
        answered.receive(build(118, 1, 320, 9, bytes(640)), 0.0)
        self.assertIsNone(heard_nothing(answered.report(packets_sent=20), ("127.0.0.1", 7777)))


class SilentPeerTests(TestCase):
    """
    The command against a port where nobody answers: exit status 1 and one
    line on stderr, after the usual summary on stdout.
    """

    timeout = 60

    @inlineCallbacks
    def test_exit_1_when_nothing_came_back(self) -> Any:
        from twisted.internet import reactor

        sink: Any = reactor
        port = sink.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")  # reads, never answers
        self.addCleanup(port.stopListening)
        stdout, stderr, status = yield getProcessOutputAndValue(
            sys.executable,
            [
                "-m", "xlbridge.tools.phone_cli", "--to", f"127.0.0.1:{port.getHost().port}",
                "--tone", "440", "--seconds", "0.2", "--tail", "0.2",
            ],
            env=dict(os.environ),
        )
        self.assertEqual(status, 1, stderr)
        self.assertIn(b"packets received:  0", stdout)
        lines = stderr.decode().strip().splitlines()
        self.assertEqual(len(lines), 1, stderr)
        self.assertTrue(lines[0].startswith("xlbridge-phone: error: received 0 packets from 127.0.0.1:"), lines)
