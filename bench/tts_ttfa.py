"""Time-to-first-audio of the ElevenLabs client, HTTP streaming vs WebSocket.

TTFA is the time from ``ElevenLabsTTS.synthesize()`` to the first
``on_audio`` call, in milliseconds: what a caller waits before the
translation starts to play.  Both transports run against the fake server
(``tests/fakes/elevenlabs.py``) on loopback with a network model:

* ``--first-byte-ms``: the service's own time to first audio (Flash v2.5 is
  quoted at ~75 ms of model time; 100 ms by default).
* ``--rtt-ms``: one round trip added to every request (inbound bytes are
  held that long).
* ``--connect-ms``: paid once per new TCP connection before its first byte
  is read (TCP + TLS 1.3 handshakes, about two round trips).

Scenarios, each ``--utterances`` times, ``--think-ms`` apart (the pause
between one caller's sentences):

* ``http``: one persistent connection pool (the client's default setup);
* ``http-nopool``: a new pool per utterance, to show what reuse saves;
* ``ws``: stream-input, one socket per utterance, with a spare socket
  opened ahead of use (``ws_standby=True``);
* ``ws-nospare``: stream-input, a new socket per utterance.

With ``--concurrency N`` each round starts N utterances at once (N calls
speaking at the same moment; the first of each scenario warms up).

Run:  python bench/tts_ttfa.py [--utterances 40] [--concurrency 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from twisted.internet import task
from twisted.internet.defer import gatherResults, inlineCallbacks

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.elevenlabs import start_fake_elevenlabs  # noqa: E402
from xlbridge.engines.elevenlabs.settings import ElevenLabsSettings  # noqa: E402
from xlbridge.engines.elevenlabs.tts import ElevenLabsTTS  # noqa: E402

SCENARIOS = {
    "http": dict(transport="http"),
    "http-nopool": dict(transport="http"),
    "ws": dict(transport="websocket", ws_standby=True),
    "ws-nospare": dict(transport="websocket", ws_standby=False),
}
SENTENCES = ["hello world how are you", "good morning", "where is the hospital", "thank you bye"]


def stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "mean": float(a.mean()), "max": float(a.max())}


@inlineCallbacks
def one(reactor, tts, text):
    start = reactor.seconds()
    first = []
    yield tts.synthesize(text, "en", lambda samples: first or first.append(reactor.seconds()))
    return (first[0] - start) * 1000.0


@inlineCallbacks
def run_scenario(reactor, name, fake, args):
    settings = ElevenLabsSettings(api_key="test-key", base_url=fake.url, **SCENARIOS[name])
    tts = ElevenLabsTTS(reactor, settings)
    cold, warm = [], []
    for i in range(args.utterances):
        if name == "http-nopool" and i:
            yield tts.close()
            tts = ElevenLabsTTS(reactor, settings)
        texts = [SENTENCES[(i + k) % len(SENTENCES)] for k in range(args.concurrency)]
        results = yield gatherResults([one(reactor, tts, t) for t in texts])
        (cold if i == 0 else warm).extend(results)
        yield task.deferLater(reactor, args.think_ms / 1000.0, lambda: None)
    yield tts.close()
    return {"cold_ms": cold, **stats(warm)}


@inlineCallbacks
def main(reactor, argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--first-byte-ms", type=float, default=100.0)
    ap.add_argument("--rtt-ms", type=float, default=40.0)
    ap.add_argument("--connect-ms", type=float, default=80.0)
    ap.add_argument("--chunk-interval-ms", type=float, default=5.0)
    ap.add_argument("--think-ms", type=float, default=300.0)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    fake = start_fake_elevenlabs(
        reactor, api_key="test-key", first_byte_delay=args.first_byte_ms / 1000.0,
        rtt=args.rtt_ms / 1000.0, connect_delay=args.connect_ms / 1000.0,
        chunk_interval=args.chunk_interval_ms / 1000.0,
    )
    results = {}
    for name in args.scenarios.split(","):
        results[name] = yield run_scenario(reactor, name, fake, args)
    yield fake.stop()

    print(f"TTFA ms; first byte {args.first_byte_ms:g}, rtt {args.rtt_ms:g}, connect {args.connect_ms:g}, "
          f"concurrency {args.concurrency}, {args.utterances} rounds ({args.utterances - 1} warm)")
    print(f"{'scenario':<12} {'cold':>14} {'p50':>7} {'p95':>7} {'mean':>7} {'max':>7}")
    for name, r in results.items():
        cold = "/".join(f"{c:.0f}" for c in r["cold_ms"])
        print(f"{name:<12} {cold:>14} {r['p50']:7.1f} {r['p95']:7.1f} {r['mean']:7.1f} {r['max']:7.1f}")
    if "http" in results and "ws" in results:
        h, w = results["http"], results["ws"]
        # The simpler transport wins unless the other is clearly faster (5 ms at p95).
        best = "websocket" if w["p95"] + 5.0 < h["p95"] else "http"
        print(f"default transport by warm p95: {best}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    task.react(main, [sys.argv[1:]])
