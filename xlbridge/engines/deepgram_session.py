"""
Deepgram live ASR, the sans-I/O part: settings, the ``/v1/listen`` URL,
turning server messages into :mod:`xlbridge.engines.base` events, the
reconnect policy, error classification, and the bounded audio spool that
makes a short drop lose no words.

Nothing here touches a socket or a clock; :mod:`xlbridge.engines.deepgram`
owns those and asks this module what to do.  Wire facts are in
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

* **Errors.**  An upgrade refused with 401/403 is an
  :class:`~xlbridge.engines.base.EngineAuthError`, 400 and other 4xx an
  :class:`~xlbridge.engines.base.EngineRequestError` (neither is retried);
  408, 429, 5xx, drops and ``NET-`` closes are
  :class:`~xlbridge.engines.base.EngineUnavailable` (retried with backoff).
  Close reasons are keyed on their prefix (``NET-``, ``DATA-``), not the
  close code, because the documented codes disagree (PROTOCOLS.md 2.5).
"""

from __future__ import annotations

import collections
import json
import math
from typing import Any, Callable, Iterator, Mapping, Optional, Union
from urllib.parse import urlencode, urlsplit

import attrs
import numpy as np
from twisted.logger import Logger

from xlbridge.audio.frame import SAMPLE_RATE, Samples
from xlbridge.engines.base import (
    ASREvent,
    EngineAuthError,
    EngineError,
    EngineQuotaError,
    EngineRequestError,
    EngineUnavailable,
    SpeechStarted,
    Transcript,
    UtteranceEnd,
    redact,
)
from xlbridge.errors import ConfigError

ENGINE = "deepgram"

#: Default service root; the client appends ``/v1/listen?...``.
DEFAULT_BASE_URL = "wss://api.deepgram.com"

#: Environment variables read by :meth:`DeepgramSettings.from_env`.
ENV_API_KEY = "DEEPGRAM_API_KEY"
ENV_URL = "XLBRIDGE_DEEPGRAM_URL"

#: Control messages; each must go out as a WebSocket *text* frame.
KEEPALIVE = json.dumps({"type": "KeepAlive"})
FINALIZE = json.dumps({"type": "Finalize"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})

#: Bytes per sample of ``linear16`` (16-bit little-endian PCM).
BYTES_PER_SAMPLE = 2


def _bool(v: bool) -> str:
    return "true" if v else "false"


