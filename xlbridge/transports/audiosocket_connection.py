"""
One TCP connection from Asterisk's AudioSocket, as a Twisted protocol.

Why a module of its own: the connection is a thin shell shared by two
owners.  A fixed extension's
:class:`~xlbridge.transports.audiosocket.AudioSocketEndpoint` builds it for
its own listening port; the ARI controller's router
(:mod:`xlbridge.ari.audiosocket`, one port for many legs) builds a subclass
of it and hands it to an endpoint once the UUID came.  Keeping it apart
lets both use it without either importing the other's state machine.

What it holds: the connection's sans-I/O
:class:`~xlbridge.transports.audiosocket_codec.FrameDecoder` (AudioSocket
messages: kind byte, big-endian 16-bit length, payload; audio payloads
little-endian) and, once
connected, its :class:`~xlbridge.transports.backlog.SendBacklog`.  On
connecting it asks for ``TCP_NODELAY`` and a small kernel send buffer
(:func:`~xlbridge.transports.backlog.tune`), so nothing waits long in the
connection.  Everything else is forwarded to its endpoint.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from xlbridge.transports.audiosocket_codec import FrameDecoder
from xlbridge.transports.backlog import SendBacklog, tune

__all__ = ["AudioSocketProtocol"]


class AudioSocketProtocol(Protocol):
    """
    One TCP connection from Asterisk; forwards everything to its endpoint.
    """

    def __init__(self, endpoint: Any) -> None:
        #: an :class:`AudioSocketEndpoint`, or a router until the UUID came
        #: (:mod:`xlbridge.ari.audiosocket`): anything with
        #: ``connection_made``, ``data_received`` and ``connection_lost``
        #: taking this protocol; ``Any`` because the router's methods take
        #: its own subclass of it.
        self.endpoint = endpoint
        self.decoder = FrameDecoder()
        #: what waits unsent on this connection (set once connected)
        self.backlog: Optional[SendBacklog] = None

    def connectionMade(self) -> None:
        tune(self.transport)
        self.backlog = SendBacklog(self.transport)
        self.endpoint.connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        self.endpoint.data_received(self, data)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.endpoint.connection_lost(self)
