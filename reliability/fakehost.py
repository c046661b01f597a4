"""
The fake engines (Deepgram, DeepL, ElevenLabs) and a fake ARI in one
process, with a line-based control port so a runner can switch the
engines' own errors on and off while calls are running.

Why one process with a control socket: ``python -m tests.fakes NAME`` takes
its failure options at start-up only, while the fault runner
(:mod:`reliability.faults`) must inject an error into a *running* engine
(e.g. DeepL answers 429 for the next 20 s, then recovers) without the
bridge noticing a restart.

Run::

    python -m reliability.fakehost [--dg-latency 0] [--deepl-latency 0.15] \\
        [--tts-first-byte-ms 100] [--tts-chunk-interval-ms 10]

It prints one JSON line: ``{"deepgram": URL, "deepl": URL, "elevenlabs":
URL, "ari": URL, "control": PORT}``.  Control lines (answers are one JSON
line each)::

    deepgram close_live [CODE]        # close every stream (1011 NET-0000)
    deepgram metadata on|off          # Metadata after CloseStream or not
    deepgram reject COUNT STATUS      # refuse the next upgrades
    deepl set FIELD VALUE             # a tests.fakes.deepl.Faults field, e.g. fail_429 1000000
    elevenlabs fail KIND COUNT        # 401, 429, system_busy, 500, quota...
    elevenlabs drop AFTER_BYTES COUNT # cut the next COUNT streams after N bytes
    elevenlabs clear                  # forget pending failures and drops
    status                            # live connections and request counts
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional

from twisted.internet import protocol
from twisted.protocols.basic import LineReceiver

from tests.fakes.ari import FakeARI
from tests.fakes.deepgram import start_fake_deepgram
from tests.fakes.deepl import start_fake_deepl
from tests.fakes.elevenlabs import start_fake_elevenlabs

__all__ = ["FakeHost", "main"]


def _value(v: str) -> Any:
    if v in ("on", "true"):
        return True
    if v in ("off", "false"):
        return False
    if v in ("none", "null"):
        return None
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


class FakeHost:
    """
    The three fake engines and the fake ARI, each on its own port.

    :param dg_latency: seconds the fake Deepgram delays each message.
    :param deepl_latency: seconds before each DeepL answer.
    :param tts_first_byte_ms: ElevenLabs delay before the first audio byte, ms.
    :param tts_chunk_interval_ms: ElevenLabs pause between audio chunks, ms.
    """

    def __init__(self, reactor: Any, dg_latency: float = 0.0, deepl_latency: float = 0.15,
                 tts_first_byte_ms: float = 100.0, tts_chunk_interval_ms: float = 10.0) -> None:
        self.deepgram = start_fake_deepgram(reactor, api_key="test-key", latency=dg_latency)
        self.deepl = start_fake_deepl(reactor, auth_key="test-key:fx", latency=deepl_latency)
        self.elevenlabs = start_fake_elevenlabs(reactor, api_key="test-key",
                                                first_byte_delay=tts_first_byte_ms / 1000.0,
                                                chunk_interval=tts_chunk_interval_ms / 1000.0)
        self.ari = FakeARI(reactor)
        self.ari_url = self.ari.listen(0)

    def urls(self) -> dict[str, str]:
        return {"deepgram": self.deepgram.url, "deepl": self.deepl.url, "elevenlabs": self.elevenlabs.url,
                "ari": self.ari_url}

    def command(self, line: str) -> dict[str, Any]:
        """Run one control line; never raises."""
        w = line.split()
        try:
            if not w:
                raise ValueError("empty command")
            if w[0] == "status":
                return {"ok": True, "deepgram_live": self.deepgram.live,
                        "deepgram_connections": len(self.deepgram.connections),
                        "deepl_requests": len(self.deepl.requests),
                        "elevenlabs_requests": len(self.elevenlabs.requests)}
            name, op, args = w[0], w[1], w[2:]
            if name == "deepgram":
                if op == "close_live":
                    return {"ok": True, "closed": self.deepgram.close_live(int(args[0]) if args else 1011)}
                if op == "metadata":
                    self.deepgram.metadata_at_end = bool(_value(args[0]))
                elif op == "reject":
                    self.deepgram.reject_next(int(args[0]), int(args[1]))
                else:
                    raise ValueError(f"unknown deepgram op {op!r}")
            elif name == "deepl":
                if op != "set":
                    raise ValueError(f"unknown deepl op {op!r}")
                if not hasattr(self.deepl.faults, args[0]):
                    raise ValueError(f"no DeepL fault {args[0]!r}")
                setattr(self.deepl.faults, args[0], _value(args[1]))
            elif name == "elevenlabs":
                el = self.elevenlabs
                if op == "fail":
                    el.fail_next(_value(args[0]), int(args[1]))
                elif op == "drop":
                    el.drop_next(int(args[0]), int(args[1]))
                elif op == "clear":
                    el._failures.clear()
                    el._drops.clear()
                    el._slow.clear()
                else:
                    raise ValueError(f"unknown elevenlabs op {op!r}")
            else:
                raise ValueError(f"unknown fake {name!r}")
        except Exception as e:
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}
        return {"ok": True}


class _Control(LineReceiver):
    delimiter = b"\n"

    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(json.dumps(self.host.command(line.decode("utf-8", "replace"))).encode("utf-8"))


class _ControlFactory(protocol.ServerFactory):
    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return _Control(self.host)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reliability.fakehost", description=__doc__.split("\n\n")[0])
    p.add_argument("--dg-latency", type=float, default=0.0, help="fake Deepgram delay per message, s")
    p.add_argument("--deepl-latency", type=float, default=0.15, help="fake DeepL delay, s")
    p.add_argument("--tts-first-byte-ms", type=float, default=100.0)
    p.add_argument("--tts-chunk-interval-ms", type=float, default=10.0)
    p.add_argument("--control", type=int, default=0, help="loopback control port (0 = any)")
    args = p.parse_args(argv)
    from twisted.internet import reactor

    host = FakeHost(reactor, args.dg_latency, args.deepl_latency, args.tts_first_byte_ms,
                    args.tts_chunk_interval_ms)
    cport = reactor.listenTCP(args.control, _ControlFactory(host), interface="127.0.0.1")  # type: ignore[attr-defined]
    print(json.dumps({**host.urls(), "control": cport.getHost().port}), flush=True)
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
