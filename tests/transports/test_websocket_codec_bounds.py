"""
MEDIA_START values the bridge cannot honour are malformed (issue 15, bad
input): an ``optimal_frame_size`` over one message (65 527 bytes) made
the sender's step ``MAX_MESSAGE // size * size`` zero and every send
raise ``ValueError: range() arg 3 must not be zero`` (seen in the fuzz
run as "sending arrived audio failed" with a traceback per frame).
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.events import DropReason
from xlbridge.transports.websocket_codec import MAX_PTIME, Malformed, MediaStart, parse_event
from xlbridge.transports.websocket_media import MAX_MESSAGE


def media_start(frame_size: int, ptime: int = 20, plain: bool = True) -> str:
    if plain:
        return (f"MEDIA_START connection_id:c channel:WebSocket/x format:slin16 "
                f"optimal_frame_size:{frame_size} ptime:{ptime}")
    return json.dumps({"event": "MEDIA_START", "connection_id": "c", "channel": "WebSocket/x", "format": "slin16",
                       "optimal_frame_size": frame_size, "ptime": ptime})


class MediaStartBounds(SynchronousTestCase):
    def test_frame_size_over_one_message(self) -> None:
        for plain in (True, False):
            self.assertIsInstance(parse_event(media_start(MAX_MESSAGE, plain=plain)), MediaStart)
            bad = parse_event(media_start(MAX_MESSAGE + 1, plain=plain))
            assert isinstance(bad, Malformed)
            self.assertEqual(bad.reason, DropReason.WEBSOCKET_MALFORMED)
            self.assertIsInstance(parse_event(media_start(2**40, plain=plain)), Malformed)

    def test_ptime_bounds(self) -> None:
        self.assertIsInstance(parse_event(media_start(640, MAX_PTIME)), MediaStart)
        self.assertIsInstance(parse_event(media_start(640, MAX_PTIME + 1)), Malformed)
        self.assertIsInstance(parse_event(media_start(640, -1)), Malformed)

    def test_passthrough_still_parses(self) -> None:
        """0 is chan_websocket's passthrough: the leg refuses it, with its own reason."""
        self.assertIsInstance(parse_event(media_start(0, 0)), MediaStart)

    @settings(max_examples=300, deadline=None)
    @given(st.integers(), st.integers(), st.booleans())
    def test_any_numbers_give_a_bounded_start_or_malformed(self, size: int, ptime: int, plain: bool) -> None:
        ev = parse_event(media_start(size, ptime, plain))
        if isinstance(ev, MediaStart):
            self.assertTrue(0 <= ev.optimal_frame_size <= MAX_MESSAGE)
            self.assertTrue(0 <= ev.ptime <= MAX_PTIME)
        else:
            self.assertIsInstance(ev, Malformed)
