"""
Listener services: a UDP or TCP port held open for the lifetime of a
Twisted service.

They are apart from :mod:`xlbridge.bridge` because more than the bridge
uses them: the bridge makes one per configured extension, the ARI
controller's legs (:mod:`xlbridge.ari.legs`,
:mod:`xlbridge.ari.websocket_media`) bind their own, and the health check
(:mod:`xlbridge.monitor.health`) and start-up error reporting
(:mod:`xlbridge.tap_failures`) recognise them among a service tree's
children.  A module of their own lets those import the listeners without
the whole bridge.

Ports are bound in ``privilegedStartService`` (before twistd drops
privileges, and so that a port clash fails start-up with a clear error)
and closed when the service stops.  UDP ports (RTP) accept datagrams of up
to 8192 bytes; a TCP listener (AudioSocket, WebSocket) may sit behind a
:class:`~xlbridge.transports.admission.PeerFilter` allow-list.
"""

from __future__ import annotations

from typing import Optional, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IListeningPort, IProtocol, IReactorTCP, IReactorUDP
from twisted.internet.protocol import DatagramProtocol

from xlbridge.transports.admission import AdmittingFactory, PeerFilter

__all__ = ["AnnouncedFactory", "ListenerService", "TCPListenerService", "UDPListenerService"]


class ListenerService(Service):
    """
    Listen on a port for the lifetime of the service.

    :ivar port: the listening port while running (``getHost().port`` gives
        the real number when 0 was asked for).
    """

    def __init__(self, portNumber: int, interface: str) -> None:
        self.portNumber = portNumber
        self.interface = interface
        self.port: Optional[IListeningPort] = None

    def _listen(self) -> IListeningPort:
        raise NotImplementedError()

    def privilegedStartService(self) -> None:
        # Bind early so a port clash fails start-up with a clear error.
        if self.port is None:
            self.port = self._listen()
        super().privilegedStartService()

    def startService(self) -> None:
        if self.port is None:
            self.port = self._listen()
        super().startService()

    def stopService(self) -> Optional[Deferred[None]]:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            stopped: Optional[Deferred[None]] = port.stopListening()
            return stopped
        return None


class UDPListenerService(ListenerService):
    """
    Listen on a UDP port (RTP) for the lifetime of the service.
    """

    def __init__(self, reactor: IReactorUDP, port: int, protocol: DatagramProtocol, interface: str) -> None:
        super().__init__(port, interface)
        self.reactor = reactor
        self.protocol = protocol

    def _listen(self) -> IListeningPort:
        return self.reactor.listenUDP(
            self.portNumber, self.protocol, interface=self.interface, maxPacketSize=8192
        )


class AnnouncedFactory(Protocol):
    """
    A TCP protocol factory told where it listens (status pages show where
    Asterisk should connect, even when idle).
    """

    local: Optional[str]

    def buildProtocol(self, addr: IAddress) -> Optional[IProtocol]: ...


class TCPListenerService(ListenerService):
    """
    Listen on a TCP port (AudioSocket) for the lifetime of the service;
    ``protocol`` is the factory.
    """

    def __init__(
        self, reactor: IReactorTCP, port: int, protocol: AnnouncedFactory, interface: str,
        peers: Optional[PeerFilter] = None, what: str = "",
    ) -> None:
        super().__init__(port, interface)
        self.reactor = reactor
        self.protocol = protocol
        #: what listens: ``protocol`` behind the allow-list when ``peers``
        self.factory: AnnouncedFactory = protocol
        if peers is not None:
            self.factory = AdmittingFactory(protocol, peers, what or f"port {port}")  # type: ignore[arg-type]

    def _listen(self) -> IListeningPort:
        port = self.reactor.listenTCP(
            self.portNumber, self.factory, interface=self.interface  # type: ignore[arg-type]
        )
        host = port.getHost()
        self.protocol.local = f"{getattr(host, 'host', '?')}:{getattr(host, 'port', '?')}"
        return port
