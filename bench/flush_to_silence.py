"""
Time from a translated utterance being dropped to the moment the caller
stops hearing it, per transport (issue 14).

A listener's :class:`~xlbridge.audio.mix.SpeechQueue` drops its oldest
utterance when the backlog bound is passed, even one that is playing
(``enforce_bound``, called by the translate pipeline each time TTS audio is
added).  On RTP and AudioSocket the egress clock sends one 20 ms frame per
tick, so the dropped utterance stops at the next tick.  On a WebSocket leg
up to ``--websocket-lookahead-ms`` (200) of it is already queued in
Asterisk; ``SpeechQueue.on_cut`` (set by the leg to
``WebSocketEndpoint.flush``) sends FLUSH_MEDIA so the queue is emptied.

Scenarios, each ``--trials`` times, in one process on the real (epoll)
reactor, over loopback:

- ``ws_flush``: a :class:`~xlbridge.call.leg.Leg` on a
  :class:`~xlbridge.transports.websocket.WebSocketEndpoint` that the
  protocol-faithful fake chan_websocket (tests/fakes/chan_websocket.py,
  client mode, as ``Dial(WebSocket/...)``) dials; the fake's media timer
  dequeues one frame per 20 ms and records when (``Channel.heard``);
- ``ws_noflush``: the same with ``on_cut`` unset (what a WebSocket leg
  would do without FLUSH_MEDIA);
- ``rtp``: the same leg on an :class:`~xlbridge.transports.rtp.RTPEndpoint`
  (slin16 both ways), a UDP socket playing Asterisk that latches it and
  records when each packet arrives (ExternalMedia plays what arrives).

Each trial: the leg hears translated speech (``Playout.speech``, backlog
2 s, comfort noise -60 dBFS), paced by a real
:class:`~xlbridge.egress.EgressClock`.  Utterance U1 (4 s of a constant
+1000) plays for 1 s plus a random 0-20 ms; then U2 arrives (held back
with ``not_before`` so the caller hears only comfort noise after U1) and
its audio passes the bound: ``enforce_bound`` drops U1.  The figure is
*U1 audible until* (start of the last U1 frame the caller got + 20 ms)
minus the time of the drop, and how many U1 frames were heard after it.

Usage: ``.venv/bin/python bench/flush_to_silence.py --trials 20`` (about a minute)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import struct
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, str(HERE))
from codestate import code_state  # noqa: E402

import numpy as np  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.protocol import DatagramProtocol  # noqa: E402

from tests.fakes.chan_websocket import FakeChanWebSocket  # noqa: E402
from xlbridge.audio.codecs import get_codec  # noqa: E402
from xlbridge.audio.mix import Utterance  # noqa: E402
from xlbridge.call.leg import Leg  # noqa: E402
from xlbridge.call.playout import Playout, SpeechOutput  # noqa: E402
from xlbridge.egress import EgressClock  # noqa: E402
from xlbridge.transports.rtp import RTPEndpoint  # noqa: E402
from xlbridge.transports.websocket import WebSocketEndpoint  # noqa: E402

RATE = 16000
U1_LEVEL, U2_LEVEL = 1000, -1000
SCENARIOS = ("ws_flush", "ws_noflush", "rtp")




class FakeAsteriskRTP(DatagramProtocol):
    """Asterisk's end of an ExternalMedia RTP flow: records what arrives, when."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.heard: list[tuple[float, bytes]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.heard.append((self.reactor.seconds(), data[12:]))

    def latch(self, port: int) -> None:
        """One slin16 packet so xlbridge learns where to send."""
        pkt = struct.pack("!BBHII", 0x80, 118, 1, 320, 0x1234) + bytes(640)
        assert self.transport is not None
        self.transport.write(pkt, ("127.0.0.1", port))


def level(frame: bytes, byteorder: str) -> float:
    return float(np.frombuffer(frame, byteorder + "i2").astype(np.float64).mean()) if frame else 0.0


