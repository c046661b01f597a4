"""
The monitor's tokens: where they come from, bearer header or ``?token=``,
401 and 403 (counted), constant-time comparisons, ``/metrics`` behind the
token unless opened, and the listen token: never generated, a superset of
the view token, set in the file or the environment only.  On a memory
reactor.
"""

from __future__ import annotations

import hmac
import json
import os

from twisted.trial.unittest import SynchronousTestCase

from tests.monitor.harness import LISTEN_TOKEN, TOKEN, MonitoredBridge, bearer
from xlbridge import tap
from xlbridge.config import load_config
from xlbridge.monitor import auth
from xlbridge.monitor.auth import (
    ENV_VAR,
    LISTEN_ENV_VAR,
    Role,
    TokenGuard,
    TokenSource,
    Verdict,
    resolve_listen_token,
    resolve_token,
)
from xlbridge.monitor.service import MonitorService, make_monitor
from xlbridge.testing import MemoryUDPReactor


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
        # Both tokens, whichever matches (here: neither).
        self.assertEqual(calls, [(b"guess", TOKEN.encode()), (b"guess", LISTEN_TOKEN.encode())])

    def test_listen_token_opens_the_api_too(self) -> None:
        self.assertEqual(self.get("/api/calls", bearer(LISTEN_TOKEN))[0], 200)
        self.assertEqual(self.get(f"/metrics?token={LISTEN_TOKEN}")[0], 200)

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


class ListenTokenTests(SynchronousTestCase):
    def test_resolution_never_generates_one(self) -> None:
        self.assertEqual(resolve_listen_token("cfg", {LISTEN_ENV_VAR: "env"}), ("cfg", TokenSource.CONFIG))
        self.assertEqual(resolve_listen_token(None, {LISTEN_ENV_VAR: " env "}), ("env", TokenSource.ENV))
        self.assertEqual(resolve_listen_token(" ", {ENV_VAR: "view"}), (None, None))

    def test_roles(self) -> None:
        guard = TokenGuard("view", TokenSource.CONFIG, "listen", TokenSource.ENV)
        self.assertEqual(guard.authorize(None, "view"), (Verdict.OK, Role.VIEW))
        self.assertEqual(guard.authorize("Bearer listen", None), (Verdict.OK, Role.LISTEN))
        self.assertEqual(guard.authorize("Bearer view", "listen"), (Verdict.OK, Role.LISTEN))
        self.assertEqual(guard.authorize(None, "nope"), (Verdict.WRONG, None))
        self.assertEqual(guard.authorize(None, None), (Verdict.MISSING, None))
        self.assertEqual(guard.check(None, "listen"), Verdict.OK)  # the listen token also views
        self.assertEqual((guard.listen_enabled, guard.listen_is_view), (True, False))
        self.assertEqual(repr(guard), "<TokenGuard source=config token=<redacted> listen=env>")

    def test_no_listen_token_no_listen_role(self) -> None:
        guard = TokenGuard("view")
        self.assertFalse(guard.listen_enabled)
        self.assertEqual(guard.authorize(None, "view"), (Verdict.OK, Role.VIEW))
        # The stand-in compared when no listen token is set matches nothing.
        self.assertEqual(guard.authorize(None, "\0\0\0\0")[0], Verdict.WRONG)
        self.assertIn("listen=off", repr(guard))

    def test_same_token_means_every_viewer_listens(self) -> None:
        guard = TokenGuard("both", TokenSource.CONFIG, "both")
        self.assertTrue(guard.listen_is_view)
        self.assertEqual(guard.authorize(None, "both"), (Verdict.OK, Role.LISTEN))

    def test_make_monitor_reads_the_environment(self) -> None:
        from xlbridge.bridge import BridgeService

        bridge = BridgeService(load_config({"ports": "7777,8888"}), MemoryUDPReactor())
        monitor = make_monitor(bridge, MemoryUDPReactor(), "tcp:0", environ={LISTEN_ENV_VAR: "from-env"})
        self.assertEqual(monitor.guard.authorize(None, "from-env"), (Verdict.OK, Role.LISTEN))
        self.assertEqual(monitor.guard.listen_source, TokenSource.ENV)
        quiet = make_monitor(bridge, MemoryUDPReactor(), "tcp:0", environ={})
        self.assertIsNone(quiet.guard.listen_source)


class ListenTokenSettingTests(SynchronousTestCase):
    """
    ``[monitor] listen_token`` in the file, ``XLBRIDGE_MONITOR_LISTEN_TOKEN``
    in the environment (which wins), and never a command-line flag.
    """

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_file_and_environment(self) -> None:
        path = self.write('[monitor]\nlisten_token = "from-file"\n')
        config = load_config({}, path, environ={})
        self.assertEqual(config.monitor_listen_token, "from-file")
        self.assertNotIn("from-file", repr(config))
        overridden = load_config({}, path, environ={LISTEN_ENV_VAR: "from-env"})
        self.assertIsNone(overridden.monitor_listen_token)  # the monitor reads the environment's
        self.assertIsNone(load_config({}, None, environ={}).monitor_listen_token)

    def test_no_flag(self) -> None:
        flags = {row[0] for row in tap.Options.optParameters}
        self.assertNotIn("monitor-listen-token", flags)
        self.assertNotIn("listen-token", flags)

    def test_twistd_plugin_wires_it(self) -> None:
        path = self.write('[monitor]\nlisten_token = "from-file"\nendpoint = "tcp:0:interface=127.0.0.1"\n')
        environ = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, LISTEN_ENV_VAR)}
        self.patch(os, "environ", environ)
        options = tap.Options()
        options.parseOptions(["--config", path, "--engines", "relay"])
        bridge = tap.makeService(options, MemoryUDPReactor())
        (monitor,) = [s for s in bridge if isinstance(s, MonitorService)]  # type: ignore[attr-defined]
        self.assertEqual(monitor.guard.authorize(None, "from-file"), (Verdict.OK, Role.LISTEN))

