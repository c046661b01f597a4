"""
Tests for xlbridge.tools.phone: pacing and wire format of what a simulated
phone sends, the statistics and audio of what it receives, and WAV I/O.
Everything runs on MemoryUDPReactor's fake clock; nothing waits for real
time.  The command line (xlbridge.tools.phone_cli) is tested in
tests/tools/test_phone_cli.py.
"""

from __future__ import annotations

import os
import struct
import wave
from typing import Any, Optional

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.codecs import get_codec, make_encoder
from xlbridge.audio.frame import Samples
from xlbridge.rtp.packet import build, parse
from xlbridge.testing import MemoryUDPReactor
from xlbridge.tools.phone import (
    Phone,
    PhoneReport,
    WavError,
    load_wav,
    noise,
    save_wav,
    tone,
)

TARGET = ("127.0.0.1", 7777)
BRIDGE = ("127.0.0.1", 7777)


def dominant_hz(x: Samples, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1.0 / rate)[int(np.argmax(spectrum))])


class Harness:
    """A phone listening on a MemoryUDPReactor, and its report once done."""

    def __init__(
        self, audio: Samples, codec: str = "slin16", tail: float = 1.0, **kw: Any
    ) -> None:
        self.reactor = MemoryUDPReactor()
        self.phone = Phone(self.reactor, audio, get_codec(codec), TARGET, tail=tail, **kw)
        self.port = self.reactor.listenUDP(0, self.phone, interface="127.0.0.1")
        self.result: Optional[PhoneReport] = None

    def play(self) -> None:
        self.phone.play().addCallback(self._got)

    def _got(self, report: PhoneReport) -> None:
        self.result = report

    def deliver(self, *packets: bytes, step: float = 0.0) -> None:
        for p in packets:
            self.port.deliver(p, BRIDGE)
            if step:
                self.reactor.advance(step)

    def report(self) -> PhoneReport:
        self.phone.stop()
        assert self.result is not None
        return self.result


def rtp(seq: int, ts: int, payload: bytes = b"\x00\x01" * 320, pt: int = 118, ssrc: int = 0xABC) -> bytes:
    return build(pt, seq, ts, ssrc, payload)