@defer.inlineCallbacks
def wait(reactor: Any, seconds: float) -> Any:
    yield task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def trial(reactor: Any, scenario: str, ns: argparse.Namespace) -> Any:
    cleanup: list[Any] = []
    ep: Any
    try:
        if scenario.startswith("ws"):
            ep = WebSocketEndpoint("7003", lambda e, s: None, reactor, lookahead_ms=ns.lookahead_ms)
            port = reactor.listenTCP(0, ep.server_factory(reactor), interface="127.0.0.1")
            cleanup.append(port.stopListening)
            fake = FakeChanWebSocket(reactor)
            channel = fake.dial(reactor, f"ws://127.0.0.1:{port.getHost().port}/media", protocols=["media"])
            cleanup.insert(0, ep.hangup)
            heard, order = channel.heard, "<"
        else:
            slin16 = get_codec("slin16")
            ep = RTPEndpoint("8888", slin16, slin16, reactor, lambda e, s: None)
            port = reactor.listenUDP(0, ep, interface="127.0.0.1")
            cleanup.append(port.stopListening)
            asterisk = FakeAsteriskRTP(reactor)
            aport = reactor.listenUDP(0, asterisk, interface="127.0.0.1")
            cleanup.append(aport.stopListening)
            asterisk.latch(port.getHost().port)
            heard, order = asterisk.heard, ">"
        for _ in range(100):
            if ep.ready:
                break
            yield wait(reactor, 0.02)
        if not ep.ready:
            raise RuntimeError(f"{scenario}: leg not ready")
        leg = Leg("8888", "es", ep)
        leg.playout = Playout.speech(SpeechOutput(backlog_s=2.0), reactor)
        mix = leg.playout.mix
        assert mix is not None
        speech = mix.speech
        if scenario == "ws_noflush":
            speech.on_cut = None
        egress = EgressClock(reactor)
        egress.add(leg)
        egress.startService()
        cleanup.insert(0, egress.stopService)
        yield wait(reactor, 0.2)
        u1 = speech.add(Utterance(1, "u1"))
        u1.add(np.full(4 * RATE, U1_LEVEL, np.int16))
        u1.finish()
        yield wait(reactor, 1.0 + random.uniform(0, 0.02))
        t_drop = reactor.seconds()
        queued_ms = ep.queue.queued_ms(t_drop) if scenario.startswith("ws") else 0.0
        u2 = speech.add(Utterance(2, "u2"))
        u2.not_before = t_drop + 1.0
        u2.add(np.full(RATE // 2, U2_LEVEL, np.int16))
        speech.enforce_bound()
        t_cut = reactor.seconds()
        yield wait(reactor, 0.6)
        frames = [(t, level(f, order)) for t, f in heard]
        u1_times = [t for t, v in frames if v > U1_LEVEL / 2]
        if not u1.dropped or not u1_times:
            raise RuntimeError(f"{scenario}: U1 was not dropped or never heard")
        last = max(u1_times)
        after = sum(1 for t in u1_times if t > t_drop)
        return {
            "scenario": scenario,
            "audible_after_drop_ms": (last + 0.020 - t_drop) * 1000,
            "u1_frames_after_drop": after,
            "queued_ms_at_drop": queued_ms,
            "drop_call_ms": (t_cut - t_drop) * 1000,
            "flushed_bytes": getattr(ep.counters, "flushed_bytes", 0),
            "frames_heard": len(frames),
        }
    finally:
        for f in cleanup:
            try:
                yield defer.maybeDeferred(f)
            except Exception:
                pass
        yield wait(reactor, 0.1)


def pctl(vals: list[float], p: float) -> float:
    return float(np.percentile(vals, p))


@defer.inlineCallbacks
def run(reactor: Any, ns: argparse.Namespace) -> Any:
    scenarios = [s for s in ns.scenarios.split(",") if s]
    results: list[dict[str, Any]] = []
    for k in range(ns.trials):
        for s in scenarios[k % len(scenarios):] + scenarios[: k % len(scenarios)]:
            r = yield trial(reactor, s, ns)
            r["trial"] = k
            results.append(r)
    rows = []
    for s in scenarios:
        rs = [r for r in results if r["scenario"] == s]
        ms = [r["audible_after_drop_ms"] for r in rs]
        fr = [r["u1_frames_after_drop"] for r in rs]
        q = [r["queued_ms_at_drop"] for r in rs]
        rows.append({"scenario": s, "trials": len(rs), "median_ms": statistics.median(ms), "p90_ms": pctl(ms, 90),
                     "min_ms": min(ms), "max_ms": max(ms), "frames_after_median": statistics.median(fr),
                     "frames_after_max": max(fr), "queued_at_drop_median_ms": statistics.median(q)})
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(), "argv": sys.argv, "code": code_state(ROOT),
            "xlbridge_imported_from": os.path.dirname(sys.modules["xlbridge"].__file__ or "")}
    os.makedirs(ns.out, exist_ok=True)
    with open(os.path.join(ns.out, "results.json"), "w") as f:
        json.dump({"machine": info, "rows": rows, "trials": results}, f, indent=1)
    print(f"utterance dropped while playing -> caller stops hearing it ({ns.trials} trials each)")
    print("| scenario | median ms | p90 ms | min-max ms | U1 frames heard after the drop (median, max) | "
          "modelled queue at drop ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['min_ms']:.1f}-{r['max_ms']:.1f} | "
              f"{r['frames_after_median']:.0f}, {r['frames_after_max']} | {r['queued_at_drop_median_ms']:.0f} |")
    print(f"wrote {ns.out}/results.json")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="drops per scenario [20]")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"[{','.join(SCENARIOS)}]")
    ap.add_argument("--lookahead-ms", type=int, default=200, help="WebSocket speech lookahead [200]")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "flush_to_silence"))
    ns = ap.parse_args(argv)
    task.react(lambda reactor: run(reactor, ns))


if __name__ == "__main__":
    main(sys.argv[1:])
