"""
Pipeline latency of a translated call with the cloud engines, against the
fake Deepgram / DeepL / ElevenLabs servers.

What is measured (the bridge's own added latency, not the fakes' delays):

1. **ingress -> ASR socket write**: from entering
   ``RTPEndpoint.datagramReceived`` for a packet to the WebSocket write of
   the Deepgram audio message carrying it (``sendMessage`` returned: the
   frame is in the TCP transport).  Also shown: to entering ``sendMessage``
   (bridge code only) and to the kernel ``send()`` of those bytes (Twisted
   buffers ``write`` and sends from its write-readiness loop).
2. **TTS chunk -> first RTP packet carrying it**: from ``Utterance.add``
   (the TTS client handing a chunk to the pipeline's ``on_audio``) to the
   return of ``send_frame`` for the first egress packet holding any of its
   samples.  Split into chunks that found the line idle (less than one
   frame of earlier audio still to send: what the pipeline itself adds),
   first chunks of utterances, and all chunks (mostly playout backlog: the
   fake TTS streams faster than real time).
3. **end of speech -> first translated packet on the wire**, per utterance,
   from the ``PlaybackStarted`` events (``total_ms`` and the per-stage
   fields) and, independently, from the probes: reactor time the bridge
   received the RTP packet holding the last loud sample of the phrase, to
   the ``send_frame`` of the utterance's first packet.  ``own`` subtracts
   the engine delays the fakes were configured with.

Processes: each fake runs as ``python -m tests.fakes NAME --port 0 ...``
(pinned to CPU 0 with ``taskset`` unless ``--no-pin``); every run of the
bridge is a fresh child process of this script (pinned to CPU 1) holding
the bridge, both simulated phones and the probes (bench/pipeline_probe.py),
all on one reactor.  Phone 7777 (en) says ``--utterances`` short phrases
made of tone-words (plus ``--warmup`` unmeasured ones first) separated by
``--gap`` seconds of silence; phone 8888 (es) is silent.  The speaking
phone's packet clock runs ``--phone-skew-ppm`` slow, so the phase between
its packets and the bridge's egress ticks sweeps the whole 20 ms during a
run (the fakes' delays are exact timers: without the skew every utterance
of a run would meet the egress clock at the same phase).

Engine delays (defaults): Deepgram endpointing 300 ms (client setting) with
the fake adding nothing, so a final leaves the fake when the bridge has
sent it 300 ms of silence after the last loud frame; DeepL 150 ms; ElevenLabs
first byte 100 ms, then a chunk every 10 ms (faster than real time).

A run starts only when no other ``bench/*.py`` runs and no core is busier
than ``--max-busy`` with other work; a run during which another benchmark
ran, or others used more than that of the bridge's core, is repeated (up to
three tries; the quietest is kept).

Run:  python bench/pipeline_latency.py [--utterances 20] [--repeats 2]
Experiments: ``--nodelay off --tag nagle`` (Deepgram socket with Nagle, as
before de84f88), ``--granularities segment --tts-chunk-interval-ms 40 --tag
paced`` (TTS slower than real time: underruns).  ``--rerender [--tag T]``
rebuilds the tables of an earlier invocation from bench/out.

Writes bench/out/pipeline_latency[-TAG].json (plus raw per-run files and
logs); an untagged invocation also writes bench/results/pipeline_latency.json.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import selectors
import shutil
import subprocess
import sys
import time
from bisect import bisect_right
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

OUT = ROOT / "bench" / "out"
RESULTS = ROOT / "bench" / "results"

FRAME = 320  # samples per 20 ms packet at 16 kHz
SLOT_FRAMES = 13  # tonewords: 200 ms tone + 60 ms gap = 13 frames per word
TONE_FRAMES = 10

#: Short English phrases whose words and Spanish translations are all in
#: the tone-word vocabulary (the fake TTS can speak them, phone 8888 can
#: decode them).
PHRASES = [
    "hello world", "how are you", "good morning", "thank you", "where is the hospital",
    "yes", "one two three", "bye", "how are you today", "no", "hello", "where is the hospital today",
    "two three", "good morning how are you", "thank you bye", "today", "one", "yes thank you",
    "hello how are you", "three",
]
WARMUP_PHRASE = "hello"


# -- statistics -------------------------------------------------------------------


#: Pseudo-granularities that run Deepgram Flux instead of Nova.
FLUX_MODES = ("flux", "flux-noeager")


def stats(values: Sequence[float]) -> dict[str, Any]:
    a = np.asarray([v for v in values if v is not None], dtype=float)
    if len(a) == 0:
        return {"n": 0}
    return {
        "n": int(len(a)),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "min": float(a.min()),
        "mean": float(a.mean()),
    }


# -- child: one run of the bridge ----------------------------------------------------


def build_speech(n: int, warmup: int, gap_s: float, lead_s: float, pause_ms: int = 0,
                 pause_every: int = 0) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """
    The speaking phone's audio and its phrases.  With ``pause_every`` K,
    every K-th measured phrase of two words or more has ``pause_ms`` more
    silence after its first word (a pause inside the sentence: Flux says
    EagerEndOfTurn there, then TurnResumed).
    """
    from tests.fakes.deepl import translate_words
    from tests.fakes.tonewords import encode_words

    parts = [np.zeros(int(round(lead_s * 50)) * FRAME, dtype=np.int16)]
    pos = len(parts[0]) // FRAME
    gap = int(round(gap_s * 50))
    phrases = []
    for i in range(warmup + n):
        text = WARMUP_PHRASE if i < warmup else PHRASES[(i - warmup) % len(PHRASES)]
        audio = encode_words(text)
        words = len(audio) // (SLOT_FRAMES * FRAME)
        extra = 0
        split = text.split()
        if i >= warmup and pause_every and pause_ms and (i - warmup) % pause_every == 0 and len(split) > 1:
            extra = int(round(pause_ms / 20))
            audio = np.concatenate([encode_words(split[0]), np.zeros(extra * FRAME, dtype=np.int16),
                                    encode_words(" ".join(split[1:]))])
        phrases.append({
            "index": i,
            "warmup": i < warmup,
            "text": text,
            "expected": translate_words(text, "EN", "ES"),
            "first_frame": pos,
            # the packet holding the last loud sample of the phrase
            "last_loud_frame": pos + extra + SLOT_FRAMES * (words - 1) + TONE_FRAMES - 1,
            "inner_pause_ms": extra * 20,
        })
        parts.append(audio)
        pos += len(audio) // FRAME
        parts.append(np.zeros(gap * FRAME, dtype=np.int16))
        pos += gap
    return np.concatenate(parts), phrases


def run_one(args: argparse.Namespace) -> None:
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    from time import perf_counter

    from twisted.internet import defer, reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from pipeline_probe import (
        F_C0, F_C1, F_EXT, F_R_SENT, F_T_SENT, F_UTT, NMSG, NOTSENT, R_IN, SEQ, T_EXIT, T_IN, T_KERNEL, T_WS0, T_WS1,
        EXT, Probe,
    )
    from tests.fakes.tonewords import decode_words
    from xlbridge.audio.codecs import get_codec
    from xlbridge.bridge import BridgeService
    from xlbridge.config import load_config
    from xlbridge.engines.base import Transcript
    from xlbridge.engines.select import choose_engines
    from xlbridge.events import PlaybackStarted, SpeculationEvent, TranscriptEvent, UtteranceDropped
    from xlbridge.pipeline.factory import translate_factory
    from xlbridge.pipeline.translate import TranslateSettings
    from xlbridge.tools.phone import Phone

    log = open(args.log, "w") if args.log else open(os.devnull, "w")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log)], redirectStandardIO=False)

    probe = Probe(reactor, nodelay=args.nodelay)
    probe.install()
    speech, phrases = build_speech(args.utterances, args.warmup, args.gap, args.lead, args.inner_pause_ms,
                                   args.inner_pause_every)
    environ = {
        "DEEPGRAM_API_KEY": "test-key",
        "DEEPL_AUTH_KEY": "test-key:fx",
        "ELEVENLABS_API_KEY": "test-key",
        "XLBRIDGE_DEEPGRAM_URL": args.deepgram_url,
        "XLBRIDGE_DEEPL_URL": args.deepl_url,
        "XLBRIDGE_ELEVENLABS_URL": args.elevenlabs_url,
    }
    options: dict[str, Any] = {"deepgram": {"endpointing": args.endpointing}}
    granularity = args.granularity
    if granularity in FLUX_MODES:
        # Deepgram Flux (/v2/listen) with the multilingual model; "flux":
        # eager end of turn, so MT and TTS start at the eager event.
        options = {"deepgram": {"api": "flux", "flux_model": "flux-general-multi", "eot_threshold": 0.7}}
        if granularity == "flux":
            options["deepgram"]["eager_eot_threshold"] = 0.5
        granularity = "segment"
    events: list[Any] = []
    result: dict[str, Any] = {}

    @defer.inlineCallbacks
    def main() -> Any:
        choice = choose_engines("cloud", reactor, environ, options)
        probe.wrap_engines(choice.engines)
        config = load_config({"ports": "7777=0,8888=0", "langs": "en,es", "reply-codec": args.reply_codec})
        bridge = BridgeService(
            config, reactor,
            pipeline_factory=translate_factory(choice.engines, TranslateSettings(granularity=granularity)),
            observers=[events.append], services=choice.services,
        )
        bridge.privilegedStartService()
        bridge.startService()
        codec = get_codec("slin16")
        phones, ports = [], []
        for ext, audio in (("7777", speech), ("8888", np.zeros_like(speech))):
            port = bridge.listeners[ext].port
            p = Phone(reactor, audio, codec, ("127.0.0.1", port.getHost().port), tail=args.tail)
            if ext == "7777" and args.phone_skew_ppm:
                # A speaking phone whose packet clock runs slightly slow
                # against the bridge's egress clock (as two independent
                # clocks do): the phase between speech packets and egress
                # ticks sweeps through the whole 20 ms during a run instead
                # of staying locked at one value for the run.  Only the
                # pacing changes (Phone reads ptime_ms for its period).
                p.ptime_ms = 20 * (1 + args.phone_skew_ppm / 1e6)
            ports.append(reactor.listenUDP(0, p, interface="127.0.0.1"))
            phones.append(p)
        t0 = time.monotonic()
        plays = [p.play() for p in phones]
        # Stop recording egress ticks just before the phones stop listening:
        # building their reports blocks the reactor (bench work, not bridge).
        sending_s = len(speech) / 16000 * (1 + args.phone_skew_ppm / 1e6)
        reactor.callLater(sending_s + args.tail - 0.3, setattr, probe, "ticks_closed", True)
        probe.t_first = perf_counter()  # type: ignore[attr-defined]
        reports = yield defer.gatherResults(plays)
        wall = time.monotonic() - t0
        status = bridge.status()
        eg = bridge.egress
        egress = {"ticks": eg.ticks, "late_ticks": eg.late_ticks, "skipped": eg.skipped,
                  "max_lateness_ms": eg.max_lateness * 1000}
        yield bridge.stopService()
        for port in ports:
            yield port.stopListening()
        probe.uninstall()
        result.update(analyse(phones, reports, phrases, status, egress, wall))

    def analyse(phones: list[Any], reports: list[Any], phrases: list[dict[str, Any]], status: Any,
                egress: dict[str, Any], wall: float) -> dict[str, Any]:
        # (1) ingress -> ASR socket write ------------------------------------
        ing: dict[str, list[float]] = {"to_sendmessage": [], "to_ws_write": [], "to_kernel": [],
                                       "handler": []}
        per_leg: dict[str, list[float]] = {"7777": [], "8888": []}
        not_sent = {"7777": 0, "8888": 0}
        multi = 0
        held = {"checked": 0, "held": 0}
        for r in probe.ingress:
            if r[T_WS1] is None:
                not_sent[r[EXT]] = not_sent.get(r[EXT], 0) + 1
                continue
            if r[NMSG] > 1:
                multi += 1
            ing["to_sendmessage"].append((r[T_WS0] - r[T_IN]) * 1e3)
            ing["to_ws_write"].append((r[T_WS1] - r[T_IN]) * 1e3)
            ing["handler"].append((r[T_EXIT] - r[T_IN]) * 1e3)
            if r[T_KERNEL] is not None:
                ing["to_kernel"].append((r[T_KERNEL] - r[T_IN]) * 1e3)
            if r[NOTSENT] is not None:
                held["checked"] += 1
                held["held"] += r[NOTSENT] > 0
            per_leg[r[EXT]].append((r[T_WS1] - r[T_IN]) * 1e3)
        first_forwarded: dict[str, Optional[int]] = {}
        for ext in ("7777", "8888"):
            idx = [i for i, r in enumerate(x for x in probe.ingress if x[EXT] == ext) if r[T_WS1] is not None]
            first_forwarded[ext] = idx[0] if idx else None

        # outliers: what else was going on ----------------------------------
        inf = float("inf")

        def overlaps(t0: float, t1: float) -> list[str]:
            tags = []
            if any(g0 < t1 and g1 > t0 for g0, g1, _ in probe.gc_pauses):
                tags.append("gc")
            if any(w0 < t1 and (w1 or inf) > t0 for w0, w1 in probe.mt_windows):
                tags.append("mt")
            if any(w0 < t1 and (w1 or inf) > t0 for w0, w1 in probe.tts_windows):
                tags.append("tts")
            return tags or ["none"]

        def tally(items: list[tuple[float, float]]) -> dict[str, int]:
            out: dict[str, int] = {"n": len(items)}
            for t0, t1 in items:
                tags = overlaps(t0, t1)
                for tag in tags:
                    out[tag] = out.get(tag, 0) + 1
            return out

        span = (probe.tick_times[-1] - probe.t_first) if probe.tick_times else 1.0

        def busy(ws: list[list[Optional[float]]]) -> float:
            return sum(((w1 or w0) - w0) for w0, w1 in ws) / span

        gc_by_gen: dict[str, Any] = {}
        for g0, g1, gen in probe.gc_pauses:
            e = gc_by_gen.setdefault(str(gen), {"n": 0, "max_ms": 0.0, "total_ms": 0.0})
            e["n"] += 1
            e["max_ms"] = max(e["max_ms"], (g1 - g0) * 1e3)
            e["total_ms"] += (g1 - g0) * 1e3
        outliers = {
            "ingress_over_1ms": tally([(r[T_IN], r[T_WS1]) for r in probe.ingress
                                       if r[T_WS1] is not None and (r[T_WS1] - r[T_IN]) > 1e-3]),
            "ticks_late_over_3ms": tally([(t - lat, t) for t, lat in zip(probe.tick_times, probe.tick_lateness)
                                          if lat > 3e-3]),
            "share_of_time": {"mt_in_flight": busy(probe.mt_windows), "tts_in_flight": busy(probe.tts_windows),
                              "gc": sum(g1 - g0 for g0, g1, _ in probe.gc_pauses) / span},
            "gc": gc_by_gen,
        }

        # (2) TTS chunk -> first RTP packet ------------------------------------
        frames_of: dict[int, list[list[Any]]] = {}
        for f in probe.frames:
            frames_of.setdefault(id(f[F_UTT]), []).append(f)
        ends_of = {k: [f[F_C1] for f in v] for k, v in frames_of.items()}
        tts: dict[str, list[float]] = {"idle": [], "first": [], "all": []}
        unsent = 0
        for (u, t_add, _r, first, n, buffered, ahead, at_head) in probe.chunks:
            if n <= 0:
                continue
            fl = frames_of.get(id(u), [])
            i = bisect_right(ends_of.get(id(u), []), first)
            if i >= len(fl) or fl[i][F_T_SENT] is None:
                unsent += 1
                continue
            ms = (fl[i][F_T_SENT] - t_add) * 1e3
            tts["all"].append(ms)
            if first == 0:
                tts["first"].append(ms)
            if at_head and ahead == 0 and buffered < FRAME:
                tts["idle"].append(ms)

        # (3) end of speech -> first translated packet -------------------------
        a, b = phones
        arrival = {}
        for r in probe.ingress:
            if r[EXT] == "7777":
                arrival[(r[SEQ] - a.first_seq) & 0xFFFF] = r[R_IN]
        first_frame_of = {}
        for f in probe.frames:
            u = f[F_UTT]
            if f[F_C0] == 0 and f[F_EXT] == "8888" and u.uid not in first_frame_of:
                first_frame_of[u.uid] = f
        rb = reports[1]
        loud_arrivals = []
        if rb.lost == 0 and rb.reordered == 0:
            audio = rb.audio
            for i, pkt in enumerate(rb.packets):
                seg = audio[i * FRAME:(i + 1) * FRAME]
                if len(seg) and int(np.abs(seg.astype(np.int32)).max()) > 1000:
                    loud_arrivals.append(pkt[0])
        started = [e for e in events if isinstance(e, PlaybackStarted) and e.extension == "8888"]
        finals = [e for e in events if isinstance(e, TranscriptEvent) and e.extension == "7777"
                  and e.is_final and e.text]
        dropped = [e for e in events if isinstance(e, UtteranceDropped)]
        asr_wait = {"flux": args.flux_eager_ms, "flux-noeager": args.flux_eot_ms}.get(args.granularity, args.endpointing)
        configured = asr_wait + args.dg_latency * 1e3 + args.deepl_latency * 1e3 + args.tts_first_byte_ms
        utts = []
        for j, e in enumerate(started):
            # The j-th utterance played is the j-th phrase (each is played
            # once, in order); its uid is not: a withdrawn speculation took one.
            ph = phrases[j] if 0 <= j < len(phrases) else None
            row: dict[str, Any] = {
                "uid": e.utterance, "text": e.text, "phrase": ph["text"] if ph else None,
                "warmup": bool(ph and ph["warmup"]),
                "text_ok": bool(ph and e.text == ph["expected"]),
                "total_ms": e.total_ms, "asr_ms": e.asr_ms, "mt_ms": e.mt_ms,
                "tts_first_byte_ms": e.tts_first_byte_ms, "queue_wait_ms": e.queue_wait_ms,
            }
            parts = [e.asr_ms, e.mt_ms, e.tts_first_byte_ms, e.queue_wait_ms]
            if None not in parts and e.total_ms is not None:
                row["stage_sum_ms"] = float(sum(parts))
                row["residual_ms"] = e.total_ms - row["stage_sum_ms"]
            end_r = arrival.get(ph["last_loud_frame"]) if ph else None
            ff = first_frame_of.get(e.utterance)
            if end_r is not None and ff is not None:
                row["true_total_ms"] = (ff[F_R_SENT] - end_r) * 1e3
                row["own_ms"] = row["true_total_ms"] - configured
                if e.total_ms is not None:
                    row["total_minus_true_ms"] = e.total_ms - row["true_total_ms"]
                later = [t for t in loud_arrivals if t >= ff[F_R_SENT] - 0.001]
                if later:
                    row["phone_ms"] = (later[0] - end_r) * 1e3
            utts.append(row)
        measured = [u for u in utts if not u["warmup"]]

        def col(name: str) -> list[float]:
            return [u[name] for u in measured if u.get(name) is not None]

        heard = decode_words(rb.audio)
        expected_words = " ".join(p["expected"] for p in phrases).split()
        span_end_dating = "speech_end" not in {f.name for f in Transcript.__attrs_attrs__}
        return {
            "granularity": args.granularity,
            "wall_s": wall,
            "ingress": {k: stats(v) for k, v in ing.items()},
            "ingress_per_leg": {k: stats(v) for k, v in per_leg.items()},
            "ingress_not_forwarded": not_sent,
            "ingress_first_forwarded_packet": first_forwarded,
            "ingress_multi_message": multi,
            "ingress_held_by_kernel_after_send": held,
            "tts": {k: stats(v) for k, v in tts.items()},
            "tts_unsent_chunks": unsent,
            "outliers": outliers,
            "utterances": utts,
            "e2e": {k: stats(col(k)) for k in ("total_ms", "true_total_ms", "own_ms", "phone_ms", "asr_ms", "mt_ms",
                                               "tts_first_byte_ms", "queue_wait_ms", "stage_sum_ms",
                                               "residual_ms", "total_minus_true_ms")},
            "e2e_expected": len(phrases) - args.warmup,
            "e2e_measured": len(measured),
            "e2e_text_ok": sum(1 for u in measured if u["text_ok"]),
            "finals": len(finals),
            "finals_speech_final": sum(1 for f in finals if f.speech_final),
            "dropped": [(d.reason, d.text) for d in dropped],
            "speculations": {o: sum(1 for e in events if isinstance(e, SpeculationEvent) and e.outcome == o)
                             for o in ("started", "used", "wasted")},
            "heard_ok": heard == expected_words,
            "heard_words": len(heard),
            "expected_words": len(expected_words),
            "phone_8888": {"lost": rb.lost, "reordered": rb.reordered, "received": rb.packets_received},
            "egress": egress,
            "tick_lateness_ms": stats([x * 1e3 for x in probe.tick_lateness]),
            "deepgram_tcp_nodelay_at_open": probe.nodelay_seen,
            "nodelay_experiment": args.nodelay,
            "pipeline_dates_speech_end_from": "span end (start+duration)" if span_end_dating
            else "last word end (Transcript.speech_end) when present",
            "configured_engine_ms": configured,
            "raw": {
                "ingress_to_ws_write_ms": [round(x, 4) for x in ing["to_ws_write"]],
                "ingress_to_kernel_ms": [round(x, 4) for x in ing["to_kernel"]],
                "ingress_to_sendmessage_ms": [round(x, 4) for x in ing["to_sendmessage"]],
                "tts_idle_ms": [round(x, 3) for x in tts["idle"]],
                "tts_first_ms": [round(x, 3) for x in tts["first"]],
                "tts_all_ms": [round(x, 3) for x in tts["all"]],
                "tick_lateness_ms": [round(x * 1e3, 3) for x in probe.tick_lateness],
            },
        }

    def done(_: Any) -> None:
        t = os.times()
        result["child_cpu_s"] = t.user + t.system
        Path(args.json).write_text(json.dumps(result))
        reactor.stop()

    def failed(f: Any) -> None:
        print(f.getTraceback(), file=sys.stderr)
        result["error"] = f.getErrorMessage()
        Path(args.json).write_text(json.dumps(result))
        reactor.stop()

    reactor.callWhenRunning(lambda: main().addCallbacks(done, failed))
    reactor.run()
    log.close()


# -- parent: fakes, runs, report ------------------------------------------------------


#: Other benchmarks that must not run while this one measures: any
#: ``bench/*.py`` process but this one (pgrep -f on the command line).
OTHER_BENCHES = ("bench/*.py",)


def others_running() -> list[str]:
    r = subprocess.run(["pgrep", "-af", r"bench/[A-Za-z0-9_]+\.py"], capture_output=True, text=True)
    found = []
    for line in r.stdout.splitlines():
        pid, _, cmd = line.partition(" ")
        if "pipeline_latency" in cmd or int(pid) == os.getpid():
            continue
        script = next((w for w in cmd.split() if w.endswith(".py") and "bench/" in w), cmd[:60])
        found.append(f"{script.split('/work/main/')[-1]} (pid {pid})")
    return found


def machine_busy(sample_s: float = 3.0) -> float:
    """Largest per-core busy fraction over ``sample_s`` (nothing of ours runs then)."""
    a = cpu_busy()
    time.sleep(sample_s)
    b = cpu_busy()
    span = b["wall"] - a["wall"]
    return max((b[c] - a[c]) / span for c in b if c != "wall")


def wait_for_other_bench(max_wait_s: float = 2400, poll_s: float = 30, max_busy: float = 1.0) -> None:
    start = time.monotonic()
    while True:
        busy = others_running()
        load = machine_busy() if not busy and max_busy < 1.0 else 0.0
        if not busy and load <= max_busy:
            return
        if not busy:
            busy = [f"other processes ({100 * load:.0f} % of a core busy)"]
        if time.monotonic() - start > max_wait_s:
            sys.exit(f"{busy} still running; refusing to measure (use --no-wait to override)")
        print(f"waiting for {', '.join(busy)} to finish ...", flush=True)
        time.sleep(poll_s)


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


class Fake:
    def __init__(self, name: str, argv: list[str], cpu: Optional[int], log: Path) -> None:
        cmd = [sys.executable, "-m", "tests.fakes", name, "--port", "0", *argv]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self.name = name
        self.cmd = cmd
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.url = self._read_url()

    def _read_url(self, timeout: float = 20.0) -> str:
        prefix = f"fake {self.name} listening on "
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.5):
                if self.proc.poll() is not None:
                    break
                continue
            data = os.read(fd, 4096)
            if not data:
                break
            buf += data
            for line in buf.decode("utf-8", "replace").splitlines():
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
        self.stop()
        raise RuntimeError(f"fake {self.name} did not start: {' '.join(self.cmd)}")

    def cpu_s(self) -> float:
        """CPU seconds this fake used so far (it and, with taskset, its child)."""
        total = 0.0
        for pid in self._pids():
            try:
                f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
        return total

    def _pids(self) -> list[int]:
        return [self.proc.pid]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def one_run(args: argparse.Namespace, granularity: str, rep: int) -> dict[str, Any]:
    tag = f"pipeline_latency{'-' + args.tag if args.tag else ''}-{granularity}-r{rep}"
    fakes = []
    try:
        if granularity in FLUX_MODES:
            fakes.append(Fake("deepgram-flux", ["--latency", str(args.dg_latency), "--eager-ms", str(args.flux_eager_ms),
                                                "--eot-ms", str(args.flux_eot_ms)], args.fake_cpu,
                              OUT / f"{tag}-deepgram-flux.log"))
        else:
            fakes.append(Fake("deepgram", ["--latency", str(args.dg_latency)], args.fake_cpu,
                              OUT / f"{tag}-deepgram.log"))
        fakes.append(Fake("deepl", ["--latency", str(args.deepl_latency)], args.fake_cpu, OUT / f"{tag}-deepl.log"))
        fakes.append(Fake("elevenlabs", ["--first-byte-ms", str(args.tts_first_byte_ms),
                                         "--chunk-interval-ms", str(args.tts_chunk_interval_ms)],
                          args.fake_cpu, OUT / f"{tag}-elevenlabs.log"))
        raw = OUT / f"{tag}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--run-one", "--granularity", granularity,
               "--json", str(raw), "--log", str(OUT / f"{tag}.log"),
               "--deepgram-url", fakes[0].url, "--deepl-url", fakes[1].url, "--elevenlabs-url", fakes[2].url]
        cmd += child_flags(args)
        if args.bridge_cpu is not None:
            cmd += ["--cpu", str(args.bridge_cpu)]
        print(f"run {tag}: {args.warmup}+{args.utterances} utterances ...", flush=True)
        before = cpu_busy()
        child = subprocess.Popen(cmd, cwd=ROOT)
        seen: set[str] = set()
        deadline = time.monotonic() + 600
        while child.poll() is None:
            if not args.no_wait:
                seen.update(others_running())
            if time.monotonic() > deadline:
                child.kill()
            time.sleep(2)
        after = cpu_busy()
        fakes_cpu = sum(f.cpu_s() for f in fakes)
        if child.returncode:
            raise RuntimeError(f"{tag}: run failed with exit status {child.returncode}")
        result = json.loads(raw.read_text())
        result["other_benchmarks_seen"] = sorted(seen)
        # CPU the rest of the machine used meanwhile, per core (the bridge's
        # core minus the bridge, the fakes' core minus the fakes).
        span = after["wall"] - before["wall"]
        busy = {c: (after[c] - before[c]) for c in after if c != "wall"}
        result["cpu"] = {"wall_s": span, "busy_s": busy, "bridge_s": result.get("child_cpu_s"),
                         "fakes_s": fakes_cpu}
        if args.bridge_cpu is not None and args.fake_cpu is not None:
            result["cpu"]["other_on_bridge_core"] = (busy.get(f"cpu{args.bridge_cpu}", 0.0)
                                                     - (result.get("child_cpu_s") or 0.0)) / span
            result["cpu"]["other_on_fakes_core"] = (busy.get(f"cpu{args.fake_cpu}", 0.0) - fakes_cpu) / span
        if "error" in result:
            raise RuntimeError(f"{tag}: {result['error']}")
        result["run"] = tag
        result["repeat"] = rep
        return result
    finally:
        for f in fakes:
            f.stop()


def child_flags(args: argparse.Namespace) -> list[str]:
    return ["--utterances", str(args.utterances), "--warmup", str(args.warmup), "--gap", str(args.gap),
            "--lead", str(args.lead), "--tail", str(args.tail), "--phone-skew-ppm", str(args.phone_skew_ppm), "--endpointing", str(args.endpointing),
            "--dg-latency", str(args.dg_latency), "--deepl-latency", str(args.deepl_latency),
            "--tts-first-byte-ms", str(args.tts_first_byte_ms),
            "--tts-chunk-interval-ms", str(args.tts_chunk_interval_ms), "--reply-codec", args.reply_codec,
            "--nodelay", args.nodelay, "--inner-pause-ms", str(args.inner_pause_ms),
            "--inner-pause-every", str(args.inner_pause_every), "--flux-eager-ms", str(args.flux_eager_ms), "--flux-eot-ms", str(args.flux_eot_ms)]


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version(), "machine": platform.machine()}


def code_identity() -> dict[str, Any]:
    files = sorted((ROOT / "xlbridge").rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--name-only", "HEAD", "--", "xlbridge"], cwd=ROOT,
                           capture_output=True, text=True).stdout.split()
    return {"git_head": head, "xlbridge_modified": dirty, "xlbridge_sha256": h.hexdigest()[:16]}


def fmt(x: Optional[float], digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def stat_row(label: str, s: dict[str, Any], digits: int = 2) -> str:
    if not s.get("n"):
        return f"| {label} | 0 | – | – | – | – |"
    return (f"| {label} | {s['n']} | {fmt(s['p50'], digits)} | {fmt(s['p95'], digits)} | "
            f"{fmt(s['p99'], digits)} | {fmt(s['max'], digits)} |")


HEAD = "| | n | p50 | p95 | p99 | max |\n|---|---:|---:|---:|---:|---:|"


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    lines: list[str] = []
    summary: dict[str, Any] = {"runs": []}
    pooled: dict[str, dict[str, Any]] = {}
    by_gran: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_gran.setdefault(r["granularity"], []).append(r)

    lines.append("**(1) ingress packet → ASR WebSocket write** (ms, both legs, packets forwarded while the "
                 "socket was open)\n")
    lines.append(HEAD)
    for r in runs:
        lines.append(stat_row(f"{r['run']}: → sendMessage returned", r["ingress"]["to_ws_write"], 3))
    allw = [x for r in runs for x in r["raw"]["ingress_to_ws_write_ms"]]
    allk = [x for r in runs for x in r["raw"]["ingress_to_kernel_ms"]]
    alls = [x for r in runs for x in r["raw"]["ingress_to_sendmessage_ms"]]
    pooled["ingress_to_sendmessage"] = stats(alls)
    pooled["ingress_to_ws_write"] = stats(allw)
    pooled["ingress_to_kernel"] = stats(allk)
    lines.append(stat_row("**all runs: → entering sendMessage**", pooled["ingress_to_sendmessage"], 3))
    lines.append(stat_row("**all runs: → sendMessage returned (the write)**", pooled["ingress_to_ws_write"], 3))
    lines.append(stat_row("all runs: → kernel send() of that message", pooled["ingress_to_kernel"], 3))
    nf = {k: sum(r["ingress_not_forwarded"].get(k, 0) for r in runs) for k in ("7777", "8888")}
    hc = sum(r["ingress_held_by_kernel_after_send"]["checked"] for r in runs)
    hh = sum(r["ingress_held_by_kernel_after_send"]["held"] for r in runs)
    lines.append(f"\nAudio messages still unsent in the kernel right after their send() (SIOCOUTQNSD > 0, "
                 f"i.e. held back by Nagle): {hh} of {hc} ({100 * hh / max(1, hc):.1f} %); TCP_NODELAY on the "
                 f"Deepgram socket when it opened: {sorted(set(x for r in runs for x in r['deepgram_tcp_nodelay_at_open']))}"
                 f"{'' if runs[0].get('nodelay_experiment', 'keep') == 'keep' else ' (then forced ' + runs[0]['nodelay_experiment'] + ' by the bench)'}.")
    def tally_line(key: str) -> str:
        tot: dict[str, int] = {}
        for r in runs:
            for k, v in r["outliers"][key].items():
                tot[k] = tot.get(k, 0) + v
        n = tot.pop("n", 0)
        return f"{n} (overlapping: " + ", ".join(f"{k} {v}" for k, v in sorted(tot.items())) + ")"

    share = {k: float(np.median([r["outliers"]["share_of_time"][k] for r in runs])) for k in
             ("mt_in_flight", "tts_in_flight", "gc")}
    gcmax = max((g["max_ms"] for r in runs for g in r["outliers"]["gc"].values()), default=0.0)
    lines.append(f"\nOutliers, all runs: ingress → write over 1 ms: {tally_line('ingress_over_1ms')}; egress ticks "
                 f"more than 3 ms late: {tally_line('ticks_late_over_3ms')}.  Share of the time with a DeepL "
                 f"request in flight (pool thread) {100 * share['mt_in_flight']:.0f} %, an ElevenLabs stream "
                 f"{100 * share['tts_in_flight']:.0f} %, in GC {100 * share['gc']:.2f} % (longest GC pause "
                 f"{gcmax:.1f} ms).")
    lines.append(f"\nPackets not written synchronously (arrived before the socket opened, spooled and "
                 f"replayed): {nf} over {len(runs)} runs; packets that produced more than one message: "
                 f"{sum(r['ingress_multi_message'] for r in runs)}.\n")

    lines.append("**(2) TTS chunk (`Utterance.add`) → first RTP packet carrying it** (ms)\n")
    lines.append(HEAD)
    for r in runs:
        lines.append(stat_row(f"{r['run']}: idle line", r["tts"]["idle"], 1))
    for kind, label in (("idle", "**all runs: idle line (< 1 frame queued ahead)**"),
                        ("first", "all runs: first chunk of each utterance"),
                        ("all", "all runs: every chunk (includes playout backlog)")):
        pooled[f"tts_{kind}"] = stats([x for r in runs for x in r["raw"][f"tts_{kind}_ms"]])
        lines.append(stat_row(label, pooled[f"tts_{kind}"], 1))
    pooled["tick_lateness"] = stats([x for r in runs for x in r["raw"]["tick_lateness_ms"]])
    lines.append(stat_row("egress tick lateness (all ticks)", pooled["tick_lateness"], 2))
    lines.append("")

    lines.append("**(3) end of speech → first translated packet** (ms, per utterance, warm-up excluded)\n")
    lines.append("| run | n | `total_ms` p50 / p95 / p99 / max | independent p50 / p99 / max | "
                 "own (indep. − engines) p50 / p99 | asr | mt | tts 1st byte | queue wait | "
                 "total − stage sum (max \\|x\\|) | total − indep. p50 |")
    lines.append("|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|")

    def e2e_row(label: str, rows: list[dict[str, Any]]) -> str:
        def col(name: str) -> dict[str, Any]:
            return stats([u[name] for u in rows if u.get(name) is not None])
        t, tt, own = col("total_ms"), col("true_total_ms"), col("own_ms")
        res = [abs(u["residual_ms"]) for u in rows if u.get("residual_ms") is not None]
        diff = col("total_minus_true_ms")
        return (f"| {label} | {t.get('n', 0)} | {fmt(t.get('p50'), 0)} / {fmt(t.get('p95'), 0)} / "
                f"{fmt(t.get('p99'), 0)} / {fmt(t.get('max'), 0)} | {fmt(tt.get('p50'), 0)} / "
                f"{fmt(tt.get('p99'), 0)} / {fmt(tt.get('max'), 0)} | {fmt(own.get('p50'), 0)} / "
                f"{fmt(own.get('p99'), 0)} | {fmt(col('asr_ms').get('p50'), 0)} | "
                f"{fmt(col('mt_ms').get('p50'), 0)} | {fmt(col('tts_first_byte_ms').get('p50'), 0)} | "
                f"{fmt(col('queue_wait_ms').get('p50'), 0)} | {fmt(max(res) if res else None, 2)} | "
                f"{fmt(diff.get('p50'), 1)} |")

    for g, rs in by_gran.items():
        for r in rs:
            lines.append(e2e_row(r["run"], [u for u in r["utterances"] if not u["warmup"]]))
        rows = [u for r in rs for u in r["utterances"] if not u["warmup"]]
        lines.append(e2e_row(f"**{g}, all runs**", rows))
        pooled[f"e2e_{g}"] = {k: stats([u[k] for u in rows if u.get(k) is not None])
                              for k in ("total_ms", "true_total_ms", "own_ms", "phone_ms", "asr_ms", "mt_ms",
                                        "tts_first_byte_ms", "queue_wait_ms", "residual_ms",
                                        "total_minus_true_ms")}
    lines.append("\n(Stage columns are p50s. With ~20 utterances per run a p99 is close to the max.)\n")
    checks = []
    for r in runs:
        checks.append(f"{r['run']}: {r['e2e_measured']}/{r['e2e_expected']} utterances played "
                      f"({r['e2e_text_ok']} with the expected text), 7777 finals {r['finals']} "
                      f"(speech_final {r['finals_speech_final']}), dropped {len(r['dropped'])}, "
                      f"8888 heard every expected word in order: {r['heard_ok']}, "
                      f"egress late ticks {r['egress']['late_ticks']}, attempt {r.get('attempt', 1)}")
    lines.append("Checks: " + "; ".join(checks) + ".")
    spec = {}
    for g in sorted({r["granularity"] for r in runs if "granularity" in r} or set()):
        counts = {o: sum(r.get("speculations", {}).get(o, 0) for r in runs if r.get("granularity") == g)
                  for o in ("started", "used", "wasted")}
        spec[g] = counts
    if any(c["started"] for c in spec.values()):
        def share(c: dict[str, int]) -> str:
            return f" ({100 * c['wasted'] / c['started']:.0f} % wasted)" if c["started"] else ""

        lines.append("\nSpeculations (translations started on an eager end of turn), all runs: " + "; ".join(
            f"{g}: started {c['started']}, used {c['used']}, wasted {c['wasted']}{share(c)}"
            for g, c in spec.items()) + ".")
    pooled["speculations"] = spec
    dirty = sorted({x for r in runs for x in r.get("other_benchmarks_seen", [])})
    oc = [r["cpu"].get("other_on_bridge_core") for r in runs if r.get("cpu", {}).get("other_on_bridge_core") is not None]
    of = [r["cpu"].get("other_on_fakes_core") for r in runs if r.get("cpu", {}).get("other_on_fakes_core") is not None]
    if oc:
        lines.append(f"\nCPU used by other processes during the runs (per run): bridge's core "
                     f"{', '.join(f'{max(0.0, 100 * x):.0f} %' for x in oc)}; fakes' core "
                     f"{', '.join(f'{max(0.0, 100 * x):.0f} %' for x in of)} (busy time from /proc/stat minus "
                     f"our processes' own CPU time; tick-based accounting reads a few % low, so values below 0 "
                     f"are shown as 0).")
    lines.append(f"\nOther benchmarks ({', '.join(OTHER_BENCHES)}) running during a kept run: "
                 f"{', '.join(dirty) if dirty else 'none'}.")
    lines.append(f"\nThe pipeline dated end of speech from: {runs[0]['pipeline_dates_speech_end_from']}.")

    for r in runs:
        s = {k: v for k, v in r.items() if k != "raw"}
        summary["runs"].append(s)
    summary["pooled"] = pooled
    return "\n".join(lines), summary


def rerender(args: argparse.Namespace) -> None:
    """Tables again from the summary and the per-run raw files of an earlier invocation."""
    path = Path(args.output or OUT / f"pipeline_latency{'-' + args.tag if args.tag else ''}.json")
    summary = json.loads(path.read_text())
    runs = []
    for s in summary["runs"]:
        raw = json.loads((OUT / f"{s['run']}.json").read_text())
        raw.update(s)
        runs.append(raw)
    text, fresh = report(runs, args)
    summary["pooled"] = fresh["pooled"]
    summary["table"] = text
    print(text)
    path.write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {path}")
    if not args.no_results and not args.tag:
        (RESULTS / "pipeline_latency.json").write_text(json.dumps(summary, indent=1))
        print(f"wrote {RESULTS / 'pipeline_latency.json'}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--utterances", type=int, default=20, help="measured utterances per run (default 20)")
    p.add_argument("--repeats", type=int, default=2, help="runs per granularity (default 2)")
    p.add_argument("--granularities", default="segment,utterance",
                   help="comma list of segment, utterance (Nova, /v1/listen), flux (Flux with eager end of turn: "
                        "speculative translation) and flux-noeager (Flux, end of turn only)")
    p.add_argument("--flux-eager-ms", type=int, default=150, help="fake Flux: silence before EagerEndOfTurn, ms")
    p.add_argument("--inner-pause-ms", type=int, default=0,
                   help="extra silence after the first word of every --inner-pause-every-th phrase, ms")
    p.add_argument("--inner-pause-every", type=int, default=0, help="see --inner-pause-ms (0: none)")
    p.add_argument("--flux-eot-ms", type=int, default=260, help="fake Flux: silence before EndOfTurn, ms")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured utterances first (connection set-up)")
    p.add_argument("--gap", type=float, default=1.2, help="silence after each phrase, s")
    p.add_argument("--lead", type=float, default=1.0, help="silence before the first phrase, s")
    p.add_argument("--tail", type=float, default=2.5, help="phones listen this long after the last packet, s")
    p.add_argument("--phone-skew-ppm", type=float, default=500.0,
                   help="speaking phone's packet clock this much slower than nominal (phase sweep); 0 = off")
    p.add_argument("--endpointing", type=int, default=300, help="Deepgram endpointing (client), ms")
    p.add_argument("--dg-latency", type=float, default=0.0, help="fake Deepgram delay per message, s")
    p.add_argument("--deepl-latency", type=float, default=0.15, help="fake DeepL delay, s")
    p.add_argument("--tts-first-byte-ms", type=float, default=100.0, help="fake ElevenLabs first byte, ms")
    p.add_argument("--tts-chunk-interval-ms", type=float, default=10.0, help="fake ElevenLabs chunk pacing, ms")
    p.add_argument("--reply-codec", default="g722", help="codec of the bridge's replies (default g722)")
    p.add_argument("--nodelay", choices=("keep", "on", "off"), default="keep",
                   help="experiment: TCP_NODELAY on the bridge's Deepgram socket as xlbridge sets it (keep), "
                        "or forced on/off when it opens (off = xlbridge before de84f88)")
    p.add_argument("--rerender", action="store_true",
                   help="rebuild the tables of an earlier invocation (same --tag) from bench/out, no new runs")
    p.add_argument("--tag", default="", help="suffix for output file names (e.g. nodelay)")
    p.add_argument("--no-pin", action="store_true", help="do not pin fakes to CPU 0 and the bridge to CPU 1")
    p.add_argument("--no-wait", action="store_true",
                   help="do not wait for other benchmarks or a quiet machine, and keep every run")
    p.add_argument("--max-busy", type=float, default=0.25,
                   help="start a run only when no core is busier than this (0..1) with other work, and "
                        "repeat a run (up to 3 tries) if others used more of the bridge's core meanwhile")
    p.add_argument("--no-results", action="store_true", help="do not write bench/results/pipeline_latency.json")
    p.add_argument("--output", help="default bench/out/pipeline_latency[-TAG].json")
    # child mode
    p.add_argument("--run-one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--granularity", default="segment", help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    p.add_argument("--log", help=argparse.SUPPRESS)
    p.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    p.add_argument("--deepgram-url", help=argparse.SUPPRESS)
    p.add_argument("--deepl-url", help=argparse.SUPPRESS)
    p.add_argument("--elevenlabs-url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.run_one:
        run_one(args)
        return
    if args.rerender:
        rerender(args)
        return

    if args.output is None:
        args.output = str(OUT / f"pipeline_latency{'-' + args.tag if args.tag else ''}.json")
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    args.fake_cpu = 0 if pin else None
    args.bridge_cpu = 1 if pin else None
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.no_wait:
        wait_for_other_bench()
    started = datetime.datetime.now(datetime.timezone.utc)
    code = code_identity()  # what is measured: taken before the runs (others edit the tree meanwhile)
    grans = [g.strip() for g in args.granularities.split(",") if g.strip()]
    runs = []
    for rep in range(1, args.repeats + 1):
        for g in grans:
            kept = None
            for attempt in range(3):
                if not args.no_wait:
                    wait_for_other_bench(max_busy=args.max_busy)
                r = one_run(args, g, rep)
                r["attempt"] = attempt + 1
                raw = OUT / f"{r['run']}.json"
                r["raw_file"] = str(raw.with_name(f"{r['run']}-attempt{attempt + 1}.json"))
                raw.replace(r["raw_file"])
                other = r.get("cpu", {}).get("other_on_bridge_core") or 0.0
                noisy = bool(r["other_benchmarks_seen"]) or (not args.no_wait and other > args.max_busy)
                if kept is None or (not noisy) or other < (kept.get("cpu", {}).get("other_on_bridge_core") or 0.0):
                    kept = r
                if not noisy:
                    break
                print(f"  the machine was busy meanwhile (other benchmarks {r['other_benchmarks_seen']}, "
                      f"{100 * other:.0f} % of the bridge's core used by others): running again", flush=True)
            assert kept is not None
            shutil.copyfile(kept["raw_file"], OUT / f"{kept['run']}.json")
            runs.append(kept)
    text, summary = report(runs, args)
    command = "python bench/pipeline_latency.py " + " ".join(a for a in (argv or sys.argv[1:]))
    summary.update({
        "command": command.strip(),
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code,
        "code_after_runs": code_identity(),
        "settings": {k: getattr(args, k) for k in ("utterances", "repeats", "warmup", "gap", "lead", "endpointing",
                                                    "dg_latency", "deepl_latency", "tts_first_byte_ms",
                                                    "tts_chunk_interval_ms", "reply_codec", "nodelay",
                                                    "phone_skew_ppm", "flux_eager_ms", "flux_eot_ms",
                                                    "inner_pause_ms", "inner_pause_every")},
        "pinning": {"fakes_cpu": args.fake_cpu, "bridge_cpu": args.bridge_cpu},
        "processes": "fakes: one process each (python -m tests.fakes); bridge + both phones + probes: "
                     "one child process per run",
        "table": text,
    })
    print()
    print(text)
    Path(args.output).write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {args.output}")
    if not args.no_results and not args.tag:
        RESULTS.mkdir(parents=True, exist_ok=True)
        slim = dict(summary)
        slim["runs"] = [{k: v for k, v in r.items()} for r in summary["runs"]]
        (RESULTS / "pipeline_latency.json").write_text(json.dumps(slim, indent=1))
        print(f"wrote {RESULTS / 'pipeline_latency.json'}")


if __name__ == "__main__":
    main()
