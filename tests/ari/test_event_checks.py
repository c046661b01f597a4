"""
The counters of the ARI events socket (:mod:`xlbridge.ari.event_checks`):
every dropped message counted under a fixed reason code, every event
handed on counted by type (``"other"`` for types the controller ignores),
and no key set a peer can grow.  Then the same counts on the socket.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.test_event_parsing import events
from tests.ari.test_events import EventsOnClock
from xlbridge.ari import events as events_module
from xlbridge.ari.event_checks import (
    ACTED_ON,
    MAX_REASON_TEXTS,
    MORE_REASONS,
    OTHER,
    REASONS,
    EventCounts,
    Rejected,
    check_event,
    decode_event,
    parse_event,
)


class ParseEvent(SynchronousTestCase):
    def test_codes(self) -> None:
        cases = {
            b"\xff": ("not_utf8", "not UTF-8"),
            b"{": ("not_json", "not JSON"),
            b"[" * 100000: ("too_deep", "JSON nested too deep"),
            b"[]": ("not_object", "not a JSON object"),
            b'{"type": ""}': ("no_type", "no event type"),
            b'{"type": "X", "args": {}}': ("bad_field", "X: args is not a list"),
            b'{"type": "X", "args": [1]}': ("bad_field", "X: args are not all strings"),
            b'{"type": "X", "channel": {"id": "1", "name": 2}}': ("bad_field", "X: channel name is not a string"),
            b'{"type": "StasisEnd"}': ("missing_field", "StasisEnd without channel"),
        }
        for payload, (code, why) in cases.items():
            self.assertEqual(parse_event(payload), Rejected(code, why), payload[:40])
            self.assertEqual(decode_event(payload), why)
        self.assertEqual({code for code, _ in cases.values()} | {"binary"}, set(REASONS))

    @settings(max_examples=200, deadline=None)
    @given(events())
    def test_code_agrees_with_the_text(self, event: dict[str, Any]) -> None:
        out = parse_event(json.dumps(event).encode())
        if isinstance(out, Rejected):
            self.assertIn(out.code, REASONS)
            self.assertEqual(out.why, check_event(event))
        else:
            self.assertIsNone(check_event(event))

    def test_reexported(self) -> None:
        """Importers of ``xlbridge.ari.events`` are unaffected by the split."""
        self.assertIs(events_module.check_event, check_event)
        self.assertIs(events_module.decode_event, decode_event)
        for name in events_module.__all__:
            self.assertTrue(hasattr(events_module, name), name)


class Counts(SynchronousTestCase):
    def test_all_keys_present_from_the_start(self) -> None:
        counts = EventCounts()
        self.assertEqual(counts.dropped, dict.fromkeys(REASONS, 0))
        self.assertEqual(counts.received, dict.fromkeys((*ACTED_ON, OTHER), 0))
        self.assertEqual(counts.malformed, {})

    def test_unknown_types_are_other(self) -> None:
        counts = EventCounts()
        for kind in ("StasisStart", "ChannelVarset", "ChannelVarset", "x" * 50):
            counts.accepted({"type": kind})
        self.assertEqual(counts.received["StasisStart"], 1)
        self.assertEqual(counts.received[OTHER], 3)
        self.assertEqual(set(counts.received), {*ACTED_ON, OTHER})

    def test_a_peer_cannot_grow_the_reason_texts(self) -> None:
        """
        Reason texts quote the event's type; past the cap new ones are
        counted together, and the codes stay a fixed set.
        """
        counts = EventCounts()
        for i in range(500):
            rejected = parse_event(json.dumps({"type": f"T{i}", "args": 5}).encode())
            assert isinstance(rejected, Rejected)
            counts.rejected(rejected)
        self.assertEqual(len(counts.malformed), MAX_REASON_TEXTS + 1)
        self.assertEqual(counts.malformed[MORE_REASONS], 500 - MAX_REASON_TEXTS)
        self.assertEqual(sum(counts.malformed.values()), 500)
        self.assertEqual(counts.dropped["bad_field"], 500)
        self.assertEqual(set(counts.dropped), set(REASONS))


class CountsOnTheSocket(EventsOnClock):
    def test_counted_by_code_and_type(self) -> None:
        ari = self.make()
        proto, transport = self.up()
        proto.onMessage(b"\x00\x01", True)
        proto.onMessage(b"not json", False)
        proto.onMessage(b'{"type": "StasisStart", "channel": {"id": "1.1"}}', False)
        proto.onMessage(b'{"type": "ChannelStateChange", "channel": {"id": "1.1"}}', False)
        self.assertEqual(ari.counts.dropped, {**dict.fromkeys(REASONS, 0), "binary": 1, "not_json": 1})
        self.assertEqual(ari.counts.received, {**dict.fromkeys((*ACTED_ON, OTHER), 0), "StasisStart": 1, OTHER: 1})
        # The operator's view, by text, is the same dict as before the split.
        self.assertIs(ari.malformed, ari.counts.malformed)
        self.assertEqual(ari.status()["malformed"], {"a binary message": 1, "not JSON": 1})
        # Unknown types still reach the handler: the controller decides.
        self.assertEqual([e["type"] for e in self.events], ["StasisStart", "ChannelStateChange"])
        self.assertTrue(ari.connected)
