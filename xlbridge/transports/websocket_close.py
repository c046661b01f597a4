"""
Our side of closing a WebSocket media connection: after HANGUP, a CLOSE
(1000), and TCP dropped if Asterisk has not answered it within
:data:`CLOSE_TIMEOUT` seconds.

Kept apart from :class:`~xlbridge.transports.websocket.WebSocketEndpoint`
because it outlives the connection it closes: the endpoint forgets the
stream and the connection at once (so a new connection may come), while
:class:`CloseHandshake` still waits for the old one's close, so that the
endpoint can tell that close (the end of its own hangup, not Asterisk
hanging up) from a peer's and not call ``on_hangup`` for it.

Times are seconds of the injected ``IReactorTime``.  Nothing raises into
the reactor: a failure to close or to drop is logged on the endpoint's
logger.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["CLOSE_TIMEOUT", "CloseHandshake"]

#: Seconds Asterisk gets to answer our CLOSE before TCP is dropped.
CLOSE_TIMEOUT = 2.0


class CloseHandshake:
    """
    The connection one endpoint hung up, until it closes, and the timer
    that drops it if it does not.

    :param name: the leg, for log lines.
    :param clock: the timer's time source.
    :param log: the endpoint's logger (log lines keep its namespace).
    :ivar closing: the connection we hung up, until it closes (or is
        dropped); ``None`` otherwise.
    """

    def __init__(self, name: str, clock: IReactorTime, log: Logger) -> None:
        self.name = name
        self.clock = clock
        self.log = log
        self.closing: Optional[Any] = None
        self._timer: Optional[IDelayedCall] = None

    def close(self, conn: Any) -> None:
        """
        Send CLOSE (1000) on ``conn`` (an Autobahn protocol) and drop its
        TCP connection if it has not closed within :data:`CLOSE_TIMEOUT`.
        """
        try:
            self.closing = conn
            self._timer = self.clock.callLater(CLOSE_TIMEOUT, self._drop, conn)
            conn.sendClose(1000)
        except Exception:
            self.log.failure("{ext}: WebSocket hangup failed", ext=self.name)

    def closed(self, proto: Any) -> bool:
        """
        ``proto`` closed: if it is the one we hung up, stop waiting for it
        and return ``True`` (the end of our own hangup, no drop needed any
        more); else ``False``.
        """
        if proto is not self.closing:
            return False
        self.closing = None
        self.cancel_timer()
        return True

    def cancel_timer(self) -> None:
        """
        Cancel the pending drop, if any (:attr:`closing` is kept: its close
        is still recognised when it comes).
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _drop(self, conn: Any) -> None:
        self._timer = None
        self.closing = None
        try:
            conn.dropConnection(abort=True)
        except Exception:
            self.log.failure("{ext}: dropping the WebSocket connection failed", ext=self.name)
