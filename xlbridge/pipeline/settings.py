"""
Settings of translated calls and the word similarity the echo guard uses
(the engine bundle is :class:`xlbridge.engines.base.Engines`).

Kept apart from :mod:`xlbridge.pipeline.translate` so configuration code can
import the settings without pulling in the pipeline.
"""

from __future__ import annotations

import difflib
import re
from typing import Optional

import attrs

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
    :ivar sync_directions: delay the faster direction of a call so both
        callers hear translations with the same lag (measured: the running
        mean of end of speech to first packet per direction).
    :ivar sync_max_ms: most delay direction sync adds to an utterance.
    :ivar early_play_ms: a speculation (a translation started on an eager
        end of turn) may start playing this long after its eager event if
        the speaker has not resumed meanwhile, before the turn is known to
        have ended; ``None`` (default): only once it has.  A speculation
        heard and then withdrawn is cut off mid-word.
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
    sync_directions: bool = False
    sync_max_ms: float = 1500.0
    early_play_ms: Optional[float] = None


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


class DirectionSync:
    """
    Per-call latency of each direction, for direction sync.

    Each direction reports its end of speech to first packet latency; an
    utterance of the faster direction is held until the slower direction's
    typical latency has passed since its speech ended, so both callers
    experience the same lag.  The cost is that added delay, capped by
    ``max_ms``.
    """

    ALPHA = 0.3

    def __init__(self, max_ms: float) -> None:
        self.max_ms = max_ms
        self.latency_ms: dict[str, float] = {}

    def observe(self, speaker: str, total_ms: float, added_ms: float = 0.0) -> None:
        """
        Record a direction's natural latency (what it would have been
        without the sync delay).
        """
        natural = max(0.0, total_ms - added_ms)
        old = self.latency_ms.get(speaker)
        self.latency_ms[speaker] = natural if old is None else old + self.ALPHA * (natural - old)

    def target_ms(self, speaker: str) -> Optional[float]:
        """
        The lag this speaker's translations should match, or ``None`` when
        there is nothing to match yet or this direction is the slower one.
        """
        own = self.latency_ms.get(speaker)
        others = [v for k, v in self.latency_ms.items() if k != speaker]
        if own is None or not others:
            return None
        slowest = max(others)
        if slowest <= own:
            return None
        return min(slowest, own + self.max_ms)
