"""
``twistd xlbridge`` as a real process, and RTP callers that keep talking to
it, for the stop, restart and key-hygiene tests.

Blocking code on purpose: the tests signal, restart and read files of a
process the way an operator (or systemd) does, so they do not need the
test's reactor at all; the callers run in a thread of their own and keep
sending through a restart, as Asterisk's ExternalMedia legs would.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import IO, Any, Mapping, Optional, Sequence

import numpy as np

from xlbridge.rtp.packet import build
from tests.test_tap import twistd_command

#: 20 ms of slin16.
FRAME_BYTES = 640
SILENCE = bytes(FRAME_BYTES)
HEADER = 12


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port nobody uses right now on 127.0.0.1 (UDP by default)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int, kind: int = socket.SOCK_DGRAM) -> list[int]:
    """``n`` distinct free ports (all held while choosing, so no repeats)."""
    held = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


class XLBridgeProcess:
    """
    ``twistd -n --pidfile= xlbridge ARGS`` with its log (stdout and stderr)
    in ``log_path``, in directory ``cwd``.

    :ivar monitor_port: the ``--monitor`` port (loopback), for ``/readyz``.
    """

    def __init__(
        self, args: Sequence[str], log_path: str, cwd: str, monitor_port: int,
        env: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.monitor_port = monitor_port
        self._log: IO[bytes] = open(log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [*twistd_command(), "-n", "--pidfile=", "xlbridge", *self.args,
             "--monitor", f"tcp:{monitor_port}:interface=127.0.0.1"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd,
            env=dict(os.environ if env is None else env),
        )

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def get(self, path: str, token: Optional[str] = None, timeout: float = 5.0) -> tuple[int, bytes]:
        """``GET path`` on the monitor: (status, body); 0 when it does not answer."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.monitor_port}{path}")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()
        except (OSError, urllib.error.URLError):
            return 0, b""

    def wait_ready(self, timeout: float = 60.0, path: str = "/readyz") -> float:
        """
        Wait until ``path`` (``/readyz``) says 200 (every port bound, the egress clock
        ticking); return the monotonic time it did.  Fails with the log if
        the process exits or never gets ready.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"xlbridge exited ({self.proc.returncode}) before ready:\n{self.log_text()}")
            if self.get(path, timeout=2.0)[0] == 200:
                return time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"xlbridge not ready after {timeout} s:\n{self.log_text()}")

    def signal(self, signum: int, timeout: float = 60.0) -> float:
        """
        Send ``signum`` and wait for the process to exit; return how long
        that took.
        """
        t0 = time.monotonic()
        self.proc.send_signal(signum)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"xlbridge did not exit {timeout} s after signal {signum}:\n{self.log_text()}")
        self._log.close()
        return time.monotonic() - t0

    def ensure_stopped(self) -> None:
        """Cleanup: kill the process if a test left it running."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if not self._log.closed:
            self._log.close()


