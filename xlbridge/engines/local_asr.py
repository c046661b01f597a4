"""
Offline streaming ASR: pocketsphinx (English built in) or a user-supplied
pocketsphinx/Vosk model per language, one :class:`LocalASR` per caller.

Design notes
------------

* **Never on the reactor.**  Loading a model (~330 ms) and decoding run in
  a backend: ``process`` (the default) sends pocketsphinx legs to ASR
  worker processes (:mod:`~xlbridge.engines.asr_process`), because
  pocketsphinx holds the GIL while it decodes and would stall the reactor
  even from a thread; ``thread`` (for platforms that cannot spawn) and
  every Vosk leg use the bounded
  :class:`~xlbridge.engines.threads.ThreadPoolService` (Vosk goes through
  cffi, which releases the GIL, and its model is shared by all calls of a
  process rather than copied into each worker).  Both decode with the same
  :class:`~xlbridge.engines.asr_worker.Session`.  Each leg has at most one
  batch in flight; frames that arrive meanwhile wait in a per-leg queue
  (bounded to ``queue_s`` of audio, drop-oldest, counted in
  ``dropped_frames``) and go together in the next batch.  Results come back
  on the reactor thread in order, stamped with ``reactor.seconds()`` when
  they arrive.  Interims overtaken by a later result in the same batch are
  not delivered.
* **Frames.**  Callers push any number of 16 kHz int16 samples;
  :class:`Reframer` cuts them into the 640-byte (20 ms, native byte order)
  frames the pocketsphinx ``Endpointer`` insists on.
* **Models once per process.**  A pocketsphinx ``Decoder`` holds one
  stream's state, so a :class:`~xlbridge.engines.sphinx.DecoderPool` keeps
  a few idle decoders per model and lends them out (a leg borrows on
  start, returns on ``finish()``); the pool
  :data:`~xlbridge.engines.sphinx.DECODERS` lives as long as the process
  (each worker process has its own).  A Vosk ``Model`` is shared by all
  calls at once (:func:`~xlbridge.engines.vosk_asr.shared_model`).
  Loading a decoder takes ~340 ms, so :meth:`LocalASRFactory.warm_up`
  loads ``preload_decoders`` at start-up (in every worker).
* **Failures.**  A model that cannot load → ``EngineDown(EngineRequestError)``
  and the leg stops (the pipeline falls back).  A decoder that raises while
  decoding is thrown away → ``EngineDown(EngineUnavailable)``; the next
  audio gets a fresh decoder and ``EngineUp`` (up to :data:`MAX_RESTARTS`).
  A worker process that dies → ``EngineDown(EngineUnavailable)`` once per
  leg on it; audio until the leg is re-opened on the respawned worker is
  lost (``lost_frames``), then ``EngineUp``.  Each death counts as a crash.
  No exception reaches the reactor; ``finish()`` never errbacks.

Lifecycle (``state``)::

    idle --start()--> running --finish(), last task--> closed
                        |  load error / too many crashes
                        v
                      failed
"""

from __future__ import annotations

import enum
import re
import time
from collections import deque
from typing import Any, Callable, Mapping, Optional, Protocol, Union

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.audio.frame import SAMPLE_RATE, Samples
from xlbridge.engines.base import (
    ASR,
    ASREvent,
    EngineDown,
    EngineError,
    EngineRequestError,
    EngineUnavailable,
    EngineUp,
    Transcript,
)
from xlbridge.engines.asr_process import ASRWorkerPool, WorkerLost, default_workers
from xlbridge.engines.asr_worker import Session, StreamParams
from xlbridge.engines.sphinx import (
    DECODERS,
    ENGINE,
    FRAME_BYTES,
    FRAME_S,
    DecoderPool,
    Reframer,
    SphinxModel,
    SphinxStream,
    check_sphinx_model,
)
from xlbridge.engines.threads import PoolFull, ThreadPoolService
from xlbridge.engines.vosk_asr import VoskModel, check_vosk_model, shared_model
from xlbridge.errors import ConfigError

__all__ = [
    "DECODERS", "DecoderPool", "LocalASR", "LocalASRFactory", "LocalASRSettings", "Reframer", "SphinxModel", "SphinxStream",
    "VoskModel", "languages_with_models", "local_asr_factory", "missing_model_warning", "model_problems",
]

#: A model for one language.
ModelSpec = Union[SphinxModel, VoskModel]

#: Crashed decoders replaced per leg before giving up on it.
MAX_RESTARTS = 3

#: Seconds between retries when the thread pool refused a task.
POOL_RETRY_S = 0.05

#: Where decoding runs (see the module notes).
BACKENDS = ("process", "thread")

_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")


# -- settings -----------------------------------------------------------------


