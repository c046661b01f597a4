"""
Liveness of the ARI events socket: a half-open connection (Asterisk's host
gone, no FIN) is noticed by an unanswered PING and dropped, then handled as
any drop (backoff, reconnect).  On a ``task.Clock`` with Autobahn's real
client protocol over a memory transport (:mod:`tests.ari.test_events`):
the bytes Asterisk would send go in through ``dataReceived``, and the
frames we send are read off the transport.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.test_events import EventsOnClock, _Transport
from xlbridge.ari.client import ARIAuthError
from xlbridge.ari.events import LIVENESS_IDLE_S, LIVENESS_TIMEOUT_S
from xlbridge.ari.events_lifecycle import State
from xlbridge.liveness import Liveness

EVENT = b'{"type": "StasisEnd", "channel": {"id": "1.2"}}'


def server_frame(opcode: int, payload: bytes = b"") -> bytes:
    """An unmasked frame, as a server sends (payloads < 126 bytes)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, len(payload)]) + payload


def sent_opcodes(data: bytes) -> list[int]:
    """Opcodes of the (masked, client-sent) frames in ``data``."""
    found = []
    while data:
        length = data[1] & 0x7F
        assert data[1] & 0x80 and length < 126, data  # masked, short
        found.append(data[0] & 0x0F)
        data = data[2 + 4 + length:]
    return found


PING, PONG, TEXT, CLOSE = 0x9, 0xA, 0x1, 0x8


def run_next_call(clock: Clock) -> None:
    """
    Move to the next call on ``clock`` and run only that one, as a reactor
    runs its due timers before it reads the sockets.  (``Clock.advance``
    would also run the calls it schedules for the same moment, and runs a
    late call with the clock already at the end of the advance: so the
    tests below advance by at most one timer at a time.)
    """
    call = min(clock.calls, key=lambda c: c.getTime())
    clock.rightNow = max(clock.rightNow, call.getTime())
    clock.calls.remove(call)
    call.called = 1
    call.func(*call.args, **call.kw)


class LivenessDefaults(SynchronousTestCase):
    def test_constants(self) -> None:
        """The brief's numbers: 10 s of silence, then 10 s for the pong."""
        self.assertEqual((LIVENESS_IDLE_S, LIVENESS_TIMEOUT_S), (10.0, 10.0))


