# -*- test-case-name: tests.tools.test_phone -*-
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
integration tests with the real reactor.  The command line
(``xlbridge-phone`` / ``python -m xlbridge.tools.phone_cli``) is
:mod:`xlbridge.tools.phone_cli`.

Units and byte order: audio handed to and returned by this module is always
16 kHz mono signed 16-bit in native byte order (:mod:`xlbridge.audio.frame`);
the wire format is the chosen codec's (L16 is big-endian on RTP), converted
by :mod:`xlbridge.audio.codecs`.  WAV files are little-endian, as RIFF
requires.  Times are in seconds unless a name ends in ``_ms``.
"""

from __future__ import annotations

import secrets
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from xlbridge.audio.codecs import (
    Codec,
    make_decoder,
    make_encoder,
)
from xlbridge.audio.frame import FRAME_MS, SAMPLE_RATE, Samples
from xlbridge.audio.wavfile import WavError, load_wav, noise, save_wav, tone
from xlbridge.rtp.packet import build
from xlbridge.tools.recorder import PacketRecord, PhoneReport, Recorder

__all__ = [
    "PacketRecord",
    "Phone",
    "PhoneReport",
    "Recorder",
    "WavError",
    "load_wav",
    "noise",
    "save_wav",
    "tone",
]

Address = tuple[str, int]


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
        echo_gain_db: Optional[float] = None,
        echo_delay_ms: int = 200,
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
        # Echo path: what the phone hears comes back into its microphone,
        # ``echo_delay_ms`` later and ``echo_gain_db`` quieter (a
        # speakerphone).  Bounded to two seconds of audio.
        self.echo_gain = 10 ** (echo_gain_db / 20) if echo_gain_db is not None else None
        self._echo = bytearray(bytes(2 * SAMPLE_RATE * echo_delay_ms // 1000))
        self._echo_decoders: dict[int, Any] = {}
        self.echo_errors = 0

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

    def _echo_frame(self, frame: Samples) -> Samples:
        n = len(frame) * 2
        chunk = bytes(self._echo[:n])
        del self._echo[:n]
        if len(chunk) < n:
            chunk += bytes(n - len(chunk))
        heard = np.frombuffer(chunk, dtype=np.int16).astype(np.float32) * (self.echo_gain or 0.0)
        return np.clip(frame.astype(np.float32) + heard, -32768, 32767).astype(np.int16)

    def _hear_echo(self, datagram: bytes) -> None:
        try:
            pt = datagram[1] & 0x7F
            codec = self.recorder.codec_for(pt)
            if codec is None or len(datagram) < 12:
                return
            decoder = self._echo_decoders.get(pt)
            if decoder is None:
                decoder = self._echo_decoders[pt] = make_decoder(codec)
            self._echo += decoder.decode(datagram[12:]).tobytes()
            excess = len(self._echo) - 4 * SAMPLE_RATE
            if excess > 0:
                del self._echo[:excess]
        except Exception:
            # The recorder counts malformed input; the echo path skips it.
            self.echo_errors += 1

    def _send(self, i: int) -> None:
        frame = self.frames[i]
        if self.echo_gain is not None:
            frame = self._echo_frame(frame)
        payload = self._encoder.encode(frame)
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
        if self.echo_gain is not None:
            self._hear_echo(datagram)

    def stopProtocol(self) -> None:
        # The port closed under us: report what we have.
        self._finish()
