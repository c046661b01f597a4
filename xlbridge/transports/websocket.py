"""
WebSocket legs: Asterisk's chan_websocket (PROTOCOLS.md section 10).

Design notes:

- One :class:`WebSocketEndpoint` per leg, fed by the thin Autobahn
  protocols of :mod:`xlbridge.transports.websocket_protocol`, in either
  direction: xlbridge dials Asterisk's ``/media/<connection_id>``
  (:meth:`WebSocketEndpoint.client_factory`, the ARI controller's legs) or
  Asterisk dials xlbridge (:meth:`WebSocketEndpoint.server_factory`, fixed
  extensions and ``Dial(WebSocket/<id>)``).  One connection at a time; a
  second one is refused (409) and counted as ``websocket_busy``.
- MEDIA_START (the first TEXT message) names the format, frame size and
  ptime, and its own form (plain text or JSON) sets the form of every
  command we send.  The leg is :attr:`ready` from then on.  A format the
  bridge cannot carry hangs up, counted as ``websocket_format``.
- Inbound BINARY audio is decoded, resampled to internal 16 kHz once, and
  handed to ``on_audio``, as an AudioSocket leg does; TEXT control events
  are dispatched (:mod:`xlbridge.transports.websocket_inbound`).
- Outbound, **Asterisk keeps time**: it queues what we send and plays one
  frame per ptime.  So this transport is not paced by the egress clock
  (:class:`~xlbridge.interfaces.IPeerPacedTransport`): the leg sends what
  :meth:`frames_wanted` allows.  The
  :class:`~xlbridge.transports.websocket_outbound.OutboundStreams` (gating,
  writing, XOFF/XON, totals across streams) and its
  :class:`~xlbridge.transports.websocket_send.MediaSender` (one per stream:
  encoding, lookahead, FLUSH_MEDIA, marks) hold how.
  MEDIA_MARK_PROCESSED goes to the sender, then to ``on_mark``.
- Hangup: Asterisk's CLOSE (or a dropped connection) calls ``on_hangup``;
  :meth:`hangup` sends HANGUP then CLOSE, and drops TCP if Asterisk has not
  closed in time (:mod:`xlbridge.transports.websocket_close`).
  :meth:`reset` hangs up, or for a *persistent* endpoint only flushes and
  restarts the stream.
- Nothing raises into the reactor: a failure is counted (``error``, or
  ``pipeline_error`` for ``on_audio``) and logged through a
  :class:`~xlbridge.logthrottle.LogThrottle`.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Optional

from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from xlbridge.audio.frame import Samples
from xlbridge.events import DropReason, LegCounters
from xlbridge.interfaces import IPeerPacedTransport
from xlbridge.logthrottle import LogThrottle
from xlbridge.transports import websocket_protocol as wsp
from xlbridge.transports.admission import MediaAdmission
from xlbridge.transports.backlog import peer_address
from xlbridge.transports.websocket_codec import ControlFormat, MediaStart
from xlbridge.transports.websocket_close import CloseHandshake
from xlbridge.transports.websocket_flow import PeerQueue
from xlbridge.transports.websocket_inbound import InboundMedia
from xlbridge.transports.websocket_media import MediaFormat, media_format
from xlbridge.transports.websocket_outbound import OutboundStreams
from xlbridge.transports.websocket_send import MediaSender

#: DTMF digits kept per connection (see :attr:`WebSocketEndpoint.dtmf`).
DTMF_HISTORY = 32


@implementer(IPeerPacedTransport)
class WebSocketEndpoint:
    """
    One WebSocket media leg.

    :param name: the extension (or ARI channel) this leg serves.
    :param on_audio: called with ``(endpoint, samples)`` for each inbound
        audio message, as internal audio.
    :param on_hangup: called with the endpoint when Asterisk closes or the
        connection drops after MEDIA_START.
    :param on_start: called with the endpoint at MEDIA_START (the call can
        start: :attr:`call_id` is known).
    :param on_mark: called with ``(endpoint, correlation_id, time)`` when
        Asterisk reports a mark played (MEDIA_MARK_PROCESSED).
    :param clock: time source of the queue model, timers and log throttles.
    :param lookahead_ms: most speech queued ahead in Asterisk.
    :param filler_lookahead_ms: most filler queued ahead.
    :param persistent: the connection outlives calls (ARI legs).
    :param credentials: ``(user, password)`` Asterisk must send (HTTP Basic)
        when it dials us; ``None`` accepts any.
    :param admission: the bridge's new-call bound, asked at MEDIA_START
        (``None``: no bound, as for ARI legs, whose calls the controller
        starts); a refused stream is counted as ``call_rate`` and closed.
    """

    kind = "websocket"
    log = Logger()

    def __init__(
        self,
        name: str,
        on_audio: Callable[["WebSocketEndpoint", Samples], None],
        clock: IReactorTime,
        on_hangup: Callable[["WebSocketEndpoint"], None] = lambda e: None,
        on_start: Callable[["WebSocketEndpoint"], None] = lambda e: None,
        on_mark: Callable[["WebSocketEndpoint", str, float], None] = lambda e, c, t: None,
        lookahead_ms: int = 200,
        filler_lookahead_ms: int = 40,
        persistent: bool = False,
        credentials: Optional[tuple[str, str]] = None,
        admission: Optional[MediaAdmission] = None,
    ) -> None:
        self.extension = name
        self.admission = admission
        self.on_audio = on_audio
        self.on_hangup = on_hangup
        self.on_start = on_start
        self.on_mark = on_mark
        self.clock = clock
        self.lookahead_ms = lookahead_ms
        self.filler_lookahead_ms = filler_lookahead_ms
        self.persistent = persistent
        self.credentials = credentials
        self.counters = LegCounters()
        #: the live connection (an Autobahn protocol), or ``None``
        self.connection: Optional[Any] = None
        #: MEDIA_START of the live connection
        self.start: Optional[MediaStart] = None
        self.format: Optional[MediaFormat] = None
        self.control = ControlFormat.PLAIN
        self.dtmf: deque[str] = deque(maxlen=DTMF_HISTORY)
        #: ``host:port`` we listen on (set by the listener), for status pages
        self.local: Optional[str] = None
        #: how to read bytes still waiting in the kernel (tests replace it)
        self.unsent_bytes: Callable[[Any], int] = wsp.unsent_bytes
        self._error_log = LogThrottle(self.log, clock)
        self._pipeline_log = LogThrottle(self.log, clock)
        self._send_log = LogThrottle(self.log, clock)
        self._control_log = LogThrottle(self.log, clock)
        self._busy_log = LogThrottle(self.log, clock)
        #: what goes out, stream after stream
        self.outbound = OutboundStreams(self, self._send_log)
        #: what comes in (audio, control events)
        self.inbound = InboundMedia(self, self._media_start, self._error_log, self._pipeline_log, self._control_log)
        self._close = CloseHandshake(name, clock, self.log)

    # -- connecting ----------------------------------------------------------

    def client_factory(self, url: str, reactor: Any) -> Any:
        """
        An Autobahn factory dialling Asterisk's ``url``
        (``ws://host:port/media/<connection_id>``) for this leg.
        """
        return wsp.client_factory(self, url, reactor)

    def server_factory(self, reactor: Any) -> Any:
        """
        An Autobahn factory for the port Asterisk dials for this leg.
        """
        return wsp.server_factory(self, reactor)

    def ws_request(self, proto: Any, request: ConnectionRequest) -> Optional[str]:
        """
        Asterisk's upgrade request (we are the server): refuse a second
        connection (409) or bad credentials (401), else accept.
        """
        if self.connection is not None:
            self.counters.drop(DropReason.WEBSOCKET_BUSY)
            self._busy_log.warn("{ext}: refused a second WebSocket connection", ext=self.extension)
            raise ConnectionDeny(409, "Conflict")
        return wsp.check_request(request, self.credentials)

    def ws_connect_failed(self, reason: Failure) -> None:
        self.log.warn("{ext}: cannot connect to Asterisk: {reason}", ext=self.extension,
                      reason=reason.getErrorMessage())

    def ws_open(self, proto: Any) -> None:
        if self.connection is not None:
            # Dialled twice by an owner: keep the first.
            self.counters.drop(DropReason.WEBSOCKET_BUSY)
            proto.dropConnection(abort=True)
            return
        self.connection = proto

    def adopt(self, proto: Any, media_start: bytes) -> bool:
        """
        Take over a connection someone else opened and held until its
        MEDIA_START said whose it is (the ARI controller's router and
        dialler, :mod:`xlbridge.ari.websocket`): from now on ``proto``
        forwards here, as if it had opened here and ``media_start`` (its
        first TEXT message, not yet handled) had just arrived.

        :return: ``False``, counted as ``websocket_busy``, while another
            connection is live; the caller then closes ``proto``.
        """
        if self.connection is not None:
            self.counters.drop(DropReason.WEBSOCKET_BUSY)
            return False
        proto.endpoint = self
        self.ws_open(proto)
        self.ws_message(proto, media_start, False)
        return True

    # -- inbound ---------------------------------------------------------------

    def ws_message(self, proto: Any, payload: bytes, is_binary: bool) -> None:
        if proto is self.connection:
            self.inbound.message(payload, is_binary)

    def _media_start(self, start: MediaStart) -> None:
        if self.start is not None:
            self.counters.drop(DropReason.WEBSOCKET_MALFORMED)
            return
        try:
            fmt = media_format(start.format)
            if start.optimal_frame_size <= 0 or start.ptime <= 0:
                raise ValueError(f"passthrough (optimal_frame_size {start.optimal_frame_size}) is not supported")
        except ValueError as e:
            self.counters.drop(DropReason.WEBSOCKET_FORMAT)
            self.log.error("{ext}: cannot carry this WebSocket channel: {error}", ext=self.extension, error=e)
            self.hangup()
            return
        admission = self.admission
        if admission is not None and not admission.new_call("websocket", self.extension):
            self.counters.drop(DropReason.CALL_RATE)
            self.hangup()
            return
        self.start, self.format, self.control = start, fmt, start.control
        self._stream_state()
        self.log.info("{ext}: WebSocket channel {channel} ({media_format}, {control})", ext=self.extension,
                      channel=start.channel, media_format=start.format, control=start.control.value)
        self.on_start(self)

    def _stream_state(self) -> None:
        # A new stream: fresh resamplers, a fresh sender (queue model, no marks).
        fmt, start = self.format, self.start
        assert fmt is not None and start is not None
        self.inbound.begin(fmt)
        self.outbound.begin(fmt, start)

    @property
    def sender(self) -> Optional[MediaSender]:
        """
        What goes out, for the live stream (from its MEDIA_START).
        """
        return self.outbound.sender

    @property
    def queue(self) -> PeerQueue:
        """
        The model of Asterisk's queue for the live stream (an empty one
        before MEDIA_START).
        """
        return self.outbound.queue

    @property
    def messages_out(self) -> int:
        """
        BINARY messages sent, over every stream of this endpoint.
        """
        return self.outbound.messages_out

    def ws_close(self, proto: Any, was_clean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if self._close.closed(proto):
            return  # the end of our own hangup: no drop needed any more
        if proto is not self.connection:
            return
        try:
            had_call = self.start is not None
            self._forget()
            if had_call:
                self.log.info("{ext}: WebSocket peer hung up ({code})", ext=self.extension, code=code)
                self.on_hangup(self)
        except Exception:
            self.counters.drop(DropReason.ERROR)
            self.log.failure("{ext}: error handling the end of a WebSocket connection", ext=self.extension)

    def _forget(self) -> None:
        self.outbound.retire()
        self.connection = None
        self.start = self.format = None
        self.control = ControlFormat.PLAIN
        self.inbound.end()
        self.dtmf.clear()
        self._close.cancel_timer()
        for throttle in (self._error_log, self._pipeline_log, self._send_log, self._control_log):
            throttle.flush()

    # -- outbound (IPeerPacedTransport) ------------------------------------------

    @property
    def ready(self) -> bool:
        return self.connection is not None and self.format is not None

    @property
    def line_open(self) -> bool:
        """
        Asterisk is connected and said which channel this is.
        """
        return self.ready

    @property
    def call_id(self) -> Optional[str]:
        """
        The channel's unique id (MEDIA_START ``channel_id``), or its name
        for an Asterisk too old to send one; ``None`` before MEDIA_START.
        """
        start = self.start
        if start is None:
            return None
        return start.channel_id or start.channel

    def frames_wanted(self, ahead: bool = True) -> int:
        return self.outbound.frames_wanted(ahead)

    def filler_wanted(self) -> int:
        return self.outbound.filler_wanted()

    def send_frame(self, samples: Optional[Samples], speech: Optional[bool] = None) -> None:
        if speech is None:
            speech = samples is not None
        self.send_frames([samples], speech)

    def send_frames(self, frames: list[Optional[Samples]], speech: bool, ahead: Optional[bool] = None) -> None:
        sender = self.sender
        if sender is None or self.connection is None or not frames:
            return
        sender.send_frames(frames, speech, self.frames_wanted(speech if ahead is None else ahead))

    def skip(self, ticks: int) -> None:
        # Asterisk keeps time: a missed tick is only a shorter queue, which
        # the next fill tops up.
        pass

    def flush(self) -> None:
        """
        Drop what is queued in Asterisk and not yet played (FLUSH_MEDIA);
        the estimated audio dropped is counted in ``flushed_bytes``, and
        pending marks die with it.
        """
        if self.ready and self.sender is not None:
            self.sender.flush()

    def mark(
        self, correlation_id: Optional[str] = None, then: Optional[Callable[[float], None]] = None
    ) -> Optional[str]:
        """
        Send MARK_MEDIA behind everything sent so far; ``then(time)`` (if
        given) and ``on_mark`` are called when Asterisk has played it.  A
        flush kills pending marks: their ``then`` is never called.  Returns
        the id used (``m<n>`` unless given), or ``None`` if not connected.
        """
        if not self.ready or self.sender is None:
            return None
        return self.sender.mark(correlation_id, then)

    def reset(self) -> None:
        """
        The call ended: hang up.  A persistent endpoint keeps the
        connection, flushes what is queued and restarts the stream.
        """
        if self.persistent and self.ready:
            self.flush()
            self._stream_state()
            self.dtmf.clear()
            return
        self.hangup()

    def hangup(self) -> None:
        """
        Send HANGUP and close (1000); TCP is dropped if Asterisk has not
        closed within :data:`~xlbridge.transports.websocket_close.CLOSE_TIMEOUT`.
        The stream is forgotten; the close that follows does not call
        ``on_hangup``.
        """
        conn = self.connection
        if conn is None:
            return
        self.outbound.send_command("HANGUP")
        self._forget()
        self._close.close(conn)

    def describe(self) -> dict[str, Any]:
        peer = peer_address(self.connection)
        start = self.start
        now = self.clock.seconds()
        return {
            "kind": self.kind,
            "codec": start.format if start else None,
            "control": self.control.value if start else None,
            "local": self.local,
            "remote": peer,
            "call_id": self.call_id,
            "channel": start.channel if start else None,
            "queued_ms": round(self.queue.queued_ms(now), 1),
            "lookahead_ms": self.lookahead_ms,
            "filler_lookahead_ms": self.filler_lookahead_ms,
            "xoff": self.queue.xoff,
            "marks_pending": self.sender.marks_pending if self.sender is not None else 0,
            "messages_out": self.messages_out,
        }
