"""
Tests of the soak analysis (reliability/soak_plot.py) on synthetic samples:
growth after warm-up, envelope drift, histogram percentiles, call accounting
and log classification.  No processes, no timing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "reliability"))

import soak_plot  # noqa: E402


class GrowthTests(SynchronousTestCase):
    def test_flat_after_warmup(self) -> None:
        """Warm-up growth is ignored; a flat series after it has no growth."""
        ts = [i / 2 for i in range(121)]  # 0..60 min every 30 s
        rss = [50 + min(t, 10) for t in ts]  # grows 10 MiB in warm-up, then flat
        g = soak_plot.growth(ts, rss, warmup_min=10)
        self.assertEqual(g["growth"], 0)
        self.assertAlmostEqual(g["slope_per_h"], 0)
        self.assertEqual(g["max"], 60)

    def test_leak_is_seen(self) -> None:
        """A steady 6 MiB/h leak shows as growth and slope."""
        ts = [i / 2 for i in range(121)]
        rss = [80 + t * 0.1 for t in ts]
        g = soak_plot.growth(ts, rss, warmup_min=10, window_min=5)
        self.assertAlmostEqual(g["slope_per_h"], 6.0)
        # medians of [10, 15) and (55, 60]: 12.25 and 57.75 min
        self.assertAlmostEqual(g["growth"], 0.1 * (57.75 - 12.25), places=6)


class EgressTests(SynchronousTestCase):
    def test_offsets_lower_envelope(self) -> None:
        """
        The sampler's wall time minus (ticks + late ticks) * 20 ms, relative to
        its smallest value; late ticks count as intervals.
        """
        samples = [
            {"t": 0.0, "metrics_wall": 1000.010,
             "metrics": {"xlbridge_egress_ticks_total": 0, "xlbridge_egress_late_ticks_total": 0}},
            {"t": 60.0, "metrics_wall": 1060.015,
             "metrics": {"xlbridge_egress_ticks_total": 2990, "xlbridge_egress_late_ticks_total": 10}},
        ]
        offs = soak_plot.egress_offsets(samples)
        self.assertEqual([round(o, 6) for _, o, _ in offs], [0.0, 5.0])

    def test_drift_of_envelope(self) -> None:
        """Drift compares minima of the first and last windows, ignoring phase noise above them."""
        pts = [(m, (m % 3) * 7.0 + (2.0 if m > 40 else 0.0)) for m in range(1, 61)]
        d = soak_plot.envelope_drift(pts, window_min=10)
        self.assertEqual(d["drift"], 2.0)
        self.assertEqual(d["first_min"], 0.0)


class LatencyTests(SynchronousTestCase):
    def test_hist_percentiles(self) -> None:
        """Percentiles of merged histograms are the upper edges of their bins."""
        h1 = {"bin_ms": 0.1, "bins": {"100": 98, "200": 1}}
        h2 = {"bin_ms": 0.1, "bins": {"300": 1}}
        bins = soak_plot.hist_merge([h1, h2])
        self.assertEqual(sum(bins.values()), 100)
        self.assertAlmostEqual(soak_plot.hist_percentile(bins, 50), 10.1)
        self.assertAlmostEqual(soak_plot.hist_percentile(bins, 99), 20.1)
        self.assertAlmostEqual(soak_plot.hist_percentile(bins, 100), 30.1)
        self.assertTrue(soak_plot.hist_percentile({}, 50) != soak_plot.hist_percentile({}, 50))  # nan

    def test_events_by_minute(self) -> None:
        """PlaybackStarted total_ms values are grouped by minute since the start."""
        ev = [{"event": "PlaybackStarted", "time": 1000 + 30, "total_ms": 600.0},
              {"event": "PlaybackStarted", "time": 1000 + 61, "total_ms": 700.0},
              {"event": "PlaybackEnded", "time": 1000 + 62}]
        self.assertEqual(soak_plot.per_minute_latency_events(ev, 1000.0), {0: [600.0], 1: [700.0]})

    def test_percentile(self) -> None:
        self.assertEqual(soak_plot.percentile([5, 1, 3, 2, 4], 50), 3)
        self.assertEqual(soak_plot.percentile([1, 2, 3, 4], 100), 4)


class AccountingTests(SynchronousTestCase):
    def test_started_not_ended(self) -> None:
        """A call with CallStarted and no CallEnded is reported by id."""
        ev = [{"event": "CallStarted", "call_id": "a"}, {"event": "CallStarted", "call_id": "b"},
              {"event": "CallEnded", "call_id": "a", "reason": "inactivity"}]
        acc = soak_plot.call_accounting(ev, generated=2)
        self.assertEqual(acc["started_not_ended"], ["b"])
        self.assertEqual(acc["reasons"], {"inactivity": 1})
        self.assertEqual(acc["ended_not_started"], 0)

    def test_log_levels(self) -> None:
        """error/critical levels and tracebacks are errors; warn is counted apart; info is neither."""
        lines = ["2026-12-07T16:00:00+0000 [xlbridge.bridge#info] call started",
                 "2026-12-07T16:00:01+0000 [xlbridge.bridge#error] egress failed",
                 "2026-12-07T16:00:02+0000 [xlbridge.bridge#warn] slow",
                 "\tTraceback (most recent call last):"]
        p = soak_plot.log_problems(lines)
        self.assertEqual((p["errors"], p["warnings"]), (2, 1))


class WindowTests(SynchronousTestCase):
    def test_rows_per_window(self) -> None:
        """Each window reports its last sample's RSS/fds and the counter increments since the previous window."""
        live = []
        for i in range(4):  # samples at 0, 1, 2, 3 min
            live.append({"t": 60.0 * i, "proc": {"VmRSS": 1024 * (100 + i), "fds": 40 + i, "cpu_s": 30.0 * i},
                         "metrics": {"xlbridge_active_calls": 10, "xlbridge_egress_late_ticks_total": 5 * i,
                                     "xlbridge_egress_skipped_ticks_total": i}})
        gen = [{"minute": m, "lat_hist": {"bin_ms": 0.1, "bins": {"100": 10}}} for m in range(4)]
        rows = soak_plot.window_rows(live, gen, [], 0.0, "relay", step_min=2.0)
        self.assertEqual([r["from_min"] for r in rows], [0.0, 2.0])
        self.assertEqual([r["rss_mb"] for r in rows], [101.0, 103.0])
        self.assertEqual([r["late"] for r in rows], [5, 10])
        self.assertEqual([r["cpu_cores"] for r in rows], [0.5, 0.5])
        self.assertEqual(rows[1]["lat_n"], 20)


class LoadTests(SynchronousTestCase):
    def test_load_summary(self) -> None:
        """Run and run-queue wait are turned into cores over the file's span."""
        import json
        import tempfile

        recs = [{"wall": 0.0, "loadavg": ["1.0", "1", "1", "1/2"], "busy": {"cpu": 0.5},
                 "procs": {"b": {"run_s": 0.0, "wait_s": 0.0}}},
                {"wall": 100.0, "loadavg": ["3.0", "1", "1", "1/2"], "busy": {"cpu": 1.0},
                 "procs": {"b": {"run_s": 50.0, "wait_s": 25.0}}}]
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.write("\n".join(json.dumps(r) for r in recs) + "\n")
        s = soak_plot.load_summary(Path(f.name))
        self.assertEqual(s["procs"]["b"], {"run_cores": 0.5, "wait_cores": 0.25})
        self.assertEqual(s["loadavg1_max"], 3.0)
        Path(f.name).unlink()
