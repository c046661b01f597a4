"""
The relay and pipeline-latency benchmarks of two source trees, side by side in one run.

Issue 12 (the structural refactor) asks that the benchmarks give the same figures before and after.
This script runs each tree's OWN benchmark script (``bench/run.py`` for ``relay``,
``bench/pipeline_latency.py`` for ``pipeline``) with ``PYTHONPATH=<tree>`` and the tree as the
working directory, so ``import xlbridge``, ``twistd xlbridge`` and ``python -m tests.fakes`` all
resolve to that tree.  It alternates the trees round by round (A B A B ..., or A B B A ... with
``--order abba``) so that machine noise hits both alike.  Each round is one invocation of the
benchmark with ``--repeats 1``.  The options after ``--`` (or in ``--relay-args`` /
``--pipeline-args``) are passed through unchanged.

What it adds, per round and tree:

- relay: ``run.py ARGS --repeats 1 --no-publish --out OUT/relay/LABEL-rK``;
- pipeline: ``pipeline_latency.py ARGS --repeats 1 --no-results --no-wait --tag sbsSTAMP-LABEL-rK
  --output OUT/pipeline/LABEL-rK/summary.json``.  Its per-run raw files and logs, which it always
  writes under the tree's own ``bench/out``, are moved into ``OUT/pipeline/LABEL-rK/raw/``.

``--no-wait`` is needed because pipeline_latency's own quiet-machine gate would see this script
(``bench/side_by_side.py``) as a competing benchmark and give up after 40 minutes.  This script
applies the same gate itself instead:

- before every round it waits until no other ``bench/*.py`` process runs and no core is busier
  than ``--max-busy`` (sampled over 3 s);
- during the round it watches for other ``bench/*.py`` processes;
- after the round it reads the "other" CPU figures: for relay, core 1's busy fraction minus the
  target's CPU, per point; for pipeline, ``cpu.other_on_bridge_core`` per run.

A noisy round is run again, up to ``--retries`` times, and the quietest attempt is kept, as
pipeline_latency does.  A round that fails is also run again, within the same ``--retries``.  On a
shared machine a failure can be transient, for example another session holding one of the ports.
``--no-wait`` turns off the gate and the re-runs of noisy rounds; failed rounds are still re-run.

The working directory matters as much as PYTHONPATH.  ``python -c`` and ``python -m`` put the
current directory *before* PYTHONPATH.  Run from /work/main with ``PYTHONPATH=/work/pre-refactor``,
they import /work/main's xlbridge.  ``twistd`` and ``python SCRIPT`` do not do this.  The
benchmarks start such children (run.py's codec probe, pipeline_latency's fakes) in their own root,
so every round runs with the tree as its working directory.

Before any round each tree is checked:

- ``xlbridge.tap`` (what ``twistd xlbridge`` loads) imports from that tree and nothing of
  ``xlbridge`` from elsewhere;
- every passed-through option is accepted by that tree's script.

The hash of each tree's ``xlbridge/`` is recorded before every round; a change during the run is
reported.

Output:

- one side-by-side table, for relay per N and target and for pipeline per granularity;
- ``--output`` (default ``bench/results/side_by_side.json``) with the machine, the dates, the
  exact command, both commits and the per-round figures.  That file holds one section per
  benchmark: a ``--bench relay`` run replaces only the ``relay`` section and keeps a
  ``pipeline`` section from an earlier invocation, and vice versa.  It is written only when every
  round completed; the working copy in ``OUT/side_by_side.json`` is written in any case.

Aggregation:

- relay: the median over rounds of every figure run.py reports for a run.  For counts (loss,
  late/burst and missed intervals, drops) the worst round is taken, as run.py does over repeats.
- pipeline: per granularity, the utterances (warm-up excluded) and the per-packet / per-chunk
  values are pooled over rounds, like pipeline_latency's "all runs" rows.  Per-round values are
  listed beside them.

Usage (run from the main tree, with the venv's Python)::

    # about 14 min each on the 2-vCPU VM when the gate does not have to wait
    .venv/bin/python bench/side_by_side.py --bench relay --rounds 3 -- --ns 100,200 --seconds 20
    .venv/bin/python bench/side_by_side.py --bench pipeline --rounds 4 -- --utterances 20
    .venv/bin/python bench/side_by_side.py --bench both --relay-args "--ns 100,200 --seconds 20" \\
        --pipeline-args "--utterances 20"

Smoke::

    .venv/bin/python bench/side_by_side.py --bench relay --rounds 1 \\
        --output bench/out/side_by_side/smoke.json -- --ns 10 --seconds 5
"""

from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_TREES = "pre=/work/pre-refactor,post=/work/main"
SCRIPTS = {"relay": "bench/run.py", "pipeline": "bench/pipeline_latency.py"}
#: Options this script sets on every round itself (not accepted after ``--``).
MANAGED = {
    "relay": {"--repeats", "--out", "--no-publish"},
    "pipeline": {"--repeats", "--output", "--no-results", "--tag", "--no-wait", "--rerender", "--run-one"},
}
#: Files whose content is recorded per tree (besides xlbridge/): the benchmark itself.
BENCH_FILES = {
    "relay": ["bench/run.py", "bench/analyse.py", "bench/loadgen.py", "bench/baseline.py",
              "twisted/plugins/xlbridge_plugin.py"],
    "pipeline": ["bench/pipeline_latency.py", "bench/pipeline_probe.py", "tests/fakes/*.py"],
}
BENCH_RE = re.compile(r"bench/[A-Za-z0-9_]+\.py")
TARGETS = ("baseline", "slin16", "g722")


# -- small helpers ------------------------------------------------------------------------


def utcnow() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def med(vals: Iterable[Optional[float]]) -> Optional[float]:
    v = [x for x in vals if x is not None and x == x]
    return statistics.median(v) if v else None


def worst(vals: Iterable[Optional[float]]) -> Optional[float]:
    v = [x for x in vals if x is not None]
    return max(v) if v else None


