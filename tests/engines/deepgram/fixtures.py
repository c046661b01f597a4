"""
What the Deepgram tests share: a key, server messages, silence, stand-ins
for the Autobahn protocol and for a connection's owner, and waits for the
loopback tests (which run on the real reactor).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

import numpy as np
from twisted.internet import reactor as _reactor
from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks

from xlbridge.engines.base import EngineError

reactor: Any = _reactor
KEY = "sk-test-0123456789abcdef"


def results(text: str, start: float, duration: float, is_final: bool = False,
            speech_final: bool = False, **extra: Any) -> str:
    """A Deepgram ``Results`` message, one word per token spanning the whole result."""
    words = [{"word": w, "start": start, "end": start + duration, "confidence": 0.9} for w in text.split()]
    msg = {"type": "Results", "channel_index": [0, 1], "start": start, "duration": duration,
           "is_final": is_final, "speech_final": speech_final,
           "channel": {"alternatives": [{"transcript": text, "confidence": 0.9, "words": words}]},
           "metadata": {"request_id": "r1"}}
    msg.update(extra)
    return json.dumps(msg)


def silence_ms(ms: int) -> np.ndarray:
    return np.zeros(16 * ms, dtype=np.int16)


class RecordingProto:
    """Stands in for the Autobahn protocol: records what the client sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bool]] = []
        self.dropped = False
        self.http_status_line: Optional[str] = None
        self.http_headers: dict[str, str] = {}

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        self.sent.append((payload, isBinary))

    def dropConnection(self, abort: bool = False) -> None:
        self.dropped = True

    def sendPing(self, payload: Optional[bytes] = None) -> None:
        self.pings = getattr(self, "pings", 0) + 1

    def texts(self) -> list[str]:
        return [json.loads(p)["type"] for p, b in self.sent if not b]

    def binaries(self) -> list[bytes]:
        return [p for p, b in self.sent if b]


class RecordingOwner:
    """
    A :class:`~xlbridge.engines.deepgram.connection.DeepgramConnectionOwner`
    that logs every report as a tuple, in order.
    """

    def __init__(self) -> None:
        self.reports: list[tuple[Any, ...]] = []

    def connection_opened(self, request_id: Optional[str]) -> None:
        self.reports.append(("opened", request_id))

    def message_received(self, payload: bytes, is_binary: bool) -> None:
        self.reports.append(("message", payload, is_binary))

    def connection_down(self, error: EngineError, retrying: bool) -> None:
        self.reports.append(("down", error, retrying))

    def connection_closed(self) -> None:
        self.reports.append(("closed",))

    def kinds(self) -> list[str]:
        return [r[0] for r in self.reports]


def eventually(predicate: Callable[[], bool], timeout: float = 3.0) -> "Deferred[None]":
    """Fire when ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = reactor.seconds() + timeout

    @inlineCallbacks
    def poll() -> Any:
        while not predicate():
            if reactor.seconds() > deadline:
                raise AssertionError(f"timed out waiting for {predicate}")
            yield task.deferLater(reactor, 0.01, lambda: None)

    return poll()


def sleep(seconds: float) -> "Deferred[None]":
    return task.deferLater(reactor, seconds, lambda: None)