def _with_english(models: Mapping[str, ModelSpec]) -> Mapping[str, ModelSpec]:
    return {"en": SphinxModel(), **dict(models)}


@attrs.frozen
class LocalASRSettings:
    """
    The ``[local_asr]`` table.

    :ivar models: language (``en``, ``es``, ``pt-br``) → model; ``en`` is the
        bundled pocketsphinx model unless overridden.
    :ivar endpoint_window_s: endpointer decision window, seconds.
    :ivar endpoint_ratio: fraction of the window that must agree.
    :ivar vad_mode: VAD aggressiveness, 0 (loose) to 3 (strict).
    :ivar interim_interval_s: least audio between interim results.
    :ivar max_utterance_s: longer speech is cut into finals.
    :ivar queue_s: audio a busy leg may queue before dropping the oldest.
    :ivar idle_decoders: idle pocketsphinx decoders kept per model (~90 MB
        each for the bundled model), per worker process.
    :ivar preload_decoders: decoders loaded per model (in each worker) by
        :meth:`LocalASRFactory.warm_up` (at most ``idle_decoders``).  Loading
        takes ~340 ms (holding the GIL: with the thread backend it stalls
        every call's audio), so it is best done before calls arrive.
    :ivar finish_timeout_s: ``finish()`` fires after this even if the last
        task never returns (a stopped pool).
    :ivar backend: ``process`` (pocketsphinx in worker processes) or
        ``thread`` (in the thread pool, holding the GIL).
    :ivar workers: worker processes (default one per CPU core minus one, at
        least one); each keeps its own ``idle_decoders`` per model.
    """

    models: Mapping[str, ModelSpec] = attrs.field(factory=dict, converter=_with_english)
    endpoint_window_s: float = 0.3
    endpoint_ratio: float = 0.9
    vad_mode: int = 0
    interim_interval_s: float = 0.2
    max_utterance_s: float = 20.0
    queue_s: float = 3.0
    idle_decoders: int = 4
    preload_decoders: int = 2
    finish_timeout_s: float = 5.0
    backend: str = attrs.field(default="process", validator=attrs.validators.in_(BACKENDS))
    workers: Optional[int] = None

    #: key -> (type, least, most)
    _NUMBERS = {
        "endpoint_window_s": (float, 0.06, 2.0),
        "endpoint_ratio": (float, 0.1, 1.0),
        "vad_mode": (int, 0, 3),
        "interim_interval_s": (float, 0.02, 5.0),
        "max_utterance_s": (float, 1.0, 120.0),
        "queue_s": (float, 0.1, 60.0),
        "idle_decoders": (int, 0, 64),
        "preload_decoders": (int, 0, 64),
        "finish_timeout_s": (float, 0.1, 120.0),
        "workers": (int, 1, 64),
    }

    def worker_count(self) -> int:
        """Worker processes for the ``process`` backend."""
        return self.workers or default_workers()

    def stream_params(self) -> StreamParams:
        """The per-stream recogniser settings."""
        return StreamParams(self.endpoint_window_s, self.endpoint_ratio, self.vad_mode, self.interim_interval_s,
                            self.max_utterance_s)

    def model_for(self, language: str) -> Optional[ModelSpec]:
        """The model for ``language``: exact match, else its primary subtag."""
        lang = language.strip().lower().replace("_", "-")
        return self.models.get(lang) or self.models.get(lang.split("-")[0])

    @classmethod
    def from_options(cls, table: Mapping[str, Any]) -> "LocalASRSettings":
        """
        Validate the TOML ``[local_asr]`` table.

        :raises ConfigError: naming the bad key, e.g. ``local_asr.models.es.path``.
        """
        if not isinstance(table, Mapping):
            raise ConfigError("config", "[local_asr] must be a table")
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key == "models":
                values["models"] = _parse_models(value)
            elif key == "backend":
                if value not in BACKENDS:
                    raise ConfigError("config", f"local_asr.backend: {value!r} is not one of {', '.join(BACKENDS)}")
                values["backend"] = value
            elif key in cls._NUMBERS:
                values[key] = _number(f"local_asr.{key}", value, *cls._NUMBERS[key])
            else:
                known = ", ".join(["models", "backend", *cls._NUMBERS])
                raise ConfigError("config", f"local_asr.{key}: unknown setting (known: {known})")
        settings = cls(**values)
        _check_endpointer(settings.endpoint_window_s, settings.endpoint_ratio)
        return settings


