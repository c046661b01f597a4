"""
A translating bridge on a memory reactor with controllable engines, for the
pipeline tests that go through a whole call: both phones speak once, so
both legs latch and the call starts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.engines.base import Engines, Transcript
from xlbridge.events import Event
from xlbridge.pipeline.factory import translate_factory
from xlbridge.pipeline.translate import TranslatePipeline, TranslateSettings
from xlbridge.rtp.packet import build, parse
from xlbridge.testing import MemoryUDPReactor
from xlbridge.testing_engines import ManualMT, ManualTTS, ScriptedASRFactory

A = ("127.0.0.1", 10000)
B = ("127.0.0.1", 10002)


def const(value: int, n: int) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


class Harness(SynchronousTestCase):
    settings = TranslateSettings(comfort_noise_dbfs=None)
    langs = "en,es"

    def setUp(self) -> None:
        self.reactor = MemoryUDPReactor()
        self.events: list[Event] = []
        self.asr = ScriptedASRFactory()
        self.mt = ManualMT()
        self.tts = ManualTTS()
        engines = Engines(self.asr, self.mt, self.tts, {"asr": "scripted", "mt": "manual", "tts": "manual"})
        cfg = load_config({"ports": "7777,8888", "langs": self.langs, "reply-codec": "slin16"})
        self.bridge = BridgeService(
            cfg, self.reactor, pipeline_factory=translate_factory(engines, self.settings), observers=[self.events.append]
        )
        self.bridge.privilegedStartService()
        self.bridge.startService()
        self.addCleanup(lambda: self.bridge.running and self.bridge.stopService())
        self.seq = {7777: 0, 8888: 0}
        # Both phones speak once so both legs latch and the call starts.
        self.speak(7777, const(100, 320))
        self.speak(8888, const(200, 320))
        (self.call,) = self.bridge.active_calls()
        self.p_en: TranslatePipeline = self.call.pipelines[0]  # type: ignore[assignment]
        self.p_es: TranslatePipeline = self.call.pipelines[1]  # type: ignore[assignment]

    def speak(self, port: int, samples: np.ndarray, src: Any = None) -> None:
        src = src or (A if port == 7777 else B)
        for i in range(0, len(samples), 320):
            seq = self.seq[port]
            self.seq[port] += 1
            chunk = samples[i : i + 320]
            self.reactor.udp[port].deliver(build(118, seq, seq * 320, 1, chunk.astype(">i2").tobytes()), src)

    def final(self, ext: str, text: str, end: float = 0.02, speech_final: bool = False) -> None:
        now = self.reactor.seconds()
        self.asr.made[ext].emit(Transcript(text, True, speech_final, 0.0, end, now))

    def heard(self, port: int) -> list[np.ndarray]:
        """Decoded frames the phone on ``port`` received (slin16)."""
        return [np.frombuffer(parse(s.data).payload, ">i2").astype(np.int16) for s in self.reactor.udp[port].take()]

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]
