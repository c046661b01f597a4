# -*- test-case-name: tests.test_phone -*-
"""
A simulated phone: one Asterisk ExternalMedia leg, for tests and demos.

Why: to exercise the bridge end to end without Asterisk, something has to
behave like the RTP stream Asterisk opens for an ExternalMedia channel.  A
:class:`Phone` sends a recording as RTP to the bridge at real-time pace (one
packet every 20 ms, from its own UDP socket, so the bridge latches that
socket and replies to it), records whatever comes back on the same socket
and summarises it in a :class:`PhoneReport`: loss, duplicates, reordering,
RFC 3550 jitter, arrival gaps and the received audio, decoded.

The library part never touches the global reactor: the clock is injected, so
unit tests drive a phone with :class:`xlbridge.testing.MemoryUDPReactor` and
integration tests with the real reactor.  :func:`main` is the command line
(``xlbridge-phone`` / ``python -m xlbridge.tools.phone``).

Units and byte order: audio handed to and returned by this module is always
16 kHz mono signed 16-bit in native byte order (:mod:`xlbridge.audio.frame`);
the wire format is the chosen codec's (L16 is big-endian on RTP), converted
by :mod:`xlbridge.audio.codecs`.  WAV files are little-endian, as RIFF
requires.  Times are in seconds unless a name ends in ``_ms``.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import struct
import sys
import wave
from typing import Any, Mapping, Optional, Sequence

import attrs
import numpy as np
import numpy.typing as npt
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from xlbridge.audio.codecs import (
    CODEC_NAMES,
    Codec,
    CodecError,
    Decoder,
    codec_for_payload_type,
    get_codec,
    make_decoder,
    make_encoder,
)
from xlbridge.audio.frame import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, Samples
from xlbridge.audio.resample import resample
from xlbridge.rtp.packet import RTPParseError, build, parse
from xlbridge.rtp.seq import RESYNC_JUMP, seq_diff

__all__ = [
    "Phone",
    "PhoneReport",
    "Recorder",
    "WavError",
    "load_wav",
    "main",
    "noise",
    "save_wav",
    "tone",
]

Address = tuple[str, int]

#: One received RTP packet as kept in :attr:`PhoneReport.packets`:
#: ``(arrival_time, seq, timestamp, pt, marker, payload_len)``.
PacketRecord = tuple[float, int, int, int, bool, int]

_Float = npt.NDArray[np.float64]


# --- the report ---------------------------------------------------------------


@attrs.frozen
class PhoneReport:
    """
    What a phone sent and what came back.

    :ivar packets_sent: RTP packets written to the socket.
    :ivar send_errors: writes that failed (not counted as sent).
    :ivar packets_received: valid RTP packets received, duplicates included.
    :ivar lost: sequence numbers never received, summed over SSRCs (the span
        from the lowest to the highest extended sequence number of each SSRC,
        minus the distinct ones received; 16-bit wraparound aware).
    :ivar duplicates: packets whose sequence number was already received.
    :ivar reordered: packets that arrived after a higher sequence number of
        the same SSRC (late, but not duplicates).
    :ivar malformed: datagrams that are not RTP, plus payloads that failed
        to decode.
    :ivar unknown_pt: packets whose payload type has no known codec (not
        decoded; they still count for sequence statistics).
    :ivar jitter_ms: RFC 3550 A.8 interarrival jitter of the last stream
        that updated it, at the end, in milliseconds.
    :ivar jitter_max_ms: the largest value that jitter estimate reached, in
        milliseconds, over all streams.
    :ivar max_gap_ms: largest interval between two consecutive packet
        arrivals, in milliseconds (0 with fewer than two packets).
    :ivar payload_types: every payload type received.
    :ivar ssrcs: number of distinct SSRCs received.
    :ivar audio: the received audio, 16 kHz mono int16 native order; streams
        in order of first arrival, each in sequence order, with silence in
        place of missing packets.
    :ivar packets: every valid packet received, in arrival order, as
        ``(arrival_time, seq, timestamp, pt, marker, payload_len)``.
    """

    packets_sent: int
    packets_received: int
    lost: int
    duplicates: int
    reordered: int
    malformed: int
    jitter_ms: float
    jitter_max_ms: float
    max_gap_ms: float
    payload_types: frozenset[int]
    audio: Samples = attrs.field(eq=False, repr=lambda a: f"<{len(a)} samples>")
    packets: list[PacketRecord] = attrs.field(factory=list, repr=False)
    unknown_pt: int = 0
    send_errors: int = 0
    ssrcs: int = 0

    @property
    def seconds_recorded(self) -> float:
        """Length of :attr:`audio` in seconds."""
        return len(self.audio) / SAMPLE_RATE

    def summary(self) -> str:
        """
        A human-readable multi-line summary, as the command line prints it.
        """
        pts = ", ".join(str(pt) for pt in sorted(self.payload_types)) or "none"
        lines = [
            f"packets sent:      {self.packets_sent}"
            + (f" ({self.send_errors} send errors)" if self.send_errors else ""),
            f"packets received:  {self.packets_received}",
            f"lost:              {self.lost}",
            f"duplicates:        {self.duplicates}",
            f"reordered:         {self.reordered}",
            f"malformed:         {self.malformed}",
            f"jitter:            {self.jitter_ms:.2f} ms (max {self.jitter_max_ms:.2f} ms)",
            f"largest gap:       {self.max_gap_ms:.1f} ms",
            f"payload types:     {pts}",
            f"seconds recorded:  {self.seconds_recorded:.2f}",
        ]
        if self.unknown_pt:
            lines.insert(6, f"unknown PT:        {self.unknown_pt}")
        return "\n".join(lines)


# --- receiving ------------------------------------------------------------------


def _signed32(x: int) -> int:
    """Map a 32-bit modular difference into ``-2**31 .. 2**31 - 1``."""
    return ((x + 0x80000000) & 0xFFFFFFFF) - 0x80000000


class _Stream:
    """
    Receive state of one SSRC.

    Sequence numbers are extended past 16 bits relative to the highest one
    seen (RFC 3550 A.1 without the probation), so wraparound is a step of +1.
    """

    __slots__ = (
        "ssrc", "max_ext", "min_ext", "seen", "payloads",
        "prev_arrival", "prev_ts", "rate", "jitter",
    )

    def __init__(self, ssrc: int, seq: int) -> None:
        self.ssrc = ssrc
        self.max_ext = seq
        self.min_ext = seq
        self.seen: set[int] = set()
        #: extended seq -> (pt, payload), first copy only
        self.payloads: dict[int, tuple[int, bytes]] = {}
        self.prev_arrival: Optional[float] = None
        self.prev_ts = 0
        self.rate = 0
        self.jitter = 0.0  # RFC 3550 J, in RTP clock units

    def extend(self, seq: int) -> int:
        return self.max_ext + seq_diff(seq, self.max_ext & 0xFFFF)


class Recorder:
    """
    Sans-I/O receive side of a phone: fed datagrams with their arrival time,
    it keeps what :class:`PhoneReport` needs.

    :param codecs: payload type -> codec used to decode (and for the RTP
        clock rate of jitter) before falling back to
        :func:`~xlbridge.audio.codecs.codec_for_payload_type`.
    """

    def __init__(self, codecs: Optional[Mapping[int, Codec]] = None) -> None:
        self.codecs: dict[int, Codec] = dict(codecs or {})
        self.streams: dict[int, _Stream] = {}  # insertion order = first arrival
        self.packets: list[PacketRecord] = []
        self.malformed = 0
        self.duplicates = 0
        self.reordered = 0
        self.unknown_pt = 0
        self.payload_types: set[int] = set()
        self.max_gap = 0.0
        self.last_jitter_ms = 0.0
        self.max_jitter_ms = 0.0
        self._last_arrival: Optional[float] = None

    def codec_for(self, pt: int) -> Optional[Codec]:
        """The codec used for payload type ``pt``, or ``None``."""
        return self.codecs.get(pt) or codec_for_payload_type(pt)

    def receive(self, data: bytes, arrival: float) -> None:
        """
        Take one datagram that arrived at ``arrival`` (seconds, any epoch).
        Never raises: anything that is not RTP is counted as malformed.
        """
        try:
            self._receive(data, arrival)
        except RTPParseError:
            self.malformed += 1
        except Exception:
            # Defensive: a receive path must never raise into the reactor.
            self.malformed += 1

    def _receive(self, data: bytes, arrival: float) -> None:
        pkt = parse(data)
        pt = pkt.payload_type
        self.packets.append(
            (arrival, pkt.sequence, pkt.timestamp, pt, pkt.marker, len(pkt.payload))
        )
        self.payload_types.add(pt)
        if self._last_arrival is not None:
            self.max_gap = max(self.max_gap, arrival - self._last_arrival)
        self._last_arrival = arrival

        stream = self.streams.get(pkt.ssrc)
        if stream is None:
            stream = self.streams[pkt.ssrc] = _Stream(pkt.ssrc, pkt.sequence)
        ext = stream.extend(pkt.sequence)
        if ext in stream.seen:
            self.duplicates += 1
            return
        if ext < stream.max_ext:
            self.reordered += 1
        stream.seen.add(ext)
        stream.max_ext = max(stream.max_ext, ext)
        stream.min_ext = min(stream.min_ext, ext)
        stream.payloads[ext] = (pt, pkt.payload)

        codec = self.codec_for(pt)
        if codec is None:
            self.unknown_pt += 1
            return
        self._jitter(stream, codec.clock_rate, arrival, pkt.timestamp)

    def _jitter(self, s: _Stream, rate: int, arrival: float, ts: int) -> None:
        # RFC 3550 A.8: D = (R_j - R_i) - (S_j - S_i) in timestamp units,
        # J += (|D| - J) / 16.  A change of clock rate restarts the estimate.
        if s.prev_arrival is not None and s.rate == rate:
            d = (arrival - s.prev_arrival) * rate - _signed32(ts - s.prev_ts)
            s.jitter += (abs(d) - s.jitter) / 16.0
        elif s.rate != rate:
            s.jitter = 0.0
        s.prev_arrival, s.prev_ts, s.rate = arrival, ts, rate
        ms = s.jitter * 1000.0 / rate
        self.last_jitter_ms = ms
        self.max_jitter_ms = max(self.max_jitter_ms, ms)

    @property
    def lost(self) -> int:
        """Missing sequence numbers, summed over SSRCs."""
        return sum(s.max_ext - s.min_ext + 1 - len(s.seen) for s in self.streams.values())

    def decode(self) -> tuple[Samples, int]:
        """
        Decode everything received so far.

        Each SSRC is decoded in extended-sequence order, with one fresh
        decoder per (SSRC, payload type); a sequence gap becomes silence as
        long as the stream's last decoded packet (at most
        :data:`~xlbridge.rtp.seq.RESYNC_JUMP` packets of it), as does a
        packet that does not decode or has an unknown payload type.

        :return: the audio (16 kHz int16) and the number of payloads that
            failed to decode.
        """
        chunks: list[Samples] = []
        bad = 0
        for s in self.streams.values():
            decoders: dict[int, Decoder] = {}
            frame = FRAME_SAMPLES
            prev: Optional[int] = None
            for ext in sorted(s.payloads):
                pt, payload = s.payloads[ext]
                if prev is not None and ext - prev > 1:
                    missing = min(ext - prev - 1, RESYNC_JUMP)
                    chunks.append(np.zeros(missing * frame, dtype=np.int16))
                prev = ext
                codec = self.codec_for(pt)
                if codec is None:
                    chunks.append(np.zeros(frame, dtype=np.int16))
                    continue
                dec = decoders.get(pt)
                if dec is None:
                    dec = decoders[pt] = make_decoder(codec)
                try:
                    samples = dec.decode(payload)
                except CodecError:
                    bad += 1
                    chunks.append(np.zeros(frame, dtype=np.int16))
                    continue
                if len(samples):
                    frame = len(samples)
                chunks.append(np.asarray(samples, dtype=np.int16))
        if not chunks:
            return np.zeros(0, dtype=np.int16), bad
        return np.concatenate(chunks), bad

    def report(self, packets_sent: int = 0, send_errors: int = 0) -> PhoneReport:
        """Summarise what was received so far."""
        audio, bad = self.decode()
        return PhoneReport(
            packets_sent=packets_sent,
            packets_received=len(self.packets),
            lost=self.lost,
            duplicates=self.duplicates,
            reordered=self.reordered,
            malformed=self.malformed + bad,
            jitter_ms=self.last_jitter_ms,
            jitter_max_ms=self.max_jitter_ms,
            max_gap_ms=self.max_gap * 1000.0,
            payload_types=frozenset(self.payload_types),
            audio=audio,
            packets=list(self.packets),
            unknown_pt=self.unknown_pt,
            send_errors=send_errors,
            ssrcs=len(self.streams),
        )


# --- the phone --------------------------------------------------------------------


def _random32() -> int:
    return secrets.randbits(32)


class Phone(DatagramProtocol):
    """
    One simulated ExternalMedia leg.

    Listen on a UDP port with it (``reactor.listenUDP(0, phone,
    interface="127.0.0.1")``), then call :meth:`play`.

    :param clock: time source and scheduler (the reactor, or a fake clock).
    :param audio: what to send, 16 kHz mono int16 native order.
    :param codec: wire codec and payload type of what is sent.
    :param target: ``(ip, port)`` to send to; the host must be an IP address.
    :param ptime_ms: audio per packet in milliseconds (20 like Asterisk).
    :param tail: seconds to keep listening after the last packet was sent.
    :param ssrc: RTP SSRC; random by default.
    :param seq: first RTP sequence number; random by default.
    :param ts: first RTP timestamp; random by default.
    :param codecs: payload type -> codec for decoding replies, consulted
        before Asterisk's default payload types; the phone's own ``codec`` is
        included, so a ``--pt`` override decodes too.

    :ivar packets_sent: packets written so far.
    :ivar recorder: the :class:`Recorder` of inbound packets.
    """

    def __init__(
        self,
        clock: IReactorTime,
        audio: Samples,
        codec: Codec,
        target: Address,
        ptime_ms: int = FRAME_MS,
        tail: float = 1.0,
        ssrc: Optional[int] = None,
        seq: Optional[int] = None,
        ts: Optional[int] = None,
        codecs: Optional[Mapping[int, Codec]] = None,
    ) -> None:
        x = np.asarray(audio)
        if x.ndim != 1:
            raise ValueError(f"audio must be one-dimensional (mono), got shape {x.shape}")
        if (
            isinstance(ptime_ms, bool)
            or not isinstance(ptime_ms, int)
            or ptime_ms <= 0
            or (SAMPLE_RATE * ptime_ms) % 1000
            or (codec.clock_rate * ptime_ms) % 1000
        ):
            raise ValueError(f"ptime_ms must be a positive whole number of ms, got {ptime_ms!r}")
        if tail < 0:
            raise ValueError(f"tail must be >= 0 seconds, got {tail!r}")
        self.clock = clock
        self.codec = codec
        self.target = target
        self.ptime_ms = ptime_ms
        self.tail = tail
        #: samples per packet at 16 kHz (320 for 20 ms)
        self.frame_samples = SAMPLE_RATE * ptime_ms // 1000
        #: RTP timestamp step per packet (= codec.timestamp_step at 20 ms;
        #: G.722 160 as its RTP clock is 8000 Hz)
        self.timestamp_step = codec.clock_rate * ptime_ms // 1000
        n = -(-len(x) // self.frame_samples)
        padded = np.zeros(n * self.frame_samples, dtype=np.int16)
        padded[: len(x)] = x.astype(np.int16, copy=False)
        self.frames: list[Samples] = [
            padded[i * self.frame_samples : (i + 1) * self.frame_samples] for i in range(n)
        ]
        self.ssrc = (ssrc if ssrc is not None else _random32()) & 0xFFFFFFFF
        self.first_seq = (seq if seq is not None else _random32()) & 0xFFFF
        self.first_ts = (ts if ts is not None else _random32()) & 0xFFFFFFFF
        decode_map = {codec.payload_type: codec}
        decode_map.update(codecs or {})
        self.recorder = Recorder(decode_map)
        self.packets_sent = 0
        self.send_errors = 0
        self._encoder = make_encoder(codec)
        self._next = 0  # index of the next frame to send
        self._start = 0.0
        self._loop: Optional[LoopingCall] = None
        self._tail_call: Optional[IDelayedCall] = None
        self._done: Optional[Deferred[PhoneReport]] = None
        self._finished = False

    # -- sending -------------------------------------------------------------

    @property
    def playing(self) -> bool:
        """``True`` between :meth:`play` and the report."""
        return self._done is not None and not self._finished

    def play(self) -> Deferred[PhoneReport]:
        """
        Start sending now: the first packet at once, then one every
        ``ptime_ms``; after the last one keep listening for ``tail`` seconds.

        :return: fires with the :class:`PhoneReport` (also early, on
            :meth:`stop` or when the port stops listening).
        :raises RuntimeError: if the protocol is not listening yet, or
            :meth:`play` was already called.
        """
        if self.transport is None:
            raise RuntimeError("listen on a UDP port with this phone before play()")
        if self._done is not None:
            raise RuntimeError("play() may be called only once")
        self._done = Deferred()
        self._start = self.clock.seconds()
        loop = LoopingCall(self._tick)
        loop.clock = self.clock
        self._loop = loop
        loop.start(self.ptime_ms / 1000.0, now=True).addErrback(self._loop_failed)
        return self._done

    def _tick(self) -> None:
        # LoopingCall does not replay missed intervals: count them from the
        # start time and send every packet that is due (the small epsilon
        # absorbs float error in the clock's sums of 0.02).
        interval = self.ptime_ms / 1000.0
        due = int((self.clock.seconds() - self._start) / interval + 1e-6) + 1
        due = min(due, len(self.frames))
        while self._next < due and self.transport is not None:
            self._send(self._next)
            self._next += 1
        if self._next >= len(self.frames):
            loop, self._loop = self._loop, None
            if loop is not None and loop.running:
                loop.stop()
            if not self._finished and self._tail_call is None:
                self._tail_call = self.clock.callLater(self.tail, self._finish)

    def _send(self, i: int) -> None:
        payload = self._encoder.encode(self.frames[i])
        packet = build(
            self.codec.payload_type,
            (self.first_seq + i) & 0xFFFF,
            (self.first_ts + i * self.timestamp_step) & 0xFFFFFFFF,
            self.ssrc,
            payload,
            marker=(i == 0),
        )
        try:
            assert self.transport is not None
            self.transport.write(packet, self.target)
        except Exception:
            self.send_errors += 1
        else:
            self.packets_sent += 1

    def _loop_failed(self, f: Failure) -> None:
        # _tick should not raise; if it did, report the failure rather than
        # leave play()'s Deferred hanging.
        self._loop = None
        if self._done is not None and not self._finished:
            self._finished = True
            self._cancel_tail()
            self._done.errback(f)

    def _cancel_tail(self) -> None:
        call, self._tail_call = self._tail_call, None
        if call is not None and call.active():
            call.cancel()

    def _finish(self) -> None:
        if self._finished or self._done is None:
            return
        self._finished = True
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        self._cancel_tail()
        self._done.callback(self.report())

    def stop(self) -> None:
        """
        Stop sending and listening now; :meth:`play`'s Deferred fires with
        the report so far.  Does nothing if not playing.
        """
        self._finish()

    def report(self) -> PhoneReport:
        """The report so far (also usable while playing)."""
        return self.recorder.report(self.packets_sent, self.send_errors)

    # -- receiving -----------------------------------------------------------

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """
        Record a datagram (from any source) until the report has fired.
        Never raises.
        """
        if self._finished:
            return
        try:
            self.recorder.receive(datagram, self.clock.seconds())
        except Exception:
            self.recorder.malformed += 1

    def stopProtocol(self) -> None:
        # The port closed under us: report what we have.
        self._finish()


# --- signals and WAV files --------------------------------------------------------


def _check_seconds(seconds: float) -> int:
    if not seconds >= 0:
        raise ValueError(f"seconds must be >= 0, got {seconds!r}")
    return int(round(seconds * SAMPLE_RATE))


def _check_level(level: float) -> float:
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"level must be 0..1 of full scale, got {level!r}")
    return level


def _to_int16(y: _Float) -> Samples:
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def tone(freq: float, seconds: float, level: float = 0.3) -> Samples:
    """
    A sine tone.

    :param freq: frequency in Hz, below 8000 (the Nyquist frequency).
    :param seconds: duration.
    :param level: peak amplitude as a fraction of full scale (0..1).
    :return: 16 kHz mono int16, starting at phase 0.
    """
    if not 0 < freq < SAMPLE_RATE / 2:
        raise ValueError(f"tone frequency must be in (0, {SAMPLE_RATE // 2}) Hz, got {freq!r}")
    n = _check_seconds(seconds)
    amp = _check_level(level) * 32767.0
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    return _to_int16(amp * np.sin(2.0 * np.pi * freq * t))


def noise(
    seconds: float, level: float = 0.3, seed: int = 0, lowpass_hz: Optional[float] = None
) -> Samples:
    """
    Deterministic white noise (the same ``seed`` gives the same samples).

    :param seconds: duration.
    :param level: peak amplitude as a fraction of full scale (0..1).
    :param seed: seed of ``numpy.random.default_rng``.
    :param lowpass_hz: if given, remove everything above this frequency (an
        ideal FFT brick-wall filter), then rescale to ``level`` peak; e.g.
        3400 for telephone-band noise that survives narrowband codecs.
    :return: 16 kHz mono int16.
    """
    n = _check_seconds(seconds)
    amp = _check_level(level) * 32767.0
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, n)
    if lowpass_hz is not None and n:
        if not 0 < lowpass_hz:
            raise ValueError(f"lowpass_hz must be positive, got {lowpass_hz!r}")
        spectrum = np.fft.rfft(x)
        spectrum[np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE) > lowpass_hz] = 0
        x = np.fft.irfft(spectrum, n)
        peak = np.abs(x).max()
        if peak > 0:
            x /= peak
    return _to_int16(amp * x)


class WavError(ValueError):
    """A file is not a WAV file this module can read."""


#: WAVE format tags: integer PCM, IEEE float, WAVE_FORMAT_EXTENSIBLE.
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def _wav_samples(data: bytes, fmt: int, bits: int) -> _Float:
    """Decode little-endian WAV sample data to float64 in int16 scale."""
    if fmt == _PCM and bits == 8:  # unsigned, offset 128
        return (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    if fmt == _PCM and bits == 16:
        return np.frombuffer(data, dtype="<i2").astype(np.float64)
    if fmt == _PCM and bits == 24:
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float64) / 256.0
    if fmt == _PCM and bits == 32:
        return np.frombuffer(data, dtype="<i4").astype(np.float64) / 65536.0
    if fmt == _FLOAT and bits in (32, 64):
        dtype = "<f4" if bits == 32 else "<f8"
        return np.frombuffer(data, dtype=dtype).astype(np.float64) * 32768.0
    kind = {_PCM: "integer PCM", _FLOAT: "float"}.get(fmt, f"format tag 0x{fmt:04x}")
    raise WavError(f"unsupported WAV encoding: {bits}-bit {kind}")


def load_wav(path: str) -> Samples:
    """
    Read a WAV file as internal audio.

    Reads 8-bit (unsigned), 16-, 24- and 32-bit integer PCM and 32/64-bit
    float, any sample rate and channel count (also WAVE_FORMAT_EXTENSIBLE).
    Channels are averaged to mono and the result is resampled to 16 kHz
    with :func:`xlbridge.audio.resample.resample`.

    :param path: the file.
    :return: 16 kHz mono int16, native byte order.
    :raises OSError: if the file cannot be read.
    :raises WavError: if it is not a WAV file this function understands.
    """
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise WavError(f"{path}: not a RIFF/WAVE file")
    fmt_chunk: Optional[bytes] = None
    data: Optional[bytes] = None
    pos = 12
    while pos + 8 <= len(blob):
        cid = blob[pos : pos + 4]
        (size,) = struct.unpack_from("<I", blob, pos + 4)
        body = blob[pos + 8 : pos + 8 + size]  # truncated if the file is short
        if cid == b"fmt ":
            fmt_chunk = body
        elif cid == b"data":
            data = body
            if fmt_chunk is not None:
                break
        pos += 8 + size + (size & 1)
    if fmt_chunk is None or len(fmt_chunk) < 16:
        raise WavError(f"{path}: no valid 'fmt ' chunk")
    if data is None:
        raise WavError(f"{path}: no 'data' chunk")
    fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt_chunk)
    if fmt == _EXTENSIBLE:
        if len(fmt_chunk) < 26:
            raise WavError(f"{path}: truncated WAVE_FORMAT_EXTENSIBLE header")
        (fmt,) = struct.unpack_from("<H", fmt_chunk, 24)  # sub-format GUID's first field
    if channels < 1 or rate < 1 or bits < 8 or bits % 8:
        raise WavError(f"{path}: bad header ({channels} channels, {rate} Hz, {bits} bits)")
    block = channels * bits // 8
    data = data[: len(data) - len(data) % block]
    try:
        x = _wav_samples(data, fmt, bits)
    except WavError as e:
        raise WavError(f"{path}: {e}") from None
    mono = _to_int16(x.reshape(-1, channels).mean(axis=1))
    if rate != SAMPLE_RATE:
        mono = resample(mono, rate, SAMPLE_RATE)
    return mono


def save_wav(path: str, samples: Samples, rate: int = SAMPLE_RATE) -> None:
    """
    Write mono 16-bit PCM WAV (little-endian, as RIFF requires).

    :param path: the file to create or overwrite.
    :param samples: int16 samples at ``rate`` (not resampled).
    :param rate: sample rate in Hz to put in the header.
    :raises OSError: if the file cannot be written.
    """
    x = np.asarray(samples, dtype=np.int16)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.astype("<i2").tobytes())


# --- command line -------------------------------------------------------------------


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 1, not argparse's 2
        raise _UsageError(message)


def _host_port(text: str, option: str, resolve: bool) -> Address:
    host, sep, port_s = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise _UsageError(f"{option}: expected HOST:PORT, got {text!r}")
    try:
        port = int(port_s)
    except ValueError:
        raise _UsageError(f"{option}: {port_s!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise _UsageError(f"{option}: port {port} is outside 0..65535")
    if resolve:
        try:
            host = str(socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0])
        except (OSError, UnicodeError) as e:
            raise _UsageError(f"{option}: cannot resolve {host!r}: {e}") from None
    return host, port


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="xlbridge-phone",
        description=(
            "Simulated Asterisk ExternalMedia leg: play audio as RTP to HOST:PORT "
            "at real-time pace, record what comes back on the same socket, and "
            "print a summary."
        ),
    )
    p.add_argument("--to", required=True, metavar="HOST:PORT", help="where to send RTP")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--play", metavar="WAV", help="WAV file to send (any rate/channels)")
    src.add_argument("--tone", type=float, metavar="HZ", help="send a sine tone instead")
    p.add_argument("--seconds", type=float, default=3.0, help="tone duration (default 3)")
    p.add_argument("--codec", default="slin16", choices=CODEC_NAMES, help="wire codec (default slin16)")
    p.add_argument("--pt", type=int, metavar="N", help="RTP payload type (default: the codec's)")
    p.add_argument("--record", metavar="OUT.wav", help="write received audio here (16 kHz mono)")
    p.add_argument("--tail", type=float, default=2.0, help="seconds to listen after the last packet (default 2)")
    p.add_argument("--bind", default="127.0.0.1:0", metavar="HOST:PORT", help="local address (default 127.0.0.1:0)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    Command-line entry point.

    :return: exit status: 0 after a run, 1 for a bad argument, an unreadable
        WAV, an unbindable port or an unwritable recording.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        target = _host_port(args.to, "--to", resolve=True)
        if target[1] == 0:
            raise _UsageError("--to: port 0 is not a destination")
        bind = _host_port(args.bind, "--bind", resolve=False)
        codec = get_codec(args.codec, args.pt)
        if args.tail < 0:
            raise _UsageError("--tail must be >= 0")
        if args.play is not None:
            audio = load_wav(args.play)
        else:
            audio = tone(args.tone, args.seconds)
    except _UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"xlbridge-phone: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # bad --pt / --tone / --seconds, or an unreadable WAV
        print(f"xlbridge-phone: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"xlbridge-phone: error: cannot read {args.play}: {e.strerror or e}", file=sys.stderr)
        return 1

    from twisted.internet import reactor as _reactor
    from twisted.internet.error import CannotListenError, ReactorNotRunning

    reactor: Any = _reactor
    phone = Phone(reactor, audio, codec, target, tail=args.tail)
    try:
        port = reactor.listenUDP(bind[1], phone, interface=bind[0])
    except CannotListenError as e:
        print(f"xlbridge-phone: error: cannot bind {bind[0]}:{bind[1]}: {e.socketError}", file=sys.stderr)
        return 1

    status = [0]

    def done(report: PhoneReport) -> None:
        local = port.getHost()
        print(
            f"phone {local.host}:{local.port} -> {target[0]}:{target[1]}, "
            f"{codec.name} (PT {codec.payload_type}), {len(audio) / SAMPLE_RATE:.2f} s of audio"
        )
        print(report.summary())
        if args.record:
            try:
                save_wav(args.record, report.audio)
                print(f"recorded to:       {args.record}")
            except OSError as e:
                print(f"xlbridge-phone: error: cannot write {args.record}: {e.strerror or e}", file=sys.stderr)
                status[0] = 1

    def failed(f: Failure) -> None:
        print(f"xlbridge-phone: error: {f.getErrorMessage()}", file=sys.stderr)
        status[0] = 1

    def start() -> None:
        d = phone.play()
        d.addCallbacks(done, failed)
        d.addBoth(lambda _: port.stopListening())
        d.addBoth(lambda _: _stop_reactor())

    def _stop_reactor() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:  # already stopping (Ctrl-C)
            pass

    reactor.callWhenRunning(start)
    # Ctrl-C: report what we have before the reactor goes away.
    reactor.addSystemEventTrigger("before", "shutdown", phone.stop)
    reactor.run()
    return status[0]


if __name__ == "__main__":
    sys.exit(main())
