"""
Run the fake cloud engines as a process, to try the bridge by hand.

    python -m tests.fakes all                   # Deepgram, DeepL, ElevenLabs
    python -m tests.fakes deepgram --port 8801  # one of them, with its options
    python -m tests.fakes deepgram-flux --port 0  # Deepgram Flux (/v2/listen)
    python -m tests.fakes chan_websocket --dial ws://127.0.0.1:7002/  # Asterisk's
                                                # WebSocket media channel, dialling a
                                                # bridge started with --websocket 7002=7002

It prints the environment to give the bridge, e.g.::

    export XLBRIDGE_DEEPGRAM_URL=ws://127.0.0.1:8801 DEEPGRAM_API_KEY=test-key ...
    twistd -n xlbridge --ports 7777,8888 --engines cloud

The fakes "hear" and "speak" words as tones (tests/fakes/tonewords.py).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

FAKES = ("deepgram", "deepl", "elevenlabs")
EXTRA = ("chan_websocket", "deepgram-flux")  # not started by "all"
#: Needs a setting besides the environment: printed with the exports.
SETTINGS = {"deepgram-flux": '[deepgram] api = "flux" (and flux_model = "flux-general-multi" for non-English legs)'}
PORTS = {"deepgram": 8801, "deepl": 8802, "elevenlabs": 8803}
ENV = {
    "deepgram": ("XLBRIDGE_DEEPGRAM_URL", "DEEPGRAM_API_KEY"),
    "deepgram-flux": ("XLBRIDGE_DEEPGRAM_URL", "DEEPGRAM_API_KEY"),
    "deepl": ("XLBRIDGE_DEEPL_URL", "DEEPL_AUTH_KEY"),
    "elevenlabs": ("XLBRIDGE_ELEVENLABS_URL", "ELEVENLABS_API_KEY"),
}


def _module(name: str) -> Any:
    import importlib

    return importlib.import_module(f"tests.fakes.{name.replace('-', '_')}")


def _key(fake: Any) -> str:
    for attr in ("api_key", "auth_key"):
        value = getattr(fake, attr, None)
        if value:
            return str(value)
    return "test-key"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="which", required=True)
    sub.add_parser("all", help="all three on ports 8801-8803")
    for name in FAKES + EXTRA:
        p = sub.add_parser(name, help=f"the fake {name}")
        _module(name).add_arguments(p)
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    started: list[tuple[str, Any]] = []
    if args.which == "all":
        for name in FAKES:
            sub_args = sub.choices[name].parse_args(["--port", str(PORTS[name])])
            started.append((name, _module(name).run_from_args(reactor, sub_args)))
    else:
        started.append((args.which, _module(args.which).run_from_args(reactor, args)))
    exports = []
    for name, fake in started:
        if name in SETTINGS:
            print(f"fake {name}: the bridge needs {SETTINGS[name]}", flush=True)
        if name not in ENV:
            continue  # not an engine, or nothing to export
        url_var, key_var = ENV[name]
        exports.append(f"{url_var}={fake.url}")
        exports.append(f"{key_var}={_key(fake)}")
        print(f"fake {name} listening on {fake.url}", flush=True)
    if exports:
        print("export " + " ".join(exports), flush=True)
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
