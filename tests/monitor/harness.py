"""
Shared by the monitor tests: a translating bridge on a memory reactor with
a monitor on it (:class:`MonitoredBridge`), plus a call between two legs
set up at run time the way the ARI controller does it (:class:`DynamicCall`),
and a viewer without a socket (:class:`FakeViewer`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq

from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.engines.base import Engines, Transcript
from xlbridge.monitor.outbox import Outbox
from xlbridge.monitor.service import MonitorService, make_monitor
from xlbridge.monitor.taps import decode_frame
from xlbridge.pipeline.factory import translate_factory
from xlbridge.pipeline.translate import TranslateSettings
from xlbridge.rtp.packet import build
from xlbridge.testing import MemoryUDPReactor, pump_ticks
from xlbridge.testing_engines import ManualMT, ManualTTS, ScriptedASRFactory


A = ("127.0.0.1", 10000)

B = ("127.0.0.1", 10002)

TOKEN = "s3cret-token-for-tests"

#: Opens listen-in too (the view token does not).
LISTEN_TOKEN = "listen-token-for-tests"

NAME_A = "PJSIP/7777-00000001"

NAME_B = "PJSIP/8888-00000002"

PHONE_A = ("10.0.0.1", 4000)

PHONE_B = ("10.0.0.2", 4000)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

class MonitoredBridge:
    """
    A translating bridge on a memory reactor with a monitor on it (a mixin
    for test cases).
    """

    metrics_open = False
    listen_token: str | None = LISTEN_TOKEN

    def build(self, **monitor_options: Any) -> None:
        self.reactor = MemoryUDPReactor()
        self.asr = ScriptedASRFactory()
        self.mt = ManualMT()
        self.tts = ManualTTS()
        engines = Engines(self.asr, self.mt, self.tts, {"asr": "scripted", "mt": "manual", "tts": "manual"})
        cfg = load_config({"ports": "7777,8888", "langs": "en,es", "reply-codec": "slin16"})
        settings = TranslateSettings(comfort_noise_dbfs=None)
        self.bridge = BridgeService(cfg, self.reactor, pipeline_factory=translate_factory(engines, settings))
        self.monitor: MonitorService = make_monitor(
            self.bridge, self.reactor, "tcp:0:interface=127.0.0.1", token=TOKEN,
            metrics_open=self.metrics_open, environ={}, listen_token=self.listen_token, **monitor_options,
        )
        self.monitor.setServiceParent(self.bridge)
        self.bridge.privilegedStartService()
        self.bridge.startService()
        self.addCleanup(lambda: self.bridge.running and self.bridge.stopService())  # type: ignore[attr-defined]
        self.seq = {7777: 0, 8888: 0}
        self.http = StubTreq(self.monitor.root)

    def speak(self, port: int, value: int = 100, frames: int = 1, src: Any = None) -> None:
        src = src or (A if port == 7777 else B)
        for _ in range(frames):
            seq = self.seq[port]
            self.seq[port] += 1
            payload = np.full(320, value, dtype=np.int16).astype(">i2").tobytes()
            self.reactor.udp[port].deliver(build(118, seq, seq * 320, 1, payload), src)

    def start_call(self) -> Any:
        self.speak(7777)
        self.speak(8888)
        (call,) = self.bridge.active_calls()
        return call

    def translate_once(self, text: str = "hello", translation: str = "hola") -> None:
        """7777 says ``text``; 8888 hears ``translation`` (one frame)."""
        now = self.reactor.seconds()
        self.asr.made["7777"].emit(Transcript(text, False, False, 0.0, 0.02, now))
        self.asr.made["7777"].emit(Transcript(text, True, True, 0.0, 0.02, now + 0.3))
        self.reactor.advance(0.2)
        self.mt.requests[-1][4].callback(translation)
        self.reactor.advance(0.1)
        self.tts.requests[-1][2](np.full(320, 1000, dtype=np.int16))
        self.tts.requests[-1][3].callback(None)
        pump_ticks(self.reactor, 3)

    def get(self, path: str, headers: Any = None) -> tuple[int, Any, bytes]:
        d = self.http.get(f"http://monitor{path}", headers=headers)
        self.http.flush()
        response = self.successResultOf(d)  # type: ignore[attr-defined]
        body = treq.content(response)
        self.http.flush()
        return response.code, response.headers, self.successResultOf(body)  # type: ignore[attr-defined]

def bearer(token: str = TOKEN) -> dict[bytes, list[bytes]]:
    return {b"Authorization": [f"Bearer {token}".encode()]}

class FakeViewer:
    """
    A viewer without a socket: records what the hub writes to it.  It came
    with the listen token unless ``may_listen`` is false.
    """

    def __init__(self, max_bytes: int = 256 * 1024, may_listen: bool = True) -> None:
        self.outbox = Outbox(max_bytes)
        self.listens: set[tuple[str, str]] = set()
        self.sent: list[Any] = []
        self.may_listen = may_listen

    def send_prepared(self, message: Any) -> None:
        self.sent.append(message)

    def messages(self, kind: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(m.payload) for m in self.sent if not m.binary]
        return [m for m in out if kind is None or m["type"] == kind]

    def frames(self) -> list[tuple[int, int, np.ndarray]]:
        return [decode_frame(m.payload) for m in self.sent if m.binary]

def tone(value: int, n: int = 320) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)

def parse_metrics(text: str) -> Samples:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out

def counter_totals(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if k[0].endswith("_total")}

class DynamicCall(MonitoredBridge):
    """
    :class:`MonitoredBridge` plus a call between two endpoints set up at
    run time, in a room of their own, the way the ARI controller does it.
    """

    def dynamic_call(self) -> Any:
        self.ports: dict[str, Any] = {}
        endpoints = []
        for i, name in enumerate((NAME_A, NAME_B)):
            ep = self.bridge.rtp_endpoint(name, lambda e, s, i=i: self.room.audio_in(i, s))
            self.ports[name] = self.reactor.listenUDP(0, ep)
            self.bridge.attach_endpoint(name, ep, origin="ari")
            endpoints.append(ep)
        self.room = self.bridge.open_room(
            (NAME_A, NAME_B), ("en", "es"), (endpoints[0], endpoints[1]), call_id="ari-call"
        )
        self.call = self.room.start_call()
        self.rtp_seq = {NAME_A: 0, NAME_B: 0}
        self.say(NAME_A, PHONE_A)
        self.say(NAME_B, PHONE_B)
        return self.call

    def say(self, name: str, src: Any, frames: int = 1) -> None:
        for _ in range(frames):
            seq = self.rtp_seq[name]
            self.rtp_seq[name] += 1
            payload = np.full(320, 100, dtype=np.int16).astype(">i2").tobytes()
            self.ports[name].deliver(build(118, seq, seq * 320, 7, payload), src)

    def hang_up(self) -> None:
        # What the controller does: close the room (ending the call),
        # unbind, detach.
        self.bridge.close_room(self.room, "hangup")
        for name, port in self.ports.items():
            port.stopListening()
            self.assertTrue(self.bridge.detach_endpoint(name, port.protocol))

    def metrics(self) -> Samples:
        code, _, body = self.get("/metrics", bearer())
        self.assertEqual(code, 200)
        return parse_metrics(body.decode())
