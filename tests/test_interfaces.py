"""
Tests for xlbridge.interfaces: both leg transports provide ILegTransport,
and the pipelines a bridge builds (relay, translate) provide IPipeline.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from xlbridge import interfaces
from xlbridge.audio.codecs import get_codec
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.engines.base import Engines
from xlbridge.interfaces import ILegTransport, IPipeline
from xlbridge.pipeline.factory import translate_factory
from xlbridge.pipeline.relay import RelayPipeline
from xlbridge.pipeline.settings import TranslateSettings
from xlbridge.pipeline.translate import TranslatePipeline
from xlbridge.rtp.packet import build
from xlbridge.testing import MemoryNetReactor, MemoryUDPReactor
from xlbridge.testing_engines import ManualMT, ManualTTS, ScriptedASRFactory
from xlbridge.transports.audiosocket import AudioSocketEndpoint
from xlbridge.transports.audiosocket_codec import uuid_frame
from xlbridge.transports.rtp import RTPEndpoint

A = ("127.0.0.1", 10000)
B = ("127.0.0.1", 10002)


class LegTransportTests(SynchronousTestCase):
    def test_declares_line_open(self) -> None:
        self.assertIn("line_open", ILegTransport.names())

    def test_rtp_endpoint(self) -> None:
        verifyClass(ILegTransport, RTPEndpoint)
        reactor = MemoryUDPReactor()
        codec = get_codec("slin16")
        ep = RTPEndpoint("7777", codec, get_codec("g722"), reactor, lambda e, s: None)
        verifyObject(ILegTransport, ep)
        reactor.listenUDP(0, ep, "127.0.0.1")
        verifyObject(ILegTransport, ep)
        self.assertEqual((ep.kind, ep.line_open), ("rtp", False))

    def test_audiosocket_endpoint(self) -> None:
        verifyClass(ILegTransport, AudioSocketEndpoint)
        reactor = MemoryNetReactor()
        ep = AudioSocketEndpoint("7777", lambda e, s: None, clock=reactor)
        verifyObject(ILegTransport, ep)
        port = reactor.listenTCP(0, ep, interface="127.0.0.1")
        reactor.connect(port.port).send(uuid_frame("0a1b2c3d-0000-4000-8000-00000000a777"))
        verifyObject(ILegTransport, ep)
        self.assertEqual((ep.kind, ep.line_open), ("audiosocket", True))

    def test_bridge_endpoints(self) -> None:
        cfg = load_config({"ports": "7777,8888", "audiosocket": "7000=5050,7001=5052", "langs": "en,es,en,es"})
        bridge = BridgeService(cfg, MemoryNetReactor())
        self.assertEqual({ep.kind for ep in bridge.endpoints.values()}, {"rtp", "audiosocket"})
        for ep in bridge.endpoints.values():
            verifyObject(ILegTransport, ep)

    def test_engine_interfaces_are_gone(self) -> None:
        # Engines are typed by the Protocols of xlbridge.engines.base.
        for name in ("IASR", "IMT", "ITTS"):
            self.assertFalse(hasattr(interfaces, name), name)


class PipelineTests(SynchronousTestCase):
    """
    The pipelines of a live call on a memory reactor, with scripted engines.
    """

    def pipelines(self, langs: str) -> tuple[object, ...]:
        reactor = MemoryUDPReactor()
        engines = Engines(
            ScriptedASRFactory(), ManualMT(), ManualTTS(), {"asr": "scripted", "mt": "manual", "tts": "manual"}
        )
        cfg = load_config({"ports": "7777,8888", "langs": langs, "reply-codec": "slin16"})
        factory = translate_factory(engines, TranslateSettings(comfort_noise_dbfs=None))
        bridge = BridgeService(cfg, reactor, pipeline_factory=factory)
        bridge.privilegedStartService()
        bridge.startService()
        self.addCleanup(lambda: bridge.running and bridge.stopService())
        reactor.udp[7777].deliver(build(118, 1, 320, 1, bytes(640)), A)
        reactor.udp[8888].deliver(build(118, 1, 320, 2, bytes(640)), B)
        (call,) = bridge.active_calls()
        return tuple(call.pipelines)

    def test_translate_pipelines(self) -> None:
        pipelines = self.pipelines("en,es")
        self.assertEqual([type(p) for p in pipelines], [TranslatePipeline, TranslatePipeline])
        for p in pipelines:
            verifyObject(IPipeline, p)

    def test_relay_pipelines(self) -> None:
        pipelines = self.pipelines("en,en")
        self.assertEqual([type(p) for p in pipelines], [RelayPipeline, RelayPipeline])
        for p in pipelines:
            verifyObject(IPipeline, p)
