"""
The outbound side of one WebSocket media leg across its streams: which
:class:`~xlbridge.transports.websocket_send.MediaSender` is live, when
sending is allowed at all, how BINARY messages and commands reach the
connection, Asterisk's flow control, and the totals that must add up over
every stream of the leg.

Kept apart from :class:`~xlbridge.transports.websocket.WebSocketEndpoint`
(the connection's lifecycle and what comes in) because this is the state
that changes at each stream boundary: a MediaSender lives for one stream
(a MEDIA_START, or a persistent leg's reset), while the leg's counters
live as long as the endpoint.  :class:`OutboundStreams` retires one sender
and starts the next without losing what was counted:

- ``xoff_ms`` grows by what each stream's queue model spent in XOFF, each
  millisecond counted once (the model is replaced per stream);
- :attr:`OutboundStreams.messages_out` is the BINARY messages sent over
  every stream.

**Asterisk keeps time** (PROTOCOLS.md section 10.2), so nothing here is
paced by the egress clock: :meth:`OutboundStreams.frames_wanted` says how
much the live sender's lookahead allows, and nothing while Twisted's
buffer is over its bound (the protocol's ``backpressure``); bytes still in
the kernel count as queued (the owner's ``unsent_bytes``).  MEDIA_XOFF
stops sending until MEDIA_XON; at XON a GET_STATUS resyncs the model with
Asterisk's real queue.  Between streams the queue model is an empty one
that wants nothing.

What it needs of its endpoint (:class:`StreamOwner`) is read when used, so
the endpoint stays the one place that holds the connection and the
control form.  Times are reactor seconds, durations ms.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

from twisted.internet.interfaces import IReactorTime

from xlbridge.events import DropReason, LegCounters
from xlbridge.logthrottle import LogThrottle
from xlbridge.transports.websocket_codec import ControlFormat, MediaStart, command
from xlbridge.transports.websocket_flow import PeerQueue
from xlbridge.transports.websocket_media import MediaFormat
from xlbridge.transports.websocket_send import MediaSender, idle_queue

__all__ = ["OutboundStreams", "StreamOwner"]


class StreamOwner(Protocol):
    """
    What :class:`OutboundStreams` reads of the endpoint that owns it
    (:class:`~xlbridge.transports.websocket.WebSocketEndpoint`).
    """

    #: the leg, for log lines
    extension: str
    #: the live connection (an Autobahn protocol), or ``None``
    connection: Optional[Any]
    #: the form of every command sent (from MEDIA_START)
    control: ControlFormat
    counters: LegCounters
    clock: IReactorTime
    #: most speech queued ahead in Asterisk, ms
    lookahead_ms: int
    #: most filler queued ahead, ms
    filler_lookahead_ms: int
    #: bytes still waiting in the kernel for a transport
    unsent_bytes: Callable[[Any], int]


class OutboundStreams:
    """
    The outbound side of one WebSocket leg, stream after stream.

    :param owner: the endpoint (read live: connection, control form,
        counters, clock, lookaheads, ``unsent_bytes``).
    :param send_log: the endpoint's throttle for failed sends.
    :ivar sender: the live stream's sender, or ``None`` between streams.
    """

    def __init__(self, owner: StreamOwner, send_log: LogThrottle) -> None:
        self.owner = owner
        self.send_log = send_log
        self.sender: Optional[MediaSender] = None
        self._idle = idle_queue(owner.lookahead_ms, owner.filler_lookahead_ms)
        self._xoff_counted = 0  # ms of self.queue's XOFF time already counted
        self._messages_before = 0  # messages sent by earlier streams

    # -- streams -----------------------------------------------------------------

    def begin(self, fmt: MediaFormat, start: MediaStart) -> None:
        """
        A new stream: the old sender is retired (what was queued went with
        it: a reset flushes it), and a fresh one, with a fresh queue model
        and no marks, sends from now on.
        """
        owner = self.owner
        self.retire()
        self.sender = MediaSender(
            owner.extension, fmt, start.optimal_frame_size, start.ptime, owner.counters, owner.clock.seconds,
            self.send_binary, self.send_command, self.send_log, owner.lookahead_ms, owner.filler_lookahead_ms,
        )

    def retire(self) -> None:
        """
        The stream ended: its XOFF time and messages join the totals, and
        nothing is sent until the next :meth:`begin`.
        """
        sender = self.sender
        if sender is not None:
            self._sync_xoff(self.owner.clock.seconds())
            self._messages_before += sender.messages_out
            self.sender = None
        self._xoff_counted = 0

    @property
    def queue(self) -> PeerQueue:
        """
        The model of Asterisk's queue for the live stream (an empty one
        between streams).
        """
        sender = self.sender
        return sender.queue if sender is not None else self._idle

    @property
    def messages_out(self) -> int:
        """
        BINARY messages sent, over every stream.
        """
        sender = self.sender
        return self._messages_before + (sender.messages_out if sender is not None else 0)

    # -- flow control --------------------------------------------------------------

    def mark_processed(self, correlation_id: str, now: float) -> bool:
        """
        MEDIA_MARK_PROCESSED, for the live sender: ``True`` if it was a
        mark we wait for (the owner then reports it).
        """
        sender = self.sender
        return sender is not None and sender.mark_processed(correlation_id, now)

    def xon(self, now: float) -> None:
        """
        MEDIA_XON: sending resumes; XOFF time is counted, and if the queue
        was in XOFF a GET_STATUS learns the real queue.
        """
        was = self.queue.xoff
        self.queue.set_xon(now)
        self._sync_xoff(now)
        if was:
            self.send_command("GET_STATUS")  # learn the real queue

    def _sync_xoff(self, now: float) -> None:
        # counters.xoff_ms grows by what this queue's XOFF time grew since
        # the last sync (the queue is replaced per connection and stream).
        total = int(self.queue.xoff_total(now) * 1000)
        self.owner.counters.xoff_ms += total - self._xoff_counted
        self._xoff_counted = total

    # -- sending -------------------------------------------------------------------

    def frames_wanted(self, ahead: bool) -> int:
        """
        Frames the live sender may send now (``ahead``: under the speech
        lookahead); 0 without a connection or stream, or while Twisted's
        buffer is over its bound.
        """
        owner = self.owner
        conn, sender = owner.connection, self.sender
        if conn is None or sender is None:
            return 0
        if getattr(conn, "backpressure", None) is not None and conn.backpressure.paused:
            return 0
        return sender.frames_wanted(ahead, lambda: owner.unsent_bytes(conn.transport))

    def filler_wanted(self) -> int:
        """
        Filler frames the live sender wants now; 0 as for :meth:`frames_wanted`.
        """
        conn, sender = self.owner.connection, self.sender
        if conn is None or sender is None:
            return 0
        if getattr(conn, "backpressure", None) is not None and conn.backpressure.paused:
            return 0
        return sender.filler_wanted()

    def send_binary(self, data: bytes) -> None:
        """
        One BINARY message on the live connection; raises without one.
        """
        conn = self.owner.connection
        if conn is None:
            raise ConnectionError("not connected")
        conn.sendMessage(data, isBinary=True)

    def send_command(self, name: str, correlation_id: Optional[str] = None) -> bool:
        """
        One command (TEXT, in the stream's control form) on the live
        connection; ``False``, and a failure counted as ``error``, if it
        could not go.
        """
        owner = self.owner
        conn = owner.connection
        if conn is None:
            return False
        try:
            conn.sendMessage(command(name, correlation_id, owner.control).encode("utf-8"), isBinary=False)
        except Exception as e:
            owner.counters.drop(DropReason.ERROR)
            self.send_log.warn("{ext}: WebSocket command {name} failed: {err}", ext=owner.extension,
                               name=name, err=e)
            return False
        return True
