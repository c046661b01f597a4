"""
The monitor's token: where it comes from, bearer header or ``?token=``,
401 and 403 (counted), a constant-time comparison, and ``/metrics``
behind it unless opened.  On a memory reactor.
"""

from __future__ import annotations

import hmac
import json

from twisted.trial.unittest import SynchronousTestCase

from tests.monitor.harness import TOKEN, MonitoredBridge, bearer
from xlbridge.monitor import auth
from xlbridge.monitor.auth import ENV_VAR, TokenSource, Verdict, resolve_token


class TokenTests(MonitoredBridge, SynchronousTestCase):
    def setUp(self) -> None:
        self.build()

    def test_resolution_order(self) -> None:
        self.assertEqual(resolve_token("cfg", {ENV_VAR: "env"}), ("cfg", TokenSource.CONFIG))
        self.assertEqual(resolve_token(None, {ENV_VAR: "env"}), ("env", TokenSource.ENV))
        self.assertEqual(resolve_token("  ", {ENV_VAR: " "})[1], TokenSource.GENERATED)
        generated, _ = resolve_token(None, {})
        self.assertGreaterEqual(len(generated), 32)
        self.assertNotEqual(generated, resolve_token(None, {})[0])

    def test_bearer_and_query_accepted(self) -> None:
        self.assertEqual(self.get("/api/calls", bearer())[0], 200)
        self.assertEqual(self.get(f"/api/calls?token={TOKEN}")[0], 200)
        self.assertEqual(sum(self.monitor.guard.refused.values()), 0)

    def test_missing_is_401_and_wrong_is_403_and_counted(self) -> None:
        code, headers, body = self.get("/api/calls")
        self.assertEqual(code, 401)
        self.assertIn(b"Bearer", headers.getRawHeaders(b"www-authenticate")[0])
        self.assertEqual(json.loads(body), {"error": "token required"})
        self.assertEqual(self.get("/api/calls", bearer("nope"))[0], 403)
        self.assertEqual(self.get("/api/calls?token=nope")[0], 403)
        self.assertEqual(self.get("/api/calls", {b"Authorization": [b"Basic " + TOKEN.encode()]})[0], 401)
        self.assertEqual(self.get("/api/anything/else")[0], 401)
        refused = self.monitor.guard.refused
        self.assertEqual((refused[Verdict.MISSING], refused[Verdict.WRONG]), (3, 2))
        metrics = self.get("/metrics", bearer())[2].decode()
        self.assertIn('xlbridge_monitor_auth_refused_total{reason="wrong"} 2.0', metrics)

    def test_comparison_is_constant_time(self) -> None:
        calls: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return real(a, b)

        self.patch(auth.hmac, "compare_digest", spy)
        self.assertEqual(self.get("/api/calls", bearer("guess"))[0], 403)
        self.assertEqual(calls, [(b"guess", TOKEN.encode())])

    def test_metrics_need_the_token_unless_open(self) -> None:
        self.assertEqual(self.get("/metrics")[0], 401)
        self.assertEqual(self.get("/metrics", bearer())[0], 200)

class OpenMetricsTests(MonitoredBridge, SynchronousTestCase):
    metrics_open = True

    def test_open_metrics_served_with_prometheus_content_type(self) -> None:
        self.build()
        code, headers, body = self.get("/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version="))
        self.assertIn(b"xlbridge_active_calls 0.0", body)
