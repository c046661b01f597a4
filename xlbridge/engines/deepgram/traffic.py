"""
Deepgram live ASR, the traffic of the open socket: what goes over the
current WebSocket of a
:class:`~xlbridge.engines.deepgram.connection.DeepgramConnection` apart from
opening and closing it.  Audio and text messages out (counted), the ``/v1``
keepalive, and the liveness ping that finds a half-open connection.

Split from :mod:`xlbridge.engines.deepgram.connection` so that the
connection reads as the socket's lifecycle (connect, time out, fail, back
off, reconnect, shut down) and this module as what flows while a socket is
open.  The connection says which socket is current (a callable, read at
each send) and when one opens and ends; :class:`SocketTraffic` never
connects, never reports to the owner and never decides what a close means.
When the liveness check drops a socket, the connection's ``ws_close``
handles it as any drop and asks :attr:`SocketTraffic.dead_after` why.

Design notes
------------

* **Keepalive** (``/v1`` only): a ``KeepAlive`` text frame after
  ``keepalive_s`` without sending anything (trap T4),
  :class:`~xlbridge.engines.deepgram.keepalive.KeepAliveTimer`.  Flux gets
  none: it would kill the stream; the liveness pings keep it open.
* **Liveness.**  A half-open connection (the server or the path gone with
  no FIN or RST: a crashed host, a NAT that forgot us, a blackholing
  middlebox) never closes by itself: TCP keeps buffering the audio we
  write, nothing comes back, and without a check the leg would neither
  fall back nor reconnect (measured with ``reliability/faults.py``,
  ``dg-blackhole``).  So after :data:`LIVENESS_IDLE_S` without any message
  from the server a WebSocket ping goes out (Deepgram answers pings, as any
  RFC 6455 server must), and if neither a pong nor a message arrives
  within :data:`LIVENESS_TIMEOUT_S` the socket is dropped and the outage is
  handled as any drop: ``EngineDown``, backoff, reconnect, replay.  A
  quiet but healthy server costs one ping per :data:`LIVENESS_IDLE_S`.  Not
  after ``CloseStream``: ``finish_timeout_s`` bounds that wait.  The timer
  is :class:`xlbridge.liveness.Liveness`, shared with the ARI events socket.
* **Audio** is little-endian linear16, one binary message per packet, sent
  as given; the counters are in bytes and messages.
"""

from __future__ import annotations

from typing import Callable, Optional

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xlbridge.engines.deepgram.dialect import Dialect
from xlbridge.engines.deepgram.keepalive import KeepAliveTimer
from xlbridge.engines.deepgram.protocol import DeepgramClientProtocol
from xlbridge.engines.wsframe import send_binary
from xlbridge.liveness import Liveness

__all__ = ["LIVENESS_IDLE_S", "LIVENESS_TIMEOUT_S", "SocketTraffic"]

_WS_OPEN = WebSocketProtocol.STATE_OPEN

#: Seconds without any message from the server before a ping goes out.
LIVENESS_IDLE_S = 2.0
#: Seconds a ping may go unanswered (no pong, no message) before the
#: connection is judged dead and dropped.  Generous on purpose: a false
#: alarm costs a reconnect and a replay.  (On a 2-core machine loaded to 8
#: runnable processes a CPU-starved local fake missed 2 s often and 4 s
#: now and then; a real service is not starved by our machine.)
LIVENESS_TIMEOUT_S = 4.0


