"""
The monitor as a service: the page and its static files (open, typed,
confined, never leaking the token), the URL logged at start-up, and
refusing to start on a bad or busy endpoint.  On a memory reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import fail
from twisted.internet.error import CannotListenError
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.monitor.harness import TOKEN, MonitoredBridge
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.monitor.auth import ENV_VAR, TokenGuard, TokenSource
from xlbridge.monitor.service import MonitorService, make_monitor
from xlbridge.testing import MemoryUDPReactor


class PageTests(MonitoredBridge, SynchronousTestCase):
    def setUp(self) -> None:
        self.build()

    def test_page_is_open_and_does_not_leak_the_token(self) -> None:
        code, headers, body = self.get(f"/?token={TOKEN}")
        self.assertEqual(code, 200)
        self.assertIn(b'<script src="/static/app.js"', body)
        self.assertNotIn(TOKEN.encode(), body)
        self.assertEqual(headers.getRawHeaders(b"referrer-policy"), [b"no-referrer"])
        (csp,) = headers.getRawHeaders(b"content-security-policy")
        self.assertIn(b"default-src 'self'", csp)
        self.assertIn(b"connect-src 'self' ws: wss:", csp)
        self.assertIn(b"script-src 'self';", csp)  # no inline script, no other origins
        self.assertNotIn(TOKEN, repr(self.monitor.guard))
        self.assertEqual(sum(self.monitor.guard.refused.values()), 0)

    def test_static_files_are_open_typed_and_confined(self) -> None:
        for name, kind in (("app.js", b"text/javascript"), ("style.css", b"text/css"), ("index.html", b"text/html")):
            code, headers, body = self.get(f"/static/{name}")
            self.assertEqual(code, 200, name)
            self.assertTrue(headers.getRawHeaders(b"content-type")[0].startswith(kind), name)
            self.assertEqual(headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
            self.assertEqual(headers.getRawHeaders(b"referrer-policy"), [b"no-referrer"])
            self.assertTrue(headers.getRawHeaders(b"content-security-policy"))
            self.assertGreater(len(body), 100)
        for path in ("/static/nope.js", "/static/../service.py", "/static/%2e%2e%2fservice.py",
                     "/static/", "/static/a/app.js", "/static/.hidden.js", "/static/__init__.py"):
            self.assertEqual(self.get(path)[0], 404, path)
        self.assertEqual(sum(self.monitor.guard.refused.values()), 0)

class ServiceTests(SynchronousTestCase):
    def bridge(self) -> BridgeService:
        return BridgeService(load_config({"ports": "7777,8888"}), MemoryUDPReactor())

    def start(self, **kwargs: Any) -> tuple[MonitorService, list[Any]]:
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        monitor = make_monitor(self.bridge(), MemoryUDPReactor(), "tcp:3001:interface=127.0.0.1", **kwargs)
        monitor.startService()
        self.addCleanup(monitor.stopService)
        return monitor, [e for e in logged if "url" in e or "base" in e]

    def test_generated_token_url_logged_once(self) -> None:
        monitor, logged = self.start(environ={})
        self.assertEqual(monitor.guard.source, TokenSource.GENERATED)
        (event,) = logged
        self.assertEqual(event["url"], f"http://localhost:3001/?token={monitor.guard.token}")

    def test_configured_token_is_not_logged(self) -> None:
        monitor, logged = self.start(token=TOKEN, environ={})
        (event,) = logged
        self.assertNotIn(TOKEN, repr(event))
        monitor2, _ = self.start(environ={ENV_VAR: "from-env"})
        self.assertEqual((monitor2.guard.token, monitor2.guard.source), ("from-env", TokenSource.ENV))

    def test_none_and_bad_descriptions_are_refused_before_start(self) -> None:
        self.assertRaises(ValueError, make_monitor, self.bridge(), MemoryUDPReactor(), "none")
        self.assertRaises(ValueError, make_monitor, self.bridge(), MemoryUDPReactor(), "bogus:1")

    def test_listen_failure_fails_start(self) -> None:
        class Taken:
            def listen(self, factory: Any) -> Any:
                return fail(CannotListenError("127.0.0.1", 3001, OSError("address in use")))

        monitor = MonitorService(self.bridge(), MemoryUDPReactor(), Taken(), TokenGuard("t"))  # type: ignore[arg-type]
        self.assertRaises(CannotListenError, monitor.startService)