class SendingTests(SynchronousTestCase):
    def test_pacing(self) -> None:
        """
        One packet at once and one per 20 ms after it; sequence +1,
        timestamp +320 (slin16), marker on the first packet only, all to the
        target; the report fires ``tail`` seconds after the last packet.
        """
        h = Harness(tone(440, 0.2), tail=0.5, ssrc=0x1234, seq=65533, ts=2**32 - 640)
        h.play()
        self.assertEqual(len(h.port.sent), 1)
        h.reactor.pump([0.02] * 9)
        sent = h.port.take()
        self.assertEqual(len(sent), 10)
        pkts = [parse(s.data) for s in sent]
        self.assertEqual([round(s.time, 6) for s in sent], [round(0.02 * i, 6) for i in range(10)])
        self.assertEqual({s.addr for s in sent}, {TARGET})
        self.assertEqual([p.sequence for p in pkts], [65533, 65534, 65535] + list(range(7)))
        self.assertEqual(
            [p.timestamp for p in pkts], [(2**32 - 640 + 320 * i) % 2**32 for i in range(10)]
        )
        self.assertEqual([p.marker for p in pkts], [True] + [False] * 9)
        self.assertEqual({p.ssrc for p in pkts}, {0x1234})
        self.assertEqual({p.payload_type for p in pkts}, {118})
        self.assertEqual({len(p.payload) for p in pkts}, {640})
        # Audio exhausted: nothing more is sent; the report waits for the tail.
        h.reactor.pump([0.02] * 24)
        self.assertEqual(h.port.sent, [])
        self.assertIsNone(h.result)
        h.reactor.pump([0.02])
        assert h.result is not None
        self.assertEqual(h.result.packets_sent, 10)
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_catch_up(self) -> None:
        """
        After a stall the missed packets are all sent at once, with
        consecutive sequence numbers and timestamps.
        """
        h = Harness(tone(440, 0.4))
        h.play()
        h.reactor.pump([0.02] * 2)
        h.reactor.advance(0.1)
        sent = [parse(s.data) for s in h.port.take()]
        self.assertEqual(len(sent), 8)
        seqs = [p.sequence for p in sent]
        self.assertEqual([(s - seqs[0]) & 0xFFFF for s in seqs], list(range(8)))
        h.reactor.pump([0.02])
        self.assertEqual(len(h.port.take()), 1)

    def test_slin16_payload_is_big_endian_input(self) -> None:
        """
        The slin16 payloads are the input, frame by frame, big-endian; the
        last frame is zero-padded.
        """
        audio = noise(0.05, seed=3)  # 800 samples: 2.5 frames
        h = Harness(audio)
        h.play()
        h.reactor.pump([0.02] * 3)
        payloads = [parse(s.data).payload for s in h.port.sent]
        self.assertEqual(len(payloads), 3)
        padded = np.zeros(960, dtype=np.int16)
        padded[:800] = audio
        for i, p in enumerate(payloads):
            self.assertEqual(p, padded[i * 320 : (i + 1) * 320].astype(">i2").tobytes())
        self.assertEqual(payloads[0][:2], struct.pack(">h", int(audio[0])))

    def test_g722_timestamp_step(self) -> None:
        """
        G.722 (PT 9) sends 160-byte payloads with the timestamp advancing 160
        per 20 ms (its RTP clock is 8000 Hz).
        """
        h = Harness(tone(440, 0.1), codec="g722", ts=1000)
        h.play()
        h.reactor.pump([0.02] * 4)
        pkts = [parse(s.data) for s in h.port.sent]
        self.assertEqual([p.timestamp for p in pkts], [1000 + 160 * i for i in range(5)])
        self.assertEqual({p.payload_type for p in pkts}, {9})
        self.assertEqual({len(p.payload) for p in pkts}, {160})

    def test_send_error_counted(self) -> None:
        h = Harness(tone(440, 0.1))
        h.port.fail_with = OSError("network unreachable")
        h.play()
        h.reactor.pump([0.02] * 4)
        report = h.report()
        self.assertEqual((report.packets_sent, report.send_errors), (0, 5))

    def test_port_closing_fires_report(self) -> None:
        h = Harness(tone(440, 1.0))
        h.play()
        h.reactor.pump([0.02] * 3)
        h.port.stopListening()
        assert h.result is not None
        self.assertEqual(h.result.packets_sent, 4)
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_play_needs_a_port(self) -> None:
        phone = Phone(MemoryUDPReactor(), tone(440, 0.1), get_codec("slin16"), TARGET)
        self.assertRaises(RuntimeError, phone.play)


