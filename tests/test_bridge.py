"""
Tests for the bridge on a memory reactor: latching, routing, pacing on the
wire, call lifecycle and shutdown, and the registry of endpoints set up at
run time.  No sockets and no real time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.bridge import CONFIGURED, BridgeService
from xlbridge.config import load_config
from xlbridge.events import CallEnded, CallStarted, DropReason, Event
from xlbridge.rtp.packet import RTPPacket, build, parse
from xlbridge.testing import MemoryUDPReactor, pump_ticks

NAME_A = "PJSIP/7777-00000001"
ASTERISK_A = ("127.0.0.1", 10000)
ASTERISK_B = ("127.0.0.1", 10002)


def frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 20000, 320).astype(np.int16)


def slin16(samples: np.ndarray) -> bytes:
    return samples.astype(">i2").tobytes()


class BridgeHarness(SynchronousTestCase):
    settings: dict[str, Any] = {"reply-codec": "slin16"}

    def setUp(self) -> None:
        self.reactor = MemoryUDPReactor()
        self.events: list[Event] = []
        cfg = load_config({"ports": "7777,8888", **self.settings})
        self.bridge = BridgeService(cfg, self.reactor, observers=[self.events.append])
        self.bridge.privilegedStartService()
        self.bridge.startService()
        self.addCleanup(self.stop)
        self.a, self.b = self.reactor.udp[7777], self.reactor.udp[8888]
        self.seq = {7777: 1000, 8888: 65530}

    def stop(self) -> None:
        if self.bridge.running:
            self.bridge.stopService()

    def send(self, port: int, samples: np.ndarray, src: tuple[str, int], ssrc: int = 42, pt: int = 118) -> None:
        seq = self.seq[port]
        self.seq[port] = (seq + 1) & 0xFFFF
        self.reactor.udp[port].deliver(build(pt, seq, seq * 320, ssrc, slin16(samples)), src)

    def received(self, port: int) -> list[RTPPacket]:
        return [parse(s.data) for s in self.reactor.udp[port].take()]


class RoutingTests(BridgeHarness):
    def test_relay_is_bit_exact_both_ways(self) -> None:
        frames_a = [frame(i) for i in range(20)]
        frames_b = [frame(100 + i) for i in range(20)]
        for fa, fb in zip(frames_a, frames_b):
            self.send(7777, fa, ASTERISK_A)
            self.send(8888, fb, ASTERISK_B)
            pump_ticks(self.reactor, 1)
        pump_ticks(self.reactor, 3)
        to_a = [p.payload for p in self.received(7777) if any(p.payload)]
        to_b = [p.payload for p in self.received(8888) if any(p.payload)]
        self.assertEqual(to_a, [slin16(f) for f in frames_b])
        self.assertEqual(to_b, [slin16(f) for f in frames_a])

    def test_replies_go_to_latched_source_from_same_port(self) -> None:
        self.send(7777, frame(1), ASTERISK_A)
        self.send(8888, frame(2), ASTERISK_B)
        pump_ticks(self.reactor, 2)
        self.assertEqual({s.addr for s in self.a.sent}, {ASTERISK_A})
        self.assertEqual({s.addr for s in self.b.sent}, {ASTERISK_B})

    def test_one_packet_per_leg_per_tick_audio_or_silence(self) -> None:
        self.send(7777, frame(1), ASTERISK_A)
        self.send(8888, frame(2), ASTERISK_B)
        pump_ticks(self.reactor, 25)
        for port in (7777, 8888):
            pkts = self.received(port)
            self.assertEqual(len(pkts), 25)
            seqs = [p.sequence for p in pkts]
            self.assertEqual([(b - a) & 0xFFFF for a, b in zip(seqs, seqs[1:])], [1] * 24)
            ts = [p.timestamp for p in pkts]
            self.assertEqual({(b - a) & 0xFFFFFFFF for a, b in zip(ts, ts[1:])}, {320})
            self.assertEqual({p.payload_type for p in pkts}, {118})
            self.assertEqual(len({p.ssrc for p in pkts}), 1)
            # First packet carries the relayed frame (marker), the rest silence.
            self.assertTrue(pkts[0].marker)
            self.assertEqual([p.marker for p in pkts[1:]], [False] * 24)
            self.assertFalse(any(any(p.payload) for p in pkts[1:]))

    def test_unlatched_leg_gets_nothing(self) -> None:
        self.send(7777, frame(1), ASTERISK_A)
        pump_ticks(self.reactor, 5)
        self.assertEqual(len(self.a.sent), 5)
        self.assertEqual(self.b.sent, [])
        # B's first packet latches it; it then hears A's audio queued for it.
        self.send(8888, frame(2), ASTERISK_B)
        pump_ticks(self.reactor, 1)
        self.assertEqual(len(self.b.sent), 1)

    def test_marker_on_each_talkspurt(self) -> None:
        self.send(8888, frame(0), ASTERISK_B)
        for burst in range(2):
            self.send(7777, frame(burst), ASTERISK_A)
            self.send(7777, frame(burst + 10), ASTERISK_A)
            pump_ticks(self.reactor, 5)
        pkts = self.received(8888)
        markers = [i for i, p in enumerate(pkts) if p.marker]
        self.assertEqual(markers, [0, 5])


class LatchTests(BridgeHarness):
    def test_foreign_source_dropped_and_counted(self) -> None:
        self.send(7777, frame(1), ASTERISK_A)
        self.send(7777, frame(2), ("127.0.0.1", 6666))
        self.send(7777, frame(3), ("10.9.9.9", 10000))
        c = self.bridge.endpoints["7777"].counters
        self.assertEqual(c.drops[DropReason.FOREIGN_SOURCE], 2)
        self.assertEqual(c.packets_in, 1)

    def test_new_source_may_latch_after_silence(self) -> None:
        self.bridge.config = self.bridge.config  # defaults: latch timeout 5 s
        self.send(7777, frame(1), ASTERISK_A)
        self.reactor.advance(4.9)
        self.send(7777, frame(2), ("127.0.0.1", 6666))
        self.assertEqual(self.bridge.endpoints["7777"].remote, ASTERISK_A)
        self.reactor.advance(5.0)
        self.send(7777, frame(3), ("127.0.0.1", 6666))
        self.assertEqual(self.bridge.endpoints["7777"].remote, ("127.0.0.1", 6666))


class MalformedTests(BridgeHarness):
    def test_malformed_counted_by_reason_and_nothing_raised(self) -> None:
        ep = self.bridge.endpoints["7777"]
        self.a.deliver(b"\x80\x76", ASTERISK_A)
        self.a.deliver(b"\x40" + b"\x00" * 20, ASTERISK_A)
        self.a.deliver(build(0, 1, 1, 1, b"\xff" * 160), ASTERISK_A)
        self.a.deliver(build(118, 1, 1, 1, b"\x01" * 641), ASTERISK_A)
        self.a.deliver(b"\xa0" + b"\x76" + b"\x00" * 10 + b"\x40", ASTERISK_A)
        d = ep.counters.drops
        self.assertEqual(
            (d[DropReason.SHORT], d[DropReason.VERSION], d[DropReason.PAYLOAD_TYPE], d[DropReason.PAYLOAD], d[DropReason.PADDING]),
            (1, 1, 1, 1, 1),
        )
        self.assertEqual(ep.counters.packets_in, 0)
        # A malformed packet latches nothing and starts no call... except the
        # odd-length one, which was valid RTP from A: it latched A.
        self.assertEqual(self.bridge.active_calls(), [])

    def test_error_in_handler_is_contained(self) -> None:
        ep = self.bridge.endpoints["7777"]

        def broken(*a: Any) -> None:
            raise RuntimeError("pipeline bug")

        ep.on_audio = broken
        self.send(7777, frame(1), ASTERISK_A)
        # A bug past the transport is counted as such, not as a bad packet.
        self.assertEqual(ep.counters.drops[DropReason.PIPELINE_ERROR], 1)
        self.assertEqual(ep.counters.drops[DropReason.ERROR], 0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        # The other leg is unaffected.
        self.send(8888, frame(2), ASTERISK_B)
        self.assertEqual(self.bridge.endpoints["8888"].counters.packets_in, 1)

    def test_send_failure_counted_not_raised(self) -> None:
        self.send(7777, frame(1), ASTERISK_A)
        self.send(8888, frame(2), ASTERISK_B)
        self.a.fail_with = OSError(105, "No buffer space available")
        pump_ticks(self.reactor, 3)
        self.assertEqual(self.bridge.endpoints["7777"].counters.drops[DropReason.ERROR], 3)
        self.assertEqual(len(self.b.sent), 3)
        self.assertEqual(self.bridge.egress.errors, 0)


class LifecycleTests(BridgeHarness):
    settings = {"reply-codec": "slin16", "call-timeout": 2.0}

    def test_call_starts_on_first_audio_and_ends_after_inactivity(self) -> None:
        self.assertEqual(self.bridge.active_calls(), [])
        self.send(7777, frame(1), ASTERISK_A)
        (call,) = self.bridge.active_calls()
        self.assertEqual(call.extensions, ("7777", "8888"))
        self.assertEqual(len(self.bridge.egress), 2)
        self.reactor.advance(1.5)
        self.send(8888, frame(2), ASTERISK_B)
        self.reactor.advance(1.9)
        self.assertEqual(self.bridge.active_calls(), [call])
        self.reactor.advance(0.2)
        self.assertEqual(self.bridge.active_calls(), [])
        self.assertEqual(len(self.bridge.egress), 0)
        self.assertEqual(list(self.bridge.calls), [])
        self.assertIsNone(self.bridge.endpoints["7777"].remote)
        started, ended = self.events
        assert isinstance(started, CallStarted) and isinstance(ended, CallEnded)
        self.assertEqual((ended.call_id, ended.reason), (call.call_id, "inactivity"))
        # task.Clock runs the 3.5 s timer with its time already at 3.6.
        self.assertTrue(3.5 <= ended.duration <= 3.6, ended.duration)

    def test_next_call_is_fresh(self) -> None:
        self.send(7777, frame(1), ASTERISK_A)
        (first,) = self.bridge.active_calls()
        pump_ticks(self.reactor, 2)
        ssrc1 = self.received(7777)[0].ssrc
        self.reactor.advance(3)
        self.assertEqual(self.bridge.active_calls(), [])
        self.a.take()
        self.send(7777, frame(2), ("127.0.0.1", 20000))  # new call, new source
        (second,) = self.bridge.active_calls()
        self.assertNotEqual(first.call_id, second.call_id)
        pump_ticks(self.reactor, 1)
        (pkt,) = [parse(s.data) for s in self.a.take()]
        self.assertNotEqual(pkt.ssrc, ssrc1)
        self.assertEqual(self.a.sent, [])

    def test_shutdown_ends_calls_and_closes_ports(self) -> None:
        self.send(7777, frame(1), ASTERISK_A)
        d = self.bridge.stopService()
        self.successResultOf(d)
        self.assertEqual(self.bridge.active_calls(), [])
        self.assertEqual(self.events[-1].reason, "shutdown")  # type: ignore[union-attr]
        self.assertFalse(self.a.listening or self.b.listening)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_audio_during_shutdown_is_dropped(self) -> None:
        self.bridge.calls.stopService()
        self.send(7777, frame(1), ASTERISK_A)
        self.assertEqual(self.bridge.active_calls(), [])
        self.assertEqual(self.bridge.endpoints["7777"].counters.drops[DropReason.NO_CALL], 1)


class G722ReplyTests(BridgeHarness):
    settings: dict[str, Any] = {}

    def test_default_reply_is_g722_with_8khz_clock(self) -> None:
        self.send(7777, frame(1), ASTERISK_A)
        self.send(8888, frame(2), ASTERISK_B)
        pump_ticks(self.reactor, 4)
        pkts = self.received(7777)
        self.assertEqual({p.payload_type for p in pkts}, {9})
        self.assertEqual({len(p.payload) for p in pkts}, {160})
        self.assertEqual({(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in zip(pkts, pkts[1:])}, {160})


class StatusTests(BridgeHarness):
    def test_status_is_json_ready(self) -> None:
        import json

        self.send(7777, frame(1), ASTERISK_A)
        self.a.deliver(b"junk", ASTERISK_A)
        pump_ticks(self.reactor, 2)
        status = json.loads(json.dumps(self.bridge.status()))
        (call,) = status["calls"]
        leg = call["legs"][0]
        self.assertEqual(leg["extension"], "7777")
        self.assertEqual(leg["transport"]["remote"], "127.0.0.1:10000")
        self.assertEqual(leg["counters"]["drops"], {"short": 1})
        self.assertEqual(leg["counters"]["packets_in"], 1)
        self.assertEqual(status["egress"]["legs"], 2)


class RegistryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryUDPReactor()
        self.bridge = BridgeService(load_config({"ports": "7777,8888"}), self.reactor)

    def endpoint(self, name: str = NAME_A) -> Any:
        ep = self.bridge.rtp_endpoint(name, lambda e, s: None)
        self.reactor.listenUDP(0, ep)
        return ep

    def test_attached_endpoints_listed_with_origin_until_detached(self) -> None:
        ep = self.endpoint()
        self.assertEqual(self.bridge.attach_endpoint(NAME_A, ep, origin="ari"), NAME_A)
        endpoints = self.bridge.status()["endpoints"]
        self.assertEqual(list(endpoints), ["7777", "8888", NAME_A])
        self.assertEqual(endpoints["7777"]["origin"], CONFIGURED)
        self.assertEqual(endpoints[NAME_A]["origin"], "ari")
        self.assertEqual(endpoints[NAME_A]["transport"]["kind"], "rtp")
        self.assertEqual(endpoints[NAME_A]["counters"]["packets_in"], 0)
        self.assertTrue(self.bridge.detach_endpoint(NAME_A))
        self.assertFalse(self.bridge.detach_endpoint(NAME_A))  # idempotent
        self.assertEqual(list(self.bridge.status()["endpoints"]), ["7777", "8888"])

    def test_taken_names_get_a_suffix_and_detach_by_identity(self) -> None:
        first, second, clash = self.endpoint(), self.endpoint(), self.endpoint("7777")
        self.assertEqual(self.bridge.attach_endpoint(NAME_A, first), NAME_A)
        self.assertEqual(self.bridge.attach_endpoint(NAME_A, first), NAME_A)  # again: same place
        self.assertEqual(self.bridge.attach_endpoint(NAME_A, second), NAME_A + "#2")
        self.assertEqual(self.bridge.attach_endpoint("7777", clash), "7777#2")  # a configured name
        second.counters.packets_in = 5
        self.assertTrue(self.bridge.detach_endpoint(NAME_A, second))
        self.assertIs(self.bridge.dynamic_endpoints[NAME_A], first)
        self.assertFalse(self.bridge.detach_endpoint(NAME_A, second))
        self.assertEqual(self.bridge.retired_counters["rtp"].packets_in, 5)
