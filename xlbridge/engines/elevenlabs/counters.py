"""
Status-page counters of the ElevenLabs TTS client, and the error kinds they
count.

They live apart from :mod:`xlbridge.engines.elevenlabs.tts` because both
the client (which owns one :class:`ElevenLabsCounters`) and each utterance
it runs (:mod:`xlbridge.engines.elevenlabs.utterance`, which does most of
the counting) write to them; a module of their own lets both import them
without importing each other.

Units: byte counts are of raw S16LE audio (little-endian, 16 kHz mono,
32000 bytes per second); times are in milliseconds.
"""

from __future__ import annotations

import collections
from typing import Optional

import attrs

from xlbridge.engines.base import (
    EngineAuthError,
    EngineError,
    EngineQuotaError,
    EngineRequestError,
)

__all__ = ["ElevenLabsCounters", "error_kind"]


def error_kind(error: EngineError) -> str:
    """Counter key for ``error``: ``auth``, ``quota``, ``request`` or ``unavailable``."""
    for cls, kind in (
        (EngineAuthError, "auth"),
        (EngineQuotaError, "quota"),
        (EngineRequestError, "request"),
    ):
        if isinstance(error, cls):
            return kind
    return "unavailable"


@attrs.define
class ElevenLabsCounters:
    """
    Counters for the status page; all cumulative since start.

    :ivar requests: HTTP requests or WebSocket streams started (with retries).
    :ivar retries: attempts that were retries.
    :ivar completed: utterances spoken to the end.
    :ivar cancelled: utterances cancelled by the caller.
    :ivar bytes_received: audio bytes received (S16LE, 32000 per second).
    :ivar first_byte_ms: time from
        :meth:`~xlbridge.engines.elevenlabs.tts.ElevenLabsTTS.synthesize` to
        the first audio byte of the latest utterance, in milliseconds.
    :ivar first_byte_history: the last 64 such values, oldest first.
    :ivar errors: failed utterances by kind (see :func:`error_kind`).
    :ivar queued: attempts that had to wait for a free connection slot
        (``max_connections`` in flight).
    :ivar queue_abandoned: attempts that gave up while waiting for one
        (first-byte deadline, or cancelled).
    """

    requests: int = 0
    retries: int = 0
    completed: int = 0
    cancelled: int = 0
    bytes_received: int = 0
    first_byte_ms: Optional[float] = None
    first_byte_history: "collections.deque[float]" = attrs.field(
        factory=lambda: collections.deque(maxlen=64)
    )
    errors: dict[str, int] = attrs.field(factory=dict)
    queued: int = 0
    queue_abandoned: int = 0

    def first_byte(self, ms: float) -> None:
        """Record one utterance's time to first audio byte, in milliseconds."""
        self.first_byte_ms = ms
        self.first_byte_history.append(ms)

    def error(self, kind: str) -> None:
        """Count one failed utterance of ``kind`` (see :func:`error_kind`)."""
        self.errors[kind] = self.errors.get(kind, 0) + 1
