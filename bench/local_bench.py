"""
Local engines benchmark: end-of-speech latency, CPU per call-minute and
concurrent calls per core with pocketsphinx + Apertium + espeak-ng.

Every point starts a fresh bridge in its own process::

    taskset -c 1 twistd -n --pidfile= xlbridge --ports PORTS --langs en,es \\
        --engines local --config CFG.toml --events EVENTS.jsonl

where ``CFG.toml`` only sets ``[local_asr] backend = "thread"|"process"``
(every other setting is the default).  Child processes of the bridge (the
ASR worker of the ``process`` backend, the Apertium pipelines) inherit its
core-1 affinity.  Backend variants:

- ``thread``: pocketsphinx in the bridge's thread pool (holds the GIL);
- ``process``: the ASR worker process(es), left on core 1 with the reactor:
  everything the bridge runs shares one core;
- ``process-w0``: the same, but after start-up this script moves the ASR
  worker(s) to core 0 (``sched_setaffinity``): extra capacity beyond one
  core (core 0 is shared with the phones and tcpdump).

The simulated phones (xlbridge.tools.phone.Phone, slin16 out, G.722 back)
run in a child of this script on core 0, as does tcpdump.  Each pair's
first extension speaks English Allison prompts (Debian's
asterisk-core-sounds-en-g722) separated by ``--gap`` seconds of silence; its
partner (Spanish, no local ASR model, so that direction falls back to
relaying silence) sends silence and listens.

Measurements:

1. latency (``--utterances``, one call, one warm-up utterance not counted):
   per utterance the bridge's own ``PlaybackStarted`` figures (total_ms =
   end of speech -> first translated packet on the wire; asr_ms, mt_ms,
   tts_first_byte_ms, queue_wait_ms) from the ``--events`` file, matched to
   the prompt they belong to, plus an external check: PlaybackStarted.time
   minus the wall time the phone sent the packet holding the prompt's last
   loud (> -45 dBFS per 10 ms) sample.
2. CPU per call-minute: utime+stime of the bridge process and of its whole
   process tree (workers, Apertium) from /proc over the window
   [phones start + ``--cpu-skip``, end - 0.5 s], divided by N x window/60.
   Reported from the latency runs (one call talking continuously) and for
   every concurrency point.
3. concurrency (``--ns``, ``--seconds``): N pairs, every speaker looping
   over the prompts with its own lead and prompt order; tcpdump on lo of
   the bridge's outbound packets, analysed with bench/analyse.py
   (kernel timestamps; p99 |interval - 20 ms| pooled over all 2N streams,
   first ``--warmup`` s of each stream dropped, and also with only 1 s
   dropped so call start-up is included); prompts spoken vs recognised
   (at least one non-empty final attributed to it) vs translated and
   played; word error rate of what was recognised against the same prompt
   decoded offline with no load (is recognition keeping up?); total_ms
   p50/p95 per utterance.

Usage::

    python bench/local_bench.py [--utterances 20] [--ns 1,2,4] [--seconds 40]
        [--backends thread,process,process-w0] [--repeats 1]

Writes bench/out/local_bench.json (+ logs), and unless ``--no-publish``
bench/results/local_bench.json and bench/results/local_bench.png.
Needs root for tcpdump on lo.  Phones mode (internal):
``python bench/local_bench.py --phones SPEC.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import analyse
import run as egress_run
from xlbridge.eventlog import read_events

SOUNDS_EN = "/usr/share/asterisk/sounds/en_US_f_Allison"
#: Allison prompts pocketsphinx's bundled English model gets (mostly) right.
PROMPTS = [
    "conf-onlyperson", "agent-pass", "auth-thankyou", "vm-goodbye", "conf-getpin",
    "vm-reenterpassword", "conf-getconfno", "conf-kicked", "vm-password", "auth-incorrect",
]
LOUD_DBFS = -45.0
BRIDGE_CORE = 1
OTHER_CORE = 0
BACKENDS = ("relay", "thread", "process", "process-w0")
SR = 16000
FRAME = 320  # samples per 20 ms packet


# --------------------------------------------------------------------------
# prompts and schedules (shared by the orchestrator and the phones child)


def load_prompt(name: str) -> dict[str, Any]:
    import numpy as np

    from xlbridge.tools.demo import load_g722

    x = load_g722(os.path.join(SOUNDS_EN, name + ".g722"))
    f = x[: len(x) // 160 * 160].astype(np.float64).reshape(-1, 160)
    db = 20 * np.log10(np.sqrt((f**2).mean(1)) / 32768 + 1e-12)
    loud = np.where(db > LOUD_DBFS)[0]
    return {"name": name, "audio": x, "samples": len(x),
            "speech_start": int(loud[0]) * 160, "speech_end": int(loud[-1] + 1) * 160}


def schedule(lengths: dict[str, int], order: list[str], lead_s: float, gap_s: float, *,
             count: int | None = None, until_s: float | None = None, tail_s: float = 3.0) -> dict[str, Any]:
    """Prompts back to back: ``count`` of them, or as many as end by ``until_s - tail_s``."""
    items, at, i = [], int(lead_s * SR), 0
    while True:
        name = order[i % len(order)]
        n = lengths[name]
        if count is not None and i >= count:
            break
        if until_s is not None and (at + n) / SR > until_s - tail_s:
            break
        items.append({"name": name, "offset": at})
        at += n + int(gap_s * SR)
        i += 1
    total = int(until_s * SR) if until_s is not None else at - int(gap_s * SR) + int(tail_s * SR)
    return {"items": items, "samples": total}


# --------------------------------------------------------------------------
# phones child (core 0): plays every pair, reports send times of key frames


def phones_main(spec_path: str) -> int:
    import numpy as np
    from twisted.internet import defer, reactor

    from xlbridge.audio.codecs import get_codec
    from xlbridge.tools.phone import Phone

    with open(spec_path) as f:
        spec = json.load(f)
    prompts = {n: load_prompt(n) for n in PROMPTS}

    class TimedPhone(Phone):
        """Records the wall time it sent frames of interest."""

        def __init__(self, *a: Any, watch: set[int] = frozenset(), **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.watch = watch
            self.sent_at: dict[int, float] = {}

        def _send(self, i: int) -> None:
            super()._send(i)
            if i in self.watch:
                self.sent_at[i] = self.clock.seconds()

    phones: list[tuple[dict[str, Any], str, Any]] = []
    for pair in spec["pairs"]:
        sched = pair["schedule"]
        track = np.zeros(sched["samples"], np.int16)
        watch: set[int] = set()
        for it in sched["items"]:
            p = prompts[it["name"]]
            track[it["offset"]: it["offset"] + p["samples"]] = p["audio"]
            it["start_frame"] = (it["offset"] + p["speech_start"]) // FRAME
            it["end_frame"] = (it["offset"] + p["speech_end"] - 1) // FRAME
            watch |= {it["start_frame"], it["end_frame"]}
        for role, audio, w in (("speaker", track, watch), ("listener", np.zeros_like(track), set())):
            ph = TimedPhone(reactor, audio, get_codec("slin16"), ("127.0.0.1", pair[role + "_port"]),
                            tail=spec["tail_s"], watch=w)
            reactor.listenUDP(0, ph, interface="127.0.0.1")
            phones.append((pair, role, ph))
    out: dict[str, Any] = {}

    @defer.inlineCallbacks
    def go() -> Any:
        t0 = time.time()
        print(f"started {t0:.6f}", flush=True)
        reports = yield defer.gatherResults([ph.play() for _, _, ph in phones])
        out["t0"] = t0
        out["pairs"] = []
        got = dict(zip([id(ph) for _, _, ph in phones], reports))
        for pair in spec["pairs"]:
            d: dict[str, Any] = {"speaker_ext": pair["speaker_ext"], "listener_ext": pair["listener_ext"]}
            for p2, role, ph in phones:
                if p2 is not pair:
                    continue
                rep = got[id(ph)]
                info = {"start": ph._start, "packets_sent": rep.packets_sent,
                        "packets_received": rep.packets_received, "lost": rep.lost, "max_gap_ms": rep.max_gap_ms}
                a = rep.audio.astype(np.float64)
                if len(a) >= FRAME:
                    fr = a[: len(a) // FRAME * FRAME].reshape(-1, FRAME)
                    db = 20 * np.log10(np.sqrt((fr**2).mean(1)) / 32768 + 1e-12)
                    info["loud_s"] = float((db > LOUD_DBFS).sum() * 0.02)
                if role == "speaker":
                    d["prompts"] = [{"name": it["name"], "t_start": ph.sent_at.get(it["start_frame"]),
                                     "t_end": ph.sent_at.get(it["end_frame"])} for it in pair["schedule"]["items"]]
                d[role] = info
            out["pairs"].append(d)
        with open(spec["out"], "w") as f:
            json.dump(out, f)

    def stop(_: Any) -> None:
        reactor.stop()

    def fail(f: Any) -> None:
        f.printTraceback(file=sys.stderr)
        reactor.stop()

    reactor.callWhenRunning(lambda: go().addCallbacks(stop, fail))
    reactor.run()
    return 0 if "pairs" in out else 1


# --------------------------------------------------------------------------
# reference transcripts: each prompt decoded offline, no load


def reference_texts(window_s: float = 0.3, ratio: float = 0.9) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """
    Each prompt decoded offline (0.5 s lead, 2 s tail), one frame at a time:
    the text, and where the final came out in stream time, which splits
    asr_ms into the endpointer's own wait (audio time, no CPU involved) and
    the rest.
    """
    import numpy as np

    from xlbridge.engines.local_asr.wire import StreamParams
    from xlbridge.engines.local_asr.worker import Session
    from xlbridge.engines.pocketsphinx.asr import DecoderPool, SphinxModel

    pool = DecoderPool()
    texts, detail = {}, {}
    for name in PROMPTS:
        p = load_prompt(name)
        b = np.concatenate([np.zeros(8000, np.int16), p["audio"], np.zeros(32000, np.int16)]).tobytes()
        s = Session(SphinxModel(), StreamParams(window_s=window_s, ratio=ratio), pool, 1)
        finals, emit, dec_ms, busy = [], None, None, 0.0
        for k, i in enumerate(range(0, len(b) - 639, 640)):
            t = time.perf_counter()
            ev = s.feed([b[i: i + 640]])
            dt = time.perf_counter() - t
            busy += dt
            for e in ev:
                if getattr(e, "is_final", False) and e.text:
                    finals.append(e)
                    if emit is None:
                        emit, dec_ms = (k + 1) * 0.02, dt * 1000
        tail = s.finish()
        finals += [e for e in tail if getattr(e, "is_final", False) and e.text]
        texts[name] = " ".join(e.text for e in finals)
        energy_end = 0.5 + p["speech_end"] / SR
        d: dict[str, Any] = {"finals": len(finals), "speech_s": (p["speech_end"] - p["speech_start"]) / SR,
                             "decode_cpu_s": busy, "energy_end_s": energy_end}
        if emit is not None and finals[0].speech_end is not None:
            d["endpoint_wait_ms"] = (emit - finals[0].speech_end) * 1000  # audio time: end of word -> final out
            d["word_end_minus_energy_end_ms"] = (finals[0].speech_end - energy_end) * 1000
            d["final_frame_decode_ms"] = dec_ms  # CPU of the frame that produced the final (end_utt)
        detail[name] = d
    return texts, detail


def wer(ref: str, hyp: str) -> float:
    r, h = ref.split(), hyp.split()
    if not r:
        return 0.0 if not h else 1.0
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)] / len(r)


# --------------------------------------------------------------------------
# process tree CPU


def _stat(pid: int) -> tuple[int, str, float] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1: raw.rindex(")")]
    fields = raw.rsplit(")", 1)[1].split()
    return int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / egress_run.CLK_TCK


def tree_cpu(root: int) -> dict[int, dict[str, Any]]:
    """``{pid: {kind, cpu_s}}`` for ``root`` and all its descendants."""
    info = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            s = _stat(int(d))
            if s:
                info[int(d)] = s
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in info.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid not in info:
            continue
        todo.extend(kids.get(pid, ()))
        kind = "bridge" if pid == root else info[pid][1]
        if pid != root:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"local_asr.worker" in f.read():
                        kind = "asr_worker"
            except OSError:
                pass
            if kind not in ("asr_worker",):
                kind = "apertium"  # bash + apertium/lt-proc/cg-proc... stages
        out[pid] = {"kind": kind, "cpu_s": info[pid][2]}
    return out


def tree_delta(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]]) -> dict[str, float]:
    by: dict[str, float] = {}
    for pid, v in b.items():
        by[v["kind"]] = by.get(v["kind"], 0.0) + v["cpu_s"] - (a[pid]["cpu_s"] if pid in a else 0.0)
    return by


def wait_quiet(pid: int, timeout: float = 20.0, below: float = 0.05) -> float:
    """Wait until the bridge tree idles (warm-up done); returns seconds waited."""
    t0 = time.monotonic()
    prev = sum(v["cpu_s"] for v in tree_cpu(pid).values())
    quiet = 0
    while time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        cur = sum(v["cpu_s"] for v in tree_cpu(pid).values())
        quiet = quiet + 1 if (cur - prev) / 0.5 < below else 0
        prev = cur
        if quiet >= 2:
            break
    return time.monotonic() - t0


# --------------------------------------------------------------------------
# one point


def pairs_for(n: int, base: int) -> list[dict[str, Any]]:
    if n == 1:
        return [{"speaker_ext": "7777", "listener_ext": "8888", "speaker_port": base, "listener_port": base + 1}]
    return [{"speaker_ext": str(base + 2 * k), "listener_ext": str(base + 2 * k + 1),
             "speaker_port": base + 2 * k, "listener_port": base + 2 * k + 1} for k in range(n)]


def ports_arg(pairs: list[dict[str, Any]]) -> str:
    if pairs[0]["speaker_ext"] == "7777":
        return f"7777={pairs[0]['speaker_port']},8888={pairs[0]['listener_port']}"
    return f"{pairs[0]['speaker_port']}-{pairs[-1]['listener_port']}"


def run_point(kind: str, backend: str, n: int, ns: argparse.Namespace, tmp: str, tag: str,
              lengths: dict[str, int]) -> dict[str, Any]:
    procs = egress_run.Procs()
    pairs = pairs_for(n, ns.base_port)
    lo, hi = ns.base_port, ns.base_port + 2 * n - 1
    egress_run.wait_ports_free(lo, hi)
    cycle = sum(lengths.values()) / len(lengths) / SR + ns.gap
    for k, p in enumerate(pairs):
        order = PROMPTS[k % len(PROMPTS):] + PROMPTS[: k % len(PROMPTS)]
        if kind == "latency":
            p["schedule"] = schedule(lengths, order, ns.lead, ns.gap, count=ns.utterances + ns.warmup_utterances)
        else:
            lead = ns.lead + (k * cycle / n if n > 1 else 0.0)
            p["schedule"] = schedule(lengths, order, lead, ns.gap, until_s=ns.seconds)
    duration = pairs[0]["schedule"]["samples"] / SR
    cfg = os.path.join(tmp, f"{tag}.toml")
    with open(cfg, "w") as f:
        if backend != "relay":
            f.write(f'[local_asr]\nbackend = "{"thread" if backend == "thread" else "process"}"\n')
    events_path = os.path.join(tmp, f"{tag}.events.jsonl")
    pcap = os.path.join(tmp, f"{tag}.pcap")
    phones_out = os.path.join(tmp, f"{tag}.phones.json")
    spec = {"pairs": pairs, "tail_s": 2.0, "out": phones_out}
    spec_path = os.path.join(tmp, f"{tag}.spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    log = open(os.path.join(ns.out, f"local_bench-{tag}.log"), "w")  # noqa: SIM115 (closed in finally)
    plog = open(os.path.join(ns.out, f"local_bench-{tag}.phones.log"), "w")  # noqa: SIM115
    argv = ["taskset", "-c", str(BRIDGE_CORE), egress_run.twistd(), "-n", "--pidfile=", "xlbridge",
            "--ports", ports_arg(pairs), "--langs", "en,es", "--engines", "relay" if backend == "relay" else "local",
            "--config", cfg,
            "--events", events_path]
    res: dict[str, Any] = {"kind": kind, "backend": backend, "pairs": n, "tag": tag, "bridge_argv": argv[3:],
                           "duration_s": duration}
    try:
        t_launch = time.monotonic()
        br = procs.start(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        egress_run.wait_bound(br, lo, hi, timeout=60)
        res["quiet_wait_s"] = wait_quiet(br.pid)
        res["startup_s"] = time.monotonic() - t_launch
        workers = [pid for pid, v in tree_cpu(br.pid).items() if v["kind"] == "asr_worker"]
        res["asr_workers"] = len(workers)
        if backend == "process-w0":
            for pid in workers:
                os.sched_setaffinity(pid, {OTHER_CORE})
        res["affinity"] = {v["kind"] + ("" if v["kind"] != "asr_worker" else f"[{pid}]"):
                           sorted(os.sched_getaffinity(pid)) for pid, v in tree_cpu(br.pid).items()
                           if v["kind"] in ("bridge", "asr_worker")}
        tcpd = tcpd_err = None
        if kind == "concurrency":
            tcpd, tcpd_err = egress_run.start_tcpdump(procs, pcap, lo, hi)
        socks0 = analyse.udp_socket_stats(lo, hi)
        ph = procs.start(["taskset", "-c", str(OTHER_CORE), sys.executable, os.path.abspath(__file__),
                          "--phones", spec_path], stdout=subprocess.PIPE, stderr=plog, text=True, cwd=ROOT)
        first = egress_run.read_line(ph, 60.0)
        if not first.startswith("started "):
            raise RuntimeError(f"phones: unexpected output {first!r}")
        t0 = float(first.split()[1])
        skip = ns.cpu_skip
        time.sleep(max(0.0, t0 + skip - time.time()))
        c0, w0, s0 = tree_cpu(br.pid), time.monotonic(), egress_run.proc_schedstat(br.pid)
        time.sleep(max(0.0, t0 + duration - 0.5 - time.time()))
        c1, w1, s1 = tree_cpu(br.pid), time.monotonic(), egress_run.proc_schedstat(br.pid)
        st = egress_run.proc_status(br.pid)
        wrss = 0
        for pid, v in c1.items():
            if v["kind"] == "asr_worker":
                try:
                    wrss += egress_run.proc_status(pid).get("VmRSS", 0)
                except OSError:
                    pass
        ph.communicate(timeout=duration + 60)
        socks1 = analyse.udp_socket_stats(lo, hi)
        if tcpd is not None:
            egress_run.Procs.stop(tcpd, signal.SIGINT)
            tcpd_err.join(5)
            res["tcpdump"] = egress_run.tcpdump_counts(tcpd_err.lines)
        res["bridge_rc"] = egress_run.Procs.stop(br, signal.SIGTERM, timeout=15)
    finally:
        procs.stop_all()
        log.close()
        plog.close()
    window = w1 - w0
    cpu = tree_delta(c0, c1)
    total = sum(cpu.values())
    res.update({
        "window_s": window,
        "cpu_s_by_kind": cpu,
        "cpu_core_bridge": cpu.get("bridge", 0.0) / window,
        "cpu_core_tree": total / window,
        "cpu_s_per_call_min_bridge": cpu.get("bridge", 0.0) / (n * window / 60),
        "cpu_s_per_call_min_tree": total / (n * window / 60),
        "run_delay_ms_per_s": (s1[1] - s0[1]) * 1000 / window,
        "rss_mb_bridge": st.get("VmRSS", 0) / 1024,
        "rss_mb_workers": wrss / 1024,
        "rx_drops": socks1["drops"] - socks0["drops"],
    })
    with open(phones_out) as f:
        phones = json.load(f)
    events = list(read_events(str(events_path)))  # a killed bridge's partial last line is skipped
    res["utterances"] = match_events(phones, events, ns.refs, warmup=ns.warmup_utterances if kind == "latency" else 0)
    res["phones"] = [{k: v for k, v in p.items() if k != "prompts"} for p in phones["pairs"]]
    res["event_counts"] = {}
    for e in events:
        res["event_counts"][e["event"]] = res["event_counts"].get(e["event"], 0) + 1
    res["engine_down"] = [e for e in events if e["event"] == "EngineStatusEvent"][:10]
    res["dropped_all"] = [e for e in events if e["event"] == "UtteranceDropped"]
    if kind == "concurrency":
        streams, info = analyse.read_pcap(pcap, lo, hi)
        res["egress"] = analyse.analyse(streams, ns.warmup)
        res["egress_incl_start"] = analyse.analyse(streams, 1.0)
        res["egress"]["pcap"] = info
        if ns.keep_pcap:
            shutil.copy(pcap, os.path.join(ns.out, os.path.basename(pcap)))
        os.unlink(pcap)
    with open(os.path.join(ns.out, f"local_bench-{tag}.log")) as f:
        bad = [line.rstrip() for line in f if "#warn]" in line or "#error]" in line or "Traceback" in line]
    res["log_warnings"] = len(bad)
    res["log_warning_samples"] = [b for b in bad if "no local ASR model" not in b and "no model for es" not in b][:12]
    res["summary"] = summarise_point(res)
    shutil.copy(events_path, os.path.join(ns.out, f"local_bench-{tag}.events.jsonl"))
    return res


def match_events(phones: dict[str, Any], events: list[dict[str, Any]], refs: dict[str, str],
                 warmup: int = 0) -> list[dict[str, Any]]:
    """One row per spoken prompt: finals and playbacks attributed to it by their speech-end time."""
    rows = []
    for pair in phones["pairs"]:
        ext = pair["speaker_ext"]
        prompts = [p for p in pair["prompts"] if p["t_start"] is not None and p["t_end"] is not None]
        finals = [e for e in events if e["event"] == "TranscriptEvent" and e["is_final"] and e["text"]
                  and e["extension"] == ext and e.get("asr_ms") is not None]
        plays = [e for e in events if e["event"] == "PlaybackStarted" and e["speaker"] == ext
                 and e.get("total_ms") is not None]
        ended = {e["utterance"]: e["duration_ms"] for e in events
                 if e["event"] == "PlaybackEnded" and e["speaker"] == ext}

        def owner(t_end: float, prompts: list[dict[str, Any]] = prompts) -> int | None:
            for i, p in enumerate(prompts):
                if p["t_start"] - 0.3 <= t_end <= p["t_end"] + 0.6:
                    return i
            return None

        mine: dict[int, dict[str, list[Any]]] = {i: {"finals": [], "plays": []} for i in range(len(prompts))}
        stray = 0
        for e in finals:
            i = owner(e["time"] - e["asr_ms"] / 1000)
            if i is None:
                stray += 1
            else:
                mine[i]["finals"].append(e)
        for e in plays:
            i = owner(e["time"] - e["total_ms"] / 1000)
            if i is not None:
                mine[i]["plays"].append(e)
        for i, p in enumerate(prompts):
            fs = sorted(mine[i]["finals"], key=lambda e: e["time"])
            ps = mine[i]["plays"]
            text = " ".join(e["text"] for e in fs)
            row = {"speaker": ext, "prompt": p["name"], "index": i, "warmup": i < warmup,
                   "t_end": p["t_end"], "finals": len(fs), "text": text,
                   "wer": wer(refs.get(p["name"], ""), text) if fs else None,
                   "same_as_offline": text == refs.get(p["name"]), "segments_played": len(ps),
                   "speech_ms": (p["t_end"] - p["t_start"]) * 1000,
                   "playback_ms": sum(ended.get(e["utterance"], 0.0) for e in ps) if ps else None,
                   "stray_finals": stray if i == 0 else 0}
            if fs:
                row["asr_ms_last_final"] = fs[-1]["asr_ms"]
            if ps:
                # the playback of the utterance's last segment: its speech end is the latest
                last = max(ps, key=lambda e: e["time"] - e["total_ms"] / 1000)
                for k in ("total_ms", "asr_ms", "mt_ms", "tts_first_byte_ms", "queue_wait_ms"):
                    row[k] = last.get(k)
                parts = [last.get(k) for k in ("asr_ms", "mt_ms", "tts_first_byte_ms", "queue_wait_ms")]
                row["other_ms"] = (last["total_ms"] - sum(parts)) if None not in parts else None
                row["external_total_ms"] = (last["time"] - p["t_end"]) * 1000
                row["total_minus_queue_ms"] = (last["total_ms"] - last["queue_wait_ms"]
                                               if last.get("queue_wait_ms") is not None else None)
                row["text_heard"] = last["text"]
            rows.append(row)
    return rows


def stats(vals: list[float | None]) -> dict[str, Any]:
    v = sorted(x for x in vals if x is not None)
    if not v:
        return {"n": 0}
    return {"n": len(v), "p50": analyse.pct(v, 50), "p95": analyse.pct(v, 95), "max": v[-1],
            "mean": sum(v) / len(v)}


STAGES = ("total_ms", "asr_ms", "mt_ms", "tts_first_byte_ms", "queue_wait_ms", "other_ms", "external_total_ms",
          "total_minus_queue_ms")


def summarise_point(res: dict[str, Any]) -> dict[str, Any]:
    # every scheduled prompt ends >= 3 s before its phone stops sending
    us = spoken = [u for u in res["utterances"] if not u["warmup"]]
    out: dict[str, Any] = {
        "spoken": len(spoken),
        "recognised": sum(1 for u in spoken if u["finals"]),
        "played": sum(1 for u in spoken if u.get("total_ms") is not None),
        "same_as_offline": sum(1 for u in spoken if u["same_as_offline"]),
        "wer_vs_offline_mean": (sum(u["wer"] for u in spoken if u["wer"] is not None)
                                / sum(1 for u in spoken if u["wer"] is not None))
        if any(u["wer"] is not None for u in spoken) else None,
        "stray_finals": sum(u["stray_finals"] for u in us),
        "dropped_backlog": sum(1 for e in res.get("dropped_all", []) if e.get("reason") == "backlog"),
        "playback_over_speech": (sum(u["playback_ms"] for u in spoken if u.get("playback_ms"))
                                 / max(1e-9, sum(u["speech_ms"] for u in spoken if u.get("playback_ms"))))
        if any(u.get("playback_ms") for u in spoken) else None,
        "cpu_core_bridge": res["cpu_core_bridge"],
        "cpu_core_tree": res["cpu_core_tree"],
        "cpu_s_per_call_min_bridge": res["cpu_s_per_call_min_bridge"],
        "cpu_s_per_call_min_tree": res["cpu_s_per_call_min_tree"],
        "cpu_s_by_kind": res["cpu_s_by_kind"],
    }
    for k in STAGES:
        out[k] = stats([u.get(k) for u in spoken])
    out["asr_ms_last_final"] = stats([u.get("asr_ms_last_final") for u in spoken])
    if "egress" in res:
        e, e1 = res["egress"], res["egress_incl_start"]
        out["egress_p50_ms"] = e["interval_error_ms"]["p50"]
        out["egress_p99_ms"] = e["interval_error_ms"]["p99"]
        out["egress_p999_ms"] = e["interval_error_ms"]["p99.9"]
        out["egress_max_ms"] = e["interval_error_ms"]["max"]
        out["egress_p99_incl_start_ms"] = e1["interval_error_ms"]["p99"]
        out["egress_max_incl_start_ms"] = e1["interval_error_ms"]["max"]
        out["late_intervals"] = e["late_intervals"]
        out["short_intervals"] = e["short_intervals"]
        out["missed_intervals"] = max(e["clock_missed_intervals"], e["ts_missed_intervals"])
        out["seq_lost"] = e["seq_lost"]
    return out


# --------------------------------------------------------------------------
# aggregation and output


def med(vals: list[Any]) -> Any:
    v = sorted(x for x in vals if x is not None)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def fmt(v: Any, spec: str = ".0f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def latency_tables(runs: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    lines, rows = [], []
    for backend in BACKENDS:
        rs = [r for r in runs if r["kind"] == "latency" and r["backend"] == backend]
        if not rs:
            continue
        us = [u for r in rs for u in r["utterances"] if not u["warmup"]]
        row = {"backend": backend, "runs": len(rs), "utterances": len(us),
               "recognised": sum(1 for u in us if u["finals"]),
               "played": sum(1 for u in us if u.get("total_ms") is not None),
               "same_as_offline": sum(1 for u in us if u["same_as_offline"]),
               "total_ms_p50_per_run": [r["summary"]["total_ms"].get("p50") for r in rs],
               "cpu_s_per_call_min_tree_per_run": [r["cpu_s_per_call_min_tree"] for r in rs],
               "cpu_s_per_call_min_bridge_per_run": [r["cpu_s_per_call_min_bridge"] for r in rs],
               "cpu_s_by_kind_per_min": [{k: v / (r["window_s"] / 60) for k, v in r["cpu_s_by_kind"].items()}
                                         for r in rs],
               "window_s": [r["window_s"] for r in rs],
               "playback_over_speech": [r["summary"]["playback_over_speech"] for r in rs],
               "dropped_backlog": sum(r["summary"]["dropped_backlog"] for r in rs)}
        for k in STAGES:
            row[k] = stats([u.get(k) for u in us])
        rows.append(row)
    if rows:
        lines.append("| backend | stage | n | p50 ms | p95 ms | max ms | mean ms |")
        lines.append("|---|---|---|---|---|---|---|")
        for row in rows:
            for k in STAGES:
                s = row[k]
                lines.append(f"| {row['backend']} | {k} | {s['n']} | {fmt(s.get('p50'))} | {fmt(s.get('p95'))} | "
                             f"{fmt(s.get('max'))} | {fmt(s.get('mean'))} |")
        lines.append("")
        lines.append("| backend | runs | utterances | recognised | played | same text as offline | "
                     "total p50 per run | translated speech / original speech | dropped (backlog) | "
                     "CPU s per call-min, tree (runs) | of which bridge process (runs) | window s |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for row in rows:
            lines.append(
                f"| {row['backend']} | {row['runs']} | {row['utterances']} | {row['recognised']} | {row['played']} | "
                f"{row['same_as_offline']} | {', '.join(fmt(x) for x in row['total_ms_p50_per_run'])} | "
                f"{', '.join(fmt(x, '.2f') for x in row['playback_over_speech'])} | {row['dropped_backlog']} | "
                f"**{fmt(med(row['cpu_s_per_call_min_tree_per_run']), '.2f')}** "
                f"({', '.join(fmt(x, '.2f') for x in row['cpu_s_per_call_min_tree_per_run'])}) | "
                f"{fmt(med(row['cpu_s_per_call_min_bridge_per_run']), '.2f')} "
                f"({', '.join(fmt(x, '.2f') for x in row['cpu_s_per_call_min_bridge_per_run'])}) | "
                f"{', '.join(fmt(x, '.0f') for x in row['window_s'])} |")
        lines.append("")
        lines.append("CPU seconds per call-minute by process (per run):")
        for row in rows:
            for d in row["cpu_s_by_kind_per_min"]:
                lines.append(f"- {row['backend']}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(d.items())))
    return "\n".join(lines), rows


def concurrency_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(r["backend"], r["pairs"]) for r in runs if r["kind"] == "concurrency"},
                  key=lambda k: (BACKENDS.index(k[0]), k[1]))
    for backend, n in keys:
        rs = [r for r in runs if r["kind"] == "concurrency" and r["backend"] == backend and r["pairs"] == n]
        ss = [r["summary"] for r in rs]
        us = [u for r in rs for u in r["utterances"]]
        row = {"backend": backend, "pairs": n, "runs": len(rs),
               "egress_p99_ms": med([s["egress_p99_ms"] for s in ss]),
               "egress_p99_ms_all": [s["egress_p99_ms"] for s in ss],
               "egress_p999_ms": med([s["egress_p999_ms"] for s in ss]),
               "egress_max_ms": max(s["egress_max_ms"] for s in ss),
               "egress_p99_incl_start_ms": med([s["egress_p99_incl_start_ms"] for s in ss]),
               "egress_max_incl_start_ms": max(s["egress_max_incl_start_ms"] for s in ss),
               "late_short": (max(s["late_intervals"] for s in ss), max(s["short_intervals"] for s in ss)),
               "missed_intervals": max(s["missed_intervals"] for s in ss),
               "spoken": sum(s["spoken"] for s in ss), "recognised": sum(s["recognised"] for s in ss),
               "played": sum(s["played"] for s in ss), "same_as_offline": sum(s["same_as_offline"] for s in ss),
               "wer_vs_offline_mean": med([s["wer_vs_offline_mean"] for s in ss]),
               "total_ms": stats([u.get("total_ms") for u in us]),
               "asr_ms": stats([u.get("asr_ms") for u in us]),
               "queue_wait_ms": stats([u.get("queue_wait_ms") for u in us]),
               "total_minus_queue_ms": stats([u.get("total_minus_queue_ms") for u in us]),
               "dropped_backlog": sum(s["dropped_backlog"] for s in ss),
               "cpu_core_tree": med([s["cpu_core_tree"] for s in ss]),
               "cpu_core_bridge": med([s["cpu_core_bridge"] for s in ss]),
               "cpu_core_worker": med([r["cpu_s_by_kind"].get("asr_worker", 0.0) / r["window_s"] for r in rs]),
               "cpu_s_per_call_min_tree": med([s["cpu_s_per_call_min_tree"] for s in ss]),
               "run_delay_ms_per_s": med([r["run_delay_ms_per_s"] for r in rs]),
               "rss_mb_bridge": med([r["rss_mb_bridge"] for r in rs]),
               "rss_mb_workers": med([r["rss_mb_workers"] for r in rs]),
               "rx_drops": max(r["rx_drops"] for r in rs)}
        row["meets_p99"] = row["egress_p99_ms"] is not None and row["egress_p99_ms"] <= 1.0
        rows.append(row)
    return rows


def concurrency_table(rows: list[dict[str, Any]]) -> str:
    head = ("| backend | N | runs | egress p99 ms (runs) | p99.9 | max | p99 incl. call start | late/burst | "
            "spoken / recognised / played | same text as offline | WER vs offline | total_ms p50 / p95 | "
            "total − queue p50 / p95 | asr_ms p50 / p95 | dropped (backlog) | CPU core: tree (bridge + worker) | "
            "CPU s per call-min | run-delay ms/s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['pairs']} | {r['runs']} | **{fmt(r['egress_p99_ms'], '.2f')}** "
            f"({', '.join(fmt(x, '.2f') for x in r['egress_p99_ms_all'])}) | {fmt(r['egress_p999_ms'], '.1f')} | "
            f"{fmt(r['egress_max_ms'], '.1f')} | {fmt(r['egress_p99_incl_start_ms'], '.2f')} | "
            f"{r['late_short'][0]}/{r['late_short'][1]} | {r['spoken']} / {r['recognised']} / {r['played']} | "
            f"{r['same_as_offline']} | {fmt(r['wer_vs_offline_mean'], '.2f')} | "
            f"{fmt(r['total_ms'].get('p50'))} / {fmt(r['total_ms'].get('p95'))} | "
            f"{fmt(r['total_minus_queue_ms'].get('p50'))} / {fmt(r['total_minus_queue_ms'].get('p95'))} | "
            f"{fmt(r['asr_ms'].get('p50'))} / {fmt(r['asr_ms'].get('p95'))} | {r['dropped_backlog']} | "
            f"{fmt(r['cpu_core_tree'], '.2f')} ({fmt(r['cpu_core_bridge'], '.2f')} + {fmt(r['cpu_core_worker'], '.2f')}) | "
            f"{fmt(r['cpu_s_per_call_min_tree'], '.1f')} | {fmt(r['run_delay_ms_per_s'], '.1f')} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"relay": ("k", "x", "control: --engines relay (no engines)"),
              "thread": ("tab:red", "^", "thread backend (all on core 1)"),
              "process": ("tab:blue", "s", "process backend (all on core 1)"),
              "process-w0": ("tab:green", "o", "process backend, ASR worker on core 0")}
    for backend in BACKENDS:
        rs = [r for r in rows if r["backend"] == backend]
        if not rs:
            continue
        color, marker, label = styles[backend]
        xs = [r["pairs"] for r in rs]
        ys = [r["egress_p99_ms"] for r in rs]
        lo = [y - min(r["egress_p99_ms_all"]) for y, r in zip(ys, rs)]
        hi = [max(r["egress_p99_ms_all"]) - y for y, r in zip(ys, rs)]
        ax1.errorbar(xs, ys, yerr=[lo, hi], color=color, marker=marker, label=label, capsize=3)
        if backend == "relay":
            continue
        ax2.plot(xs, [r["total_ms"].get("p50", float("nan")) for r in rs], color=color, marker=marker,
                 label=label + ", p50")
        ax2.plot(xs, [r["total_ms"].get("p95", float("nan")) for r in rs], color=color, marker=marker, ls=":",
                 label="p95")
    ax1.axhline(1.0, color="k", ls="--", label="target p99 ≤ 1 ms")
    ax1.set_yscale("log")
    ax1.set_xlabel("concurrent translated calls N")
    ax1.set_ylabel("p99 |egress interval − 20 ms| (ms)")
    ax1.set_title("egress timing (kernel timestamps, tcpdump on lo)")
    ax2.axhline(400, color="k", ls="--", label="target p50 ≤ 400 ms")
    top = 2500
    ax2.set_ylim(0, top)
    for r in rows:
        for key in ("p50", "p95"):
            v = r["total_ms"].get(key)
            if v is not None and v > top:
                ax2.annotate(f"{r['backend']} N={r['pairs']} {key} {v:.0f} ms ↑", (r["pairs"], top),
                             xytext=(r["pairs"] - 2.5, top * (0.93 if key == "p95" else 0.86)), fontsize=7,
                             arrowprops={"arrowstyle": "->", "lw": 0.6})
    ax2.set_xlabel("concurrent translated calls N")
    ax2.set_ylabel("end of speech → first translated packet (ms)")
    ax2.set_title("total_ms per utterance")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def code_identity() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        out["head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=ROOT, check=False).stdout.strip()
        out["dirty"] = subprocess.run(["git", "status", "--porcelain", "--", "xlbridge"], capture_output=True,
                                      text=True, cwd=ROOT, check=False).stdout.split("\n")
    except OSError:
        pass
    return out


def _other_benches() -> list[tuple[int, str, bool]]:
    """Other bench/*.py processes: (pid, command, has child processes, i.e. is measuring rather than waiting)."""
    r = subprocess.run(["pgrep", "-af", r"bench/[A-Za-z0-9_]+\.py"], capture_output=True, text=True, check=False)
    procs = []
    for line in r.stdout.splitlines():
        pid_s, _, cmd = line.partition(" ")
        if "local_bench.py" not in cmd and pid_s.isdigit():
            procs.append((int(pid_s), cmd))
    parents = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st and not st[1].startswith("pgrep"):
                parents.add(st[0])
    return [(pid, cmd, pid in parents or "--run-one" in cmd) for pid, cmd in procs]


def wait_for_other_bench(max_wait_s: float, poll_s: float = 30.0) -> float:
    """
    Wait while another bench/*.py is measuring (it has child processes).  A
    bench that is itself only waiting (no children; e.g. pipeline_latency.py
    waits for every other bench/*.py, this one included) does not count,
    or the two would wait for each other.  Five clean checks 1 s apart.
    """
    t0 = time.monotonic()
    if max_wait_s <= 0:
        return 0.0
    clean = 0
    while time.monotonic() - t0 < max_wait_s:
        busy = [(pid, cmd[:80]) for pid, cmd, measuring in _other_benches() if measuring]
        if not busy:
            clean += 1
            if clean >= 5:
                return time.monotonic() - t0
            time.sleep(1.0)
            continue
        clean = 0
        print(f"{time.strftime('%H:%M:%S')} waiting for other benchmarks: {busy}", flush=True)
        time.sleep(poll_s)
    raise SystemExit("other benchmarks still running; giving up")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phones", help=argparse.SUPPRESS)
    ap.add_argument("--utterances", type=int, default=20, help="measured utterances per latency run (default 20)")
    ap.add_argument("--warmup-utterances", type=int, default=1)
    ap.add_argument("--ns", default="1,2,4", help="concurrent pairs for the concurrency runs (default 1,2,4)")
    ap.add_argument("--seconds", type=float, default=40.0, help="seconds per concurrency point (default 40)")
    ap.add_argument("--backends", default=None,
                    help="subset of thread,process,process-w0 (default: every one this xlbridge has)")
    ap.add_argument("--latency-backends", default=None, help="backends for the latency runs (default: --backends "
                    "without process-w0)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per point (default 1)")
    ap.add_argument("--points", default=None,
                    help="instead of --ns x --backends: 'backend:n,n;backend:n' (e.g. 'relay:1,4;process:1,2,4')")
    ap.add_argument("--repeat-points", default=None,
                    help="points run once more after every --repeats pass, same syntax as --points")
    ap.add_argument("--sweep-windows", default="0.2,0.15",
                    help="offline only: endpointer windows to compare with the default 0.3 s")
    ap.add_argument("--latency-repeats", type=int, default=1)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-concurrency", action="store_true")
    ap.add_argument("--gap", type=float, default=1.5, help="silence between utterances, s (default 1.5)")
    ap.add_argument("--lead", type=float, default=2.0, help="silence before the first utterance, s")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds dropped at each egress stream's start")
    ap.add_argument("--cpu-skip", type=float, default=2.0)
    ap.add_argument("--base-port", type=int, default=21000)
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--no-publish", action="store_true")
    ap.add_argument("--tag-suffix", default="", help="appended to every run tag (e.g. -b for a second batch)")
    ap.add_argument("--merge", action="append", default=[], metavar="JSON",
                    help="also tabulate the runs of an earlier local_bench.json (repeatable)")
    ap.add_argument("--drop-tags", default="", help="comma-separated run tags of --merge files to leave out")
    ap.add_argument("--drop-reason", default="", help="why --drop-tags were left out (kept in the JSON)")
    ap.add_argument("--keep-pcap", action="store_true")
    ap.add_argument("--wait-other", type=float, default=1800.0, help="wait up to this for other benchmarks")
    ns = ap.parse_args(argv)
    if ns.phones:
        return phones_main(ns.phones)

    from xlbridge.engines.local_asr import settings as local_asr

    has_backend = "backend" in {f.name for f in __import__("attrs").fields(local_asr.LocalASRSettings)}
    available = list(BACKENDS) if has_backend else ["relay", "thread"]
    backends = [b.strip() for b in (ns.backends or ",".join(available)).split(",") if b.strip()]
    for b in backends:
        if b not in available:
            ap.error(f"backend {b} is not available in this xlbridge (available: {', '.join(available)})")
    lat_backends = [b.strip() for b in (ns.latency_backends or ",".join(x for x in backends
                                                                       if x not in ("process-w0", "relay")))
                    .split(",") if b.strip()]
    ns_list = [int(x) for x in ns.ns.split(",") if x.strip()]
    ns.sweep_windows = [float(x) for x in ns.sweep_windows.split(",") if x.strip()]
    ns.drop_tags = [x.strip() for x in ns.drop_tags.split(",") if x.strip()]
    os.makedirs(ns.out, exist_ok=True)
    os.sched_setaffinity(0, {OTHER_CORE})
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(SystemExit(128 + s)))
    info = egress_run.machine()
    info["command"] = " ".join(["python", "bench/local_bench.py"] + (argv if argv is not None else sys.argv[1:]))
    info["code"] = code_identity()
    info["backends_available"] = available
    waited = wait_for_other_bench(ns.wait_other)
    info["waited_for_other_bench_s"] = waited
    info["loadavg_at_start"] = os.getloadavg()
    info["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    t_all = time.monotonic()
    lengths = {n: load_prompt(n)["samples"] for n in PROMPTS}
    t = time.monotonic()
    ns.refs, ref_detail = reference_texts()
    print(f"offline reference transcripts ({time.monotonic() - t:.1f} s):", flush=True)
    for k, v in ns.refs.items():
        d = ref_detail[k]
        print(f"  {k}: {v!r}  [endpoint wait {fmt(d.get('endpoint_wait_ms'))} ms, word end - energy end "
              f"{fmt(d.get('word_end_minus_energy_end_ms'))} ms, end_utt frame {fmt(d.get('final_frame_decode_ms'), '.1f')} ms, "
              f"decode {d['decode_cpu_s'] / d['speech_s']:.2f} x speech]")
    info["offline_asr"] = {"endpoint_wait_ms": stats([d.get("endpoint_wait_ms") for d in ref_detail.values()]),
                           "final_frame_decode_ms": stats([d.get("final_frame_decode_ms") for d in ref_detail.values()]),
                           "word_end_minus_energy_end_ms": stats([d.get("word_end_minus_energy_end_ms")
                                                                  for d in ref_detail.values()]),
                           "decode_cpu_per_speech_s": sum(d["decode_cpu_s"] for d in ref_detail.values())
                           / sum(d["speech_s"] for d in ref_detail.values())}
    print(f"offline ASR: {json.dumps(info['offline_asr'])}", flush=True)
    info["offline_endpoint_sweep"] = {}
    for w in ns.sweep_windows:
        texts, det = reference_texts(w, 0.9)
        info["offline_endpoint_sweep"][str(w)] = {
            "endpoint_wait_ms": stats([d.get("endpoint_wait_ms") for d in det.values()]),
            "same_text_as_default": sum(texts[k] == ns.refs[k] for k in texts), "prompts": len(texts)}
        print(f"offline endpoint_window_s={w}: {json.dumps(info['offline_endpoint_sweep'][str(w)])}", flush=True)
    tmp = tempfile.mkdtemp(prefix="xllocal-")
    runs: list[dict[str, Any]] = []
    plan: list[tuple[str, str, int, int]] = []
    if not ns.skip_latency:
        for rep in range(ns.latency_repeats):
            for b in lat_backends:
                plan.append(("latency", b, 1, rep))
    def parse_points(text: str) -> list[tuple[str, int]]:
        pts = []
        for group in text.split(";"):
            if group.strip():
                b, _, nums = group.partition(":")
                b = b.strip()
                if b not in available:
                    ap.error(f"backend {b} is not available (available: {', '.join(available)})")
                pts += [(b, int(x)) for x in nums.split(",") if x.strip()]
        return pts

    points = parse_points(ns.points) if ns.points else [(b, n) for n in ns_list for b in backends]
    if not ns.skip_concurrency:
        for rep in range(ns.repeats):
            pts = sorted(points, key=lambda p: (p[1], (BACKENDS.index(p[0]) + rep) % len(BACKENDS)))
            plan += [("concurrency", b, n, rep) for b, n in pts]
        if ns.repeat_points:
            plan += [("concurrency", b, n, ns.repeats) for b, n in sorted(parse_points(ns.repeat_points),
                                                                          key=lambda p: (p[1], p[0]))]
    try:
        for i, (kind, b, n, rep) in enumerate(plan, 1):
            tag = f"{kind}-{b}-n{n}-r{rep}{ns.tag_suffix}"
            r = run_point(kind, b, n, ns, tmp, tag, lengths)
            r["repeat"] = rep
            runs.append(r)
            s = r["summary"]
            eg = f"egress p99 {s['egress_p99_ms']:.2f} ms (incl. start {s['egress_p99_incl_start_ms']:.2f}), " \
                if "egress_p99_ms" in s else ""
            print(f"[{i}/{len(plan)}] {tag}: {eg}spoken {s['spoken']} recognised {s['recognised']} "
                  f"played {s['played']}, total_ms p50 {fmt(s['total_ms'].get('p50'))} "
                  f"p95 {fmt(s['total_ms'].get('p95'))}, asr p50 {fmt(s['asr_ms'].get('p50'))}, "
                  f"cpu tree {s['cpu_core_tree']:.2f} core (bridge {s['cpu_core_bridge']:.2f}), "
                  f"{s['cpu_s_per_call_min_tree']:.1f} CPU-s/call-min, affinity {r['affinity']}, "
                  f"t {time.monotonic() - t_all:.0f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["wall_s"] = time.monotonic() - t_all
    excluded: list[dict[str, Any]] = []
    merged_from: list[dict[str, Any]] = []
    for path in ns.merge:
        with open(path) as f:
            prev = json.load(f)
        drop = set(ns.drop_tags)
        keep = [r for r in prev["runs"] if r["tag"] not in drop]
        excluded += [{"tag": r["tag"], "source": path, "reason": ns.drop_reason, "summary": r["summary"]}
                     for r in prev["runs"] if r["tag"] in drop]
        excluded += prev.get("excluded_runs", [])
        merged_from.append({"file": path, "machine": prev["machine"], "kept": [r["tag"] for r in keep]})
        runs = keep + runs
    lat_text, lat_rows = latency_tables(runs)
    conc = concurrency_rows(runs)
    config = {k: v for k, v in vars(ns).items() if k not in ("refs", "phones")}
    result = {"machine": info, "merged_from": merged_from, "excluded_runs": excluded,
              "config": config, "prompts": PROMPTS, "reference_texts": ns.refs,
              "reference_detail": ref_detail,
              "latency": lat_rows, "concurrency": conc, "runs": runs}
    out_json = os.path.join(ns.out, "local_bench.json")
    with open(out_json, "w") as f:
        json.dump(result, f, indent=1)
    print()
    if lat_text:
        print("## Latency (end of speech -> first translated packet), one call\n")
        print(lat_text)
        print()
    if conc:
        print("## Concurrency (bridge on core 1)\n")
        print(concurrency_table(conc))
    png = None
    if conc:
        try:
            png = os.path.join(ns.out, "local_bench.png")
            plot(conc, png, f"{info['date']}  {info['cpu_model']} ({info['nproc']} cores); bridge on core "
                            f"{BRIDGE_CORE}, phones + tcpdump on core {OTHER_CORE}; {ns.seconds:g} s per point")
        except ImportError:
            png = None
            print("(matplotlib not installed: no plot)")
    print(f"\nwrote {out_json}; wall {info['wall_s']:.0f} s")
    if not ns.no_publish:
        dest = os.path.join(HERE, "results")
        os.makedirs(dest, exist_ok=True)
        shutil.copy(out_json, os.path.join(dest, "local_bench.json"))
        if png:
            shutil.copy(png, os.path.join(dest, "local_bench.png"))
        print(f"published to {dest}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
