"""
Deepgram Flux wire values (:mod:`xlbridge.engines.deepgram.flux_wire`):
messages as PROTOCOLS.md section 11 documents them, bad ones never raising,
and the client's messages and query.  The turn tracker's tests are in
:mod:`tests.engines.deepgram.test_flux_turns`.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.deepgram.flux_wire import (
    CLOSE_STREAM,
    FORCE_END_TURN,
    ConfigureResult,
    Connected,
    FluxError,
    Malformed,
    TurnEvent,
    TurnInfo,
    Unknown,
    configure,
    flux_query,
    parse_flux,
)


def turn_info(event: str, transcript: str = "", turn: int = 0, seq: int = 1, **extra: Any) -> str:
    msg = {
        "type": "TurnInfo",
        "request_id": "r-1",
        "sequence_id": seq,
        "event": event,
        "turn_index": turn,
        "audio_window_start": 0.0,
        "audio_window_end": 1.25,
        "transcript": transcript,
        "words": [{"word": w, "confidence": 0.9} for w in transcript.split()],
        "end_of_turn_confidence": 0.8,
    }
    msg.update(extra)
    return json.dumps(msg)


class ParseTests(SynchronousTestCase):
    def test_turn_info(self) -> None:
        m = parse_flux(turn_info("EagerEndOfTurn", "Hello there.", turn=3, seq=9, languages=["en"]))
        assert isinstance(m, TurnInfo)
        self.assertEqual((m.event, m.turn_index, m.transcript, m.sequence_id), (TurnEvent.EAGER, 3, "Hello there.", 9))
        self.assertEqual([w.word for w in m.words], ["Hello", "there."])
        self.assertEqual((m.start, m.end, m.eot_confidence, m.languages), (0.0, 1.25, 0.8, ("en",)))

    def test_end_of_turn_trigger(self) -> None:
        m = parse_flux(turn_info("EndOfTurn", "Yes.", trigger="manual"))
        assert isinstance(m, TurnInfo)
        self.assertEqual(m.trigger, "manual")

    def test_other_types(self) -> None:
        self.assertEqual(parse_flux('{"type":"Connected","request_id":"r","sequence_id":0}'), Connected("r", 0))
        ok = parse_flux('{"type":"ConfigureSuccess","request_id":"r","sequence_id":4,"thresholds":{"eot_threshold":0.8}}')
        self.assertEqual(ok, ConfigureResult(True, 4, {"eot_threshold": 0.8}))
        self.assertEqual(parse_flux('{"type":"ConfigureFailure","request_id":"r","sequence_id":5}'),
                         ConfigureResult(False, 5))
        self.assertEqual(parse_flux('{"type":"Error","sequence_id":7,"code":"INTERNAL_SERVER_ERROR","description":"x"}'),
                         FluxError(True, "INTERNAL_SERVER_ERROR", "x", 7))
        self.assertEqual(parse_flux('{"type":"Warning","request_id":"r","sequence_id":8,"code":"W","description":"y"}'),
                         FluxError(False, "W", "y", 8))
        self.assertEqual(parse_flux('{"type":"Surprise","sequence_id":2}'), Unknown("Surprise", 2))

    def test_malformed(self) -> None:
        for text in ("", "{", "[]", '"x"', '{"type":"TurnInfo"}', turn_info("Sideways"),
                     turn_info("Update", turn=-1), turn_info("Update", words="no"),
                     turn_info("Update", end_of_turn_confidence=float("nan")),
                     turn_info("Update", languages=[1]), "[" * 100000):
            self.assertIsInstance(parse_flux(text), Malformed, text[:40])

    @settings(max_examples=300, deadline=None)
    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                        max_leaves=20))
    def test_never_raises(self, value: Any) -> None:
        parse_flux(json.dumps(value))
        if isinstance(value, dict):
            parse_flux(json.dumps({**value, "type": "TurnInfo"}))


class ClientMessageTests(SynchronousTestCase):
    def test_control(self) -> None:
        self.assertEqual(json.loads(FORCE_END_TURN), {"type": "ForceEndTurn"})
        self.assertEqual(json.loads(CLOSE_STREAM), {"type": "CloseStream"})

    def test_configure_keeps_what_is_omitted(self) -> None:
        self.assertEqual(json.loads(configure(eager_eot_threshold=0.4)),
                         {"type": "Configure", "thresholds": {"eager_eot_threshold": 0.4}})
        self.assertEqual(json.loads(configure(language_hints=["es"])), {"type": "Configure", "language_hints": ["es"]})

    def test_query(self) -> None:
        q = flux_query("flux-general-multi", eager_eot_threshold=0.5, language_hints=["es", "en"])
        self.assertIn(("model", "flux-general-multi"), q)
        self.assertIn(("encoding", "linear16"), q)
        self.assertIn(("sample_rate", "16000"), q)
        self.assertIn(("eager_eot_threshold", "0.5"), q)
        self.assertEqual([v for k, v in q if k == "language_hint"], ["es", "en"])
        self.assertNotIn("eager_eot_threshold", dict(flux_query("flux-general-en")))

    def test_query_rejects(self) -> None:
        bad: list[dict[str, Any]] = [
            {"model": "nova-3"},
            {"model": "flux-general-en", "eot_threshold": 0.4},
            {"model": "flux-general-en", "eager_eot_threshold": 0.2},
            {"model": "flux-general-en", "eot_threshold": 0.6, "eager_eot_threshold": 0.7},
            {"model": "flux-general-en", "eot_timeout_ms": 100},
            {"model": "flux-general-en", "language_hints": ["es"]},
            {"model": "flux-general-multi", "language_hints": [""]},
        ]
        for kw in bad:
            self.assertRaises(ValueError, flux_query, **kw)
