"""
RTP legs: one UDP port per extension, as Asterisk's ExternalMedia uses it.

Design notes:

- Asterisk sends each extension's audio from its own RTP port to
  ``external_host:port`` (ours).  We *latch* the first valid sender: while
  latched, packets from any other address are dropped and counted (no audio
  injection from strangers).  After ``latch_timeout`` seconds without a valid
  packet from the latched source, a new source may latch.
- Replies go to the latched address from the same socket: Asterisk's strict
  RTP accepts packets from ``external_host:port`` at once (PROTOCOLS.md T7).
- Inbound packets go through a small reorder buffer, are decoded to internal
  audio exactly once here, and are handed to ``on_audio``.  Nothing above
  this module sees RTP or wire byte order.
- ``datagramReceived`` never raises: malformed input is a counted drop by
  its parse reason; an exception from ``on_audio`` (the pipeline) is
  counted as ``pipeline_error`` and the rest of the batch the reorder buffer
  released is still delivered; anything else unexpected is counted as
  ``error``.  Failures that can repeat per packet (and failed sends) are
  logged through a :class:`~xlbridge.logthrottle.LogThrottle`: the first at
  once, then at most one line per 10 s with the count held back.
- Outbound, the hot path sends with the port's own ``socket.sendto``
  (:meth:`RTPEndpoint.startProtocol`); transports without a ``socket`` go
  through ``transport.write``.  :class:`xlbridge.testing.MemoryDatagramPort`
  has a ``socket`` too, so unit tests run the production branch.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from xlbridge.audio.codecs import Codec, make_decoder, make_encoder
from xlbridge.audio.frame import FRAME_SAMPLES, Samples, silence
from xlbridge.audio.pcm16 import CodecError
from xlbridge.events import DropReason, LegCounters
from xlbridge.interfaces import ILegTransport
from xlbridge.logthrottle import LogThrottle
from xlbridge.rtp.packet import RTPPacket, RTPParseError, RTPSender, parse
from xlbridge.rtp.seq import ReorderBuffer

Address = tuple[str, int]

#: Bytes read per datagram.  Twisted's default (8,192) truncates a longer
#: datagram silently, and the part that is left can still parse as RTP and
#: be taken as a quarter second of audio.  Reading up to the largest UDP
#: payload (65,507) lets :data:`MAX_DATAGRAM` see the true size.
RECV_SIZE = 65536

#: The longest datagram accepted, in bytes: 256 ms of slin16 plus headers,
#: far above Asterisk's 20 ms frames (652 bytes of slin16 RTP).  Longer ones
#: are dropped whole as ``oversize``.
MAX_DATAGRAM = 8192


@attrs.frozen
class RTPSettings:
    """
    Tunables of an RTP leg.

    :ivar latch_timeout: seconds of silence from the latched source before
        another source may take over.
    :ivar reorder_depth: packets held while waiting for a missing one.
    """

    latch_timeout: float = 5.0
    reorder_depth: int = 3


@implementer(ILegTransport)
class RTPEndpoint(DatagramProtocol):
    """
    The UDP side of one extension.

    :param extension: the extension this port serves.
    :param codec_in: what Asterisk sends (its PT is the only one accepted).
    :param codec_out: what we send back.
    :param clock: time source for latching.
    :param on_audio: called with ``(endpoint, samples)`` for every decoded
        inbound packet, in sequence order.
    """

    kind = "rtp"
    noisy = False
    log = Logger()

    def __init__(
        self,
        extension: str,
        codec_in: Codec,
        codec_out: Codec,
        clock: IReactorTime,
        on_audio: Callable[["RTPEndpoint", Samples], None],
        settings: RTPSettings = RTPSettings(),
    ) -> None:
        self.extension = extension
        self.codec_in = codec_in
        self.codec_out = codec_out
        self.clock = clock
        self.on_audio = on_audio
        self.settings = settings
        self.counters = LegCounters()
        self.remote: Address | None = None
        self._last_rx = 0.0
        self._ssrc: int | None = None
        self._reorder: ReorderBuffer[RTPPacket] = ReorderBuffer(settings.reorder_depth)
        self._decoder = make_decoder(codec_in)
        self._encoder = make_encoder(codec_out)
        self._sender = RTPSender(codec_out.payload_type, codec_out.timestamp_step)
        self._silence = silence(FRAME_SAMPLES)
        self._pt = codec_in.payload_type
        self._counted = (0, 0, 0)
        self._sendto: Optional[Callable[[bytes, Address], object]] = None
        log = self.log
        self._error_log = LogThrottle(log, clock)
        self._pipeline_log = LogThrottle(log, clock)
        self._send_log = LogThrottle(log, clock)

    def startProtocol(self) -> None:
        # Whole datagrams: see RECV_SIZE.  (A Twisted UDP port reads
        # ``maxPacketSize`` bytes per recvfrom, looked up on every read.)
        transport: Any = self.transport
        if hasattr(transport, "maxPacketSize"):
            transport.maxPacketSize = RECV_SIZE
        # The hot path sends with the socket's own sendto: the latched
        # address came from the kernel, so Twisted's per-write address
        # checks (about 1.5 us a packet, 20,000 packets/s at 200 calls) are
        # redundant.  Transports without a socket (memory transports in
        # tests) go through write().
        sock = getattr(self.transport, "socket", None)
        self._sendto = getattr(sock, "sendto", None)

    def stopProtocol(self) -> None:
        self._sendto = None
        self._flush_logs()

    # -- inbound -----------------------------------------------------------

    def datagramReceived(self, data: bytes, addr: Address) -> None:  # type: ignore[override]
        try:
            self._receive(data, addr)
        except Exception:
            self.counters.drop(DropReason.ERROR)
            self._error_log.failure("error handling RTP from {addr} on {ext}", addr=addr, ext=self.extension)

    def _receive(self, data: bytes, addr: Address) -> None:
        counters = self.counters
        if len(data) > MAX_DATAGRAM:
            counters.drop(DropReason.OVERSIZE)
            return
        try:
            pkt = parse(data)
        except RTPParseError as e:
            counters.drop(e.reason)
            return
        if pkt.payload_type != self._pt:
            counters.drop(DropReason.PAYLOAD_TYPE)
            return
        now = self.clock.seconds()
        remote = self.remote
        if addr != remote:
            if remote is not None and now - self._last_rx < self.settings.latch_timeout:
                counters.drop(DropReason.FOREIGN_SOURCE)
                return
            self._latch(addr, remote)
        self._last_rx = now
        if pkt.ssrc != self._ssrc:
            # A new stream: its codec state must not inherit the old one's.
            if self._ssrc is not None:
                self._decoder.reset()
            self._ssrc = pkt.ssrc
            self._reorder.reset()
        reorder = self._reorder
        ready = reorder.push(pkt.sequence, pkt)
        if (reorder.duplicates, reorder.late, reorder.lost) != self._counted:
            self._sync_reorder_counters()
        for p in ready:
            try:
                samples = self._decoder.decode(p.payload)
            except CodecError:
                counters.drop(DropReason.PAYLOAD)
                continue
            counters.packets_in += 1
            counters.bytes_in += len(p.payload)
            try:
                self.on_audio(self, samples)
            except Exception:
                # The pipeline's bug, not bad RTP: count it as such and go on
                # with the rest of the batch.
                counters.drop(DropReason.PIPELINE_ERROR)
                self._pipeline_log.failure("{ext}: pipeline error on RTP audio", ext=self.extension)

    def _sync_reorder_counters(self) -> None:
        r = self._reorder
        dup, late, lost = self._counted
        c = self.counters
        if r.duplicates != dup:
            c.drop(DropReason.DUPLICATE, r.duplicates - dup)
        if r.late != late:
            c.drop(DropReason.LATE, r.late - late)
        c.lost += r.lost - lost
        self._counted = (r.duplicates, r.late, r.lost)

    def _latch(self, addr: Address, previous: Address | None) -> None:
        self.remote = addr
        self._ssrc = None
        self._reorder.reset()
        self._decoder.reset()
        if previous is None:
            self.log.info("{ext}: latched RTP source {addr}", ext=self.extension, addr=addr)
        else:
            self.log.info(
                "{ext}: RTP source changed from {previous} to {addr}",
                ext=self.extension,
                addr=addr,
                previous=previous,
            )

    # -- outbound (ILegTransport) ----------------------------------------

    @property
    def ready(self) -> bool:
        return self.remote is not None and self.transport is not None

    @property
    def line_open(self) -> bool:
        """
        Always false: RTP has no connection, so nothing holds a call open
        (it ends after ``call-timeout`` without audio).
        """
        return False

    def send_frame(self, samples: Samples | None, speech: bool | None = None) -> None:
        remote = self.remote
        if remote is None or self.transport is None:
            return
        if speech is None:
            speech = samples is not None
        payload = self._encoder.encode(samples if samples is not None else self._silence)
        packet = self._sender.packet(payload, speech)
        counters = self.counters
        try:
            sendto = self._sendto
            if sendto is not None:
                sendto(packet, remote)
            else:
                self.transport.write(packet, remote)
        except Exception as e:
            counters.drop(DropReason.ERROR)
            self._send_log.warn("{ext}: send to {addr} failed: {err}", ext=self.extension, addr=remote, err=e)
            return
        counters.packets_out += 1
        counters.bytes_out += len(payload)
        if not speech:
            counters.silence_out += 1

    def skip(self, ticks: int) -> None:
        self._sender.skip(ticks)

    def reset(self) -> None:
        self._flush_logs()
        self.remote = None
        self._ssrc = None
        self._reorder.reset()
        self._decoder = make_decoder(self.codec_in)
        self._encoder = make_encoder(self.codec_out)
        self._sender.reset()

    def _flush_logs(self) -> None:
        # Report failures held back by the throttles (the call ended, or
        # the port closed) so their count is not lost from the log.
        self._error_log.flush()
        self._pipeline_log.flush()
        self._send_log.flush()

    def describe(self) -> dict[str, Any]:
        host = self.transport.getHost() if self.transport is not None else None
        return {
            "kind": self.kind,
            "codec": self.codec_in.name,
            "reply_codec": self.codec_out.name,
            "local": f"{host.host}:{host.port}" if host is not None else None,
            "remote": f"{self.remote[0]}:{self.remote[1]}" if self.remote else None,
        }
