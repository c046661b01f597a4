"""
Tests for :mod:`xlbridge.engines.local_asr.worker`: the request handler
without I/O, and the child program as a plain subprocess, on Asterisk's
"Allison" prompts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Optional

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.local_asr import worker as asr_worker
from xlbridge.engines.local_asr.pool import worker_env
from xlbridge.engines.local_asr.stream_clock import FRAME_BYTES
from xlbridge.engines.local_asr.wire import (
    AUDIO, CLOSE, EVENTS, FINISH, FINISHED, LOAD, LOADED, OPEN, Framer, Message, audio_payload, dump, encode,
)
from xlbridge.engines.local_asr.worker import Worker
from xlbridge.engines.pocketsphinx.asr import DecoderPool, SphinxModel

from tests.engines.local_asr.speech import (
    DECODERS, LEAD_S, SPEECH_MISSING, FlakyPool, frames_of, prompt, speech_bounds, with_silence,
)


def _request(worker: Worker, kind: int, stream: int, payload: bytes = b"") -> tuple[Message, dict[str, Any]]:
    [wire] = worker.handle(Message(kind, stream, payload))
    [reply] = Framer().feed(wire)
    return reply, json.loads(reply.payload)


def _open(model: Optional[dict[str, Any]] = None, skip: int = 0) -> bytes:
    return dump({"model": model or {"engine": "pocketsphinx"}, "params": {}, "idle": 4, "skip": skip})


class WorkerHandlerTests(SynchronousTestCase):
    skip = SPEECH_MISSING

    def setUp(self) -> None:
        self.logged: list[tuple[str, str]] = []
        self.patch(asr_worker, "log", lambda level, message: self.logged.append((level, message)))

    def test_stream(self) -> None:
        """OPEN, AUDIO in odd batches, FINISH: the final, with the OPEN's skip in its times."""
        worker = Worker(DECODERS)
        clip = prompt("conf-onlyperson")
        frames = frames_of(with_silence(clip))
        reply, body = _request(worker, OPEN, 5, _open(skip=50))
        self.assertEqual((reply.kind, reply.stream, body["events"]), (EVENTS, 5, []))
        events: list[dict[str, Any]] = []
        for i in range(0, len(frames), 37):
            reply, body = _request(worker, AUDIO, 5, audio_payload(frames[i:i + 37]))
            self.assertEqual((reply.kind, body["frames"], body.get("error")), (EVENTS, len(frames[i:i + 37]), None))
            events += body["events"]
        reply, body = _request(worker, FINISH, 5, b"\0" * 100)
        self.assertEqual(reply.kind, FINISHED)
        self.assertNotIn(5, worker.sessions)
        finals = [e for e in events + body["events"] if e["type"] == "transcript" and e["is_final"]]
        self.assertEqual(len(finals), 1)
        self.assertIn("only person", finals[0]["text"])
        self.assertTrue(abs(finals[0]["speech_end"] - (1.0 + LEAD_S + speech_bounds(clip)[1])) < 0.15, finals)

    def test_decoder_crash(self) -> None:
        """A decoder that raises: a retryable error; the next audio gets a fresh one and the same clock."""
        worker = Worker(FlakyPool(DECODERS))
        _request(worker, OPEN, 1, _open())
        first = frames_of(with_silence(prompt("vm-goodbye")))
        _, body = _request(worker, AUDIO, 1, audio_payload(first))
        self.assertEqual(body["error"]["retryable"], True)
        self.assertIn("decoder crashed: RuntimeError('boom')", body["error"]["message"])
        [(level, traceback)] = self.logged
        self.assertEqual(level, "error")
        self.assertIn("RuntimeError: boom", traceback)
        clip = prompt("conf-onlyperson")
        _, body = _request(worker, AUDIO, 1, audio_payload(frames_of(with_silence(clip))))
        self.assertNotIn("error", body)
        [final] = [e for e in body["events"] if e["type"] == "transcript" and e["is_final"]]
        self.assertIn("only person", final["text"])
        expected = len(first) * 0.02 + LEAD_S + speech_bounds(clip)[1]
        self.assertTrue(abs(final["speech_end"] - expected) < 0.15, (final, expected))
        _request(worker, FINISH, 1)

    def test_errors(self) -> None:
        worker = Worker(DecoderPool())
        bad = {"engine": "pocketsphinx", "hmm": "/nonexistent/hmm", "lm": "/x.lm", "dict": "/x.dict"}
        _, body = _request(worker, OPEN, 1, _open(bad))
        self.assertEqual(body["error"]["retryable"], False)
        self.assertIn("'/nonexistent/hmm' is not a directory", body["error"]["message"])
        _, again = _request(worker, AUDIO, 1, audio_payload([b"\0" * FRAME_BYTES]))
        self.assertEqual(again["error"], body["error"])
        reply, body = _request(worker, FINISH, 1)
        self.assertEqual((reply.kind, body["events"], body.get("error")), (FINISHED, [], None))
        _, body = _request(worker, AUDIO, 9, audio_payload([]))
        self.assertIn("stream 9 is not open", body["error"]["message"])
        _, body = _request(worker, AUDIO, 9, b"\0\0\0\0\1")
        self.assertIn("not a skip count and whole frames", body["error"]["message"])
        self.assertEqual(worker.handle(Message(99, 1)), [])
        self.assertEqual(self.logged, [("warn", "ignoring a message of unknown kind 99")])

    def test_load(self) -> None:
        decoders = DecoderPool()
        worker = Worker(decoders)
        models = [{"engine": "pocketsphinx"}, {"engine": "pocketsphinx", "hmm": "/nonexistent"}]
        reply, body = _request(worker, LOAD, 77, dump({"models": models, "count": 1, "idle": 4}))
        self.assertEqual((reply.kind, reply.stream, body["loaded"]), (LOADED, 77, 1))
        self.assertEqual(len(body["errors"]), 1)
        self.assertEqual(decoders.idle(SphinxModel()), 1)
        _, body = _request(worker, LOAD, 78, dump({"models": models[:1], "count": 1, "idle": 4}))
        self.assertEqual((body["loaded"], decoders.loads), (0, 1))


