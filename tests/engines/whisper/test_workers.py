"""
Whisper legs in the ASR worker processes, on the real reactor with the
real packaged model: two callers speaking at once in two languages on one
worker are both decoded, each in order; a killed worker is respawned and
the legs recover.  Skipped when the model is not installed.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.trial.unittest import TestCase

from xlbridge.engines.base import EngineDown, EngineUnavailable, EngineUp, Transcript
from xlbridge.engines.local_asr.factory import LocalASRFactory, local_asr_factory
from xlbridge.engines.local_asr.leg import LocalASR
from xlbridge.engines.local_asr.settings import LocalASRSettings
from xlbridge.engines.threads import ThreadPoolService
from xlbridge.tools.demo import EN_DIR, ES_DIR, load_g722

from tests.engines.whisper.folders import NO_MODEL_REASON, real_model
from tests.engines.local_asr.pacing import feed_paced, until
from tests.engines.local_asr.speech import with_silence

MODEL = real_model()


def finals(events: list[Any]) -> list[Transcript]:
    return [e for e in events if isinstance(e, Transcript) and e.is_final]


class WhisperWorkerTests(TestCase):
    skip = None if MODEL is not None and os.path.isdir(ES_DIR) else NO_MODEL_REASON
    timeout = 60

    def factory(self) -> LocalASRFactory:
        pool = ThreadPoolService(reactor, name="test-whisper", max_threads=2, max_queued=16)
        pool.startService()
        self.addCleanup(pool.stopService)
        settings = LocalASRSettings(workers=1, queue_s=10.0, whisper_path=MODEL)
        factory = local_asr_factory(reactor, pool, settings, languages=("en", "es"))
        self.addCleanup(factory.close)
        return factory

    def leg(self, factory: LocalASRFactory, language: str, ext: str) -> tuple[LocalASR, list[Any]]:
        events: list[Any] = []
        asr = factory(language, events.append, "call-1", ext)
        assert isinstance(asr, LocalASR)
        self.assertEqual(asr.engine_name, "whisper")
        asr.start()
        return asr, events

    @inlineCallbacks
    def test_two_callers_at_once_on_one_worker(self) -> Any:
        """English and Spanish speech at the same time: both recognised, each caller's sentences in order."""
        factory = self.factory()
        yield factory.warm_up()
        en, en_events = self.leg(factory, "en", "7777")
        es, es_events = self.leg(factory, "es", "8888")
        en_audio = with_silence(load_g722(os.path.join(EN_DIR, "conf-onlyperson.g722")),
                                load_g722(os.path.join(EN_DIR, "vm-nomore.g722")), gap=0.8)
        es_audio = with_silence(load_g722(os.path.join(ES_DIR, "conf-onlyperson.g722")),
                                load_g722(os.path.join(ES_DIR, "auth-thankyou.g722")), gap=0.8)
        yield gatherResults([feed_paced(en, en_audio, interval=0.01), feed_paced(es, es_audio, interval=0.01)])
        yield gatherResults([en.finish(), es.finish()])
        en_text = [t.text.lower() for t in finals(en_events)]
        es_text = [t.text.lower() for t in finals(es_events)]
        self.assertEqual(len(en_text), 2, en_text)
        self.assertIn("only person", en_text[0])
        self.assertIn("no more messages", en_text[1])
        self.assertEqual(len(es_text), 2, es_text)
        self.assertIn("única persona", es_text[0])
        self.assertIn("gracias", es_text[1])
        self.assertEqual({t.language for t in finals(en_events)}, {"en"})
        self.assertEqual({t.language for t in finals(es_events)}, {"es"})
        self.assertEqual((en.dropped_frames, es.dropped_frames), (0, 0))
        assert factory.workers is not None
        self.assertEqual(len(factory.workers.slots), 1)

    @inlineCallbacks
    def test_worker_killed_then_respawned(self) -> Any:
        """A killed worker: EngineDown, EngineUp once re-opened on the new one (model reloaded), then speech recognised."""
        factory = self.factory()
        yield factory.warm_up()
        es, events = self.leg(factory, "es", "8888")
        yield feed_paced(es, np.zeros(8000, np.int16))
        assert factory.workers is not None
        slot = factory.workers.slots[0]
        assert slot.protocol is not None and slot.protocol.transport is not None
        slot.protocol.transport.signalProcess("KILL")
        line = LoopingCall(lambda: es.feed(np.zeros(320, np.int16)))
        line.clock = reactor
        line.start(0.02)
        yield until(lambda: any(isinstance(e, EngineUp) for e in events), timeout=30)
        line.stop()
        status = [e for e in events if isinstance(e, (EngineDown, EngineUp))]
        self.assertEqual([type(e) for e in status], [EngineDown, EngineUp])
        self.assertIsInstance(status[0].error, EngineUnavailable)  # type: ignore[union-attr]
        yield feed_paced(es, with_silence(load_g722(os.path.join(ES_DIR, "conf-onlyperson.g722"))), interval=0.01)
        yield es.finish()
        self.assertIn("única persona", finals(events)[-1].text.lower())
        self.assertEqual(factory.workers.restarts, 1)

    @inlineCallbacks
    def test_shutdown_is_not_a_crash(self) -> Any:
        """Closing the workers under a live leg: no crash counted, no EngineDown, the leg still finishes."""
        factory = self.factory()
        yield factory.warm_up()
        es, events = self.leg(factory, "es", "8888")
        yield feed_paced(es, np.zeros(8000, np.int16))
        yield factory.close()
        es.feed(np.zeros(3200, np.int16))
        yield es.finish()
        self.assertEqual(es.crashes, 0)
        self.assertEqual([e for e in events if isinstance(e, (EngineDown, EngineUp))], [])
        self.assertEqual(es.state.value, "closed")
