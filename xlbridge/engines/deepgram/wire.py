"""
Deepgram live ASR, the sans-I/O part: turning server messages into
:mod:`xlbridge.engines.base` events, the client's control messages, and the
bounded audio spool that makes a short drop lose no words.

Nothing here touches a socket or a clock;
:mod:`xlbridge.engines.deepgram.connection` (the socket) and
:mod:`xlbridge.engines.deepgram.asr` (the clock, feeding and replay) own
those and ask this module what to do.  Settings, the ``/v1/listen`` URL,
the reconnect policy and error classification are in
:mod:`xlbridge.engines.deepgram.settings`.  Wire facts are in
``PROTOCOLS.md`` section 2 (Deepgram) and trap T1/T4.

Design notes
------------

* **Timestamps.**  Deepgram times every ``Results`` relative to the start of
  *its* connection (seconds of audio it received).  A new connection starts
  at 0 again, so :class:`DeepgramSession` keeps an offset: the stream
  position (seconds since the leg's first sample) of the first sample sent on
  the current connection.  Every event leaves this module in stream time.

* **Replay.**  :class:`AudioSpool` cuts the leg's audio into messages of
  ``chunk_ms`` and keeps the last ``replay_s`` seconds of them (bounded,
  drop-oldest, counted).  When a connection opens, everything after the end
  of the last *final* result is sent again: the audio captured during an
  outage, and audio the dropped connection received but never finalized.
  Whole chunks only, so every message stays within 20-100 ms.
"""

from __future__ import annotations

import collections
import json
import math
from typing import Any, Callable, Iterator, Optional, Union

import attrs
import numpy as np
from twisted.logger import Logger

from xlbridge.audio.frame import Samples
from xlbridge.engines.base import ASREvent, SpeechStarted, Transcript, UtteranceEnd

__all__ = [
    "BYTES_PER_SAMPLE",
    "CLOSE_STREAM",
    "FINALIZE",
    "KEEPALIVE",
    "AudioSpool",
    "Chunk",
    "DeepgramSession",
]

#: Control messages; each must go out as a WebSocket *text* frame.
KEEPALIVE = json.dumps({"type": "KeepAlive"})
FINALIZE = json.dumps({"type": "Finalize"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})

#: Bytes per sample of ``linear16`` (16-bit little-endian PCM).
BYTES_PER_SAMPLE = 2


def _number(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"not a finite number: {v!r}")
    return float(v)


class DeepgramSession:
    """
    Turns Deepgram server messages into events in stream time.

    Fed decoded text frames, one at a time, by whoever owns the socket.
    Malformed JSON and messages missing required fields are counted in
    :attr:`malformed` and skipped; unknown ``type`` values are counted in
    :attr:`unknown` and logged at debug (as the official SDK does).  It
    never raises.

    Empty *interim* transcripts (Deepgram sends them during silence) are
    dropped; finals are always delivered, even empty, since their
    ``speech_final`` and span matter.

    :ivar offset: stream seconds at which the current connection's time 0 is.
    :ivar final_end: stream seconds up to which results are final.
    :ivar request_id: ``dg-request-id`` / ``Metadata.request_id`` of the
        current connection, if known.
    :ivar last_error: text of the last legacy ``Error`` message, if any.
    """

    log = Logger()

    def __init__(self) -> None:
        self.offset = 0.0
        self.final_end = 0.0
        self.request_id: Optional[str] = None
        self.last_error: Optional[str] = None
        self.malformed = 0
        self.unknown = 0
        self.results = 0
        self.metadata: Optional[dict[str, Any]] = None

    def connection_opened(self, offset: float, request_id: Optional[str] = None) -> None:
        """
        A new connection is open; its first audio sample sits at stream
        second ``offset``.
        """
        self.offset = offset
        self.request_id = request_id
        self.last_error = None
        self.metadata = None

    def receive(self, text: Union[str, bytes], now: float) -> list[ASREvent]:
        """
        Parse one server text frame.

        :param now: reactor time, stored as ``received_at``.
        :return: zero or more events, stream-timed.
        """
        try:
            msg = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            self.malformed += 1
            return []
        if not isinstance(msg, dict):
            self.malformed += 1
            return []
        kind = msg.get("type")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            self.unknown += 1
            self.log.debug("deepgram: skipping message of unknown type {kind!r}", kind=kind)
            return []
        try:
            return handler(self, msg, now)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            self.malformed += 1
            return []

    def _results(self, msg: dict[str, Any], now: float) -> list[ASREvent]:
        start = _number(msg["start"])
        duration = _number(msg["duration"])
        alternatives = msg["channel"]["alternatives"]
        alt = alternatives[0] if alternatives else {}
        text = alt.get("transcript", "")
        if not isinstance(text, str):
            raise TypeError("transcript is not a string")
        confidence = _number(alt.get("confidence", 0.0))
        is_final = msg.get("is_final") is True
        speech_final = msg.get("speech_final") is True
        self.results += 1
        begin = self.offset + start
        end = begin + duration
        words = alt.get("words") or []
        speech_end = None
        if words and isinstance(words[-1], dict) and "end" in words[-1]:
            speech_end = self.offset + _number(words[-1]["end"])
        if is_final:
            self.final_end = max(self.final_end, end)
        elif not text.strip():
            return []
        return [Transcript(text=text.strip(), is_final=is_final, speech_final=speech_final,
                           start=begin, end=end, received_at=now, confidence=confidence,
                           speech_end=speech_end)]

    def _utterance_end(self, msg: dict[str, Any], now: float) -> list[ASREvent]:
        return [UtteranceEnd(last_word_end=self.offset + _number(msg["last_word_end"]), received_at=now)]

    def _speech_started(self, msg: dict[str, Any], now: float) -> list[ASREvent]:
        return [SpeechStarted(timestamp=self.offset + _number(msg["timestamp"]), received_at=now)]

    def _metadata(self, msg: dict[str, Any], now: float) -> list[ASREvent]:
        self.metadata = msg
        if isinstance(msg.get("request_id"), str):
            self.request_id = msg["request_id"]
        return []

    def _error(self, msg: dict[str, Any], now: float) -> list[ASREvent]:
        parts = [str(msg[k]) for k in ("variant", "description", "message") if msg.get(k)]
        self.last_error = " ".join(parts) or "error"
        self.log.warn("deepgram: server error message: {error}", error=self.last_error)
        return []

    _handlers: dict[str, Callable[["DeepgramSession", dict[str, Any], float], list[ASREvent]]] = {
        "Results": _results,
        "UtteranceEnd": _utterance_end,
        "SpeechStarted": _speech_started,
        "Metadata": _metadata,
        "Error": _error,
    }