class EventsLiveness(EventsOnClock):
    def opened(self, **kwargs: Any) -> tuple[Any, _Transport]:
        self.ari = self.make(**kwargs)
        proto, transport = self.up()
        transport.clear()  # the upgrade request
        return proto, transport

    def test_idle_sends_a_ping_after_the_idle_interval(self) -> None:
        proto, transport = self.opened()
        self.clock.advance(LIVENESS_IDLE_S - 0.1)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.1)
        self.assertEqual(sent_opcodes(transport.value()), [PING])
        self.assertEqual(self.ari.liveness.pings, 1)
        self.assertEqual(self.ari.status()["pings"], 1)

    def test_pong_resets(self) -> None:
        """
        A pong 5 s after the ping: no drop at ping + timeout, and the next
        ping only after another full idle interval from the pong.
        """
        proto, transport = self.opened()
        self.clock.advance(10)
        self.assertEqual(sent_opcodes(transport.value()), [PING])
        transport.clear()
        self.clock.advance(5)
        proto.dataReceived(server_frame(PONG))
        self.clock.advance(5)  # the ping's deadline
        self.clock.advance(0)
        self.assertFalse(transport.aborted)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(LIVENESS_IDLE_S - 5 - 0.1)  # 0.1 s before pong + idle
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.1)
        self.assertEqual(sent_opcodes(transport.value()), [PING])
        self.assertTrue(self.ari.connected)
        self.assertEqual(self.ari.state, State.UP)

    def test_no_pong_aborts_and_reconnects(self) -> None:
        """
        Half-open: the ping goes unanswered.  The socket is aborted at ping
        + timeout, one warning says why, and a reconnect is scheduled on
        the usual backoff (it had been up 20 s: 1 s).
        """
        proto, transport = self.opened()
        self.clock.advance(LIVENESS_IDLE_S)
        self.clock.advance(LIVENESS_TIMEOUT_S - 0.1)
        self.clock.advance(0)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)  # the deadline, its second look, the abort and connectionLost
        self.assertTrue(transport.aborted)
        self.assertFalse(self.ari.connected)
        self.assertEqual(self.ari.state, State.BACKOFF)
        self.assertEqual(self.ari.next_attempt, self.clock.seconds() + 1.0)
        self.assertEqual(self.ari.liveness.dead_count, 1)
        self.assertEqual(self.ari.last_error, "no answer to a ping within 10 s")
        (warn,) = self.logged.lines(LogLevel.warn)
        self.assertEqual(warn, "ARI events: no answer from Asterisk to a ping within 10 s (nothing received for "
                               "20.0 s): connection dropped after 20.0 s; next attempt in 1.0 s")
        # The existing reconnect logic takes over.
        self.assertEqual(self.endpoint.times, [0])
        self.clock.advance(1.0)
        self.assertEqual(self.endpoint.times, [0, 21.0])
        self.assertEqual(self.ari.state, State.CONNECTING)
        proto, transport = self.up()
        self.assertEqual(self.ari.connections, 2)
        self.assertEqual(self.ari.state, State.UP)

    def test_pong_in_the_last_reactor_pass_saves_it(self) -> None:
        """
        At the deadline the check looks once more after a reactor pass: a
        pong read in that pass (a starved reactor) keeps the socket.
        """
        proto, transport = self.opened()
        self.clock.advance(LIVENESS_IDLE_S)
        self.assertEqual(sent_opcodes(transport.value()), [PING])
        run_next_call(self.clock)  # the deadline: first look
        self.assertEqual(self.clock.seconds(), LIVENESS_IDLE_S + LIVENESS_TIMEOUT_S)
        self.assertFalse(transport.aborted)
        proto.dataReceived(server_frame(PONG))  # read in the reactor pass
        run_next_call(self.clock)  # second look
        self.assertFalse(transport.aborted)
        self.assertTrue(self.ari.connected)
        self.assertEqual(self.ari.liveness.dead_count, 0)

    def test_frames_received_keep_it_alive(self) -> None:
        """An event every 5 s for two minutes: no ping, no drop."""
        proto, transport = self.opened()
        for _ in range(24):
            self.clock.advance(5)
            proto.dataReceived(server_frame(TEXT, EVENT))
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.aborted)
        self.assertEqual(len(self.events), 24)
        self.assertEqual(self.ari.liveness.pings, 0)

    def test_any_frame_answers_a_ping(self) -> None:
        """An event (not a pong) after the ping is just as good."""
        proto, transport = self.opened()
        self.clock.advance(LIVENESS_IDLE_S)
        self.clock.advance(5)
        proto.dataReceived(server_frame(TEXT, EVENT))
        self.clock.advance(LIVENESS_TIMEOUT_S - 5)  # the ping's deadline
        self.clock.advance(0)
        self.assertFalse(transport.aborted)
        self.assertEqual(self.ari.liveness.pings, 1)
        self.assertEqual(len(self.events), 1)

    def test_asterisk_ping_answered_and_counts_as_alive(self) -> None:
        """
        A ping from Asterisk gets Autobahn's pong (solicited) and proves the
        peer alive (our ping moves from 10 s to 18 s); apart from that pong
        we only ever send pings, here over five quiet minutes.
        """
        proto, transport = self.opened()
        self.clock.advance(8)
        proto.dataReceived(server_frame(PING, b"hi"))
        self.assertEqual(sent_opcodes(transport.value()), [PONG])
        transport.clear()
        self.clock.advance(LIVENESS_IDLE_S - 0.1)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.1)
        self.assertEqual(sent_opcodes(transport.value()), [PING])
        for _ in range(60):
            sent = sent_opcodes(transport.value())
            self.assertNotIn(PONG, sent)
            if sent:
                proto.dataReceived(server_frame(PONG))
                transport.clear()
            self.clock.advance(5)
        self.assertEqual(self.ari.liveness.pings, 1 + 300 // 10)
        self.assertFalse(transport.aborted)

    def test_liveness_runs_while_preparing(self) -> None:
        """Start-up requests still pending: the socket is watched all the same."""
        pending: Deferred[Any] = Deferred()
        self.on_connect = lambda: pending
        proto, transport = self.opened()
        self.assertEqual(self.ari.state, State.PREPARING)
        self.clock.advance(LIVENESS_IDLE_S)
        self.assertEqual(sent_opcodes(transport.value()), [PING])
        self.clock.advance(LIVENESS_TIMEOUT_S)
        self.assertTrue(transport.aborted)
        pending.callback(None)

    def test_timers_cancelled_when_the_peer_closes(self) -> None:
        proto, transport = self.opened()
        self.clock.advance(LIVENESS_IDLE_S)  # a ping outstanding
        proto.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.ari.state, State.BACKOFF)
        # Only the reconnect is left on the clock.
        (call,) = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), self.ari.next_attempt)
        self.assertFalse(self.ari.liveness.running)
        # Long after: no ping into the dead socket, no second drop.
        self.ari.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timers_cancelled_when_we_stop(self) -> None:
        proto, transport = self.opened()
        self.clock.advance(LIVENESS_IDLE_S)
        transport.clear()
        d = self.ari.stopService()
        self.assertEqual(sent_opcodes(transport.value()), [CLOSE])
        self.assertFalse(self.ari.liveness.running)
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_ping_while_refusing(self) -> None:
        """A 401 on a REST request closes the socket: the watch stops with it."""
        proto, transport = self.opened()
        self.ari.refused(ARIAuthError("GET", "/channels", "xlbridge", 401, '{"message": "nope"}'))
        self.assertFalse(self.ari.liveness.running)
        transport.clear()
        self.clock.advance(LIVENESS_IDLE_S)
        self.assertNotIn(PING, sent_opcodes(transport.value()))
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [self.ari.next_attempt])