def _check(option: str, ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(option, message)


@attrs.frozen
class DeepgramSettings:
    """
    Everything that configures the Deepgram client, shared by all legs.

    Audio format parameters (``encoding=linear16``, ``sample_rate=16000``,
    ``channels=1``) are not settings: they describe what this client sends
    (internal audio as little-endian 16-bit PCM) and must not disagree with
    it.  Anything else Deepgram accepts can go in ``extra_params``.

    :ivar api_key: sent as ``Authorization: Token <key>``; shown redacted.
    :ivar base_url: ``wss://`` (TLS, certificate verified) or ``ws://``
        (tests, private deployments) service root, without ``/v1/listen``.
    :ivar model: Deepgram model, e.g. ``nova-3``.
    :ivar endpointing: silence in ms that ends an utterance
        (``speech_final``), or ``False`` to disable endpointing.
    :ivar utterance_end_ms: gap in ms after the last word before an
        ``UtteranceEnd``; ``None`` to not ask for it (needs
        ``interim_results``).
    :ivar interim_results: ask for interim (not final) results.
    :ivar vad_events: ask for ``SpeechStarted`` messages.
    :ivar smart_format: Deepgram smart formatting.
    :ivar punctuate: Deepgram punctuation.
    :ivar extra_params: further ``(name, value)`` query parameters.
    :ivar keepalive_s: seconds without sending anything before a
        ``KeepAlive`` goes out (Deepgram closes after ~10 s, trap T4).
    :ivar replay_s: seconds of audio kept for replay after a reconnect.
    :ivar chunk_ms: audio per binary message, 20..100 ms.  20 (the default)
        forwards every RTP packet at once: larger messages save frames but
        hold the first packet of each message back by up to
        ``chunk_ms - 20`` ms before Deepgram sees it.
    :ivar backoff_initial_s: first reconnect delay, seconds (before jitter).
    :ivar backoff_max_s: largest reconnect delay, seconds.
    :ivar backoff_factor: growth of the delay per consecutive failure.
    :ivar connect_timeout_s: seconds for TCP, TLS and the WebSocket upgrade.
    :ivar finish_timeout_s: seconds :meth:`finish` waits for the last results.
    """

    api_key: str = attrs.field(default="", repr=lambda v: redact(v))
    base_url: str = DEFAULT_BASE_URL
    model: str = "nova-3"
    endpointing: Union[int, bool] = 300
    utterance_end_ms: Optional[int] = 1000
    interim_results: bool = True
    vad_events: bool = True
    smart_format: bool = True
    punctuate: bool = True
    extra_params: tuple[tuple[str, str], ...] = ()
    keepalive_s: float = 4.0
    replay_s: float = 5.0
    chunk_ms: int = 20
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_factor: float = 2.0
    connect_timeout_s: float = 10.0
    finish_timeout_s: float = 5.0

    def __attrs_post_init__(self) -> None:
        scheme = urlsplit(self.base_url).scheme
        _check("deepgram-url", scheme in ("ws", "wss"),
               f"must start with wss:// or ws://, got {self.base_url!r}")
        _check("deepgram-model", bool(self.model), "must not be empty")
        _check("deepgram-chunk-ms", 20 <= self.chunk_ms <= 100,
               f"must be 20..100 ms, got {self.chunk_ms}")
        _check("deepgram-keepalive", 0 < self.keepalive_s < 10,
               f"must be between 0 and 10 s (Deepgram closes idle sockets after 10 s), got {self.keepalive_s}")
        _check("deepgram-replay", 0 <= self.replay_s <= 60, f"must be 0..60 s, got {self.replay_s}")
        _check("deepgram-backoff", 0 < self.backoff_initial_s <= self.backoff_max_s,
               "need 0 < initial <= max")
        _check("deepgram-backoff", self.backoff_factor >= 1.0, "factor must be >= 1")
        _check("deepgram-connect-timeout", self.connect_timeout_s > 0, "must be > 0")
        _check("deepgram-finish-timeout", self.finish_timeout_s > 0, "must be > 0")
        ep = self.endpointing
        _check("deepgram-endpointing", ep is False or (not isinstance(ep, bool) and isinstance(ep, int) and ep > 0),
               f"must be a positive number of ms or false, got {ep!r}")
        ue = self.utterance_end_ms
        _check("deepgram-utterance-end", ue is None or ue > 0, f"must be > 0 ms, got {ue!r}")
        _check("deepgram-utterance-end", ue is None or self.interim_results,
               "Deepgram needs interim_results for utterance_end_ms")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> "DeepgramSettings":
        """
        Build settings from the environment and explicit values.

        Precedence: built-in default < environment (``DEEPGRAM_API_KEY``,
        ``XLBRIDGE_DEEPGRAM_URL``) < ``overrides``.  An override of ``None``
        counts as "not given", so callers can pass unset options through.

        :raises ConfigError: for a bad value.
        """
        values: dict[str, Any] = {}
        if environ.get(ENV_API_KEY):
            values["api_key"] = environ[ENV_API_KEY].strip()
        if environ.get(ENV_URL):
            values["base_url"] = environ[ENV_URL].strip()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def chunk_samples(self) -> int:
        """Samples (16 kHz) per binary audio message."""
        return SAMPLE_RATE * self.chunk_ms // 1000


def listen_url(settings: DeepgramSettings, language: str) -> str:
    """
    The ``/v1/listen`` WebSocket URL for one stream.

    :param language: BCP-47 code such as ``en`` or ``es``.
    :return: ``<base_url>/v1/listen?model=...`` with every query parameter;
        the API key is never part of it (it goes in a header).
    """
    params: list[tuple[str, str]] = [
        ("model", settings.model),
        ("language", language),
        ("encoding", "linear16"),
        ("sample_rate", str(SAMPLE_RATE)),
        ("channels", "1"),
        ("interim_results", _bool(settings.interim_results)),
        ("endpointing", "false" if settings.endpointing is False else str(int(settings.endpointing))),
    ]
    if settings.utterance_end_ms is not None:
        params.append(("utterance_end_ms", str(settings.utterance_end_ms)))
    params += [
        ("vad_events", _bool(settings.vad_events)),
        ("smart_format", _bool(settings.smart_format)),
        ("punctuate", _bool(settings.punctuate)),
    ]
    params += [(str(k), str(v)) for k, v in settings.extra_params]
    base = settings.base_url.rstrip("/")
    if not base.endswith("/v1/listen"):
        base += "/v1/listen"
    return f"{base}?{urlencode(params)}"


def backoff_delay(
    attempt: int,
    initial: float,
    maximum: float,
    factor: float = 2.0,
    random: Callable[[], float] = lambda: 1.0,
) -> float:
    """
    Seconds to wait before reconnect attempt number ``attempt``.

    Exponential with "equal jitter": the ceiling ``min(maximum, initial *
    factor ** (attempt - 1))`` is halved and the other half is random, so
    legs that dropped together do not reconnect together, the delay never
    reaches zero, and never exceeds ``maximum``.

    :param attempt: consecutive failures so far, 1 for the first retry.
    :param random: returns a float in ``[0, 1)`` (injected for tests).
    """
    n = max(1, attempt) - 1
    # Cap the exponent so huge attempt counts cannot overflow a float.
    ceiling = min(maximum, initial * factor ** min(n, 64))
    return ceiling / 2 + ceiling / 2 * min(max(random(), 0.0), 1.0)


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, redact(secret)) if secret else text


