"""
Tests for :mod:`xlbridge.engines.local_asr.leg`: one caller's
:class:`LocalASR`.

Its scheduling (batches, stamps, the finish timeout, a worker's death and
respawn) is driven with a :class:`~twisted.internet.task.Clock` and a fake
worker process.  Then the real thing: pocketsphinx on Asterisk's "Allison"
prompts, on the real reactor with a real
:class:`~xlbridge.engines.threads.ThreadPoolService` (``thread`` backend)
and with real worker processes (``process`` backend, one worker per test).
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, Optional

import attrs
import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from xlbridge.engines.base import (
    ASREvent,
    EngineDown,
    EngineRequestError,
    EngineUnavailable,
    EngineUp,
    SpeechStarted,
    Transcript,
)
from xlbridge.engines.local_asr.factory import LocalASRFactory, local_asr_factory
from xlbridge.engines.local_asr.leg import LocalASR, State
from xlbridge.engines.local_asr.settings import LocalASRSettings
from xlbridge.engines.local_asr.wire import (
    AUDIO, EVENTS, FINISH, FINISHED, OPEN, dump, encode, event_to_json, parse_audio,
)
from xlbridge.engines.pocketsphinx.asr import DecoderPool
from xlbridge.engines.threads import ThreadPoolService

from tests.engines.fake_processes import ProcessClock
from tests.engines.local_asr.pacing import feed_paced
from tests.engines.local_asr.speech import (
    BUNDLED, DECODERS, LEAD_S, RATE, SPEECH_MISSING, FlakyPool, prompt, speech_bounds, transcripts, with_silence,
)


# -- with a clock ---------------------------------------------------------------------


class NoModelTests(SynchronousTestCase):
    """A language without a model: no thread or worker is involved, whatever the backend."""

    def check_language_without_model(self, backend: str) -> None:
        clock = Clock()
        settings = LocalASRSettings(backend=backend, workers=1)
        factory = local_asr_factory(clock, ThreadPoolService(clock), settings)  # type: ignore[arg-type]
        events: list[ASREvent] = []
        asr = factory("es", events.append, "call-1", "100")
        assert isinstance(asr, LocalASR)
        asr.start()
        asr.feed(np.zeros(3200, np.int16))
        self.assertEqual(events, [])  # reported on the next turn of the clock
        clock.advance(0)
        [down] = events
        assert isinstance(down, EngineDown)
        self.assertIsInstance(down.error, EngineRequestError)
        self.assertIn("no model for es", str(down.error))
        self.assertEqual(asr.ignored_frames, 10)
        self.successResultOf(asr.finish())
        self.assertEqual((asr.state, asr.engine_name), (State.FAILED, "none"))
        self.successResultOf(factory.close())

    def test_language_without_model_thread_backend(self) -> None:
        self.check_language_without_model("thread")

    def test_language_without_model_process_backend(self) -> None:
        self.check_language_without_model("process")


def _reply(proto: Any, stream: int, kind: int = EVENTS, events: tuple[ASREvent, ...] = (), **body: Any) -> None:
    """The worker's answer to one request of ``stream``."""
    payload = {"events": [event_to_json(e) for e in events], "frames": 0, "seconds": 0.001, **body}
    proto.outReceived(encode(kind, stream, dump(payload)))