class SocketTraffic:
    """
    The messages, keepalives and liveness pings of one Deepgram
    connection's open socket, one socket at a time.

    :param clock: the keepalive and liveness timers use it.
    :param dialect: the keepalive message (or none) and the end messages.
    :param keepalive_s: seconds without sending before a ``KeepAlive``.
    :param socket: returns the current WebSocket, or ``None``.
    :param log: the connection's logger, so log lines keep its namespace.
    :param call_id: for log lines.
    :param extension: for log lines.

    :ivar open: the WebSocket is open (set by :meth:`opened`, cleared by
        :meth:`ended` or by the connection).
    :ivar close_sent: ``CloseStream`` went out on the open socket.
    :ivar dead: the liveness check dropped the current socket.
    :ivar sent_bytes: audio bytes sent.
    :ivar messages_out: binary and text messages sent.
    :ivar liveness: the ping timer.
    """

    def __init__(
        self,
        clock: IReactorTime,
        dialect: Dialect,
        keepalive_s: float,
        socket: Callable[[], Optional[DeepgramClientProtocol]],
        log: Logger,
        call_id: str = "",
        extension: str = "",
    ) -> None:
        self.dialect = dialect
        self.log = log
        self.call_id = call_id
        self.extension = extension
        self._socket = socket
        self.open = False
        self.close_sent = False
        self.dead = False
        self.sent_bytes = 0
        self.messages_out = 0
        self._keepalive: Optional[KeepAliveTimer] = None
        if dialect.keepalive is not None:
            self._keepalive = KeepAliveTimer(clock, keepalive_s, self._send_keepalive)
        self.liveness = Liveness(clock, self._ping, self._peer_dead,
                                 idle=LIVENESS_IDLE_S, timeout=LIVENESS_TIMEOUT_S)

    @property
    def keepalives(self) -> int:
        """``KeepAlive`` messages sent (always 0 on Flux)."""
        return self._keepalive.sent if self._keepalive is not None else 0

    @property
    def dead_after(self) -> Optional[float]:
        """
        Seconds the server had been silent when the liveness check dropped
        the socket, or ``None`` if it did not.
        """
        return LIVENESS_IDLE_S + LIVENESS_TIMEOUT_S if self.dead else None

    def opened(self) -> None:
        """A socket opened: nothing sent on it yet, not dead; the idle wait starts now."""
        self.open = True
        self.close_sent = False
        self.dead = False
        if self._keepalive is not None:
            self._keepalive.touched()

    def start(self) -> None:
        """
        Arm the keepalive and the liveness watch, after the owner heard of
        the open, unless it ended the stream or closed meanwhile.
        """
        if self.open and not self.close_sent:
            if self._keepalive is not None:
                self._keepalive.start()
            self.liveness.start()

    def stop(self) -> None:
        """Stop the keepalive and the liveness watch (no-op if stopped)."""
        if self._keepalive is not None:
            self._keepalive.stop()
        self.liveness.stop()

    def ended(self) -> None:
        """The socket closed or was dropped: not open, no timers."""
        self.open = False
        self.stop()

    def send_audio(self, data: bytes) -> bool:
        """
        Send one binary message of audio (little-endian linear16).

        :return: whether it went out (not if empty or not open).
        """
        if not data or not self.open or not self.writable():
            return False
        proto = self._socket()
        assert proto is not None
        send_binary(proto, data)
        self.sent_bytes += len(data)
        self.messages_out += 1
        if self._keepalive is not None:
            self._keepalive.touched()
        return True

    def end_stream(self) -> None:
        """Send the dialect's end messages; no keepalives or pings after this."""
        for text in self.dialect.end_messages:
            self.send_text(text)
        self.close_sent = True
        self.stop()

    def send_text(self, text: str) -> bool:
        """
        Send one text message (UTF-8) if the socket can take it.

        :return: whether it went out.
        """
        if not self.writable():
            return False
        proto = self._socket()
        assert proto is not None
        proto.sendMessage(text.encode("utf-8"), isBinary=False)
        self.messages_out += 1
        if self._keepalive is not None:
            self._keepalive.touched()
        return True

    def writable(self) -> bool:
        """
        The socket can take a message now.  Autobahn leaves its OPEN state
        (a close frame came in, or we dropped the socket) before it reports
        the close: until ``ws_close`` arrives ``sendMessage`` would raise
        ``Disconnected`` into whoever fed the audio (the RTP receive path,
        the gap filler's timer).  Audio not sent stays in the spool and is
        replayed on the next connection.
        """
        proto = self._socket()
        return proto is not None and getattr(proto, "state", _WS_OPEN) == _WS_OPEN

    def _send_keepalive(self) -> bool:
        """The keepalive timer's send: not after ``CloseStream``, nor on a closing socket."""
        if not self.open or self.close_sent or self.dialect.keepalive is None:
            return False
        return self.send_text(self.dialect.keepalive)

    def _ping(self) -> None:
        proto = self._socket()
        if proto is not None:
            proto.sendPing()

    def _peer_dead(self, silent_s: float) -> None:
        """The liveness ping went unanswered: drop the socket (``ws_close`` reports it)."""
        proto = self._socket()
        if proto is None or not self.open or self.close_sent:
            return
        # One warning per drop is enough: ws_close -> _failed logs the
        # outage with its cause and the retry; Autobahn's own line (it
        # warns on every unclean drop) is told why.
        self.log.debug("deepgram: no answer to a ping in {timeout:g} s; dropping the connection "
                       "call={call_id} ext={ext}", timeout=LIVENESS_TIMEOUT_S,
                       call_id=self.call_id, ext=self.extension)
        self.dead = True
        proto.wasNotCleanReason = f"no answer to a liveness ping in {LIVENESS_TIMEOUT_S:g} s"
        proto.dropConnection(abort=True)