def classify_upgrade_failure(
    status: int, dg_error: Optional[str], request_id: Optional[str] = None, secret: str = ""
) -> EngineError:
    """
    The error for an HTTP upgrade answered with ``status`` instead of 101.

    :param dg_error: the ``dg-error`` response header, Deepgram's reason.
    :param request_id: the ``dg-request-id`` header, for support tickets.
    :param secret: scrubbed from the message should the server echo it.
    """
    detail = f"HTTP {status}"
    if dg_error:
        detail += f": {dg_error}"
    if request_id:
        detail += f" (dg-request-id {request_id})"
    detail = _scrub(detail, secret)
    if status in (401, 403):
        return EngineAuthError(ENGINE, detail)
    if status == 402:
        return EngineQuotaError(ENGINE, detail)
    if status in (408, 429) or status >= 500:
        return EngineUnavailable(ENGINE, detail)
    return EngineRequestError(ENGINE, detail)


def classify_close(code: Optional[int], reason: Optional[str], detail: str = "") -> EngineError:
    """
    The error for a connection that closed while we did not expect it.

    ``DATA-`` reasons mean Deepgram cannot decode our audio: a bug that a
    retry would repeat.  Everything else (``NET-0001`` idle timeout,
    ``NET-0000``, 1006 drops, an early 1000) may heal by reconnecting.

    :param detail: extra text, e.g. the last legacy ``Error`` message.
    """
    text = f"connection closed (code {code}" + (f", {reason}" if reason else "") + ")"
    if detail:
        text += f"; {detail}"
    if (reason or "").startswith("DATA-"):
        return EngineRequestError(ENGINE, text)
    return EngineUnavailable(ENGINE, text)


def _number(v: Any) -> float:
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
