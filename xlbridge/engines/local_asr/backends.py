"""
The batches a :class:`~xlbridge.engines.local_asr.factory.LocalASR` leg decodes
(:class:`Batch`, :func:`coalesce`) and where it decodes them: the
:class:`Backend` protocol and :class:`ThreadBackend` (the process backend is
:class:`~xlbridge.engines.local_asr.worker_link.WorkerStream`).
"""

from __future__ import annotations

import time
from typing import Protocol

import attrs
from twisted.internet.defer import Deferred

from xlbridge.engines.local_asr.worker import Session
from xlbridge.engines.base import ASREvent, EagerEnd, Transcript, TurnResumed
from xlbridge.engines.threads import ThreadPoolService


@attrs.define
class Batch:
    """One batch of a leg's work and, once done, its results (the backend fills them)."""

    frames: list[bytes]
    skip: int
    final: bool
    tail: bytes = b""
    events: list[ASREvent] = attrs.Factory(list)
    seconds: float = 0.0


def coalesce(events: list[ASREvent]) -> list[ASREvent]:
    """
    Drop what a later event in the same batch supersedes: interims before a
    transcript, and an eager end before its final or a resumption (the
    pipeline would start a translation only to withdraw or confirm it at
    once: a wasted MT and TTS call, or none gained).
    """
    out: list[ASREvent] = []
    later = False
    settled = False  # a final or a resumption follows
    for ev in reversed(events):
        if isinstance(ev, Transcript):
            if not ev.is_final and later:
                continue
            later = True
            settled = settled or ev.is_final
        elif isinstance(ev, TurnResumed):
            settled = True
        elif isinstance(ev, EagerEnd) and settled:
            continue
        out.append(ev)
    out.reverse()
    return out


def stamped(ev: ASREvent, now: float) -> ASREvent:
    """``ev`` with ``received_at`` (an eager end: its transcript's) set to ``now``."""
    if isinstance(ev, EagerEnd):
        return EagerEnd(attrs.evolve(ev.transcript, received_at=now))
    return attrs.evolve(ev, received_at=now)  # type: ignore[misc,arg-type]


class Backend(Protocol):
    """
    Where a leg's batches are decoded: :class:`ThreadBackend` or an
    :class:`~xlbridge.engines.local_asr.worker_link.WorkerStream`.
    """

    def run(self, batch: Batch) -> "Deferred[Batch]":
        """Decode ``batch``; fires with it (events, seconds filled in) or errbacks."""

    def abandon(self) -> None:
        """The leg is done and has no batch in flight: end its stream so the decoder is reused."""


class ThreadBackend:
    """
    Decodes a leg in the thread pool (``backend = "thread"``, and Vosk
    legs).  pocketsphinx holds the GIL meanwhile, so the reactor waits a
    frame's decode now and then and a whole ``end_utt`` per utterance.
    """

    def __init__(self, pool: ThreadPoolService, session: Session) -> None:
        self.pool = pool
        self.session = session  # touched only by the one task in flight

    def run(self, batch: Batch) -> "Deferred[Batch]":
        return self.pool.run(self._work, batch)

    def _work(self, batch: Batch) -> Batch:
        """Pool thread: a batch of a leg, never two at once."""
        t0 = time.perf_counter()
        self.session.skip(batch.skip)
        if batch.frames or not batch.final:
            batch.events.extend(self.session.feed(batch.frames))
        if batch.final:
            batch.events.extend(self.session.finish(batch.tail))
        batch.seconds = time.perf_counter() - t0
        return batch

    def abandon(self) -> None:
        if self.session.stream is not None:
            self.pool.run(self.session.abandon).addErrback(lambda f: None)
