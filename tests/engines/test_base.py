"""
Tests for :mod:`xlbridge.engines.base`: the failure hierarchy, the engine
bundle, secret redaction and the guarded hand-over of ASR events.
"""

from __future__ import annotations

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, Logger, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.base import (
    ASREvent,
    EngineAuthError,
    EngineError,
    EngineQuotaError,
    EngineRequestError,
    Engines,
    EngineUnavailable,
    SpeechStarted,
    deliver,
    redact,
)
from xlbridge.errors import XLBridgeError
from xlbridge.testing_engines import ManualMT, ManualTTS, ScriptedASRFactory


class ErrorTests(SynchronousTestCase):
    def test_retryable(self) -> None:
        """Only network trouble may heal by retrying."""
        self.assertTrue(EngineUnavailable("deepl", "HTTP 503").retryable)
        for cls in (EngineAuthError, EngineQuotaError, EngineRequestError):
            self.assertFalse(cls("deepl", "no").retryable, cls)

    def test_message_names_the_engine(self) -> None:
        e = EngineRequestError("apertium", "no language pair")
        self.assertIsInstance(e, EngineError)
        self.assertIsInstance(e, XLBridgeError)
        self.assertEqual((str(e), e.engine, e.message), ("apertium: no language pair", "apertium", "no language pair"))


class EnginesTests(SynchronousTestCase):
    def test_bundle(self) -> None:
        asr, mt, tts = ScriptedASRFactory(), ManualMT(), ManualTTS()
        engines = Engines(asr, mt, tts)
        self.assertEqual((engines.asr, engines.mt, engines.tts, engines.names), (asr, mt, tts, {}))
        named = Engines(asr, mt, tts, {"asr": "scripted"})
        self.assertEqual(named.names, {"asr": "scripted"})
        self.assertNotEqual(named, engines)


class RedactTests(SynchronousTestCase):
    def test_never_the_value(self) -> None:
        self.assertEqual(redact("very-secret"), "<redacted 11 chars>")
        self.assertEqual((redact(""), redact(None)), ("<unset>", "<unset>"))


class DeliverTests(SynchronousTestCase):
    log = Logger()

    def test_delivered(self) -> None:
        got: list[ASREvent] = []
        deliver(got.append, SpeechStarted(0.5, 1.0), self.log, "local-asr", "call-1", "7777")
        self.assertEqual(got, [SpeechStarted(0.5, 1.0)])

    def test_failure_logged_not_raised(self) -> None:
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        def broken(event: ASREvent) -> None:
            raise RuntimeError("pipeline bug")

        deliver(broken, SpeechStarted(0.5, 1.0), self.log, "deepgram", "call-1", "7777")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        [event] = logged
        self.assertEqual((event["log_level"], event["engine"], event["call_id"], event["ext"]),
                         (LogLevel.critical, "deepgram", "call-1", "7777"))
