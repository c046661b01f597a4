"""
Run twistd with a ``gc.callbacks`` probe that records every garbage
collection's generation and pause, for bench/profile.py.

Usage: ``python bench/gcprobe.py OUT.json [twistd args...]``, e.g.
``python bench/gcprobe.py /tmp/gc.json -n --pidfile= xlbridge --ports 20000-20399``.
When the reactor shuts down (SIGTERM) OUT.json gets per-generation
counts and pause totals, and the wall-clock time (``time.time()``, comparable
with pcap timestamps) of every pause longer than 0.5 ms.
"""

import atexit
import gc
import json
import sys
import time

out_path = sys.argv.pop(1)
_perf = time.perf_counter
_t = [0.0]
by_gen: dict[int, list[float]] = {0: [], 1: [], 2: []}
long_pauses: list[tuple[float, int, float, int]] = []


def _cb(phase: str, info: dict) -> None:
    if phase == "start":
        _t[0] = _perf()
        return
    dt = _perf() - _t[0]
    gen = info["generation"]
    by_gen[gen].append(dt)
    if dt > 0.0005:
        long_pauses.append((time.time(), gen, dt, info.get("collected", 0)))


def _dump() -> None:
    summary = {}
    for gen, ds in by_gen.items():
        ds = sorted(ds)
        summary[str(gen)] = {
            "count": len(ds),
            "total_ms": sum(ds) * 1000,
            "p50_ms": ds[len(ds) // 2] * 1000 if ds else None,
            "max_ms": ds[-1] * 1000 if ds else None,
        }
    with open(out_path, "w") as f:
        json.dump({"by_generation": summary, "thresholds": gc.get_threshold(),
                   "tracked_objects_at_exit": len(gc.get_objects()),
                   "long_pauses": long_pauses}, f, indent=1)


gc.callbacks.append(_cb)
atexit.register(_dump)
# twistd re-raises SIGTERM on itself after the reactor stops, so atexit may
# never run: dump when the reactor shuts down too.
from twisted.internet import reactor  # noqa: E402  (the default reactor, as twistd would pick)

reactor.addSystemEventTrigger("after", "shutdown", _dump)

from twisted.scripts.twistd import run  # noqa: E402

sys.argv = ["twistd"] + sys.argv[1:]
run()
