"""
Test doubles that ship with xlbridge, for its own tests and for embedders.

:class:`MemoryUDPReactor` is a ``MemoryReactorClock`` that also implements
``IReactorUDP``: ``listenUDP`` returns a :class:`MemoryDatagramPort` that
records every datagram written and lets a test deliver datagrams to the
protocol.  Time moves only when the test calls ``advance``/``pump``, so a
whole bridge (ports, egress clock, calls) runs deterministically with no
sockets.  (Twisted's own ``MemoryReactor`` has no ``listenUDP``.)  Like a
real UDP port, a memory port has a ``socket`` whose ``sendto`` the RTP
endpoint's hot path calls directly (see
:class:`~xlbridge.transports.rtp.RTPEndpoint`), so tests run the same send
branch as production; each :class:`Sent` says which way it went
(``MemoryUDPReactor(datagram_sockets=False)`` gives ports without one).

:class:`MemoryNetReactor` adds in-memory TCP for AudioSocket legs:
``listenTCP`` returns a :class:`MemoryStreamPort`, and
:meth:`MemoryNetReactor.connect` opens a connection to it as Asterisk would,
returning a :class:`MemoryStream` the test writes to and reads from.

:func:`pump_ticks` advances a clock by whole 20 ms ticks without float
drift.  The engine doubles (:class:`~xlbridge.testing_engines.ManualMT`,
:class:`~xlbridge.testing_engines.ManualTTS`,
:class:`~xlbridge.testing_engines.ScriptedASRFactory`) are in
:mod:`xlbridge.testing_engines`.
"""

from __future__ import annotations

from typing import Optional

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IListeningPort, IProtocol, IReactorTCP, IReactorUDP, IUDPTransport
from twisted.internet.protocol import AbstractDatagramProtocol, Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

Address = tuple[str, int]


@attrs.frozen
class Sent:
    """
    One datagram written by a protocol.

    :ivar via: ``"sendto"`` if it went through the port's ``socket`` (the
        production hot path), ``"write"`` if through ``transport.write``.
    """

    data: bytes
    addr: Address
    time: float
    via: str = "write"


class MemoryDatagramSocket:
    """
    The ``socket`` of a :class:`MemoryDatagramPort`: ``sendto`` records the
    datagram on the port, failing as its ``write`` would.
    """

    def __init__(self, port: "MemoryDatagramPort") -> None:
        self.port = port

    def sendto(self, data: bytes, addr: Address) -> int:
        """
        Send ``data`` to ``addr``; returns the bytes sent, as
        ``socket.sendto`` does.
        """
        self.port.record(data, addr, "sendto")
        return len(data)


