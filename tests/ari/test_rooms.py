"""
Stasis rooms: their arguments, and many rooms at once through the
controller against the fake ARI (RTP and AudioSocket media) without
cross-talk or leftovers.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.harness import ARIHarness, wait_until
from xlbridge.ari.rooms import parse_args
from xlbridge.rtp.packet import build, parse


class ArgsTests(SynchronousTestCase):
    def test_one_or_many_args(self) -> None:
        want = {"room": "R", "lang": "en"}
        self.assertEqual(parse_args(["room=R,lang=en"]), want)
        self.assertEqual(parse_args(["room=R", "lang=en"]), want)

ROOMS = 20

class ManyRoomsContract:
    """
    ``ROOMS`` rooms set up at once; each caller sends frames whose samples
    all carry its own stamp, so any cross-talk shows.  Mixed into a
    harness per media kind.
    """

    fake: Any
    ari: Any
    bridge: Any
    start: Any
    assertEqual: Any
    assertTrue: Any
    calls: Any
    connected: Any

    def send(self, media_id: str, seq: int, stamp: int) -> None:
        raise NotImplementedError

    def heard(self, media_id: str) -> np.ndarray:
        raise NotImplementedError

    def test_many_rooms_no_cross_talk_nothing_left(self) -> Any:
        async def run() -> None:
            ari = await self.connected()
            firsts = []
            for i in range(ROOMS):
                a = self.fake.new_channel(f"PJSIP/a{i:02d}-0001", f"1{i:03d}")
                b = self.fake.new_channel(f"PJSIP/b{i:02d}-0002", f"2{i:03d}")
                self.fake.enter(a, [f"room=r{i},lang=en"])
                self.fake.enter(b, [f"room=r{i},lang=es"])
                firsts.append(a["id"])
            await wait_until(lambda: len(self.calls()) == ROOMS, timeout=20)
            # caller index k (stamp 100 * (k + 1)) -> its media channel
            callers = [c for i in range(ROOMS) for c in ari.rooms[f"r{i}"].callers]
            media = [c.media_id for c in callers]
            ports = {c.port for c in callers if c.port is not None}
            for seq in range(15):
                for k, m in enumerate(media):
                    self.send(m, seq, 100 * (k + 1))
                await deferLater(reactor, 0.02, lambda: None)

            def partner(k: int) -> int:
                return k + 1 if k % 2 == 0 else k - 1

            def enough() -> bool:
                return all(np.count_nonzero(self.heard(m) == 100 * (partner(k) + 1)) >= 320 * 5
                           for k, m in enumerate(media))

            await wait_until(enough, timeout=10)
            for k, m in enumerate(media):
                self.assertEqual(set(np.unique(self.heard(m)).tolist()) - {0}, {100 * (partner(k) + 1)})

            for cid in firsts:
                self.fake.hangup(cid)
            await wait_until(lambda: self.fake.empty, timeout=10)
            await wait_until(lambda: not ari.callers and not ari.rooms and not self.calls())
            self.assertEqual(ari.pool.in_use, set())
            self.assertEqual(ari.pool.quarantined, ports)
            if ari.audiosocket is not None:
                self.assertEqual((ari.audiosocket.routes, dict(ari.audiosocket.counters.drops)), ({}, {}))

        return ensureDeferred(run())

class ManyRoomsRTPTests(ManyRoomsContract, ARIHarness):
    settings = {"reply-codec": "slin16"}  # bit-exact back, so stamps survive

    def send(self, media_id: str, seq: int, stamp: int) -> None:
        payload = struct.pack(">h", stamp) * 320
        self.fake.send_rtp(media_id, build(118, 1000 + seq, 320 * seq, stamp, payload))

    def heard(self, media_id: str) -> np.ndarray:
        got = [parse(d) for d, _ in self.fake.rtp[media_id].received]
        self.assertEqual({p.payload_type for p in got} - {118}, set())
        return np.frombuffer(b"".join(p.payload for p in got), dtype=">i2")

class ManyRoomsAudioSocketTests(ManyRoomsContract, ARIHarness):
    settings = {"ari-media": "audiosocket", "ari-audiosocket-port": "0"}

    def send(self, media_id: str, seq: int, stamp: int) -> None:
        self.fake.send_audiosocket(media_id, struct.pack("<h", stamp) * 320)

    def heard(self, media_id: str) -> np.ndarray:
        return np.frombuffer(self.fake.audiosocket[media_id].audio(0x12), dtype="<i2")