@attrs.define
class Chunk:
    """
    One binary message worth of audio.

    :ivar position: stream position of its first sample, in samples.
    :ivar samples: internal audio (16 kHz int16, native order).
    :ivar sent: whether it went out on some connection.
    """

    position: int
    samples: Samples
    sent: bool = False

    @property
    def end(self) -> int:
        """Stream position just past the last sample, in samples."""
        return self.position + len(self.samples)


class AudioSpool:
    """
    Cuts a leg's audio into fixed messages and keeps recent ones for replay.

    Bounded: after :meth:`trim` at most ``capacity`` samples are held; the
    oldest chunk goes first and, if it was never sent, its length is added
    to :attr:`dropped_samples`.  Chunks wholly before the last final result
    are released early (:meth:`release_before`).

    :param chunk: samples per message (e.g. 640 for 40 ms).
    :param capacity: samples kept at most (at least one chunk).
    """

    def __init__(self, chunk: int, capacity: int) -> None:
        self.chunk = chunk
        self.capacity = max(capacity, chunk)
        self.position = 0
        self.held = 0
        self.dropped_samples = 0
        self._chunks: collections.deque[Chunk] = collections.deque()
        self._pending: list[Samples] = []
        self._pending_n = 0

    def push(self, samples: Samples) -> list[Chunk]:
        """
        Add audio; return the whole chunks it completed, oldest first (the
        remainder waits for more audio).
        """
        if len(samples) == 0:
            return []
        self._pending.append(np.ascontiguousarray(samples, dtype=np.int16))
        self._pending_n += len(samples)
        if self._pending_n < self.chunk:
            return []
        data = np.concatenate(self._pending)
        whole = len(data) - len(data) % self.chunk
        rest = data[whole:]
        self._pending = [rest] if len(rest) else []
        self._pending_n = len(rest)
        return [self._add(data[i:i + self.chunk]) for i in range(0, whole, self.chunk)]

    def flush(self, minimum: int) -> Optional[Chunk]:
        """
        Turn the remainder into a last chunk, padded with silence to
        ``minimum`` samples so no message is too short; ``None`` if empty.
        """
        if not self._pending_n:
            return None
        data = np.concatenate(self._pending)
        if len(data) < minimum:
            data = np.concatenate((data, np.zeros(minimum - len(data), dtype=np.int16)))
        self._pending = []
        self._pending_n = 0
        return self._add(data)

    def _add(self, samples: Samples) -> Chunk:
        c = Chunk(self.position, samples.copy())
        self.position += len(samples)
        self._chunks.append(c)
        self.held += len(samples)
        return c

    def trim(self) -> int:
        """
        Enforce the bound: drop the oldest chunks until at most
        ``capacity`` samples are held.  Call after sending what
        :meth:`push` returned, so audio sent live is not counted as lost.

        :return: samples dropped that had never been sent.
        """
        lost = 0
        while self.held > self.capacity and len(self._chunks) > 1:
            old = self._chunks.popleft()
            self.held -= len(old.samples)
            if not old.sent:
                lost += len(old.samples)
        self.dropped_samples += lost
        return lost

    def release_before(self, position: int) -> None:
        """Forget sent chunks that end at or before ``position`` (samples)."""
        while self._chunks and self._chunks[0].sent and self._chunks[0].end <= position:
            self.held -= len(self._chunks.popleft().samples)

    def replay(self, position: int) -> list[Chunk]:
        """
        The chunks to send on a new connection: every held chunk that ends
        after ``position`` (the end of the last final), oldest first.
        """
        return [c for c in self._chunks if c.end > position]

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self._chunks)
