"""
Tests for :mod:`xlbridge.engines.local_asr.factory`: what each leg gets
from :class:`LocalASRFactory`, the Whisper fallback, and the words for an
operator.  A :class:`~twisted.internet.task.Clock` stands in for the
reactor: nothing here spawns a worker or starts a thread (warm-up with
real models is in :mod:`tests.engines.local_asr.test_leg`).
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.local_asr.factory import LocalASRFactory, describe_fallback, local_asr_factory
from xlbridge.engines.local_asr.leg import LocalASR
from xlbridge.engines.local_asr.settings import LocalASRSettings
from xlbridge.engines.pocketsphinx.asr import DecoderPool
from xlbridge.engines.threads import ThreadPoolService
from xlbridge.engines.vosk.asr import VoskModel
from xlbridge.engines.whisper.settings import WhisperModel


def factory(languages: tuple[str, ...] = (), **settings: Any) -> LocalASRFactory:
    clock = Clock()
    return local_asr_factory(clock, ThreadPoolService(clock), LocalASRSettings(**settings),  # type: ignore[arg-type]
                             DecoderPool(), languages=languages)


class LegsTests(SynchronousTestCase):
    def test_each_call_is_a_new_leg(self) -> None:
        f = factory(backend="thread")
        a = f("en", lambda e: None, "call-1", "7777")
        b = f("es", lambda e: None, "call-1", "8888")
        assert isinstance(a, LocalASR) and isinstance(b, LocalASR)
        self.assertIsNot(a, b)
        self.assertEqual((a.language, a.call_id, a.extension, a.engine_name), ("en", "call-1", "7777", "pocketsphinx"))
        self.assertEqual((b.language, b.engine_name), ("es", "none"))
        self.assertIsNone(f.workers)
        self.assertIs(a.decoders, f.decoders)

    def test_process_backend_shares_one_worker_pool(self) -> None:
        """The workers exist from the start but are spawned only when used."""
        f = factory(backend="process", workers=2)
        assert f.workers is not None
        self.assertEqual(len(f.workers.slots), 2)
        self.assertTrue(all(slot.protocol is None for slot in f.workers.slots))
        a, b = f("en", lambda e: None, "c", "1"), f("en", lambda e: None, "c", "2")
        assert isinstance(a, LocalASR) and isinstance(b, LocalASR)
        self.assertIs(a.workers, f.workers)
        self.assertIs(b.workers, f.workers)
        self.successResultOf(f.close())
        self.assertTrue(f.workers.closing)

    def test_close_without_workers(self) -> None:
        self.successResultOf(factory(backend="thread").close())

    def test_nothing_to_warm_up(self) -> None:
        """No caller language has a model here: nothing is loaded, nothing runs in the pool."""
        f = factory(("es",), backend="thread")
        self.successResultOf(f.warm_up())
        self.assertFalse(f.pool.pool.started)


class WhisperTests(SynchronousTestCase):
    def test_whisper_spec(self) -> None:
        self.assertIsNone(factory().whisper_spec())
        f = factory(("en", "es"), whisper_path="/m")
        self.assertEqual(f.whisper_spec(), WhisperModel("/m"))
        self.assertEqual((f.engine_for("en"), f.engine_for("es")), ("whisper", "whisper"))

    def test_whisper_that_does_not_load(self) -> None:
        """Said once, naming the setting and each language's fallback; later legs use the fallback."""
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        f = factory(("en", "es"), whisper_path="/m")
        f.whisper_failed("model.bin is truncated")
        self.assertIsNone(f.whisper_spec())
        self.assertEqual((f.engine_for("en"), f.engine_for("es")), ("pocketsphinx", "none"))
        [event] = logged
        self.assertEqual((event["log_level"], event["path"], event["why"]),
                         (LogLevel.error, "/m", "model.bin is truncated"))
        self.assertIn("es callers are not recognised", event["fallback"])
        leg = f("es", lambda e: None, "c", "1")
        assert isinstance(leg, LocalASR)
        self.assertEqual(leg.engine_name, "none")


class DescribeFallbackTests(SynchronousTestCase):
    def test_words(self) -> None:
        self.assertEqual(describe_fallback({}), "no caller language is affected")
        self.assertEqual(
            describe_fallback({"es": "none", "en": "pocketsphinx"}),
            "en callers use pocketsphinx; es callers are not recognised (their partners hear the original voice)",
        )


class _SyncPool:
    """Runs pool work at once, on this thread."""

    def run(self, f: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        return succeed(f(*args))


class ModelFailedTests(SynchronousTestCase):
    """
    A configured model that looks right but does not load (corrupt) is
    reported at warm-up, when the bridge starts, naming its section; not
    at the first call.
    """

    def test_corrupt_vosk_model(self) -> None:
        fake = types.ModuleType("vosk")

        def model(path: str) -> None:
            raise RuntimeError("Failed to create a model")

        fake.SetLogLevel = lambda level: None  # type: ignore[attr-defined]
        fake.Model = model  # type: ignore[attr-defined]
        self.patch(sys, "modules", {**sys.modules, "vosk": fake})
        path = self.mktemp()
        os.makedirs(os.path.join(path, "am"))
        with open(os.path.join(path, "am", "final.mdl"), "wb") as f:
            f.write(b"not a model")
        clock = Clock()
        settings = LocalASRSettings.from_options({"backend": "thread",
                                                  "models": {"es": {"engine": "vosk", "path": path}}})
        f = local_asr_factory(clock, ThreadPoolService(clock), settings,  # type: ignore[arg-type]
                              DecoderPool(), languages=("es-mx",))
        f.pool = _SyncPool()  # type: ignore[assignment]
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.successResultOf(f.warm_up())
        [event] = [e for e in logged if e.get("section")]
        self.assertEqual((event["log_level"], event["section"]), (LogLevel.error, "es"))
        self.assertIn("Failed to create a model", event["why"])
        self.assertEqual(event["fallback"], "es-mx callers are not recognised (their partners hear the original voice)")
        self.assertEqual(f.engine_for("es-mx"), "none")

    def test_model_that_cannot_load_is_no_recogniser(self) -> None:
        """The start-up log's "asr ..." for a leg does not name a model that cannot load."""
        self.patch(sys, "modules", {**sys.modules, "vosk": None})
        f = factory(("en", "es"), backend="thread", models={"es": VoskModel("/srv/vosk-es")})
        self.assertEqual((f.engine_for("en"), f.engine_for("es")), ("pocketsphinx", "none"))
