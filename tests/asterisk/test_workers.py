"""
``--workers`` on the lab's real Asterisk: worker processes, each with its
own Stasis app, fed by the dispatcher with ``POST /channels/{id}/move``;
a worker killed mid-call; two media nodes on two addresses serving one
Asterisk.  Each caller must hear its own partner whole, and nobody else.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater

from tests.asterisk import lab
from tests.asterisk.test_real_asterisk import PROMPT_A, PROMPT_B, RealAsteriskTestCase, reactor

#: Twelve different prompts, one per room: a caller who heard another
#: room's would match it.
PROMPTS = [
    "conf-onlyperson", "hello-world", "tt-weasels", "agent-pass", "conf-getpin", "conf-invalidpin",
    "auth-thankyou", "all-circuits-busy-now", "cannot-complete-as-dialed", "check-number-dial-again",
    "conf-waitforleader", "agent-newlocation",
]


def worker_events(tmp: Path, k: int) -> list[dict[str, Any]]:
    path = tmp / f"events.w{k}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class WorkersTests(RealAsteriskTestCase):
    timeout = 180

    @inlineCallbacks
    def start_workers(self, *more: str, tmp: Path | None = None, connected: int = 3) -> Any:
        """
        A supervisor of ``--workers`` (``more``: its options), waited for
        until ``connected`` events sockets (the workers' and the
        dispatcher's) are up.
        """
        bridge = lab.Bridge(tmp or self.tmp, self.ari_args("--engines", "relay", *more))
        self.addCleanup(bridge.stop)
        waited = 0.0
        while bridge.log().count("ARI events connected") < connected:
            yield bridge.wait_for("ARI events connected", timeout=30)
            yield deferLater(reactor, 0.2, lambda: None)
            waited += 0.2
            if waited > 30:
                raise AssertionError(f"not {connected} events sockets up:\n{bridge.log()[-3000:]}")
        return bridge

    def assert_only_own_prompt(self, name: str, prompt: str) -> None:
        self.assert_heard(name, prompt)
        heard = lab.recording(name)
        for other in PROMPTS:
            if other != prompt:
                typical = sorted(c for c, _ in lab.segment_matches(heard, lab.sound(other)))
                self.assertLess(typical[len(typical) // 2], 0.6, f"{name} heard {other!r} too")

    @inlineCallbacks
    def test_two_workers_twelve_rooms(self) -> Any:
        """
        Two workers serve twelve rooms set up at once: each Spanish caller
        hears its own partner's prompt whole and no other room's; the
        rooms are spread over both workers, each room on one.
        """
        bridge = yield self.start_workers("--workers", "2", "--node", "lab")
        calls = []
        for i, prompt in enumerate(PROMPTS):
            calls.append(lab.caller(f"a{i}", prompt, delay=3, hold=4, app="xlbridge", app_args=f"room=w{i},lang=en"))
            calls.append(lab.caller(f"b{i}", "", hold=10, app="xlbridge", app_args=f"room=w{i},lang=es"))
        yield gatherResults(calls, consumeErrors=True)
        yield deferLater(reactor, 2, lambda: None)
        bridges = yield lab.ari("GET", "/bridges")
        per_worker = [sum(1 for b in bridges if str(b.get("name", "")).startswith(f"xlbridge-lab-{k}:"))
                      for k in range(2)]
        self.assertEqual(sum(per_worker), 24, bridges)  # a bridge per caller
        self.assertGreaterEqual(min(per_worker), 8, per_worker)  # spread over both
        yield self.assert_nothing_left()
        for i, prompt in enumerate(PROMPTS):
            self.assert_only_own_prompt(f"b{i}", prompt)
        started = [e for k in range(2) for e in worker_events(self.tmp, k) if e["event"] == "CallStarted"]
        self.assertEqual(len(started), 12)
        self.assertNotIn("setup failed", bridge.log())

    @inlineCallbacks
    def test_worker_killed_mid_call(self) -> Any:
        """
        The worker holding a call is killed (SIGKILL) mid-call: the
        dispatcher moves both callers to the other worker, and each hears
        the other's prompt, which starts 2 s after the kill, whole.
        """
        bridge = yield self.start_workers("--workers", "2", "--node", "lab")
        t0 = time.monotonic()
        yield lab.caller("a", PROMPT_A, delay=9, hold=8, app="xlbridge", app_args="room=k1,lang=en")
        yield lab.caller("b", PROMPT_B, delay=11, hold=6, app="xlbridge", app_args="room=k1,lang=es")
        yield bridge.wait_for(" started: ", timeout=10)
        bridges = yield lab.ari("GET", "/bridges")
        (k,) = {int(m.group(1)) for b in bridges if (m := re.match(r"xlbridge-lab-(\d+):", str(b.get("name", ""))))}
        pid = int(re.findall(rf"worker {k} started \(pid (\d+)\)", bridge.log())[-1])
        # A's prompt starts about 9 s after it was originated: kill 2 s before.
        yield deferLater(reactor, max(0.0, t0 + 7.0 - time.monotonic()), lambda: None)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        yield bridge.wait_for("moved back to xlbridge", timeout=5)
        yield self.assert_nothing_left()
        self.assert_heard("b", PROMPT_A)
        self.assert_heard("a", PROMPT_B)
        # The other worker paired them again: how long after the kill.
        (started,) = [e for e in worker_events(self.tmp, 1 - k) if e["event"] == "CallStarted"]
        paired_s = started["time"] - killed_at
        self.assertLess(paired_s, 2.0, started)
        with open(self.tmp / "rescue.txt", "w") as f:
            f.write(f"kill to paired on worker {1 - k}: {paired_s:.3f} s\n")
        # the killed worker was restarted
        yield bridge.wait_for(f"worker {k} started", timeout=10)

    @inlineCallbacks
    def test_two_media_nodes(self) -> Any:
        """
        Two media nodes, on 127.0.0.2 and 127.0.0.3, serve one Asterisk:
        the first dispatches, the second only runs a worker; rooms go to
        both, and every caller hears its own partner.
        """
        tmp2, tmp3 = self.tmp / "n2", self.tmp / "n3"
        tmp2.mkdir()
        tmp3.mkdir()
        yield self.start_workers(
            "--workers", "1", "--node", "m3", "--ari-dispatch", "no", "--interface", "127.0.0.3",
            "--ari-external-host", "127.0.0.3", tmp=tmp3, connected=1,
        )
        yield self.start_workers(
            "--workers", "1", "--node", "m2", "--interface", "127.0.0.2", "--ari-external-host", "127.0.0.2",
            tmp=tmp2, connected=2,
        )
        calls = []
        for i, prompt in enumerate(PROMPTS[:6]):
            calls.append(lab.caller(f"a{i}", prompt, delay=3, hold=4, app="xlbridge", app_args=f"room=n{i},lang=en"))
            calls.append(lab.caller(f"b{i}", PROMPT_B, delay=6, hold=3, app="xlbridge",
                                    app_args=f"room=n{i},lang=es"))
        yield gatherResults(calls, consumeErrors=True)
        yield self.assert_nothing_left()
        for i, prompt in enumerate(PROMPTS[:6]):
            self.assert_heard(f"b{i}", prompt)
            self.assert_heard(f"a{i}", PROMPT_B)
        served = [len([e for e in worker_events(tmp, 0) if e["event"] == "CallStarted"]) for tmp in (tmp2, tmp3)]
        self.assertEqual(sum(served), 6)
        self.assertGreaterEqual(min(served), 2, served)
