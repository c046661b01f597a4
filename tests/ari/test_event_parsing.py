"""
Malformed events on the ARI events socket (issue 15, bad input): each is
one counted drop with a throttled warning, never an exception out of the
protocol (which dropped the socket) or out of the controller's handler
(which logged a traceback per event).  Property tests for
:func:`~xlbridge.ari.events.decode_event`.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.test_events import EventsOnClock
from xlbridge.ari.events import check_event, decode_event

#: JSON values of every type, nested a little.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
TYPES = st.sampled_from(["StasisStart", "StasisEnd", "ChannelDestroyed", "PlaybackFinished", "Dial", "X"])


@st.composite
def events(draw: Any) -> dict[str, Any]:
    """Event-shaped objects whose known fields may have any type."""
    ev: dict[str, Any] = {"type": draw(TYPES | JSON)}
    for field in ("channel", "args", "playback"):
        if draw(st.booleans()):
            ev[field] = draw(
                JSON
                | st.fixed_dictionaries({"id": JSON, "name": JSON}, optional={"channelvars": JSON})
                | st.lists(st.text(max_size=10) | JSON, max_size=3)
            )
    return ev


@st.composite
def valid_events(draw: Any) -> dict[str, Any]:
    """Events the controller can act on."""
    kind = draw(TYPES)
    ev: dict[str, Any] = {"type": kind}
    if kind != "PlaybackFinished" or draw(st.booleans()):
        channel: dict[str, Any] = {"id": draw(st.text(min_size=1, max_size=12)), "name": draw(st.text(max_size=20))}
        if draw(st.booleans()):
            channel["channelvars"] = draw(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
        ev["channel"] = channel
    if draw(st.booleans()):
        ev["args"] = draw(st.lists(st.text(max_size=12), max_size=3))
    if kind == "PlaybackFinished" or draw(st.booleans()):
        ev["playback"] = draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
    return ev


class DecodeEventProperties(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    def test_any_bytes_never_raise(self, data: bytes) -> None:
        out = decode_event(data)
        self.assertIsInstance(out, (dict, str))

    @settings(max_examples=300, deadline=None)
    @given(events())
    def test_event_or_reason(self, event: dict[str, Any]) -> None:
        """
        A decoded event passed :func:`check_event`: the fields the
        controller reads have their types; otherwise a reason.
        """
        out = decode_event(json.dumps(event).encode())
        if isinstance(out, str):
            self.assertEqual(out, check_event(event))
            return
        self.assertEqual(out, event)
        self.assertIsInstance(out["type"], str)
        self.assertIsInstance(out.get("channel", {}), dict)
        self.assertTrue(all(isinstance(a, str) for a in out.get("args", [])))
        if "channel" in out:
            self.assertIsInstance(out["channel"]["id"], str)

    @settings(max_examples=200, deadline=None)
    @given(valid_events())
    def test_valid_events_round_trip(self, event: dict[str, Any]) -> None:
        self.assertEqual(decode_event(json.dumps(event).encode()), event)

    @settings(max_examples=100, deadline=None)
    @given(valid_events(), st.data())
    def test_truncated_is_a_reason(self, event: dict[str, Any], data: Any) -> None:
        text = json.dumps(event).encode()
        cut = data.draw(st.integers(0, len(text) - 1))
        self.assertIsInstance(decode_event(text[:cut]), str)

    def test_reasons(self) -> None:
        self.assertEqual(decode_event(b"[" * 100000), "JSON nested too deep")
        self.assertEqual(decode_event(b"\xff"), "not UTF-8")
        self.assertEqual(decode_event(b'{"type": 1' + b"9" * 5000 + b"}"), "not JSON")  # int digits limit
        self.assertEqual(decode_event(b"[]"), "not a JSON object")
        self.assertEqual(decode_event(b'{"type": "StasisStart"}'), "StasisStart without channel")
        self.assertEqual(decode_event(b'{"type": "StasisStart", "channel": {}}'),
                         "StasisStart: channel without a string id")
        self.assertEqual(decode_event(b'{"type": "StasisStart", "channel": {"id": "1"}, "args": 5}'),
                         "StasisStart: args is not a list")
        self.assertEqual(decode_event(b'{"type": "PlaybackFinished", "playback": []}'),
                         "PlaybackFinished: playback is not an object")


class MalformedOnTheSocket(EventsOnClock):
    def test_deep_nesting_does_not_drop_the_socket(self) -> None:
        """
        JSON nested past the recursion limit raised RecursionError out of
        ``onMessage``: an "Unhandled Error" and the socket dropped (seen
        in the fuzz run).  Now it is a counted drop.
        """
        ari = self.make()
        proto, transport = self.up()
        proto.onMessage(b"[" * 100000, False)
        proto.onMessage(b'{"type": "StasisEnd", "channel": {"id": "1.2"}}', False)
        self.assertEqual(ari.malformed, {"JSON nested too deep": 1})
        self.assertEqual(self.events, [{"type": "StasisEnd", "channel": {"id": "1.2"}}])
        self.assertTrue(ari.connected)
        self.assertFalse(transport.disconnecting)

    def test_missing_fields_never_reach_the_handler(self) -> None:
        """
        A StasisStart without a channel id reached the controller, which
        raised KeyError (a traceback per event).  Now it is dropped, and a
        burst of them logs one warning.
        """
        ari = self.make()
        proto, _ = self.up()
        for _ in range(50):
            proto.onMessage(b'{"type": "StasisStart", "channel": {"name": "x"}, "args": ["room=r"]}', False)
        self.assertEqual(self.events, [])
        self.assertEqual(ari.malformed, {"StasisStart: channel without a string id": 50})
        warned = [line for line in self.logged.lines(LogLevel.warn) if "malformed event" in line]
        self.assertEqual(len(warned), 1)

    def test_handler_failures_are_throttled(self) -> None:
        ari = self.make()
        proto, _ = self.up()

        def broken(event: dict[str, Any]) -> None:
            raise KeyError("x")

        ari.on_event = broken
        for _ in range(20):
            proto.onMessage(b'{"type": "StasisEnd", "channel": {"id": "1.2"}}', False)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
