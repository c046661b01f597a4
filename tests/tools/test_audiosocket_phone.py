"""
Tests for xlbridge.tools.audiosocket_phone, the simulated Asterisk
AudioSocket leg: what it writes (the UUID message, then one audio message
per 20 ms, catch-up after a stall, hangup and close after the tail), what
it makes of what it reads, and how the connection's end fills its report.
The peer is an in-memory stream (xlbridge.testing.MemoryStream) on a
MemoryNetReactor's fake clock; no sockets and no real time.  The phone
against a real bridge over loopback is in
tests/integration/test_audiosocket_relay.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.frame import FRAME_SAMPLES, Samples
from xlbridge.audio.pcm16 import little_endian_bytes
from xlbridge.audio.wavfile import noise, tone
from xlbridge.testing import MemoryNetReactor, MemoryStream, pump_ticks
from xlbridge.tools.audiosocket_phone import AudioSocketPhone, AudioSocketReport, connect
from xlbridge.transports.audiosocket_codec import (
    HANGUP,
    KIND_DTMF,
    KIND_ERROR,
    KIND_HANGUP,
    KIND_UUID,
    Frame,
    FrameDecoder,
    encode,
    format_uuid,
    uuid_frame,
)

CALL_ID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


class Peer:
    """
    An AudioSocketPhone connected to an in-memory stream: the test plays
    the bridge, reading what the phone wrote and writing to it.
    """

    def __init__(self, audio: Samples, **kw: Any) -> None:
        self.reactor = MemoryNetReactor()
        kw.setdefault("call_id", CALL_ID)
        self.phone = AudioSocketPhone(self.reactor, audio, **kw)
        self.reports: list[AudioSocketReport] = []
        self.phone.done.addCallback(self.reports.append)
        self.stream = MemoryStream(
            self.reactor,
            self.phone,
            IPv4Address("TCP", "127.0.0.1", 50001),
            IPv4Address("TCP", "127.0.0.1", 9092),
        )
        self._decoder = FrameDecoder()

    def frames(self) -> list[Frame]:
        """Messages the phone wrote since the last call."""
        out = []
        for token in self._decoder.feed(self.stream.take()):
            assert isinstance(token, Frame), token
            out.append(token)
        return out

    def report(self) -> AudioSocketReport:
        (r,) = self.reports
        return r


def audio_frames(n: int, seed: int = 1) -> Samples:
    """``n`` 20 ms frames of noise at 16 kHz."""
    return noise(n * 0.02, seed=seed)


class SendingTests(SynchronousTestCase):
    def test_uuid_first_then_one_frame_at_once(self) -> None:
        p = Peer(audio_frames(5))
        uid, first = p.frames()
        self.assertEqual(uid.kind, KIND_UUID)
        self.assertEqual(format_uuid(uid.payload), CALL_ID)
        self.assertEqual(uid, Frame(KIND_UUID, uuid.UUID(CALL_ID).bytes))
        self.assertEqual((first.kind, len(first.payload)), (0x12, 640))

    def test_slin16_paced_every_20ms_little_endian(self) -> None:
        audio = audio_frames(5)
        p = Peer(audio)
        sent = p.frames()[1:]
        for _ in range(4):
            pump_ticks(p.reactor, 1)
            now = p.frames()
            self.assertEqual(len(now), 1)
            sent += now
        self.assertEqual({f.kind for f in sent}, {0x12})
        for i, f in enumerate(sent):
            self.assertEqual(f.payload, little_endian_bytes(audio[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]))
        self.assertEqual(sent[0].payload[:2], int(audio[0]).to_bytes(2, "little", signed=True))

    def test_last_frame_zero_padded(self) -> None:
        audio = noise(0.05, seed=4)  # 2.5 frames
        p = Peer(audio)
        pump_ticks(p.reactor, 2)
        sent = p.frames()[1:]
        self.assertEqual(len(sent), 3)
        last = np.frombuffer(sent[2].payload, "<i2")
        np.testing.assert_array_equal(last[:160], audio[640:])
        self.assertFalse(last[160:].any())
        pump_ticks(p.reactor, 5)
        self.assertEqual([f.kind for f in p.frames()], [])

    def test_catch_up_after_a_stall(self) -> None:
        """Frames due while the reactor stalled all go out at the next tick, in order."""
        audio = audio_frames(20)
        p = Peer(audio)
        pump_ticks(p.reactor, 1)
        p.reactor.advance(0.1)
        sent = p.frames()[1:]
        self.assertEqual(len(sent), 7)  # due at 0, 20, ..., 120 ms
        for i, f in enumerate(sent):
            self.assertEqual(f.payload, little_endian_bytes(audio[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]))
        pump_ticks(p.reactor, 1)
        self.assertEqual(len(p.frames()), 1)

    def test_8khz_kind(self) -> None:
        """Kind 0x10 (the AudioSocket() app): 8 kHz, 160 samples (320 bytes) per 20 ms."""
        p = Peer(tone(440, 0.2), kind=0x10)
        pump_ticks(p.reactor, 12)
        sent = p.frames()[1:]
        self.assertEqual(len(sent), 10)
        self.assertEqual({(f.kind, len(f.payload)) for f in sent}, {(0x10, 320)})
        wire = np.concatenate([np.frombuffer(f.payload, "<i2") for f in sent]).astype(np.float64)
        spectrum = np.abs(np.fft.rfft(wire * np.hanning(len(wire))))
        self.assertAlmostEqual(float(np.fft.rfftfreq(len(wire), 1 / 8000)[int(np.argmax(spectrum))]), 440, delta=10)

    def test_not_an_audio_kind(self) -> None:
        for kind in (KIND_UUID, KIND_HANGUP, 0x19):
            self.assertRaises(ValueError, AudioSocketPhone, MemoryNetReactor(), audio_frames(1), kind=kind)

    def test_random_call_id(self) -> None:
        a = AudioSocketPhone(MemoryNetReactor(), audio_frames(1))
        b = AudioSocketPhone(MemoryNetReactor(), audio_frames(1))
        self.assertEqual(str(uuid.UUID(a.call_id)), a.call_id)
        self.assertNotEqual(a.call_id, b.call_id)


class EndTests(SynchronousTestCase):
    def test_hangup_and_close_tail_after_last_frame(self) -> None:
        p = Peer(audio_frames(3), tail=0.5)
        pump_ticks(p.reactor, 2)  # last frame sent at 40 ms
        self.assertEqual(len(p.frames()), 4)
        p.reactor.advance(0.5 - 0.01)
        self.assertEqual(p.frames(), [])
        self.assertFalse(p.stream.disconnecting)
        p.reactor.advance(0.02)
        self.assertEqual(p.frames(), [Frame(KIND_HANGUP, b"")])
        self.assertTrue(p.stream.disconnecting)
        self.assertTrue(p.stream.closed)
        r = p.report()
        self.assertEqual((r.call_id, r.frames_sent, r.closed_by_peer, r.hangup_received), (CALL_ID, 3, False, False))
        self.assertEqual(p.reactor.getDelayedCalls(), [])

    def test_without_hangup_just_closes(self) -> None:
        p = Peer(audio_frames(1), tail=0.1, hangup=False)
        p.frames()
        p.reactor.advance(0.1)
        self.assertEqual(p.frames(), [])
        self.assertTrue(p.stream.disconnecting)
        p.reactor.advance(0)
        self.assertFalse(p.report().closed_by_peer)

    def test_no_audio(self) -> None:
        p = Peer(np.zeros(0, dtype=np.int16), tail=0.2)
        self.assertEqual([f.kind for f in p.frames()], [KIND_UUID])
        p.reactor.advance(0.2)
        self.assertEqual(p.frames(), [Frame(KIND_HANGUP, b"")])
        p.reactor.advance(0)
        self.assertEqual(p.report().frames_sent, 0)

    def test_peer_closes_while_sending(self) -> None:
        p = Peer(audio_frames(10))
        pump_ticks(p.reactor, 2)
        self.assertEqual(len(p.frames()), 4)
        p.stream.close()
        r = p.report()
        self.assertEqual((r.frames_sent, r.closed_by_peer), (3, True))
        self.assertEqual(p.reactor.getDelayedCalls(), [])
        pump_ticks(p.reactor, 20)
        self.assertEqual(p.frames(), [])  # no more audio, no hangup

    def test_peer_closes_during_the_tail(self) -> None:
        p = Peer(audio_frames(2), tail=1.0)
        pump_ticks(p.reactor, 1)
        p.frames()
        p.reactor.advance(0.5)
        p.stream.close()
        r = p.report()
        self.assertEqual((r.frames_sent, r.closed_by_peer), (2, True))
        self.assertEqual(p.reactor.getDelayedCalls(), [])
        p.reactor.advance(1.0)
        self.assertEqual(p.frames(), [])  # no hangup after the peer left


class ReceivingTests(SynchronousTestCase):
    def test_audio_messages_recorded_in_order(self) -> None:
        p = Peer(audio_frames(1), tail=5.0)
        a = np.arange(320, dtype=np.int16)
        b = -np.arange(160, dtype=np.int16)
        p.stream.send(encode(0x12, little_endian_bytes(a)) + encode(0x10, little_endian_bytes(b)))
        r = p.phone.report()
        self.assertEqual((r.frames_received, r.kinds, r.sizes, r.malformed), (2, {0x12, 0x10}, {640, 320}, 0))
        np.testing.assert_array_equal(r.audio, np.concatenate([a, b]))
        self.assertEqual(r.audio.dtype, np.int16)

    def test_messages_split_across_reads(self) -> None:
        p = Peer(audio_frames(1), tail=5.0)
        a = np.arange(-160, 160, dtype=np.int16)
        data = encode(0x12, little_endian_bytes(a)) * 2
        for i in range(len(data)):
            p.stream.send(data[i : i + 1])
        r = p.phone.report()
        self.assertEqual(r.frames_received, 2)
        np.testing.assert_array_equal(r.audio, np.concatenate([a, a]))

    def test_hangup_from_the_bridge(self) -> None:
        p = Peer(audio_frames(1), tail=5.0)
        p.stream.send(HANGUP)
        r = p.phone.report()
        self.assertEqual((r.hangup_received, r.frames_received, r.malformed), (True, 0, 0))

    def test_malformed_and_non_audio_messages(self) -> None:
        p = Peer(audio_frames(1), tail=5.0)
        p.stream.send(
            encode(0x12, b"\x01\x02\x03")  # odd-length audio
            + encode(0x12, b"")  # empty audio
            + encode(0x42, b"??")  # unknown kind
            + uuid_frame(CALL_ID)  # Asterisk would reject these kinds from the bridge
            + encode(KIND_DTMF, b"5")
            + encode(KIND_ERROR, b"\x01")
            + encode(0x12, b"\x00\x00")
        )
        r = p.phone.report()
        self.assertEqual((r.malformed, r.frames_received, r.hangup_received), (6, 1, False))

    def test_nothing_received(self) -> None:
        r = Peer(audio_frames(1)).phone.report()
        self.assertEqual((r.frames_received, len(r.audio), r.kinds, r.sizes), (0, 0, frozenset(), frozenset()))

    def test_report_when_the_connection_ends(self) -> None:
        p = Peer(audio_frames(2), tail=0.1)
        p.stream.send(encode(0x12, little_endian_bytes(np.ones(320, dtype=np.int16))))
        pump_ticks(p.reactor, 1)
        p.reactor.advance(0.1)
        p.reactor.advance(0)
        r = p.report()
        self.assertEqual((r.frames_sent, r.frames_received, r.kinds), (2, 1, {0x12}))


class ConnectTests(SynchronousTestCase):
    def test_connects_over_tcp_and_builds_the_phone(self) -> None:
        reactor = MemoryNetReactor()
        phone = AudioSocketPhone(reactor, audio_frames(1))
        d = connect(reactor, "127.0.0.1", 9092, phone)
        self.assertIs(d, phone.done)
        ((host, port, factory, timeout, _bind),) = reactor.tcpClients
        self.assertEqual((host, port, timeout), ("127.0.0.1", 9092, 2))
        self.assertIs(factory.buildProtocol(IPv4Address("TCP", host, port)), phone)

    def test_connection_failure_fails_the_report(self) -> None:
        reactor = MemoryNetReactor()
        phone = AudioSocketPhone(reactor, audio_frames(1))
        d = connect(reactor, "127.0.0.1", 9092, phone)
        factory = reactor.tcpClients[0][2]
        factory.clientConnectionFailed(reactor.connectors[0], Failure(ConnectionRefusedError()))
        self.failureResultOf(d, ConnectionRefusedError)
