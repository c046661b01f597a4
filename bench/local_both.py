"""
Local engines, both directions: Whisper ASR (English 7777 -> Spanish and
Spanish 8888 -> English) + Apertium + espeak-ng; latency per direction,
concurrency, CPU and memory.  Reuses bench/local_bench.py (process-tree
CPU, schedules, event matching, pocketsphinx reference), bench/run.py
(processes, tcpdump, /proc) and bench/analyse.py (egress intervals).

Every point starts a fresh bridge::

    taskset -c CPUS twistd -n --pidfile= xlbridge --ports PORTS --langs en,es \\
        --engines local --config CFG.toml --events EVENTS.jsonl

``CPUS`` is ``0,1`` (both cores: the bridge, its ASR workers and Apertium
may run anywhere) unless a configuration name ends in ``@1`` (everything
pinned to core 1, as bench/local_bench.py does).  ``CFG.toml`` holds only
the configuration's own keys (:data:`CONFIGS`); ``default`` sets nothing.
The phones (xlbridge.tools.phone.Phone, slin16 out, G.722 back) run in a
child of this script on core 0, as do tcpdump and this script.

The English leg speaks English Allison prompts, the Spanish leg Spanish
Allison prompts (/usr/share/asterisk/sounds/{en_US,es_MX}_f_Allison).  The
two sets are disjoint in meaning: the bridge's text echo guard drops a
transcript that resembles what was played to that caller in the last 8 s,
so "Goodbye" spoken right after hearing "Adiós" translated would be lost
as echo (a property of the stimulus, not of the engines).

1. latency (``--utterances`` per direction + ``--warmup-utterances``, one
   call): a conversation.  Turns alternate English, Spanish, English...;
   the next speaker starts ``--turn-pause`` s after the partner has heard
   the translation end (``--turn-quiet`` s without loud audio), or after
   ``--turn-timeout`` s without hearing one.  Per utterance: the bridge's
   PlaybackStarted stages (total_ms = end of speech -> first translated
   packet; asr_ms, mt_ms, tts_first_byte_ms, queue_wait_ms), the external
   check (PlaybackStarted.time minus the wall time the phone sent the
   packet holding the prompt's last loud sample, -45 dBFS per 10 ms), and
   what the listening phone heard (first loud packet received).  The
   pocketsphinx configuration (English only: it has no Spanish) plays the
   English turns only.
2. concurrency (``--ns``, ``--seconds``): N calls, both callers of every
   call looping over their prompts with ``--gap`` s of silence (their own
   leads and orders; the two legs of a call overlap).  tcpdump on lo of
   the bridge's outbound packets -> bench/analyse.py (p99 |interval - 20
   ms| pooled over the 2N streams, first ``--warmup`` s dropped); prompts
   spoken / recognised / translated and played / dropped by reason / lost
   without a trace, per direction; CPU of the bridge's process tree per
   translated call-minute; RSS of the bridge process and of each ASR
   worker at the end of the window.

Where the ASR time goes (Whisper): unless ``--no-probe``, the bridge is
started with a ``sitecustomize`` on PYTHONPATH (inherited by the ASR
workers) that wraps ``WhisperStream._decode`` and ``_final`` and appends
one JSON line per decode / final (wall times) to a file; nothing under
xlbridge/ changes.  Per utterance, asr_ms = *end decision* (speech end ->
the worker processes the frame completing ``end_silence_s`` of silence:
the VAD wait plus any delay in getting frames to the worker) + *after the
decision* (a decode still to do, and the reply's way back to the reactor);
the decode itself (ms, and whether the early decode overlapped the wait)
is reported too.  Offline, with no load, each prompt is run through the
same WhisperStream (speech end -> final in audio time, decode ms,
end_silence_s alternatives) and pocketsphinx (its endpointer's wait).

Usage::

    python bench/local_both.py                      # the default run (~22 min)
    python bench/local_both.py --utterances 2 --ns 1 --seconds 15 \\
        --configs default --no-publish              # smoke test (~2 min)

Writes bench/out/local_both.json (+ each run's bridge log, events and probe
lines), and unless ``--no-publish`` copies it to bench/results/ (with
local_both.png when matplotlib is installed).  Root, and tcpdump, needed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
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

import analyse  # noqa: E402
import local_bench as lb  # noqa: E402
import run as egress_run  # noqa: E402
from xlbridge.eventlog import read_events  # noqa: E402

SOUNDS = {"en": "/usr/share/asterisk/sounds/en_US_f_Allison", "es": "/usr/share/asterisk/sounds/es_MX_f_Allison"}
#: English: local_bench's set (the bundled pocketsphinx model gets them mostly right).
PROMPTS_EN = ["en:" + n for n in lb.PROMPTS]
#: Spanish: whole sentences Whisper base gets right, none close in meaning to
#: an English prompt (Apertium's English of each is < 0.45 word-similar to
#: every English prompt; the echo guard's threshold is 0.6).
PROMPTS_ES = ["es:" + n for n in (
    "conf-locked", "please-try-again", "dir-welcome", "vm-tooshort", "vm-nomore",
    "vm-savefolder", "queue-callswaiting", "vm-marked-urgent", "vm-sorry", "conf-now-recording")]
PROMPTS = {"en": PROMPTS_EN, "es": PROMPTS_ES}
LOUD_DBFS = lb.LOUD_DBFS
SR, FRAME = lb.SR, lb.FRAME
PHONE_CORE = 0

#: name -> TOML keys ("section.key": value).  "default" sets nothing.
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "pocketsphinx": {"local_asr.engine": "pocketsphinx"},
    "w1t1": {"local_asr.workers": 1, "local_asr.whisper.cpu_threads": 1},
    "w1t2": {"local_asr.workers": 1, "local_asr.whisper.cpu_threads": 2},
    "w2t1": {"local_asr.workers": 2, "local_asr.whisper.cpu_threads": 1},
    "w2t2": {"local_asr.workers": 2, "local_asr.whisper.cpu_threads": 2},
    "es025": {"local_asr.whisper.end_silence_s": 0.25},
    "es020": {"local_asr.whisper.end_silence_s": 0.2},
    "noearly": {"local_asr.whisper.early_decode_s": 0.0},
    "silero": {"local_asr.whisper.vad": "silero"},
    "webrtc": {"local_asr.whisper.vad": "webrtc"},
}
DIRS = {"en": "en->es", "es": "es->en"}


# --------------------------------------------------------------------------
# configurations


def parse_config(name: str) -> tuple[str, dict[str, Any], str]:
    """``(base name, keys, cpus)`` for ``name`` (``NAME``, ``NAME@1``, or ``NAME=key:value+key:value``)."""
    cpus = "0,1"
    base = name
    if "=" in base:
        base, _, spec = base.partition("=")
        keys = {}
        for item in spec.split("+"):
            k, _, v = item.partition(":")
            keys[k.strip()] = json.loads(v)
    else:
        keys = None
    if base.endswith("@1"):
        base, cpus = base[:-2], "1"
    if keys is None:
        if base not in CONFIGS:
            raise SystemExit(f"unknown configuration {base!r} (known: {', '.join(CONFIGS)}; or NAME=key:value+...)")
        keys = CONFIGS[base]
    return base, keys, cpus


def toml_text(keys: dict[str, Any]) -> str:
    tables: dict[str, list[str]] = {"local_asr": []}
    for k, v in keys.items():
        table, _, key = k.rpartition(".")
        tables.setdefault(table, []).append(f"{key} = {json.dumps(v)}")
    return "".join(f"[{t}]\n" + "".join(line + "\n" for line in lines) for t, lines in tables.items())


def engine_of(keys: dict[str, Any]) -> str:
    return "pocketsphinx" if keys.get("local_asr.engine") == "pocketsphinx" else "whisper"


# --------------------------------------------------------------------------
# prompts


_PROMPT_CACHE: dict[str, dict[str, Any]] = {}


def load_prompt(name: str) -> dict[str, Any]:
    """``lang:file`` -> audio (int16), samples, speech_start / speech_end (samples, -45 dBFS per 10 ms)."""
    if name in _PROMPT_CACHE:
        return _PROMPT_CACHE[name]
    import numpy as np

    from xlbridge.tools.demo import load_g722

    lang, _, file = name.partition(":")
    x = load_g722(os.path.join(SOUNDS[lang], file + ".g722"))
    f = x[: len(x) // 160 * 160].astype(np.float64).reshape(-1, 160)
    db = 20 * np.log10(np.sqrt((f**2).mean(1)) / 32768 + 1e-12)
    loud = np.where(db > LOUD_DBFS)[0]
    p = {"name": name, "lang": lang, "audio": x, "samples": len(x),
         "speech_start": int(loud[0]) * 160, "speech_end": int(loud[-1] + 1) * 160}
    _PROMPT_CACHE[name] = p
    return p


# --------------------------------------------------------------------------
# phones child (core 0)


def phones_main(spec_path: str) -> int:
    import bisect

    import numpy as np
    from twisted.internet import defer, reactor, task

    from xlbridge.audio.codecs import get_codec, make_decoder
    from xlbridge.tools.phone import Phone

    with open(spec_path) as f:
        spec = json.load(f)
    names = {n for leg in spec["legs"] for n in leg.get("prompt_names", [])}
    prompts = {n: load_prompt(n) for n in names}
    loud_rms = 32768 * 10 ** (LOUD_DBFS / 20)

    class BenchPhone(Phone):
        """Records when it sent frames of interest and when it received loud audio."""

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.watch: set[int] = set()
            self.sent_at: dict[int, float] = {}
            self.loud_at: list[float] = []  # arrival times of loud packets
            self._decs: dict[int, Any] = {}

        def _send(self, i: int) -> None:
            super()._send(i)
            if i in self.watch:
                self.sent_at[i] = self.clock.seconds()

        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            super().datagramReceived(datagram, addr)
            try:
                pt = datagram[1] & 0x7F
                codec = self.recorder.codec_for(pt)
                if codec is None or len(datagram) <= 12:
                    return
                dec = self._decs.get(pt)
                if dec is None:
                    dec = self._decs[pt] = make_decoder(codec)
                x = dec.decode(datagram[12:]).astype(np.float64)
                if len(x) and math.sqrt(float((x * x).mean())) > loud_rms:
                    self.loud_at.append(self.clock.seconds())
            except Exception:
                pass

        def heard_after(self, t: float) -> float | None:
            i = bisect.bisect_right(self.loud_at, t)  # appended in order
            return self.loud_at[i] if i < len(self.loud_at) else None

    legs: list[dict[str, Any]] = spec["legs"]
    phones: list[BenchPhone] = []
    for leg in legs:
        if spec["mode"] == "concurrency":
            sched = leg["schedule"]
            track = np.zeros(sched["samples"], np.int16)
            for it in sched["items"]:
                p = prompts[it["name"]]
                track[it["offset"]: it["offset"] + p["samples"]] = p["audio"]
                it["start_frame"] = (it["offset"] + p["speech_start"]) // FRAME
                it["end_frame"] = (it["offset"] + p["speech_end"] - 1) // FRAME
        else:
            track = np.zeros(int(spec["max_s"] * SR), np.int16)
        ph = BenchPhone(reactor, track, get_codec("slin16"), ("127.0.0.1", leg["port"]), tail=spec["tail_s"])
        if spec["mode"] == "concurrency":
            for it in leg["schedule"]["items"]:
                ph.watch |= {it["start_frame"], it["end_frame"]}
        reactor.listenUDP(0, ph, interface="127.0.0.1")
        phones.append(ph)
    said: list[list[dict[str, Any]]] = [[] for _ in legs]
    out: dict[str, Any] = {}

    @defer.inlineCallbacks
    def conversation() -> Any:
        """Latency mode: one turn at a time, the next once the partner has heard the translation end."""
        tc = spec["turn"]
        yield task.deferLater(reactor, spec["lead_s"], lambda: None)
        for turn in spec["turns"]:
            i = turn["leg"]
            spk, lst = phones[i], phones[legs[i]["partner"]]
            p = prompts[turn["name"]]
            k0 = spk._next + 1
            nf = -(-p["samples"] // FRAME)
            if k0 + nf + 50 >= len(spk.frames):
                out["truncated"] = True
                break
            padded = np.zeros(nf * FRAME, np.int16)
            padded[: p["samples"]] = p["audio"]
            for j in range(nf):
                spk.frames[k0 + j] = padded[j * FRAME: (j + 1) * FRAME]
            rec = {"name": p["name"], "start_frame": k0 + p["speech_start"] // FRAME,
                   "end_frame": k0 + (p["speech_end"] - 1) // FRAME}
            spk.watch |= {rec["start_frame"], rec["end_frame"]}
            said[i].append(rec)
            while spk._next < k0 + nf:
                yield task.deferLater(reactor, 0.02, lambda: None)
            t_end = spk.sent_at.get(rec["end_frame"], reactor.seconds())
            while True:
                yield task.deferLater(reactor, 0.02, lambda: None)
                now = reactor.seconds()
                first = lst.heard_after(t_end)
                if first is None and now - t_end > tc["timeout_s"]:
                    rec["outcome"] = "nothing heard"
                    break
                if first is not None and now - lst.loud_at[-1] >= tc["quiet_s"]:
                    rec["outcome"] = "heard"
                    break
                if now - t_end > tc["max_s"]:
                    rec["outcome"] = "still playing"
                    break
            rec["heard_first"] = first
            rec["heard_last"] = lst.loud_at[-1] if first is not None else None
            yield task.deferLater(reactor, tc["pause_s"], lambda: None)
        yield task.deferLater(reactor, spec["tail_s"], lambda: None)
        for ph in phones:
            ph.stop()

    @defer.inlineCallbacks
    def go() -> Any:
        t0 = time.time()
        print(f"started {t0:.6f}", flush=True)
        plays = [ph.play() for ph in phones]
        if spec["mode"] == "latency":
            yield conversation()
        reports = yield defer.gatherResults(plays)
        out["t0"] = t0
        out["legs"] = []
        for leg, ph, rep, mine in zip(legs, phones, reports, said):
            d: dict[str, Any] = {"ext": leg["ext"], "lang": leg["lang"], "packets_sent": rep.packets_sent,
                                 "packets_received": rep.packets_received, "lost": rep.lost,
                                 "max_gap_ms": rep.max_gap_ms, "loud_received_s": len(ph.loud_at) * 0.02}
            items = leg["schedule"]["items"] if spec["mode"] == "concurrency" else mine
            d["prompts"] = []
            for it in items:
                r = {"name": it["name"], "t_start": ph.sent_at.get(it["start_frame"]),
                     "t_end": ph.sent_at.get(it["end_frame"])}
                for k in ("outcome", "heard_first", "heard_last"):
                    if k in it:
                        r[k] = it[k]
                d["prompts"].append(r)
            out["legs"].append(d)
        with open(spec["out"], "w") as f:
            json.dump(out, f)

    def stop(_: Any) -> None:
        reactor.stop()

    def fail(f: Any) -> None:
        f.printTraceback(file=sys.stderr)
        reactor.stop()

    reactor.callWhenRunning(lambda: go().addCallbacks(stop, fail))
    reactor.run()
    return 0 if "legs" in out else 1


# --------------------------------------------------------------------------
# the decode probe (a sitecustomize for the bridge and its ASR workers)

PROBE = r'''
# Written by bench/local_both.py: wraps WhisperStream._decode/_final to log wall times.
import os, sys, json, time
_OUT = {out!r}

def _patch(m):
    WS = m.WhisperStream
    od, of = WS._decode, WS._final
    fh = open(_OUT + "." + str(os.getpid()), "a", buffering=1)

    def _decode(self, frames):
        w0 = time.time()
        hyp = od(self, frames)
        w1 = time.time()
        self._bench_last = [w0, w1, len(frames)]
        fh.write(json.dumps({{"k": "decode", "pid": os.getpid(), "s": id(self), "w0": w0, "w1": w1,
                             "frames": len(frames), "pos": self.position, "text": hyp.text}}) + "\n")
        return hyp

    def _final(self, *a, **kw):
        w_in = time.time()
        used0, n0 = getattr(self, "early_used", 0), self.decodes
        ev = of(self, *a, **kw)
        w_out = time.time()
        e = ev[0] if ev else None
        fh.write(json.dumps({{"k": "final", "pid": os.getpid(), "s": id(self), "w_in": w_in, "w_out": w_out,
                             "early": getattr(self, "early_used", 0) > used0, "decoded_here": self.decodes > n0,
                             "decode": getattr(self, "_bench_last", None), "pos": self.position,
                             "lang": self.spec.language, "text": e.text if e is not None else "",
                             "speech_end": getattr(e, "speech_end", None),
                             "end_silence_s": self.spec.end_silence_s,
                             "early_decode_s": getattr(self.spec, "early_decode_s", None)}}) + "\n")
        return ev

    WS._decode, WS._final = _decode, _final


class _Finder:
    def find_spec(self, name, path=None, target=None):
        if name != "xlbridge.engines.whisper.stream":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        orig = spec.loader.exec_module

        def exec_module(module):
            orig(module)
            try:
                _patch(module)
            except Exception as e:
                sys.stderr.write("warn bench probe not installed: %r\n" % (e,))

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Finder())
'''


def write_probe(tmp: str, tag: str) -> tuple[str, str]:
    d = os.path.join(tmp, f"probe-{tag}")
    os.makedirs(d, exist_ok=True)
    out = os.path.join(tmp, f"{tag}.probe")
    with open(os.path.join(d, "sitecustomize.py"), "w") as f:
        f.write(PROBE.format(out=out))
    return d, out


def read_probe(prefix: str) -> list[dict[str, Any]]:
    recs = []
    d, base = os.path.dirname(prefix), os.path.basename(prefix)
    for name in os.listdir(d):
        if name.startswith(base + "."):
            with open(os.path.join(d, name)) as f:
                recs += [json.loads(line) for line in f if line.strip()]
    return recs


# --------------------------------------------------------------------------
# offline references (no load)


def whisper_offline(path: str, names: list[str], tunings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """
    Each prompt through the bridge's WhisperStream frame by frame (0.5 s
    lead, 2 s tail), per tuning: text, finals, speech end -> final in audio
    time, decode ms (wall, this process unpinned), early decodes used/wasted.
    """
    import numpy as np

    from xlbridge.engines.whisper.decode import shared_decoder
    from xlbridge.engines.whisper.settings import WhisperModel
    from xlbridge.engines.whisper.stream import WhisperStream

    out: dict[str, Any] = {}
    for tname, tuning in tunings.items():
        rows = {}
        for name in names:
            p = load_prompt(name)
            spec = WhisperModel(path=path, language=p["lang"], **tuning)
            dec = shared_decoder(spec)
            s = WhisperStream(dec, spec)
            b = np.concatenate([np.zeros(8000, np.int16), p["audio"], np.zeros(32000, np.int16)]).tobytes()
            finals, emit, decode_ms = [], [], []
            for k, i in enumerate(range(0, len(b) - 639, 640)):
                d0 = s.decode_s
                ev = s.feed(b[i: i + 640])
                for e in ev:
                    if getattr(e, "is_final", False) and e.text:
                        finals.append(e)
                        emit.append((k + 1) * 0.02)
                if s.decode_s > d0:
                    decode_ms.append((s.decode_s - d0) * 1000)
            finals += [e for e in s.finish() if getattr(e, "is_final", False) and e.text]
            energy_end = 0.5 + p["speech_end"] / SR
            r: dict[str, Any] = {"text": " ".join(e.text for e in finals), "finals": len(finals),
                                 "decodes": s.decodes, "decode_ms": decode_ms,
                                 "early_used": getattr(s, "early_used", None),
                                 "early_wasted": getattr(s, "early_wasted", None)}
            if finals and emit and finals[-1].speech_end is not None:
                r["final_wait_ms"] = (emit[-1] - finals[-1].speech_end) * 1000  # audio time
                r["vad_end_minus_energy_end_ms"] = (finals[-1].speech_end - energy_end) * 1000
            rows[name] = r
        ref = out.get("default", {}).get("rows") if tname != "default" else None
        out[tname] = {"tuning": tuning, "rows": rows,
                      "final_wait_ms": lb.stats([r.get("final_wait_ms") for r in rows.values()]),
                      "vad_end_minus_energy_end_ms": lb.stats([r.get("vad_end_minus_energy_end_ms")
                                                               for r in rows.values()]),
                      "decode_ms": lb.stats([x for r in rows.values() for x in r["decode_ms"]]),
                      "split": sum(1 for r in rows.values() if r["finals"] > 1),
                      "empty": sum(1 for r in rows.values() if not r["finals"])}
        if ref is not None:
            out[tname]["same_text_as_default"] = sum(rows[n]["text"] == ref[n]["text"] for n in names)
    return out


# --------------------------------------------------------------------------
# other benchmarks, foreign CPU


def other_benches(mine: set[int]) -> list[tuple[int, str, float]]:
    """bench/*.py processes outside this run that are measuring: (pid, command, CPU cores over 0.5 s)."""
    r = subprocess.run(["pgrep", "-af", r"bench/[A-Za-z0-9_]+\.py"], capture_output=True, text=True, check=False)
    procs = []
    for line in r.stdout.splitlines():
        pid_s, _, cmd = line.partition(" ")
        if pid_s.isdigit() and int(pid_s) not in mine and "pgrep" not in cmd:
            procs.append((int(pid_s), cmd))
    parents = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = lb._stat(int(d))
            if st and not st[1].startswith("pgrep"):
                parents.add(st[0])
    cpu0 = {pid: (lb._stat(pid) or (0, "", 0.0))[2] for pid, _ in procs}
    time.sleep(0.5)
    busy = []
    for pid, cmd in procs:
        st = lb._stat(pid)
        core = (st[2] - cpu0[pid]) / 0.5 if st else 0.0
        # measuring: it has child processes (a bridge, phones) or burns CPU itself (an offline decode)
        if pid in parents or "--run-one" in cmd or "--phones" in cmd or core > 0.15:
            busy.append((pid, cmd[:100], round(core, 2)))
    return busy


def my_pids() -> set[int]:
    """This process, its descendants and its ancestors (a ``timeout``/shell wrapper is not another benchmark)."""
    me = os.getpid()
    out = {me} | set(lb.tree_cpu(me))
    pid = os.getppid()
    while pid > 1:
        out.add(pid)
        st = lb._stat(pid)
        if st is None:
            break
        pid = st[0]
    return out


def wait_others(max_wait_s: float, clean_needed: int = 5, poll_s: float = 20.0) -> tuple[float, list[Any]]:
    t0, clean, seen = time.monotonic(), 0, []
    while True:
        busy = other_benches(my_pids())
        if not busy:
            clean += 1
            if clean >= clean_needed:
                return time.monotonic() - t0, seen
            time.sleep(1.0)
            continue
        clean = 0
        seen.append({"at": time.strftime("%H:%M:%S"), "busy": busy})
        if time.monotonic() - t0 > max_wait_s:
            print(f"{time.strftime('%H:%M:%S')} still busy after {max_wait_s:.0f} s, going on (overlap noted): {busy}",
                  flush=True)
            return time.monotonic() - t0, seen
        print(f"{time.strftime('%H:%M:%S')} waiting for other benchmarks: {busy}", flush=True)
        time.sleep(poll_s)


def cpu_totals() -> tuple[float, float, float]:
    """(busy, steal, total) seconds over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    t = egress_run.CLK_TCK
    return (user + nice + system + irq + softirq) / t, steal / t, sum(v[:8]) / t


# --------------------------------------------------------------------------
# one point


#: Translated playback / original speech, a fallback estimate per source
#: language when no latency run measured it (en->es is longer, es->en shorter).
PLAY_RATIO = {"en": 1.45, "es": 1.0}


def schedule(prompts: list[str], lead_s: float, gap_s: float, until_s: float, play_s: dict[str, float],
             tail_s: float = 3.0) -> dict[str, Any]:
    """
    A speaker's prompts in ``prompts`` order, looping, until ``until_s -
    tail_s``: after prompt i, ``gap_s`` of silence or longer, so the next
    prompt ends no earlier than prompt i's translation (``play_s``, s) plus
    0.8 s has played: a speaker who talks faster than the translation can
    be spoken only builds a queue, whatever the CPU.
    """
    items, at, i = [], int(lead_s * SR), 0
    while True:
        p = load_prompt(prompts[i % len(prompts)])
        if (at + p["samples"]) / SR > until_s - tail_s:
            break
        items.append({"name": p["name"], "offset": at})
        nxt = load_prompt(prompts[(i + 1) % len(prompts)])
        gap = max(gap_s, play_s[p["name"]] + 0.8 - nxt["speech_end"] / SR)
        at += p["samples"] + int(gap * SR)
        i += 1
    return {"items": items, "samples": int(until_s * SR)}


def legs_for(n: int, base: int) -> list[dict[str, Any]]:
    legs = []
    for k in range(n):
        en, es = base + 2 * k, base + 2 * k + 1
        e_ext, s_ext = ("7777", "8888") if n == 1 else (str(en), str(es))
        legs.append({"ext": e_ext, "port": en, "lang": "en", "partner": 2 * k + 1, "call": k})
        legs.append({"ext": s_ext, "port": es, "lang": "es", "partner": 2 * k, "call": k})
    return legs


def ports_arg(legs: list[dict[str, Any]]) -> str:
    if legs[0]["ext"] == "7777":
        return f"7777={legs[0]['port']},8888={legs[1]['port']}"
    return f"{legs[0]['port']}-{legs[-1]['port']}"


def proc_mem(pid: int) -> dict[str, float]:
    try:
        st = egress_run.proc_status(pid)
    except OSError:
        return {}
    return {"rss_mb": st.get("VmRSS", 0) / 1024, "hwm_mb": st.get("VmHWM", 0) / 1024}


def run_point(kind: str, cfg_name: str, n: int, ns: argparse.Namespace, tmp: str, tag: str,
              refs: dict[str, dict[str, str]], ps_detail: dict[str, Any]) -> dict[str, Any]:
    base, keys, cpus = parse_config(cfg_name)
    engine = engine_of(keys)
    procs = egress_run.Procs()
    legs = legs_for(n, ns.base_port)
    lo, hi = ns.base_port, ns.base_port + 2 * n - 1
    egress_run.wait_ports_free(lo, hi)
    lengths = {nm: load_prompt(nm)["samples"] for lang in PROMPTS for nm in PROMPTS[lang]}
    res_extra: dict[str, Any] = {}
    spec: dict[str, Any] = {"mode": kind, "legs": legs, "tail_s": 2.0, "out": os.path.join(tmp, f"{tag}.phones.json")}
    if kind == "latency":
        count = ns.utterances + ns.warmup_utterances
        langs = ["en"] if engine == "pocketsphinx" else ["en", "es"]
        turns = []
        for k in range(count):
            for lang in langs:
                turns.append({"leg": 0 if lang == "en" else 1, "name": PROMPTS[lang][k % len(PROMPTS[lang])]})
        spec["turns"] = turns
        spec["turn"] = {"quiet_s": ns.turn_quiet, "pause_s": ns.turn_pause, "timeout_s": ns.turn_timeout, "max_s": 20.0}
        spec["lead_s"] = ns.lead
        spec["max_s"] = ns.lead + sum(lengths[t["name"]] / SR + 25.0 for t in turns) + 10
        for leg in legs:
            leg["prompt_names"] = sorted({t["name"] for t in turns})
        duration = None
    else:
        play_s = {nm: ns.playback_s.get(nm, PLAY_RATIO[nm[:2]] * (load_prompt(nm)["speech_end"]
                                                                  - load_prompt(nm)["speech_start"]) / SR)
                  for lang in PROMPTS for nm in PROMPTS[lang]}
        cycle = {lang: sum(lengths[x] / SR + max(ns.gap, play_s[x] + 0.8 - lengths[x] / SR) for x in PROMPTS[lang])
                 / len(PROMPTS[lang]) for lang in PROMPTS}
        for leg in legs:
            k, lang = leg["call"], leg["lang"]
            order = PROMPTS[lang][k % 10:] + PROMPTS[lang][: k % 10]
            lead = ns.lead + k * cycle[lang] / n + (cycle[lang] / 2 if lang == "es" else 0.0)
            leg["schedule"] = schedule(order, lead, ns.gap, ns.seconds, play_s)
            leg["prompt_names"] = sorted(set(order))
            sp = sum(load_prompt(it["name"])["speech_end"] - load_prompt(it["name"])["speech_start"]
                     for it in leg["schedule"]["items"]) / SR
            leg["talk_ratio"] = sp / ns.seconds
        res_extra = {"playback_estimate_s": play_s, "talk_ratio": {lang: sum(leg["talk_ratio"] for leg in legs
                                                                          if leg["lang"] == lang) / n
                                                                   for lang in PROMPTS}}
        duration = ns.seconds
    spec_path = os.path.join(tmp, f"{tag}.spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    cfg = os.path.join(tmp, f"{tag}.toml")
    with open(cfg, "w") as f:
        f.write(toml_text(keys))
    events_path = os.path.join(tmp, f"{tag}.events.jsonl")
    pcap = os.path.join(tmp, f"{tag}.pcap")
    env = dict(os.environ)
    probe_prefix = None
    if engine == "whisper" and not ns.no_probe:
        probe_dir, probe_prefix = write_probe(tmp, tag)
        env["PYTHONPATH"] = os.pathsep.join([probe_dir] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    log_path = os.path.join(ns.out, f"local_both-{tag}.log")
    log = open(log_path, "w")  # noqa: SIM115
    plog = open(os.path.join(ns.out, f"local_both-{tag}.phones.log"), "w")  # noqa: SIM115
    argv = ["taskset", "-c", cpus, egress_run.twistd(), "-n", "--pidfile=", "xlbridge", "--ports", ports_arg(legs),
            "--langs", "en,es", "--engines", "local", "--config", cfg, "--events", events_path]
    res: dict[str, Any] = {"kind": kind, "config": cfg_name, "config_base": base, "config_keys": keys, "cpus": cpus,
                           "engine": engine, "pairs": n, "tag": tag, "bridge_argv": argv, "config_toml": toml_text(keys),
                           "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                           "loadavg_before": os.getloadavg(), "code": code_identity(),
                           "whisper_defaults": effective_defaults(), **res_extra}
    try:
        t_launch = time.monotonic()
        br = procs.start(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        egress_run.wait_bound(br, lo, hi, timeout=90)
        res["quiet_wait_s"] = lb.wait_quiet(br.pid, timeout=40)
        res["startup_s"] = time.monotonic() - t_launch
        tree = lb.tree_cpu(br.pid)
        workers = sorted(pid for pid, v in tree.items() if v["kind"] == "asr_worker")
        res["asr_workers"] = len(workers)
        res["mem_idle"] = {"bridge": proc_mem(br.pid), "workers": [proc_mem(p) for p in workers]}
        res["affinity"] = {("bridge" if pid == br.pid else f"asr_worker[{pid}]"): sorted(os.sched_getaffinity(pid))
                           for pid in [br.pid] + workers}
        tcpd = tcpd_err = None
        if kind == "concurrency":
            tcpd, tcpd_err = egress_run.start_tcpdump(procs, pcap, lo, hi)
        socks0 = analyse.udp_socket_stats(lo, hi)
        ph = procs.start(["taskset", "-c", str(PHONE_CORE), sys.executable, os.path.abspath(__file__),
                          "--phones", spec_path], stdout=subprocess.PIPE, stderr=plog, text=True, cwd=ROOT)
        first = egress_run.read_line(ph, 60.0)
        if not first.startswith("started "):
            raise RuntimeError(f"phones: unexpected output {first!r}")
        t0 = float(first.split()[1])
        time.sleep(max(0.0, t0 + ns.cpu_skip - time.time()))
        extra = [ph.pid] + ([tcpd.pid] if tcpd is not None else [])

        def sample() -> tuple[Any, ...]:
            return (lb.tree_cpu(br.pid), time.monotonic(), egress_run.proc_schedstat(br.pid), cpu_totals(),
                    sum(lb._stat(p)[2] for p in extra + [os.getpid()] if lb._stat(p)))

        s0 = s1 = sample()
        mem = {"bridge": proc_mem(br.pid), "workers": {p: proc_mem(p) for p in workers}}
        if duration is not None:
            time.sleep(max(0.0, t0 + duration - 0.5 - time.time()))
        else:
            while ph.poll() is None and time.time() < t0 + spec["max_s"] + 30:
                time.sleep(1.0)
                # keep the last sample taken while the phones still ran
                if ph.poll() is None:
                    s1 = sample()
                    mem = {"bridge": proc_mem(br.pid), "workers": {p: proc_mem(p) for p in workers}}
        if duration is not None:
            s1 = sample()
            mem = {"bridge": proc_mem(br.pid), "workers": {p: proc_mem(p) for p in workers}}
        ph.communicate(timeout=(duration or spec["max_s"]) + 60)
        socks1 = analyse.udp_socket_stats(lo, hi)
        if tcpd is not None:
            egress_run.Procs.stop(tcpd, signal.SIGINT)
            tcpd_err.join(5)
            res["tcpdump"] = egress_run.tcpdump_counts(tcpd_err.lines)
        res["bridge_rc"] = egress_run.Procs.stop(br, signal.SIGTERM, timeout=20)
        res["ended_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    finally:
        procs.stop_all()
        log.close()
        plog.close()
    c0, w0, sch0, tot0, ext0 = s0
    c1, w1, sch1, tot1, ext1 = s1
    window = w1 - w0
    cpu = lb.tree_delta(c0, c1)
    total = sum(cpu.values())
    busy = tot1[0] - tot0[0]
    res.update({
        "window_s": window, "cpu_s_by_kind": cpu, "cpu_core_tree": total / window,
        "cpu_core_bridge": cpu.get("bridge", 0.0) / window, "cpu_core_workers": cpu.get("asr_worker", 0.0) / window,
        "cpu_s_per_call_min_tree": total / (n * window / 60),
        "run_delay_ms_per_s": (sch1[1] - sch0[1]) * 1000 / window,
        "machine_busy_core": busy / window, "steal_core": (tot1[1] - tot0[1]) / window,
        "foreign_cpu_core": (busy - total - (ext1 - ext0)) / window,
        "mem": {"bridge": mem["bridge"], "workers": [mem["workers"][p] for p in workers]},
        "rx_drops": socks1["drops"] - socks0["drops"],
    })
    res["rss_mb_bridge"] = res["mem"]["bridge"].get("rss_mb")
    res["rss_mb_workers"] = [m.get("rss_mb") for m in res["mem"]["workers"]]
    with open(spec["out"]) as f:
        phones = json.load(f)
    events = list(read_events(str(events_path)))  # a killed bridge's partial last line is skipped
    probe = read_probe(probe_prefix) if probe_prefix else []
    res["probe_records"] = len(probe)
    res["utterances"] = utterance_rows(phones, events, probe, refs[engine], ns.warmup_utterances if kind == "latency" else 0,
                                       ps_detail if engine == "pocketsphinx" else None)
    res["phones"] = [{k: v for k, v in leg.items() if k != "prompts"} for leg in phones["legs"]]
    res["truncated"] = phones.get("truncated", False)
    res["event_counts"] = {}
    for e in events:
        res["event_counts"][e["event"]] = res["event_counts"].get(e["event"], 0) + 1
    res["dropped"] = [e for e in events if e["event"] == "UtteranceDropped"]
    # Speculative translation (an early decode reported as an eager end):
    # outcome (started/used/wasted) -> reason -> count, per listener.
    res["speculations"] = {}
    for e in events:
        if e["event"] == "SpeculationEvent":
            per = res["speculations"].setdefault(e["extension"], {}).setdefault(e["outcome"], {})
            per[e["reason"] or "-"] = per.get(e["reason"] or "-", 0) + 1
    res["engine_status"] = [e for e in events if e["event"] == "EngineStatusEvent"][:20]
    res["decodes"] = probe_summary(probe)
    if kind == "concurrency":
        streams, info = analyse.read_pcap(pcap, lo, hi)
        res["egress"] = analyse.analyse(streams, ns.warmup)
        res["egress_incl_start"] = analyse.analyse(streams, 1.0)
        res["egress"]["pcap"] = info
        if ns.keep_pcap:
            shutil.copy(pcap, os.path.join(ns.out, os.path.basename(pcap)))
        os.unlink(pcap)
    with open(log_path) as f:
        bad = [line.rstrip() for line in f if "#warn]" in line or "#error]" in line or "#critical]" in line
               or "Traceback" in line]
    res["log_warnings"] = len(bad)
    res["log_warning_samples"] = [b for b in bad if "no ASR model for es" not in b and "no model for es" not in b][:15]
    res["summary"] = summarise(res)
    shutil.copy(events_path, os.path.join(ns.out, f"local_both-{tag}.events.jsonl"))
    if probe_prefix:
        with open(os.path.join(ns.out, f"local_both-{tag}.probe.jsonl"), "w") as f:
            for r in probe:
                f.write(json.dumps(r) + "\n")
    return res


def utterance_rows(phones: dict[str, Any], events: list[dict[str, Any]], probe: list[dict[str, Any]],
                   refs: dict[str, str], warmup: int, ps_detail: dict[str, Any] | None) -> list[dict[str, Any]]:
    """local_bench.match_events per speaking leg, plus language, the phone's view, and the probe's split of asr_ms."""
    pairs = {"pairs": [{"speaker_ext": leg["ext"], "prompts": leg["prompts"]} for leg in phones["legs"]]}
    rows = lb.match_events(pairs, events, refs, warmup=warmup)
    lang_of = {leg["ext"]: leg["lang"] for leg in phones["legs"]}
    prompts = {(leg["ext"], i): p for leg in phones["legs"]
               for i, p in enumerate([p for p in leg["prompts"] if p["t_start"] is not None and p["t_end"] is not None])}
    finals = [r for r in probe if r["k"] == "final" and r["text"]]
    used: set[int] = set()
    # the last final's TranscriptEvent of each utterance: find it again for the probe match
    tevents = [e for e in events if e["event"] == "TranscriptEvent" and e["is_final"] and e["text"]
               and e.get("asr_ms") is not None]
    for row in rows:
        row["lang"] = lang_of[row["speaker"]]
        row["direction"] = DIRS[row["lang"]]
        p = prompts.get((row["speaker"], row["index"]), {})
        if p.get("heard_first") is not None:
            row["phone_heard_ms"] = (p["heard_first"] - p["t_end"]) * 1000
        if "outcome" in p:
            row["turn_outcome"] = p["outcome"]
        if ps_detail is not None and row.get("asr_ms") is not None:
            d = ps_detail.get(row["prompt"].partition(":")[2], {})
            if d.get("endpoint_wait_ms") is not None:
                row["endpoint_wait_offline_ms"] = d["endpoint_wait_ms"]
                row["asr_beyond_endpointer_ms"] = row["asr_ms"] - d["endpoint_wait_ms"]
        if row.get("asr_ms") is None or not finals:
            continue
        # the TranscriptEvent whose speech end and asr_ms match the playback's
        te = [e for e in tevents if e["extension"] == row["speaker"] and abs(e["asr_ms"] - row["asr_ms"]) < 0.01]
        if not te:
            continue
        ev = te[0]
        cands = [(ev["time"] - r["w_out"], i) for i, r in enumerate(finals)
                 if i not in used and r["text"].strip() == ev["text"].strip() and -0.01 <= ev["time"] - r["w_out"] < 2.0]
        if not cands:
            continue
        _, i = min(cands)
        used.add(i)
        r = finals[i]
        speech_end_wall = ev["time"] - ev["asr_ms"] / 1000
        row["end_silence_ms"] = r["end_silence_s"] * 1000
        row["end_decision_ms"] = (r["w_in"] - speech_end_wall) * 1000
        row["decision_delay_ms"] = row["end_decision_ms"] - row["end_silence_ms"]
        row["after_decision_ms"] = (ev["time"] - r["w_in"]) * 1000
        row["return_ms"] = (ev["time"] - r["w_out"]) * 1000
        row["early"] = r["early"]
        if r.get("decode"):
            w0, w1, _ = r["decode"]
            row["decode_ms"] = (w1 - w0) * 1000
            row["decode_start_after_speech_end_ms"] = (w0 - speech_end_wall) * 1000
            row["decode_exposed_ms"] = max(0.0, (w1 - speech_end_wall) * 1000 - row["end_silence_ms"])
    return rows


def probe_summary(probe: list[dict[str, Any]]) -> dict[str, Any]:
    dec = [r for r in probe if r["k"] == "decode"]
    fin = [r for r in probe if r["k"] == "final"]
    used = {(r["pid"], tuple(r["decode"])) for r in fin if r.get("decode")}
    wasted = [r for r in dec if (r["pid"], (r["w0"], r["w1"], r["frames"])) not in used]
    return {"decodes": len(dec), "finals": len(fin), "finals_nonempty": sum(1 for r in fin if r["text"]),
            "early_used": sum(1 for r in fin if r["early"]),
            "decodes_not_used_for_a_final": len(wasted),
            "decode_s_total": sum(r["w1"] - r["w0"] for r in dec),
            "decode_s_not_used": sum(r["w1"] - r["w0"] for r in wasted),
            "decode_ms": lb.stats([(r["w1"] - r["w0"]) * 1000 for r in dec])}


STAGES = ("total_ms", "external_total_ms", "phone_heard_ms", "asr_ms", "end_decision_ms", "decision_delay_ms",
          "after_decision_ms", "decode_ms", "decode_exposed_ms", "return_ms", "asr_beyond_endpointer_ms",
          "mt_ms", "tts_first_byte_ms", "queue_wait_ms", "other_ms", "total_minus_queue_ms")


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"cpu_core_tree": res["cpu_core_tree"], "cpu_s_per_call_min_tree": res["cpu_s_per_call_min_tree"],
                           "foreign_cpu_core": res["foreign_cpu_core"], "steal_core": res["steal_core"],
                           "rss_mb_bridge": res["rss_mb_bridge"], "rss_mb_workers": res["rss_mb_workers"],
                           "log_warnings": len(res["log_warning_samples"]), "dirs": {}}
    drops: dict[str, dict[str, int]] = {}
    for e in res["dropped"]:
        d = DIRS.get(e["language"].split("-")[0], e["language"])
        drops.setdefault(d, {})
        drops[d][e["reason"]] = drops[d].get(e["reason"], 0) + 1
    for lang, d in DIRS.items():
        us = [u for u in res["utterances"] if u["lang"] == lang and not u["warmup"]]
        if not us or (res["engine"] == "pocketsphinx" and lang == "es"):
            continue
        s: dict[str, Any] = {
            "spoken": len(us), "recognised": sum(1 for u in us if u["finals"]),
            "played": sum(1 for u in us if u.get("total_ms") is not None),
            "same_as_offline": sum(1 for u in us if u["same_as_offline"]),
            "wer_vs_offline_mean": (sum(u["wer"] for u in us if u["wer"] is not None)
                                    / max(1, sum(1 for u in us if u["wer"] is not None))),
            "segments": sum(u["segments_played"] for u in us),
            "stray_finals": sum(u["stray_finals"] for u in us),
            "dropped": drops.get(d, {}),
            "early_used": sum(1 for u in us if u.get("early")),
            "probed": sum(1 for u in us if u.get("end_decision_ms") is not None),
        }
        s["not_played"] = s["spoken"] - s["played"]
        s["lost_without_event"] = max(0, s["not_played"] - sum(s["dropped"].values()))
        for k in STAGES:
            s[k] = lb.stats([u.get(k) for u in us])
        out["dirs"][d] = s
    if "egress" in res:
        e, e1 = res["egress"], res["egress_incl_start"]
        out.update({"egress_p50_ms": e["interval_error_ms"]["p50"], "egress_p99_ms": e["interval_error_ms"]["p99"],
                    "egress_p999_ms": e["interval_error_ms"]["p99.9"], "egress_max_ms": e["interval_error_ms"]["max"],
                    "egress_p99_incl_start_ms": e1["interval_error_ms"]["p99"],
                    "late_intervals": e["late_intervals"], "short_intervals": e["short_intervals"],
                    "missed_intervals": max(e["clock_missed_intervals"], e["ts_missed_intervals"]),
                    "seq_lost": e["seq_lost"]})
    return out


# --------------------------------------------------------------------------
# tables


fmt = lb.fmt


def pp(s: dict[str, Any], key: str = "p50") -> str:
    return fmt(s.get(key)) if s else "-"


def vad_of(r: dict[str, Any]) -> str:
    if r["engine"] != "whisper":
        return ""
    v = r["config_keys"].get("local_asr.whisper.vad") or r.get("whisper_defaults", {}).get("vad")
    return f", {v} VAD" if v else ""


def latency_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| configuration | direction | n | total p50 / p95 / max | external p50 / p95 | phone heard p50 / p95 | "
             "asr p50 / p95 | · end decision (VAD wait + delay) p50 / p95 | · after decision p50 / p95 | "
             "decode p50 / p95 (early used) | mt p50 / p95 | tts first audio p50 / p95 | queue p50 / p95 | other p50 | "
             "spoken / recognised / played | same text as offline | meets p50 ≤ 500 & p95 ≤ 900 |",
             "|" + "---|" * 16]
    for r in runs:
        if r["kind"] != "latency":
            continue
        for d, s in r["summary"]["dirs"].items():
            t = s["total_ms"]
            ok = t.get("p50") is not None and t["p50"] <= 500 and t["p95"] <= 900
            lines.append(
                f"| {r['config']} ({r['engine']}{vad_of(r)}) | {d} | {t.get('n', 0)} | **{pp(t)}** / **{pp(t, 'p95')}** / {pp(t, 'max')} | "
                f"{pp(s['external_total_ms'])} / {pp(s['external_total_ms'], 'p95')} | "
                f"{pp(s['phone_heard_ms'])} / {pp(s['phone_heard_ms'], 'p95')} | "
                f"{pp(s['asr_ms'])} / {pp(s['asr_ms'], 'p95')} | "
                f"{pp(s['end_decision_ms'])} / {pp(s['end_decision_ms'], 'p95')} | "
                f"{pp(s['after_decision_ms'])} / {pp(s['after_decision_ms'], 'p95')} | "
                f"{pp(s['decode_ms'])} / {pp(s['decode_ms'], 'p95')} ({s['early_used']}/{s['probed']}) | "
                f"{pp(s['mt_ms'])} / {pp(s['mt_ms'], 'p95')} | {pp(s['tts_first_byte_ms'])} / {pp(s['tts_first_byte_ms'], 'p95')} | "
                f"{pp(s['queue_wait_ms'])} / {pp(s['queue_wait_ms'], 'p95')} | {pp(s['other_ms'])} | "
                f"{s['spoken']} / {s['recognised']} / {s['played']} | {s['same_as_offline']} | {'yes' if ok else '**no**'} |")
    return "\n".join(lines)


def concurrency_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in runs:
        if r["kind"] != "concurrency":
            continue
        s = r["summary"]
        row = {"config": r["config"], "pairs": r["pairs"], "workers": r["asr_workers"], "cpus": r["cpus"],
               "egress_p99_ms": s.get("egress_p99_ms"), "egress_p999_ms": s.get("egress_p999_ms"),
               "egress_max_ms": s.get("egress_max_ms"), "late": s.get("late_intervals"), "short": s.get("short_intervals"),
               "missed": s.get("missed_intervals"), "cpu_core_tree": r["cpu_core_tree"],
               "cpu_core_workers": r["cpu_core_workers"], "cpu_core_bridge": r["cpu_core_bridge"],
               "cpu_s_per_call_min_tree": r["cpu_s_per_call_min_tree"], "foreign_cpu_core": r["foreign_cpu_core"],
               "steal_core": r["steal_core"], "run_delay_ms_per_s": r["run_delay_ms_per_s"],
               "rss_mb_bridge": r["rss_mb_bridge"], "rss_mb_workers": r["rss_mb_workers"],
               "decodes": r["decodes"], "log_warnings": s["log_warnings"], "dirs": {}}
        ok = row["egress_p99_ms"] is not None and row["egress_p99_ms"] < 5.0
        for d, ds in s["dirs"].items():
            row["dirs"][d] = {k: ds[k] for k in ("spoken", "recognised", "played", "dropped", "lost_without_event",
                                                 "same_as_offline", "segments")}
            for k in ("total_ms", "external_total_ms", "asr_ms", "decision_delay_ms", "after_decision_ms", "decode_ms",
                      "queue_wait_ms", "total_minus_queue_ms"):
                row["dirs"][d][k] = ds[k]
            p95 = ds["total_ms"].get("p95")
            ok = ok and p95 is not None and p95 < 1500 and ds["played"] == ds["spoken"]
        row["sustained"] = ok
        rows.append(row)
    return rows


def concurrency_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| configuration | N | egress p99 ms (p99.9 / max) | late/short | direction | spoken / recognised / played "
             "(dropped, lost) | total p50 / p95 | external p95 | asr p50 / p95 | · decision delay p95 | decode p50 / p95 | "
             "queue p95 | CPU core tree (workers) | CPU-s per call-min | RSS MB bridge / workers | decodes (not used) | "
             "other CPU core | meets p95 < 1.5 s, p99 < 5 ms, all played |", "|" + "---|" * 18]
    for r in rows:
        first = True
        for d, s in r["dirs"].items():
            drop = ", ".join(f"{k} {v}" for k, v in s["dropped"].items()) or "0"
            head = (f"| {r['config']} | {r['pairs']} | **{fmt(r['egress_p99_ms'], '.2f')}** ({fmt(r['egress_p999_ms'], '.1f')} / "
                    f"{fmt(r['egress_max_ms'], '.1f')}) | {r['late']}/{r['short']} |") if first else "| | | | |"
            tail = (f" {fmt(r['cpu_core_tree'], '.2f')} ({fmt(r['cpu_core_workers'], '.2f')}) | "
                    f"{fmt(r['cpu_s_per_call_min_tree'], '.1f')} | {fmt(r['rss_mb_bridge'])} / "
                    f"{', '.join(fmt(x) for x in r['rss_mb_workers'])} | {r['decodes'].get('decodes', '-')} "
                    f"({r['decodes'].get('decodes_not_used_for_a_final', '-')}) | {fmt(r['foreign_cpu_core'], '.2f')} | "
                    f"{'yes' if r['sustained'] else '**no**'} |") if first else " | | | | | | |"
            lines.append(
                f"{head} {d} | {s['spoken']} / {s['recognised']} / {s['played']} ({drop}, {s['lost_without_event']}) | "
                f"{pp(s['total_ms'])} / **{pp(s['total_ms'], 'p95')}** | {pp(s['external_total_ms'], 'p95')} | "
                f"{pp(s['asr_ms'])} / {pp(s['asr_ms'], 'p95')} | {pp(s['decision_delay_ms'], 'p95')} | "
                f"{pp(s['decode_ms'])} / {pp(s['decode_ms'], 'p95')} | {pp(s['queue_wait_ms'], 'p95')} |{tail}")
            first = False
    return "\n".join(lines)


def capacity(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per configuration: the largest N measured with every N up to it sustained; RSS slope per caller."""
    out = {}
    for cfg in dict.fromkeys(r["config"] for r in rows):
        rs = sorted((r for r in rows if r["config"] == cfg), key=lambda r: r["pairs"])
        best = 0
        for r in rs:
            if not r["sustained"]:
                break
            best = r["pairs"]
        xs = [r["pairs"] for r in rs]
        slope = {}
        for key, f in (("bridge", lambda r: r["rss_mb_bridge"]), ("workers_total", lambda r: sum(r["rss_mb_workers"]))):
            ys = [f(r) for r in rs]
            if len(xs) >= 2 and None not in ys:
                mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
                den = sum((x - mx) ** 2 for x in xs)
                slope[key] = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den / 2 if den else None
        out[cfg] = {"sustained_up_to_n": best, "measured_ns": xs,
                    "failing": [{"n": r["pairs"], "egress_p99_ms": r["egress_p99_ms"],
                                 "p95_ms": {d: s["total_ms"].get("p95") for d, s in r["dirs"].items()},
                                 "not_played": {d: s["spoken"] - s["played"] for d, s in r["dirs"].items()}}
                                for r in rs if not r["sustained"]],
                    "rss_mb_per_caller": slope}
    return out


def plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = ["tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple", "tab:brown"]
    for c, cfg in zip(colors, dict.fromkeys(r["config"] for r in rows)):
        rs = sorted((r for r in rows if r["config"] == cfg), key=lambda r: r["pairs"])
        xs = [r["pairs"] for r in rs]
        ax1.plot(xs, [r["egress_p99_ms"] for r in rs], color=c, marker="o", label=cfg)
        for d, ls in (("en->es", "-"), ("es->en", ":")):
            ax2.plot(xs, [r["dirs"].get(d, {}).get("total_ms", {}).get("p95", float("nan")) for r in rs], color=c,
                     marker="o", ls=ls, label=f"{cfg} {d}")
    ax1.axhline(5.0, color="k", ls="--", label="target 5 ms")
    ax1.set_yscale("log")
    ax1.set_xlabel("concurrent translated calls N (both callers talking)")
    ax1.set_ylabel("p99 |egress interval − 20 ms| (ms)")
    ax2.axhline(1500, color="k", ls="--", label="target p95 1.5 s")
    ax2.set_yscale("log")
    ax2.set_xlabel("concurrent translated calls N")
    ax2.set_ylabel("p95 end of speech → first translated packet (ms)")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def code_identity() -> dict[str, Any]:
    out = lb.code_identity()
    try:
        diff = subprocess.run(["git", "diff", "HEAD", "--", "xlbridge"], capture_output=True, cwd=ROOT, check=False).stdout
        out["xlbridge_diff_sha1"] = hashlib.sha1(diff).hexdigest()[:12]
    except OSError:
        pass
    return out


def effective_defaults() -> dict[str, Any]:
    """The Whisper defaults the code on disk has now (a fresh interpreter: this process's imports may be stale)."""
    code = ("import json, sys; sys.path.insert(0, 'bench'); import local_both as m; "
            "print(json.dumps(m.whisper_defaults(), default=str))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": r.stderr[-300:]}


def whisper_defaults() -> dict[str, Any]:
    import attrs

    from xlbridge.engines.local_asr.settings import LocalASRSettings
    from xlbridge.engines.whisper.settings import WhisperModel

    d = {f.name: f.default for f in attrs.fields(WhisperModel) if f.default is not attrs.NOTHING and f.name != "languages"}
    d["local_asr.workers (default)"] = LocalASRSettings().worker_count()
    return d


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phones", help=argparse.SUPPRESS)
    ap.add_argument("--utterances", type=int, default=20, help="measured utterances per direction (default 20)")
    ap.add_argument("--warmup-utterances", type=int, default=1)
    ap.add_argument("--latency-configs", default="default,pocketsphinx",
                    help="configurations for the latency runs (default: default,pocketsphinx)")
    ap.add_argument("--configs", default="default,w1t1,w2t1,w2t2",
                    help="configurations for the concurrency runs (default: default,w1t1,w2t1,w2t2); a name ending "
                         "in @1 pins the bridge to core 1; NAME=section.key:value+... defines one")
    ap.add_argument("--ns", default="1,2,4,6,8", help="concurrent calls (default 1,2,4,6,8)")
    ap.add_argument("--points", default=None,
                    help="instead of --ns x --configs: 'config:n,n;config:n' (e.g. 'default:1,4;w2t2:4')")
    ap.add_argument("--name", default="local_both", help="base name of the JSON (and PNG) written (default local_both)")
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds per concurrency point (default 30)")
    ap.add_argument("--gap", type=float, default=1.5, help="silence between a speaker's prompts in concurrency runs")
    ap.add_argument("--lead", type=float, default=2.0)
    ap.add_argument("--turn-quiet", type=float, default=0.7, help="latency: translation over after this much quiet, s")
    ap.add_argument("--turn-pause", type=float, default=0.3, help="latency: pause before the next turn, s")
    ap.add_argument("--turn-timeout", type=float, default=5.0, help="latency: give up on hearing a translation, s")
    ap.add_argument("--offline-tunings", default="end_silence_s:0.25;end_silence_s:0.2;early_decode_s:0",
                    help="offline Whisper tunings compared with the defaults ('key:value+key:value;...')")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds dropped at each egress stream's start")
    ap.add_argument("--cpu-skip", type=float, default=2.0)
    ap.add_argument("--base-port", type=int, default=21000)
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--no-publish", action="store_true")
    ap.add_argument("--no-probe", action="store_true", help="no decode-time probe in the bridge's workers")
    ap.add_argument("--skip-offline", action="store_true", help="offline: only the default tuning (the reference texts)")
    ap.add_argument("--keep-pcap", action="store_true")
    ap.add_argument("--foreign-limit", type=float, default=0.3,
                    help="a point during which more than this many cores ran outside the benchmark is measured again")
    ap.add_argument("--retries", type=int, default=2, help="re-measurements of a contaminated point (default 2)")
    ap.add_argument("--wait-other", type=float, default=1200.0, help="wait up to this for other benchmarks, s")
    ns = ap.parse_args(argv)
    if ns.phones:
        return phones_main(ns.phones)

    lat_cfgs = [c for c in ns.latency_configs.split(",") if c.strip()]
    conc_cfgs = [c for c in ns.configs.split(",") if c.strip()]
    for c in lat_cfgs + conc_cfgs:
        parse_config(c)
    ns_list = [int(x) for x in ns.ns.split(",") if x.strip()]
    points = [(c, n) for n in ns_list for c in conc_cfgs]
    if ns.points:
        points = []
        for group in ns.points.split(";"):
            if group.strip():
                c, _, nums = group.partition(":")
                parse_config(c.strip())
                points += [(c.strip(), int(x)) for x in nums.split(",") if x.strip()]
        points.sort(key=lambda p: p[1])
        conc_cfgs = list(dict.fromkeys(c for c, _ in points))
    os.makedirs(ns.out, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(SystemExit(128 + s)))
    info = egress_run.machine()
    info["lscpu_model"] = subprocess.run("lscpu | grep -i 'model name'", shell=True, capture_output=True,
                                         text=True).stdout.strip()
    info["command"] = " ".join(["python", "bench/local_both.py"] + (argv if argv is not None else sys.argv[1:]))
    info["code_start"] = code_identity()
    info["whisper_defaults"] = whisper_defaults()
    waited, seen = wait_others(ns.wait_other)
    info["waited_for_other_bench_s"], info["other_bench_seen_at_start"] = waited, seen
    info["loadavg_at_start"] = os.getloadavg()
    info["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    t_all = time.monotonic()

    # offline references, unpinned (Whisper's decode uses 2 threads)
    from xlbridge.engines.whisper.model import resolve

    wpath = resolve(None).path
    refs: dict[str, dict[str, str]] = {"whisper": {}, "pocketsphinx": {}}
    offline: dict[str, Any] = {}
    t = time.monotonic()
    tunings = {"default": {}}
    for item in (ns.offline_tunings.split(";") if ns.offline_tunings else []):
        if item.strip():
            kv = {k: json.loads(v) for k, _, v in (x.partition(":") for x in item.split("+"))}
            tunings["+".join(f"{k}={v}" for k, v in kv.items())] = kv
    tunings["cpu_threads=1"] = {"cpu_threads": 1}
    if ns.skip_offline:
        tunings = {"default": {}}
    offline["whisper"] = whisper_offline(wpath, PROMPTS_EN + PROMPTS_ES, tunings)
    refs["whisper"] = {n: r["text"] for n, r in offline["whisper"]["default"]["rows"].items()}
    texts, ps_detail = lb.reference_texts()
    refs["pocketsphinx"] = {"en:" + k: v for k, v in texts.items()}
    offline["pocketsphinx"] = {"texts": texts, "detail": ps_detail,
                               "endpoint_wait_ms": lb.stats([d.get("endpoint_wait_ms") for d in ps_detail.values()])}
    offline["wall_s"] = time.monotonic() - t
    print(f"offline references ({offline['wall_s']:.0f} s):", flush=True)
    for name, r in offline["whisper"]["default"]["rows"].items():
        print(f"  {name}: {r['text']!r} finals {r['finals']} wait {fmt(r.get('final_wait_ms'))} ms decode "
              f"{', '.join(fmt(x) for x in r['decode_ms'])} ms (early used {r['early_used']}, wasted {r['early_wasted']})",
              flush=True)
    for tname, o in offline["whisper"].items():
        print(f"  whisper {tname}: final wait {json.dumps(o['final_wait_ms'])}, decode {json.dumps(o['decode_ms'])}, "
              f"split {o['split']}, empty {o['empty']}, same text {o.get('same_text_as_default', '-')}", flush=True)
    print(f"  pocketsphinx endpointer wait: {json.dumps(offline['pocketsphinx']['endpoint_wait_ms'])}", flush=True)

    os.sched_setaffinity(0, {PHONE_CORE})
    tmp = tempfile.mkdtemp(prefix="xlboth-")
    plan = [("latency", c, 1) for c in lat_cfgs] + [("concurrency", c, n) for c, n in points]
    runs: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    ns.playback_s = {}
    try:
        queue = [(i, kind, c, n, 0) for i, (kind, c, n) in enumerate(plan, 1)]
        while queue:
            i, kind, c, n, attempt = queue.pop(0)
            w, seen = wait_others(ns.wait_other, clean_needed=2, poll_s=15.0)
            tag = f"{kind}-{c.replace('@', 'at').replace('=', '_').replace(':', '').replace('+', '_')}-n{n}"
            tag += f"-retry{attempt}" if attempt else ""
            try:
                r = run_point(kind, c, n, ns, tmp, tag, refs, ps_detail)
            except Exception as e:
                import traceback

                print(f"[{i}/{len(plan)}] {tag}: FAILED: {e!r}", flush=True)
                failed.append({"tag": tag, "kind": kind, "config": c, "pairs": n, "error": traceback.format_exc()})
                continue
            r["waited_for_other_bench_s"], r["other_bench_seen"] = w, seen
            r["other_bench_after"] = other_benches(my_pids())
            why = []
            if r["other_bench_after"]:
                why.append(f"another benchmark was measuring at the end: {r['other_bench_after']}")
            if r["foreign_cpu_core"] > ns.foreign_limit:
                why.append(f"{r['foreign_cpu_core']:.2f} core used outside this benchmark (limit {ns.foreign_limit})")
            if why and attempt < ns.retries:
                print(f"[{i}/{len(plan)}] {tag}: contaminated ({'; '.join(why)}): measured again", flush=True)
                excluded.append({"tag": tag, "reason": "; ".join(why), "summary": r["summary"]})
                queue.insert(0, (i, kind, c, n, attempt + 1))
                continue
            r["contamination"] = why
            runs.append(r)
            if kind == "latency" and r["engine"] == "whisper" and not ns.playback_s:
                per: dict[str, list[float]] = {}
                for u in r["utterances"]:
                    if u.get("playback_ms"):
                        per.setdefault(u["prompt"], []).append(u["playback_ms"] / 1000)
                ns.playback_s = {k: lb.med(v) for k, v in per.items()}
            s = r["summary"]
            eg = f"egress p99 {s['egress_p99_ms']:.2f} ms, " if "egress_p99_ms" in s else ""
            dirs = "; ".join(f"{d}: {x['spoken']}/{x['recognised']}/{x['played']} total p50 {pp(x['total_ms'])} "
                             f"p95 {pp(x['total_ms'], 'p95')} asr p50 {pp(x['asr_ms'])} decode p50 {pp(x['decode_ms'])}"
                             for d, x in s["dirs"].items())
            wd = r["whisper_defaults"]
            eff = {**{k: wd.get(k) for k in ("vad", "end_silence_s", "early_decode_s", "cpu_threads")},
                   **{k.rpartition(".")[2]: v for k, v in r["config_keys"].items()}}
            print(f"[{i}/{len(plan)}] {tag} (code {r['code'].get('head')}/{r['code'].get('xlbridge_diff_sha1')}, "
                  f"{', '.join(f'{k} {v}' for k, v in eff.items())}): {eg}{dirs}; cpu {r['cpu_core_tree']:.2f} core "
                  f"({r['cpu_s_per_call_min_tree']:.1f} CPU-s/call-min), workers {r['asr_workers']}, "
                  f"RSS {fmt(r['rss_mb_bridge'])} / {', '.join(fmt(x) for x in r['rss_mb_workers'])} MB, "
                  f"other cpu {r['foreign_cpu_core']:.2f}, warnings {s['log_warnings']}, "
                  f"t {time.monotonic() - t_all:.0f} s", flush=True)
            for b in r["log_warning_samples"][:3]:
                print(f"    log: {b[:200]}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["wall_s"] = time.monotonic() - t_all
    info["code_end"] = code_identity()
    if info["code_end"] != info["code_start"]:
        print("WARNING: xlbridge/ changed during the run (code_start != code_end)", flush=True)
    conc = concurrency_rows(runs)
    cap = capacity(conc)
    result = {"machine": info, "config": {k: v for k, v in vars(ns).items() if k != "phones"},
              "configs": {c: parse_config(c)[1] for c in lat_cfgs + conc_cfgs}, "prompts": PROMPTS,
              "offline": offline, "reference_texts": refs, "latency_table": latency_table(runs),
              "concurrency": conc, "capacity": cap, "failed_runs": failed, "excluded_runs": excluded, "runs": runs}
    out_json = os.path.join(ns.out, f"{ns.name}.json")
    with open(out_json, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print("\n## Latency, one call, per direction (ms)\n")
    print(result["latency_table"])
    if conc:
        print("\n## Concurrency (both callers of every call talking)\n")
        print(concurrency_table(conc))
        print("\n## Capacity\n")
        for cfg, v in cap.items():
            print(f"- {cfg}: sustained up to N = {v['sustained_up_to_n']} of {v['measured_ns']}; RSS per caller "
                  f"{json.dumps({k: round(x, 1) if x is not None else None for k, x in v['rss_mb_per_caller'].items()})} MB")
    png = None
    if conc:
        try:
            png = os.path.join(ns.out, f"{ns.name}.png")
            plot(conc, png, f"{info['date']}  {info['cpu_model']} ({info['nproc']} cores); {ns.seconds:g} s per point")
        except ImportError:
            png = None
    print(f"\nwrote {out_json}; wall {info['wall_s']:.0f} s")
    if not ns.no_publish:
        dest = os.path.join(HERE, "results")
        shutil.copy(out_json, os.path.join(dest, f"{ns.name}.json"))
        if png:
            shutil.copy(png, os.path.join(dest, f"{ns.name}.png"))
        print(f"published to {dest}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
