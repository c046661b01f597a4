"""
HEAD on every monitor path (issue 15, bad input): never a 500.  ``HEAD
/api`` with the token reached a bare ``Resource`` whose ``render_HEAD``
calls a missing ``render_GET``: AttributeError, a 500 and a traceback
(found by reliability/fuzz_monitor.py).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.monitor.harness import MonitoredBridge, bearer


class HeadTests(MonitoredBridge, SynchronousTestCase):
    def setUp(self) -> None:
        self.build()

    def head(self, path: str, headers: object = None) -> int:
        d = self.http.head(f"http://monitor{path}", headers=headers)  # type: ignore[attr-defined]
        self.http.flush()
        return int(self.successResultOf(d).code)

    def test_api_branch_is_405_for_get_and_head(self) -> None:
        self.assertEqual(self.get("/api", bearer())[0], 405)
        self.assertEqual(self.head("/api", bearer()), 405)
        self.assertEqual(self.head("/api/", bearer()), self.get("/api/", bearer())[0])

    def test_no_path_answers_head_with_a_500(self) -> None:
        for path in ("/", "/static/app.js", "/static/%00app.js", "/api/calls", "/metrics", "/readyz", "/livez",
                     "/nope", "/api/calls/1"):
            self.assertLess(self.head(path, bearer()), 500, path)
            self.assertLess(self.head(path), 500, path)


class TokenNotLoggedTests(MonitoredBridge, SynchronousTestCase):
    """
    Twisted logs a HEAD request whose resource returns a body with the
    request's repr, which held the whole URI: ``?token=`` went to the log.
    """

    def setUp(self) -> None:
        self.build()
        from twisted.logger import formatEvent, globalLogPublisher

        self.lines: list[str] = []
        observer = lambda event: self.lines.append(str(formatEvent(event)))  # noqa: E731
        globalLogPublisher.addObserver(observer)  # type: ignore[arg-type]
        self.addCleanup(globalLogPublisher.removeObserver, observer)  # type: ignore[arg-type]

    def test_head_with_query_token_does_not_log_it(self) -> None:
        from tests.monitor.harness import TOKEN

        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        site = self.monitor.site  # the real site (treq's stub makes its own)
        for path in ("/api/calls", "/livez", "/static/app.js", "/"):
            proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
            transport = StringTransport()
            proto.makeConnection(transport)
            proto.dataReceived(f"HEAD {path}?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            self.assertIn(b"HTTP/1.1 200", transport.value())
        site.stop_checks()
        self.assertTrue(any("HEAD" in line for line in self.lines))  # Twisted did log them
        for line in self.lines:
            self.assertNotIn(TOKEN, line)