def _check_endpointer(window_s: float, ratio: float) -> None:
    """
    Ask pocketsphinx whether it accepts ``window_s``/``ratio`` (it needs a
    frame of the window left for the start and the end decision), so a bad
    pair fails at start-up, not in every call.
    """
    try:
        from pocketsphinx import Endpointer
    except ImportError:
        return
    try:
        Endpointer(window=window_s, ratio=ratio, sample_rate=SAMPLE_RATE, frame_length=FRAME_S)
    except ValueError:
        raise ConfigError("config", f"local_asr.endpoint_ratio: pocketsphinx cannot endpoint with ratio {ratio} "
                                    f"of a {window_s} s window (too close to 0 or 1 for its frames)") from None


def _number(key: str, value: Any, kind: type, lo: float, hi: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ConfigError("config", f"{key}: expected {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError("config", f"{key}: {value!r} is outside {lo}..{hi}")
    return kind(value)


def _parse_models(models: Any) -> dict[str, ModelSpec]:
    if not isinstance(models, Mapping):
        raise ConfigError("config", "local_asr.models: expected a table of languages")
    out: dict[str, ModelSpec] = {}
    for lang, spec in models.items():
        key = f"local_asr.models.{lang}"
        if not isinstance(lang, str) or not _LANGUAGE.match(lang.lower()):
            raise ConfigError("config", f"{key}: not a language code like 'es' or 'pt-br'")
        if not isinstance(spec, Mapping):
            raise ConfigError("config", f"{key}: expected a table with engine and paths")
        engine = spec.get("engine", "vosk" if "path" in spec else "pocketsphinx")
        if engine == "vosk":
            out[lang.lower()] = VoskModel.from_table(key, spec)
        elif engine == "pocketsphinx":
            out[lang.lower()] = SphinxModel.from_table(key, spec)
        else:
            raise ConfigError("config", f"{key}.engine: {engine!r} is not 'pocketsphinx' or 'vosk'")
    return out


def check_model(spec: ModelSpec) -> Optional[str]:
    """Why ``spec`` cannot load, or ``None``; cheap (no model is read)."""
    return check_vosk_model(spec) if isinstance(spec, VoskModel) else check_sphinx_model(spec)


def model_problems(settings: LocalASRSettings) -> dict[str, str]:
    """Configured languages whose model cannot load, with the reason."""
    return {lang: p for lang, spec in settings.models.items() if (p := check_model(spec)) is not None}


def languages_with_models(settings: LocalASRSettings) -> set[str]:
    """
    Languages with a usable model, so the composition root can warn at
    start-up (:func:`missing_model_warning`) and use the fallback for legs
    in other languages.
    """
    problems = model_problems(settings)
    return {lang for lang in settings.models if lang not in problems}


def missing_model_warning(language: str) -> str:
    """The start-up warning for a caller language with no model."""
    return f"no ASR model for {language}: add [local_asr.models.{language}] with path=... (see README)"


# -- one leg -------------------------------------------------------------------


class State(enum.StrEnum):
    """Lifecycle of a :class:`LocalASR`, for the monitor."""

    IDLE = "idle"
    RUNNING = "running"
    FAILED = "failed"
    CLOSED = "closed"


@attrs.define
class _Batch:
    """One batch of a leg's work and, once done, its results (the backend fills them)."""

    frames: list[bytes]
    skip: int
    final: bool
    tail: bytes = b""
    events: list[ASREvent] = attrs.Factory(list)
    seconds: float = 0.0


def coalesce(events: list[ASREvent]) -> list[ASREvent]:
    """Drop interims that a later transcript in the same batch supersedes."""
    out: list[ASREvent] = []
    later = False
    for ev in reversed(events):
        if isinstance(ev, Transcript):
            if not ev.is_final and later:
                continue
            later = True
        out.append(ev)
    out.reverse()
    return out


class _Backend(Protocol):
    """Where a leg's batches are decoded: :class:`ThreadBackend` or an :class:`~xlbridge.engines.asr_process.WorkerStream`."""

    def run(self, batch: _Batch) -> "Deferred[_Batch]":
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

    def run(self, batch: _Batch) -> "Deferred[_Batch]":
        return self.pool.run(self._work, batch)

    def _work(self, batch: _Batch) -> _Batch:
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


class LocalASR:
    """
    One caller's offline recogniser, implementing
    :class:`~xlbridge.engines.base.ASR`.

    :param reactor: ``IReactorTime``; results are stamped with its time.
    :param pool: runs blocking calls (the ``thread`` backend, Vosk).
    :param language: the caller's language; without a model, ``start()``
        reports ``EngineDown(EngineRequestError)``.
    :param decoders: where the thread backend borrows pocketsphinx decoders
        (default the process-wide :data:`~xlbridge.engines.sphinx.DECODERS`).
    :param workers: the ASR worker processes; given, a pocketsphinx leg
        decodes there (the ``process`` backend), else in ``pool``.

    Counters: ``frames_in``; ``dropped_frames`` (queue overflow);
    ``ignored_frames`` (after failure or finish); ``lost_frames`` (gone
    with a dead worker or sent while it was down); ``tasks``;
    ``pool_refused``; ``crashes``; ``frames_decoded`` and ``decode_s``
    (decoder time, for cost per frame).
    """

    log = Logger()

    def __init__(self, reactor: Any, pool: ThreadPoolService, settings: LocalASRSettings, language: str,
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
        self._backend: Optional[_Backend] = None
        self._waiters: list[Deferred[None]] = []
        self._timer: Optional[IDelayedCall] = None
        self._retry_call: Optional[IDelayedCall] = None

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
        if self.workers is not None and isinstance(self.spec, SphinxModel):
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
        batch = _Batch(list(self._queue), self._skip, self._finishing, self._tail if self._finishing else b"")
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

    def _done(self, batch: _Batch) -> None:
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
            self._emit(attrs.evolve(ev, received_at=now))  # type: ignore[misc]
        if batch.final:
            self._close()
        else:
            self._kick()

    def _failed(self, f: Failure, batch: _Batch) -> None:
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
        """Count a crash and report ``EngineDown`` once; ``False`` if that was one too many (the leg failed)."""
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
        try:
            self.on_event(ev)
        except Exception:
            self.log.failure("local-asr: on_event raised call={call_id} ext={ext}",
                             call_id=self.call_id, ext=self.extension)

    def _bug(self, f: Failure) -> None:
        self.log.failure("local-asr: bug call={call_id} ext={ext}", f, call_id=self.call_id, ext=self.extension)


class LocalASRFactory:
    """
    The :data:`~xlbridge.engines.base.ASRFactory` for local ASR: call it to
    get one :class:`LocalASR` per caller.  A language without a model still
    gets one, which reports ``EngineDown(EngineRequestError("no model for
    <lang>"))`` when started, so the pipeline falls back for that leg only.
    With ``backend = "process"`` it owns the :class:`ASRWorkerPool`
    (spawned on first use or by :meth:`warm_up`, ended by :meth:`close`).
    """

    log = Logger()

    def __init__(self, reactor: Any, pool: ThreadPoolService, settings: LocalASRSettings,
                 decoders: Optional[DecoderPool] = None) -> None:
        self.reactor = reactor
        self.pool = pool
        self.settings = settings
        self.decoders = DECODERS if decoders is None else decoders
        self.workers: Optional[ASRWorkerPool] = None
        if settings.backend == "process":
            self.workers = ASRWorkerPool(reactor, settings.worker_count(), settings.idle_decoders)

    def __call__(self, language: str, on_event: Callable[[ASREvent], None], call_id: str, extension: str) -> ASR:
        return LocalASR(self.reactor, self.pool, self.settings, language, on_event, call_id=call_id,
                        extension=extension, decoders=self.decoders, workers=self.workers)

    def warm_up(self) -> "Deferred[None]":
        """
        Load ``preload_decoders`` decoders per usable pocketsphinx model (in
        every worker process, spawning them; or in this process's pool for
        the thread backend) and every usable Vosk model, so the first calls
        do not wait for (or, in-process, stall the reactor loading) them.
        Fires when done; failures are logged, never errbacked.
        """
        count = min(self.settings.preload_decoders, self.settings.idle_decoders)
        specs = [spec for spec in self.settings.models.values() if check_model(spec) is None]
        in_workers = [s for s in specs if isinstance(s, SphinxModel)] if self.workers is not None else []
        here = [s for s in specs if s not in in_workers]
        ds: list[Deferred[None]] = []
        if in_workers:
            assert self.workers is not None
            ds.append(self.workers.warm_up(in_workers, count))

        def load() -> None:  # worker thread
            for spec in here:
                if isinstance(spec, VoskModel):
                    shared_model(spec)
                    continue
                lent = [self.decoders.acquire(spec) for _ in range(max(0, count - self.decoders.idle(spec)))]
                for decoder in lent:
                    self.decoders.release(spec, decoder, self.settings.idle_decoders)

        if here:
            ds.append(self.pool.run(load))
        d = gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)
        d.addErrback(lambda f: self.log.warn("local-asr: warm-up failed: {error}", error=f.getErrorMessage()))
        return d

    def close(self) -> "Deferred[None]":
        """End the worker processes, if any (fires when they exited)."""
        return self.workers.close() if self.workers is not None else succeed(None)


def local_asr_factory(reactor: Any, pool: ThreadPoolService, settings: LocalASRSettings,
                      decoders: Optional[DecoderPool] = None) -> LocalASRFactory:
    """
    A :class:`LocalASRFactory` (an :data:`~xlbridge.engines.base.ASRFactory`
    with ``warm_up()`` and ``close()``).
    """
    return LocalASRFactory(reactor, pool, settings, decoders)