class ReceivingTests(SynchronousTestCase):
    def test_clean_stream(self) -> None:
        h = Harness(np.zeros(0, dtype=np.int16))
        h.play()
        h.deliver(*(rtp(100 + i, 5000 + 320 * i) for i in range(10)), step=0.02)
        r = h.report()
        self.assertEqual(
            (r.packets_received, r.lost, r.duplicates, r.reordered, r.malformed),
            (10, 0, 0, 0, 0),
        )
        self.assertAlmostEqual(r.jitter_ms, 0.0, places=6)
        self.assertAlmostEqual(r.max_gap_ms, 20.0, places=6)
        self.assertEqual(r.payload_types, {118})
        self.assertEqual(len(r.audio), 10 * 320)
        self.assertEqual(r.ssrcs, 1)
        self.assertEqual(len(r.packets), 10)
        self.assertEqual(r.packets[0][1:], (100, 5000, 118, False, 640))

    def test_loss_duplicates_reordering_across_wraparound(self) -> None:
        """
        65534, 65535, 0, 3, 2, 3: seq 1 is lost, 2 is reordered, the second
        3 is a duplicate; the wrap 65535 -> 0 is not a gap.
        """
        h = Harness(np.zeros(0, dtype=np.int16))
        h.play()
        seqs = [65534, 65535, 0, 3, 2, 3]
        frames = {s: np.full(320, s % 1000 + 1, dtype=np.int16) for s in set(seqs)}
        h.deliver(
            *(rtp(s, 320 * i, frames[s].astype(">i2").tobytes()) for i, s in enumerate(seqs)),
            step=0.02,
        )
        r = h.report()
        self.assertEqual((r.lost, r.duplicates, r.reordered), (1, 1, 1))
        self.assertEqual(r.packets_received, 6)
        # The audio is in sequence order with silence for the lost packet.
        expected = [frames[65534], frames[65535], frames[0], np.zeros(320, np.int16), frames[2], frames[3]]
        np.testing.assert_array_equal(r.audio, np.concatenate(expected))

    def test_loss_is_per_ssrc(self) -> None:
        h = Harness(np.zeros(0, dtype=np.int16))
        h.play()
        h.deliver(rtp(10, 0, ssrc=1), rtp(12, 640, ssrc=1), rtp(500, 0, ssrc=2), rtp(501, 320, ssrc=2))
        r = h.report()
        self.assertEqual((r.lost, r.reordered, r.ssrcs), (1, 0, 2))
        self.assertEqual(len(r.audio), 5 * 320)

    def test_jitter(self) -> None:
        """
        RFC 3550 A.8 with the slin16 clock (16000 Hz): one packet 5 ms late
        gives D = 80 then -80 timestamp units.
        """
        h = Harness(np.zeros(0, dtype=np.int16))
        h.play()
        arrivals = [0.0, 0.02, 0.045, 0.06, 0.08, 0.10]
        now = 0.0
        for i, t in enumerate(arrivals):
            h.reactor.advance(t - now)
            now = t
            h.deliver(rtp(i, 320 * i))
        r = h.report()
        j = 0.0
        js = []
        for d in [0, 80, 80, 0, 0]:
            j += (d - j) / 16
            js.append(j / 16)  # ms at 16 samples per ms
        self.assertAlmostEqual(r.jitter_ms, js[-1], places=6)
        self.assertAlmostEqual(r.jitter_max_ms, max(js), places=6)
        self.assertAlmostEqual(r.max_gap_ms, 25.0, places=6)

    def test_g722_replies_decoded(self) -> None:
        """
        PT 9 replies decode as G.722 (to 320 samples per packet), and the
        jitter uses its 8000 Hz RTP clock (timestamp +160 per 20 ms gives 0).
        """
        h = Harness(np.zeros(0, dtype=np.int16))
        h.play()
        sent = tone(1000, 0.4)
        enc = make_encoder(get_codec("g722"))
        h.deliver(
            *(
                rtp(i, 160 * i, enc.encode(sent[i * 320 : (i + 1) * 320]), pt=9)
                for i in range(20)
            ),
            step=0.02,
        )
        r = h.report()
        self.assertEqual(r.payload_types, {9})
        self.assertEqual(len(r.audio), len(sent))
        self.assertAlmostEqual(r.jitter_max_ms, 0.0, places=6)
        self.assertEqual(dominant_hz(r.audio), 1000.0)
        # Same level, give or take the codec (1 dB).
        level = np.sqrt(np.mean(r.audio[800:].astype(float) ** 2))
        ratio = level / np.sqrt(np.mean(sent.astype(float) ** 2))
        self.assertTrue(0.88 < ratio < 1.12, ratio)

    def test_malformed_counted_not_raised(self) -> None:
        h = Harness(np.zeros(0, dtype=np.int16))
        h.play()
        version1 = bytearray(rtp(1, 0))
        version1[0] = 0x40
        h.deliver(
            b"",
            b"junk",
            bytes(version1),
            build(118, 2, 0, 7, b"\x00\x01\x02"),  # odd-length L16 payload
            build(77, 3, 320, 7, b"\x00" * 10),  # unknown payload type
            rtp(4, 640, ssrc=7),
        )
        r = h.report()
        self.assertEqual(r.malformed, 4)
        self.assertEqual(r.unknown_pt, 1)
        self.assertEqual(r.packets_received, 3)
        self.assertEqual(r.payload_types, {77, 118})
        self.assertEqual(len(r.audio), 3 * 320)

    def test_nothing_recorded_after_report(self) -> None:
        h = Harness(np.zeros(0, dtype=np.int16), tail=0.1)
        h.play()
        h.reactor.advance(0.1)
        assert h.result is not None
        h.deliver(rtp(1, 0))
        self.assertEqual(h.phone.report().packets_received, 0)


