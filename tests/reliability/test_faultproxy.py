"""
Tests for :mod:`reliability.faultproxy`: each fault's behaviour over real
loopback sockets.  Fault timing runs on a ``task.Clock`` (the proxy's
``clock``), so nothing here depends on how fast the machine is: waits
poll for a state with a generous timeout and never assert a duration.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.protocols.basic import LineReceiver
from twisted.trial import unittest

from reliability.faultproxy import ControlFactory, FaultProxy, Faults, Shaper, run_command

WAIT_S = 20.0  # generous: a loaded machine is slow, never wrong


@inlineCallbacks
def wait_until(pred: Callable[[], bool], timeout: float = WAIT_S) -> Any:
    """Poll ``pred`` on the real reactor until true; fail after ``timeout`` s."""
    deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
    while not pred():
        if reactor.seconds() > deadline:  # type: ignore[attr-defined]
            raise AssertionError(f"condition not met within {timeout} s: {pred}")
        yield task.deferLater(reactor, 0.01, lambda: None)


def settle(seconds: float = 0.2) -> "Deferred[None]":
    """Let the real reactor run a while (to show that something does *not* happen)."""
    return task.deferLater(reactor, seconds, lambda: None)


class Peer(protocol.Protocol):
    """Records what it receives and how it ended."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: Deferred[Any] = Deferred()
        self.reason: Optional[Any] = None
        self.made: Deferred[Any] = Deferred()

    def connectionMade(self) -> None:
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        self.reason = reason
        self.lost.callback(None)

    @property
    def gone(self) -> bool:
        return self.lost.called


class Server(protocol.ServerFactory):
    def __init__(self) -> None:
        self.peers: list[Peer] = []

    def buildProtocol(self, addr: Any) -> Peer:
        p = Peer()
        self.peers.append(p)
        return p


class ProxyTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.server = Server()
        self.sport = reactor.listenTCP(0, self.server, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.proxy = FaultProxy(reactor, ("127.0.0.1", self.sport.getHost().port), clock=self.clock,
                                uniform=lambda a, b: 0.0)
        self.proxy.listen(0)
        self.clients: list[Peer] = []

    @inlineCallbacks
    def tearDown(self) -> Any:
        for c in self.clients:
            if c.transport is not None and not c.gone:
                c.transport.abortConnection()
        for p in self.server.peers:
            if p.transport is not None and not p.gone:
                p.transport.abortConnection()
        yield defer.DeferredList([c.lost for c in self.clients] + [p.lost for p in self.server.peers])
        self.clock.advance(1000)  # fire (and so drop) any pending fault timer
        yield self.proxy.stop()
        yield self.sport.stopListening()

    @inlineCallbacks
    def connect(self) -> Any:
        """A client through the proxy, and the server's side of it."""
        c = Peer()
        self.clients.append(c)
        n = len(self.server.peers)
        yield protocol.ClientCreator(reactor, lambda: c).connectTCP(*self.proxy.address)
        yield wait_until(lambda: len(self.server.peers) > n and self.proxy.live
                         and all(x.state != "connecting" for x in self.proxy.live.values()))
        return c, self.server.peers[n]

    @inlineCallbacks
    def test_passthrough(self) -> Any:
        """Without faults bytes pass both ways, unchanged and in order."""
        c, s = yield self.connect()
        c.transport.write(b"hello ")
        c.transport.write(b"server")
        s.transport.write(b"hi client")
        yield wait_until(lambda: bytes(s.data) == b"hello server" and bytes(c.data) == b"hi client")

    @inlineCallbacks
    def test_close_passes_through(self) -> Any:
        """A clean close of one side closes the other after its data."""
        c, s = yield self.connect()
        s.transport.write(b"last words")
        s.transport.loseConnection()
        yield c.lost
        self.assertEqual(bytes(c.data), b"last words")
        yield wait_until(lambda: not self.proxy.live)

    @inlineCallbacks
    def test_latency_holds_data_until_due(self) -> Any:
        """With latency, data read by the proxy leaves only when the (fault) clock reaches it."""
        self.proxy.set(latency_ms=300)
        c, s = yield self.connect()
        conn = next(iter(self.proxy.live.values()))
        c.transport.write(b"abc")
        yield wait_until(lambda: conn.up.bytes_in == 3)
        yield settle()
        self.assertEqual(bytes(s.data), b"")
        self.clock.advance(0.299)
        yield settle()
        self.assertEqual(bytes(s.data), b"")
        self.clock.advance(0.002)
        yield wait_until(lambda: bytes(s.data) == b"abc")

    @inlineCallbacks
    def test_reset_aborts_both_sides(self) -> Any:
        """``reset`` ends both connections without a clean close."""
        c, s = yield self.connect()
        self.assertEqual(self.proxy.reset(), 1)
        yield defer.DeferredList([c.lost, s.lost])
        from twisted.internet.error import ConnectionDone
        self.assertIsNone(c.reason.check(ConnectionDone))
        self.assertIsNone(s.reason.check(ConnectionDone))
        yield wait_until(lambda: not self.proxy.live)

    @inlineCallbacks
    def test_blackhole_forwards_nothing_and_hides_server_close(self) -> Any:
        """A blackhole keeps the client's socket open while the server is gone; clearing resets it."""
        c, s = yield self.connect()
        conn = next(iter(self.proxy.live.values()))
        self.proxy.blackhole()
        c.transport.write(b"into the void")
        s.transport.write(b"never heard")
        yield settle()
        self.assertEqual((bytes(s.data), bytes(c.data)), (b"", b""))
        self.assertIn("hold", conn.client_gate.reasons)
        s.transport.loseConnection()
        yield wait_until(lambda: conn.server_gone)
        yield settle()
        self.assertFalse(c.gone, "the client must not learn of the server's close during a blackhole")
        self.proxy.clear()
        yield c.lost
        from twisted.internet.error import ConnectionDone
        self.assertIsNone(c.reason.check(ConnectionDone), "the client side is reset, not closed")

    @inlineCallbacks
    def test_blackhole_cleared_delivers_held_data(self) -> Any:
        """Data written during a blackhole arrives once it ends (both sides still there)."""
        c, s = yield self.connect()
        self.proxy.blackhole()
        c.transport.write(b"queued")
        yield settle()
        self.assertEqual(bytes(s.data), b"")
        self.proxy.blackhole(False)
        yield wait_until(lambda: bytes(s.data) == b"queued")
        self.assertFalse(c.gone)

    @inlineCallbacks
    def test_blackhole_fills_the_senders_buffers(self) -> Any:
        """The proxy stops reading: a sender's writes back up into its own buffer."""
        c, s = yield self.connect()
        self.proxy.blackhole()
        chunk = b"x" * 65536
        for _ in range(200):  # 12.5 MB: more than loopback kernel buffers hold
            c.transport.write(chunk)
        yield wait_until(lambda: c.transport.dataBuffer or c.transport._tempDataBuffer)  # type: ignore[attr-defined]
        yield settle(0.5)
        self.assertEqual(bytes(s.data), b"")
        pending = len(c.transport.dataBuffer) + sum(len(x) for x in c.transport._tempDataBuffer)
        self.assertGreater(pending, 0)

    @inlineCallbacks
    def test_stall_holds_then_delivers(self) -> Any:
        """A stall freezes the connection for N s of the fault clock, then delivers in order."""
        c, s = yield self.connect()
        self.proxy.stall(5.0)
        c.transport.write(b"one ")
        s.transport.write(b"back")
        yield settle()
        c.transport.write(b"two")
        yield settle()
        self.assertEqual((bytes(s.data), bytes(c.data)), (b"", b""))
        self.clock.advance(4.9)
        yield settle()
        self.assertEqual(bytes(s.data), b"")
        self.clock.advance(0.2)
        yield wait_until(lambda: bytes(s.data) == b"one two" and bytes(c.data) == b"back")

    @inlineCallbacks
    def test_slow_reads_stop_reading_the_client(self) -> Any:
        """Slow reads: the client's data stays in its buffers until a read window opens."""
        c, s = yield self.connect()
        conn = next(iter(self.proxy.live.values()))
        self.proxy.slow_reads(period_s=1.0, read_ms=0)
        self.assertIn("slow", conn.client_gate.reasons)
        s.transport.write(b"server side still flows")
        yield wait_until(lambda: bytes(c.data) == b"server side still flows")
        for _ in range(200):
            c.transport.write(b"y" * 65536)
        yield wait_until(lambda: c.transport.dataBuffer or c.transport._tempDataBuffer)  # type: ignore[attr-defined]
        yield settle(0.5)
        got = len(s.data)
        self.assertLess(got, 200 * 65536)
        self.proxy.slow_reads(on=False)
        yield wait_until(lambda: len(s.data) == 200 * 65536)

    @inlineCallbacks
    def test_slow_reads_windows(self) -> Any:
        """The read window opens for ``read_ms`` once per ``period_s`` on the fault clock."""
        c, s = yield self.connect()
        conn = next(iter(self.proxy.live.values()))
        self.proxy.slow_reads(period_s=1.0, read_ms=100)
        self.assertIn("slow", conn.client_gate.reasons)
        self.clock.advance(0.9)
        self.assertNotIn("slow", conn.client_gate.reasons)
        c.transport.write(b"in the window")
        yield wait_until(lambda: bytes(s.data) == b"in the window")
        self.clock.advance(0.1)
        self.assertIn("slow", conn.client_gate.reasons)

    @inlineCallbacks
    def test_faults_on_some_connections_only(self) -> Any:
        """``conns=`` picks connections: the others keep flowing."""
        c1, s1 = yield self.connect()
        c2, s2 = yield self.connect()
        ids = sorted(self.proxy.live)
        self.proxy.blackhole(conns=[ids[0]])
        c1.transport.write(b"held")
        c2.transport.write(b"flows")
        yield wait_until(lambda: bytes(s2.data) == b"flows")
        yield settle()
        self.assertEqual(bytes(s1.data), b"")
        self.assertEqual(self.proxy.reset(conns=[ids[1]]), 1)
        yield c2.lost
        self.assertFalse(c1.gone)

    @inlineCallbacks
    def test_refuse_new_connections(self) -> Any:
        """While refusing, a new connection is aborted at once; later ones work again."""
        self.proxy.refuse()
        c = Peer()
        self.clients.append(c)
        yield protocol.ClientCreator(reactor, lambda: c).connectTCP(*self.proxy.address)
        yield c.lost
        self.proxy.refuse(False)
        c2, s2 = yield self.connect()
        c2.transport.write(b"ok")
        yield wait_until(lambda: bytes(s2.data) == b"ok")

    @inlineCallbacks
    def test_bandwidth_paces_by_clock(self) -> Any:
        """A bandwidth limit releases bytes as the (fault) clock advances."""
        self.proxy.set(bandwidth=1024)
        c, s = yield self.connect()
        conn = next(iter(self.proxy.live.values()))
        c.transport.write(b"z" * 4096)
        yield wait_until(lambda: conn.up.bytes_in == 4096)
        yield settle()
        self.assertEqual(len(s.data), 0)
        self.clock.advance(1.0)
        yield wait_until(lambda: len(s.data) == 1024)
        self.clock.advance(3.0)
        yield wait_until(lambda: len(s.data) == 4096)

    @inlineCallbacks
    def test_control_port(self) -> Any:
        """The line-based control socket sets faults and reports status as JSON."""
        cport = reactor.listenTCP(0, ControlFactory(self.proxy), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(cport.stopListening)
        answers: list[dict[str, Any]] = []

        class Ctl(LineReceiver):
            delimiter = b"\n"

            def lineReceived(self, line: bytes) -> None:
                answers.append(json.loads(line))

        ctl = yield protocol.ClientCreator(reactor, Ctl).connectTCP("127.0.0.1", cport.getHost().port)
        ctl.sendLine(b"set latency_ms=200 jitter_ms=20")
        ctl.sendLine(b"status")
        ctl.sendLine(b"bogus")
        yield wait_until(lambda: len(answers) == 3)
        ctl.transport.loseConnection()
        self.assertEqual(answers[0], {"ok": True})
        self.assertEqual(answers[1]["defaults"]["latency_ms"], 200.0)
        self.assertFalse(answers[2]["ok"])


class ShaperTests(unittest.TestCase):
    """The sans-I/O timing."""

    def test_latency(self) -> None:
        s = Shaper(lambda a, b: 0.0)
        self.assertAlmostEqual(s.release_time(10.0, 100, Faults(latency_ms=250)), 10.25)

    def test_jitter_never_reorders(self) -> None:
        """A later chunk with less jitter still leaves after an earlier one."""
        draws = iter([50.0, -50.0])
        s = Shaper(lambda a, b: next(draws))
        f = Faults(latency_ms=100, jitter_ms=50)
        t1 = s.release_time(0.0, 10, f)
        t2 = s.release_time(0.01, 10, f)
        self.assertAlmostEqual(t1, 0.15)
        self.assertGreaterEqual(t2, t1)

    def test_bandwidth_token_bucket(self) -> None:
        s = Shaper(lambda a, b: 0.0)
        f = Faults(bandwidth=1000)
        self.assertEqual([s.release_time(0.0, 500, f) for _ in range(3)], [0.5, 1.0, 1.5])
        # an idle link does not bank credit
        self.assertEqual(s.release_time(10.0, 500, f), 10.5)

    def test_run_command_errors_are_answers(self) -> None:
        p = FaultProxy(task.Clock(), ("127.0.0.1", 1))
        self.assertFalse(run_command(p, "set nonsense=1")["ok"])
        self.assertFalse(run_command(p, "")["ok"])
        self.assertTrue(run_command(p, "refuse on")["ok"])
        self.assertTrue(p.refusing)
