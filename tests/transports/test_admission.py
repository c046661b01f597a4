"""
Tests for :mod:`xlbridge.transports.admission`: the allow-list of TCP media
peers and the bound on new calls per transport, alone (with a
:class:`~twisted.internet.task.Clock`) and in a bridge on a memory reactor,
where a client churning AudioSocket calls (connect, UUID, one frame,
close) must neither start calls past the bound nor touch the call of the
other pair.
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

import attrs
import numpy as np
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.errors import ConfigError
from xlbridge.events import CallStarted, DropReason, Event
from xlbridge.rtp.packet import build, parse
from xlbridge.testing import MemoryNetReactor, pump_ticks
from xlbridge.transports.admission import (
    LOOPBACK,
    MAX_LOGGED_PEERS,
    SUMMARY_S,
    AdmittingFactory,
    CallRate,
    MediaAdmission,
    PeerFilter,
    default_allow,
    parse_allow,
)
from xlbridge.transports.audiosocket_codec import HANGUP, encode, uuid_frame


class ParseTests(SynchronousTestCase):
    def test_addresses_and_networks(self) -> None:
        nets = parse_allow(" 10.0.0.5, 192.168.1.0/24 ,::1")
        self.assertEqual(
            nets, tuple(ipaddress.ip_network(n) for n in ("10.0.0.5/32", "192.168.1.0/24", "::1/128"))
        )
        self.assertEqual(parse_allow(["10.0.0.5"]), (ipaddress.ip_network("10.0.0.5"),))

    def test_any_and_bad_items(self) -> None:
        self.assertIsNone(parse_allow("any"))
        self.assertIsNone(parse_allow("ANY"))
        for bad, words in [("", "empty"), ("any,10.0.0.1", "alone"), ("asterisk.lan", "not an IP"),
                           ("10.0.0.300", "not an IP")]:
            with self.assertRaises(ValueError) as e:
                parse_allow(bad)
            self.assertIn(words, str(e.exception))

    def test_default_is_loopback_and_the_ari_host(self) -> None:
        self.assertEqual(default_allow(None), LOOPBACK)
        self.assertEqual(default_allow("http://10.1.2.3:8088"), LOOPBACK + (ipaddress.ip_network("10.1.2.3"),))
        # A name that does not resolve adds nothing (and fails nothing).
        self.assertEqual(default_allow("http://no-such-host.invalid:8088"), LOOPBACK)

    def test_config(self) -> None:
        self.assertEqual(load_config({"ports": "7777,8888"}).media_allow, LOOPBACK)
        cfg = load_config({"ports": "7777,8888", "media-allow": "10.0.0.0/8", "max-new-calls": "5"})
        self.assertEqual((cfg.media_allow, cfg.max_new_calls), ((ipaddress.ip_network("10.0.0.0/8"),), 5.0))
        self.assertIsNone(load_config({"ports": "7777,8888", "media-allow": "any"}).media_allow)
        for opt, value in [("media-allow", "nowhere"), ("media-allow", 5), ("max-new-calls", "-1"),
                           ("max-new-calls", "lots")]:
            with self.assertRaises(ConfigError) as e:
                load_config({"ports": "7777,8888", opt: value})
            self.assertIn(opt, str(e.exception))


class PeerFilterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_allows(self) -> None:
        f = PeerFilter(LOOPBACK + (ipaddress.ip_network("10.0.0.0/24"),), self.clock)
        for host in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "10.0.0.200"):
            self.assertTrue(f.allows(host), host)
        for host in ("10.0.1.1", "::ffff:10.0.1.1", "2001:db8::1", "not-an-address", ""):
            self.assertFalse(f.allows(host), host)
        self.assertTrue(PeerFilter(None, self.clock).allows("203.0.113.9"))

    def test_each_refused_peer_logged_once_then_summaries(self) -> None:
        f = PeerFilter(LOOPBACK, self.clock)
        for _ in range(3):
            self.assertFalse(f.check("AudioSocket 7000", "10.0.0.9"))
        self.assertEqual(f.refused, 3)
        [line] = [formatEvent(e) for e in self.logged]
        self.assertIn("10.0.0.9", line)
        self.assertIn("AudioSocket 7000", line)
        # Past MAX_LOGGED_PEERS addresses, one summary line per SUMMARY_S.
        for i in range(MAX_LOGGED_PEERS + 100):
            f.check("x", f"10.1.{i // 250}.{i % 250}")
        self.assertEqual(len(self.logged), MAX_LOGGED_PEERS + 1)
        self.assertIn("refused 1 more", formatEvent(self.logged[-1]))
        self.clock.advance(SUMMARY_S)
        f.check("x", "192.0.2.1")
        self.assertEqual(len(self.logged), MAX_LOGGED_PEERS + 2)
        self.assertIn("refused 101 more", formatEvent(self.logged[-1]))
        self.assertEqual(f.refused, 3 + MAX_LOGGED_PEERS + 101)


class CallRateTests(SynchronousTestCase):
    def test_bucket(self) -> None:
        clock = Clock()
        rate = CallRate(clock, 10.0, burst=10)
        self.assertEqual(sum(rate.take() for _ in range(15)), 10)
        self.assertEqual(rate.refused, 5)
        clock.advance(0.1)  # one token back
        self.assertEqual([rate.take(), rate.take()], [True, False])
        clock.advance(60)  # refills to the burst, no further
        self.assertEqual(sum(rate.take() for _ in range(30)), 10)

    def test_zero_is_no_bound(self) -> None:
        rate = CallRate(Clock(), 0)
        self.assertTrue(all(rate.take() for _ in range(1000)))
        with self.assertRaises(ValueError):
            CallRate(Clock(), -1)

    def test_one_bucket_per_transport(self) -> None:
        clock = Clock()
        admission = MediaAdmission(clock, LOOPBACK, calls_per_second=2)
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.assertEqual([admission.new_call("audiosocket", "7000") for _ in range(3)], [True, True, False])
        self.assertEqual([admission.new_call("websocket", "7002") for _ in range(3)], [True, True, False])
        admission.new_call("audiosocket", "7000")
        self.assertEqual(admission.refused_calls, {"audiosocket": 2, "websocket": 1})
        self.assertEqual(len(logged), 2)  # once per transport per SUMMARY_S
        self.assertIn("--max-new-calls", formatEvent(logged[0]))


class FactoryTests(SynchronousTestCase):
    def test_refused_peer_gets_no_protocol(self) -> None:
        reactor = MemoryNetReactor()
        built: list[Any] = []

        inner = Factory.forProtocol(Protocol)
        inner.buildProtocol = lambda addr: built.append(addr) or Protocol()  # type: ignore[method-assign]
        wrapped = AdmittingFactory(inner, PeerFilter(LOOPBACK, reactor), "test port")
        port = reactor.listenTCP(0, wrapped, interface="0.0.0.0")
        port.connect("127.0.0.1")
        with self.assertRaises(ConnectionRefusedError):
            port.connect("198.51.100.7")
        self.assertEqual([a.host for a in built], ["127.0.0.1"])
        wrapped.local = "0.0.0.0:1"
        self.assertEqual(getattr(inner, "local"), "0.0.0.0:1")
        # The port's "... starting on N" line names the wrapped factory, as before.
        self.assertEqual(wrapped.logPrefix(), "Factory")


# -- in a bridge ---------------------------------------------------------------------


def _uuid() -> str:
    return str(uuid.uuid4())


class BridgeAdmissionTests(SynchronousTestCase):
    """
    An AudioSocket pair (7000/7001) and an RTP pair (7777/8888) on one
    memory reactor.
    """

    def start(self, **cli: Any) -> None:
        cfg = load_config({"ports": "7000,7001,7777,8888", "reply-codec": "slin16", **cli})
        as_pair = attrs.evolve(cfg.pairs[0], transports=("audiosocket", "audiosocket"))
        self.reactor = MemoryNetReactor()
        self.events: list[Event] = []
        self.bridge = BridgeService(attrs.evolve(cfg, pairs=(as_pair, cfg.pairs[1])), self.reactor,
                                    observers=[self.events.append])
        self.bridge.startService()
        self.addCleanup(lambda: self.bridge.stopService() if self.bridge.running else None)
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def churn(self, seconds: float, per_second: int) -> int:
        """Connect, UUID, one 0x12 frame, close: ``per_second`` a second to 7000 and 7001 in turn."""
        n = int(seconds * per_second)
        for i in range(n):
            s = self.reactor.connect(7000 + i % 2)
            s.send(uuid_frame(_uuid()) + encode(0x12, bytes(640)))
            s.close()
            self.reactor.advance(1.0 / per_second)
        return n

    def started(self) -> list[CallStarted]:
        return [e for e in self.events if isinstance(e, CallStarted)]

    def test_churn_is_bounded_and_counted(self) -> None:
        """
        200 calls a second for 2 s: at most the burst plus the rate start
        (20 + 2 x 20 by default); every other one is refused with 0x00,
        closed, counted as ``call_rate``.  Unbounded, all 400 would start.
        """
        self.start()
        n = self.churn(2.0, 200)
        started = len(self.started())
        self.assertLessEqual(started, 20 + 2 * 20 + 1)
        self.assertGreaterEqual(started, 40)
        drops = sum(self.bridge.endpoints[e].counters.drops[DropReason.CALL_RATE] for e in ("7000", "7001"))
        self.assertEqual(started + drops, n)
        # A refused connection got 0x00 and nothing else, and was closed.
        conns = self.reactor.tcp[7000].connections
        refused = [c for c in conns if c.take() == HANGUP]
        self.assertEqual(len(refused), self.bridge.endpoints["7000"].counters.drops[DropReason.CALL_RATE])
        self.assertTrue(all(c.closed for c in refused))
        warn = [formatEvent(e) for e in self.logged if "refused a new audiosocket call" in formatEvent(e)]
        self.assertEqual(len(warn), 1)  # once per minute, not per call
        self.assertEqual(self.bridge.admission.refused_calls, {"audiosocket": drops})

    def test_no_bound_when_zero(self) -> None:
        self.start(**{"max-new-calls": "0"})
        n = self.churn(0.5, 200)
        self.assertEqual(len(self.started()), n)

    def test_churn_never_touches_the_other_pair(self) -> None:
        """
        The RTP pair relays every frame, in order, while the AudioSocket
        pair churns.
        """
        self.start()
        sent = [np.full(320, i + 1, ">i2").tobytes() for i in range(100)]
        heard: list[bytes] = []
        a, b = ("127.0.0.1", 40000), ("127.0.0.1", 40002)
        self.reactor.udp[8888].deliver(build(118, 0, 0, 9, bytes(640)), b)  # latch b
        for i, payload in enumerate(sent):
            self.reactor.udp[7777].deliver(build(118, i, i * 320, 7, payload), a)
            for k in range(4):  # 200 churned calls a second
                s = self.reactor.connect(7000 + k % 2)
                s.send(uuid_frame(_uuid()) + encode(0x12, bytes(640)))
                s.close()
                self.reactor.advance(0.005)
            pump_ticks(self.reactor, 0)
            heard.extend(parse(x.data).payload for x in self.reactor.udp[8888].take())
        pump_ticks(self.reactor, 3)
        heard.extend(parse(x.data).payload for x in self.reactor.udp[8888].take())
        self.assertEqual([p for p in heard if any(p)], sent)
        self.assertLessEqual(len(self.started()), 1 + 20 + 2 * 20 + 1)

    def test_foreign_peer_refused_before_any_byte(self) -> None:
        self.start()
        with self.assertRaises(ConnectionRefusedError):
            self.reactor.connect(7000, host="192.0.2.50")
        with self.assertRaises(ConnectionRefusedError):
            self.reactor.connect(7001, host="192.0.2.50")
        self.assertEqual(self.bridge.admission.peers.refused, 2)
        lines = [formatEvent(e) for e in self.logged if "allow-list" in formatEvent(e)]
        self.assertEqual(len(lines), 1)
        self.assertIn("192.0.2.50", lines[0])
        # Loopback still gets its call.
        self.reactor.connect(7000).send(uuid_frame(_uuid()))
        self.assertEqual(len(self.started()), 1)

    def test_allowed_remote_asterisk(self) -> None:
        self.start(**{"media-allow": "192.0.2.0/24"})
        s = self.reactor.connect(7000, host="192.0.2.50")
        s.send(uuid_frame(_uuid()))
        self.assertEqual(len(self.started()), 1)
        with self.assertRaises(ConnectionRefusedError):
            self.reactor.connect(7001, host="127.0.0.1")  # not listed: refused too