class FakeWorkerTests(SynchronousTestCase):
    """A leg on the ``process`` backend whose worker is played by the test."""

    def setUp(self) -> None:
        self.clock = ProcessClock()
        settings = LocalASRSettings(backend="process", workers=1, finish_timeout_s=2.0)
        self.factory = local_asr_factory(self.clock, ThreadPoolService(self.clock), settings)  # type: ignore[arg-type]
        self.events: list[ASREvent] = []
        asr = self.factory("en", self.events.append, "call-1", "100")
        assert isinstance(asr, LocalASR)
        self.asr = asr
        self.asr.start()

    def worker(self) -> tuple[Any, list[tuple[int, int]]]:
        """The current worker's protocol and the (kind, stream) of every request it got."""
        proto, _, _, _, process = self.clock.spawned[-1]
        return proto, [(m.kind, m.stream) for m in process.requests()]

    def test_opens_then_batches(self) -> None:
        """Start opens the stream (an empty AUDIO batch); audio fed meanwhile goes in the next batch."""
        proto, requests = self.worker()
        [(_, sid), _] = requests
        self.assertEqual(requests, [(OPEN, sid), (AUDIO, sid)])
        self.asr.feed(np.zeros(960, np.int16))  # three frames, queued behind the open
        self.assertEqual(len(self.worker()[1]), 2)
        _reply(proto, sid)
        _reply(proto, sid)
        self.assertEqual(self.worker()[1][2:], [(AUDIO, sid)])
        self.assertEqual((self.asr.frames_in, self.asr.tasks), (3, 2))

    def test_results_stamped_with_the_clock_and_coalesced(self) -> None:
        proto, [(_, sid), _] = self.worker()
        _reply(proto, sid)
        self.clock.advance(2.5)
        words = [Transcript("a", False, False, 0.1, 0.3, 0.0), Transcript("a b", False, False, 0.1, 0.5, 0.0),
                 Transcript("a b c", True, True, 0.1, 0.7, 0.0, speech_end=0.6)]
        _reply(proto, sid, events=(SpeechStarted(0.1, 0.0), *words))
        self.assertEqual(self.events, [SpeechStarted(0.1, 2.5), attrs.evolve(words[2], received_at=2.5)])

    def test_finish(self) -> None:
        """FINISH with the partial last frame; fires once the worker answered with the last final."""
        proto, [(_, sid), _] = self.worker()
        _reply(proto, sid)
        _reply(proto, sid)
        self.asr.feed(np.zeros(100, np.int16))
        done = self.asr.finish()
        proto2, requests = self.worker()
        self.assertEqual(requests[-1], (FINISH, sid))
        self.assertNoResult(done)
        _reply(proto, sid, FINISHED, events=(Transcript("bye", True, True, 0.0, 1.0, 0.0),))
        self.successResultOf(done)
        self.assertEqual([t.text for t in transcripts(self.events)], ["bye"])
        self.assertEqual(self.asr.state, State.CLOSED)
        assert self.factory.workers is not None
        self.assertEqual(self.factory.workers.slots[0].streams, {})

    def test_finish_times_out(self) -> None:
        """A worker that never answers: ``finish()`` fires after ``finish_timeout_s``, with a warning."""
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        proto, [(_, sid), _] = self.worker()
        done = self.asr.finish()
        self.clock.advance(1.9)
        self.assertNoResult(done)
        self.clock.advance(0.1)
        self.successResultOf(done)
        self.assertEqual(self.asr.state, State.CLOSED)
        self.assertEqual([e["timeout"] for e in logged if "timeout" in e], [2.0])
        # The late answer gives the stream back to the worker.
        _reply(proto, sid)
        _reply(proto, sid)
        self.assertEqual(self.worker()[1][-1], (FINISH, sid))

    def test_worker_death_and_respawn(self) -> None:
        """One EngineDown, the audio meanwhile lost and counted, EngineUp once re-opened on the new worker."""
        proto, [(_, sid), _] = self.worker()
        _reply(proto, sid)
        _reply(proto, sid)
        self.clock.advance(20)
        self.asr.feed(np.zeros(640, np.int16))  # two frames in flight when it dies
        proto.processEnded(Failure(ProcessTerminated(signal=9)))
        [down] = self.events
        assert isinstance(down, EngineDown)
        self.assertIsInstance(down.error, EngineUnavailable)
        self.assertEqual(down.received_at, 20.0)
        self.assertEqual((self.asr.crashes, self.asr.lost_frames), (1, 2))
        self.asr.feed(np.zeros(320, np.int16))  # while no worker runs
        self.assertEqual(self.asr.lost_frames, 3)
        self.clock.advance(0.1)  # the respawn
        proto2, requests = self.worker()
        self.assertIsNot(proto2, proto)
        self.assertEqual(requests, [(OPEN, sid)])
        _reply(proto2, sid)
        self.assertEqual([type(e) for e in self.events], [EngineDown, EngineUp])
        # The lost audio goes as a skip with the next batch, so stream time stays true.
        self.asr.feed(np.ones(320, np.int16))
        reopen, batch = self.clock.spawned[-1][4].requests()
        self.assertEqual(json.loads(reopen.payload)["skip"], 0)
        self.assertEqual(batch.kind, AUDIO)
        self.assertEqual(parse_audio(batch.payload), (3, [np.ones(320, np.int16).tobytes()]))


# -- the real thing -------------------------------------------------------------------------


