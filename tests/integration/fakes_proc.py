"""
Fake Deepgram, DeepL, ElevenLabs and ARI servers in one process, each
with the key it accepts and the faults it injects given as JSON, for tests
that run xlbridge as a process too (tests/integration/test_secrets.py)::

    python -m tests.integration.fakes_proc '{"dg": {"kind": "deepgram", "api_key": "k", "reject": [100, 500]}}'

It prints one JSON line, ``{NAME: URL, ...}``, then serves until SIGTERM.
A separate process because the tests drive xlbridge with blocking calls,
which would stall fakes that shared their reactor.

Per ``kind`` (other keys are options):

- ``deepgram``: ``api_key``; ``reject``: ``[count, status]`` upgrades refused.
- ``deepl``: ``auth_key``; any other key is a ``Faults`` field
  (``fail_5xx``, ``status_5xx``, ``forbidden``...).
- ``elevenlabs``: ``api_key``; ``fail``: ``[failure, count]`` (401, 500...).
- ``ari``: ``user``, ``password``; ``ws_failures``: statuses of the next
  events WebSocket upgrades.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main(argv: list[str]) -> int:
    from twisted.internet import reactor

    from tests.fakes.ari import FakeARI
    from tests.fakes.deepgram import start_fake_deepgram
    from tests.fakes.deepl import start_fake_deepl
    from tests.fakes.elevenlabs import start_fake_elevenlabs

    spec: dict[str, dict[str, Any]] = json.loads(argv[0]) if argv else {}
    urls: dict[str, str] = {}
    for name, options in spec.items():
        options = dict(options)
        kind = options.pop("kind")
        if kind == "deepgram":
            reject = options.pop("reject", None)
            deepgram = start_fake_deepgram(reactor, **options)
            if reject:
                deepgram.reject_next(int(reject[0]), int(reject[1]))
            urls[name] = deepgram.url
        elif kind == "deepl":
            urls[name] = start_fake_deepl(reactor, **options).url
        elif kind == "elevenlabs":
            fail = options.pop("fail", None)
            elevenlabs = start_fake_elevenlabs(reactor, chunk_interval=0.0, first_byte_delay=0.0, **options)
            if fail:
                elevenlabs.fail_next(fail[0], int(fail[1]))
            urls[name] = elevenlabs.url
        elif kind == "ari":
            failures = options.pop("ws_failures", [])
            ari = FakeARI(reactor, **options)
            ari.ws_failures = list(failures)
            ari.listen()
            urls[name] = ari.url
        else:
            raise SystemExit(f"unknown kind {kind!r}")
    print(json.dumps(urls), flush=True)
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
