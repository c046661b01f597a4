# -*- test-case-name: tests.engines.apertium.test_mt -*-
"""
Offline machine translation with Apertium (rule-based, Debian packages
``apertium`` and ``apertium-eng-spa``).

Design notes:

- One long-lived pipeline process per direction (mode ``eng-spa``,
  ``spa-eng``...), run under Twisted's process support
  (``reactor.spawnProcess`` and a :class:`ApertiumPipe` protocol), never a
  thread.  A one-shot ``apertium`` run costs 140-200 ms per sentence (it
  loads every transducer again); a kept pipeline answers in about 1 ms once
  its first sentence (~120 ms, the lazy transducer load) is through.

- The null-flush recipe (see ``OFFLINE.md`` §2).  ``apertium -z`` through
  the wrapper script never answers: its deformatter drops the NUL and its
  ``gawk`` reads ahead.  So the raw pipeline is generated once per mode by
  ``apertium-wblank-mode -z <modes_dir>/<mode>.mode`` (asynchronously, with
  ``getProcessOutputAndValue``, on first use) and run as
  ``bash -c SCRIPT apertium-pipe -n ''``: ``$1 = -n`` makes the generator
  leave unknown words unmarked (the wrapper's ``-u``), ``$2`` is the
  tagger's extra option.  Each sentence is written as
  ``escape(text) + "\\n\\0"`` (``lt-proc -z -b`` flushes only when a blank
  precedes the NUL) and the reply is everything up to the next NUL
  (:class:`~xlbridge.engines.apertium.text.NullFramer`).  There is no
  reformatter stage, so the reply still carries the input's escapes and is
  un-escaped here.

- ``lrx-proc`` 3.x never answers when an escaped ``\\^`` sits in the
  blank that ends a sentence (``"a ^"`` hangs, ``"a ^ b"`` does not).  So a
  ``^`` travels as a private-use stand-in (U+E05E), which the analysers
  treat as an ordinary blank, and is turned back on output.

- Framing: one sentence in flight per direction; the rest wait in a bounded
  FIFO (``max_queue``; beyond it a request errbacks
  :class:`~xlbridge.engines.base.EngineUnavailable` at once and is counted
  in ``rejected``).  Replies are matched to requests by order.  Input is
  normalised to one line first: a newline would split the stream into two
  replies, and a NUL would end the frame early.

- Failures: the pipeline is restarted when it exits, writes to stderr (it
  writes nothing there when healthy), sends output nobody asked for, or
  does not answer within ``timeout_s`` (``first_timeout_s`` for the first
  sentence after a spawn, which pays for the transducer load).  After a
  crash the sentence in flight is retried once on the new process; a
  second failure errbacks it.  A sentence that *timed out* is not retried:
  it errbacks at once, since a sentence that hung a pipeline would likely
  hang the next one too, and a late translation is worth nothing on a
  call.  Respawns back off (``backoff_initial_s`` doubling up to
  ``backoff_max_s``), and after ``max_failures`` failures in a row the
  waiting requests errback instead of waiting for a pipeline that keeps
  dying.  Pipelines run in their own session (``setsid``) so a kill reaches
  every stage, not just the shell.

- Everything runs on the reactor thread; the reactor is injected (it spawns
  processes and times the deadlines), nothing imports the global one.
"""

from __future__ import annotations

from typing import Optional, Sequence

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.engines.apertium.direction import ApertiumCounters, Direction
from xlbridge.engines.apertium.pipe import ApertiumPipe
from xlbridge.engines.apertium.settings import ApertiumSettings
from xlbridge.engines.apertium.text import ENGINE, normalise
from xlbridge.engines.base import EngineRequestError, EngineUnavailable, IProcessReactor


def _base(code: str) -> str:
    return str(code).strip().lower().replace("_", "-").split("-")[0]