class LivenessUnit(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pings: list[float] = []
        self.dead: list[float] = []
        self.live = Liveness(self.clock, lambda: self.pings.append(self.clock.seconds()), self.dead.append,
                             idle=2.0, timeout=3.0)

    def test_nothing_scheduled_until_started(self) -> None:
        self.live.received()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.live.running)

    def test_schedule(self) -> None:
        self.live.start()
        self.clock.pump([1.0] * 4)  # t=4: ping at 2, nothing answered
        self.assertEqual(self.pings, [2.0])
        self.assertEqual(self.dead, [])
        run_next_call(self.clock)  # t=5: the deadline, first look
        self.assertEqual((self.clock.seconds(), self.dead), (5.0, []))
        run_next_call(self.clock)  # after one reactor pass
        self.assertEqual(self.dead, [5.0])  # seconds with nothing received
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.live.running)
        self.assertEqual(self.live.dead_count, 1)

    def test_received_is_not_a_timer(self) -> None:
        """Frames only move a timestamp: one call on the clock, however many arrive."""
        self.live.start()
        for _ in range(100):
            self.clock.advance(0.01)
            self.live.received()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertAlmostEqual(self.live.silent_for(), 0.0)

    def test_restart_cancels_the_old_timer(self) -> None:
        self.live.start()
        self.clock.advance(1.5)
        self.live.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.9)
        self.assertEqual(self.pings, [])
        self.clock.advance(0.1)
        self.assertEqual(self.pings, [3.5])
        self.live.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bad_intervals(self) -> None:
        self.assertRaises(ValueError, Liveness, self.clock, lambda: None, lambda s: None, 0.0, 1.0)
        self.assertRaises(ValueError, Liveness, self.clock, lambda: None, lambda s: None, 1.0, -1.0)
