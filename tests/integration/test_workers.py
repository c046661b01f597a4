"""
``twistd xlbridge --workers 2`` as a real process tree: a supervisor and
two worker processes, fixed relay pairs spread over them.

- every pair is served (by the worker its index gives) and the machine
  monitor shows both workers;
- SIGTERM to the supervisor stops both workers: every call of each
  worker's events file ends with ``CallEnded`` (``shutdown``), every line
  is JSON, no worker is left;
- a worker that cannot start (its port is taken) crash-loops, backs off,
  and is reported in the log and ``/metrics``, while the other worker's
  calls go on;
- SIGKILL of the supervisor: the workers see their stdin close and exit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.procs import RTPCallers, XLBridgeProcess, free_port, free_ports, parse_lines

PAIRS = 4
TOKEN = "workers-test-token"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not yet reaped by a dead parent's init) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class WorkersProcessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        # Monitor ports: the machine's and each worker's (+1+K) must be free.
        while True:
            self.monitor = free_port(socket.SOCK_STREAM)
            if self.monitor < 65000:
                break
        self.ports = free_ports(2 * PAIRS)
        self.spec = ",".join(f"{50000 + i}={p}" for i, p in enumerate(self.ports))
        self.events = os.path.join(self.dir, "events.jsonl")

    def start(self) -> XLBridgeProcess:
        proc = XLBridgeProcess(
            ["--ports", self.spec, "--engines", "relay", "--reply-codec", "slin16", "--events", self.events,
             "--call-timeout", "60", "--workers", "2", "--node", "t"],
            os.path.join(self.dir, "xlbridge.log"), self.dir, self.monitor,
            env={**os.environ, "XLBRIDGE_MONITOR_TOKEN": TOKEN},
        )
        self.addCleanup(proc.ensure_stopped)
        self.addCleanup(self.kill_workers, proc)
        return proc

    def worker_pids(self, proc: XLBridgeProcess) -> dict[int, int]:
        """The latest pid of each worker, from the supervisor's log."""
        return {int(k): int(pid) for k, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", proc.log_text())}

    def kill_workers(self, proc: XLBridgeProcess) -> None:
        for pid in self.worker_pids(proc).values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def wait_log(self, proc: XLBridgeProcess, pattern: str, count: int = 1, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, proc.log_text())) >= count:
                return
            time.sleep(0.1)
        self.fail(f"{pattern!r} not {count} times in the log after {timeout} s:\n{proc.log_text()[-4000:]}")

    def callers(self, ports: list[int]) -> RTPCallers:
        callers = RTPCallers(ports)
        callers.start()
        self.addCleanup(callers.stop)
        return callers

    def test_pairs_spread_and_sigterm_stops_all(self) -> None:
        proc = self.start()
        self.wait_log(proc, r"RTPEndpoint starting on", 2 * PAIRS)
        callers = self.callers(self.ports)
        firsts = callers.wait_voice_after(0.0, 30.0)
        self.assertEqual([i for i, t in enumerate(firsts) if t is None], [], proc.log_text()[-4000:])
        # Each worker bound only its own pairs' ports (pair i -> worker i % 2).
        log = proc.log_text()
        for i in range(PAIRS):
            for port in self.ports[2 * i:2 * i + 2]:
                self.assertRegex(log, rf"w{i % 2}\| .*RTPEndpoint starting on {port}\b")
        status, body = proc.get("/api/calls", TOKEN)
        self.assertEqual(status, 200, body)
        calls = json.loads(body)["calls"]
        self.assertEqual(sorted(c["worker"] for c in calls), [0, 0, 1, 1])
        status, metrics = proc.get("/metrics", TOKEN)
        self.assertEqual(status, 200)
        self.assertIn(b"xlbridge_workers_up 2.0", metrics)
        pids = self.worker_pids(proc)
        self.assertEqual(sorted(pids), [0, 1])
        time.sleep(1.0)

        proc.signal(signal.SIGTERM)
        log = proc.log_text()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("restarting in", log)  # a stop is not a crash
        for pid in pids.values():
            self.assertFalse(alive(pid), f"worker {pid} left running")
        ended_total = 0
        for k in range(2):
            records, bad = parse_lines(os.path.join(self.dir, f"events.w{k}.jsonl"))
            self.assertEqual(bad, [])
            started = sorted(r["call_id"] for r in records if r["event"] == "CallStarted")
            ended = {r["call_id"]: r["reason"] for r in records if r["event"] == "CallEnded"}
            self.assertEqual(len(started), PAIRS // 2)
            self.assertEqual(started, sorted(ended))
            self.assertEqual(set(ended.values()), {"shutdown"})
            ended_total += len(ended)
        self.assertEqual(ended_total, PAIRS)
        self.assertFalse(os.path.exists(self.events))  # one file per worker, none shared

    def test_crash_looping_worker_reported_other_unharmed(self) -> None:
        # Worker 1 serves pairs 1 and 3: take one of its ports.
        squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        squatter.bind(("127.0.0.1", self.ports[2]))
        self.addCleanup(squatter.close)
        proc = self.start()
        self.wait_log(proc, r"worker 1 is crash-looping", 1, timeout=90)
        # Worker 0's calls work meanwhile.
        worker0 = self.ports[0:2] + self.ports[4:6]
        callers = self.callers(worker0)
        firsts = callers.wait_voice_after(0.0, 30.0)
        self.assertEqual([i for i, t in enumerate(firsts) if t is None], [], proc.log_text()[-4000:])
        status, metrics = proc.get("/metrics", TOKEN)
        self.assertEqual(status, 200)
        text = metrics.decode()
        self.assertRegex(text, r'xlbridge_worker_crash_loop\{worker="1"\} 1\.0')
        self.assertRegex(text, r'xlbridge_worker_up\{worker="0"\} 1\.0')
        restarts = re.search(r'xlbridge_worker_restarts_total\{worker="1"\} (\d+)', text)
        assert restarts is not None
        self.assertGreaterEqual(int(restarts.group(1)), 2)
        # Backing off: the delays logged double.
        delays = [float(d) for d in re.findall(r"worker 1 .*?restarting in ([\d.]+) s", proc.log_text())]
        self.assertGreaterEqual(len(delays), 3, delays)
        self.assertEqual(delays[:3], [delays[0], 2 * delays[0], 4 * delays[0]])
        proc.signal(signal.SIGTERM)

    def test_workers_exit_when_the_supervisor_is_killed(self) -> None:
        proc = self.start()
        self.wait_log(proc, r"RTPEndpoint starting on", 2 * PAIRS)
        pids = self.worker_pids(proc)
        proc.signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p) for p in pids.values()):
            time.sleep(0.1)
        self.assertEqual([p for p in pids.values() if alive(p)], [])
        # Their ports are free again for the next start.
        for port in self.ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", port))
            s.close()
