"""
The receive side of the simulated phone: RTP statistics and decoded audio,
with no I/O.

A :class:`Recorder` is fed datagrams with their arrival time and keeps, per
SSRC: loss from sequence gaps (16-bit wraparound correct), duplicates,
reordering, RFC 3550 interarrival jitter (appendix A.8, in the codec's clock
units converted to ms) and the largest arrival gap.  :meth:`Recorder.report`
rebuilds the received audio per stream in sequence order, with silence for
what was lost, as 16 kHz int16 native order.
"""

from __future__ import annotations

from typing import Mapping, Optional

import attrs
import numpy as np

from xlbridge.audio.codecs import Codec, Decoder, codec_for_payload_type, make_decoder
from xlbridge.audio.frame import FRAME_SAMPLES, SAMPLE_RATE, Samples
from xlbridge.audio.pcm16 import CodecError
from xlbridge.rtp.packet import RTPParseError, parse
from xlbridge.rtp.seq import RESYNC_JUMP, seq_diff

#: One received RTP packet as kept in :attr:`PhoneReport.packets`:
#: ``(arrival_time, seq, timestamp, pt, marker, payload_len)``.
PacketRecord = tuple[float, int, int, int, bool, int]


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
