"""
Offline streaming ASR: pocketsphinx (English built in) or a user-supplied
pocketsphinx/Vosk model per language, one
:class:`~xlbridge.engines.local_asr.leg.LocalASR` per caller, from a
:class:`LocalASRFactory`.

Design notes
------------

* **Never on the reactor.**  Loading a model (~330 ms) and decoding run in
  a backend: ``process`` (the default) sends pocketsphinx legs to ASR
  worker processes (:mod:`~xlbridge.engines.local_asr.pool`), because
  pocketsphinx holds the GIL while it decodes and would stall the reactor
  even from a thread; ``thread`` (for platforms that cannot spawn) and
  every Vosk leg use the bounded
  :class:`~xlbridge.engines.threads.ThreadPoolService` (Vosk goes through
  cffi, which releases the GIL, and its model is shared by all calls of a
  process rather than copied into each worker).  Both decode with the same
  :class:`~xlbridge.engines.local_asr.worker.Session`.  Each leg has at most one
  batch in flight; frames that arrive meanwhile wait in a per-leg queue
  (bounded to ``queue_s`` of audio, drop-oldest, counted in
  ``dropped_frames``) and go together in the next batch.  Results come back
  on the reactor thread in order, stamped with ``reactor.seconds()`` when
  they arrive.  Interims overtaken by a later result in the same batch are
  not delivered.
* **Frames.**  Callers push any number of 16 kHz int16 samples;
  :class:`~xlbridge.engines.pocketsphinx.asr.Reframer` cuts them into the 640-byte (20 ms, native byte order)
  frames the pocketsphinx ``Endpointer`` insists on.
* **Models once per process.**  A pocketsphinx ``Decoder`` holds one
  stream's state, so a :class:`~xlbridge.engines.pocketsphinx.asr.DecoderPool` keeps
  a few idle decoders per model and lends them out (a leg borrows on
  start, returns on ``finish()``); the pool
  :data:`~xlbridge.engines.pocketsphinx.asr.DECODERS` lives as long as the process
  (each worker process has its own).  A Vosk ``Model`` is shared by all
  calls at once (:func:`~xlbridge.engines.vosk.asr.shared_model`).
  Loading a decoder takes ~340 ms, so :meth:`LocalASRFactory.warm_up`
  loads ``preload_decoders`` at start-up (in every worker).
* **Failures.**  A model that cannot load → ``EngineDown(EngineRequestError)``
  and the leg stops (the pipeline falls back).  A decoder that raises while
  decoding is thrown away → ``EngineDown(EngineUnavailable)``; the next
  audio gets a fresh decoder and ``EngineUp`` (up to :data:`~xlbridge.engines.local_asr.settings.MAX_RESTARTS`).
  A worker process that dies → ``EngineDown(EngineUnavailable)`` once per
  leg on it; audio until the leg is re-opened on the respawned worker is
  lost (``lost_frames``), then ``EngineUp``.  Each death counts as a crash.
  No exception reaches the reactor; ``finish()`` never errbacks.

Lifecycle (:class:`~xlbridge.engines.local_asr.leg.State`)::

    idle --start()--> running --finish(), last task--> closed
                        |  load error / too many crashes
                        v
                      failed
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from xlbridge.engines.base import ASR, ASREvent, IProcessReactor
from xlbridge.engines.local_asr.leg import LocalASR
from xlbridge.engines.local_asr.pool import ASRWorkerPool
from xlbridge.engines.local_asr.settings import LocalASRSettings, check_model, model_problems
from xlbridge.engines.local_asr.wire import ModelSpec
from xlbridge.engines.pocketsphinx.asr import DECODERS, DecoderPool, SphinxModel
from xlbridge.engines.threads import ThreadPoolService
from xlbridge.engines.vosk.asr import VoskModel, shared_model
from xlbridge.engines.whisper.decode import shared_decoder
from xlbridge.engines.whisper.settings import WhisperModel


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

    def __init__(self, reactor: IProcessReactor, pool: ThreadPoolService, settings: LocalASRSettings,
                 decoders: Optional[DecoderPool] = None, languages: Sequence[str] = ()) -> None:
        self.reactor = reactor
        self.languages = tuple(languages)
        self.pool = pool
        self.settings = settings
        self.decoders = DECODERS if decoders is None else decoders
        self.workers: Optional[ASRWorkerPool] = None
        #: ``[local_asr.models.<key>]`` tables whose model cannot load (checked once).
        self.broken = frozenset(model_problems(settings))
        if settings.backend == "process":
            self.workers = ASRWorkerPool(reactor, settings.worker_count(), settings.idle_decoders)

    def engine_for(self, language: str) -> str:
        """
        The recogniser a leg in ``language`` gets now (``whisper``,
        ``pocketsphinx``, ``vosk``; ``none`` without a model, or when its
        ``[local_asr.models.<lang>]`` model cannot load).
        """
        if self.settings.section_for(language) in self.broken:
            return "none"
        return self.settings.engine_for(language)

    def __call__(self, language: str, on_event: Callable[[ASREvent], None], call_id: str, extension: str) -> ASR:
        return LocalASR(self.reactor, self.pool, self.settings, language, on_event, call_id=call_id,
                        extension=extension, decoders=self.decoders, workers=self.workers)

    def warm_up(self) -> "Deferred[None]":
        """
        Load ``preload_decoders`` decoders per usable pocketsphinx model and
        the Whisper model (in every worker process, spawning them; or in
        this process's pool for the thread backend) and every usable Vosk
        model, so the first calls do not wait for (or, in-process, stall
        the reactor loading) them.  A Whisper model that will not load is
        reported once, naming the setting and each language's fallback,
        and legs started afterwards use that fallback.  Fires when done;
        failures are logged, never errbacked.
        """
        count = min(self.settings.preload_decoders, self.settings.idle_decoders)
        specs: list[ModelSpec] = [spec for spec in self.settings.models.values()
                                  if check_model(spec) is None and self._wanted(spec)]
        whisper = self.whisper_spec()
        if whisper is not None and self._wanted(whisper):
            specs.append(whisper)
            self.log.info("local-asr: Whisper model {path} ({device}, {compute}, {threads} thread(s) per decode, "
                          "{where}); languages: {langs}", path=whisper.path, device=whisper.device,
                          compute=whisper.compute_type, threads=whisper.cpu_threads or "default",
                          where=(f"{len(self.workers.slots)} worker process(es)" if self.workers is not None
                                 else "thread backend"),
                          langs=", ".join(f"{lang}={self.engine_for(lang)}" for lang in self.languages) or "-")
        in_workers = [s for s in specs if isinstance(s, (SphinxModel, WhisperModel))] if self.workers is not None else []
        here = [s for s in specs if s not in in_workers]
        ds: list[Deferred[list[str]]] = []
        if in_workers:
            assert self.workers is not None
            ds.append(self.workers.warm_up(in_workers, count))

        def load() -> list[str]:  # worker thread
            errors = []
            for spec in here:
                try:
                    if isinstance(spec, VoskModel):
                        shared_model(spec)
                    elif isinstance(spec, WhisperModel):
                        shared_decoder(spec)
                    else:
                        lent = [self.decoders.acquire(spec) for _ in range(max(0, count - self.decoders.idle(spec)))]
                        for decoder in lent:
                            self.decoders.release(spec, decoder, self.settings.idle_decoders)
                except Exception as e:
                    errors.append(f"{spec.describe()}: {e}")
            return errors

        if here:
            ds.append(self.pool.run(load))

        def check(results: list[list[str]]) -> None:
            errors = [e for r in results if isinstance(r, list) for e in r]
            if whisper is not None:
                bad = [e for e in errors if e.startswith(whisper.describe())]
                if bad:
                    self.whisper_failed(bad[0])
            for spec in specs:
                if spec is not whisper:
                    for error in sorted({e for e in errors if e.startswith(spec.describe())}):
                        self.model_failed(spec, error)

        d = gatherResults(ds, consumeErrors=True).addCallback(check)
        d.addErrback(lambda f: self.log.warn("local-asr: warm-up failed: {error}", error=f.getErrorMessage()))
        return d

    def _wanted(self, spec: ModelSpec) -> bool:
        """
        Whether a caller language uses ``spec`` (every model when the
        languages are not known): with Whisper for every language, the
        bundled pocketsphinx decoders (~90 MB each) are not preloaded.
        """
        if not self.languages:
            return True
        used = [self.settings.model_for(lang) for lang in self.languages]
        if isinstance(spec, WhisperModel):
            return any(isinstance(u, WhisperModel) for u in used)
        return spec in used

    def whisper_spec(self) -> Optional[WhisperModel]:
        """The Whisper model legs use (no language), or ``None``."""
        s = self.settings
        if not s.uses_whisper or s.whisper_path is None:
            return None
        return s.whisper.spec(s.whisper_path)

    def whisper_failed(self, why: str) -> None:
        """The Whisper model does not load: say so once, and start later legs on the fallback."""
        before = self.settings
        self.settings = attrs.evolve(before, whisper_path=None)
        fallback = {lang: self.engine_for(lang) for lang in self.languages}
        self.log.error("local-asr: [local_asr.whisper] model {path} does not load ({why}); {fallback}",
                       path=before.whisper_path, why=why, fallback=describe_fallback(fallback))

    def model_failed(self, spec: ModelSpec, why: str) -> None:
        """
        A configured model did not load at warm-up (a corrupt Vosk or
        pocketsphinx model): say so now, naming its ``[local_asr.models.*]``
        table, rather than at the first call in that language.
        """
        for section in sorted(lang for lang, s in self.settings.models.items() if s == spec):
            self.broken = self.broken | {section}
            langs = [lang for lang in self.languages if self.settings.section_for(lang) == section] or [section]
            self.log.error("local-asr: [local_asr.models.{section}] does not load ({why}); {fallback}",
                           section=section, why=why, fallback=describe_fallback({lang: "none" for lang in langs}))

    def close(self) -> "Deferred[None]":
        """End the worker processes, if any (fires when they exited)."""
        return self.workers.close() if self.workers is not None else succeed(None)


def local_asr_factory(reactor: IProcessReactor, pool: ThreadPoolService, settings: LocalASRSettings,
                      decoders: Optional[DecoderPool] = None, languages: Sequence[str] = ()) -> LocalASRFactory:
    """
    A :class:`LocalASRFactory` (an :data:`~xlbridge.engines.base.ASRFactory`
    with ``warm_up()`` and ``close()``); ``languages`` are the callers'
    (for messages about fallbacks).
    """
    return LocalASRFactory(reactor, pool, settings, decoders, languages)


def describe_fallback(engines: Mapping[str, str]) -> str:
    """``{"en": "pocketsphinx", "es": "none"}`` in words for an operator."""
    parts = []
    for lang, engine in sorted(engines.items()):
        if engine == "none":
            parts.append(f"{lang} callers are not recognised (their partners hear the original voice)")
        else:
            parts.append(f"{lang} callers use {engine}")
    return "; ".join(parts) if parts else "no caller language is affected"
