"""
WebSocket connections in memory, for tests: an Autobahn server factory and
client factory joined by ``twisted.test.iosim`` transports, pumped by hand,
with time on a test clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.test import iosim

SERVER = IPv4Address("TCP", "127.0.0.1", 8088)
CLIENT = IPv4Address("TCP", "127.0.0.1", 50001)


class Link:
    """
    One connection: ``server`` and ``client`` protocols and the pump that
    moves bytes between them.
    """

    def __init__(self, server: Any, client: Any, pump: iosim.IOPump) -> None:
        self.server = server
        self.client = client
        self.pump = pump

    def flush(self) -> None:
        """Deliver everything written so far, both ways, until quiet."""
        self.pump.flush()

    def pending_to_server(self) -> int:
        """Bytes the client wrote that the server has not received."""
        return sum(len(b) for b in self.pump.clientIO.stream)


def connect(server_factory: Any, client_factory: Any, clock: Clock) -> Link:
    """
    Connect a protocol of ``client_factory`` to one of ``server_factory``
    and complete the opening handshake.
    """
    server = server_factory.buildProtocol(CLIENT)
    client = client_factory.buildProtocol(SERVER)
    st = iosim.FakeTransport(server, isServer=True, hostAddress=SERVER, peerAddress=CLIENT)
    ct = iosim.FakeTransport(client, isServer=False, hostAddress=CLIENT, peerAddress=SERVER)
    pump = iosim.connect(server, st, client, ct, greet=True, clock=clock)
    return Link(server, client, pump)


def tick(link: Link, clock: Clock, n: int = 1, step: float = 0.02) -> None:
    """``n`` steps of ``step`` seconds, delivering traffic after each."""
    for _ in range(n):
        clock.advance(step)
        link.flush()
