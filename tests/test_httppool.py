"""
The quiet HTTP pool: requests over a real loopback connection work, and
opening and closing the connection logs nothing (a plain pool logs two
lines per connection: the test shows that too).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.resource import Resource
from twisted.web.server import Site

from xlbridge.httppool import quiet_pool


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"hello"


class QuietPoolTests(TestCase):
    def setUp(self) -> None:
        self.port = reactor.listenTCP(0, Site(_Hello()), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(self.port.stopListening)
        self.lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    @inlineCallbacks
    def fetch(self, pool: HTTPConnectionPool) -> Any:
        agent = Agent(reactor, pool=pool)
        url = f"http://127.0.0.1:{self.port.getHost().port}/".encode()
        response = yield agent.request(b"GET", url)
        body = yield readBody(response)
        yield pool.closeCachedConnections()
        return body

    def factory_lines(self) -> list[str]:
        return [line for line in self.lines if "HTTP11ClientFactory" in line]

    @inlineCallbacks
    def test_quiet(self) -> Any:
        body = yield self.fetch(quiet_pool(reactor))
        self.assertEqual(body, b"hello")
        self.assertEqual(self.factory_lines(), [])

    @inlineCallbacks
    def test_plain_pool_is_noisy(self) -> Any:
        """What the quiet pool removes (so the test above can fail)."""
        body = yield self.fetch(HTTPConnectionPool(reactor))
        self.assertEqual(body, b"hello")
        self.assertTrue(any(line.startswith("Starting factory") for line in self.factory_lines()))
