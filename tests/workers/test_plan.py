"""
Tests for :mod:`xlbridge.workers.plan` and :mod:`xlbridge.workers.options`:
what each worker of ``--workers`` is given.
"""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from xlbridge.errors import ConfigError
from xlbridge.tap import Options
from xlbridge.workers.plan import (
    cores_for, events_path, monitor_port, parse_worker, parse_workers, split_range, worker_app, worker_monitor,
)



def ari(case: SynchronousTestCase) -> list[str]:
    """The --ari options, with a password file (mode 600) for ``case``."""
    path = case.mktemp()
    with open(path, "w") as f:
        f.write("s3cret\n")
    os.chmod(path, 0o600)
    return ["--ari", "http://127.0.0.1:8088", "--ari-user", "xlbridge", "--ari-password-file", path]


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class PureTests(SynchronousTestCase):
    def test_parse_workers(self) -> None:
        self.assertEqual(parse_workers("3"), 3)
        self.assertEqual(parse_workers("auto", cpus=6), 6)
        for bad in ("0", "-1", "many", "257"):
            with self.assertRaises(ConfigError) as e:
                parse_workers(bad)
            self.assertIn("workers", str(e.exception))

    def test_parse_worker(self) -> None:
        self.assertEqual(parse_worker("1/4"), (1, 4))
        for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
            self.assertRaises(ConfigError, parse_worker, bad)

    def test_split_range_disjoint_and_complete(self) -> None:
        for n in (1, 2, 3, 7):
            slices = [split_range(20000, 29999, k, n) for k in range(n)]
            covered = [p for lo, hi in slices for p in range(lo, hi + 1)]
            self.assertEqual(covered, list(range(20000, 30000)))
        self.assertEqual(split_range(20000, 20009, 1, 2), (20005, 20009))

    def test_split_range_too_small(self) -> None:
        with self.assertRaises(ConfigError) as e:
            split_range(20000, 20002, 0, 2)
        self.assertIn("need at least 4", str(e.exception))

    def test_events_path(self) -> None:
        self.assertEqual(events_path("/var/log/xlbridge/calls.jsonl", 2), "/var/log/xlbridge/calls.w2.jsonl")
        self.assertEqual(events_path("calls", 0), "calls.w0")
        self.assertEqual(events_path("/tmp/.hidden", 1), "/tmp/.hidden.w1")

    def test_monitor(self) -> None:
        self.assertEqual(monitor_port("tcp:3001:interface=0.0.0.0"), 3001)
        self.assertEqual(monitor_port("tcp:port=3005"), 3005)
        self.assertIsNone(monitor_port("none"))
        self.assertEqual(worker_monitor("tcp:3001:interface=0.0.0.0", 1), "tcp:3003:interface=127.0.0.1")
        self.assertEqual(worker_monitor("none", 1), "none")
        for bad in ("unix:/tmp/m.sock", "tcp:0", "ssl:3001"):
            self.assertRaises(ConfigError, monitor_port, bad)

    def test_cores(self) -> None:
        self.assertEqual([cores_for(k, 2, [0, 1, 2, 3]) for k in range(2)], [[0, 1], [2, 3]])
        self.assertEqual([cores_for(k, 3, [4, 5]) for k in range(3)], [[4], [5], [4]])
        self.assertEqual(cores_for(0, 1, [0, 1]), [0, 1])

    def test_worker_app(self) -> None:
        self.assertEqual(worker_app("xlbridge", "pbx1", 3), "xlbridge-pbx1-3")


class OptionsTests(SynchronousTestCase):
    def test_single_process_by_default(self) -> None:
        plan = parse("--ports", "7777,8888").processes
        self.assertEqual(plan.workers, 1)
        self.assertFalse(plan.supervises)

    def test_supervisor(self) -> None:
        plan = parse("--ports", "7777,8888,7001,7002", "--workers", "2", "--node", "pbx1").processes
        self.assertTrue(plan.supervises)
        self.assertEqual((plan.workers, plan.node), (2, "pbx1"))

    def test_pairs_spread(self) -> None:
        argv = ["--ports", "7001-7006"]
        got = [parse(*argv, "--worker", f"{k}/2").processes.config.pairs for k in range(2)]
        self.assertEqual([[p.extensions for p in pairs] for pairs in got],
                         [[("7001", "7002"), ("7005", "7006")], [("7003", "7004")]])

    def test_too_many_workers_for_the_pairs(self) -> None:
        with self.assertRaises(usage.UsageError) as e:
            parse("--ports", "7777,8888", "--workers", "2")
        self.assertIn("nothing to serve", str(e.exception))

    def test_ari_worker(self) -> None:
        argv = [*ari(self), "--rtp-ports", "20000-20999", "--monitor", "tcp:3001", "--events", "/tmp/c.jsonl",
                "--node", "pbx1", "--ari-audiosocket-port", "9092"]
        config = parse(*argv, "--worker", "1/2").processes.config
        assert config.ari is not None
        self.assertEqual(config.ari.app, "xlbridge-pbx1-1")
        self.assertEqual(config.ari.entry_app, "xlbridge")
        self.assertEqual(config.ari.rtp_ports, (20500, 20999))
        self.assertEqual(config.ari.audiosocket_port, 9093)
        self.assertEqual(config.ari.websocket_port, 9094)
        self.assertEqual(config.monitor, "tcp:3003:interface=127.0.0.1")
        self.assertEqual(config.events, "/tmp/c.w1.jsonl")
        self.assertIsNone(config.ari.websocket_client)

    def test_websocket_client_entry_per_worker(self) -> None:
        argv = [*ari(self), "--ari-media", "websocket", "--ari-websocket-connection", "client",
                "--ari-websocket-client", "xlbridge-ari"]
        config = parse(*argv, "--worker", "1/3").processes.config
        assert config.ari is not None
        self.assertEqual((config.ari.websocket_client, config.ari.websocket_port), ("xlbridge-ari-1", 9094))

    def test_bad_process_options(self) -> None:
        for argv, word in [
            (["--ports", "7777,8888", "--workers", "zero"], "workers"),
            (["--ports", "7777,8888", "--node", "a b"], "node"),
            (["--ports", "7777,8888", "--ari-dispatch", "yes"], "needs --ari"),
            ([*ari(self), "--ari-dispatch", "maybe"], "yes or no"),
            ([*ari(self), "--workers", "2", "--monitor", "unix:/tmp/m"], "tcp:PORT"),
        ]:
            with self.assertRaises(usage.UsageError) as e:
                parse(*argv)
            self.assertIn(word, str(e.exception))

    def test_argv_kept(self) -> None:
        options = parse("--ports", "7777,8888", "--engines", "relay")
        self.assertEqual(options.argv, ["--ports", "7777,8888", "--engines", "relay"])


class PinTests(SynchronousTestCase):
    """
    A worker pins itself to its share of the CPUs, and the local ASR
    engine's default process count follows that share.
    """

    def test_pin_worker_sizes_local_asr(self) -> None:
        import subprocess
        import sys

        import shutil

        if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2 or not shutil.which("taskset"):
            raise SkipTest("needs CPU affinity and 2 CPUs")
        cpus = sorted(os.sched_getaffinity(0))[:2]
        code = ("from xlbridge.workers.options import pin_worker; from xlbridge.engines.local_asr.pool import "
                "default_workers, usable_cpus; print(pin_worker(1, 2), usable_cpus(), default_workers())")
        out = subprocess.run(["taskset", "-c", ",".join(map(str, cpus)), sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=60, check=True).stdout.split()
        self.assertEqual(out, [f"[{cpus[1]}]", "1", "1"])