class SignalTests(SynchronousTestCase):
    def test_tone(self) -> None:
        x = tone(440, 0.5, level=0.5)
        self.assertEqual(len(x), 8000)
        self.assertEqual(x.dtype, np.int16)
        self.assertEqual(int(np.abs(x).max()), 16384)
        self.assertEqual(dominant_hz(x), 440.0)

    def test_noise_is_deterministic(self) -> None:
        np.testing.assert_array_equal(noise(0.1, seed=5), noise(0.1, seed=5))
        self.assertFalse(np.array_equal(noise(0.1, seed=5), noise(0.1, seed=6)))
        x = noise(1.0, level=0.25, lowpass_hz=3400)
        self.assertEqual(int(np.abs(x).max()), 8192)
        spectrum = np.abs(np.fft.rfft(x.astype(float)))
        freqs = np.fft.rfftfreq(len(x), 1 / 16000)
        self.assertLess(spectrum[freqs > 3600].max(), spectrum[freqs < 3200].max() / 100)

    def test_bad_arguments(self) -> None:
        self.assertRaises(ValueError, tone, 9000, 1.0)
        self.assertRaises(ValueError, tone, 440, -1.0)
        self.assertRaises(ValueError, noise, 1.0, level=2.0)


def write_wav(path: str, data: bytes, channels: int, rate: int, width: int) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)


class WavTests(SynchronousTestCase):
    def path(self, name: str) -> str:
        base = self.mktemp()
        os.makedirs(base)
        return os.path.join(base, name)

    def test_8k_stereo_resampled_to_16k_mono(self) -> None:
        n = 8000
        t = np.arange(n) / 8000
        left = np.rint(10000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)
        right = np.rint(6000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)
        stereo = np.stack([left, right], axis=1).astype("<i2").tobytes()
        path = self.path("stereo8k.wav")
        write_wav(path, stereo, 2, 8000, 2)
        x = load_wav(path)
        self.assertEqual(x.dtype, np.int16)
        self.assertEqual(x.ndim, 1)
        self.assertTrue(abs(len(x) - 16000) <= 2, len(x))
        self.assertEqual(dominant_hz(x), 500.0)
        # The mix is the mean of the channels: peak about 8000.
        peak = float(np.abs(x[1000:-1000]).max())
        self.assertTrue(7900 < peak < 8100, peak)

    def test_8_and_32_bit(self) -> None:
        ref = tone(1000, 0.1, level=0.5)
        p8 = self.path("u8.wav")
        write_wav(p8, ((ref.astype(np.int32) >> 8) + 128).astype(np.uint8).tobytes(), 1, 16000, 1)
        p32 = self.path("s32.wav")
        write_wav(p32, (ref.astype("<i4") << 16).tobytes(), 1, 16000, 4)
        np.testing.assert_array_equal(load_wav(p32), ref)
        x8 = load_wav(p8)
        self.assertLessEqual(int(np.abs(x8.astype(int) - ref).max()), 256)

    def test_save_and_load_round_trip(self) -> None:
        x = noise(0.3, seed=9)
        path = self.path("out.wav")
        save_wav(path, x)
        np.testing.assert_array_equal(load_wav(path), x)
        with wave.open(path) as w:
            self.assertEqual((w.getnchannels(), w.getsampwidth(), w.getframerate()), (1, 2, 16000))

    def test_not_a_wav(self) -> None:
        path = self.path("x.wav")
        with open(path, "wb") as f:
            f.write(b"not a wav file at all")
        self.assertRaises(WavError, load_wav, path)
        self.assertRaises(OSError, load_wav, self.path("missing.wav"))


class EchoPathTests(SynchronousTestCase):
    def test_heard_audio_comes_back_delayed_and_attenuated(self) -> None:
        reactor = MemoryUDPReactor()
        codec = get_codec("slin16")
        phone = Phone(
            reactor, np.zeros(320 * 20, dtype=np.int16), codec, ("127.0.0.1", 9),
            echo_gain_db=-6.0206, echo_delay_ms=40,
        )
        port = reactor.listenUDP(0, phone, interface="127.0.0.1")
        phone.play()
        heard = np.full(320, 1000, dtype=np.int16)
        port.deliver(build(118, 1, 0, 5, heard.astype(">i2").tobytes()), ("127.0.0.1", 9))
        from xlbridge.testing import pump_ticks

        pump_ticks(reactor, 6)
        sent = [np.frombuffer(parse(s.data).payload, ">i2") for s in port.sent]
        levels = [int(f[0]) for f in sent]
        # Heard at t=0 (just after the first packet went out), it comes back
        # in the packet sent 40 ms later, at half amplitude, once.
        self.assertEqual(levels[:5], [0, 0, 500, 0, 0])
        self.assertEqual(phone.echo_errors, 0)
