"""
Settings of translated calls, the engine bundle, and the word similarity
the echo guard uses.

Kept apart from :mod:`xlbridge.pipeline.translate` so configuration code can
import the settings without pulling in the pipeline.
"""

from __future__ import annotations

import difflib
import re
from typing import Optional

import attrs

from xlbridge.engines.base import MT, TTS, ASRFactory

GRANULARITIES = ("segment", "utterance")
ECHO_GUARDS = ("text", "gate", "both", "off")
FALLBACKS = ("relay", "silence")


@attrs.frozen
class TranslateSettings:
    """
    How a translated call behaves (``[translation]`` in the TOML file).

    :ivar granularity: ``segment`` or ``utterance``.
    :ivar backlog_s: most seconds of pending translated speech per listener.
    :ivar echo_guard: ``text``, ``gate``, ``both`` or ``off``.
    :ivar echo_window_s: how long played text counts as possible echo.
    :ivar echo_similarity: 0..1 word similarity above which a transcript is
        taken as echo.
    :ivar gate_tail_ms: the gate stays closed this long after playback.
    :ivar fallback: ``relay`` or ``silence`` while an engine is down.
    :ivar comfort_noise_dbfs: comfort noise level, or ``None`` for none.
    :ivar bed_db: level of the partner's original voice under translations,
        or ``None`` for no bed.
    :ivar gain_db: output gain of translated speech.
    :ivar context_segments: earlier segments given to MT as context.
    """

    granularity: str = "segment"
    backlog_s: float = 10.0
    echo_guard: str = "text"
    echo_window_s: float = 8.0
    echo_similarity: float = 0.6
    gate_tail_ms: int = 300
    fallback: str = "relay"
    comfort_noise_dbfs: Optional[float] = -60.0
    bed_db: Optional[float] = None
    gain_db: float = 0.0
    context_segments: int = 3
    live_buffer_ms: int = 200


@attrs.frozen
class Engines:
    """
    The engines a translating bridge uses.

    :ivar asr: builds one recogniser per leg.
    :ivar mt: shared translator.
    :ivar tts: shared synthesiser.
    :ivar names: engine name per stage, for status pages.
    """

    asr: ASRFactory
    mt: MT
    tts: TTS
    names: dict[str, str] = attrs.field(factory=dict)


_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def similarity(a: str, b: str) -> float:
    """
    Word-level similarity of two texts in 0..1 (1 = same words).
    """
    wa, wb = _words(a), _words(b)
    if not wa or not wb:
        return 0.0
    return difflib.SequenceMatcher(None, wa, wb).ratio()
