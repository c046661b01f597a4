"""
AudioSocket legs: one TCP listening port per extension.

Design notes:

- Asterisk is the TCP client (``AudioSocket()`` dialplan app, or
  ExternalMedia with ``encapsulation=audiosocket``); the extension is known
  from the port it connected to.  Its first message is 0x01 with the call's
  UUID, which becomes :attr:`AudioSocketEndpoint.call_id` (8-4-4-4-12) and
  the id of the call this leg starts.
- One connection per extension at a time: a second one while the first is
  live is refused (closed at once) and counted as ``audiosocket_busy``.
- Audio arrives as little-endian slin at the rate its kind names (0x10 8 kHz
  from the dialplan app, 0x12 16 kHz from ExternalMedia slin16).  It is
  decoded and resampled to internal 16 kHz audio exactly once here and
  handed to ``on_audio``, like :class:`~xlbridge.transports.rtp.RTPEndpoint`.
- Replies go back in the kind and rate of the latest audio received, one
  20 ms message per egress tick (Asterisk writes each message straight to
  the channel without re-timing, so we pace).  Before any audio arrives
  they start at once, at ``first_reply_rate`` (8 kHz, 0x10, by default,
  the kind every Asterisk knows): Asterisk sends nothing while a caller is
  silent, and the ``AudioSocket()`` application hangs up after 2 s without
  traffic either way.  Asterisk 22 translates whichever slin kind it gets
  to the channel's format (checked with both the application and the
  channel driver, 0x10 and 0x12 each).
- What the configuration says (``--audiosocket 7000=5050:slin16``) or the
  ARI controller asked for (slin16) is ``first_reply_rate``: replies are
  in the leg's own kind from the first frame.  Only when nothing tells
  does the first reply go at 8 kHz and switch at the leg's first audio;
  the switch happens between two 20 ms messages, so the pacing keeps its
  step (checked on Asterisk 22: no delay comes of it).
- Nothing waits long in the connection: ``TCP_NODELAY`` and a small kernel
  send buffer (:mod:`xlbridge.transports.audiosocket_connection`), and a
  reply behind more than two unsent messages is dropped and counted
  (``send_backlog``), never queued
  (:mod:`xlbridge.transports.audiosocket_replies` sends the replies).
- :attr:`line_open` while a connection with its UUID is up: the call it
  belongs to does not end for inactivity, and :attr:`on_uuid` starts it.
- Hangup: 0x00 or a closed socket from Asterisk calls ``on_hangup`` so the
  call ends at once; when the call ends on our side, :meth:`reset` sends
  0x00 and closes.  A *persistent* endpoint (the ARI controller's legs,
  whose connection lives as long as Asterisk's ExternalMedia channel) keeps
  its connection across calls: :meth:`reset` only restarts the stream, and
  the owner closes it with :meth:`hangup` at teardown.
- Connections may also reach an endpoint through a router that read the
  UUID first (:mod:`xlbridge.ari.audiosocket`: one listening port for many
  legs); it hands the connection over with :meth:`AudioSocketEndpoint.adopt`.
- ``dataReceived`` never raises: malformed input is a counted drop; an
  exception from ``on_audio`` (the pipeline) is counted as
  ``pipeline_error``, anything else unexpected as ``error``, and the rest
  of the chunk is still handled.  Failures that can repeat per message
  (and failed sends) are logged through a
  :class:`~xlbridge.logthrottle.LogThrottle`: the first at once, then at
  most one line per 10 s (with the endpoint's ``clock``; without one, the
  rest are summarised when the connection or the call ends).
- Who may connect and how fast calls may start: a listener's factory is
  wrapped by :class:`~xlbridge.transports.admission.AdmittingFactory`
  (the peer allow-list), and a UUID that would start a call past the
  transport's new-call bound (:class:`~xlbridge.transports.admission.MediaAdmission`)
  is refused: counted as ``call_rate``, the connection closed, no call
  started, nothing else touched.
- DTMF (0x03) is not acted on: an interpreter has no use for key presses,
  and digits are often PINs or card numbers, so they are neither logged nor
  sent to the monitor or the event log.  :attr:`AudioSocketEndpoint.dtmf`
  keeps the latest :data:`DTMF_HISTORY` digits of the current connection
  for embedders (older ones are dropped and counted in ``dtmf_dropped``)
  and is emptied when the connection or the call ends.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Optional

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from xlbridge.audio.frame import SAMPLE_RATE, Samples
from xlbridge.audio.pcm16 import from_little_endian
from xlbridge.audio.resample import StreamResampler
from xlbridge.events import DropReason, LegCounters
from xlbridge.interfaces import ILegTransport
from xlbridge.logthrottle import LogThrottle
from xlbridge.transports.admission import MediaAdmission
from xlbridge.transports.audiosocket_codec import (
    HANGUP,
    KIND_DTMF,
    KIND_ERROR,
    KIND_HANGUP,
    KIND_OF_RATE,
    KIND_UUID,
    Frame,
    Malformed,
    Token,
    format_uuid,
)
from xlbridge.transports.audiosocket_connection import AudioSocketProtocol
from xlbridge.transports.audiosocket_replies import ReplyStream
from xlbridge.transports.backlog import peer_address

#: DTMF digits kept per connection in :attr:`AudioSocketEndpoint.dtmf`.
DTMF_HISTORY = 32


@implementer(ILegTransport)
class AudioSocketEndpoint(Factory):
    """
    The TCP side of one extension; also the factory of its connections.

    :param extension: the extension this port serves.
    :param on_audio: called with ``(endpoint, samples)`` for each inbound
        audio message, as internal audio.
    :param on_hangup: called with the endpoint when Asterisk hangs up (0x00
        or socket closed) after the UUID was received.
    :param persistent: the connection outlives calls: :meth:`reset` keeps it
        and :meth:`hangup` closes it (ARI legs).
    :param clock: time source of the log throttles (see the module notes).
    :param admission: the bridge's new-call bound (``None``: no bound, as
        for ARI legs, whose calls the controller starts).

    :ivar dtmf: the latest DTMF digits of the current connection (at most
        :data:`DTMF_HISTORY`), oldest first.
    :ivar dtmf_dropped: digits pushed out of :attr:`dtmf` by newer ones.
    """

    kind = "audiosocket"
    noisy = False
    log = Logger()

    def __init__(
        self,
        extension: str,
        on_audio: Callable[["AudioSocketEndpoint", Samples], None],
        on_hangup: Callable[["AudioSocketEndpoint"], None] = lambda e: None,
        persistent: bool = False,
        on_uuid: Callable[["AudioSocketEndpoint"], None] = lambda e: None,
        first_reply_rate: int = 8000,
        clock: Optional[IReactorTime] = None,
        admission: Optional[MediaAdmission] = None,
    ) -> None:
        if first_reply_rate not in KIND_OF_RATE:
            raise ValueError(f"no AudioSocket kind for {first_reply_rate} Hz")
        self.extension = extension
        self.persistent = persistent
        self.on_uuid = on_uuid
        self.first_reply_rate = first_reply_rate
        self.on_audio = on_audio
        self.on_hangup = on_hangup
        self.counters = LegCounters()
        #: the live connection, or ``None``
        self.connection: Optional[AudioSocketProtocol] = None
        #: the UUID of the live connection, once received
        self.call_id: Optional[str] = None
        #: sample rate of the latest inbound audio (replies use it)
        self.rate: Optional[int] = None
        self.dtmf: deque[str] = deque(maxlen=DTMF_HISTORY)
        self.dtmf_dropped = 0
        self._in: Optional[StreamResampler] = None
        #: ``host:port`` we listen on (set by the listener), for status pages
        self.local: Optional[str] = None
        self.clock = clock
        self.admission = admission
        log = self.log
        self._error_log = LogThrottle(log, clock)
        self._pipeline_log = LogThrottle(log, clock)
        self._replies = ReplyStream(extension, LogThrottle(log, clock))
        self._busy_log = LogThrottle(log, clock)

    def buildProtocol(self, addr: Optional[IAddress]) -> AudioSocketProtocol:
        return AudioSocketProtocol(self)

    # -- inbound -----------------------------------------------------------

    def connection_made(self, proto: AudioSocketProtocol) -> None:
        if self.connection is not None:
            self.counters.drop(DropReason.AUDIOSOCKET_BUSY)
            self._busy_log.warn("{ext}: refused a second AudioSocket connection", ext=self.extension)
            proto.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.connection = proto

    def adopt(self, proto: AudioSocketProtocol, tokens: list[Token]) -> None:
        """
        Take over a connection a router accepted, with the messages it has
        decoded so far (the 0x01 UUID first).  Refused like any second
        connection if this endpoint is busy.
        """
        proto.endpoint = self
        self.connection_made(proto)
        self.tokens_received(proto, tokens)

    def data_received(self, proto: AudioSocketProtocol, data: bytes) -> None:
        if proto is self.connection:
            try:
                tokens = proto.decoder.feed(data)
            except Exception:
                self.counters.drop(DropReason.ERROR)
                self._error_log.failure("error decoding AudioSocket data on {ext}", ext=self.extension)
                return
            self.tokens_received(proto, tokens)

    def tokens_received(self, proto: AudioSocketProtocol, tokens: list[Token]) -> None:
        """
        Handle decoded messages of ``proto``; never raises.
        """
        if proto is not self.connection:
            return
        for token in tokens:
            if proto is not self.connection:
                return  # hung up by an earlier message in this chunk
            if isinstance(token, Malformed):
                self.counters.drop(token.reason)
                continue
            try:
                self._frame(proto, token)
            except Exception:
                self.counters.drop(DropReason.ERROR)
                self._error_log.failure("error handling AudioSocket data on {ext}", ext=self.extension)

    def _frame(self, proto: AudioSocketProtocol, frame: Frame) -> None:
        rate = frame.rate
        if rate is not None:
            self._audio(frame, rate)
        elif frame.kind == KIND_UUID:
            call_id = format_uuid(frame.payload)
            if self.call_id is None:
                admission = self.admission
                if admission is not None and not admission.new_call("audiosocket", self.extension):
                    self.counters.drop(DropReason.CALL_RATE)
                    self._refuse(proto)
                    return
                self.call_id = call_id
                self.log.info("{ext}: AudioSocket call {call_id}", ext=self.extension, call_id=call_id)
                if self.reply_rate is None:
                    self._replies.start(self.first_reply_rate)
                self.on_uuid(self)
            elif call_id != self.call_id:
                self.counters.drop(DropReason.AUDIOSOCKET_KIND)
        elif frame.kind == KIND_HANGUP:
            self._peer_gone(proto)
        elif frame.kind == KIND_DTMF:
            dtmf = self.dtmf
            if len(dtmf) == dtmf.maxlen:
                self.dtmf_dropped += 1
            dtmf.append(frame.payload[:1].decode("latin-1"))
        elif frame.kind == KIND_ERROR:
            self.log.warn(
                "{ext}: AudioSocket error message {code}", ext=self.extension, code=frame.payload.hex()
            )

    def _audio(self, frame: Frame, rate: int) -> None:
        counters = self.counters
        if self.call_id is None:
            counters.drop(DropReason.AUDIOSOCKET_NO_UUID)
            return
        if rate != self.rate:
            # New stream or a rate change: resampler state must not carry over.
            self.rate = rate
            self._in = StreamResampler(rate, SAMPLE_RATE)
        if rate != self.reply_rate:
            self._replies.start(rate)
        assert self._in is not None
        samples = self._in.process(from_little_endian(frame.payload))
        counters.packets_in += 1
        counters.bytes_in += len(frame.payload)
        if len(samples):
            try:
                self.on_audio(self, samples)
            except Exception:
                # The pipeline's bug, not bad AudioSocket data.
                counters.drop(DropReason.PIPELINE_ERROR)
                self._pipeline_log.failure("{ext}: pipeline error on AudioSocket audio", ext=self.extension)

    def connection_lost(self, proto: AudioSocketProtocol) -> None:
        if proto is not self.connection:
            return
        if proto.decoder.pending:
            self.counters.drop(DropReason.AUDIOSOCKET_TRUNCATED)
        try:
            self._peer_gone(proto)
        except Exception:
            self.counters.drop(DropReason.ERROR)
            self.log.failure("{ext}: error handling the end of an AudioSocket connection", ext=self.extension)

    def _peer_gone(self, proto: AudioSocketProtocol) -> None:
        had_call = self.call_id is not None
        self._forget()
        if proto.transport is not None:
            proto.transport.loseConnection()
        if had_call:
            self.log.info("{ext}: AudioSocket peer hung up", ext=self.extension)
            self.on_hangup(self)

    def _refuse(self, proto: AudioSocketProtocol) -> None:
        """Close ``proto`` before it became a call (0x00 first, so Asterisk hangs up at once)."""
        self.connection = None
        self._end_of_call()
        transport = proto.transport
        if transport is not None:
            transport.write(HANGUP)
            transport.loseConnection()

    def _forget(self) -> None:
        self.connection = None
        self.call_id = None
        self.rate = None
        self._in = None
        self._replies.stop()
        self._end_of_call()

    def _end_of_call(self) -> None:
        # The digits belong to this call; failures held back by the
        # throttles are reported now so their count is not lost.
        self.dtmf.clear()
        self._error_log.flush()
        self._pipeline_log.flush()
        self._replies.flush_log()

    # -- outbound (ILegTransport) ----------------------------------------

    @property
    def reply_rate(self) -> Optional[int]:
        """
        Sample rate replies are sent at, in Hz (``None``: not sending).
        """
        return self._replies.rate

    @property
    def ready(self) -> bool:
        return self.connection is not None and self.reply_rate is not None

    @property
    def line_open(self) -> bool:
        """
        Asterisk is connected and said which call this is.
        """
        return self.connection is not None and self.call_id is not None

    def send_frame(self, samples: Samples | None, speech: bool | None = None) -> None:
        conn = self.connection
        if conn is None or conn.transport is None:
            return
        self._replies.send(conn.transport, conn.backlog, self.counters, samples, speech)

    def skip(self, ticks: int) -> None:
        # TCP has no media clock to keep in step: Asterisk writes what it
        # gets, so missed ticks are simply not sent.
        pass

    def reset(self) -> None:
        """
        The call ended: hang up (0x00, then close) if Asterisk is still
        connected, and forget the stream.  A persistent endpoint keeps the
        connection and only restarts the stream (rate and resamplers).
        """
        if self.persistent:
            self.rate = None
            self._in = None
            self._replies.stop()
            self._end_of_call()
            if self.call_id is not None:
                self._replies.start(self.first_reply_rate)
            return
        self.hangup()

    def hangup(self) -> None:
        """
        Send 0x00 and close the connection, if any, and forget the stream.
        """
        conn = self.connection
        self._forget()
        if conn is not None and conn.transport is not None:
            try:
                conn.transport.write(HANGUP)
                conn.transport.loseConnection()
            except Exception:
                self.log.failure("{ext}: AudioSocket hangup failed", ext=self.extension)

    def describe(self) -> dict[str, Any]:
        peer = peer_address(self.connection)
        return {
            "kind": self.kind,
            "codec": f"slin@{self.rate}" if self.rate else None,
            "reply_codec": f"slin@{self.reply_rate}" if self.reply_rate else None,
            "local": self.local,
            "remote": peer,
            "call_id": self.call_id,
        }