def percentiles(values: Sequence[float]) -> dict[str, Any]:
    """numpy-style linear interpolation, as pipeline_latency's ``stats``."""
    a = sorted(v for v in values if v is not None)
    if not a:
        return {"n": 0}

    def q(p: float) -> float:
        k = (len(a) - 1) * p / 100
        lo = int(k)
        hi = min(lo + 1, len(a) - 1)
        return a[lo] + (a[hi] - a[lo]) * (k - lo)

    return {"n": len(a), "p50": q(50), "p95": q(95), "p99": q(99), "max": a[-1], "min": a[0],
            "mean": sum(a) / len(a)}


def fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) and not spec.endswith("f"):
        return str(v)
    return format(v, spec)


def joined(vals: Sequence[Any], spec: str) -> str:
    return " / ".join(fmt(v, spec) for v in vals)


def per_round(vals: Sequence[Sequence[Any]], spec: str) -> str:
    return " / ".join("(" + ", ".join(fmt(x, spec) for x in vs) + ")" for vs in vals)


def ratio(vals: Sequence[Optional[float]]) -> Optional[float]:
    a, b = vals[0], vals[-1]
    return b / a if a and b is not None else None


def diff(vals: Sequence[Optional[float]]) -> Optional[float]:
    a, b = vals[0], vals[-1]
    return b - a if a is not None and b is not None else None


# -- trees --------------------------------------------------------------------------------


class Tree:
    def __init__(self, label: str, path: str) -> None:
        self.label = label
        self.path = Path(path).resolve()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(self.path) + (os.pathsep + old if old else "")
        env.pop("PYTHONSAFEPATH", None)
        env.pop("PYTHONHOME", None)
        return env

    def git(self, *args: str) -> str:
        r = subprocess.run(["git", "--no-optional-locks", "-C", str(self.path), *args],
                           capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    def identity(self) -> dict[str, Any]:
        dirty = self.git("status", "--porcelain", "--untracked-files=all", "--", "xlbridge", "bench", "tests",
                         "twisted", "pyproject.toml")
        return {"label": self.label, "path": str(self.path), "commit": self.git("rev-parse", "HEAD"),
                "describe": self.git("log", "-1", "--format=%h %s"),
                "uncommitted": [ln for ln in dirty.splitlines() if ln.strip()]}

    def code_hash(self, bench: str) -> dict[str, str]:
        def digest(files: list[Path]) -> str:
            h = hashlib.sha256()
            for f in sorted(files):
                try:
                    data = f.read_bytes()
                except OSError:
                    continue
                h.update(str(f.relative_to(self.path)).encode() + b"\0" + data + b"\0")
            return h.hexdigest()[:16]

        bench_files = [Path(p) for pat in BENCH_FILES[bench] for p in glob.glob(str(self.path / pat))]
        return {"commit": self.git("rev-parse", "HEAD"), "xlbridge": digest(list((self.path / "xlbridge").rglob("*.py"))),
                "bench_scripts": digest(bench_files)}


def parse_trees(spec: str) -> list[Tree]:
    trees = []
    for part in spec.split(","):
        label, sep, path = part.strip().partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"--trees: expected LABEL=PATH[,LABEL=PATH...], got {part!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", label):
            raise SystemExit(f"--trees: label {label!r} must be letters, digits, _ . -")
        trees.append(Tree(label, path))
    if len(trees) < 2:
        raise SystemExit("--trees: need at least two trees")
    if len({t.label for t in trees}) != len(trees):
        raise SystemExit("--trees: labels must differ")
    for t in trees:
        if not (t.path / "xlbridge" / "__init__.py").exists():
            raise SystemExit(f"--trees: {t.path} has no xlbridge/ package")
    return trees


PREFLIGHT = r"""
import json, os, sys
tree = os.path.realpath(sys.argv[1])
out = {"sys_path_head": sys.path[:3]}
try:
    import xlbridge.tap  # what `twistd xlbridge` imports (twisted/plugins/xlbridge_plugin.py)
    import xlbridge
    out["xlbridge"] = xlbridge.__file__
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
mods = [(n, getattr(m, "__file__", None)) for n, m in list(sys.modules.items()) if n.split(".")[0] == "xlbridge"]
out["modules"] = len(mods)
out["outside"] = sorted({f for n, f in mods if f and not os.path.realpath(f).startswith(tree + os.sep)})
try:
    import twisted, numpy
    out["twisted"], out["numpy"] = twisted.__version__, numpy.__version__
except Exception:
    pass
import platform
out["python"] = platform.python_version()
print(json.dumps(out))
"""


def preflight(tree: Tree, python: str) -> dict[str, Any]:
    r = subprocess.run([python, "-c", PREFLIGHT, str(tree.path)], cwd=tree.path, env=tree.env(),
                       capture_output=True, text=True, timeout=120)
    try:
        info: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        info = {"error": f"preflight failed (rc {r.returncode}): {r.stderr.strip()[-500:]}"}
    return info