class RTPCallers(threading.Thread):
    """
    One UDP socket per leg, each sending 20 ms slin16 packets (PT 118) of
    its own noise to its bridge port every 20 ms until :meth:`stop`, and
    recording when it hears voice (a non-silent payload: in relay mode with
    ``--reply-codec slin16`` that is its partner's audio; the bridge's
    filler is all-zero).

    The sockets are not connected, so a bridge that is gone (between a
    kill and a restart) costs nothing but lost packets, as for Asterisk.

    :ivar voice: per leg, the monotonic times voice packets arrived.
    :ivar received: per leg, every packet received.
    :ivar send_errors: ``sendto`` failures (counted, never fatal).
    """

    def __init__(
        self, ports: Sequence[int], interval: float = 0.02, audio: Optional[Sequence[Optional[np.ndarray]]] = None,
    ) -> None:
        super().__init__(name="rtp-callers", daemon=True)
        self.targets = [("127.0.0.1", p) for p in ports]
        self.interval = interval
        self.socks: list[socket.socket] = []
        for _ in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            self.socks.append(s)
        self.index = {s.fileno(): i for i, s in enumerate(self.socks)}
        rng = np.random.default_rng(7)
        # Nonzero everywhere, so no frame can pass for filler silence.
        self.payloads = [
            (rng.integers(200, 3000, 320) * rng.choice([-1, 1], 320)).astype(">i2").tobytes() for _ in ports
        ]
        # Per leg, what it says instead, looped in 20 ms frames (16 kHz int16).
        self.frames: list[Optional[list[bytes]]] = [None] * len(ports)
        for i, samples in enumerate(audio or ()):
            if samples is not None:
                n = len(samples) // 320
                self.frames[i] = [samples[k * 320 : (k + 1) * 320].astype(">i2").tobytes() for k in range(n)]
        self.voice: list[list[float]] = [[] for _ in ports]
        self.received = [0] * len(ports)
        self.sent = 0
        self.send_errors = 0
        self._stopping = threading.Event()
        self.lock = threading.Lock()

    def stop(self) -> None:
        """Stop sending and close the sockets (again: a no-op)."""
        self._stopping.set()
        if self.is_alive():
            self.join(10)
        for s in self.socks:
            s.close()

    def run(self) -> None:
        seq = 0
        next_send = time.monotonic()
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_send:
                for i, (s, target) in enumerate(zip(self.socks, self.targets)):
                    frames = self.frames[i]
                    payload = frames[seq % len(frames)] if frames else self.payloads[i]
                    packet = build(118, seq & 0xFFFF, (seq * 320) & 0xFFFFFFFF, 0x1000 + i, payload)
                    try:
                        s.sendto(packet, target)
                        self.sent += 1
                    except OSError:
                        self.send_errors += 1
                seq += 1
                next_send += self.interval
                if now - next_send > 0.2:  # a stalled thread: no burst to catch up
                    next_send = now + self.interval
            wait = max(0.0, next_send - time.monotonic())
            ready, _, _ = select.select(self.socks, [], [], wait)
            for s in ready:
                i = self.index[s.fileno()]
                while True:
                    try:
                        data = s.recv(2048)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # ICMP port unreachable reported late: the bridge is away
                    arrived = time.monotonic()
                    with self.lock:
                        self.received[i] += 1
                        if len(data) > HEADER and data[HEADER:] != SILENCE[: len(data) - HEADER]:
                            self.voice[i].append(arrived)

    def first_voice_after(self, t: float) -> list[Optional[float]]:
        """Per leg, the first time voice arrived after ``t``, or ``None``."""
        with self.lock:
            out: list[Optional[float]] = []
            for times in self.voice:
                out.append(next((x for x in times if x > t), None))
            return out

    def wait_voice_after(self, t: float, timeout: float) -> list[Optional[float]]:
        """
        Wait up to ``timeout`` s for every leg to hear voice after ``t``;
        return :meth:`first_voice_after` (``None`` for legs still deaf).
        """
        deadline = time.monotonic() + timeout
        while True:
            firsts = self.first_voice_after(t)
            if all(x is not None for x in firsts) or time.monotonic() > deadline:
                return firsts
            time.sleep(0.02)


def parse_lines(path: str) -> tuple[list[dict[str, Any]], list[bytes]]:
    """
    Every line of an events file parsed on its own: the records, and the
    lines that did not parse (with where they were: the last one is the
    only one allowed to be partial).
    """
    records: list[dict[str, Any]] = []
    bad: list[bytes] = []
    with open(path, "rb") as f:
        for raw in f:
            try:
                records.append(json.loads(raw))
            except ValueError:
                bad.append(raw)
    return records, bad


def write_figures(name: str, figures: Mapping[str, Any]) -> None:
    """
    Append ``figures`` as one JSON line to ``$XLBRIDGE_RELIABILITY_OUT``
    when it is set (for reliability/results), else do nothing.
    """
    out = os.environ.get("XLBRIDGE_RELIABILITY_OUT")
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": name, **figures}) + "\n")
