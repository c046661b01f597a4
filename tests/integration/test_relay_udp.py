"""
The relay bridge over real loopback UDP, driven by two simulated phones.

Each test builds a BridgeService on ephemeral ports, starts two phones (each
on its own socket, like Asterisk's two ExternalMedia legs) that play
different deterministic signals at the same time, and checks what each
phone heard.  Real time: each test takes one to three seconds.

:class:`RTPEndpointSocketTests` checks one endpoint's production send
branch on a real socket: replies leave through the port's own
``socket.sendto``, never ``transport.write``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from xlbridge.audio.codecs import get_codec
from xlbridge.audio.frame import FRAME_SAMPLES, Samples
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.events import CallEnded, Event
from xlbridge.rtp.packet import build, parse
from xlbridge.tools.phone import Phone, PhoneReport, load_wav, noise
from xlbridge.transports.rtp import RTPEndpoint

reactor: Any = _reactor

#: Telephone-band noise (no all-zero 20 ms frame), 1.5 s = 75 frames each.
SIGNAL_A = noise(1.5, seed=1, lowpass_hz=3400)
SIGNAL_B = noise(1.5, seed=2, lowpass_hz=3400)


def frames(x: Samples) -> Samples:
    n = len(x) // FRAME_SAMPLES
    return x[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)


def correlation_peak(sent: Samples, heard: Samples, max_lag: int = 400) -> tuple[float, int]:
    """
    Largest normalised cross-correlation of ``heard`` against ``sent``
    delayed by 0..max_lag samples, and that lag.
    """
    x = sent.astype(np.float64)
    y = heard.astype(np.float64)
    best = (0.0, 0)
    for lag in range(max_lag + 1):
        n = min(len(x), len(y) - lag)
        if n <= 0:
            break
        a, b = x[:n], y[lag : lag + n]
        denom = np.sqrt(np.dot(a, a) * np.dot(b, b))
        c = float(np.dot(a, b) / denom) if denom else 0.0
        if c > best[0]:
            best = (c, lag)
    return best


class RelayTests(TestCase):
    timeout = 20

    def start_bridge(self, **settings: Any) -> tuple[BridgeService, list[Event]]:
        cli = {"ports": "7777=0,8888=0", "engines": "relay"}
        cli.update(settings)
        events: list[Event] = []
        b = BridgeService(load_config(cli), reactor, observers=[events.append])
        b.privilegedStartService()
        b.startService()
        self.addCleanup(lambda: b.stopService() if b.running else None)
        return b, events

    def port_of(self, b: BridgeService, ext: str) -> int:
        port = b.listeners[ext].port
        assert port is not None
        return int(port.getHost().port)

    def phone(self, audio: Samples, to: int, tail: float = 0.5) -> Phone:
        p = Phone(reactor, audio, get_codec("slin16"), ("127.0.0.1", to), tail=tail)
        port = reactor.listenUDP(0, p, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return p

    def call(
        self, b: BridgeService, a: Samples, bb: Samples, tail: float = 0.5
    ) -> "Deferred[list[PhoneReport]]":
        pa = self.phone(a, self.port_of(b, "7777"), tail)
        pb = self.phone(bb, self.port_of(b, "8888"), tail)
        return gatherResults([pa.play(), pb.play()])

    @inlineCallbacks
    def test_bit_exact_relay_slin16(self) -> Any:
        """
        With slin16 both ways, each phone hears exactly the other's frames,
        every one of them, in order, once the bridge's filler silence (all-zero
        frames) is taken out.
        """
        self.assertFalse(np.any(np.all(frames(SIGNAL_A) == 0, axis=1)))
        self.assertFalse(np.any(np.all(frames(SIGNAL_B) == 0, axis=1)))
        b, _ = self.start_bridge(**{"reply-codec": "slin16"})
        ra, rb = yield self.call(b, SIGNAL_A, SIGNAL_B)
        for report, sent in ((ra, SIGNAL_B), (rb, SIGNAL_A)):
            self.assertEqual(report.payload_types, {118})
            self.assertEqual((report.lost, report.duplicates, report.malformed), (0, 0, 0))
            f = frames(report.audio)
            speech = f[np.any(f != 0, axis=1)]
            np.testing.assert_array_equal(speech, frames(sent))
        self.assertEqual((ra.packets_sent, rb.packets_sent), (75, 75))

    @inlineCallbacks
    def test_default_reply_codec_g722(self) -> Any:
        """
        By default a slin16 leg is answered in G.722 (PT 9); what each phone
        hears correlates with what the other one said.
        """
        b, _ = self.start_bridge()
        ra, rb = yield self.call(b, SIGNAL_A, SIGNAL_B)
        for report, sent in ((ra, SIGNAL_B), (rb, SIGNAL_A)):
            self.assertEqual(report.payload_types, {9})
            self.assertEqual({p[5] for p in report.packets}, {160})
            # Take out filler frames (silent past G.722's ~1.4 ms delay) so a
            # mid-call buffer underrun does not shift the rest.
            f = frames(report.audio)
            level = np.sqrt(np.mean(sent.astype(np.float64) ** 2))
            rms = np.sqrt(np.mean(f[:, 40:].astype(np.float64) ** 2, axis=1))
            heard = f[rms > 0.1 * level].reshape(-1)
            peak, lag = correlation_peak(sent, heard)
            self.assertGreater(peak, 0.9, f"peak {peak:.3f} at lag {lag}")

    @inlineCallbacks
    def test_clean_shutdown(self) -> Any:
        """
        Stopping the bridge ends the live call (reason "shutdown"), takes
        every leg off the egress clock and closes both ports.
        """
        b, events = self.start_bridge(**{"reply-codec": "slin16"})
        ports = [self.port_of(b, "7777"), self.port_of(b, "8888")]
        yield self.call(b, SIGNAL_A[:6400], SIGNAL_B[:6400], tail=0.1)
        self.assertEqual(len(b.active_calls()), 1)  # call-timeout is 10 s
        yield b.stopService()
        self.assertEqual(b.active_calls(), [])
        self.assertEqual(len(b.egress), 0)
        self.assertEqual([e.reason for e in events if isinstance(e, CallEnded)], ["shutdown"])
        self.assertEqual({ext: lst.port for ext, lst in b.listeners.items()}, {"7777": None, "8888": None})
        # The port numbers are free again.
        for number in ports:
            p = reactor.listenUDP(number, DatagramProtocol(), interface="127.0.0.1")
            yield p.stopListening()

    @inlineCallbacks
    def test_call_ends_after_inactivity(self) -> Any:
        """
        With call-timeout 0.5 s the call ends by itself once both phones
        fall silent, and the bridge stops sending to them.
        """
        b, events = self.start_bridge(**{"reply-codec": "slin16", "call-timeout": 0.5})
        ra, rb = yield self.call(b, SIGNAL_A[:4800], SIGNAL_B[:4800], tail=1.2)
        self.assertEqual(b.active_calls(), [])
        ended = [e for e in events if isinstance(e, CallEnded)]
        self.assertEqual([e.reason for e in ended], ["inactivity"])
        for report in (ra, rb):
            self.assertGreater(report.packets_received, 0)
            self.assertLessEqual(report.packets[-1][0], ended[0].time + 0.05)
        self.assertTrue(all(lst.port is not None for lst in b.listeners.values()))

    @inlineCallbacks
    def test_command_line_phone(self) -> Any:
        """
        ``python -m xlbridge.tools.phone_cli`` (the ``xlbridge-phone``
        command) against the bridge: it exits 0, prints its summary and
        records; the other side hears its tone.
        """
        b, _ = self.start_bridge(**{"reply-codec": "slin16"})
        other = self.phone(SIGNAL_B[:3200], self.port_of(b, "8888"), tail=30)
        heard_by_other = other.play()
        out = os.path.join(self.mktemp() + ".wav")
        stdout, stderr, status = yield getProcessOutputAndValue(
            sys.executable,
            [
                "-m", "xlbridge.tools.phone_cli",
                "--to", f"127.0.0.1:{self.port_of(b, '7777')}",
                "--tone", "440", "--seconds", "0.4", "--tail", "0.3",
                "--record", out,
            ],
            env=dict(os.environ),
        )
        self.assertEqual(status, 0, stderr)
        self.assertIn(b"packets sent:      20", stdout)
        self.assertIn(b"payload types:     118", stdout)
        self.assertGreater(len(load_wav(out)), 0)
        other.stop()
        report = yield heard_by_other
        f = frames(report.audio)
        tone = f[np.any(f != 0, axis=1)].reshape(-1)
        self.assertEqual(len(tone), 20 * FRAME_SAMPLES)
        spectrum = np.abs(np.fft.rfft(tone.astype(np.float64)))
        peak_hz = float(np.fft.rfftfreq(len(tone), 1 / 16000)[spectrum.argmax()])
        self.assertTrue(abs(peak_hz - 440.0) <= 2, peak_hz)


class Collector(DatagramProtocol):
    """
    A peer on its own socket: keeps what it receives; :meth:`wait` fires
    once ``n`` datagrams have arrived.
    """

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []
        self._waiting: list[tuple[int, Deferred[list[tuple[bytes, Any]]]]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr))
        for n, d in list(self._waiting):
            if len(self.received) >= n:
                self._waiting.remove((n, d))
                d.callback(self.received[:n])

    def wait(self, n: int) -> "Deferred[list[tuple[bytes, Any]]]":
        d: Deferred[list[tuple[bytes, Any]]] = Deferred()
        if len(self.received) >= n:
            d.callback(self.received[:n])
        else:
            self._waiting.append((n, d))
        return d


class RTPEndpointSocketTests(TestCase):
    """
    One :class:`RTPEndpoint` on a real loopback UDP port.
    """

    timeout = 10

    def setUp(self) -> None:
        self.arrived: Deferred[None] = Deferred()
        codec = get_codec("slin16")
        self.ep = RTPEndpoint("7777", codec, codec, reactor, self.on_audio)
        self.port = reactor.listenUDP(0, self.ep, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

        def no_write(*args: Any) -> None:
            raise AssertionError("the hot path must not go through transport.write")

        # Production sends through the port's socket; make the other way fail.
        self.patch(self.port, "write", no_write)
        self.peer = Collector()
        self.peer_port = reactor.listenUDP(0, self.peer, interface="127.0.0.1")
        self.addCleanup(self.peer_port.stopListening)

    def on_audio(self, ep: Any, samples: Samples) -> None:
        if not self.arrived.called:
            self.arrived.callback(None)

    @inlineCallbacks
    def test_replies_leave_through_the_socket_to_the_latched_peer(self) -> Any:
        target = ("127.0.0.1", self.port.getHost().port)
        self.peer.transport.write(build(118, 7, 7 * 320, 42, SIGNAL_A[:320].astype(">i2").tobytes()), target)
        yield self.arrived
        self.assertEqual(self.ep.remote, ("127.0.0.1", self.peer_port.getHost().port))
        self.ep.send_frame(SIGNAL_B[:320])
        self.ep.send_frame(None)
        got = yield self.peer.wait(2)
        (d1, a1), (d2, a2) = got
        self.assertEqual((a1, a2), (target, target))  # from the endpoint's own port
        p1, p2 = parse(d1), parse(d2)
        self.assertEqual((p1.payload_type, p1.payload), (118, SIGNAL_B[:320].astype(">i2").tobytes()))
        self.assertEqual(p2.payload, bytes(640))
        self.assertEqual(((p2.sequence - p1.sequence) & 0xFFFF, p2.timestamp - p1.timestamp), (1, 320))
        c = self.ep.counters
        self.assertEqual((c.packets_in, c.packets_out, c.bytes_out, c.silence_out), (1, 2, 1280, 1))
        self.assertEqual(dict(c.drops), {})

    def test_socket_errors_counted_and_logged_once(self) -> None:
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        # A destination the kernel refuses (broadcast without SO_BROADCAST).
        self.ep.remote = ("255.255.255.255", 9)
        for _ in range(5):
            self.ep.send_frame(None)
        self.assertEqual(self.ep.counters.snapshot()["drops"], {"error": 5})
        self.assertEqual(self.ep.counters.packets_out, 0)
        warnings = [e for e in logged if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIsInstance(warnings[0]["err"], OSError)
