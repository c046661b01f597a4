"""
Slow HTTP clients on the monitor (issue 15, bad input): a connection that
never completes a request ("slowloris": one header byte every few seconds)
is closed after the request deadline instead of holding its file
descriptor for Twisted's 12-hour idle timeout; a served connection stays
until it idles through a whole check period; an upgraded WebSocket
(a viewer) is never touched.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.static import Data

from xlbridge.monitor.quiet_site import IDLE_TIMEOUT, REQUEST_DEADLINE, QuietSite


class SlowClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        root = Resource()
        root.putChild(b"livez", Data(b"ok\n", "text/plain"))
        self.site = QuietSite(root, reactor=self.reactor)

    def connect(self) -> tuple[Any, StringTransport]:
        proto = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = StringTransport()
        transport.protocol = proto  # type: ignore[attr-defined]  # as a TCP transport has
        proto.makeConnection(transport)
        return proto, transport

    def test_defaults(self) -> None:
        self.assertEqual((REQUEST_DEADLINE, IDLE_TIMEOUT), (10.0, 60.0))
        self.assertEqual(self.site.timeOut, IDLE_TIMEOUT)

    def test_slowloris_cut_off_at_the_deadline(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        for _ in range(9):  # a byte a second: never idle, never done
            self.reactor.advance(1.0)
            proto.dataReceived(b"X")
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(1.0)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.site.cut_off, 1)

    def test_served_connection_kept_then_closed_when_idle(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", transport.value())
        self.reactor.advance(REQUEST_DEADLINE)
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")  # a second request in time
        self.reactor.advance(REQUEST_DEADLINE)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(REQUEST_DEADLINE)  # a whole period without a request
        self.assertTrue(transport.disconnecting)

    def test_upgraded_connection_left_alone(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        transport.protocol = object()  # type: ignore[attr-defined]  # what a WebSocket takeover does
        self.reactor.advance(5 * REQUEST_DEADLINE)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.site.cut_off, 0)

    def test_stop_cancels_every_check(self) -> None:
        for _ in range(3):
            self.connect()
        self.assertEqual(len(self.reactor.getDelayedCalls()) >= 3, True)
        self.site.stop_checks()
        self.assertFalse([c for c in self.reactor.getDelayedCalls() if getattr(c, "func", None) == self.site._check])
