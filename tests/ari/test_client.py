"""
The ARI REST client: what a failure is called in the logs (refused, DNS,
timeouts, HTTP statuses), the request timeout on an injected clock, 401 and
403 as clear errors that never show the password and reach ``on_refused``,
and the write-access check, in memory and against the fake ARI.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.error import (
    ConnectionDone,
    ConnectionRefusedError,
    DNSLookupError,
    TCPTimedOutError,
)
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import ResponseNeverReceived

from tests.ari.harness import PASSWORD, ARIHarness
from xlbridge.ari.client import (
    ACCESS_CHECK_BRIDGE,
    ARIAuthError,
    ARIClient,
    ARIError,
    ARITimeout,
    describe_failure,
    http_answer,
)


class DescribeTests(SynchronousTestCase):
    def test_connection_failures(self) -> None:
        self.assertEqual(
            describe_failure(ConnectionRefusedError("111: Connection refused")),
            "connection refused (Connection was refused by other side: 111: Connection refused)",
        )
        self.assertEqual(
            describe_failure(Failure(DNSLookupError("no results for hostname lookup: pbx.invalid"))),
            "DNS lookup failed: no results for hostname lookup: pbx.invalid",
        )
        self.assertEqual(describe_failure(TCPTimedOutError()), "timed out (TCP connection timed out)")
        self.assertEqual(
            describe_failure(ResponseNeverReceived([Failure(ConnectionDone())])),
            "connection lost before Asterisk answered (Connection was closed cleanly)",
        )
        self.assertEqual(describe_failure(ValueError("odd")), "ValueError: odd")

    def test_http_answers(self) -> None:
        err = ARIError("GET", "/channels", 503, '{"message": "Asterisk not booted"}')
        self.assertEqual(describe_failure(err), "HTTP 503 Service Unavailable: Asterisk not booted")
        self.assertEqual(str(err), "ARI GET /channels failed: HTTP 503 Service Unavailable: Asterisk not booted")
        self.assertEqual(http_answer(502, "<html>\n  Bad   gateway </html>"), "HTTP 502 Bad Gateway: Bad gateway")
        # Asterisk's HTTP server while res_ari is not loaded (seen at a restart).
        page = ('<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\r\n<html><head>\r\n<title>404 Not Found</title>'
                '\r\n</head><body>\r\n<h1>Not Found</h1>\r\n<p>The requested URL was not found on this server.</p>'
                '\r\n<hr />\r\n<address>Asterisk Server</address>\r\n</body></html>\r\n')
        self.assertEqual(http_answer(404, page), "HTTP 404 Not Found: The requested URL was not found on this server.")
        self.assertEqual(http_answer(599), "HTTP 599")
        self.assertEqual(len(http_answer(500, "x" * 1000)), len("HTTP 500 Internal Server Error: ") + 200)

    def test_refusals_name_the_options(self) -> None:
        e401 = ARIAuthError("GET", "/channels", "xlbridge", 401, '{"message": "Authentication required"}')
        self.assertIn("HTTP 401 Unauthorized: Authentication required", str(e401))
        for word in ("--ari-user", "--ari-password-file", "ari.conf", "'xlbridge'"):
            self.assertIn(word, str(e401))
        e403 = ARIAuthError("POST", "/bridges", "xlbridge", 403, '{"message": "Write access denied"}')
        self.assertIn("HTTP 403 Forbidden: Write access denied", str(e403))
        self.assertIn("read_only = no", str(e403))
        self.assertEqual(describe_failure(e403), "HTTP 403 Forbidden: Write access denied")


class _Response:
    def __init__(self, code: int, text: str) -> None:
        self.code, self._text = code, text

    def text(self, encoding: str) -> "Deferred[str]":
        return succeed(self._text)


class _HTTP:
    """
    Stands in for treq's ``HTTPClient``: each request gets the next answer
    (a Deferred left unfired if there is none).
    """

    def __init__(self, *answers: _Response) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> "Deferred[Any]":
        self.sent.append((method, url, kwargs))
        return succeed(self.answers.pop(0)) if self.answers else Deferred()


class InMemoryTests(SynchronousTestCase):
    def client(self, *answers: _Response) -> ARIClient:
        self.clock = Clock()
        self.http = _HTTP(*answers)
        return ARIClient("http://127.0.0.1:8088", "xlbridge", PASSWORD, MemoryReactorClock(),  # type: ignore[arg-type]
                         http=self.http, timeout=30, clock=self.clock)  # type: ignore[arg-type]

    def test_unanswered_request_times_out(self) -> None:
        client = self.client()
        d = client.channels()
        self.clock.advance(29.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        f = self.failureResultOf(d, ARITimeout)
        self.assertEqual(str(f.value), "ARI GET /channels: no answer within 30 s (timed out)")
        self.assertEqual(describe_failure(f), "timed out: no answer within 30 s")

    def test_answered_request_leaves_no_timer(self) -> None:
        client = self.client(_Response(200, "[]"))
        self.assertEqual(self.successResultOf(client.channels()), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refusal_reaches_on_refused(self) -> None:
        client = self.client(_Response(401, '{"message": "Authentication required"}'))
        seen: list[ARIAuthError] = []
        client.on_refused = seen.append
        f = self.failureResultOf(client.answer("1724500000.1"), ARIAuthError)
        self.assertEqual(seen, [f.value])
        self.assertEqual((f.value.status, f.value.method, f.value.path), (401, "POST", "/channels/1724500000.1/answer"))
        self.assertNotIn(PASSWORD, str(f.value))

    def test_other_errors_do_not(self) -> None:
        client = self.client(_Response(500, ""))
        seen: list[ARIAuthError] = []
        client.on_refused = seen.append
        self.failureResultOf(client.bridges(), ARIError)
        self.assertEqual(seen, [])

    def test_access_check(self) -> None:
        client = self.client(_Response(404, '{"message": "Bridge not found"}'),
                             _Response(403, '{"message": "Write access denied"}'),
                             _Response(500, ""))
        self.assertIsNone(self.successResultOf(client.check_access()))
        self.assertEqual(self.http.sent[0][:2], ("DELETE", f"http://127.0.0.1:8088/ari/bridges/{ACCESS_CHECK_BRIDGE}"))
        self.assertEqual(self.failureResultOf(client.check_access(), ARIAuthError).value.status, 403)
        f = self.failureResultOf(client.check_access(), ARIError)
        self.assertFalse(f.check(ARIAuthError))


class AuthTests(ARIHarness):
    def test_rest_auth_failure_is_clear(self) -> Any:
        async def run() -> None:
            client = ARIClient(self.fake.url, "xlbridge", "wrong-pw", reactor)
            self.addCleanup(client.close)
            try:
                await client.channels()
            except ARIAuthError as e:
                self.assertIn("401", str(e))
                self.assertIn("xlbridge", str(e))
                self.assertIn("ari.conf", str(e))
                self.assertIn("Authentication required", str(e))
                self.assertNotIn("wrong-pw", str(e))
                self.assertNotIn("wrong-pw", repr(client))
            else:
                self.fail("no ARIAuthError")

        return ensureDeferred(run())

    def test_read_only_user(self) -> Any:
        async def run() -> None:
            self.fake.read_only = True
            client = ARIClient(self.fake.url, "xlbridge", PASSWORD, reactor)
            self.addCleanup(client.close)
            self.assertEqual(await client.channels(), [])  # reading is allowed
            try:
                await client.check_access()
            except ARIAuthError as e:
                self.assertEqual(e.status, 403)
                self.assertIn("Write access denied", str(e))
                self.assertIn("read_only = no", str(e))
            else:
                self.fail("no ARIAuthError")
            self.fake.read_only = False
            await client.check_access()

        return ensureDeferred(run())

    def test_connection_refused(self) -> Any:
        async def run() -> None:
            port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
            number = port.getHost().port
            await port.stopListening()
            client = ARIClient(f"http://127.0.0.1:{number}", "xlbridge", PASSWORD, reactor)
            self.addCleanup(client.close)
            try:
                await client.channels()
            except Exception as e:
                self.assertTrue(describe_failure(e).startswith("connection refused"), describe_failure(e))
            else:
                self.fail("connected to a closed port")

        return ensureDeferred(run())
