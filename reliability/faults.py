"""
The fault runner (issue 15, "Faults"): translated calls with the cloud
engines against the fake servers, a :mod:`reliability.faultproxy` in front
of each engine and of the ARI server, and every fault applied in turn.

What runs (each its own process, so a fault in one is not the CPU of
another):

* ``python -m reliability.fakehost``: fake Deepgram, DeepL, ElevenLabs (at
  the latencies ``bench/pipeline_latency.py`` uses: Deepgram adds nothing
  beyond the client's 300 ms endpointing, DeepL 150 ms, ElevenLabs first
  byte 100 ms then a chunk every 10 ms) and a fake ARI, with a control port
  for the engines' own errors;
* four ``python -m reliability.faultproxy`` (deepgram, deepl, elevenlabs,
  ari), each with a control port;
* one ``twistd -n xlbridge --engines cloud`` with the engine URLs and
  ``--ari`` pointed at the proxies, ``--ports`` for the calls (RTP,
  ``--reply-codec slin16`` so the callers can read what they hear without
  a G.722 decoder) and ``--fallback relay`` (the default: the README's
  fallback while an engine is down is the speaker's own voice);
* ``python -m reliability.callers``: ``--calls`` pairs of RTP callers
  taking turns to say tone-word phrases, recording the words they hear and
  every packet's kernel arrival time.

Then, after a warm-up and a fault-free baseline, each fault of
:data:`FAULTS` is applied for ``--hold`` seconds and removed, with
``--recover`` seconds to recover.  Meanwhile the runner samples the
monitor (``/api/calls``, ``/metrics``, ``/readyz``), xlbridge's memory and
its TCP connections to each proxy (``/proc``).  Afterwards it reads the
``--events`` transcript and the callers' recordings and reports per fault:
what callers heard, time from the fault to the fallback (first
``EngineStatusEvent`` down), words lost (final transcripts against what
was said; and what listeners never heard in any form), the egress interval
error p99 of calls the fault did not touch (before / during), connections
to the proxy before / after, buffer peaks, and whether it recovered.

Run (about 20 minutes)::

    .venv/bin/python -m reliability.faults [--calls 22] [--hold 20] [--recover 15]

Writes ``reliability/results/faults.json`` and ``faults.md``; the raw
recordings and logs go to ``reliability/out/faults-<time>/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
TWISTD = str(ROOT / ".venv" / "bin" / "twistd")
TOKEN = "faults-token"
NICE = 10  # of the helper processes (set from --helper-nice)
ENGINES = ("deepgram", "deepl", "elevenlabs")

sys.path.insert(0, str(ROOT))


# -- processes ---------------------------------------------------------------------


def _read_line(proc: subprocess.Popen[str], pred: Callable[[str], bool], timeout: float = 30.0) -> str:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(0.5):
            line = proc.stdout.readline()
            if not line:
                break
            if pred(line):
                return line.strip()
        elif proc.poll() is not None:
            break
    raise RuntimeError(f"process {proc.args} did not start")


def ctl(port: int, line: str) -> dict[str, Any]:
    """One control command to a proxy or the fake host; its JSON answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(line.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    answer: dict[str, Any] = json.loads(buf)
    if not answer.get("ok"):
        raise RuntimeError(f"control {port} {line!r}: {answer}")
    return answer


class Proxy:
    def __init__(self, name: str, target: str, log: Path) -> None:
        self.name = name
        self.proc = subprocess.Popen(["nice", "-n", str(NICE), PY, "-m", "reliability.faultproxy", "--listen", "0",
                                      "--target", target, "--control", "0"], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
        line = _read_line(self.proc, lambda s: s.startswith("faultproxy listening on"))
        m = re.match(r"faultproxy listening on ([\d.]+):(\d+) control [\d.]+:(\d+)", line)
        assert m, line
        self.port = int(m.group(2))
        self.control = int(m.group(3))

    def __call__(self, line: str) -> dict[str, Any]:
        return ctl(self.control, line)


def stop(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- sampling ----------------------------------------------------------------------


def http_json(url: str, token: Optional[str] = TOKEN, timeout: float = 10.0) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
            return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()
    except urllib.error.HTTPError as e:
        body = e.read()
        return json.loads(body) if body[:1] == b"{" else {"status": e.code}


def metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("xlbridge_") and " " in line:
            k, v = line.rsplit(" ", 1)
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def tcp_connections(pid: int, ports: dict[str, int]) -> dict[str, Any]:
    """ESTABLISHED (and other) TCP sockets of ``pid`` to each proxy port, and their send queues (bytes)."""
    inodes = set()
    fds = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            fds += 1
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return {}
    by_port = {p: name for name, p in ports.items()}
    out: dict[str, Any] = {name: {"established": 0, "other": 0, "tx_queue": 0} for name in ports}
    out["fds"] = fds
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10 or f[9] not in inodes:
                continue
            rport = int(f[2].split(":")[1], 16)
            name = by_port.get(rport)
            if name is None:
                continue
            if f[3] == "01":
                out[name]["established"] += 1
            else:
                out[name]["other"] += 1
            out[name]["tx_queue"] += int(f[4].split(":")[0], 16)
    return out


def rss_kib(pid: int) -> Optional[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Sampler:
    """What the runner samples every couple of seconds."""

    def __init__(self, monitor: str, pid: int, ports: dict[str, int]) -> None:
        self.monitor = monitor
        self.pid = pid
        self.ports = ports
        self.samples: list[dict[str, Any]] = []

    def sample(self) -> dict[str, Any]:
        s: dict[str, Any] = {"t": time.time(), "rss_kib": rss_kib(self.pid), "cpu_s": cpu_seconds(self.pid),
                             "conns": tcp_connections(self.pid, self.ports),
                             "loadavg": os.getloadavg()[0]}
        try:
            calls = http_json(self.monitor + "/api/calls")
            legs = [leg for c in calls.get("calls", []) for leg in c.get("legs", [])]
            s["egress"] = calls.get("egress")
            s["calls"] = len(calls.get("calls", []))
            s["max_buffer_ms"] = max((leg.get("buffer_ms") or 0 for leg in legs), default=0)
            s["max_pending_ms"] = max(((leg.get("pipeline") or {}).get("pending_ms") or 0 for leg in legs), default=0)
            s["legs_fallback"] = sum(1 for leg in legs if (leg.get("pipeline") or {}).get("fallback"))
            s["down"] = sorted({k for leg in legs for k in ((leg.get("pipeline") or {}).get("down") or {})})
        except Exception as e:  # the monitor may be slow; keep sampling
            s["api_error"] = str(e)
        try:
            m = metrics(self.monitor)
            s["metrics"] = {k: v for k, v in m.items()
                            if k.startswith(("xlbridge_egress", "xlbridge_engine", "xlbridge_directions_in_fallback",
                                             "xlbridge_ready"))}
        except Exception as e:
            s["metrics_error"] = str(e)
        try:
            ready = http_json(self.monitor + "/readyz", token=None)
            s["ready"] = ready.get("status") if isinstance(ready, dict) else str(ready)
            if isinstance(ready, dict) and ready.get("reasons"):
                s["not_ready"] = ready["reasons"]
        except Exception as e:
            s["ready_error"] = str(e)
        s["t_done"] = time.time()
        self.samples.append(s)
        return s

    def run(self, stop: "threading.Event", every: float = 2.0) -> None:
        """Sample every ``every`` seconds until ``stop`` is set (a thread, so the timeline never waits on it)."""
        while not stop.is_set():
            t = time.time()
            try:
                self.sample()
            except Exception as e:
                self.samples.append({"t": t, "error": str(e)})
            stop.wait(max(0.1, every - (time.time() - t)))

    def latest_conns(self) -> dict[str, Any]:
        """Connections now (read directly: /proc is quick and never blocks on the bridge)."""
        return tcp_connections(self.pid, self.ports)


# -- the faults ----------------------------------------------------------------------


class Ctx:
    """What a fault's apply/clear functions use."""

    def __init__(self, proxies: dict[str, Proxy], fakes_control: int) -> None:
        self.proxies = proxies
        self.fakes_control = fakes_control
        self.chosen: list[int] = []

    def fake(self, line: str) -> dict[str, Any]:
        return ctl(self.fakes_control, line)

    def half(self, name: str) -> str:
        """Every other live connection of proxy ``name`` (as ``conns=...``); remembered in ``chosen``."""
        live = sorted(c["id"] for c in self.proxies[name]("status")["live"])
        self.chosen = live[::2]
        return "conns=" + ",".join(map(str, self.chosen)) if self.chosen else "conns=0"


Fault = dict[str, Any]


def _proxy_fault(name: str, target: str, desc: str, apply: Callable[[Ctx], Any],
                 clear: Optional[Callable[[Ctx], Any]] = None, subset: bool = False) -> Fault:
    return {"name": name, "target": target, "kind": "network", "desc": desc, "apply": apply,
            "clear": clear or (lambda c: c.proxies[target]("clear")), "subset": subset}


def _engine_fault(name: str, target: str, desc: str, apply: Callable[[Ctx], Any],
                  clear: Callable[[Ctx], Any]) -> Fault:
    return {"name": name, "target": target, "kind": "engine", "desc": desc, "apply": apply, "clear": clear,
            "subset": False}


def build_faults() -> list[Fault]:
    f: list[Fault] = [_engine_fault("none", "deepgram", "no fault (baseline)", lambda c: None, lambda c: None)]
    for eng in ENGINES:
        short = {"deepgram": "dg", "deepl": "dl", "elevenlabs": "el"}[eng]
        sub = eng == "deepgram"  # one socket per caller: fault half of them; the others are shared pools

        def conns(c: Ctx, eng: str = eng, sub: bool = sub) -> str:
            return c.half(eng) if sub else ""

        f.append(_proxy_fault(f"{short}-latency", eng, "latency 300 ms +- 150 ms jitter, every connection",
                              lambda c, eng=eng: c.proxies[eng]("set latency_ms=300 jitter_ms=150")))
        f.append(_proxy_fault(f"{short}-bandwidth", eng,
                              "16 000 B/s per direction per connection" + (" (half the sockets)" if sub else ""),
                              lambda c, eng=eng, conns=conns: c.proxies[eng](f"set bandwidth=16000 {conns(c)}"),
                              subset=sub))
        f.append(_proxy_fault(f"{short}-reset", eng, "RST both sides mid-stream" + (" (half the sockets)" if sub else ""),
                              lambda c, eng=eng, conns=conns: c.proxies[eng](f"reset {conns(c)}"), subset=sub))
        f.append(_proxy_fault(f"{short}-blackhole", eng,
                              "half-open: nothing forwarded, client not read" + (" (half the sockets)" if sub else ""),
                              lambda c, eng=eng, conns=conns: c.proxies[eng](f"blackhole {conns(c)}"), subset=sub))
        f.append(_proxy_fault(f"{short}-stall5s", eng, "5 s stall of every live connection, then delivered",
                              lambda c, eng=eng: c.proxies[eng]("stall 5")))
        f.append(_proxy_fault(f"{short}-slowreads", eng,
                              "client read 50 ms per second" + (" (half the sockets)" if sub else ""),
                              lambda c, eng=eng, conns=conns: c.proxies[eng](
                                  f"slow_reads period_s=1 read_ms=50 {conns(c)}"), subset=sub))
        f.append(_proxy_fault(f"{short}-down", eng, "engine unreachable: every connection reset, new ones refused",
                              lambda c, eng=eng: (c.proxies[eng]("refuse on"), c.proxies[eng]("reset"))))
    f += [
        _engine_fault("dg-1011", "deepgram", "Deepgram closes every stream 1011 NET-0000 mid-utterance",
                      lambda c: c.fake("deepgram close_live 1011"), lambda c: None),
        _engine_fault("dg-no-metadata", "deepgram",
                      "CloseStream answered by close 1000 without Metadata; 2 calls end (callers silent 12 s)",
                      lambda c: c.fake("deepgram metadata off"), lambda c: c.fake("deepgram metadata on")),
        _engine_fault("dl-429", "deepl", "DeepL 429 with Retry-After: 2 on every request",
                      lambda c: (c.fake("deepl set retry_after 2"), c.fake("deepl set fail_429 1000000")),
                      lambda c: (c.fake("deepl set fail_429 0"), c.fake("deepl set retry_after none"))),
        _engine_fault("dl-503", "deepl", "DeepL 503 on every request",
                      lambda c: c.fake("deepl set fail_5xx 1000000"), lambda c: c.fake("deepl set fail_5xx 0")),
        _engine_fault("dl-456", "deepl", "DeepL 456 quota exceeded",
                      lambda c: c.fake("deepl set quota_exceeded on"), lambda c: c.fake("deepl set quota_exceeded off")),
        _engine_fault("el-401", "elevenlabs", "ElevenLabs 401 invalid_api_key on every request",
                      lambda c: c.fake("elevenlabs fail 401 1000000"), lambda c: c.fake("elevenlabs clear")),
        _engine_fault("el-429", "elevenlabs", "ElevenLabs 429 too_many_concurrent_requests on every request",
                      lambda c: c.fake("elevenlabs fail 429 1000000"), lambda c: c.fake("elevenlabs clear")),
        _engine_fault("el-cut", "elevenlabs", "ElevenLabs stream cut after 6 000 bytes (mid-utterance), every stream",
                      lambda c: c.fake("elevenlabs drop 6000 1000000"), lambda c: c.fake("elevenlabs clear")),
    ]
    f += [
        _proxy_fault("ari-reset", "ari", "ARI connections reset (events WebSocket)",
                     lambda c: c.proxies["ari"]("reset")),
        _proxy_fault("ari-blackhole", "ari", "ARI half-open (events WebSocket blackholed)",
                     lambda c: c.proxies["ari"]("blackhole")),
    ]
    return f


FAULTS = build_faults()


# -- analysis ------------------------------------------------------------------------


def pctl(a: Any, q: float) -> Optional[float]:
    a = np.asarray(a, dtype=float)
    return float(np.percentile(a, q)) if len(a) else None


def subseq_match(expected: list[str], heard: list[str]) -> int:
    """How many of ``expected`` appear in ``heard`` in order (greedy)."""
    i = 0
    n = 0
    for w in heard:
        if i < len(expected) and w == expected[i]:
            i += 1
            n += 1
    return n


def analyse(run: dict[str, Any], callers: dict[str, Any], arrivals: dict[str, np.ndarray],
            events: list[dict[str, Any]], samples: list[dict[str, Any]], period: float) -> list[dict[str, Any]]:
    from tests.fakes.deepl import translate_words

    legs = callers["legs"]
    base = callers["base"]

    def partner(ext: int) -> int:
        return ext + 1 if (ext - base) % 2 == 0 else ext - 1

    finals: dict[str, list[tuple[float, str]]] = {}
    for e in events:
        if e["event"] == "TranscriptEvent" and e.get("is_final") and e.get("text"):
            for w in e["text"].lower().replace(",", " ").replace(".", " ").replace("?", " ").split():
                finals.setdefault(e["extension"], []).append((e["time"], w))
    status = [e for e in events if e["event"] == "EngineStatusEvent"]
    heard = {ext: [(t, w) for t, w in leg["heard"]] for ext, leg in legs.items()}

    # What each listener heard of each phrase: its words are matched in
    # order against the words the listener heard from the phrase's start
    # until the speaker's phrase after next starts (translations may come
    # late on a loaded machine), each heard word used at most once.
    outcome: dict[tuple[str, float], dict[str, Any]] = {}
    for ext, leg in legs.items():
        src = "EN" if leg["lang"] == "en" else "ES"
        dst = "ES" if src == "EN" else "EN"
        got_all = heard[str(partner(int(ext)))]
        used_tr: set[int] = set()
        used_or: set[int] = set()
        said = leg["said"]
        for k, (start, end, text) in enumerate(said):
            limit = said[k + 2][0] if k + 2 < len(said) else start + 2 * period
            words = text.split()
            expected = translate_words(text, src, dst).lower().split()

            def match(target: list[str], used: set[int]) -> int:
                i, n, take = 0, 0, []
                for idx, (t, w) in enumerate(got_all):
                    if t < start or idx in used:
                        continue
                    if t >= limit:
                        break
                    if i < len(target) and w == target[i]:
                        take.append(idx)
                        i += 1
                        n += 1
                if n == len(target):
                    used.update(take)
                return n

            n_tr = match(expected, used_tr)
            n_or = match(words, used_or)
            fw = [w for t, w in finals.get(ext, []) if start <= t < start + 20]
            outcome[(ext, start)] = {"words": len(words), "expected": len(expected), "n_tr": n_tr, "n_or": n_or,
                                     "transcribed": subseq_match(words, fw),
                                     "any": any(start <= t < limit for t, _ in got_all)}

    def phrase_outcomes(t0: float, t1: float) -> dict[str, Any]:
        """Phrases said in [t0, t1): what the partner heard, and the transcript."""
        out = {"phrases": 0, "translated": 0, "relay": 0, "partial": 0, "silence": 0,
               "words_said": 0, "words_lost_transcript": 0, "words_never_heard": 0}
        for ext, leg in legs.items():
            for start, end, text in leg["said"]:
                if not (t0 <= start < t1) or start + 2 * period > callers["end"] - 1:
                    continue
                o = outcome[(ext, start)]
                out["phrases"] += 1
                out["words_said"] += o["words"]
                if o["n_tr"] == o["expected"]:
                    out["translated"] += 1
                elif o["n_or"] == o["words"] and o["n_or"] > 0:
                    out["relay"] += 1
                elif o["any"]:
                    out["partial"] += 1
                else:
                    out["silence"] += 1
                out["words_never_heard"] += o["words"] - min(o["words"], max(
                    round(o["n_tr"] * o["words"] / max(1, o["expected"])), o["n_or"]))
                out["words_lost_transcript"] += o["words"] - o["transcribed"]
        return out

    def egress(t0: float, t1: float, exclude_calls: set[int]) -> dict[str, Any]:
        errs = []
        gaps = []
        for ext, t in arrivals.items():
            if (int(ext) - base) // 2 in exclude_calls:
                continue
            w = t[(t >= t0) & (t < t1)]
            if len(w) < 3:
                continue
            d = np.diff(w)
            errs.append(np.abs(d - 0.020))
            gaps.append(d.max())
        if not errs:
            return {"n": 0}
        e = np.concatenate(errs) * 1000
        return {"n": int(len(e)), "p50_ms": pctl(e, 50), "p99_ms": pctl(e, 99), "max_ms": float(e.max()),
                "max_gap_ms": float(max(gaps)) * 1000}

    def sample_at(t: float) -> dict[str, Any]:
        best = min(samples, key=lambda s: abs(s["t"] - t))
        return best

    def samples_in(t0: float, t1: float) -> list[dict[str, Any]]:
        return [s for s in samples if t0 <= s["t"] <= t1]

    def metric_delta(t0: float, t1: float, key: str) -> Optional[float]:
        a, b = sample_at(t0).get("metrics", {}), sample_at(t1).get("metrics", {})
        if key in a and key in b:
            return b[key] - a[key]
        return None

    def bridge_interval_p99(t0: float, t1: float) -> Optional[str]:
        """p99 of the bridge's own egress interval error, from the /metrics histogram delta (bucket bound)."""
        a, b = sample_at(t0).get("metrics", {}), sample_at(t1).get("metrics", {})
        buckets = []
        for k, v in b.items():
            m = re.match(r'xlbridge_egress_interval_error_seconds_bucket\{le="([^"]+)"\}', k)
            if m and k in a:
                buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), v - a[k]))
        buckets.sort()
        if not buckets or buckets[-1][1] <= 0:
            return None
        total = buckets[-1][1]
        for le, n in buckets:
            if n >= 0.99 * total:
                return "<= %g ms" % (le * 1000) if le != float("inf") else "> 500 ms"
        return None

    results = []
    for f in run["faults"]:
        t_apply, t_clear, t_end = f["t_apply"], f["t_clear"], f["t_end"]
        st_w = [e for e in status if t_apply - 0.5 <= e["time"] < t_clear + 0.5]
        st_r = [e for e in status if t_clear <= e["time"] < t_end]
        # a fault may be noticed only when it ends (a blackhole's close arrives then): count to t_end
        downs_all = [e for e in status if e["state"] == "down" and t_apply - 0.5 <= e["time"] < t_end]
        downs = [e for e in downs_all if e["engine"] == f["target"]]  # the faulted engine's
        other_downs = sorted({e["engine"] for e in downs_all if e["engine"] != f["target"]})
        res_downs_during = len([e for e in st_w if e["state"] == "down" and e["engine"] == f["target"]])
        touched_exts = {e["extension"] for e in st_w + st_r}
        call_ids_touched = {e["call_id"] for e in st_w + st_r}
        touched_calls = {(int(x) - base) // 2 for x in touched_exts} | {
            (int(x) - base) // 2 for x in touched_exts}
        # a leg whose pair is touched: exclude the whole call
        during = phrase_outcomes(t_apply, t_clear)
        recov = phrase_outcomes(t_clear + 3, t_end)
        pre = max(run["t_baseline"], t_apply - 10)
        conn_name = f["target"]
        c_before = f["conns_before"].get(conn_name, {}).get("established")
        c_during = f["conns_during"].get(conn_name, {}).get("established")
        c_after = f["conns_after"].get(conn_name, {}).get("established")
        ss = samples_in(t_apply, t_end)
        rss = [s["rss_kib"] for s in ss if s.get("rss_kib")]
        recovered_translated = recov["phrases"] and recov["translated"] / recov["phrases"]
        last = samples_in(t_end - 4, t_end + 1)
        still_fallback = max((s.get("legs_fallback") or 0 for s in last), default=None)
        not_ready = sorted({r if isinstance(r, str) else json.dumps(r) for s in ss for r in s.get("not_ready", [])})
        res = {
            "name": f["name"], "target": f["target"], "kind": f["kind"], "desc": f["desc"],
            "chosen_conns": f.get("chosen"),
            "t_apply": t_apply, "t_clear": t_clear, "t_end": t_end,
            "heard_during": during, "heard_recovery": recov,
            "down_events": len(downs), "down_legs": len({e["extension"] for e in downs}),
            "down_events_before_clear": res_downs_during,
            "other_engines_down": other_downs,
            "up_events_recovery": len([e for e in st_r if e["state"] == "up"]),
            "fallback_start_s": (min(e["time"] for e in downs) - t_apply) if downs else None,
            "fallback_start_p50_s": pctl([e["time"] - t_apply for e in downs], 50) if downs else None,
            "down_errors": sorted({e["error"][:120] for e in downs})[:4],
            "recovery_up_last_s": (max(e["time"] for e in st_r if e["state"] == "up") - t_clear)
            if any(e["state"] == "up" for e in st_r) else None,
            "touched_calls": len(call_ids_touched),
            "egress_untouched_before": egress(pre, t_apply, touched_calls),
            "egress_untouched_during": egress(t_apply, t_clear, touched_calls),
            "egress_all_during": egress(t_apply, t_clear, set()),
            "bridge_interval_p99_during": bridge_interval_p99(t_apply, t_clear),
            "late_ticks_during": metric_delta(t_apply, t_clear, "xlbridge_egress_late_ticks_total"),
            "skipped_ticks_during": metric_delta(t_apply, t_clear, "xlbridge_egress_skipped_ticks_total"),
            "conns_before": c_before, "conns_during": c_during, "conns_after": c_after,
            "conns_other_after": f["conns_after"].get(conn_name, {}).get("other"),
            "tx_queue_during_max": max((s["conns"].get(conn_name, {}).get("tx_queue", 0) for s in ss
                                        if s.get("conns")), default=None),
            "rss_kib_before": f.get("rss_before"), "rss_kib_max": max(rss) if rss else None,
            "max_buffer_ms": max((s.get("max_buffer_ms") or 0 for s in ss), default=None),
            "max_pending_ms": max((s.get("max_pending_ms") or 0 for s in ss), default=None),
            "legs_fallback_max": max((s.get("legs_fallback") or 0 for s in ss), default=None),
            "legs_fallback_at_end": still_fallback,
            "not_ready_reasons": not_ready[:5],
            "recovered_share": recovered_translated,
            "extra": f.get("extra"),
        }
        # every leg that went down came back up (same engine) before the end of the recovery window
        outages = []
        unrecovered = []
        for d in downs:
            ups = [e for e in status if e["state"] == "up" and e["extension"] == d["extension"]
                   and e["call_id"] == d["call_id"] and e["engine"] == d["engine"] and e["time"] >= d["time"]]
            if ups and ups[0]["time"] <= t_end:
                outages.append(ups[0]["time"] - d["time"])
            else:
                unrecovered.append(d["extension"])
        res["outage_s_p50"] = pctl(outages, 50)
        res["outage_s_max"] = max(outages) if outages else None
        res["legs_not_back_up"] = len(set(unrecovered))
        res["last_up_after_clear_s"] = res.pop("recovery_up_last_s")
        res["loadavg_max"] = max((s.get("loadavg") or 0 for s in ss), default=None)
        res["recovered"] = bool(recov["phrases"]) and not unrecovered and not still_fallback and (
            recovered_translated >= 0.8)
        results.append(res)
    return results


# -- the report ----------------------------------------------------------------------


def _ms(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.0f}"


def _s(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.1f}"


def render(summary: dict[str, Any]) -> str:
    """The Markdown table of ``faults.md`` from the JSON summary."""
    lines = [
        "| fault | callers heard during the fault (phrases: translated / original voice / partial / nothing) "
        "| fallback start (first / median), s | down legs | words lost: transcript / never heard (of said) "
        "| egress interval error p99, untouched calls: before → during (all calls during), ms "
        "| late ticks | conns to engine: before → during → after | peak pending ms / RSS Δ MiB "
        "| recovered? (outage max s; legs not back up) |",
        "|---|---|---|---:|---|---|---:|---|---|---|",
    ]
    for r in summary["results"]:
        h = r["heard_during"]
        heard = f"{h['translated']} / {h['relay']} / {h['partial']} / {h['silence']} of {h['phrases']}"
        fb = "–" if r["fallback_start_s"] is None else f"{r['fallback_start_s']:.2f} / {r['fallback_start_p50_s']:.2f}"
        lost = f"{h['words_lost_transcript']} / {h['words_never_heard']} (of {h['words_said']})"
        eb, ed, ea = r["egress_untouched_before"], r["egress_untouched_during"], r["egress_all_during"]
        eg = f"{_ms(eb.get('p99_ms'))} → {_ms(ed.get('p99_ms'))} ({_ms(ea.get('p99_ms'))})"
        conns = f"{r['conns_before']} → {r['conns_during']} → {r['conns_after']}"
        rss = ((r["rss_kib_max"] or 0) - (r["rss_kib_before"] or 0)) / 1024 if r["rss_kib_max"] else None
        buf = f"{_ms(r['max_pending_ms'])} / {_s(rss)}"
        rec = r["heard_recovery"]
        ok = "yes" if r["recovered"] else "**no**"
        recd = (f"{ok} ({rec['translated']}/{rec['phrases']} translated after; outage max "
                f"{_s(r['outage_s_max'])}; {r['legs_not_back_up']} not back)")
        late = "–" if r["late_ticks_during"] is None else f"{r['late_ticks_during']:.0f}"
        lines.append(f"| `{r['name']}`: {r['desc']} | {heard} | {fb} | {r['down_legs']} | {lost} | {eg} | {late} "
                     f"| {conns} | {buf} | {recd} |")
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------


def write_results(run: dict[str, Any], work: Path, out: Path, period: float, tag: str = "") -> None:
    """Analyse a run's recordings (in ``work``) and write ``faults.json`` / ``faults.md`` tables into ``out``."""
    events_path = work / "events.jsonl"
    cal = json.loads((work / "callers.json").read_text())
    npz = np.load(work / "callers.npz")
    arrivals = {k: npz[k] for k in npz.files}
    events = [json.loads(line) for line in events_path.read_text().splitlines() if line.strip()]
    results = analyse(run, cal, arrivals, events, run["samples"], period)
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in run.items() if k not in ("samples",)}
    summary["results"] = results
    summary["callers"] = {"calls": cal["calls"], "legs": len(cal["legs"]),
                          "sent": sum(leg["sent"] for leg in cal["legs"].values()),
                          "received": sum(leg["received"] for leg in cal["legs"].values()),
                          "phrases_said": sum(len(leg["said"]) for leg in cal["legs"].values())}
    summary["events_count"] = {}
    for e in events:
        summary["events_count"][e["event"]] = summary["events_count"].get(e["event"], 0) + 1
    load = [x["loadavg"] for x in run["samples"] if x.get("loadavg") is not None]
    summary["loadavg_1min"] = {"min": min(load), "median": float(np.median(load)), "max": max(load)} if load else None
    summary["work_dir"] = str(work)
    name = f"faults{'-' + tag if tag else ''}.json"
    (out / name).write_text(json.dumps(summary, indent=1, default=str))
    print(render(summary))
    print(f"wrote {out / name}", flush=True)


def machine() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reliability.faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=22, help="translated calls (pairs of callers)")
    p.add_argument("--base", type=int, default=26000, help="first extension / RTP port")
    p.add_argument("--monitor-port", type=int, default=3911)
    p.add_argument("--warmup", type=float, default=20.0)
    p.add_argument("--hold", type=float, default=20.0, help="seconds each fault lasts")
    p.add_argument("--recover", type=float, default=15.0, help="seconds after each fault")
    p.add_argument("--period", type=float, default=6.0, help="seconds between a caller's phrases")
    p.add_argument("--dtx", action=argparse.BooleanOptionalAction, default=True,
                   help="callers send one packet per 500 ms between phrases (default; see reliability/callers.py)")
    p.add_argument("--helper-nice", type=int, default=10, help="nice level of the fakes, proxies and callers")
    p.add_argument("--xlbridge-path", default="", help="directory holding another xlbridge package to run "
                   "(put first on the bridge's PYTHONPATH), e.g. the code before a fix")
    p.add_argument("--tag", default="", help="suffix of faults[-TAG].json")
    p.add_argument("--only", default="", help="comma-separated fault names (default: all)")
    p.add_argument("--out", default=str(ROOT / "reliability" / "results"))
    p.add_argument("--render", default=None, metavar="JSON", help="print the table of an earlier run's JSON and exit")
    p.add_argument("--reanalyse", default=None, metavar="WORKDIR",
                   help="redo the analysis of an earlier run from its work dir (run.json) and exit")
    args = p.parse_args(argv)
    global NICE
    NICE = args.helper_nice
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return 0
    if args.reanalyse:
        work = Path(args.reanalyse)
        write_results(json.loads((work / "run.json").read_text()), work, Path(args.out), args.period, args.tag)
        return 0

    faults = FAULTS if not args.only else [f for f in FAULTS if f["name"] in ("none", *args.only.split(","))]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = ROOT / "reliability" / "out" / f"faults-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[Any]] = []
    run: dict[str, Any] = {"date": stamp, "machine": machine(), "command": "python -m reliability.faults "
                           + " ".join(argv if argv is not None else sys.argv[1:]), "settings": vars(args),
                           "faults": []}
    try:
        fh = subprocess.Popen(["nice", "-n", str(NICE), PY, "-m", "reliability.fakehost"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=open(work / "fakehost.log", "w"), text=True)
        procs.append(fh)
        urls = json.loads(_read_line(fh, lambda s: s.startswith("{")))
        proxies = {}
        for name in ENGINES + ("ari",):
            target = urls[name].split("//", 1)[1]
            proxies[name] = Proxy(name, target, work / f"proxy-{name}.log")
            procs.append(proxies[name].proc)
        pw = work / "ari-password"
        pw.write_text("s3cret")
        pw.chmod(0o600)
        events_path = work / "events.jsonl"
        env = dict(os.environ)
        env.update({
            "DEEPGRAM_API_KEY": "test-key", "DEEPL_AUTH_KEY": "test-key:fx", "ELEVENLABS_API_KEY": "test-key",
            "XLBRIDGE_DEEPGRAM_URL": f"ws://127.0.0.1:{proxies['deepgram'].port}",
            "XLBRIDGE_DEEPL_URL": f"http://127.0.0.1:{proxies['deepl'].port}",
            "XLBRIDGE_ELEVENLABS_URL": f"http://127.0.0.1:{proxies['elevenlabs'].port}",
            "XLBRIDGE_MONITOR_TOKEN": TOKEN,
        })
        if args.xlbridge_path:
            # another copy of the package first on the path (e.g. the code before a fix)
            env["PYTHONPATH"] = args.xlbridge_path + os.pathsep + env.get("PYTHONPATH", "")
        last = args.base + 2 * args.calls - 1
        xl_cmd = [TWISTD, "-n", "--pidfile=", "xlbridge", "--engines", "cloud", "--ports", f"{args.base}-{last}",
                  "--langs", "en,es", "--reply-codec", "slin16", "--fallback", "relay",
                  "--events", str(events_path), "--monitor", f"tcp:{args.monitor_port}:interface=127.0.0.1",
                  "--monitor-metrics-open", "yes",
                  "--ari", f"http://127.0.0.1:{proxies['ari'].port}", "--ari-user", "xlbridge",
                  "--ari-password-file", str(pw), "--rtp-ports", "27000-27099"]
        run["xlbridge_command"] = " ".join(xl_cmd)
        xl = subprocess.Popen(xl_cmd, cwd=ROOT, env=env, stdout=open(work / "xlbridge.log", "w"),
                              stderr=subprocess.STDOUT)
        procs.append(xl)
        monitor = f"http://127.0.0.1:{args.monitor_port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            r = None
            try:
                r = http_json(monitor + "/readyz", token=None, timeout=2)
            except Exception:
                pass
            if isinstance(r, dict) and r.get("status") == "ready":
                break
            if xl.poll() is not None:
                raise RuntimeError("xlbridge exited; see " + str(work / "xlbridge.log"))
            time.sleep(0.5)
        else:
            raise RuntimeError(f"xlbridge not ready: {r}")
        ports = {name: pr.port for name, pr in proxies.items()}
        sampler = Sampler(monitor, xl.pid, ports)
        ctx = Ctx(proxies, urls["control"])

        # the timeline
        t0 = time.time() + 2.0
        t_baseline = t0 + args.warmup
        t = t_baseline
        plan = []
        silent = []
        for f in faults:
            plan.append((t, t + args.hold, t + args.hold + args.recover, f))
            if f["name"] == "dg-no-metadata":
                # calls 0 and 1 go quiet: their calls end (inactivity 10 s) while Metadata is withheld
                for ext in range(args.base, args.base + 4):
                    silent.append([ext, t + 2, t + 2 + 12.5])
            t += args.hold + args.recover
        duration = t - t0 + 3
        run["t0"], run["t_baseline"] = t0, t_baseline
        sched = work / "schedule.json"
        sched.write_text(json.dumps({"silent": silent}))
        callers_out = work / "callers"
        callers = subprocess.Popen(["nice", "-n", "0", PY, "-m", "reliability.callers", "--calls", str(args.calls),
                                    "--base", str(args.base), "--duration", str(duration), "--period",
                                    str(args.period), "--schedule", str(sched), "--out", str(callers_out),
                                    *(["--dtx"] if args.dtx else [])],
                                   cwd=ROOT, stdout=open(work / "callers.log", "w"), stderr=subprocess.STDOUT)
        procs.append(callers)
        print(f"{len(faults)} faults, {args.calls} calls, about {duration / 60:.1f} min; work dir {work}", flush=True)

        stop_sampling = threading.Event()
        sampling = threading.Thread(target=sampler.run, args=(stop_sampling,), daemon=True)
        sampling.start()

        def wait_until(when: float) -> None:
            while time.time() < when:
                time.sleep(min(0.1, max(0.0, when - time.time())))

        wait_until(t_baseline)
        for t_apply, t_clear, t_end, f in plan:
            wait_until(t_apply - 1.0)
            rec: dict[str, Any] = {"name": f["name"], "target": f["target"], "kind": f["kind"], "desc": f["desc"]}
            rec["conns_before"] = sampler.latest_conns()
            rec["rss_before"] = rss_kib(xl.pid)
            wait_until(t_apply)
            rec["t_apply"] = time.time()
            ctx.chosen = []
            try:
                f["apply"](ctx)
            except Exception as e:
                rec["apply_error"] = str(e)
            rec["chosen"] = list(ctx.chosen) or None
            print(f"{datetime.datetime.now():%H:%M:%S} {f['name']}: {f['desc']}", flush=True)
            wait_until(t_clear - 0.5)
            rec["conns_during"] = sampler.latest_conns()
            if f["target"] in proxies:
                try:
                    st = proxies[f["target"]]("status")
                    rec["proxy_during"] = {"accepted": st["accepted"], "live": len(st["live"]),
                                           "queued_up_max": max((c["queued_up"] for c in st["live"]), default=0)}
                except Exception as e:
                    rec["proxy_during"] = {"error": str(e)}
            wait_until(t_clear)
            rec["t_clear"] = time.time()
            try:
                f["clear"](ctx)
            except Exception as e:
                rec["clear_error"] = str(e)
            wait_until(t_end - 0.5)
            rec["conns_after"] = sampler.latest_conns()
            rec["t_end"] = time.time()
            rec["extra"] = {"proxy_during": rec.get("proxy_during")}
            run["faults"].append(rec)
        callers.wait(timeout=120)
        stop_sampling.set()
        sampling.join(30)
        run["samples"] = sampler.samples
        run["xlbridge_cpu_s"] = cpu_seconds(xl.pid)
        stop(xl, 40)
    finally:
        for proc in reversed(procs):
            stop(proc)
    (work / "run.json").write_text(json.dumps(run, default=str))
    write_results(run, work, Path(args.out), args.period, args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
