"""
AudioSocket over real loopback TCP: a simulated AudioSocket leg (what
Asterisk's ExternalMedia or AudioSocket() app does) talks to a simulated RTP
phone through one bridge pair.  Real time: a few seconds per test.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
from twisted.internet import reactor as _reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from xlbridge.audio.codecs import get_codec
from xlbridge.audio.frame import FRAME_SAMPLES, Samples
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.events import CallEnded, Event
from xlbridge.tools.audiosocket_phone import AudioSocketPhone, connect
from xlbridge.tools.phone import Phone, noise

reactor: Any = _reactor

SIGNAL_A = noise(1.5, seed=1, lowpass_hz=3400)
SIGNAL_B = noise(1.5, seed=2, lowpass_hz=3400)


def frames(x: Samples, size: int = FRAME_SAMPLES) -> Samples:
    n = len(x) // size
    return x[: n * size].reshape(n, size)


def tone(hz: float, seconds: float, rate: int = 16000) -> Samples:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def peak_hz(x: Samples, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64)))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


class AudioSocketRelayTests(TestCase):
    timeout = 20

    def start_bridge(self, **settings: Any) -> tuple[BridgeService, list[Event]]:
        cli = {"ports": "7000=0,8888=0", "engines": "relay", "reply-codec": "slin16"}
        cli.update(settings)
        cfg = load_config(cli)
        pair = attrs.evolve(cfg.pairs[0], transports=("audiosocket", "rtp"))
        events: list[Event] = []
        b = BridgeService(attrs.evolve(cfg, pairs=(pair,)), reactor, observers=[events.append])
        b.privilegedStartService()
        b.startService()
        self.addCleanup(lambda: b.stopService() if b.running else None)
        return b, events

    def port_of(self, b: BridgeService, ext: str) -> int:
        port = b.listeners[ext].port
        assert port is not None
        return int(port.getHost().port)

    def rtp_phone(self, b: BridgeService, audio: Samples, tail: float) -> Phone:
        p = Phone(reactor, audio, get_codec("slin16"), ("127.0.0.1", self.port_of(b, "8888")), tail=tail)
        port = reactor.listenUDP(0, p, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return p

    @inlineCallbacks
    def test_slin16_bit_exact_both_ways_and_hangup(self) -> Any:
        """
        ExternalMedia slin16 (0x12) against an RTP slin16 phone: each side
        hears exactly the other's frames; the AudioSocket hangup ends the
        call at once, with the UUID as call id.
        """
        b, events = self.start_bridge()
        rtp = self.rtp_phone(b, SIGNAL_B, tail=0.5)
        asp = AudioSocketPhone(reactor, SIGNAL_A, kind=0x12, tail=0.5)
        heard_by_as = connect(reactor, "127.0.0.1", self.port_of(b, "7000"), asp)
        # The AudioSocket leg connects first (as with an ARI controller that
        # bridges it before the RTP leg speaks): its UUID names the call.
        yield deferLater(reactor, 0.1)
        ra, rb = yield gatherResults([heard_by_as, rtp.play()])
        self.assertEqual(ra.kinds, {0x12})
        self.assertEqual(ra.sizes, {640})
        self.assertEqual((ra.malformed, ra.closed_by_peer, ra.hangup_received), (0, False, False))
        f = frames(ra.audio)
        np.testing.assert_array_equal(f[np.any(f != 0, axis=1)], frames(SIGNAL_B))
        # What the AudioSocket caller said before the RTP phone's first
        # packet (its address) could be heard by nobody: dropped, not kept
        # to be heard late all call.  From then on, every frame in order.
        f, sent = frames(rb.audio), frames(SIGNAL_A)
        f = f[np.any(f != 0, axis=1)]
        self.assertGreater(len(f), len(sent) - 8)
        np.testing.assert_array_equal(f, sent[len(sent) - len(f) :])
        # The bridge reads the 0x00 just after the phone's side closed;
        # the call ends then, not 10 s (call-timeout) later.
        yield deferLater(reactor, 0.2)
        ended = [e for e in events if isinstance(e, CallEnded)]
        self.assertEqual([(e.reason, e.call_id) for e in ended], [("hangup", asp.call_id)])
        self.assertEqual(b.active_calls(), [])

    @inlineCallbacks
    def test_audiosocket_app_8khz(self) -> Any:
        """
        The AudioSocket() dialplan app sends 0x10 (8 kHz): replies are 0x10,
        20 ms = 320 bytes, and both tones come through at their pitch.
        """
        b, _ = self.start_bridge()
        rtp = self.rtp_phone(b, tone(1000, 1.0), tail=0.5)
        asp = AudioSocketPhone(reactor, tone(440, 1.0), kind=0x10, tail=0.5)
        ra, rb = yield gatherResults([connect(reactor, "127.0.0.1", self.port_of(b, "7000"), asp), rtp.play()])
        self.assertEqual((ra.kinds, ra.sizes), ({0x10}, {320}))
        f = frames(ra.audio, 160)
        self.assertAlmostEqual(peak_hz(f[np.any(f != 0, axis=1)].reshape(-1), 8000), 1000, delta=10)
        f = frames(rb.audio)
        self.assertAlmostEqual(peak_hz(f[np.any(f != 0, axis=1)].reshape(-1), 16000), 440, delta=10)

    @inlineCallbacks
    def test_bridge_side_end_sends_hangup(self) -> Any:
        """
        When the call ends on our side (shutdown here), the AudioSocket leg
        gets 0x00 and the connection closes.
        """
        b, events = self.start_bridge()
        asp = AudioSocketPhone(reactor, SIGNAL_A[:4800], tail=5.0, hangup=False)
        d = connect(reactor, "127.0.0.1", self.port_of(b, "7000"), asp)
        yield deferLater(reactor, 0.6)
        yield b.stopService()
        ra = yield d
        self.assertTrue(ra.hangup_received)
        self.assertTrue(ra.closed_by_peer)
        self.assertEqual([e.reason for e in events if isinstance(e, CallEnded)], ["shutdown"])
