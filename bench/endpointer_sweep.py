"""
The local recogniser's endpointer settings against latency and accuracy,
offline (no reactor, no load), on the Allison prompts bench/local_bench.py
uses.

For each (``endpoint_window_s``, ``endpoint_ratio``, ``vad_mode``) it
decodes every prompt (0.5 s lead, 2 s tail) one 20 ms frame at a time and
reports:

- the endpointer's wait: audio time from the end of the last aligned word
  to the frame that produced the final (p50, min, max over the prompts);
- how many transcripts equal those of the default settings (the first row);
- how many prompt pairs joined by a 0.25 s pause came out as two finals.

Usage: ``python bench/endpointer_sweep.py`` (needs pocketsphinx and
Debian's asterisk-core-sounds-en-g722; about a minute).
"""

from __future__ import annotations

import os
import statistics
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import local_bench  # noqa: E402

from xlbridge.engines.local_asr.wire import StreamParams  # noqa: E402
from xlbridge.engines.local_asr.worker import Session  # noqa: E402
from xlbridge.engines.pocketsphinx.asr import DecoderPool, SphinxModel  # noqa: E402

SR = 16000
#: (window_s, ratio, vad_mode); the first is the shipped default.
CONFIGS = [(0.3, 0.9, 0), (0.3, 0.9, 1), (0.3, 0.9, 2), (0.3, 0.9, 3),
           (0.25, 0.9, 0), (0.2, 0.9, 0), (0.25, 0.9, 2)]


def silence(seconds: float) -> Any:
    return np.zeros(int(seconds * SR), np.int16)


def decode(pool: DecoderPool, audio: bytes, params: StreamParams) -> tuple[list[Any], list[float]]:
    """Finals (with text) and the stream second each came out at."""
    s = Session(SphinxModel(), params, pool, 1)
    finals: list[Any] = []
    emitted: list[float] = []
    for k, i in enumerate(range(0, len(audio) - 639, 640)):
        for e in s.feed([audio[i:i + 640]]):
            if getattr(e, "is_final", False) and e.text:
                finals.append(e)
                emitted.append((k + 1) * 0.02)
    finals += [e for e in s.finish() if getattr(e, "is_final", False) and e.text]
    return finals, emitted


def main() -> int:
    pool = DecoderPool()
    prompts = {n: local_bench.load_prompt(n)["audio"] for n in local_bench.PROMPTS}
    names = list(prompts)
    reference: dict[str, str] = {}
    print("| window s | ratio | vad mode | wait p50 ms (min-max) | same text as default | 0.25 s-gap pairs split |")
    print("|---|---|---|---|---|---|")
    changed: list[str] = []
    for window, ratio, vad in CONFIGS:
        params = StreamParams(window_s=window, ratio=ratio, vad_mode=vad)
        waits, texts = [], {}
        for name, audio in prompts.items():
            finals, emitted = decode(pool, np.concatenate([silence(0.5), audio, silence(2)]).tobytes(), params)
            texts[name] = " ".join(e.text for e in finals)
            if finals and emitted and finals[0].speech_end is not None:
                waits.append((emitted[0] - finals[0].speech_end) * 1000)
        reference = reference or texts
        same = sum(texts[n] == reference[n] for n in names)
        splits = 0
        for a, b in zip(names[::2], names[1::2]):
            joined = np.concatenate([silence(0.5), prompts[a], silence(0.25), prompts[b], silence(2)])
            finals, _ = decode(pool, joined.tobytes(), params)
            splits += len(finals) > 1
        print(f"| {window} | {ratio} | {vad} | {statistics.median(waits):.0f} ({min(waits):.0f}-{max(waits):.0f}) "
              f"| {same}/{len(names)} | {splits}/{len(names) // 2} |", flush=True)
        changed += [f"{window}/{ratio}/{vad} {n}: {reference[n]!r} -> {texts[n]!r}"
                    for n in names if texts[n] != reference[n]]
    for line in changed:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