def script_options(tree: Tree, bench: str, python: str) -> set[str]:
    r = subprocess.run([python, str(tree.path / SCRIPTS[bench]), "--help"], cwd=tree.path, env=tree.env(),
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SystemExit(f"{tree.label}: {SCRIPTS[bench]} --help failed:\n{r.stderr.strip()[-1500:]}")
    return set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", r.stdout))


def passed_options(args: Sequence[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--") and len(a) > 2]


# -- machine noise --------------------------------------------------------------------------


def cpu_busy() -> dict[str, float]:
    """Busy seconds per CPU since boot (/proc/stat), plus a wall clock."""
    hz = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {"wall": time.monotonic()}
    for line in Path("/proc/stat").read_text().splitlines():
        f = line.split()
        if f and f[0].startswith("cpu") and f[0] != "cpu":
            v = [int(x) for x in f[1:]]
            idle = v[3] + (v[4] if len(v) > 4 else 0)
            out[f[0]] = (sum(v[:8]) - idle) / hz
    return out


def machine_busy(sample_s: float = 3.0) -> dict[str, float]:
    a = cpu_busy()
    time.sleep(sample_s)
    b = cpu_busy()
    span = b["wall"] - a["wall"]
    return {c: round((b[c] - a[c]) / span, 3) for c in b if c != "wall"}


def our_pids() -> set[int]:
    """This process and all its descendants."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    ours = {os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, pp in parent.items():
            if pp in ours and pid not in ours:
                ours.add(pid)
                grew = True
    return ours


def foreign_benches() -> list[str]:
    """Other ``bench/*.py`` processes (not this script or anything it started)."""
    ours = our_pids()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in ours:
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        m = BENCH_RE.search(cmd)
        if m:
            found.append(f"{m.group(0)} (pid {d})")
    return sorted(found)


def wait_quiet(max_busy: float, max_wait: float, poll_s: float = 15.0) -> dict[str, Any]:
    t0 = time.monotonic()
    said, said_at = "", -1e9
    while True:
        others = foreign_benches()
        busy = machine_busy() if not others else {}
        top = max(busy.values()) if busy else None
        if not others and top is not None and top <= max_busy:
            return {"waited_s": round(time.monotonic() - t0, 1), "busy_before": busy}
        if time.monotonic() - t0 > max_wait:
            msg = f"gave up waiting after {max_wait:.0f} s: " + (", ".join(others) or f"core busy {top}")
            print(f"  ! {msg}; running anyway", flush=True)
            return {"waited_s": round(time.monotonic() - t0, 1), "busy_before": busy, "others_before": others,
                    "gave_up": True}
        why = (", ".join(re.sub(r" \(pid \d+\)", "", o) for o in others) if others
               else f"others keep a core up to {100 * (top or 0):.0f} % busy")
        kind = "others" if others else "busy"
        if kind != said or time.monotonic() - said_at > 120:
            print(f"  waiting for a quiet machine ({why}; {time.monotonic() - t0:.0f} s so far) ...", flush=True)
            said, said_at = kind, time.monotonic()
        time.sleep(poll_s)


class Watch(threading.Thread):
    """Notes other ``bench/*.py`` processes while a round runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: set[str] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(3.0):
            try:
                self.seen.update(foreign_benches())
            except Exception:  # pragma: no cover - /proc races
                pass

    def stop(self) -> list[str]:
        self.stopping.set()
        self.join(5)
        return sorted(self.seen)


# -- running one round ------------------------------------------------------------------------


def stop_group(p: "subprocess.Popen[str]") -> None:
    """Stop a round's process group (the benchmark and everything it started)."""
    for sig, wait in ((signal.SIGINT, 20.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if p.poll() is not None:
            return
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(wait)
        except subprocess.TimeoutExpired:
            pass


def run_child(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path, prefix: str) -> int:
    with open(log_path, "w") as log:
        log.write(f"# cwd {cwd}\n# PYTHONPATH={env.get('PYTHONPATH')}\n# {shlex.join(cmd)}\n")
        log.flush()
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             bufsize=1, start_new_session=True)
        try:
            assert p.stdout is not None
            for line in p.stdout:
                log.write(line)
                print(prefix + line, end="", flush=True)
            return p.wait()
        except BaseException:
            print(f"\n{prefix}interrupted: stopping pid {p.pid} and its process group", flush=True)
            stop_group(p)
            raise


class Bench:
    """What differs between relay and pipeline: the command, reading a round, the table."""

    name = ""

    def __init__(self, args: list[str], out: Path, stamp: str, max_busy: float) -> None:
        self.args = args
        self.out = out
        self.stamp = stamp
        self.max_busy = max_busy

    def command(self, python: str, tree: Tree, rnd: int, attempt: int) -> tuple[list[str], Path]:
        raise NotImplementedError

    def collect(self, tree: Tree, rdir: Path, rc: int) -> dict[str, Any]:
        raise NotImplementedError

    def noise(self, data: dict[str, Any]) -> Optional[float]:
        raise NotImplementedError

    def summarise(self, labels: list[str], rounds: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], str]:
        raise NotImplementedError


# -- relay ------------------------------------------------------------------------------------

#: run.py summary-row fields taken per round: (key, median or worst).
RELAY_FIELDS: list[tuple[str, Callable[[Iterable[Optional[float]]], Optional[float]]]] = [
    ("p50_ms", med), ("p99_ms", med), ("p999_ms", med), ("max_ms", med), ("tick_start_p99_ms", med),
    ("tick_spread_p50_ms", med), ("us_per_out_packet", med), ("silence_fraction", med), ("markers", med),
    ("cpu_core", med), ("cpu_s_per_call_min", med), ("rss_mb", med), ("user_fraction", med),
    ("gen_cpu_core", med), ("gen_send_late_p99_ms", med), ("core1_steal", med), ("run_delay_ms_per_s", med),
    ("kdamond_cpu_ms_per_s", med), ("codec_core", med), ("cpu_ratio", med), ("p99_ratio", med),
    ("cpu_budget_core", med),
    ("seq_lost", worst), ("missed_intervals", worst), ("late_intervals", worst), ("short_intervals", worst),
    ("dup_reorder", worst), ("rx_drops", worst), ("tcpdump_dropped", worst),
    # from run.py's per-run records
    ("other_on_target_core", worst), ("startup_s", med), ("hwm_mb", med), ("idle_cpu_core", med),
]


class Relay(Bench):
    name = "relay"

    def command(self, python: str, tree: Tree, rnd: int, attempt: int) -> tuple[list[str], Path]:
        rdir = self.out / "relay" / (f"{tree.label}-r{rnd}" + ("" if attempt == 1 else f"-a{attempt}"))
        cmd = [python, str(tree.path / SCRIPTS["relay"]), *self.args, "--repeats", "1", "--no-publish",
               "--out", str(rdir)]
        return cmd, rdir

    def collect(self, tree: Tree, rdir: Path, rc: int) -> dict[str, Any]:
        path = rdir / "results.json"
        if not path.exists():
            raise RuntimeError(f"{tree.label}: run.py exited {rc} without writing {path}")
        res = json.loads(path.read_text())
        notes = []
        if rc != 0:
            # results.json is written after every point; a later failure (the plot) leaves it whole
            notes.append(f"run.py exited {rc} after writing results.json (see its log)")
        extra = {(r["pairs"], r["target"]): r for r in res["runs"]}
        points = []
        for row in res["summary"]:
            run = extra.get((row["pairs"], row["target"]), {})
            busy, cpu = run.get("core1_busy_ticks"), run.get("cpu_core")
            p: dict[str, Any] = {k: row.get(k) for k, _ in RELAY_FIELDS}
            p.update({"pairs": row["pairs"], "target": row["target"],
                      "other_on_target_core": (busy - cpu) if busy is not None and cpu is not None else None,
                      "startup_s": run.get("startup_s"), "hwm_mb": run.get("hwm_mb"),
                      "idle_cpu_core": run.get("idle_cpu_core"), "target_rc": run.get("target_rc"),
                      "window_s": run.get("window_s"), "analysis_intervals": run.get("analysis", {}).get("intervals")})
            points.append(p)
        return {"points": points, "codec_cost": res.get("codec_cost"), "run_py_wall_s": res["machine"].get("wall_s"),
                "run_py_command": res["machine"].get("command"), "results_json": str(path), "notes": notes,
                "config": {k: res["config"].get(k) for k in ("ns", "seconds", "targets", "ports", "slots", "warmup",
                                                              "cpu_skip", "keep_awake", "chrt")}}

    def noise(self, data: dict[str, Any]) -> Optional[float]:
        return worst(p.get("other_on_target_core") for p in data["points"])

    def summarise(self, labels: list[str], rounds: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], str]:
        keys: list[tuple[int, str]] = []
        for lab in labels:
            for rd in rounds[lab]:
                for p in rd["points"]:
                    if (p["pairs"], p["target"]) not in keys:
                        keys.append((p["pairs"], p["target"]))
        keys.sort(key=lambda k: (k[0], TARGETS.index(k[1]) if k[1] in TARGETS else 9))
        rows = []
        for n, target in keys:
            row: dict[str, Any] = {"pairs": n, "target": target}
            for lab in labels:
                pts = [p for rd in rounds[lab] for p in rd["points"] if p["pairs"] == n and p["target"] == target]
                agg: dict[str, Any] = {"rounds": len(pts)}
                for k, how in RELAY_FIELDS:
                    agg[k] = how(p.get(k) for p in pts)
                agg["p99_ms_rounds"] = [p.get("p99_ms") for p in pts]
                agg["cpu_core_rounds"] = [p.get("cpu_core") for p in pts]
                row[lab] = agg
            rows.append(row)
        codec = {lab: {c: med((rd.get("codec_cost") or {}).get(c, {}).get("us_per_frame") for rd in rounds[lab])
                       for c in ("g722", "slin16")} for lab in labels}
        summary = {"rows": rows, "codec_us_per_frame": codec,
                   "aggregation": "median over rounds; seq_lost, missed/late/short intervals, dup_reorder, rx_drops, "
                                  "tcpdump_dropped and other_on_target_core: worst round"}
        return summary, self.table(labels, rows, codec)

    @staticmethod
    def table(labels: list[str], rows: list[dict[str, Any]], codec: dict[str, Any]) -> str:
        lab = " / ".join(labels)
        last = f"{labels[-1]} ÷ {labels[0]}"
        tname = {"baseline": "bare relay", "slin16": "xlbridge slin16", "g722": "xlbridge G.722"}

        def get(r: dict[str, Any], k: str) -> list[Any]:
            return [r[x].get(k) for x in labels]

        out = [f"Relay, egress timing (ms; {lab}; median over rounds, counts: worst round)\n",
               "| N | target | p50 | p99 | p99 per round | p99.9 | max | tick-start p99 | tick spread p50 | "
               f"p99 {last} | late intervals | burst intervals | missed intervals | seq lost | rx drops |",
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(
                f"| {r['pairs']} | {tname.get(r['target'], r['target'])} | {joined(get(r, 'p50_ms'), '.3f')} | "
                f"**{joined(get(r, 'p99_ms'), '.2f')}** | {per_round(get(r, 'p99_ms_rounds'), '.1f')} | "
                f"{joined(get(r, 'p999_ms'), '.2f')} | {joined(get(r, 'max_ms'), '.1f')} | "
                f"{joined(get(r, 'tick_start_p99_ms'), '.2f')} | {joined(get(r, 'tick_spread_p50_ms'), '.1f')} | "
                f"{fmt(ratio(get(r, 'p99_ms')), '.2f')} | {joined(get(r, 'late_intervals'), '.0f')} | "
                f"{joined(get(r, 'short_intervals'), '.0f')} | {joined(get(r, 'missed_intervals'), '.0f')} | "
                f"{joined(get(r, 'seq_lost'), '.0f')} | {joined(get(r, 'rx_drops'), '.0f')} |")
        out += ["", f"Relay, CPU and memory (CPU as a fraction of one core; {lab}; median over rounds)\n",
                "| N | target | CPU core | CPU per round | "
                f"CPU {last} | CPU s per call-min | RSS MB | µs/out pkt | CPU × baseline | p99 × baseline | "
                "run-delay ms/s | others on core 1 (worst) |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(
                f"| {r['pairs']} | {tname.get(r['target'], r['target'])} | **{joined(get(r, 'cpu_core'), '.3f')}** | "
                f"{per_round(get(r, 'cpu_core_rounds'), '.3f')} | {fmt(ratio(get(r, 'cpu_core')), '.2f')} | "
                f"{joined(get(r, 'cpu_s_per_call_min'), '.3f')} | {joined(get(r, 'rss_mb'), '.0f')} | "
                f"{joined(get(r, 'us_per_out_packet'), '.1f')} | {joined(get(r, 'cpu_ratio'), '.2f')} | "
                f"{joined(get(r, 'p99_ratio'), '.2f')} | {joined(get(r, 'run_delay_ms_per_s'), '.1f')} | "
                f"{joined(get(r, 'other_on_target_core'), '.2f')} |")
        out.append("\nEncoder cost alone (µs per 20 ms frame, median over rounds): " + "; ".join(
            f"{c} " + " / ".join(fmt(codec[x][c], ".2f") for x in labels) for c in ("g722", "slin16")) + f" ({lab}).")
        return "\n".join(out)


# -- pipeline -----------------------------------------------------------------------------------

E2E_KEYS = ("total_ms", "true_total_ms", "own_ms", "phone_ms", "asr_ms", "mt_ms", "tts_first_byte_ms",
            "queue_wait_ms", "residual_ms", "total_minus_true_ms")


class Pipeline(Bench):
    name = "pipeline"

    def tag(self, rdir: Path) -> str:
        """pipeline_latency's --tag for a round: its file names in the tree's bench/out carry it."""
        return f"sbs{self.stamp}-{rdir.name}"

    def command(self, python: str, tree: Tree, rnd: int, attempt: int) -> tuple[list[str], Path]:
        rdir = self.out / "pipeline" / (f"{tree.label}-r{rnd}" + ("" if attempt == 1 else f"-a{attempt}"))
        cmd = [python, str(tree.path / SCRIPTS["pipeline"]), *self.args, "--repeats", "1", "--no-results",
               "--no-wait", "--tag", self.tag(rdir), "--output", str(rdir / "summary.json")]
        return cmd, rdir

    def collect(self, tree: Tree, rdir: Path, rc: int) -> dict[str, Any]:
        # the raw per-run files and logs go to the tree's own bench/out: bring them here
        tag = self.tag(rdir)
        raw_dir = rdir / "raw"
        raw_dir.mkdir(exist_ok=True)
        for f in glob.glob(str(tree.path / "bench" / "out" / f"pipeline_latency-{tag}-*")):
            shutil.move(f, raw_dir / os.path.basename(f))
        path = rdir / "summary.json"
        if rc != 0 or not path.exists():
            raise RuntimeError(f"{tree.label}: pipeline_latency.py exited {rc}" +
                               ("" if path.exists() else f" without writing {path}"))
        res = json.loads(path.read_text())
        runs = []
        for r in res["runs"]:
            raw_file = raw_dir / f"{r['run']}.json"
            raw: dict[str, Any] = {}
            if raw_file.exists():
                raw = json.loads(raw_file.read_text()).get("raw", {})
            utts = [{k: u.get(k) for k in ("uid", "phrase", "warmup", "text_ok", *E2E_KEYS, "stage_sum_ms")}
                    for u in r.get("utterances", [])]
            runs.append({
                "run": r["run"], "granularity": r["granularity"], "attempt_inside": r.get("attempt"),
                "e2e": r.get("e2e"), "ingress": r.get("ingress"), "tts": r.get("tts"),
                "tick_lateness_ms": r.get("tick_lateness_ms"), "egress": r.get("egress"),
                "e2e_expected": r.get("e2e_expected"), "e2e_measured": r.get("e2e_measured"),
                "e2e_text_ok": r.get("e2e_text_ok"), "finals": r.get("finals"),
                "finals_speech_final": r.get("finals_speech_final"), "dropped": r.get("dropped"),
                "heard_ok": r.get("heard_ok"), "phone_8888": r.get("phone_8888"),
                "deepgram_tcp_nodelay_at_open": r.get("deepgram_tcp_nodelay_at_open"),
                "child_cpu_s": r.get("child_cpu_s"), "wall_s": r.get("wall_s"), "cpu": r.get("cpu"),
                "outliers": {k: r.get("outliers", {}).get(k) for k in ("ingress_over_1ms", "ticks_late_over_3ms",
                                                                         "share_of_time")},
                "utterances": utts,
                "raw_file": str(raw_file) if raw_file.exists() else None,
                # per-packet arrays, for pooling over rounds; dropped before writing the JSON
                "_raw": {k: raw.get(k) for k in ("ingress_to_ws_write_ms", "ingress_to_kernel_ms",
                                                 "ingress_to_sendmessage_ms", "tts_idle_ms", "tts_first_ms",
                                                 "tick_lateness_ms")},
            })
        return {"runs": runs, "code": res.get("code"), "settings": res.get("settings"),
                "pipeline_command": res.get("command"), "summary_json": str(path), "notes": []}

    def noise(self, data: dict[str, Any]) -> Optional[float]:
        return worst((r.get("cpu") or {}).get("other_on_bridge_core") for r in data["runs"])

    def summarise(self, labels: list[str], rounds: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], str]:
        grans: list[str] = []
        for lab in labels:
            for rd in rounds[lab]:
                for r in rd["runs"]:
                    if r["granularity"] not in grans:
                        grans.append(r["granularity"])
        out: dict[str, Any] = {"granularities": {}, "aggregation":
                               "utterances (warm-up excluded) and per-packet/per-chunk values pooled over rounds; "
                               "per-round values listed as they are"}
        for g in grans:
            gsum: dict[str, Any] = {}
            for lab in labels:
                runs = [r for rd in rounds[lab] for r in rd["runs"] if r["granularity"] == g]
                utts = [u for r in runs for u in r["utterances"] if not u.get("warmup")]

                def pooled(key: str) -> dict[str, Any]:
                    vals = [x for r in runs for x in (r["_raw"].get(key) or [])]
                    return percentiles(vals)

                def rounds_of(section: str, key: str, stat: str) -> list[Optional[float]]:
                    return [((r.get(section) or {}).get(key) or {}).get(stat) for r in runs]

                gsum[lab] = {
                    "runs": len(runs),
                    "e2e": {k: percentiles([u[k] for u in utts if u.get(k) is not None]) for k in E2E_KEYS},
                    "total_ms_p50_rounds": rounds_of("e2e", "total_ms", "p50"),
                    "total_ms_p95_rounds": rounds_of("e2e", "total_ms", "p95"),
                    "true_total_ms_p50_rounds": rounds_of("e2e", "true_total_ms", "p50"),
                    "ingress_to_ws_write": pooled("ingress_to_ws_write_ms"),
                    "ingress_to_sendmessage": pooled("ingress_to_sendmessage_ms"),
                    "ingress_to_kernel": pooled("ingress_to_kernel_ms"),
                    "ingress_write_p99_rounds": rounds_of("ingress", "to_ws_write", "p99"),
                    "tts_idle": pooled("tts_idle_ms"),
                    "tts_first": pooled("tts_first_ms"),
                    "tts_idle_p99_rounds": rounds_of("tts", "idle", "p99"),
                    "tick_lateness": pooled("tick_lateness_ms"),
                    "bridge_cpu_s_per_run": med(r.get("child_cpu_s") for r in runs),
                    "bridge_cpu_s_rounds": [r.get("child_cpu_s") for r in runs],
                    "played": sum(r.get("e2e_measured") or 0 for r in runs),
                    "expected": sum(r.get("e2e_expected") or 0 for r in runs),
                    "text_ok": sum(r.get("e2e_text_ok") or 0 for r in runs),
                    "heard_ok": all(bool(r.get("heard_ok")) for r in runs) if runs else None,
                    "dropped": sum(len(r.get("dropped") or []) for r in runs),
                    "finals": sum(r.get("finals") or 0 for r in runs),
                    "finals_speech_final": sum(r.get("finals_speech_final") or 0 for r in runs),
                    "late_ticks": sum((r.get("egress") or {}).get("late_ticks") or 0 for r in runs),
                    "other_on_bridge_core_worst": worst((r.get("cpu") or {}).get("other_on_bridge_core")
                                                        for r in runs),
                }
            out["granularities"][g] = gsum
        return out, self.table(labels, out["granularities"])

    @staticmethod
    def table(labels: list[str], grans: dict[str, Any]) -> str:
        lines = []
        for g, s in grans.items():
            lines += [f"Pipeline latency, granularity `{g}` (ms; pooled over rounds; runs: "
                      + " / ".join(f"{lab} {s[lab]['runs']}" for lab in labels) + ")\n",
                      "| figure | " + " | ".join(labels) + f" | {labels[-1]} − {labels[0]} |",
                      "|---|" + "---:|" * (len(labels) + 1)]

            def row(name: str, vals: list[Any], spec: str, delta: bool = True) -> None:
                d = fmt(diff(vals), "+" + spec) if delta else ""
                lines.append(f"| {name} | " + " | ".join(fmt(v, spec) for v in vals) + f" | {d} |")

            def rrow(name: str, vals: list[list[Any]], spec: str) -> None:
                lines.append(f"| {name} | " + " | ".join(", ".join(fmt(x, spec) for x in v) for v in vals) + " | |")

            def e(k: str, st: str) -> list[Any]:
                return [s[lab]["e2e"][k].get(st) for lab in labels]

            n = [s[lab]["e2e"]["total_ms"].get("n") for lab in labels]
            lines.append("| **(3) end of speech → first translated packet**, utterances | "
                         + " | ".join(fmt(x, "d") for x in n) + " | |")
            for st in ("p50", "p95", "p99", "max"):
                row(f"`total_ms` {st}", e("total_ms", st), ".1f")
            rrow("`total_ms` p50 per round", [s[lab]["total_ms_p50_rounds"] for lab in labels], ".1f")
            rrow("`total_ms` p95 per round", [s[lab]["total_ms_p95_rounds"] for lab in labels], ".1f")
            for st in ("p50", "p95", "p99"):
                row(f"independent (probe) {st}", e("true_total_ms", st), ".1f")
            for st in ("p50", "p99"):
                row(f"own (independent − engines) {st}", e("own_ms", st), ".1f")
            for k, name in (("asr_ms", "asr"), ("mt_ms", "mt"), ("tts_first_byte_ms", "tts 1st byte"),
                            ("queue_wait_ms", "queue wait")):
                row(f"{name} p50", e(k, "p50"), ".1f")
            row("phone 8888 heard, p50", e("phone_ms", "p50"), ".1f")
            row("**(1) ingress → ASR socket write** p50", [s[lab]["ingress_to_ws_write"].get("p50") for lab in labels],
                ".3f")
            row("(1) ingress → ASR socket write p99", [s[lab]["ingress_to_ws_write"].get("p99") for lab in labels],
                ".3f")
            rrow("(1) p99 per round", [s[lab]["ingress_write_p99_rounds"] for lab in labels], ".3f")
            row("(1) → entering sendMessage p99", [s[lab]["ingress_to_sendmessage"].get("p99") for lab in labels],
                ".3f")
            row("(1) → kernel send() p99", [s[lab]["ingress_to_kernel"].get("p99") for lab in labels], ".3f")
            row("**(2) TTS chunk → first packet, idle line** p50", [s[lab]["tts_idle"].get("p50") for lab in labels],
                ".1f")
            row("(2) idle line p99", [s[lab]["tts_idle"].get("p99") for lab in labels], ".1f")
            rrow("(2) idle line p99 per round", [s[lab]["tts_idle_p99_rounds"] for lab in labels], ".1f")
            row("(2) first chunk of each utterance p50", [s[lab]["tts_first"].get("p50") for lab in labels], ".1f")
            row("egress tick lateness p99", [s[lab]["tick_lateness"].get("p99") for lab in labels], ".2f")
            row("bridge process CPU s per run (median)", [s[lab]["bridge_cpu_s_per_run"] for lab in labels], ".2f")
            lines.append("| checks: played / expected, text ok, dropped, 8888 heard all | " + " | ".join(
                f"{s[lab]['played']}/{s[lab]['expected']}, {s[lab]['text_ok']}, {s[lab]['dropped']}, "
                f"{fmt(s[lab]['heard_ok'])}" for lab in labels) + " | |")
            lines.append("| finals (speech_final), late egress ticks | " + " | ".join(
                f"{s[lab]['finals']} ({s[lab]['finals_speech_final']}), {s[lab]['late_ticks']}"
                for lab in labels) + " | |")
            row("others on the bridge's core (worst run)", [s[lab]["other_on_bridge_core_worst"] for lab in labels],
                ".2f", delta=False)
            lines.append("")
        return "\n".join(lines)


# -- orchestration ------------------------------------------------------------------------------


def machine(python: str) -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    r = subprocess.run([python, "-c", "import json, platform, twisted, numpy; print(json.dumps({'python': "
                        "platform.python_version(), 'twisted': twisted.__version__, 'numpy': numpy.__version__}))"],
                       capture_output=True, text=True, cwd="/")
    try:
        versions = json.loads(r.stdout)
    except ValueError:
        versions = {}
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(), "python_exe": python,
            **versions, "loadavg_at_start": os.getloadavg(), "hostname": platform.node()}


def run_bench(bench: Bench, trees: list[Tree], ns: argparse.Namespace, section: dict[str, Any]) -> bool:
    """Run every round of one benchmark; fill ``section``.  False if a round failed."""
    labels = [t.label for t in trees]
    rounds: dict[str, list[dict[str, Any]]] = {lab: [] for lab in labels}
    schedule: list[dict[str, Any]] = section.setdefault("schedule", [])
    hashes: dict[str, list[dict[str, str]]] = {lab: [] for lab in labels}
    section["per_round"] = rounds
    section["code_hash_per_round"] = hashes
    t_bench = time.monotonic()
    ok = True
    total = ns.rounds * len(trees)
    slot = 0
    try:
        for rnd in range(1, ns.rounds + 1):
            order = list(trees)
            if ns.order == "abba" and rnd % 2 == 0:
                order.reverse()
            for tree in order:
                slot += 1
                hashes[tree.label].append(tree.code_hash(bench.name))
                attempts: list[dict[str, Any]] = []
                for attempt in range(1, ns.retries + 2):
                    gate = {"skipped": True} if ns.no_wait else wait_quiet(ns.max_busy, ns.max_wait)
                    cmd, rdir = bench.command(ns.python, tree, rnd, attempt)
                    rdir.mkdir(parents=True, exist_ok=True)
                    elapsed = time.monotonic() - t_bench
                    eta = "" if slot == 1 else f", about {elapsed / (slot - 1) * (total - slot + 1) / 60:.0f} min left"
                    print(f"\n== {bench.name} round {rnd}/{ns.rounds}, {tree.label} ({tree.path})"
                          f"{'' if attempt == 1 else f', attempt {attempt}'}{eta}\n   {shlex.join(cmd)}", flush=True)
                    watch = Watch()
                    watch.start()
                    t0, started = time.monotonic(), utcnow()
                    try:
                        rc = run_child(cmd, tree.path, tree.env(), rdir.parent / (rdir.name + ".log"),
                                       f"[{tree.label} r{rnd}] ")
                    finally:
                        seen = watch.stop()
                    entry: dict[str, Any] = {
                        "bench": bench.name, "round": rnd, "tree": tree.label, "attempt": attempt, "start": started,
                        "wall_s": round(time.monotonic() - t0, 1), "rc": rc, "command": cmd, "cwd": str(tree.path),
                        "pythonpath": tree.env()["PYTHONPATH"], "out": str(rdir), "log": str(rdir.parent / (rdir.name + ".log")),
                        "gate": gate, "other_benchmarks_seen": seen}
                    schedule.append(entry)
                    try:
                        data = bench.collect(tree, rdir, rc)
                    except Exception as e:
                        # a shared machine: e.g. another session's socket on one of the ports
                        entry["error"] = str(e)
                        if attempt > ns.retries:
                            raise
                        print(f"  ! round failed ({e}): running it again (see {entry['log']})", flush=True)
                        continue
                    other = bench.noise(data)
                    entry["other_cpu_worst"] = other
                    noisy = bool(seen) or (other is not None and other > ns.max_busy)
                    entry["noisy"] = noisy
                    data.update({"round": rnd, "attempt": attempt, "other_benchmarks_seen": seen,
                                 "other_cpu_worst": other, "wall_s": entry["wall_s"]})
                    attempts.append(data)
                    if not noisy or ns.no_wait:
                        break
                    print(f"  ! noisy round (other benchmarks {seen or 'none'}, others used up to "
                          f"{fmt(other, '.2f')} of the benchmark's core)"
                          + (": running it again" if attempt <= ns.retries else ": keeping the quietest attempt"),
                          flush=True)
                if not attempts:
                    raise RuntimeError(f"{tree.label} round {rnd}: no attempt completed")
                best = min(attempts, key=lambda d: (bool(d["other_benchmarks_seen"]), d["other_cpu_worst"] or 0.0))
                for ent in schedule:
                    if ent["round"] == rnd and ent["tree"] == tree.label and ent["bench"] == bench.name:
                        ent["kept"] = ent["attempt"] == best["attempt"]
                rounds[tree.label].append(best)
    except Exception as e:
        ok = False
        section.setdefault("errors", []).append(f"{type(e).__name__}: {e}")
        print(f"\n!! {bench.name}: {type(e).__name__}: {e}", flush=True)
    section["wall_s"] = round(time.monotonic() - t_bench, 1)
    section["date_end"] = utcnow()
    section["complete"] = ok and all(len(rounds[lab]) == ns.rounds for lab in labels)
    for lab in labels:
        changed = {h["xlbridge"] for h in hashes[lab]}
        if len(changed) > 1:
            section.setdefault("warnings", []).append(
                f"{lab}: xlbridge/ changed during the run ({len(changed)} different contents over the rounds): "
                f"the rounds did not all measure the same code")
    if all(rounds[lab] for lab in labels):
        summary, text = bench.summarise(labels, rounds)
        head = "; ".join(f"{t['label']} = {t['path']} @ {t['commit'][:7]}"
                         + (f" + {len(t['uncommitted'])} uncommitted paths" if t["uncommitted"] else "")
                         for t in section["trees"])
        n_rounds = {lab: len(rounds[lab]) for lab in labels}
        text = (f"### {bench.name}: {head}\n\nRounds: {n_rounds} (order {ns.order}); "
                f"{SCRIPTS[bench.name]} {shlex.join(bench.args) or '(defaults)'}; {section['date']} – "
                f"{section['date_end']}\n\n{text}")
        section["summary"] = summary
        section["table"] = text
    for lab in labels:  # the per-packet arrays were only for pooling
        for rd in rounds[lab]:
            for r in rd.get("runs", []):
                r.pop("_raw", None)
    return ok


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join([sys.executable,
                          os.path.relpath(__file__), *argv])
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True, choices=("relay", "pipeline", "both"))
    ap.add_argument("--trees", default=DEFAULT_TREES, help=f"LABEL=PATH,LABEL=PATH (default {DEFAULT_TREES})")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per tree (default 3)")
    ap.add_argument("--order", choices=("abab", "abba"), default="abab",
                    help="abab: every round in --trees order; abba: every second round reversed")
    ap.add_argument("--relay-args", default="", help="options for bench/run.py (a quoted string)")
    ap.add_argument("--pipeline-args", default="", help="options for bench/pipeline_latency.py (a quoted string)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the benchmarks (default: this one)")
    ap.add_argument("--out", help="where rounds write (default bench/out/side_by_side/STAMP)")
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "side_by_side.json"),
                    help="combined result (default bench/results/side_by_side.json)")
    ap.add_argument("--max-busy", type=float, default=0.25,
                    help="quiet machine: no core busier than this with others' work (0..1; default 0.25)")
    ap.add_argument("--max-wait", type=float, default=1800.0, help="wait at most this long for quiet, s")
    ap.add_argument("--retries", type=int, default=2, help="re-runs of a noisy round (default 2; quietest kept)")
    ap.add_argument("--no-wait", action="store_true", help="no quiet-machine gate and no re-runs")
    ap.add_argument("--dry-run", action="store_true", help="check the trees and print the commands only")
    ns = ap.parse_args(argv)
    if ns.rounds < 1:
        ap.error("--rounds must be at least 1")
    benches = ["relay", "pipeline"] if ns.bench == "both" else [ns.bench]
    bench_args = {"relay": shlex.split(ns.relay_args), "pipeline": shlex.split(ns.pipeline_args)}
    if passthrough:
        if ns.bench == "both":
            ap.error("with --bench both give the options as --relay-args/--pipeline-args, not after --")
        bench_args[ns.bench] = bench_args[ns.bench] + passthrough
    trees = parse_trees(ns.trees)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(ns.out).resolve() if ns.out else ROOT / "bench" / "out" / "side_by_side" / stamp
    if os.geteuid() != 0 and "relay" in benches:
        print("warning: the relay benchmark's tcpdump on lo needs root", file=sys.stderr)

    # -- checks before any round --------------------------------------------------------------
    tree_info = []
    print(f"trees ({', '.join(benches)}; {ns.rounds} round(s) each, order {ns.order}):")
    for t in trees:
        ident = t.identity()
        pf = preflight(t, ns.python)
        ident["preflight"] = pf
        tree_info.append(ident)
        print(f"  {t.label}: {t.path} @ {ident['commit'][:12]} {ident['describe']!r}"
              + (f", {len(ident['uncommitted'])} uncommitted paths" if ident["uncommitted"] else ""))
        print(f"    PYTHONPATH={t.env()['PYTHONPATH']}: xlbridge from {pf.get('xlbridge')}, "
              f"{pf.get('modules', 0)} xlbridge modules loaded by xlbridge.tap")
        if pf.get("error") or pf.get("outside"):
            raise SystemExit(f"{t.label}: the tree's code does not import cleanly from {t.path}: "
                             f"{pf.get('error') or pf.get('outside')}\n(a tree in the middle of an edit? try again "
                             f"later, or compare other trees with --trees)")
    options: dict[str, dict[str, list[str]]] = {}
    for b in benches:
        opts = {t.label: script_options(t, b, ns.python) for t in trees}
        allo = set.union(*opts.values())
        options[b] = {t.label: sorted(allo - opts[t.label]) for t in trees}
        for t in trees:
            if options[b][t.label]:
                print(f"  note: {t.label}'s {SCRIPTS[b]} lacks {', '.join(options[b][t.label])} "
                      f"(which another tree's has)")
        for o in passed_options(bench_args[b]):
            if o in MANAGED[b]:
                raise SystemExit(f"{o}: side_by_side sets it for every round ({b}); leave it out")
            missing = [t.label for t in trees if o not in opts[t.label]]
            if missing:
                raise SystemExit(f"{o} is not an option of {SCRIPTS[b]} in {', '.join(missing)} "
                                 f"(spell options out in full; abbreviations are not checked)")
    bench_objs: dict[str, Bench] = {
        "relay": Relay(bench_args["relay"], out, stamp, ns.max_busy),
        "pipeline": Pipeline(bench_args["pipeline"], out, stamp, ns.max_busy),
    }
    if ns.dry_run:
        for b in benches:
            for rnd in range(1, ns.rounds + 1):
                order = trees if not (ns.order == "abba" and rnd % 2 == 0) else list(reversed(trees))
                for t in order:
                    cmd, _ = bench_objs[b].command(ns.python, t, rnd, 1)
                    print(f"(cd {t.path} && PYTHONPATH={t.env()['PYTHONPATH']} {shlex.join(cmd)})")
        return 0

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"description": "side-by-side benchmark of source trees (bench/side_by_side.py); "
                                             "one section per benchmark"}
    all_ok = True
    t_all = time.monotonic()
    for b in benches:
        section: dict[str, Any] = {
            "bench": b, "command": command, "cwd": os.getcwd(), "date": utcnow(), "machine": machine(ns.python),
            "trees": tree_info, "rounds": ns.rounds, "order": ns.order, "bench_args": bench_args[b],
            "options_missing_per_tree": options[b],
            "gate": None if ns.no_wait else {"max_busy": ns.max_busy, "max_wait_s": ns.max_wait,
                                             "retries": ns.retries},
            "out": str(out),
        }
        result[b] = section
        interrupted: Optional[BaseException] = None
        try:
            ok = run_bench(bench_objs[b], trees, ns, section)
        except (KeyboardInterrupt, SystemExit) as e:
            interrupted, ok = e, False
            section["errors"] = section.get("errors", []) + [f"interrupted ({type(e).__name__})"]
            section["complete"] = False
        all_ok = all_ok and ok
        for r_list in section.get("per_round", {}).values():
            for rd in r_list:
                for r in rd.get("runs", []):
                    r.pop("_raw", None)
        (out / "side_by_side.json").write_text(json.dumps(result, indent=1, default=str))
        if interrupted is not None:
            print(f"\ninterrupted; partial results in {out / 'side_by_side.json'}", flush=True)
            raise interrupted
        if not ok:
            break
    print()
    for b in benches:
        s = result.get(b)
        if s and s.get("table"):
            print(s["table"])
            for w in s.get("warnings", []):
                print(f"warning: {w}")
            print()
    wall = time.monotonic() - t_all
    if all_ok:
        dest = Path(ns.output)
        dest.parent.mkdir(parents=True, exist_ok=True)
        final = dict(result)
        if dest.exists():
            try:
                old = json.loads(dest.read_text())
            except ValueError:
                old = {}
            for b in ("relay", "pipeline"):
                if b not in final and isinstance(old.get(b), dict):
                    final[b] = old[b]
                    print(f"kept the {b} section of {dest} from {old[b].get('date')}")
        final["updated"] = utcnow()
        dest.write_text(json.dumps(final, indent=1, default=str))
        print(f"wrote {dest} (and {out / 'side_by_side.json'}); wall {wall / 60:.1f} min")
        return 0
    print(f"incomplete: {out / 'side_by_side.json'} has what was measured; {ns.output} not written; "
          f"wall {wall / 60:.1f} min")
    return 1


if __name__ == "__main__":
    sys.exit(main())
