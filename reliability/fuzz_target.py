"""
The process under test: one ``twistd -n xlbridge`` in relay mode with every
surface open, plus (for ARI) the fake ARI child of :mod:`reliability.fuzz_ari`.

Port plan from ``base`` (all on 127.0.0.1):

* ``base .. base+19``: 10 healthy RTP pairs (extension = port);
* ``base+20 .. base+27``: 4 RTP pairs kept for fuzzing;
* ``base+100 ..``: AudioSocket extensions (6, three pairs, half ``:slin16``);
* ``base+200 ..``: WebSocket media extensions (4, two pairs);
* ``base+300``: the monitor; ``base+400``: the fake ARI;
* ``base+500 .. base+599``: ``--rtp-ports`` for ARI ExternalMedia legs.

``--reply-codec slin16`` makes the relay bit-exact (PT 118 back), which is
what the healthy calls check.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any, Optional

import attrs

from reliability.fuzz_common import wait_port

HEALTHY_PAIRS = 10
FUZZ_RTP_PAIRS = 4
AUDIOSOCKET_EXTS = 6
WEBSOCKET_EXTS = 4


@attrs.define
class Plan:
    """Where everything listens."""

    base: int

    @property
    def healthy_ports(self) -> list[int]:
        return list(range(self.base, self.base + 2 * HEALTHY_PAIRS))

    @property
    def fuzz_rtp_ports(self) -> list[int]:
        start = self.base + 2 * HEALTHY_PAIRS
        return list(range(start, start + 2 * FUZZ_RTP_PAIRS))

    @property
    def audiosocket_ports(self) -> list[int]:
        return list(range(self.base + 100, self.base + 100 + AUDIOSOCKET_EXTS))

    @property
    def websocket_ports(self) -> list[int]:
        return list(range(self.base + 200, self.base + 200 + WEBSOCKET_EXTS))

    @property
    def monitor_port(self) -> int:
        return self.base + 300

    @property
    def ari_port(self) -> int:
        return self.base + 400


@attrs.define
class Target:
    """The running bridge (and fake ARI)."""

    plan: Plan
    proc: subprocess.Popen[bytes]
    log_path: str
    token: str
    ari: Optional[subprocess.Popen[str]] = None
    argv: list[str] = attrs.Factory(list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.plan.monitor_port}/metrics"

    def ari_command(self, line: str, timeout: float = 900.0) -> str:
        """Send one line to the fake ARI and return its answer line."""
        assert self.ari is not None and self.ari.stdin is not None and self.ari.stdout is not None
        self.ari.stdin.write(line + "\n")
        self.ari.stdin.flush()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            out = self.ari.stdout.readline()
            if not out:
                raise RuntimeError("fake ARI exited")
            if out.startswith(("done ", "status ")):
                return out.strip()
        raise TimeoutError(line)

    def stop(self) -> dict[str, Any]:
        """SIGTERM the bridge (clean shutdown), then the fake ARI; exit codes."""
        out: dict[str, Any] = {}
        self.proc.send_signal(signal.SIGTERM)
        try:
            out["xlbridge_exit"] = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            out["xlbridge_exit"] = "timeout (killed)"
            self.proc.kill()
            self.proc.wait()
        if self.ari is not None:
            try:
                assert self.ari.stdin is not None
                self.ari.stdin.write("quit\n")
                self.ari.stdin.flush()
                out["fake_ari_exit"] = self.ari.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.ari.kill()
                out["fake_ari_exit"] = "killed"
        return out


def rt_prefix(priority: int) -> list[str]:
    """
    ``chrt -f PRIORITY`` (SCHED_FIFO) when ``priority`` > 0, else nothing.

    Why: on a shared machine whose load comes from others, the bridge and
    the healthy calls would lose frames to *their* load (measured: 31 % of
    frames at load average 15 with no fuzzing at all); at a real-time
    priority only the fuzz input the bridge itself must handle competes with
    its calls, which is what the run is meant to measure.  The fuzzer stays
    at nice 10.
    """
    return ["chrt", "-f", str(priority)] if priority > 0 else []


def start(out_dir: str, base: int, with_ari: bool = True, rt_priority: int = 0, gc_probe: bool = False) -> Target:
    """Start the fake ARI (optional) and the bridge; wait until both are up."""
    plan = Plan(base)
    out_dir = os.path.abspath(out_dir)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    venv_bin = os.path.dirname(sys.executable)
    token = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLBRIDGE_", "DEEPGRAM", "DEEPL", "ELEVENLABS"))}
    env["XLBRIDGE_MONITOR_TOKEN"] = token
    env["PYTHONPATH"] = root
    ari_proc = None
    ari_args: list[str] = []
    if with_ari:
        pw = os.path.join(out_dir, "ari-password")
        with open(pw, "w") as f:
            f.write("fuzz-pass\n")
        os.chmod(pw, 0o600)
        ari_proc = subprocess.Popen(
            [sys.executable, "-m", "reliability.fuzz_ari", "--port", str(plan.ari_port), "--password", "fuzz-pass"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(os.path.join(out_dir, "fake-ari.log"), "w"),
            text=True, cwd=root, env=env,
        )
        assert ari_proc.stdout is not None
        line = ari_proc.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"fake ARI did not start: {line!r}")
        ari_args = ["--ari", line.split()[1], "--ari-user", "xlbridge", "--ari-password-file", pw,
                    "--rtp-ports", f"{base + 500}-{base + 599}"]
    audiosocket = ",".join(f"{p}={p}" + (":slin16" if i % 2 == 0 else "") for i, p in enumerate(plan.audiosocket_ports))
    websocket = ",".join(f"{p}={p}" for p in plan.websocket_ports)
    log_path = os.path.join(out_dir, "xlbridge.log")
    if os.path.exists(log_path):
        os.unlink(log_path)
    # --gc-probe: twistd under bench/gcprobe.py, which writes every garbage
    # collection over 0.5 ms (wall-clock time, generation, pause) to gc.json
    twistd = ([sys.executable, os.path.join(root, "bench", "gcprobe.py"), os.path.join(out_dir, "gc.json")]
              if gc_probe else [os.path.join(venv_bin, "twistd")])
    argv = [
        *rt_prefix(rt_priority), *twistd, "-n", "--pidfile=", "--logfile=-", "xlbridge",
        "--engines", "relay", "--reply-codec", "slin16",
        "--ports", f"{plan.healthy_ports[0]}-{plan.fuzz_rtp_ports[-1]}",
        "--audiosocket", audiosocket, "--websocket", websocket,
        "--monitor", f"tcp:{plan.monitor_port}:interface=127.0.0.1", *ari_args,
    ]
    # The log goes to stdout, into one file: twistd's own --logfile rotates
    # at 1 MB, which the per-surface log scan (by byte offset) cannot follow.
    proc = subprocess.Popen(argv, cwd=out_dir, env=env, stdout=open(log_path, "w"),
                            stderr=open(os.path.join(out_dir, "xlbridge.stderr"), "w"))
    target = Target(plan, proc, log_path, token, ari_proc, argv)
    if not wait_port("127.0.0.1", plan.monitor_port, timeout=60):
        target.stop()
        raise RuntimeError("xlbridge monitor did not come up; see xlbridge.log")
    if with_ari:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            with open(log_path, errors="replace") as f:
                if "ARI events connected" in f.read():
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError("xlbridge never connected to the fake ARI")
    return target
