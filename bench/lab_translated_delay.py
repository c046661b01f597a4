"""
Absolute delay of *translated* speech through a real Asterisk (the lab of
``scripts/asterisk-lab.sh``), as the callers live it: from the end of what
one caller said to the first sound of its translation at the other, both
directions, with the local engines.

Each lab caller's recordings (what it said, what it heard) share one time
line, but the two callers' time lines have an unknown offset.  As in
:func:`tests.asterisk.lab.round_trip`, the sum of the two directions'
delays cancels it::

    (heard_b(first sound) - said_a(end)) + (heard_a(first sound) - said_b(end))

so the figure is the two one-way delays added (reported with its half,
the mean one-way delay).  The English caller says Asterisk's
``conf-onlyperson``, then the Spanish caller says the es_MX one (speech
none of the tests were tuned on: Asterisk's own prompts).

Run as root with the lab installed, on a quiet machine::

    sh scripts/asterisk-lab.sh start
    .venv/bin/python bench/lab_translated_delay.py --rounds 5 [--config FILE]
    sh scripts/asterisk-lab.sh stop
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.asterisk import lab  # noqa: E402

#: 20 ms windows louder than this are sound (comfort noise is -60 dBFS).
LOUD_DBFS = -35.0
WINDOW = 320


def _loud(x: np.ndarray) -> np.ndarray:
    """Indices of the 20 ms windows of ``x`` (int16-scale floats) above :data:`LOUD_DBFS`."""
    n = len(x) // WINDOW
    if n == 0:
        return np.array([], dtype=int)
    w = x[: n * WINDOW].reshape(n, WINDOW)
    rms = np.sqrt(np.mean(w * w, axis=1)) + 1e-9
    return np.nonzero(20 * np.log10(rms / 32768.0) > LOUD_DBFS)[0]


def first_sound(x: np.ndarray) -> Optional[float]:
    """Seconds to the first loud window, or ``None``."""
    loud = _loud(x)
    return float(loud[0] * WINDOW / 16000) if len(loud) else None


def end_of_speech(x: np.ndarray) -> Optional[float]:
    """Seconds to the end of the last loud window, or ``None``."""
    loud = _loud(x)
    return float((loud[-1] + 1) * WINDOW / 16000) if len(loud) else None


async def one_round(tmp: Path, n: int, config: Optional[str]) -> dict[str, Any]:
    lab.clean_out()
    args = ["--ari", lab.ARI, "--ari-user", "xlbridge", "--ari-password-file", str(lab.PASSWORD_FILE),
            "--ari-app", "xlbridge", "--engines", "local"] + (["--config", config] if config else [])
    where = tmp / f"r{n}"
    where.mkdir()
    bridge = lab.Bridge(where, args)
    try:
        await bridge.wait_for("ARI events connected")
        await lab.caller("a", "conf-onlyperson", delay=2, hold=14, app="xlbridge", app_args=f"room=d{n},lang=en")
        await lab.caller("b", "es/conf-onlyperson", delay=8, hold=8, app="xlbridge", app_args=f"room=d{n},lang=es")
        await lab.wait_idle(60)
    finally:
        await bridge.stop()
    said_a, said_b = end_of_speech(lab.said("a")), end_of_speech(lab.said("b"))
    heard_b, heard_a = first_sound(lab.recording("b")), first_sound(lab.recording("a"))
    row: dict[str, Any] = {"round": n, "said_end_a": said_a, "said_end_b": said_b,
                           "heard_first_b": heard_b, "heard_first_a": heard_a}
    if None not in (said_a, said_b, heard_a, heard_b):
        row["sum_ms"] = ((heard_b - said_a) + (heard_a - said_b)) * 1000  # type: ignore[operator]
        row["mean_one_way_ms"] = row["sum_ms"] / 2
    events = bridge.events()
    row["translations"] = [(e["language"], e["text"]) for e in events if e["event"] == "TranslationEvent"]
    row["played"] = [(e["extension"], round(e.get("total_ms") or 0)) for e in events
                     if e["event"] == "PlaybackStarted"]
    row["speculations"] = [(e["extension"], e["outcome"]) for e in events if e["event"] == "SpeculationEvent"]
    return row


async def run(ns: argparse.Namespace) -> None:
    why = lab.unavailable()
    if why is not None:
        raise SystemExit(f"lab unavailable: {why}")
    release = lab.hold_lab()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="xl-labdelay-") as tmp:
            for n in range(ns.rounds):
                row = await one_round(Path(tmp), n, ns.config)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        release()
        await lab.new_pool().closeCachedConnections()
    sums = [r["sum_ms"] for r in rows if "sum_ms" in r]
    summary = {"rounds": len(rows), "measured": len(sums), "config": ns.config,
               "sum_ms_median": statistics.median(sums) if sums else None,
               "sum_ms_min": min(sums) if sums else None, "sum_ms_max": max(sums) if sums else None,
               "mean_one_way_ms_median": statistics.median(sums) / 2 if sums else None}
    print(json.dumps(summary), flush=True)
    if ns.out:
        Path(ns.out).write_text(json.dumps({"summary": summary, "rounds": rows}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--config", help="an xlbridge TOML for the bridge (e.g. early_decode_s = 0)")
    ap.add_argument("--out", help="write the rows and the summary here (JSON)")
    ns = ap.parse_args()
    os.environ.setdefault("XLBRIDGE_ASTERISK_LAB", "yes")
    react(lambda reactor: ensureDeferred(run(ns)))


if __name__ == "__main__":
    main()
