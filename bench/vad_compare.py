"""
Voice activity for the Whisper recogniser: the WebRTC VAD (pocketsphinx's
``Vad``) at modes 0-3 and Silero VAD v6 (faster-whisper's ONNX file), each
feeding xlbridge's own :class:`~xlbridge.engines.whisper.stream.Segmenter`,
against pocketsphinx's ``Endpointer`` (its own start/end decisions), on the
same audio.  Offline: no reactor, no decoding, one 20 ms frame at a time.

Audio
-----

Asterisk's Allison prompts, English (en_US_f_Allison) and Spanish
(es_MX_f_Allison), ``--per-lang`` of each (default 30) picked evenly over
the prompts sorted by speech length (0.4-12 s; tones and other non-speech
files left out), so short and long ones mix.  Ground truth per prompt, from
the clean prompt: the first and last 10 ms block above -45 dBFS (RMS re
32768, the rule of the other benches); a run of blocks at or below it
between them is a pause inside the prompt.

Per language one "conversation": 1.5 s lead, then the prompts in a fixed
shuffled order, each cut to its loud span plus 0.1 s either side, with 1.5 s
from one prompt's true end to the next one's true start, and a 2 s tail.
Conditions (``--conditions``): ``clean`` (digital silence between prompts),
white or pink noise over the whole conversation at -50 and -40 dBFS RMS
(speech is about -16 to -20 dBFS over its span: SNR about 32 and 22 dB),
``nb-clean`` and ``nb-pink-40``: a 16 -> 8 -> 16 kHz round trip through
soxr (a narrowband caller), the latter after adding the pink noise.
Stress conditions, louder than that line noise and reported on their own
(not pooled into "noisy"): ``pink-35``, ``white-30``, ``pink-30`` (SNR
about 12-17 dB: a noisy street or car).

Detectors
---------

- ``webrtc-m<mode>``: ``pocketsphinx.Vad(mode, 16000, 0.02).is_speech``
  per 640-byte frame, then ``Segmenter(start_frames=3, end_frames=15,
  max_frames=750)`` -- WhisperStream's defaults (start_speech_s 0.06,
  end_silence_s 0.3, max_utterance_s 15); ``@0.25`` variants use
  end_frames=12.
- ``silero``: the ONNX model streaming with onnxruntime (one thread) on
  512-sample windows (32 ms) with the 64-sample context and the (h, c)
  state carried between calls, as faster_whisper.vad.SileroVADModel does in
  one batch (checked: identical probabilities); hysteresis on at >= 0.5,
  off below 0.35.  A 20 ms frame is voiced if the latest window covering it
  (the one holding its last sample) is, and its decision reaches the
  Segmenter only when that window is complete: the wait (0-32 ms) counts in
  the end delay.
- ``endpointer-m<mode>``: ``pocketsphinx.Endpointer(window=0.3, ratio=0.9,
  vad_mode)``, fed 640-byte frames; a start when ``process`` returns speech
  while not in speech, an end when ``in_speech`` drops (SphinxStream's
  rule).  Mode 0 is the pocketsphinx recogniser's default.
- ``silero+pad0.1``: scoring only, the ``silero`` utterances with the
  decoded audio running 0.1 s past the last voiced frame (a tail pad
  WhisperStream does not have today); the end decision is unchanged.

Metrics (per detector and condition, both languages pooled)
-----------------------------------------------------------

An utterance belongs to a prompt if the prompt has a loud block inside the
utterance's core span: Segmenter: from 4 frames before the start decision
(the first voiced frame of the start window) to the end of its last voiced
frame; Endpointer: ``speech_start`` to ``speech_end``.  Then per prompt:

- ``missed``: no utterance; ``merged``: one of its utterances also belongs
  to another prompt; ``split``: 2+ utterances (not merged); ``split at a
  pause``: every boundary between two pieces overlaps a quiet run (<= -45
  dBFS blocks) of >= 100 ms inside the clean prompt, i.e. the sentence had
  a real pause there; otherwise the VAD dropped out in speech.
- end delay (not missed or merged): stream time of the end decision (the
  end of the 20 ms frame that caused it) minus the prompt's true end;
  start delay likewise for the first start decision.
- clipped speech: loud 10 ms blocks of the prompt outside the audio the
  recogniser would get: Segmenter: from the start decision minus its
  pre-roll (up to 15 frames, 0.3 s) to the end of the last voiced frame
  (what WhisperStream decodes); Endpointer: ``speech_start`` to
  ``speech_end`` (what SphinxStream decodes).  Head = before the first
  utterance, tail = after the last.
- false starts: utterances that belong to no prompt (in the noise-only
  gaps, lead and tail), also per minute of gap audio.
- CPU: process time of the detector's own pass over the audio (for the
  VADs, the per-frame decisions; the Segmenter's pass is reported once, it
  is the same code for all), per second of audio and per 20 ms frame.

Usage::

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/vad_compare.py

Writes bench/results/vad_compare.json (``--out``) and prints markdown
tables.  About half a minute on the 2-core VM (most of it Silero).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import glob
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Optional

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from xlbridge.engines.whisper.stream import PREROLL_FRAMES, START_WINDOW, Segmenter  # noqa: E402
from xlbridge.tools.demo import load_g722  # noqa: E402

SR = 16000
FRAME = 320  # samples per 20 ms frame
FRAME_S = 0.02
BLOCK = 160  # 10 ms ground-truth blocks
LOUD_DBFS = -45.0
SOUNDS = {"en": "/usr/share/asterisk/sounds/en_US_f_Allison", "es": "/usr/share/asterisk/sounds/es_MX_f_Allison"}
#: Files that are not speech (tones, beeps, music, the monkeys).
NON_SPEECH = ("beep", "tone", "monkeys", "music", "silence", "dtmf", "ring")
MIN_SPAN_S, MAX_SPAN_S = 0.4, 12.0
LEAD_S, GAP_S, TAIL_S, MARGIN_S = 1.5, 1.5, 2.0, 0.1
PAUSE_MIN_S = 0.1
#: The scoring-only "silero+pad" variant: audio decoded this far past the last voiced frame.
TAIL_PAD_S = 0.1
#: A false start beginning this early is the detector still adapting to the line, not a gap.
FIRST_S = 0.5
SILERO_PATH = os.path.join(ROOT, ".venv/lib/python3.11/site-packages/faster_whisper/assets/silero_vad_v6.onnx")
SILERO_WINDOW, SILERO_CONTEXT = 512, 64
SILERO_ON, SILERO_OFF = 0.5, 0.35
#: WhisperStream's defaults: start_speech_s 0.06, end_silence_s 0.3, max_utterance_s 15.
START_FRAMES, MAX_FRAMES = 3, 750
END_FRAMES = {0.3: 15, 0.25: 12}
#: WhisperModel.vad_mode's default.
DEFAULT_MODE = 2

CONDITIONS = {
    "clean": (None, None, False),
    "white-50": ("white", -50.0, False),
    "white-40": ("white", -40.0, False),
    "pink-50": ("pink", -50.0, False),
    "pink-40": ("pink", -40.0, False),
    "nb-clean": (None, None, True),
    "nb-pink-40": ("pink", -40.0, True),
    # stress: about 12-14 dB SNR, louder than the brief's line noise; not pooled into "noisy"
    "pink-35": ("pink", -35.0, False),
    "white-30": ("white", -30.0, False),
    "pink-30": ("pink", -30.0, False),
}
STRESS = ("pink-35", "white-30", "pink-30")


# --------------------------------------------------------------------------
# audio and ground truth


def block_db(x: np.ndarray) -> np.ndarray:
    f = x[: len(x) // BLOCK * BLOCK].astype(np.float64).reshape(-1, BLOCK)
    return 20 * np.log10(np.sqrt((f ** 2).mean(1)) / 32768 + 1e-12)


def prompt_truth(x: np.ndarray) -> Optional[dict[str, Any]]:
    """Loud span (block indices) and the quiet runs inside it, or None if nothing is loud."""
    loud = block_db(x) > LOUD_DBFS
    idx = np.where(loud)[0]
    if len(idx) == 0:
        return None
    first, last = int(idx[0]), int(idx[-1])
    pauses = []  # (start block, length in blocks), inside the loud span
    run = 0
    for i in range(first, last + 1):
        if not loud[i]:
            run += 1
        elif run:
            pauses.append((i - run, run))
            run = 0
    return {"first": first, "last": last, "loud": loud, "pauses": pauses}


def pick_prompts(lang: str, n: int) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(glob.glob(os.path.join(SOUNDS[lang], "*.g722"))):
        name = os.path.basename(path)[:-5]
        if any(w in name.lower() for w in NON_SPEECH):
            continue
        x = load_g722(path)
        t = prompt_truth(x)
        if t is None:
            continue
        span = (t["last"] + 1 - t["first"]) * BLOCK / SR
        if MIN_SPAN_S <= span <= MAX_SPAN_S:
            rows.append((span, name, x, t))
    rows.sort(key=lambda r: (r[0], r[1]))
    if n >= len(rows):
        chosen = rows
    else:
        chosen = [rows[round(i * (len(rows) - 1) / (n - 1))] for i in range(n)]
    return [{"lang": lang, "name": name, "span_s": round(span, 2), "audio": x, "truth": t}
            for span, name, x, t in chosen]


def build_conversation(prompts: list[dict[str, Any]], seed: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Prompts cut to their loud span +- MARGIN_S, GAP_S from one true end to the next true start."""
    order = list(np.random.default_rng(seed).permutation(len(prompts)))
    margin = int(MARGIN_S * SR)
    pieces, items = [], []
    at = 0
    lead = int(LEAD_S * SR)
    cursor = 0  # samples written so far

    def pad_to(n: int) -> None:
        nonlocal cursor
        if n > cursor:
            pieces.append(np.zeros(n - cursor, np.int16))
            cursor = n

    true_start = lead
    for k in order:
        p = prompts[k]
        t = p["truth"]
        s0, s1 = t["first"] * BLOCK, (t["last"] + 1) * BLOCK
        lo, hi = max(0, s0 - margin), min(len(p["audio"]), s1 + margin)
        place = true_start - (s0 - lo)
        pad_to(place)
        pieces.append(p["audio"][lo:hi].astype(np.int16))
        cursor += hi - lo
        offset = true_start - s0  # sample offset of the prompt's own sample 0 in the conversation
        items.append({"lang": p["lang"], "name": p["name"], "start": true_start / SR, "end": (true_start + s1 - s0) / SR,
                      "loud_t": [(offset + b * BLOCK) / SR for b in np.where(t["loud"])[0]],
                      "pauses": [((offset + b * BLOCK) / SR, n * BLOCK / SR) for b, n in t["pauses"]]})
        true_start += (s1 - s0) + int(GAP_S * SR)
        at = true_start
    pad_to(at - int(GAP_S * SR) + int(TAIL_S * SR))
    audio = np.concatenate(pieces)
    audio = audio[: len(audio) // FRAME * FRAME]
    return audio, items


def noise(n: int, kind: str, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    w = rng.standard_normal(n)
    if kind == "pink":
        spec = np.fft.rfft(w)
        f = np.fft.rfftfreq(n, 1 / SR)
        spec /= np.sqrt(np.maximum(f, 20.0))
        w = np.fft.irfft(spec, n)
    return w / np.sqrt((w ** 2).mean()) * 32768 * 10 ** (dbfs / 20)


def condition_audio(clean: np.ndarray, cond: str, seed: int) -> np.ndarray:
    kind, dbfs, nb = CONDITIONS[cond]
    x = clean.astype(np.float64)
    if kind is not None and dbfs is not None:
        x = x + noise(len(x), kind, dbfs, np.random.default_rng(seed))
    if nb:
        import soxr

        y = soxr.resample(soxr.resample(x / 32768, SR, 8000, quality="HQ"), 8000, SR, quality="HQ") * 32768
        x = np.zeros_like(x)
        x[: min(len(x), len(y))] = y[: len(x)]
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------
# detectors: per-frame decisions (+ the frame each became available at)


def webrtc_decisions(audio: np.ndarray, mode: int) -> tuple[np.ndarray, np.ndarray]:
    from pocketsphinx import Vad

    vad = Vad(mode=mode, sample_rate=SR, frame_length=FRAME_S)
    raw = audio.tobytes()
    fb = FRAME * 2
    out = np.array([bool(vad.is_speech(raw[i:i + fb])) for i in range(0, len(raw), fb)])
    return out, np.arange(len(out))


def silero_session() -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 4
    return ort.InferenceSession(SILERO_PATH, sess_options=opts, providers=["CPUExecutionProvider"])


class SileroStream:
    """Silero fed 20 ms frames: windows of 512 run as soon as complete, state kept between calls."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.h = np.zeros((1, 1, 128), np.float32)
        self.c = np.zeros((1, 1, 128), np.float32)
        self.context = np.zeros(SILERO_CONTEXT, np.float32)
        self.buf = np.zeros(0, np.float32)
        self.voiced = False
        self.states: list[bool] = []  # hysteresis state after each window
        self.probs: list[float] = []

    def push(self, frame: np.ndarray) -> None:
        self.buf = np.concatenate([self.buf, frame.astype(np.float32) / 32768])
        while len(self.buf) >= SILERO_WINDOW:
            w, self.buf = self.buf[:SILERO_WINDOW], self.buf[SILERO_WINDOW:]
            inp = np.concatenate([self.context, w])[None, :]
            p, self.h, self.c = self.session.run(None, {"input": inp, "h": self.h, "c": self.c})
            self.context = w[-SILERO_CONTEXT:]
            prob = float(p.reshape(-1)[0])
            if prob >= SILERO_ON:
                self.voiced = True
            elif prob < SILERO_OFF:
                self.voiced = False
            self.states.append(self.voiced)
            self.probs.append(prob)


def silero_decisions(audio: np.ndarray, session: Any) -> tuple[np.ndarray, np.ndarray]:
    s = SileroStream(session)
    n = len(audio) // FRAME
    dec = np.zeros(n, bool)
    avail = np.full(n, n - 1)  # frames never covered by a complete window: at stream end
    nxt = 0  # next frame waiting for its decision
    for j in range(n):
        s.push(audio[j * FRAME:(j + 1) * FRAME])
        while nxt <= j:
            k = ((nxt + 1) * FRAME - 1) // SILERO_WINDOW  # window holding the frame's last sample
            if k >= len(s.states):
                break
            dec[nxt], avail[nxt] = s.states[k], j
            nxt += 1
    return dec, avail


def segment(dec: np.ndarray, avail: np.ndarray, end_frames: int) -> list[dict[str, Any]]:
    """Utterances from per-frame decisions through xlbridge's Segmenter."""
    seg = Segmenter(start_frames=START_FRAMES, end_frames=end_frames, max_frames=MAX_FRAMES)
    utts: list[dict[str, Any]] = []
    cur: Optional[dict[str, Any]] = None
    for j in range(len(dec)):
        ev = seg.push(bool(dec[j]))
        if ev is None:
            continue
        kind, back = ev
        now = (avail[j] + 1) * FRAME_S
        if kind == "start":
            cur = {"audio_start": (j - back) * FRAME_S, "core_start": max(j - back, j - START_WINDOW + 1) * FRAME_S,
                   "start_t": now}
        elif cur is not None:
            cur.update(audio_end=(j - back + 1) * FRAME_S, end_t=now, how=kind)
            utts.append(cur)
            cur = None
            if kind == "cut":  # the rest begins the next utterance at once
                cur = {"audio_start": (j - back + 1) * FRAME_S, "core_start": (j - back + 1) * FRAME_S, "start_t": now}
    back_eos = seg.end_of_stream()
    if cur is not None and back_eos is not None:
        n = len(dec)
        cur.update(audio_end=(n - back_eos) * FRAME_S, end_t=(avail[-1] + 1) * FRAME_S, how="eos")
        utts.append(cur)
    return utts


def endpointer_utts(audio: np.ndarray, mode: int) -> list[dict[str, Any]]:
    from pocketsphinx import Endpointer

    ep = Endpointer(window=0.3, ratio=0.9, vad_mode=mode, sample_rate=SR, frame_length=FRAME_S)
    assert ep.frame_bytes == FRAME * 2
    raw = audio.tobytes()
    fb = FRAME * 2
    utts: list[dict[str, Any]] = []
    cur: Optional[dict[str, Any]] = None
    for j, i in enumerate(range(0, len(raw), fb)):
        prev = ep.in_speech
        sp = ep.process(raw[i:i + fb])
        if sp is None:
            continue
        now = (j + 1) * FRAME_S
        if not prev and cur is None:
            cur = {"audio_start": ep.speech_start, "core_start": ep.speech_start, "start_t": now}
        if not ep.in_speech and cur is not None:
            cur.update(audio_end=ep.speech_end, end_t=now, how="end")
            utts.append(cur)
            cur = None
    if ep.in_speech:
        ep.end_stream(bytes(2))  # an empty buffer is refused
        if cur is not None:
            cur.update(audio_end=ep.speech_end, end_t=len(raw) / 2 / SR, how="eos")
            utts.append(cur)
    return utts


# --------------------------------------------------------------------------
# scoring


def pct(xs: list[float], q: float) -> Optional[float]:
    if not xs:
        return None
    return float(np.percentile(np.array(xs), q))


def score(utts: list[dict[str, Any]], items: list[dict[str, Any]], total_s: float) -> dict[str, Any]:
    owners: list[list[int]] = []  # per utterance: prompts it belongs to
    for u in utts:
        lo, hi = u["core_start"], u["audio_end"]
        owners.append([k for k, it in enumerate(items)
                       if it["start"] < hi and it["end"] > lo
                       and any(t < hi and t + BLOCK / SR > lo for t in it["loud_t"])])
    per_prompt = []
    for k, it in enumerate(items):
        mine = [u for u, o in zip(utts, owners) if k in o]
        merged = any(len(o) > 1 for o in owners if k in o)
        r: dict[str, Any] = {"lang": it["lang"], "name": it["name"], "pieces": len(mine), "merged": merged}
        if not mine:
            r["result"] = "missed"
            per_prompt.append(r)
            continue
        r["result"] = "merged" if merged else ("split" if len(mine) > 1 else "ok")
        r["start_delay_ms"] = round((mine[0]["start_t"] - it["start"]) * 1000)
        if not merged:
            r["end_delay_ms"] = round((mine[-1]["end_t"] - it["end"]) * 1000)
        covered = lambda t: any(u["audio_start"] - 1e-9 <= t and t + BLOCK / SR <= u["audio_end"] + 1e-9 for u in mine)  # noqa: E731
        head = [t for t in it["loud_t"] if t < mine[0]["audio_start"] - 1e-9]
        tail = [t for t in it["loud_t"] if t + BLOCK / SR > mine[-1]["audio_end"] + 1e-9]
        lost = [t for t in it["loud_t"] if not covered(t)]
        r["clip_head_ms"] = len(head) * 10
        r["clip_tail_ms"] = len(tail) * 10
        r["clip_inner_ms"] = (len(lost) - len(set(head) | set(tail))) * 10
        if len(mine) > 1 and not merged:
            bounds = []
            for a, b in zip(mine, mine[1:]):
                lo, hi = a["audio_end"], b["core_start"]
                longest = max([n for s, n in it["pauses"] if s < hi and s + n > lo] or [0.0])
                bounds.append(round(longest, 2))
            r["split_pauses_s"] = bounds
            r["split_at_pause"] = all(p >= PAUSE_MIN_S for p in bounds)
        per_prompt.append(r)
    false = [u for u, o in zip(utts, owners) if not o]
    return {"per_prompt": per_prompt,
            "false_starts": [{"start": round(u["core_start"], 2), "end": round(u["audio_end"], 2)} for u in false],
            "utterances": len(utts)}


def summarise(parts: list[tuple[dict[str, Any], float]]) -> dict[str, Any]:
    """Pool scored conversations (score dict, gap seconds)."""
    pp = [r for s, _ in parts for r in s["per_prompt"]]
    gap_s = sum(g for _, g in parts)
    ends = [r["end_delay_ms"] for r in pp if "end_delay_ms" in r]
    starts = [r["start_delay_ms"] for r in pp if "start_delay_ms" in r]
    got = [r for r in pp if r["result"] != "missed"]
    splits = [r for r in pp if r["result"] == "split"]
    nfalse = sum(len(s["false_starts"]) for s, _ in parts)
    nfirst = sum(f["start"] < FIRST_S for s, _ in parts for f in s["false_starts"])
    return {
        "prompts": len(pp),
        "ok": sum(r["result"] == "ok" for r in pp),
        "end_delay_ms": {"p50": pct(ends, 50), "p95": pct(ends, 95), "max": max(ends) if ends else None, "n": len(ends)},
        "start_delay_ms": {"p50": pct(starts, 50), "p95": pct(starts, 95)},
        "split": len(splits),
        "split_at_pause": sum(bool(r.get("split_at_pause")) for r in splits),
        "split_mid_speech": sum(not r.get("split_at_pause") for r in splits),
        "missed": sum(r["result"] == "missed" for r in pp),
        "merged": sum(r["result"] == "merged" for r in pp),
        "false_starts": nfalse,
        "false_starts_at_stream_start": nfirst,
        "false_starts_in_gaps": nfalse - nfirst,
        "false_starts_in_gaps_per_min": round((nfalse - nfirst) / (gap_s / 60), 2) if gap_s else None,
        "clipped_head": {"prompts": sum(r["clip_head_ms"] > 0 for r in got), "ms_total": sum(r["clip_head_ms"] for r in got),
                         "ms_max": max([r["clip_head_ms"] for r in got] or [0])},
        "clipped_tail": {"prompts": sum(r["clip_tail_ms"] > 0 for r in got), "ms_total": sum(r["clip_tail_ms"] for r in got),
                         "ms_max": max([r["clip_tail_ms"] for r in got] or [0])},
        "clipped_inner_ms_total": sum(r["clip_inner_ms"] for r in got),
    }


def gap_seconds(items: list[dict[str, Any]], total_s: float) -> float:
    return total_s - sum(it["end"] - it["start"] for it in items)


# --------------------------------------------------------------------------


def fmt(v: Optional[float]) -> str:
    return "–" if v is None else f"{v:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-lang", type=int, default=30)
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--modes", default="0,1,2,3", help="WebRTC VAD modes feeding the Segmenter")
    ap.add_argument("--endpointer-modes", default="0,2")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "vad_compare.json"))
    ns = ap.parse_args()
    t_run = time.perf_counter()
    conds = ns.conditions.split(",")
    modes = [int(m) for m in ns.modes.split(",")]
    ep_modes = [int(m) for m in ns.endpointer_modes.split(",") if m != ""]

    convs = {}
    prompt_info = []
    for i, lang in enumerate(SOUNDS):
        prompts = pick_prompts(lang, ns.per_lang)
        audio, items = build_conversation(prompts, ns.seed + i)
        convs[lang] = (audio, items)
        for p in prompts:
            t = p["truth"]
            prompt_info.append({"lang": lang, "name": p["name"], "span_s": p["span_s"],
                                "longest_pause_s": max([n for _, n in t["pauses"]] or [0]) * BLOCK / SR})
        print(f"{lang}: {len(prompts)} prompts, conversation {len(audio) / SR:.1f} s", flush=True)
    n_pause03 = sum(p["longest_pause_s"] >= 0.3 for p in prompt_info)
    n_pause025 = sum(p["longest_pause_s"] >= 0.25 for p in prompt_info)
    print(f"prompts with an inner pause >= 0.3 s: {n_pause03}, >= 0.25 s: {n_pause025} of {len(prompt_info)}", flush=True)

    session = silero_session()
    # warm up onnxruntime outside the timed pass
    silero_decisions(np.zeros(SR, np.int16), session)

    detectors: dict[str, dict[str, Any]] = {}  # name -> {cond -> [(score, gap_s)]}
    cpu: dict[str, list[float]] = {}  # name -> [cpu_s]; audio seconds separately
    audio_s_total = 0.0
    seg_cpu = 0.0
    seg_frames = 0
    decisions_stats: dict[str, dict[str, dict[str, int]]] = {}

    def add(name: str, cond: str, sc: dict[str, Any], gap: float) -> None:
        detectors.setdefault(name, {}).setdefault(cond, []).append((sc, gap))

    for ci, cond in enumerate(conds):
        for lang, (clean, items) in convs.items():
            audio = condition_audio(clean, cond, 1000 * ns.seed + 10 * ci + (lang == "es"))
            total_s = len(audio) / SR
            audio_s_total += total_s
            gap = gap_seconds(items, total_s)
            sources: list[tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]]]] = [
                (f"webrtc-m{m}", functools.partial(webrtc_decisions, audio, m)) for m in modes]
            sources.append(("silero", functools.partial(silero_decisions, audio, session)))
            for name, fn in sources:
                t0 = time.process_time()
                dec, avail = fn()
                cpu.setdefault(name, []).append(time.process_time() - t0)
                speech_frames = sum(int(dec[int(it["start"] / FRAME_S):int(it["end"] / FRAME_S)].sum()) for it in items)
                span_frames = sum(int(it["end"] / FRAME_S) - int(it["start"] / FRAME_S) for it in items)
                st = decisions_stats.setdefault(name, {}).setdefault(cond, {"voiced_in_speech": 0, "speech": 0,
                                                                            "voiced_total": 0, "total": 0})
                st["voiced_in_speech"] += speech_frames
                st["speech"] += span_frames
                st["voiced_total"] += int(dec.sum())
                st["total"] += len(dec)
                for es, ef in END_FRAMES.items():
                    t0 = time.process_time()
                    utts = segment(dec, avail, ef)
                    seg_cpu += time.process_time() - t0
                    seg_frames += len(dec)
                    add(name if es == 0.3 else f"{name}@{es}", cond, score(utts, items, total_s), gap)
                    if name == "silero" and es == 0.3:
                        # what a tail pad in WhisperStream would give: decode TAIL_PAD_S past the last voiced frame
                        padded = [dict(u, audio_end=min(u["audio_end"] + TAIL_PAD_S, u["end_t"])) for u in utts]
                        add(f"silero+pad{TAIL_PAD_S}", cond, score(padded, items, total_s), gap)
            for m in ep_modes:
                name = f"endpointer-m{m}"
                t0 = time.process_time()
                utts = endpointer_utts(audio, m)
                cpu.setdefault(name, []).append(time.process_time() - t0)
                add(name, cond, score(utts, items, total_s), gap)
        print(f"condition {cond} done ({time.perf_counter() - t_run:.0f} s)", flush=True)

    results: dict[str, Any] = {}
    for name, by_cond in detectors.items():
        results[name] = {cond: summarise(parts) for cond, parts in by_cond.items()}
        noisy = [p for c, parts in by_cond.items() if c != "clean" and c not in STRESS for p in parts]
        if noisy:
            results[name]["noisy"] = summarise(noisy)
        results[name]["all"] = summarise([p for c, parts in by_cond.items() if c not in STRESS for p in parts]
                                         or [p for parts in by_cond.values() for p in parts])
    cpu_out = {name: {"cpu_ms_per_audio_s": 1000 * sum(v) / audio_s_total,
                      "us_per_frame": 1e6 * sum(v) / (audio_s_total / FRAME_S)} for name, v in cpu.items()}
    cpu_out["segmenter"] = {"cpu_ms_per_audio_s": 1000 * seg_cpu / (seg_frames * FRAME_S),
                            "us_per_frame": 1e6 * seg_cpu / seg_frames}

    def errors(name: str) -> int:
        a = results[name]["all"]
        return a["split"] + a["missed"] + a["merged"] + a["false_starts"] \
            + a["clipped_head"]["prompts"] + a["clipped_tail"]["prompts"]

    best_mode = min(modes, key=lambda m: (errors(f"webrtc-m{m}"), results[f"webrtc-m{m}"]["all"]["end_delay_ms"]["p50"]))
    print(f"\nbest WebRTC mode at end_silence 0.3 s (fewest split+missed+merged+false starts+clipped prompts, "
          f"then lower end delay): {best_mode}", flush=True)

    shown = [f"webrtc-m{m}" for m in modes] + [f"webrtc-m{m}@0.25" for m in sorted({best_mode, DEFAULT_MODE})] + ["silero", f"silero+pad{TAIL_PAD_S}", "silero@0.25"] + \
        [f"endpointer-m{m}" for m in ep_modes]

    def row(name: str, s: dict[str, Any]) -> str:
        e = s["end_delay_ms"]
        return (f"| {name} | {fmt(e['p50'])} / {fmt(e['p95'])} | {s['split']} ({s['split_at_pause']}) | "
                f"{s['missed']} / {s['merged']} | {s['false_starts_in_gaps']} + {s['false_starts_at_stream_start']} | "
                f"{s['clipped_head']['prompts']} / {s['clipped_tail']['prompts']} "
                f"({s['clipped_head']['ms_total']} / {s['clipped_tail']['ms_total']} ms) |")

    header = ("| detector | end delay p50 / p95 ms | split (at a pause) | missed / merged | false starts: gaps + stream start "
              "| clipped head / tail: prompts (ms) |\n|---|---|---|---|---|---|")
    for group in [g for g in ("clean", "noisy", *STRESS) if g in results[shown[0]]]:
        n = results[shown[0]][group]["prompts"]
        print(f"\n### {group} ({n} prompt instances)\n\n{header}")
        for name in shown:
            print(row(name, results[name][group]))
    print("\n### per condition: end delay p50 ms; split / missed+merged / false starts gaps+stream start\n")
    print("| detector | " + " | ".join(conds) + " |\n|---|" + "---|" * len(conds))
    for name in shown:
        cells = []
        for c in conds:
            s = results[name][c]
            cells.append(f"{fmt(s['end_delay_ms']['p50'])}; {s['split']}/{s['missed'] + s['merged']}/"
                         f"{s['false_starts_in_gaps']}+{s['false_starts_at_stream_start']}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n### CPU\n\n| detector | CPU ms per s of audio | µs per 20 ms frame |\n|---|---|---|")
    for name, c in cpu_out.items():
        print(f"| {name} | {c['cpu_ms_per_audio_s']:.2f} | {c['us_per_frame']:.1f} |")

    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/vad_compare.py " + " ".join(sys.argv[1:]),
        "machine": {"python": platform.python_version(), "nproc": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_start": os.getloadavg()},
        "config": {"per_lang": ns.per_lang, "conditions": {c: CONDITIONS[c] for c in conds}, "modes": modes,
                   "endpointer": {"window": 0.3, "ratio": 0.9, "modes": ep_modes},
                   "segmenter": {"start_frames": START_FRAMES, "end_frames": END_FRAMES, "max_frames": MAX_FRAMES,
                                 "preroll": PREROLL_FRAMES},
                   "silero": {"path": os.path.relpath(SILERO_PATH, ROOT), "window": SILERO_WINDOW, "context": SILERO_CONTEXT,
                              "on": SILERO_ON, "off": SILERO_OFF},
                   "lead_s": LEAD_S, "gap_s": GAP_S, "tail_s": TAIL_S, "margin_s": MARGIN_S, "loud_dbfs": LOUD_DBFS,
                   "pause_min_s": PAUSE_MIN_S, "seed": ns.seed},
        "prompts": prompt_info,
        "prompts_with_pause_ge_0.3s": n_pause03,
        "audio_s_total": audio_s_total,
        "best_webrtc_mode": best_mode,
        "summary": results,
        "cpu": cpu_out,
        "frame_decisions": decisions_stats,
        "details": {name: {c: [s for s, _ in parts] for c, parts in by_cond.items()} for name, by_cond in detectors.items()},
        "run_s": time.perf_counter() - t_run,
    }
    os.makedirs(os.path.dirname(ns.out), exist_ok=True)
    with open(ns.out, "w") as f:
        json.dump(out, f, indent=1, default=float)
    print(f"\nwrote {ns.out} ({time.perf_counter() - t_run:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
