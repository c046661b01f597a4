"""
What the monitor exposes, and to whom (issue 15, "Security: keys"):

- it listens on loopback unless told otherwise (every default says so);
- the routes: only the page, its static files and the health checks are
  open (they hold no call data), ``/metrics`` too when explicitly opened;
  everything else (``/api/*``, ``/metrics``, ``/ws``) needs a token, under
  any spelling of its path;
- listen-in audio reaches only viewers with the listen token, even while
  another viewer listens to the same leg;
- a viewer's token is never logged, though Autobahn logs its handshake
  (with the request line) at debug level (xlbridge/monitor/viewer.py).
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.monitor.harness import LISTEN_TOKEN, TOKEN, FakeViewer, MonitoredBridge, bearer, tone
from xlbridge import tap
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.monitor.service import DEFAULT_ENDPOINT, make_monitor
from xlbridge.testing import MemoryUDPReactor

#: Routes served without a token, and why: the page and its files hold no
#: data; the health checks name no call (monitor/health.py).
OPEN_ROUTES = {b"", b"static", b"readyz", b"livez"}


class LoopbackDefaultTests(SynchronousTestCase):
    def test_every_default_is_loopback(self) -> None:
        self.assertEqual(DEFAULT_ENDPOINT, "tcp:3001:interface=127.0.0.1")
        self.assertEqual(load_config({}).monitor, DEFAULT_ENDPOINT)
        options = tap.Options()
        options.parseOptions(["--engines", "relay"])
        self.assertEqual(options.config.monitor, DEFAULT_ENDPOINT)

    def test_default_monitor_binds_loopback(self) -> None:
        reactor = MemoryUDPReactor()
        monitor = make_monitor(BridgeService(load_config({"ports": "7777,8888"}), reactor), reactor, environ={})
        monitor.startService()
        self.addCleanup(monitor.stopService)
        ((port, _, _, interface),) = reactor.tcpServers
        self.assertEqual((port, interface), (3001, "127.0.0.1"))


class RouteTests(MonitoredBridge, SynchronousTestCase):
    def setUp(self) -> None:
        self.build()

    def test_only_data_free_routes_are_open(self) -> None:
        # A route added later must be put behind the token or added here, on purpose.
        open_routes = {name for name, child in self.monitor.root.children.items()
                       if type(child).__name__ not in ("GuardedResource", "WebSocketResource")}
        self.assertEqual(open_routes, OPEN_ROUTES)
        self.assertEqual(set(self.monitor.root.children), OPEN_ROUTES | {b"api", b"metrics", b"ws"})

    def test_every_spelling_of_a_guarded_path_is_refused(self) -> None:
        self.start_call()
        self.translate_once()
        for path in ("/api", "/api/", "/api/calls", "/api/calls/", "/api/calls?x=1", "/api/nothing",
                     "/api//calls", "/metrics", "/metrics/", "/metrics?format=json"):
            code, _, body = self.get(path)
            self.assertEqual(code, 401, path)
            self.assertEqual(json.loads(body), {"error": "token required"}, path)
            code, _, body = self.get(path, bearer("not-" + TOKEN))
            self.assertEqual(code, 403, path)
            self.assertNotIn(b"hello", body)
        for path in ("/API/calls", "//api/calls", "/static/../api/calls", "/readyz/../api/calls"):
            code, _, body = self.get(path)
            self.assertNotIn(b"hello", body, path)  # the page, a 404 or health: no call data
            self.assertNotIn(b"7777", body, path)

    def test_token_in_the_query_is_not_echoed(self) -> None:
        for path in (f"/?token={TOKEN}", f"/api/calls?token={TOKEN}", f"/metrics?token={TOKEN}",
                     f"/readyz?token={TOKEN}", f"/api/calls?token=x{TOKEN}"):
            _, headers, body = self.get(path)
            self.assertNotIn(TOKEN.encode(), body, path)
            self.assertNotIn(TOKEN, repr(list(headers.getAllRawHeaders())), path)


class OpenMetricsRouteTests(MonitoredBridge, SynchronousTestCase):
    metrics_open = True

    def test_opening_metrics_opens_nothing_else(self) -> None:
        self.build()
        self.assertEqual(self.get("/metrics")[0], 200)
        self.assertEqual(self.get("/api/calls")[0], 401)
        self.assertEqual(type(self.monitor.root.children[b"api"]).__name__, "GuardedResource")


class ListenInTests(MonitoredBridge, SynchronousTestCase):
    def test_audio_only_to_the_listen_token_while_another_listens(self) -> None:
        self.build()
        hub = self.monitor.hub
        listener, viewer = FakeViewer(may_listen=True), FakeViewer(may_listen=False)
        for v in (listener, viewer):
            hub.join(v)
            self.addCleanup(hub.leave, v)
        call = self.start_call()
        hub.message(listener, b'{"listen": {"extension": "7777", "direction": "says"}}', False)
        hub.message(viewer, b'{"listen": {"extension": "7777", "direction": "says"}}', False)
        self.reactor.advance(0)
        call.legs[0].tap_in(tone(1000))
        self.reactor.advance(0)
        self.assertGreater(len(listener.frames()), 0)
        self.assertEqual(viewer.frames(), [])
        self.assertEqual(viewer.messages("error")[-1]["error"], "listen-in needs the listen token")


class _Client(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.opened.callback(None)  # type: ignore[attr-defined]

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.closed.callback(None)  # type: ignore[attr-defined]


class HandshakeLogTests(TestCase):
    timeout = 10

    async def test_token_never_logged_by_the_handshake(self) -> None:
        bridge = BridgeService(load_config({"ports": "7777,8888"}), MemoryUDPReactor())
        monitor = make_monitor(bridge, global_reactor, "tcp:0:interface=127.0.0.1", token=TOKEN,
                               listen_token=LISTEN_TOKEN, environ={})
        monitor.startService()
        self.addCleanup(monitor.stopService)
        assert monitor.port is not None
        port = monitor.port.getHost().port
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for url, headers in ((f"ws://127.0.0.1:{port}/ws?token={TOKEN}", {}),
                             (f"ws://127.0.0.1:{port}/ws", {"Authorization": f"Bearer {LISTEN_TOKEN}"}),
                             (f"ws://127.0.0.1:{port}/ws?token=wrong-{TOKEN}", {})):
            factory = WebSocketClientFactory(url, headers=headers, reactor=global_reactor)
            factory.protocol = _Client
            factory.setProtocolOptions(openHandshakeTimeout=0)
            factory.opened, factory.closed = Deferred(), Deferred()  # type: ignore[attr-defined]
            proto = await TCP4ClientEndpoint(global_reactor, "127.0.0.1", port).connect(factory)
            if "wrong" not in url:
                await factory.opened  # type: ignore[attr-defined]
                proto.sendClose()
            await factory.closed  # type: ignore[attr-defined]
        while monitor.hub.clients:
            await deferLater(global_reactor, 0.01, lambda: None)
        texts = [formatEvent(e) + repr(e) for e in logged]
        self.assertTrue(texts)  # the client's own lines at least: the observer saw the traffic
        for secret in (TOKEN, LISTEN_TOKEN):
            self.assertEqual([t for t in texts if secret in t], [], secret)