# -- the child program ------------------------------------------------------------------------


class ChildProgramTests(SynchronousTestCase):
    skip = SPEECH_MISSING

    def run_worker(self, requests: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "xlbridge.engines.local_asr.worker"], input=requests,
                              capture_output=True, env=worker_env(), timeout=30)

    def test_requests_on_stdin_replies_on_stdout(self) -> None:
        """Only framed replies on stdout, logs on stderr, exit 0 at end of input."""
        frames = frames_of(with_silence(prompt("conf-onlyperson")))
        wire = encode(OPEN, 3, _open()) + encode(AUDIO, 3, audio_payload(frames)) + encode(FINISH, 3, b"\0\0")
        done = self.run_worker(wire)
        self.assertEqual(done.returncode, 0, done.stderr)
        replies = Framer().feed(done.stdout)
        self.assertEqual([(m.kind, m.stream) for m in replies], [(EVENTS, 3), (EVENTS, 3), (FINISHED, 3)])
        finals = [e["text"] for m in replies for e in json.loads(m.payload)["events"] if e.get("is_final")]
        self.assertEqual(len(finals), 1)
        self.assertIn("conference", finals[0])
        self.assertIn(b"info asr worker", done.stderr)

    def test_close_and_bad_framing(self) -> None:
        done = self.run_worker(encode(CLOSE, 0) + encode(OPEN, 1, _open()))
        self.assertEqual((done.returncode, done.stdout), (0, b""))
        done = self.run_worker(b"\x00\x00\x00\x01garbage")
        self.assertEqual((done.returncode, done.stdout), (2, b""))
        self.assertIn(b"bad framing", done.stderr)