class _LegTests:
    """:class:`LocalASR` on the real reactor; run for each backend."""

    skip = SPEECH_MISSING
    timeout = 60
    backend = "thread"

    def setUp(self) -> None:
        self._factories: dict[tuple[int, int], tuple[LocalASRSettings, LocalASRFactory]] = {}
        # A generous queue: these tests feed faster than real time, and a
        # loaded CI machine (or a worker still loading its decoder) must not
        # turn that into dropped frames.  The tests of the bound set their own.
        # A generous finish timeout too: on a loaded 2-core machine the last
        # batch of a leg sharing its worker can take longer than the 5 s
        # default, and these tests check what is recognised, not how fast.
        self._default = LocalASRSettings(queue_s=10.0, finish_timeout_s=40.0)

    def start_pool(self, max_threads: int = 2, max_queued: int = 16) -> ThreadPoolService:
        pool = ThreadPoolService(reactor, name="test-local-asr", max_threads=max_threads, max_queued=max_queued)
        pool.startService()
        self.addCleanup(pool.stopService)  # type: ignore[attr-defined]
        return pool

    def make(self, pool: ThreadPoolService, language: str = "en", settings: Optional[LocalASRSettings] = None,
             decoders: Optional[DecoderPool] = None) -> tuple[LocalASR, list[ASREvent]]:
        """A leg from this test's factory for ``settings`` (one worker process per factory)."""
        settings = settings or self._default
        key = (id(settings), id(decoders))
        if key not in self._factories:
            configured = attrs.evolve(settings, backend=self.backend, workers=1)
            factory = local_asr_factory(reactor, pool, configured, decoders or DECODERS)
            self.addCleanup(factory.close)  # type: ignore[attr-defined]
            self._factories[key] = (settings, factory)
        events: list[ASREvent] = []
        asr = self._factories[key][1](language, events.append, "call-1", "100")
        assert isinstance(asr, LocalASR)
        self.addCleanup(asr.finish)  # type: ignore[attr-defined]
        return asr, events

    @inlineCallbacks
    def test_leg(self) -> Any:
        """Interims, then one final, delivered on the reactor in order."""
        pool = self.start_pool()
        asr, events = self.make(pool)
        asr.start()
        clip = prompt("conf-onlyperson")
        # At the pace a caller speaks (20 ms every 20 ms): fed faster, a
        # worker process may hand back the whole clip in one batch, whose
        # interims are coalesced away by design.
        yield feed_paced(asr, with_silence(clip), interval=0.02)
        yield asr.finish()
        ts = transcripts(events)
        final = ts[-1]
        self.assertTrue(final.is_final and final.speech_final)
        self.assertIn("only person", final.text)
        self.assertIn("conference", final.text)
        self.assertTrue(ts[:-1])
        self.assertFalse(any(t.is_final for t in ts[:-1]))
        stamps = [e.received_at for e in events if hasattr(e, "received_at")]
        self.assertEqual(stamps, sorted(stamps))
        self.assertGreater(stamps[0], 0)
        assert final.speech_end is not None
        self.assertTrue(abs(final.speech_end - LEAD_S - speech_bounds(clip)[1]) < 0.1, final)
        self.assertEqual((asr.state.value, asr.dropped_frames), ("closed", 0))
        self.assertEqual(asr.frames_decoded, asr.frames_in)

    @inlineCallbacks
    def test_odd_chunks(self) -> Any:
        pool = self.start_pool()
        asr, events = self.make(pool)
        asr.start()
        audio = with_silence(prompt("auth-thankyou"), gap=0.7)[:-77]
        yield feed_paced(asr, audio, sizes=[1, 77, 333, 1000, 4001, 160], interval=0.01)
        yield asr.finish()
        self.assertEqual(asr.frames_in, len(audio) // 320)
        finals = [t for t in transcripts(events) if t.is_final]
        self.assertEqual([t.text for t in finals], ["thank you"])

    @inlineCallbacks
    def test_two_legs_do_not_mix(self) -> Any:
        pool = self.start_pool()
        a, a_events = self.make(pool)
        b, b_events = self.make(pool)
        a.start()
        b.start()
        yield _both(feed_paced(a, with_silence(prompt("conf-onlyperson"))),
                    feed_paced(b, with_silence(prompt("vm-intro"), prompt("auth-thankyou"), gap=0.6)))
        yield _both(a.finish(), b.finish())
        a_text = " | ".join(t.text for t in transcripts(a_events) if t.is_final)
        b_text = " | ".join(t.text for t in transcripts(b_events) if t.is_final)
        self.assertIn("conference", a_text)
        self.assertNotIn("thank", a_text)
        self.assertIn("leave your message", b_text)
        self.assertTrue(b_text.endswith(" | thank you"), b_text)
        self.assertNotIn("conference", " ".join(t.text for t in transcripts(b_events)))

    @inlineCallbacks
    def test_queue_bound_drops_oldest_and_counts(self) -> Any:
        """Audio fed while the first batch (the open) is out queues, bounded: oldest dropped, counted."""
        pool = self.start_pool()
        asr, events = self.make(pool, settings=LocalASRSettings(queue_s=0.2))
        asr.start()  # its first batch is in flight until the reactor turns
        asr.feed(np.zeros(RATE, np.int16))  # 50 frames into a 10-frame queue
        asr.feed(np.zeros(RATE, np.int16))
        self.assertEqual((asr.frames_in, asr.dropped_frames, asr.max_queue), (100, 90, 10))
        yield asr.finish()
        self.assertEqual(asr.frames_decoded, 10)
        self.assertEqual(asr.state.value, "closed")

    @inlineCallbacks
    def test_unloadable_models(self) -> Any:
        """A missing path or a missing Vosk package: one clear EngineDown, no exception."""
        self.patch(sys, "modules", {**sys.modules, "vosk": None})
        settings = LocalASRSettings.from_options({"models": {
            "de": {"hmm": "/nonexistent/de", "lm": "/nonexistent/de.lm", "dict": "/nonexistent/de.dict"},
            "es": {"path": "/srv/vosk-es"},
        }})
        pool = self.start_pool()
        for language, words in [("de", "'/nonexistent/de' is not a directory"), ("es", "pip install vosk")]:
            asr, events = self.make(pool, language=language, settings=settings)
            asr.start()
            asr.feed(np.zeros(3200, np.int16))
            yield asr.finish()
            [down] = events
            assert isinstance(down, EngineDown)
            self.assertIsInstance(down.error, EngineRequestError)
            self.assertIn(words, str(down.error))
            self.assertEqual(asr.state.value, "failed")


class ThreadLegTests(_LegTests, TestCase):
    """The ``thread`` backend, plus what only it has: the thread pool and in-process decoders."""

    backend = "thread"

    @inlineCallbacks
    def test_blocked_pool_bounds_the_queue(self) -> Any:
        pool = self.start_pool(max_threads=1)
        gate = threading.Event()
        blocker = pool.run(gate.wait, 5)
        asr, events = self.make(pool, settings=LocalASRSettings(queue_s=0.2))
        asr.start()  # its first task waits behind the blocker
        asr.feed(np.zeros(RATE, np.int16))
        asr.feed(np.zeros(RATE, np.int16))
        self.assertEqual((asr.frames_in, asr.dropped_frames), (100, 90))
        gate.set()
        yield blocker
        yield asr.finish()
        self.assertEqual(asr.frames_decoded, 10)

    @inlineCallbacks
    def test_pool_full_is_retried(self) -> Any:
        pool = self.start_pool(max_threads=1, max_queued=1)
        gate = threading.Event()
        blocker = pool.run(gate.wait, 5)
        asr, events = self.make(pool)
        asr.start()
        asr.feed(np.zeros(3200, np.int16))
        self.assertEqual(asr.pool_refused, 1)  # then it waits POOL_RETRY_S, not hammering
        gate.set()
        yield blocker
        yield asr.finish()
        self.assertEqual((asr.frames_decoded, asr.dropped_frames), (10, 0))

    @inlineCallbacks
    def test_decoders_are_reused(self) -> Any:
        """warm_up() loads a decoder; calls borrow it in turn: one model load."""
        pool = self.start_pool()
        decoders = DecoderPool()
        settings = LocalASRSettings(preload_decoders=1, backend="thread")
        factory = local_asr_factory(reactor, pool, settings, decoders)
        yield factory.warm_up()
        self.assertEqual((decoders.loads, decoders.idle(BUNDLED)), (1, 1))
        yield factory.warm_up()  # already there: nothing more to load
        for _ in range(2):
            asr, _events = self.make(pool, settings=settings, decoders=decoders)
            asr.start()
            asr.feed(with_silence(prompt("vm-goodbye")))
            yield asr.finish()
            self.assertEqual(decoders.idle(BUNDLED), 1)
        self.assertEqual((decoders.loads, decoders.reuses), (1, 2))

    @inlineCallbacks
    def test_decoder_crash(self) -> Any:
        """A decoder that raises is dropped; a fresh one takes over (EngineUp)."""
        pool = self.start_pool()
        decoders = FlakyPool(DECODERS)
        asr, events = self.make(pool, decoders=decoders)
        asr.start()
        clip = with_silence(prompt("vm-goodbye"), prompt("auth-thankyou"))
        yield feed_paced(asr, clip, interval=0.002)
        yield asr.finish()
        kinds = [type(e).__name__ for e in events]
        self.assertEqual(kinds[:2], ["EngineDown", "EngineUp"])
        self.assertIsInstance(events[1], EngineUp)
        down = events[0]
        assert isinstance(down, EngineDown)
        self.assertIsInstance(down.error, EngineUnavailable)
        self.assertIn("boom", str(down.error))
        self.assertEqual(asr.crashes, 1)
        self.assertIn("thank you", [t.text for t in transcripts(events) if t.is_final])


class ProcessLegTests(_LegTests, TestCase):
    """The same legs with pocketsphinx in a worker process (see also :mod:`tests.engines.local_asr.test_pool`)."""

    backend = "process"




def _both(a: "Deferred[Any]", b: "Deferred[Any]") -> "Deferred[Any]":
    return gatherResults([a, b], consumeErrors=True)
