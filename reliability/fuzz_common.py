"""
Shared helpers of the fuzzer: the target process's footprint, its
Prometheus counters, its log, and a tally of what was sent.

Why here: every surface module needs the same before/after figures (RSS in
KiB and open fds from ``/proc``, drop counters by reason from ``/metrics``)
so the per-surface tables in ``reliability/results/fuzz.md`` are comparable.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from typing import Any, Optional

import attrs

#: Log lines that mean an exception escaped a handler (or a failure was
#: logged with its traceback): the fuzz target must log none.
ESCAPE_PATTERNS = ("Traceback", "Unhandled")


@attrs.define
class Tally:
    """
    What one surface sent, and what the fuzzer itself saw go wrong.

    :ivar inputs: malformed (or deliberately odd) inputs sent, the issue's unit.
    :ivar connections: TCP connections opened for them.
    :ivar by_case: inputs per generator case, to show the split.
    :ivar errors: the fuzzer's own send/connect errors by class (expected:
        refusals and resets when the target closes a bad connection).
    :ivar notes: findings worth reporting (e.g. responses that should not be).
    """

    surface: str
    inputs: int = 0
    connections: int = 0
    seconds: float = 0.0
    by_case: dict[str, int] = attrs.Factory(dict)
    errors: dict[str, int] = attrs.Factory(dict)
    notes: dict[str, Any] = attrs.Factory(dict)

    def add(self, case: str, n: int = 1) -> None:
        """Count ``n`` inputs of ``case``."""
        self.inputs += n
        self.by_case[case] = self.by_case.get(case, 0) + n

    def error(self, e: BaseException | str) -> None:
        """Count one of the fuzzer's own I/O errors by class name."""
        key = e if isinstance(e, str) else type(e).__name__
        self.errors[key] = self.errors.get(key, 0) + 1

    def note(self, key: str, n: int = 1) -> None:
        """Count one observation worth a line in the report."""
        self.notes[key] = self.notes.get(key, 0) + n

    def merge(self, other: "Tally") -> None:
        """Add ``other``'s counts (one connection's, kept apart while it ran) to these."""
        self.connections += other.connections
        for k, v in other.by_case.items():
            self.add(k, v)
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v
        for k, v in other.notes.items():
            self.note(k, v)

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def footprint(pid: int) -> dict[str, int]:
    """
    ``{"rss_kib", "vm_hwm_kib", "fds", "threads"}`` of process ``pid``, read
    from ``/proc`` (KiB as the kernel reports them).
    """
    out = {"rss_kib": -1, "vm_hwm_kib": -1, "fds": -1, "threads": -1}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "VmRSS":
                    out["rss_kib"] = int(value.split()[0])
                elif key == "VmHWM":
                    out["vm_hwm_kib"] = int(value.split()[0])
                elif key == "Threads":
                    out["threads"] = int(value.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` in seconds (``/proc/<pid>/stat``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return -1.0


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def scrape(url: str, token: str, timeout: float = 5.0) -> dict[str, float]:
    """
    The monitor's ``/metrics`` as ``{"name{labels}": value}`` (the
    Prometheus text format, comments dropped).  Empty on failure.
    """
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode("utf-8", "replace")
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


#: Counters whose deltas the report shows per surface (prefixes).
COUNTERS = (
    "xlbridge_packets_dropped_total",
    "xlbridge_outbound_samples_dropped_total",
    "xlbridge_packets_received_total",
    "xlbridge_packets_lost_total",
    "xlbridge_monitor_auth_refused_total",
    "xlbridge_monitor_messages_dropped_total",
    "xlbridge_calls_ended_total",
    "xlbridge_egress_late_ticks_total",
    "xlbridge_egress_skipped_ticks_total",
    "xlbridge_egress_errors_total",
    "xlbridge_connections_refused_total",
    "xlbridge_calls_refused_total",
)


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Non-zero changes of the counters in :data:`COUNTERS` (and any ``*refused*``/``*dropped*``)."""
    out: dict[str, float] = {}
    for key, value in after.items():
        name = key.split("{", 1)[0]
        if not (name.startswith(COUNTERS) or "refused" in name or "dropped" in name or "rejected" in name):
            continue
        if name.endswith(("_created", "_bucket")):
            continue
        d = value - before.get(key, 0.0)
        if d:
            out[key] = d
    return out


def scan_log(path: str, offset: int = 0) -> tuple[dict[str, int], list[str], int]:
    """
    Count :data:`ESCAPE_PATTERNS` in the log from byte ``offset`` on.

    :return: counts per pattern, up to 40 example lines (each with the 2 lines
        that follow it), and the new end offset.
    """
    counts = {p: 0 for p in ESCAPE_PATTERNS}
    examples: list[str] = []
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return counts, examples, offset
    lines = data.decode("utf-8", "replace").splitlines()
    for i, line in enumerate(lines):
        for p in ESCAPE_PATTERNS:
            if p in line:
                counts[p] += 1
                if len(examples) < 40:
                    examples.append("\n".join(lines[max(0, i - 1) : i + 12]))
    return counts, examples, offset + len(data)


def log_tail_lines(path: str, offset: int, limit: int = 30) -> list[str]:
    """Distinct warning/error message shapes logged after ``offset`` (for the report)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return []
    seen: dict[str, int] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        # strip the timestamp and numbers so repeats collapse
        body = re.sub(r"^\S+ \S+ ", "", line)
        shape = re.sub(r"\d+", "N", body)[:160]
        seen[shape] = seen.get(shape, 0) + 1
    ranked = sorted(seen.items(), key=lambda kv: -kv[1])[:limit]
    return [f"{n} x {shape}" for shape, n in ranked]


def wait_port(host: str, port: int, timeout: float = 30.0, udp: bool = False) -> bool:
    """Wait until a TCP port accepts (UDP: just sleep a little)."""
    import socket

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as indented JSON (atomically enough for a report)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def machine() -> dict[str, Optional[str]]:
    """CPU model, cores, kernel and Python of this machine, for the report."""
    import platform
    import sys

    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model, "cores": str(os.cpu_count()), "kernel": platform.release(),
        "python": sys.version.split()[0], "platform": platform.platform(),
    }
