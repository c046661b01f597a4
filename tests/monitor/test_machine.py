"""
The machine monitor against two real worker monitors on loopback: merged
metrics with worker labels, a down or silent worker, the token rules,
merged calls and machine readiness.

The workers' bridges run on memory reactors (their media is not what is
tested); their monitors and the machine monitor listen on the real reactor
on ``127.0.0.1:0`` and talk HTTP to each other.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import treq
from treq.client import HTTPClient
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.monitor.harness import TOKEN, bearer
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.monitor.machine import MachineMonitorService, make_machine_monitor
from xlbridge.monitor.machine_metrics import WorkerView
from xlbridge.monitor.service import MonitorService, make_monitor
from xlbridge.rtp.packet import build
from xlbridge.testing import MemoryUDPReactor, pump_ticks

#: The real reactor (untyped: the tests use TCP, time and name resolution).
reactor: Any = _reactor

A = ("127.0.0.1", 10000)
B = ("127.0.0.1", 10002)


class Worker:
    """
    A relaying bridge on a memory reactor with its monitor on the real
    reactor, loopback, port 0.

    :param ready: whether its ``/readyz`` says ready (a 0 s stall limit makes
        the egress clock count as stalled at once).
    """

    def __init__(self, ready: bool = True) -> None:
        self.clock: Any = MemoryUDPReactor()
        config = load_config({"ports": "7777,8888", "langs": "en,es"})
        self.bridge = BridgeService(config, self.clock)  # type: ignore[arg-type]
        self.monitor: MonitorService = make_monitor(
            self.bridge, reactor, "tcp:0:interface=127.0.0.1", token=TOKEN, environ={},
            health_options={"stall_s": 3600.0 if ready else 0.0},
        )
        self.monitor.setServiceParent(self.bridge)
        self.bridge.privilegedStartService()
        self.bridge.startService()
        self.seq = {7777: 0, 8888: 0}
        port = self.monitor.port
        assert port is not None
        self.url = f"http://127.0.0.1:{port.getHost().port}/"  # type: ignore[attr-defined]
        pump_ticks(self.clock, 3)

    def speak(self, port: int, frames: int = 1) -> None:
        for _ in range(frames):
            seq = self.seq[port]
            self.seq[port] += 1
            payload = np.full(320, 100, dtype=np.int16).astype(">i2").tobytes()
            self.clock.udp[port].deliver(build(118, seq, seq * 320, 1, payload), A if port == 7777 else B)

    def stop(self) -> Any:
        return self.bridge.stopService() if self.bridge.running else None


class _Hang(Resource):
    """A worker monitor that never answers."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []

    def render_GET(self, request: Any) -> Any:
        self.requests.append(request)
        return NOT_DONE_YET


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class MachineMonitorTests(TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=self.pool))
        self.addCleanup(self.pool.closeCachedConnections)
        self.workers = [Worker(), Worker()]
        for w in self.workers:
            self.addCleanup(w.stop)
        self.views = [WorkerView(k, w.url, pid=1000 + k, up=True, restarts=k) for k, w in enumerate(self.workers)]

    def machine(self, metrics_open: bool = False, **options: Any) -> MachineMonitorService:
        machine = make_machine_monitor(
            reactor, "tcp:0:interface=127.0.0.1", lambda: self.views, TOKEN, metrics_open=metrics_open, **options
        )
        machine.startService()
        self.addCleanup(lambda: deferLater(reactor, 0.01, lambda: None))  # let closed sockets go
        self.addCleanup(machine.stopService)
        port = machine.port
        assert port is not None
        self.base = f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        return machine

    @inlineCallbacks
    def get(self, path: str, headers: Any = None) -> Any:
        response = yield self.http.get(self.base + path, headers=headers)
        body = yield treq.content(response)
        return response.code, body

    @inlineCallbacks
    def test_metrics_are_merged_with_worker_labels(self) -> Any:
        self.workers[0].speak(7777, 3)
        self.workers[1].speak(8888, 2)
        self.machine()
        code, body = yield self.get("/metrics", bearer())
        self.assertEqual(code, 200)
        got = samples(body.decode())
        received = "xlbridge_packets_received_total"
        by_worker = {
            k: sum(v for (name, labels), v in got.items() if name == received and ("worker", str(k)) in labels)
            for k in (0, 1)
        }
        self.assertEqual(by_worker, {0: 3.0, 1: 2.0})
        self.assertEqual(sum(v for (name, _), v in got.items() if name == received), 5.0)
        # Histograms keep their suffixes; every worker sample is labelled.
        self.assertIn(("xlbridge_call_duration_seconds_count", (("worker", "0"),)), got)
        unlabelled = [key for key in got if not key[0].startswith("xlbridge_worker") and
                      key[0] != "xlbridge_workers" and key[0] != "xlbridge_workers_up" and
                      "worker" not in dict(key[1])]
        self.assertEqual(unlabelled, [])
        self.assertEqual(got[("xlbridge_workers", ())], 2.0)
        self.assertEqual(got[("xlbridge_workers_up", ())], 2.0)
        self.assertEqual(got[("xlbridge_worker_up", (("worker", "1"),))], 1.0)
        self.assertEqual(got[("xlbridge_worker_restarts_total", (("worker", "1"),))], 1.0)
        self.assertEqual(got[("xlbridge_worker_scrape_errors_total", (("worker", "0"),))], 0.0)
        # One HELP and TYPE per family, whatever the number of workers.
        self.assertEqual(body.count(b"# TYPE xlbridge_packets_received_total counter"), 1)

    @inlineCallbacks
    def test_down_and_silent_workers_do_not_fail_the_scrape(self) -> Any:
        yield self.workers[1].stop()  # its port is closed: connection refused
        self.views.append(WorkerView(2, None, up=False, restarts=4, crash_loop=True))
        machine = self.machine()
        for _ in range(2):
            code, body = yield self.get("/metrics", bearer())
            self.assertEqual(code, 200)
        got = samples(body.decode())
        self.assertEqual(got[("xlbridge_workers", ())], 3.0)
        self.assertEqual(got[("xlbridge_workers_up", ())], 1.0)
        up = {k: got[("xlbridge_worker_up", (("worker", str(k)),))] for k in range(3)}
        self.assertEqual(up, {0: 1.0, 1: 0.0, 2: 0.0})
        self.assertEqual(got[("xlbridge_worker_scrape_errors_total", (("worker", "1"),))], 2.0)
        self.assertEqual(got[("xlbridge_worker_scrape_errors_total", (("worker", "2"),))], 0.0)  # not asked
        self.assertEqual(got[("xlbridge_worker_crash_loop", (("worker", "2"),))], 1.0)
        self.assertFalse([key for key in got if ("worker", "1") in key[1] and key[0].startswith("xlbridge_packets")])
        self.assertEqual(machine.scrape_errors[1], 2)

    @inlineCallbacks
    def test_a_hanging_worker_times_out_and_scrapes_share_one_fetch(self) -> Any:
        hang = _Hang()
        port = reactor.listenTCP(0, Site(hang), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.views[1] = WorkerView(1, f"http://127.0.0.1:{port.getHost().port}/", up=True)
        self.machine(timeout=0.3)
        first: Deferred[Any] = self.get("/metrics", bearer())
        second: Deferred[Any] = self.get("/metrics", bearer())
        (code1, _), (code2, body2) = (yield first), (yield second)
        self.assertEqual((code1, code2), (200, 200))
        self.assertEqual(len(hang.requests), 1)  # the second scrape joined the first's fetch
        got = samples(body2.decode())
        self.assertEqual(got[("xlbridge_worker_up", (("worker", "1"),))], 0.0)
        self.assertEqual(got[("xlbridge_worker_up", (("worker", "0"),))], 1.0)
        self.assertEqual(got[("xlbridge_worker_scrape_errors_total", (("worker", "1"),))], 1.0)
        for request in hang.requests:
            if not request.finished and not request._disconnected:
                request.finish()

    @inlineCallbacks
    def test_an_oversized_answer_is_a_failed_fetch(self) -> Any:
        self.machine(max_body=512)
        code, body = yield self.get("/metrics", bearer())
        self.assertEqual(code, 200)
        got = samples(body.decode())
        self.assertEqual(got[("xlbridge_workers_up", ())], 0.0)
        code, body = yield self.get("/api/calls", bearer())
        self.assertIn(b"answer too large", body)

    @inlineCallbacks
    def test_token_rules(self) -> Any:
        self.machine()
        for path in ("/metrics", "/api/calls"):
            code, _ = yield self.get(path)
            self.assertEqual(code, 401, path)
            code, _ = yield self.get(path, bearer("wrong"))
            self.assertEqual(code, 403, path)
            code, _ = yield self.get(path, bearer())
            self.assertEqual(code, 200, path)
            code, _ = yield self.get(f"{path}?token={TOKEN}")
            self.assertEqual(code, 200, path)
        for path in ("/healthz", "/livez", "/readyz", "/", "/machine.js", "/machine.css"):
            code, body = yield self.get(path)
            self.assertEqual(code, 200, path)
            self.assertNotIn(TOKEN.encode(), body)

    @inlineCallbacks
    def test_metrics_open(self) -> Any:
        self.machine(metrics_open=True)
        code, body = yield self.get("/metrics")
        self.assertEqual(code, 200)
        self.assertIn(b'xlbridge_worker_up{worker="0"} 1.0', body)
        code, _ = yield self.get("/api/calls")
        self.assertEqual(code, 401)

    @inlineCallbacks
    def test_calls_are_merged_with_their_worker(self) -> Any:
        w = self.workers[1]
        w.speak(7777)
        w.speak(8888)
        self.assertEqual(len(w.bridge.active_calls()), 1)
        self.views.append(WorkerView(2, None, up=False))
        self.machine()
        code, body = yield self.get("/api/calls", bearer())
        self.assertEqual(code, 200)
        doc = _json(body)
        (call,) = doc["calls"]
        self.assertEqual(call["worker"], 1)
        self.assertEqual([leg["extension"] for leg in call["legs"]], ["7777", "8888"])
        self.assertEqual(set(doc["egress"]), {"0", "1"})
        self.assertEqual(doc["endpoints"]["7777"]["worker"], 1)  # both own 7777 here; the later one wins
        rows = {row["worker"]: row for row in doc["workers"]}
        self.assertEqual((rows[0]["answered"], rows[1]["pid"], rows[2]["answered"]), (True, 1001, False))
        self.assertEqual(rows[1]["monitor"], w.url)
        w.clock.advance(30)  # inactivity ends the call
        # Worker 0 "died" (a stopped monitor in this process still answers
        # on the connection the machine monitor keeps open): nothing listens.
        self.views[0] = WorkerView(0, "http://127.0.0.1:1/", up=True)
        code, body = yield self.get("/api/calls", bearer())
        doc = _json(body)
        self.assertEqual((code, doc["calls"]), (200, []))
        self.assertEqual([(row["worker"], row["reason"]) for row in doc["recent"]], [(1, "inactivity")])
        rows = {row["worker"]: row for row in doc["workers"]}
        self.assertEqual((rows[0]["answered"], rows[1]["answered"]), (False, True))
        self.assertIn("error", rows[0])

    @inlineCallbacks
    def test_ready_iff_a_worker_is_ready(self) -> Any:
        self.machine()
        code, body = yield self.get("/readyz")
        doc = _json(body)
        self.assertEqual((code, doc["status"], doc["ready_workers"]), (200, "ready", 2))
        yield self.workers[0].stop()
        not_ready = Worker(ready=False)
        self.addCleanup(not_ready.stop)
        self.views[1] = WorkerView(1, not_ready.url, up=True)
        code, body = yield self.get("/readyz")
        doc = _json(body)
        self.assertEqual((code, doc["status"]), (503, "not ready"))
        self.assertEqual({k: w["ready"] for k, w in doc["workers"].items()}, {"0": False, "1": False})
        self.assertTrue(any("egress" in r for r in doc["workers"]["1"]["reasons"]))
        self.views[0] = WorkerView(0, None, up=False)
        self.views.append(WorkerView(2, self.workers[1].url, up=True))
        code, body = yield self.get("/readyz")
        doc = _json(body)
        self.assertEqual((code, doc["ready_workers"]), (200, 1))
        self.assertEqual(doc["workers"]["0"], {"up": False, "ready": False, "reasons": ["not running"]})


def _json(body: bytes) -> Any:
    return json.loads(body)
