"""
Tests for :mod:`xlbridge.engines.local_asr.wire`: the ASR worker's framing
and what travels as JSON, without I/O.
"""

from __future__ import annotations

import json
import random

import attrs
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.base import ASREvent, EagerEnd, EngineRequestError, SpeechStarted, Transcript, TurnResumed, UtteranceEnd
from xlbridge.engines.local_asr.stream_clock import FRAME_BYTES
from xlbridge.engines.local_asr.wire import (
    AUDIO,
    CLOSE,
    EVENTS,
    FINISH,
    OPEN,
    Framer,
    FramingError,
    Message,
    StreamParams,
    audio_payload,
    dump,
    encode,
    error_to_json,
    event_from_json,
    event_to_json,
    parse_audio,
    spec_from_json,
    spec_to_json,
)
from xlbridge.engines.pocketsphinx.asr import SphinxModel
from xlbridge.engines.vosk.asr import VoskModel


class FramerTests(SynchronousTestCase):
    MESSAGES = [
        Message(OPEN, 1, dump({"model": {"engine": "pocketsphinx"}})),
        Message(AUDIO, 0xFFFFFFFF, audio_payload([b"\x01\x02" * 320] * 3, skip=7)),
        Message(FINISH, 2, b""),
        Message(CLOSE, 0),
        Message(EVENTS, 12345, dump({"events": [], "frames": 0})),
    ]

    def test_header_is_big_endian(self) -> None:
        self.assertEqual(encode(AUDIO, 0x01020304, b"xy"), b"\x00\x00\x00\x07\x02\x01\x02\x03\x04xy")

    def test_round_trip(self) -> None:
        wire = b"".join(encode(m.kind, m.stream, m.payload) for m in self.MESSAGES)
        self.assertEqual(Framer().feed(wire), self.MESSAGES)

    def test_split_reads(self) -> None:
        """Any read sizes, down to single bytes, give the same messages."""
        wire = b"".join(encode(m.kind, m.stream, m.payload) for m in self.MESSAGES)
        rng = random.Random(7)
        for sizes in ([1], [2, 3, 5], [4], [9], [rng.randrange(1, 700) for _ in range(50)]):
            framer, out, i, k = Framer(), [], 0, 0
            while i < len(wire):
                n = sizes[k % len(sizes)]
                out += framer.feed(wire[i:i + n])
                i, k = i + n, k + 1
            self.assertEqual(out, self.MESSAGES, sizes)

    def test_partial_message_is_kept(self) -> None:
        framer = Framer()
        wire = encode(FINISH, 3, b"tail")
        self.assertEqual(framer.feed(wire[:-1]), [])
        self.assertEqual(framer.feed(wire[-1:] + wire[:4]), [Message(FINISH, 3, b"tail")])
        self.assertEqual(framer.feed(wire[4:]), [Message(FINISH, 3, b"tail")])

    def test_bad_lengths(self) -> None:
        self.assertRaises(FramingError, Framer().feed, b"\x00\x00\x00\x04\x01\x00\x00\x00")
        # Too long is refused from the length alone, before any payload arrives.
        self.assertRaises(FramingError, Framer(max_payload=100).feed, b"\x00\x00\x00\x6a")
        self.assertEqual(Framer(max_payload=100).feed(b"\x00\x00\x00\x69"), [])

    def test_encode_checks(self) -> None:
        self.assertRaises(ValueError, encode, 256, 0)
        self.assertRaises(ValueError, encode, OPEN, -1)
        self.assertRaises(ValueError, encode, OPEN, 2 ** 32)

    def test_audio_payload(self) -> None:
        frames = [bytes([i]) * FRAME_BYTES for i in range(3)]
        payload = audio_payload(frames, skip=258)
        self.assertEqual(payload[:4], b"\x00\x00\x01\x02")
        self.assertEqual(parse_audio(payload), (258, frames))
        self.assertEqual(parse_audio(audio_payload([])), (0, []))
        self.assertRaises(ValueError, parse_audio, payload[:-1])
        self.assertRaises(ValueError, parse_audio, b"\x00")

    def test_json_round_trips(self) -> None:
        events: list[ASREvent] = [
            Transcript("only person", True, True, 0.52, 3.1, 0.0, confidence=0.5, speech_end=2.98),
            Transcript("only", False, False, 0.52, 1.0, 0.0),
            SpeechStarted(0.52, 0.0),
            UtteranceEnd(3.0, 0.0),
            TurnResumed(0.0),
        ]
        for ev in events:
            back = event_from_json(json.loads(dump(event_to_json(ev))), 7.5)
            self.assertEqual(back, attrs.evolve(ev, received_at=7.5))
        eager = EagerEnd(Transcript("hola", False, False, 0.5, 1.5, 0.0, 0.8, speech_end=1.2, language="es"))
        back = event_from_json(json.loads(dump(event_to_json(eager))), 7.5)
        self.assertEqual(back, EagerEnd(attrs.evolve(eager.transcript, received_at=7.5)))
        for spec in (SphinxModel(), SphinxModel("/h", "/l", None, "/d"), SphinxModel("/h", None, "/j", "/d"), VoskModel("/v")):
            self.assertEqual(spec_from_json(json.loads(dump(spec_to_json(spec)))), spec)
        self.assertEqual(StreamParams.from_json(json.loads(dump(StreamParams(0.4, 0.8, 2).to_json()))),
                         StreamParams(0.4, 0.8, 2))

    def test_errors(self) -> None:
        """An engine error keeps its message and retryability; anything else is a retryable crash."""
        self.assertEqual(error_to_json(EngineRequestError("local-asr", "no model")),
                         {"message": "no model", "retryable": False})
        self.assertEqual(error_to_json(RuntimeError("boom")),
                         {"message": "decoder crashed: RuntimeError('boom')", "retryable": True})

    def test_unknown_events(self) -> None:
        self.assertRaises(ValueError, event_from_json, {"type": "nonsense"}, 1.0)
        self.assertRaises(TypeError, event_to_json, object())  # type: ignore[arg-type]
