"""
:class:`LocalASR`, one caller's offline recogniser, and its lifecycle
:class:`State` (see the notes in :mod:`xlbridge.engines.local_asr.factory`).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Callable, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.audio.frame import Samples
from xlbridge.engines.base import (
    ASREvent,
    EngineDown,
    EngineError,
    EngineRequestError,
    EngineUnavailable,
    EngineUp,
    deliver,
)
from xlbridge.engines.local_asr import ENGINE
from xlbridge.engines.local_asr.backends import Backend, Batch, ThreadBackend, coalesce, stamped
from xlbridge.engines.local_asr.pool import ASRWorkerPool
from xlbridge.engines.local_asr.settings import MAX_RESTARTS, POOL_RETRY_S, LocalASRSettings
from xlbridge.engines.local_asr.stream_clock import FRAME_BYTES, FRAME_S
from xlbridge.engines.local_asr.worker import Session
from xlbridge.engines.local_asr.worker_link import WorkerLost
from xlbridge.engines.pocketsphinx.asr import DECODERS, DecoderPool, Reframer, SphinxModel
from xlbridge.engines.threads import PoolFull, ThreadPoolService
from xlbridge.engines.whisper.settings import WhisperModel


class State(enum.StrEnum):
    """Lifecycle of a :class:`LocalASR`, for the monitor."""

    IDLE = "idle"
    RUNNING = "running"
    FAILED = "failed"
    CLOSED = "closed"


class LocalASR:
    """
    One caller's offline recogniser, implementing
    :class:`~xlbridge.engines.base.ASR`.

    :param reactor: ``IReactorTime``; results are stamped with its time.
    :param pool: runs blocking calls (the ``thread`` backend, Vosk).
    :param language: the caller's language; without a model, ``start()``
        reports ``EngineDown(EngineRequestError)``.
    :param decoders: where the thread backend borrows pocketsphinx decoders
        (default the process-wide :data:`~xlbridge.engines.pocketsphinx.asr.DECODERS`).
    :param workers: the ASR worker processes; given, a pocketsphinx leg
        decodes there (the ``process`` backend), else in ``pool``.

    Counters: ``frames_in``; ``dropped_frames`` (queue overflow);
    ``ignored_frames`` (after failure or finish); ``lost_frames`` (gone
    with a dead worker or sent while it was down); ``tasks``;
    ``pool_refused``; ``crashes``; ``frames_decoded`` and ``decode_s``
    (decoder time, for cost per frame).
    """

    log = Logger()

    def __init__(self, reactor: IReactorTime, pool: ThreadPoolService, settings: LocalASRSettings, language: str,
                 on_event: Callable[[ASREvent], None], call_id: str = "", extension: str = "",
                 decoders: Optional[DecoderPool] = None, workers: Optional[ASRWorkerPool] = None) -> None:
        self.reactor = reactor
        self.pool = pool
        self.settings = settings
        self.language = language
        self.on_event = on_event
        self.call_id = call_id
        self.extension = extension
        self.decoders = DECODERS if decoders is None else decoders
        self.workers = workers
        self.spec = settings.model_for(language)
        self.state = State.IDLE
        self.max_queue = max(1, round(settings.queue_s / FRAME_S))
        self.frames_in = self.dropped_frames = self.ignored_frames = self.lost_frames = 0
        self.tasks = self.pool_refused = self.crashes = self.frames_decoded = 0
        self.decode_s = 0.0
        self._reframer = Reframer()
        self._queue: deque[bytes] = deque()
        self._skip = 0
        self._tail = b""
        self._busy = False
        self._opened = False
        self._finishing = False
        self._down = False
        self._outage = False  # the worker died; until the leg is re-opened its audio is lost
        self._backend: Optional[Backend] = None
        self._waiters: list[Deferred[None]] = []
        self._timer: Optional[IDelayedCall] = None
        self._retry_call: Optional[IDelayedCall] = None

    @property
    def engine_name(self) -> str:
        """The recogniser this leg uses (``whisper``, ``pocketsphinx``, ``vosk``; ``none`` without a model)."""
        return "none" if self.spec is None else self.spec.engine

    def __repr__(self) -> str:
        return f"<LocalASR call={self.call_id!r} ext={self.extension!r} language={self.language!r} state={self.state.value}>"

    # -- the ASR interface -------------------------------------------------

    def start(self) -> None:
        """Open the stream: borrow a decoder (loading it if none is idle)."""
        if self.state is not State.IDLE:
            return
        if self.spec is None:
            self.state = State.FAILED
            err = EngineRequestError(ENGINE, f"no model for {self.language}")
            self.reactor.callLater(0, self._emit, EngineDown(err, self.reactor.seconds()), True)
            return
        self.state = State.RUNNING
        params = self.settings.stream_params()
        if self.workers is not None and isinstance(self.spec, (SphinxModel, WhisperModel)):
            self._backend = self.workers.open_stream(self.spec, params, self._worker_lost, self._worker_back)
        else:
            self._backend = ThreadBackend(self.pool, Session(self.spec, params, self.decoders, self.settings.idle_decoders))
        if self.state is State.RUNNING:
            self._kick()
        else:
            self._release()

    def feed(self, samples: Samples) -> None:
        """Queue caller audio (16 kHz int16, native order); decoding follows in the backend."""
        if self.state in (State.FAILED, State.CLOSED) or self._finishing:
            self.ignored_frames += len(samples) // (FRAME_BYTES // 2)
            return
        for frame in self._reframer.push(samples):
            self.frames_in += 1
            self._queue.append(frame)
        self._bound_queue()
        self._kick()

    def finish(self) -> "Deferred[None]":
        """
        End of audio: decode what is queued, flush the endpointer, deliver
        the last final, return the decoder to its pool.  Never errbacks.
        """
        if self.state is State.IDLE:
            self.state = State.CLOSED
        if self.state in (State.FAILED, State.CLOSED):
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        if not self._finishing:
            self._finishing = True
            self._tail = self._reframer.tail()
            self._timer = self.reactor.callLater(self.settings.finish_timeout_s, self._finish_timed_out)
            self._kick()
        return d

    # -- scheduling (reactor thread) ----------------------------------------

    def _bound_queue(self) -> None:
        while len(self._queue) > self.max_queue:
            self._queue.popleft()
            self.dropped_frames += 1
            self._skip += 1

    def _kick(self) -> None:
        if self._busy or self._retry_call is not None or self.state is not State.RUNNING:
            return
        if self._outage:
            self._lose(len(self._queue))
            self._queue.clear()
            if self._finishing:
                self._close()
            return
        if not (self._queue or self._finishing or not self._opened):
            return
        batch = Batch(list(self._queue), self._skip, self._finishing, self._tail if self._finishing else b"")
        self._queue.clear()
        self._skip = 0
        self._busy = True
        self._opened = True
        self.tasks += 1
        assert self._backend is not None
        d = self._backend.run(batch)
        d.addCallbacks(self._done, self._failed, errbackArgs=(batch,))
        d.addErrback(self._bug)

    def _lose(self, frames: int) -> None:
        """Audio the worker will never see: counted, and skipped so stream time stays true."""
        self.lost_frames += frames
        self._skip += frames

    def _retry(self) -> None:
        self._retry_call = None
        self._kick()

    # -- the process backend's worker (reactor thread) ----------------------------

    def _worker_lost(self, err: EngineError) -> None:
        """The worker died; the batch in flight, if any, errbacks :class:`WorkerLost` next."""
        if self.state is State.RUNNING:
            self._outage = True
            if self._crashed(err):
                self._kick()

    def _worker_back(self, error: Optional[EngineError]) -> None:
        """Re-opened on the respawned worker (or that failed)."""
        if self.state is not State.RUNNING:
            return
        self._outage = False
        if error is not None:
            self._fail(error)
            return
        if self._down:
            self._down = False
            self._emit(EngineUp(ENGINE, self.reactor.seconds()))
        self._kick()

    # -- results (reactor thread) ---------------------------------------------

    def _done(self, batch: Batch) -> None:
        self._busy = False
        self.frames_decoded += len(batch.frames)
        self.decode_s += batch.seconds
        if self.state is not State.RUNNING:  # the finish timed out (or the leg failed) meanwhile
            self._release()
            return
        if self._down:
            self._down = False
            self._emit(EngineUp(ENGINE, self.reactor.seconds()))
        now = self.reactor.seconds()
        for ev in coalesce(batch.events):
            self._emit(stamped(ev, now))
        if batch.final:
            self._close()
        else:
            self._kick()

    def _failed(self, f: Failure, batch: Batch) -> None:
        self._busy = False
        if f.check(PoolFull):
            # Nothing ran: put the audio back (still bounded) and try again.
            self.pool_refused += 1
            self._queue.extendleft(reversed(batch.frames))
            self._skip += batch.skip
            self._bound_queue()
            if not batch.frames and not batch.final:
                self._opened = False
            self._retry_call = self.reactor.callLater(POOL_RETRY_S, self._retry)
            return
        err = f.value
        if f.check(WorkerLost):
            self._skip += batch.skip  # _worker_lost has reported it
            self._lose(len(batch.frames))
        elif isinstance(err, EngineError) and not err.retryable:
            self.log.error("local-asr: {error} call={call_id} ext={ext} language={language}",
                           error=err.message, call_id=self.call_id, ext=self.extension, language=self.language)
            self._fail(err)
            return
        elif not self._crashed(err if isinstance(err, EngineUnavailable)
                               else EngineUnavailable(ENGINE, f"decoder crashed: {err!r}")):
            return
        if self.state is not State.RUNNING:
            self._release()
        elif batch.final:
            self._close()
        else:
            self._kick()

    def _crashed(self, err: EngineError) -> bool:
        """
        Count a crash and report ``EngineDown`` once; ``False`` if that was
        one too many (the leg failed).  Workers ended by a shutdown are no
        crash: nothing is counted or logged.
        """
        if self.workers is not None and self.workers.closing:
            return True
        self.crashes += 1
        self.log.error("local-asr: decoding failed ({n}/{max}) call={call_id} ext={ext}: {error}",
                       n=self.crashes, max=MAX_RESTARTS, call_id=self.call_id, ext=self.extension, error=err.message)
        if self.crashes > MAX_RESTARTS:
            self._fail(EngineRequestError(ENGINE, f"decoding failed {self.crashes} times, last: {err.message}"))
            return False
        if not self._down:
            self._down = True
            self._emit(EngineDown(err, self.reactor.seconds()))
        return True

    def _fail(self, err: EngineError) -> None:
        self.state = State.FAILED
        self.ignored_frames += len(self._queue)
        self._queue.clear()
        self._emit(EngineDown(err, self.reactor.seconds()), True)
        self._fire_waiters()
        self._release()

    def _close(self) -> None:
        self.state = State.CLOSED
        self._fire_waiters()
        self._release()

    def _release(self) -> None:
        """Hand the stream back once no batch is in flight (else when it returns)."""
        if not self._busy and self._backend is not None:
            backend, self._backend = self._backend, None
            backend.abandon()

    def _finish_timed_out(self) -> None:
        self._timer = None
        self.log.warn("local-asr: finish timed out after {timeout} s call={call_id} ext={ext}",
                      timeout=self.settings.finish_timeout_s, call_id=self.call_id, ext=self.extension)
        self._close()

    def _fire_waiters(self) -> None:
        for call in (self._timer, self._retry_call):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._retry_call = None
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def _emit(self, ev: ASREvent, force: bool = False) -> None:
        if self.state is State.CLOSED and not force:
            return
        deliver(self.on_event, ev, self.log, "local-asr", self.call_id, self.extension)

    def _bug(self, f: Failure) -> None:
        self.log.failure("local-asr: bug call={call_id} ext={ext}", f, call_id=self.call_id, ext=self.extension)
