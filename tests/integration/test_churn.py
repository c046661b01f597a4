"""
Calls starting and ending at a high rate on one transport never touch the
other calls' audio (issue 15, found from outside): over real loopback
sockets, a client churns AudioSocket calls on one pair (connect, 0x01
UUID, one 0x12 frame, close, about 200 a second, as the report did) while
two RTP phones on the other pair talk; each phone hears every frame of the
other, in order, and calls on the churned pair start no faster than the
bound (``--max-new-calls``), the rest refused and counted.

On the code before the bound every churned connection started (and ended)
a call: ~400 in 2 s, each costing the reactor a few milliseconds.
"""

from __future__ import annotations

import uuid
from typing import Any

import attrs
import numpy as np
from twisted.internet import reactor as _reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import LoopingCall
from twisted.trial.unittest import TestCase

from xlbridge.audio.codecs import get_codec
from xlbridge.audio.frame import FRAME_SAMPLES, Samples
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.events import CallStarted, DropReason, Event
from xlbridge.tools.phone import Phone, noise
from xlbridge.transports.audiosocket_codec import encode, uuid_frame

reactor: Any = _reactor

SIGNAL_A = noise(2.0, seed=11, lowpass_hz=3400)
SIGNAL_B = noise(2.0, seed=12, lowpass_hz=3400)


def frames(x: Samples) -> Samples:
    return x[: len(x) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)


class _OneCall(Protocol):
    """Says its UUID and one frame of silence, then hangs up by closing."""

    def connectionMade(self) -> None:
        self.transport.write(uuid_frame(str(uuid.uuid4())) + encode(0x12, bytes(640)))  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class _Churn(ClientFactory):
    protocol = _OneCall
    noisy = False

    def __init__(self) -> None:
        self.connections = 0

    def buildProtocol(self, addr: Any) -> Protocol:
        self.connections += 1
        return super().buildProtocol(addr)  # type: ignore[return-value]

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        pass


class ChurnTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_churned_calls_leave_the_other_pair_alone(self) -> Any:
        cfg = load_config({"ports": "7000=0,7001=0,7777=0,8888=0", "engines": "relay", "reply-codec": "slin16"})
        as_pair = attrs.evolve(cfg.pairs[0], transports=("audiosocket", "audiosocket"))
        events: list[Event] = []
        b = BridgeService(attrs.evolve(cfg, pairs=(as_pair, cfg.pairs[1])), reactor, observers=[events.append])
        b.privilegedStartService()
        b.startService()
        self.addCleanup(lambda: b.stopService() if b.running else None)

        def port_of(ext: str) -> int:
            port = b.listeners[ext].port
            assert port is not None
            return int(port.getHost().port)

        churn = _Churn()
        targets = [port_of("7000"), port_of("7001")]
        tick = [0]

        def connect() -> None:
            tick[0] += 1
            reactor.connectTCP("127.0.0.1", targets[tick[0] % 2], churn)

        loop = LoopingCall(connect)
        loop.clock = reactor
        loop.start(0.005, now=True)
        self.addCleanup(lambda: loop.stop() if loop.running else None)

        phones = []
        for audio, ext in ((SIGNAL_A, "7777"), (SIGNAL_B, "8888")):
            p = Phone(reactor, audio, get_codec("slin16"), ("127.0.0.1", port_of(ext)), tail=0.5)
            listening = reactor.listenUDP(0, p, interface="127.0.0.1")
            self.addCleanup(listening.stopListening)
            phones.append(p)
        ra, rb = yield gatherResults([p.play() for p in phones])
        loop.stop()

        for report, sent in ((ra, SIGNAL_B), (rb, SIGNAL_A)):
            self.assertEqual((report.lost, report.duplicates, report.malformed), (0, 0, 0))
            f = frames(report.audio)
            np.testing.assert_array_equal(f[np.any(f != 0, axis=1)], frames(sent))
        self.assertGreater(churn.connections, 150)
        churned = [e for e in events if isinstance(e, CallStarted) and e.extensions == ("7000", "7001")]
        refused = sum(b.endpoints[e].counters.drops[DropReason.CALL_RATE] for e in ("7000", "7001"))
        self.assertGreater(refused, 0)
        # ~2.5 s of churn: at most the burst (20) plus 20 a second.
        self.assertLessEqual(len(churned), 20 + 20 * 4)
        self.assertGreater(len(churned), 20)
