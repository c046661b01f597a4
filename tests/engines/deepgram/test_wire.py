"""
Tests for :mod:`xlbridge.engines.deepgram.wire`: the session that turns
server messages into stream-timed events, and the replay spool; no I/O.
"""

from __future__ import annotations

import json

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from tests.engines.deepgram.fixtures import results
from xlbridge.engines.base import SpeechStarted, Transcript, UtteranceEnd
from xlbridge.engines.deepgram.wire import AudioSpool, DeepgramSession


class SessionTests(SynchronousTestCase):
    def test_interim_and_final(self) -> None:
        s = DeepgramSession()
        [a] = s.receive(results("hello", 0.5, 0.4), now=10.0)
        self.assertEqual(a, Transcript("hello", False, False, 0.5, 0.9, 10.0, 0.9, speech_end=0.9))
        [b] = s.receive(results("hello world", 0.5, 1.0, is_final=True, speech_final=True), now=11.0)
        assert isinstance(b, Transcript)
        self.assertTrue(b.is_final and b.speech_final)
        self.assertEqual((b.start, b.end), (0.5, 1.5))
        self.assertEqual(s.final_end, 1.5)

    def test_speech_end_is_the_last_words_end_not_the_span_end(self) -> None:
        # Deepgram's span covers trailing silence; latency counts from the
        # last word.
        s = DeepgramSession()
        msg = json.loads(results("hi there", 1.0, 2.0, is_final=True))
        msg["channel"]["alternatives"][0]["words"][-1]["end"] = 1.6
        [t] = s.receive(json.dumps(msg), now=5.0)
        assert isinstance(t, Transcript)
        self.assertEqual((t.end, t.speech_end), (3.0, 1.6))
        [u] = s.receive(results("", 3.0, 1.0, is_final=True), now=6.0)
        assert isinstance(u, Transcript)
        self.assertIsNone(u.speech_end)

    def test_empty_interim_dropped_empty_final_kept(self) -> None:
        s = DeepgramSession()
        self.assertEqual(s.receive(results("", 0.0, 1.0), 0.0), [])
        [f] = s.receive(results("", 0.0, 1.0, is_final=True), 0.0)
        assert isinstance(f, Transcript)
        self.assertEqual((f.text, f.is_final), ("", True))

    def test_offset_across_reconnect(self) -> None:
        s = DeepgramSession()
        s.receive(results("one", 0.0, 1.0, is_final=True), 0.0)
        s.connection_opened(offset=2.5, request_id="r2")
        [t] = s.receive(results("two", 0.25, 0.5, is_final=True), 0.0)
        assert isinstance(t, Transcript)
        self.assertEqual((t.start, t.end), (2.75, 3.25))
        self.assertEqual(s.final_end, 3.25)
        [u] = s.receive(json.dumps({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 1.0}), 5.0)
        self.assertEqual(u, UtteranceEnd(3.5, 5.0))
        [v] = s.receive(json.dumps({"type": "SpeechStarted", "channel": [0, 1], "timestamp": 0.5}), 6.0)
        self.assertEqual(v, SpeechStarted(3.0, 6.0))

    def test_unknown_types_skipped(self) -> None:
        s = DeepgramSession()
        self.assertEqual(s.receive(json.dumps({"type": "Whatever", "x": 1}), 0.0), [])
        self.assertEqual(s.receive(json.dumps({"no_type": 1}), 0.0), [])
        self.assertEqual((s.unknown, s.malformed), (2, 0))

    def test_malformed_counted(self) -> None:
        s = DeepgramSession()
        bad = ["{not json", "[1, 2]", b"\xff\xfe", json.dumps({"type": "Results"}),
               json.dumps({"type": "Results", "start": "x", "duration": 1, "channel": {"alternatives": []}}),
               '{"type": "Results", "start": NaN, "duration": 1, "channel": {"alternatives": []}}',
               json.dumps({"type": "Results", "start": 0, "duration": 1, "channel": {"alternatives": [1]}}),
               json.dumps({"type": "UtteranceEnd"}), json.dumps({"type": "SpeechStarted", "timestamp": None})]
        for b in bad:
            self.assertEqual(s.receive(b, 0.0), [])
        self.assertEqual(s.malformed, len(bad))

    def test_metadata_and_error(self) -> None:
        s = DeepgramSession()
        self.assertEqual(s.receive(json.dumps({"type": "Metadata", "request_id": "abc", "duration": 2.0}), 0), [])
        self.assertEqual(s.request_id, "abc")
        s.receive(json.dumps({"type": "Error", "description": "boom", "variant": "DATA-0000"}), 0)
        self.assertEqual(s.last_error, "DATA-0000 boom")
        self.flushLoggedErrors()

    def test_bytes_accepted(self) -> None:
        [t] = DeepgramSession().receive(results("hi", 0, 1, is_final=True).encode(), 0)
        assert isinstance(t, Transcript)
        self.assertEqual(t.text, "hi")


class SpoolTests(SynchronousTestCase):
    def test_chunks_and_remainder(self) -> None:
        sp = AudioSpool(chunk=640, capacity=16000)
        self.assertEqual(sp.push(np.ones(500, np.int16)), [])
        cs = sp.push(np.ones(1000, np.int16))
        self.assertEqual([(c.position, len(c.samples)) for c in cs], [(0, 640), (640, 640)])
        tail = sp.flush(minimum=320)
        assert tail is not None
        self.assertEqual((tail.position, len(tail.samples)), (1280, 320))
        self.assertEqual(int(tail.samples[219]), 1)
        self.assertEqual(int(tail.samples[220]), 0)
        self.assertIsNone(sp.flush(320))

    def test_bound_counts_only_unsent(self) -> None:
        sp = AudioSpool(chunk=640, capacity=6400)
        for c in sp.push(np.zeros(6400, np.int16)):
            c.sent = True
        sp.push(np.zeros(6400, np.int16))
        sp.trim()
        self.assertEqual(sp.dropped_samples, 0)
        self.assertEqual(sp.held, 6400)
        sp.push(np.zeros(1280, np.int16))
        sp.trim()
        self.assertEqual(sp.dropped_samples, 1280)
        self.assertEqual(sp.held, 6400)

    def test_replay_after_final(self) -> None:
        sp = AudioSpool(chunk=640, capacity=16000)
        for c in sp.push(np.zeros(640 * 5, np.int16)):
            c.sent = True
        self.assertEqual([c.position for c in sp.replay(1300)], [1280, 1920, 2560])
        sp.release_before(1300)
        self.assertEqual([c.position for c in sp], [1280, 1920, 2560])
