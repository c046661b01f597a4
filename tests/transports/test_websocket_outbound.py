"""
The outbound side of a WebSocket leg across streams
(:class:`~xlbridge.transports.websocket_outbound.OutboundStreams`), with a
recording owner on a test clock: totals that add up over streams (XOFF
time counted once, BINARY messages), gating, and writing without a
connection.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.events import DropReason, LegCounters
from xlbridge.logthrottle import LogThrottle
from xlbridge.transports.websocket_codec import ControlFormat, MediaStart
from xlbridge.transports.websocket_media import media_format
from xlbridge.transports.websocket_outbound import OutboundStreams


class Conn:
    """An Autobahn protocol's sendMessage, recorded."""

    transport = None

    def __init__(self) -> None:
        self.binary: list[bytes] = []
        self.text: list[str] = []

    def sendMessage(self, data: bytes, isBinary: bool = False) -> None:
        if isBinary:
            self.binary.append(data)
        else:
            self.text.append(data.decode("utf-8"))


class Owner:
    """What OutboundStreams reads of its endpoint."""

    def __init__(self, clock: Clock) -> None:
        self.extension = "7777"
        self.connection: Optional[Any] = Conn()
        self.control = ControlFormat.PLAIN
        self.counters = LegCounters()
        self.clock: IReactorTime = clock
        self.lookahead_ms = 200
        self.filler_lookahead_ms = 40
        self.unsent_bytes: Callable[[Any], int] = lambda transport: 0


START = MediaStart("c", "WebSocket/x", "slin16", 640, 20)


class OutboundStreamsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.owner = Owner(self.clock)
        self.out = OutboundStreams(self.owner, LogThrottle(Logger(), self.clock))

    def send(self, n: int) -> None:
        frames: list[Any] = [np.zeros(320, np.int16)] * n
        sender = self.out.sender
        assert sender is not None
        sender.send_frames(frames, True, self.out.frames_wanted(True))

    def test_nothing_wanted_between_streams(self) -> None:
        self.assertIsNone(self.out.sender)
        self.assertEqual(self.out.frames_wanted(True), 0)
        self.assertEqual(self.out.filler_wanted(), 0)
        self.assertEqual(self.out.queue.queued_ms(0.0), 0)
        self.out.begin(media_format("slin16"), START)
        self.assertEqual(self.out.frames_wanted(True), 10)  # 200 ms of 20 ms frames

    def test_xoff_time_counted_once_over_streams(self) -> None:
        self.out.begin(media_format("slin16"), START)
        self.out.queue.set_xoff(self.clock.seconds(), 900)
        self.assertEqual(self.out.frames_wanted(True), 0)
        self.clock.advance(0.25)
        self.out.xon(self.clock.seconds())
        conn: Any = self.owner.connection
        self.assertEqual(conn.text, ["GET_STATUS"])
        self.assertEqual(self.owner.counters.xoff_ms, 250)
        self.out.xon(self.clock.seconds())  # not in XOFF: no GET_STATUS
        self.assertEqual(conn.text, ["GET_STATUS"])
        self.out.queue.set_xoff(self.clock.seconds(), 900)
        self.clock.advance(0.125)
        self.out.begin(media_format("slin16"), START)  # the old stream's XOFF time joins the total
        self.assertEqual(self.owner.counters.xoff_ms, 375)
        self.assertFalse(self.out.queue.xoff)
        self.out.retire()
        self.assertEqual(self.owner.counters.xoff_ms, 375)

    def test_messages_add_up_over_streams(self) -> None:
        self.out.begin(media_format("slin16"), START)
        self.send(3)
        self.assertEqual(self.out.messages_out, 1)
        self.out.begin(media_format("slin16"), START)
        self.send(2)
        self.out.retire()
        conn: Any = self.owner.connection
        self.assertEqual(len(conn.binary), 2)
        self.assertEqual(self.out.messages_out, 2)

    def test_backpressure_stops_sending(self) -> None:
        self.out.begin(media_format("slin16"), START)
        conn: Any = self.owner.connection
        conn.backpressure = type("Paused", (), {"paused": True})()
        self.assertEqual(self.out.frames_wanted(True), 0)
        self.assertEqual(self.out.filler_wanted(), 0)

    def test_no_connection(self) -> None:
        self.out.begin(media_format("slin16"), START)
        self.owner.connection = None
        self.assertEqual(self.out.frames_wanted(True), 0)
        self.assertFalse(self.out.send_command("GET_STATUS"))
        self.assertRaises(ConnectionError, self.out.send_binary, b"\0\0")
        self.assertEqual(self.owner.counters.snapshot()["drops"].get(DropReason.ERROR.value, 0), 0)

    def test_failed_command_counted(self) -> None:
        self.owner.control = ControlFormat.JSON
        self.assertFalse(self.out.send_command("NO_SUCH_COMMAND"))
        self.assertEqual(self.owner.counters.snapshot()["drops"][DropReason.ERROR.value], 1)
        self.assertTrue(self.out.send_command("MARK_MEDIA", "m1"))
        conn: Any = self.owner.connection
        self.assertEqual(conn.text, ['{"command":"MARK_MEDIA","correlation_id":"m1"}'])
