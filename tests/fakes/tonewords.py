"""
Words as tones: a deterministic stand-in for speech in fake engines.

Each word of a small vocabulary is a pure tone of its own frequency, lasting
``WORD_MS``, followed by ``GAP_MS`` of silence.  The fake Deepgram decodes
the dominant frequency of each word slot with an FFT, so audio sent with the
wrong byte order or sample rate decodes to nothing (or wrong words) and a
test fails.  The fake ElevenLabs speaks text the same way, so translated
audio arriving at the far phone can be decoded back into words.

All audio is 16 kHz mono int16 (numpy, native order).
"""

from __future__ import annotations

import numpy as np

RATE = 16000
WORD_MS = 200
GAP_MS = 60
LEVEL = 0.3

#: Vocabulary: English words, their Spanish translations, and fillers.
VOCABULARY = [
    "hello", "world", "how", "are", "you", "today", "good", "morning", "thank", "bye",
    "hola", "mundo", "como", "estas", "tu", "hoy", "buenos", "dias", "gracias", "adios",
    "where", "is", "the", "hospital", "donde", "esta", "el", "one", "two", "three",
    "uno", "dos", "tres", "yes", "no", "si",
]

_BASE_HZ = 400.0
_STEP_HZ = 100.0
FREQ = {w: _BASE_HZ + i * _STEP_HZ for i, w in enumerate(VOCABULARY)}
_BY_INDEX = {i: w for i, w in enumerate(VOCABULARY)}


def word_samples() -> int:
    return RATE * WORD_MS // 1000


def slot_samples() -> int:
    return RATE * (WORD_MS + GAP_MS) // 1000


def encode_words(text: str) -> np.ndarray:
    """
    Speak ``text`` (words outside the vocabulary are skipped) as tones.
    """
    n, slot = word_samples(), slot_samples()
    words = [w for w in text.lower().replace(",", " ").replace(".", " ").replace("?", " ").split() if w in FREQ]
    out = np.zeros(slot * len(words), dtype=np.int16)
    t = np.arange(n) / RATE
    ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / 80.0)
    for i, w in enumerate(words):
        tone = np.sin(2 * np.pi * FREQ[w] * t) * ramp * LEVEL * 32767
        out[i * slot : i * slot + n] = tone.astype(np.int16)
    return out


def decode_words(samples: np.ndarray, min_level: float = 0.05) -> list[str]:
    """
    Recover words from audio made by :func:`encode_words` (at any offset,
    after resampling or G.722, with some noise).

    Scans 20 ms frames; a run of loud frames is a word, named by the
    dominant frequency of its middle part.
    """
    x = samples.astype(np.float64) / 32768.0
    frame = RATE // 50
    nframes = len(x) // frame
    if nframes == 0:
        return []
    rms = np.sqrt(np.mean(x[: nframes * frame].reshape(nframes, frame) ** 2, axis=1))
    loud = rms > min_level * LEVEL
    words: list[str] = []
    i = 0
    while i < nframes:
        if not loud[i]:
            i += 1
            continue
        j = i
        while j < nframes and loud[j]:
            j += 1
        if (j - i) * 20 >= WORD_MS // 2:
            seg = x[i * frame : j * frame]
            mid = seg[len(seg) // 4 : len(seg) * 3 // 4]
            spec = np.abs(np.fft.rfft(mid * np.hanning(len(mid))))
            freqs = np.fft.rfftfreq(len(mid), 1.0 / RATE)
            peak = float(freqs[int(np.argmax(spec))])
            k = int(round((peak - _BASE_HZ) / _STEP_HZ))
            if k in _BY_INDEX and abs(peak - FREQ[_BY_INDEX[k]]) < _STEP_HZ / 2:
                words.append(_BY_INDEX[k])
        i = j
    return words
