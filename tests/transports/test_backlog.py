"""
:mod:`xlbridge.transports.backlog` on real loopback TCP sockets: the
kernel's unsent bytes, and Twisted's buffer through the producer calls.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.transports.backlog import DEAD_PEER_S, SendBacklog, kernel_unsent, tune


class SocketTransport:
    """
    The two things the backlog asks of a Twisted TCP transport.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.nodelay = False
        self.producer: Any = None

    def getHandle(self) -> socket.socket:
        return self.sock

    def setTcpNoDelay(self, on: bool) -> None:
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, on)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer


def connected_pair(test: SynchronousTestCase) -> tuple[socket.socket, socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    server.close()
    for s in (client, peer):
        test.addCleanup(s.close)
    return client, peer


class KernelUnsentTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not sys.platform.startswith("linux"):
            self.skipTest("SIOCOUTQNSD is Linux's")

    def test_a_peer_that_reads_leaves_nothing_unsent(self) -> None:
        client, peer = connected_pair(self)
        transport = SocketTransport(client)
        tune(transport)
        self.assertTrue(client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        client.sendall(b"x" * 643)
        self.assertEqual(peer.recv(1000), b"x" * 643)
        self.assertEqual(kernel_unsent(transport), 0)
        self.assertFalse(SendBacklog(transport).full(2 * 643))

    def test_a_dead_peer_is_found(self) -> None:
        """
        Keepalive probes while idle and a user timeout on unacknowledged
        data: a peer gone without a FIN ends its connection (and call).
        """
        client, _ = connected_pair(self)
        tune(SocketTransport(client))
        self.assertTrue(client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
        self.assertEqual(client.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT), DEAD_PEER_S * 1000)
        idle = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        interval = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
        count = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
        self.assertLessEqual(idle + interval * count, DEAD_PEER_S)

    def test_a_peer_that_stops_reading_fills_it(self) -> None:
        """
        Once the peer's window is full, what we write stays unsent: the
        backlog says so as soon as more than the limit waits.
        """
        client, peer = connected_pair(self)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        transport = SocketTransport(client)
        tune(transport)
        client.setblocking(False)
        backlog = SendBacklog(transport)
        written = 0
        while not backlog.full(2 * 643) and written < 50_000_000:
            try:
                written += client.send(b"x" * 643)
            except BlockingIOError:
                break
        self.assertGreater(kernel_unsent(transport), 2 * 643)
        self.assertTrue(backlog.full(2 * 643))
        # The peer reads everything: nothing waits any more.
        peer.setblocking(False)
        try:
            while peer.recv(65536):
                pass
        except BlockingIOError:
            pass
        for _ in range(100):
            if kernel_unsent(transport) == 0:
                break
            try:
                while peer.recv(65536):
                    pass
            except BlockingIOError:
                pass
        self.assertEqual(kernel_unsent(transport), 0)

    def test_no_socket_reads_zero(self) -> None:
        self.assertEqual(kernel_unsent(object()), 0)
        tune(object())  # nothing to tune, no error


class TwistedBufferTests(SynchronousTestCase):
    def test_producer_pause_means_full(self) -> None:
        client, _ = connected_pair(self)
        transport = SocketTransport(client)
        backlog = SendBacklog(transport, buffered=4000)
        self.assertIs(transport.producer, backlog)
        self.assertEqual(getattr(transport, "bufferSize"), 4000)
        self.assertFalse(backlog.full(10_000))
        backlog.pauseProducing()
        self.assertTrue(backlog.full(10_000))
        backlog.resumeProducing()
        self.assertFalse(backlog.full(10_000))