class ApertiumMT:
    """
    :class:`~xlbridge.engines.base.MT` on local Apertium pipelines, one per
    direction, started on first use; build one per process and share it.

    Apertium translates sentence by sentence with no memory, so the
    ``context`` argument of :meth:`translate` is ignored.

    :param reactor: provides ``IReactorProcess`` (spawns the pipelines) and
        ``IReactorTime`` (deadlines, backoff, latency).
    :param settings: modes, pairs and limits.
    """

    name = ENGINE
    log = Logger()

    def __init__(self, reactor: IProcessReactor, settings: ApertiumSettings = ApertiumSettings()) -> None:
        self.reactor = reactor
        self.settings = settings
        self.counters = ApertiumCounters()
        self._directions: dict[str, Direction] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<ApertiumMT pairs={dict(self.settings.pairs)!r}>"

    def mode_for(self, source: str, target: str) -> Optional[str]:
        """
        The Apertium mode for bridge codes ``source`` → ``target`` (regional
        variants map to their base: ``en-US`` → ``en``), or ``None``.
        """
        return self.settings.pairs.get(f"{_base(source)}-{_base(target)}")

    def supported(self, source: str, target: str) -> bool:
        """
        Whether a pair is configured (not whether it is installed; see
        :func:`~xlbridge.engines.apertium.settings.apertium_available`).
        """
        return self.mode_for(source, target) is not None

    def translate(
        self, text: str, source: str, target: str, context: Sequence[str] = ()
    ) -> "Deferred[str]":
        """
        Translate ``text`` from ``source`` to ``target``; ``context`` is
        ignored (Apertium has none).  Call on the reactor thread.

        Fires with the translation (``""`` at once for blank text), or
        errbacks with :class:`~xlbridge.engines.base.EngineRequestError`
        for a pair that is not configured and
        :class:`~xlbridge.engines.base.EngineUnavailable` when Apertium is
        missing, the queue is full, the pipeline hangs or keeps crashing,
        or the engine is closed.  Cancelling drops the request.
        """
        mode = self.mode_for(source, target)
        if mode is None:
            self.counters.failed += 1
            have = ", ".join(p.replace("-", "→") for p in sorted(self.settings.pairs))
            return fail(EngineRequestError(ENGINE, f"no language pair for {source}→{target} (configured: {have})"))
        line = normalise(text)
        if not line:
            return succeed("")
        if self._closed:
            self.counters.failed += 1
            return fail(EngineUnavailable(ENGINE, "the engine is closed"))
        direction = self._directions.get(mode)
        if direction is None:
            direction = self._directions[mode] = Direction(self.reactor, self.settings, mode, self.counters)
        return direction.submit(line)

    def warm_up(self) -> "Deferred[None]":
        """
        Start every configured pipeline and push one sentence through each,
        so the first caller does not wait for the transducer load.  Fires
        when done; failures are logged, never raised.
        """
        ds = []
        for pair in sorted(self.settings.pairs):
            source, target = pair.split("-")
            d = self.translate("OK.", source, target)
            d.addErrback(self._warm_up_failed, pair)
            ds.append(d)
        return DeferredList(ds).addCallback(lambda _: None)

    def _warm_up_failed(self, failure: Failure, pair: str) -> None:
        self.log.warn("Apertium warm-up of {pair} failed: {why}", pair=pair, why=failure.getErrorMessage())

    def pipe(self, source: str, target: str) -> Optional[ApertiumPipe]:
        """
        The running pipeline for a pair, if any (monitoring, tests).
        """
        mode = self.mode_for(source, target)
        direction = self._directions.get(mode) if mode is not None else None
        return direction.pipe if direction is not None else None

    def close(self) -> "Deferred[None]":
        """
        Fail what is waiting and stop every pipeline (end of input, then a
        kill after a second).  Fires when all have exited.
        """
        self._closed = True
        ds = [d.close() for d in self._directions.values()]
        return DeferredList(ds).addCallback(lambda _: None)