@implementer(IUDPTransport, IListeningPort)
class MemoryDatagramPort:
    """
    An in-memory UDP port bound to ``protocol``.

    :ivar sent: every datagram written, in order.
    :ivar fail_with: if set, ``write`` and ``socket.sendto`` raise it (to
        test error handling).
    :ivar socket: what a real port's ``socket`` offers for sending
        (``sendto``), or ``None`` for a port without one.
    :ivar maxPacketSize: bytes :meth:`deliver` hands over per datagram (the
        rest is cut, as a real port's ``recvfrom`` cuts it); a protocol may
        change it, as it may on a real port.
    """

    def __init__(
        self,
        reactor: "MemoryUDPReactor",
        port: int,
        protocol: AbstractDatagramProtocol,
        interface: str,
        with_socket: bool = True,
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.sent: list[Sent] = []
        self.listening = True
        self.fail_with: Optional[Exception] = None
        self.maxPacketSize = 8192
        self.socket: Optional[MemoryDatagramSocket] = MemoryDatagramSocket(self) if with_socket else None

    def startListening(self) -> None:
        self.protocol.makeConnection(self)

    def write(self, packet: bytes, addr: Optional[Address] = None) -> None:
        self.record(packet, addr, "write")

    def record(self, packet: bytes, addr: Optional[Address], via: str) -> None:
        """
        What ``write`` and ``socket.sendto`` do: fail if the port is closed
        or :attr:`fail_with` is set, else append to :attr:`sent`.
        """
        if not self.listening:
            raise RuntimeError("write on a closed port")
        if self.fail_with is not None:
            raise self.fail_with
        assert addr is not None, "unconnected UDP write needs an address"
        self.sent.append(Sent(packet, addr, self.reactor.seconds(), via))

    def deliver(self, data: bytes, addr: Address) -> None:
        """
        Hand ``data`` to the protocol as if it came from ``addr``, cut to
        :attr:`maxPacketSize` bytes as ``recvfrom`` on a real port would.
        """
        self.protocol.datagramReceived(data[: self.maxPacketSize], addr)

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", self.interface or "0.0.0.0", self.port)

    def stopListening(self) -> Deferred[None]:
        if self.listening:
            self.listening = False
            self.protocol.doStop()
        return succeed(None)

    loseConnection = stopListening

    def connect(self, host: str, port: int) -> None:
        raise NotImplementedError()

    def getPeer(self) -> None:
        return None

    def setBroadcastAllowed(self, enabled: bool) -> None:
        pass

    def getBroadcastAllowed(self) -> bool:
        return False

    def take(self) -> list[Sent]:
        """
        Return and forget what was sent so far.
        """
        out, self.sent = self.sent, []
        return out


@implementer(IReactorUDP)
class MemoryUDPReactor(MemoryReactorClock):
    """
    A memory reactor with a fake clock and in-memory UDP.

    :param datagram_sockets: give each port a ``socket`` (as real ports
        have); ``False`` makes protocols fall back to ``transport.write``.
    :ivar udp: listening ports by port number.
    """

    def __init__(self, datagram_sockets: bool = True) -> None:
        super().__init__()
        self.udp: dict[int, MemoryDatagramPort] = {}
        self.datagram_sockets = datagram_sockets
        self._next_port = 40000

    def listenUDP(
        self, port: int, protocol: AbstractDatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> MemoryDatagramPort:
        if port == 0:
            while self._next_port in self.udp:
                self._next_port += 1
            port = self._next_port
        if port in self.udp and self.udp[port].listening:
            from twisted.internet.error import CannotListenError

            raise CannotListenError(interface, port, OSError("address in use"))
        p = MemoryDatagramPort(self, port, protocol, interface, self.datagram_sockets)
        p.maxPacketSize = maxPacketSize
        self.udp[port] = p
        p.startListening()
        return p


class MemoryStream(StringTransport):
    """
    The server side of one in-memory TCP connection.

    The test plays the client: :meth:`send` delivers bytes to the server's
    protocol, :meth:`take` returns what the server wrote, :meth:`close`
    closes from the client side.  When the server calls
    ``loseConnection``, ``connectionLost`` follows on the next reactor turn
    (``clock.advance(0)``), as with a real socket.

    :ivar closed: ``connectionLost`` was delivered.
    """

    def __init__(self, reactor: "MemoryNetReactor", protocol: IProtocol, host: IPv4Address, peer: IPv4Address) -> None:
        super().__init__(hostAddress=host, peerAddress=peer)
        self.reactor = reactor
        self.protocol = protocol
        self.closed = False
        protocol.makeConnection(self)

    def send(self, data: bytes) -> None:
        """
        Deliver ``data`` to the server's protocol (ignored once closed).
        """
        if not self.closed:
            self.protocol.dataReceived(data)

    def take(self) -> bytes:
        """
        Return and forget what the server wrote so far.
        """
        out = self.value()
        self.clear()
        return out

    def close(self) -> None:
        """
        The client closes the connection.
        """
        if not self.closed:
            self.closed = True
            self.disconnecting = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    def loseConnection(self) -> None:
        if not self.disconnecting:
            super().loseConnection()
            self.reactor.callLater(0, self._lost)

    def _lost(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connectionLost(Failure(ConnectionDone()))


@implementer(IListeningPort)
class MemoryStreamPort:
    """
    An in-memory TCP listening port of ``factory``.

    :ivar connections: every connection made to it, in order.
    """

    def __init__(self, reactor: "MemoryNetReactor", port: int, factory: Factory, interface: str) -> None:
        self.reactor = reactor
        self.port = port
        self.factory = factory
        self.interface = interface or "0.0.0.0"
        self.listening = True
        self.connections: list[MemoryStream] = []
        self._client_port = 50000

    def startListening(self) -> None:
        self.factory.doStart()

    def connect(self, host: str = "127.0.0.1") -> MemoryStream:
        """
        Open a connection as a client at ``host`` would (the loopback by
        default).
        """
        if not self.listening:
            from twisted.internet.error import ConnectionRefusedError

            raise ConnectionRefusedError()
        self._client_port += 1
        peer = IPv4Address("TCP", host, self._client_port)
        protocol = self.factory.buildProtocol(peer)
        if protocol is None:
            from twisted.internet.error import ConnectionRefusedError

            raise ConnectionRefusedError("the factory refused the connection")
        stream = MemoryStream(self.reactor, protocol, self.getHost(), peer)
        self.connections.append(stream)
        return stream

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", self.interface, self.port)

    def stopListening(self) -> Deferred[None]:
        if self.listening:
            self.listening = False
            self.factory.doStop()
        return succeed(None)


@implementer(IReactorTCP)
class MemoryNetReactor(MemoryUDPReactor):
    """
    :class:`MemoryUDPReactor` plus in-memory TCP listening ports.

    :ivar tcp: listening ports by port number.
    """

    def __init__(self, datagram_sockets: bool = True) -> None:
        super().__init__(datagram_sockets)
        self.tcp: dict[int, MemoryStreamPort] = {}
        self._next_tcp = 41000

    def listenTCP(  # type: ignore[override]
        self, port: int, factory: Factory, backlog: int = 50, interface: str = ""
    ) -> MemoryStreamPort:
        if port == 0:
            while self._next_tcp in self.tcp:
                self._next_tcp += 1
            port = self._next_tcp
        if port in self.tcp and self.tcp[port].listening:
            from twisted.internet.error import CannotListenError

            raise CannotListenError(interface, port, OSError("address in use"))
        p = MemoryStreamPort(self, port, factory, interface)
        self.tcp[port] = p
        p.startListening()
        return p

    def connect(self, port: int, host: str = "127.0.0.1") -> MemoryStream:
        """
        Connect to the TCP port ``port`` (as Asterisk does) from ``host``.
        """
        return self.tcp[port].connect(host)


def pump_ticks(clock: Clock, n: int, interval: float = 0.02) -> None:
    """
    Advance ``clock`` by ``n`` whole intervals, landing each step a
    nanosecond after the interval boundary.

    ``clock.pump([0.02] * n)`` accumulates float error (ten steps of 0.02
    end at 0.19999999999999998, just short of the 0.2 deadline), which makes
    a 20 ms ``LoopingCall`` look late in tests; this lands on the grid.
    """
    start = clock.seconds()
    base = round(start / interval)
    for i in range(1, n + 1):
        target = (base + i) * interval + 1e-9
        clock.advance(max(0.0, target - clock.seconds()))
