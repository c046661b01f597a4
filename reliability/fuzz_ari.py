"""
ARI events surface: a fake Asterisk ARI (tests/fakes/ari.py) run as a child
process that sends malformed events down the events WebSocket xlbridge
keeps open (``--ari``), so the events parser and the controller behind it
get them end to end, over a real socket.

The fake serves the REST requests xlbridge makes at start-up and for any
caller an event starts; :class:`~tests.fakes.ari.FakeARI` has no hook for
raw events, so this module writes the text frames itself on the fake's
open event sockets (``FakeARI.sockets``).

Protocol with the parent (``python -m reliability.fuzz_ari --port P``):
prints ``listening <url>``; then each stdin line ``go N SEED RATE`` sends
N events at about RATE per second and prints ``done <json>``; ``quit``
stops.  The JSON counts events per case, the event sockets open at the
end and how many times xlbridge (re)connected.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any, Callable

#: Event types xlbridge's controller acts on, and others Asterisk sends.
KNOWN = ("StasisStart", "StasisEnd", "ChannelDestroyed", "PlaybackFinished")
OTHERS = (
    "PlaybackStarted", "ChannelStateChange", "ChannelDtmfReceived", "ChannelHangupRequest", "ChannelVarset",
    "BridgeCreated", "BridgeDestroyed", "ChannelEnteredBridge", "ChannelLeftBridge", "ApplicationReplaced",
    "Dial", "ChannelCallerId", "ChannelDialplan", "DeviceStateChanged", "RecordingFinished",
)

#: Values of every JSON type, for wrong-type fields.
def _odd_values(rng: random.Random) -> list[Any]:
    return [
        None, True, False, 0, -1, 2**63, 1.5, float("nan") if rng.random() < 0.5 else 1e308, "", "x" * rng.randint(1, 300),
        [], [1, 2], ["room=r", 5], {}, {"id": None}, {"id": []}, {"id": {"a": 1}}, "\u0000\ud7ff\ufffe", "1724500000.1",
    ]


def _channel(rng: random.Random, cid: str | None = None) -> dict[str, Any]:
    cid = cid or f"{rng.randint(1, 2**31)}.{rng.randint(0, 999)}"
    return {"id": cid, "name": rng.choice(["PJSIP/7777-0000001", f"UnicastRTP/127.0.0.1:{rng.randint(0, 70000)}-0x1",
                                             "AudioSocket/127.0.0.1:9092-" + "0" * 36, "WebSocket/x/0x1", ""]),
            "state": "Up", "caller": {"name": "", "number": "7777"},
            "dialplan": {"context": "default", "exten": "100", "priority": 1}}


def event_case(rng: random.Random) -> tuple[str, str | bytes]:
    """
    One malformed (or unknown-target) event: ``(case name, frame text)``.
    Text is ``str`` (sent as a TEXT frame) or ``bytes`` (a BINARY frame).
    """
    r = rng.random()
    ev: dict[str, Any]
    if r < 0.14:  # truncated JSON of a plausible event
        ev = {"type": rng.choice(KNOWN + OTHERS), "channel": _channel(rng), "args": ["room=r1,lang=en"]}
        text = json.dumps(ev)
        return "truncated_json", text[: rng.randint(0, len(text) - 1)]
    if r < 0.24:  # unknown types
        ev = {"type": rng.choice(["", "Nope", "stasisstart", "X" * 200, 7, None, ["StasisStart"]]),
              "channel": _channel(rng)}
        return "unknown_type", json.dumps(ev)
    if r < 0.44:  # known types, fields missing
        ev = {"type": rng.choice(KNOWN), "channel": _channel(rng), "args": ["room=r1"], "playback": {"id": "p"}}
        for key in rng.sample(["channel", "args", "playback", "type"], rng.randint(1, 3)):
            ev.pop(key, None)
        if "channel" in ev and rng.random() < 0.6:
            for key in rng.sample(["id", "name", "state", "caller"], rng.randint(1, 4)):
                ev["channel"].pop(key, None)
        return "missing_fields", json.dumps(ev)
    if r < 0.66:  # known types, fields of the wrong type
        ev = {"type": rng.choice(KNOWN), "channel": _channel(rng), "args": ["room=r1"], "playback": {"id": "p"}}
        odd = _odd_values(rng)
        field = rng.choice(["channel", "args", "playback", "channel.id", "channel.name", "channel.channelvars",
                            "args[0]"])
        if field.startswith("channel."):
            ev["channel"][field[8:]] = rng.choice(odd)
        elif field == "args[0]":
            ev["args"] = [rng.choice(odd)]
        else:
            ev[field] = rng.choice(odd)
        return "wrong_types", json.dumps(ev)
    if r < 0.86:  # well-formed, for channels xlbridge does not know
        kind = rng.choice(("StasisEnd", "ChannelDestroyed", "PlaybackFinished", "ChannelStateChange"))
        ev = {"type": kind, "channel": _channel(rng), "playback": {"id": "nope", "target_uri": "channel:nope"}}
        return "unknown_channel", json.dumps(ev)
    if r < 0.88:  # StasisStart of an unknown channel with odd Stasis args
        args = rng.choice([[], ["room="], ["lang=xx"], ["dial="], ["room=" + "z" * 500], ["a=b"] * 50])
        return "stasis_start_odd_args", json.dumps({"type": "StasisStart", "channel": _channel(rng), "args": args})
    if r < 0.93:  # not an object
        return "not_object", rng.choice(["[]", "1", "null", "\"StasisStart\"", "true", "[{\"type\":\"StasisEnd\"}]",
                                         "1e999", "-" , "NaN", "{}", "{\"type\":null}"])
    if r < 0.95:  # deep nesting (the json module recurses)
        depth = rng.choice([100, 1000, 5000, 50000])
        opener = rng.choice(["[", "{\"a\":"])
        closer = "]" if opener == "[" else "}"
        return "deep_nesting", opener * depth + "1" + closer * depth
    if r < 0.97:  # garbage text
        n = rng.randint(0, 400)
        return "garbage_text", "".join(chr(rng.randint(1, 0xD7FF)) for _ in range(n))
    if r < 0.985:  # binary frames (ARI sends text only)
        return "binary_frame", rng.randbytes(rng.randint(0, 2000))
    if r < 0.9998:  # numbers that json turns into huge ints or inf
        return "odd_numbers", json.dumps({"type": "StasisEnd", "channel": {"id": 1}})[:-2] + "9" * 5000 + "}}"
    # huge payload (about 20 per 100,000 events): a real event with a large field (1-8 MB)
    size = rng.choice([1 << 20, 4 << 20, 8 << 20])
    return "huge_payload", json.dumps({"type": "ChannelVarset", "channel": _channel(rng), "value": "v" * size})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", default="xlbridge")
    ap.add_argument("--password", default="fuzz-pass")
    ns = ap.parse_args(argv)

    from twisted.internet import reactor, stdio
    from twisted.protocols.basic import LineReceiver

    from tests.fakes.ari import FakeARI

    fake = FakeARI(reactor, ns.user, ns.password)
    url = fake.listen(ns.port)
    opened = {"n": 0}
    orig_append = fake.sockets.append

    class _Sockets(list):  # count every events socket xlbridge opens
        def append(self, item: Any) -> None:
            opened["n"] += 1
            super().append(item)

    fake.sockets = _Sockets(fake.sockets)  # type: ignore[assignment]
    del orig_append

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            words = line.decode().split()
            if not words:
                return
            if words[0] == "quit":
                reactor.stop()  # type: ignore[attr-defined]
            elif words[0] == "status":
                self.sendLine(("status " + json.dumps({"open": len(fake.sockets), "opened": opened["n"]})).encode())
            elif words[0] == "go":
                run(int(words[1]), int(words[2]), float(words[3]), self.sendLine)

    def run(n: int, seed: int, rate: float, reply: Callable[[bytes], None]) -> None:
        rng = random.Random(seed)
        counts: dict[str, int] = {}
        sent = {"n": 0, "bytes": 0, "no_socket": 0}
        batch = max(1, int(rate / 100))

        def step() -> None:
            for _ in range(batch):
                if sent["n"] >= n:
                    break
                case, data = event_case(rng)
                sockets = [s for s in fake.sockets if s.state == s.STATE_OPEN]
                if not sockets:
                    sent["no_socket"] += 1
                for s in sockets:
                    if isinstance(data, bytes):
                        s.sendMessage(data, isBinary=True)
                        sent["bytes"] += len(data)
                    else:
                        raw = data.encode("utf-8", "surrogatepass")
                        s.sendMessage(raw, isBinary=False)
                        sent["bytes"] += len(raw)
                counts[case] = counts.get(case, 0) + 1
                sent["n"] += 1
            if sent["n"] < n:
                reactor.callLater(0.01, step)  # type: ignore[attr-defined]
            else:
                # let the last frames go out, then report
                reactor.callLater(1.0, finish)  # type: ignore[attr-defined]

        def finish() -> None:
            out = {"sent": sent["n"], "bytes": sent["bytes"], "sent_without_socket": sent["no_socket"],
                   "by_case": counts, "open_sockets": len(fake.sockets), "sockets_opened": opened["n"],
                   "rest_requests": len(fake.requests),
                   "rest_by_path": _paths(fake.requests)}
            reply(("done " + json.dumps(out)).encode())

        step()

    def _paths(reqs: list[Any]) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in reqs:
            key = f"{r.method} /{r.path.strip('/').split('/')[0]}"
            out[key] = out.get(key, 0) + 1
        return out

    stdio.StandardIO(Control())
    print(f"listening {url}", flush=True)
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
