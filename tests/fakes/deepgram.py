"""
A fake Deepgram live ASR server (``/v1/listen`` WebSocket) for tests and
for running the bridge by hand (``python -m tests.fakes deepgram``).

Faithful to PROTOCOLS.md section 2 where it matters to a client:

* The upgrade is refused with HTTP 401 and a ``dg-error`` header for a
  missing or wrong ``Authorization: Token <key>``, 400 for a missing or bad
  ``encoding``/``sample_rate``/``channels`` or a bad boolean/number
  parameter, 404 for another path.  Every upgrade response carries
  ``dg-request-id``.
* Binary messages are audio in the declared encoding; only ``linear16``
  (16-bit signed **little-endian**) is understood.  Words are "recognised"
  with :func:`tests.fakes.tonewords.decode_words`, so audio in the wrong byte
  order or at the wrong rate yields no (or wrong) words.  An empty binary
  frame, an odd byte count, or a message outside 20-100 ms is recorded as a
  protocol violation (an empty frame also ends the stream, as the legacy
  close signal did).
* Interim ``Results`` while words accumulate; a final (``is_final`` and
  ``speech_final``) once a word run is followed by ``endpointing`` ms of
  silence; ``UtteranceEnd`` after ``utterance_end_ms`` of silence after the
  last word of a final; ``SpeechStarted`` when ``vad_events=true``.  All
  times are seconds of audio received on *this* connection.
* ``KeepAlive`` resets the idle timer (close 1011 ``NET-0001 ...`` after
  ``idle_timeout`` seconds with no audio or text); ``Finalize`` emits the
  pending final with ``from_finalize: true``; ``CloseStream`` emits the
  last final, a ``Metadata`` summary, then closes with 1000.

Failure injection: :attr:`FakeDeepgram.latency`, :meth:`FakeDeepgram.reject_next`,
:meth:`FakeDeepgram.drop_next` (after N bytes or seconds),
:meth:`FakeDeepgram.drop_all`, :meth:`FakeDeepgram.close_live` (close 1011
``NET-0000`` mid-stream) and :attr:`FakeDeepgram.metadata_at_end` (false:
``CloseStream`` ends with close 1000 but no ``Metadata``).  Every connection is recorded in a
:class:`ConnectionRecord`.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import uuid
from typing import Any, Optional

import attrs
import numpy as np
import txaio
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from tests.fakes import tonewords

RATE = 16000
FRAME = RATE // 50  # 20 ms of samples
MAX_AUDIO_BYTES = 64 * 1024 * 1024
NET_0001 = ("NET-0001 Deepgram did not receive audio data or a text message within the "
            "timeout window. See https://dpgr.am/net0001")

NET_0000 = "NET-0000 The service has not transmitted a Text frame to the client within the timeout window."

_PHRASES = {400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
            404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}
DG_ERRORS = {
    401: "Invalid credentials.",
    403: "Insufficient permissions.",
    429: "Too many requests. Please try again later.",
    500: "Internal server error.",
    503: "Service unavailable.",
}


@attrs.define(eq=False)
class ConnectionRecord:
    """
    What one connection (accepted or refused) looked like.

    :ivar headers: request headers, lower-case names.
    :ivar params: query parameters (first value of each).
    :ivar status: 101 if accepted, else the HTTP error sent.
    :ivar dg_error: the ``dg-error`` sent with a refusal.
    :ivar binary_sizes: byte length of every binary message, in order.
    :ivar text_messages: every text message, in order.
    :ivar violations: protocol violations seen (empty frame, bad size...).
    :ivar audio: all binary payload bytes received (bounded).
    :ivar sent: every JSON message sent, in order.
    :ivar close_code: close code we sent (1000, 1011) if we closed it.
    :ivar dropped: we aborted the TCP connection (failure injection).
    :ivar closed: the connection is gone.
    """

    path: str = ""
    headers: dict[str, str] = attrs.Factory(dict)
    params: dict[str, str] = attrs.Factory(dict)
    request_id: str = ""
    status: int = 0
    dg_error: Optional[str] = None
    binary_sizes: list[int] = attrs.Factory(list)
    text_messages: list[str] = attrs.Factory(list)
    violations: list[str] = attrs.Factory(list)
    audio: bytearray = attrs.Factory(bytearray)
    sent: list[dict[str, Any]] = attrs.Factory(list)
    close_code: Optional[int] = None
    close_reason: Optional[str] = None
    dropped: bool = False
    closed: bool = False

    @property
    def control_types(self) -> list[str]:
        """The ``type`` of every JSON text message, in order."""
        out = []
        for t in self.text_messages:
            try:
                out.append(str(json.loads(t).get("type")))
            except (ValueError, AttributeError):
                out.append("<malformed>")
        return out

    def words(self) -> list[str]:
        """Decode every word in the received audio, read as little-endian."""
        n = len(self.audio) // 2 * 2
        return tonewords.decode_words(np.frombuffer(bytes(self.audio[:n]), dtype="<i2").astype(np.int16))

    def results(self, final: Optional[bool] = None) -> list[dict[str, Any]]:
        """``Results`` messages sent; only finals or interims if ``final`` is given."""
        return [m for m in self.sent if m.get("type") == "Results"
                and (final is None or m.get("is_final") is final)]


class FrameFeeder:
    """
    Cuts received audio (16-bit little-endian, 16 kHz, any message size)
    into 20 ms float frames for :meth:`_frame`, keeping an odd rest for the
    next message.  The base of both fakes' recognisers.
    """

    _rest = b""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        buf = self._rest + data
        n = len(buf) // (2 * FRAME) * (2 * FRAME)
        self._rest = buf[n:]
        x = np.frombuffer(buf[:n], dtype="<i2").astype(np.float64) / 32768.0
        out: list[dict[str, Any]] = []
        for i in range(0, len(x), FRAME):
            out += self._frame(x[i:i + FRAME])
        return out

    def _frame(self, f: np.ndarray) -> list[dict[str, Any]]:
        raise NotImplementedError


class Recognizer(FrameFeeder):
    """
    Streaming tone-word "ASR" for one connection, sans-I/O: fed raw bytes
    (read as 16-bit little-endian, 16 kHz), returns Deepgram JSON messages.

    :param endpointing_ms: silence that makes a final, ``None`` = disabled.
    """

    def __init__(self, request_id: str = "", interim: bool = False, endpointing_ms: Optional[int] = 10,
                 utterance_end_ms: Optional[int] = None, vad_events: bool = False,
                 model: str = "nova-3") -> None:
        self.request_id = request_id
        self.interim = interim
        self.endpointing_ms = endpointing_ms
        self.utterance_end_ms = utterance_end_ms
        self.vad_events = vad_events
        self.model = model
        self._frames: list[np.ndarray] = []  # every 20 ms frame, float
        self.frame = 0  # frames processed
        self.seg_start = 0  # first frame of the pending (not final) span
        self.words: list[tuple[str, int, int]] = []  # pending words: (word, start, end) frames
        self.run_start: Optional[int] = None
        self.last_loud: Optional[int] = None
        self.speech_started = False
        self.pending_ue: Optional[float] = None
        self.threshold = 0.05 * tonewords.LEVEL

    def _frame(self, f: np.ndarray) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        i = self.frame
        self._frames.append(f)
        self.frame += 1
        loud = float(np.sqrt(np.mean(f ** 2))) > self.threshold
        if loud:
            if self.run_start is None:
                self.run_start = i
                self.pending_ue = None
                if self.vad_events and not self.speech_started:
                    out.append({"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(i * 0.02, 3)})
                self.speech_started = True
            self.last_loud = i
            return out
        if self.run_start is not None:
            if self._close_run(i) and self.interim:
                out.append(self._results(self.seg_start, i + 1, final=False))
        if (self.endpointing_ms is not None and self.last_loud is not None and self.last_loud >= self.seg_start
                and (i - self.last_loud) * 20 >= self.endpointing_ms):
            out += self._final(speech_final=True, from_finalize=False)
        if (self.pending_ue is not None and self.utterance_end_ms is not None
                and self.frame * 0.02 - self.pending_ue >= self.utterance_end_ms / 1000.0 - 1e-9):
            out.append({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(self.pending_ue, 3)})
            self.pending_ue = None
        return out

    def _close_run(self, end: int) -> bool:
        """A loud run ended at frame ``end``; add its word. True if a word was found."""
        start, self.run_start = self.run_start, None
        assert start is not None
        if (end - start) * 20 < tonewords.WORD_MS // 2:
            return False
        seg = np.concatenate(self._frames[start:end])
        pad = np.zeros(FRAME, dtype=np.float64)
        found = tonewords.decode_words((np.concatenate((pad, seg, pad)) * 32767).astype(np.int16))
        if not found:
            return False
        self.words.append((found[0], start, end))
        return True

    def _final(self, speech_final: bool, from_finalize: bool) -> list[dict[str, Any]]:
        if self.run_start is not None:
            self._close_run(self.frame)
        if self.frame <= self.seg_start:
            return []
        msg = self._results(self.seg_start, self.frame, final=True, speech_final=speech_final,
                            from_finalize=from_finalize)
        if self.words and self.utterance_end_ms is not None:
            self.pending_ue = self.words[-1][2] * 0.02
        self.seg_start = self.frame
        self.words = []
        self.speech_started = False
        return [msg]

    def finalize(self) -> list[dict[str, Any]]:
        """``Finalize``: the pending span becomes final now."""
        quiet = self.last_loud is None or (self.frame - 1 - self.last_loud) * 20 >= (self.endpointing_ms or 0)
        return self._final(speech_final=bool(self.words) and quiet, from_finalize=True)

    def _results(self, start: int, end: int, final: bool, speech_final: bool = False,
                 from_finalize: bool = False) -> dict[str, Any]:
        words = [{"word": w, "start": round(s * 0.02, 3), "end": round(e * 0.02, 3), "confidence": 0.99,
                  "punctuated_word": w} for w, s, e in self.words]
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round((end - start) * 0.02, 3),
            "start": round(start * 0.02, 3),
            "is_final": final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [{
                "transcript": " ".join(w["word"] for w in words),
                "confidence": 0.99 if words else 0.0,
                "words": words,
            }]},
            "metadata": {"request_id": self.request_id,
                         "model_info": {"name": f"general-{self.model}", "version": "fake", "arch": self.model},
                         "model_uuid": "00000000-0000-0000-0000-000000000000"},
        }

    def metadata(self, audio: bytes) -> dict[str, Any]:
        return {"type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
                "sha256": hashlib.sha256(audio).hexdigest(),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "duration": round(self.frame * 0.02, 3), "channels": 1}


def _parse_bool(v: Optional[str]) -> Optional[bool]:
    if v is None:
        return None
    if v in ("true", "false"):
        return v == "true"
    raise ValueError(v)


class FakeListenProtocol(WebSocketServerProtocol):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        # Autobahn logs the request (with the Authorization header) at debug
        # level; keep this side quiet so client-side leak tests stay honest.
        self.log = txaio.make_logger()
        self.log.set_log_level("info", keep=True)
        self.record = ConnectionRecord()
        self._deny_headers: list[tuple[str, str]] = []
        self._calls: list[Any] = []
        self._idle: Any = None
        self._due = 0.0
        self._ended = False
        self._drop_bytes: Optional[int] = None
        self.closed_d: Deferred[None] = Deferred()
        self.rec: Optional[Recognizer] = None

    # -- handshake ---------------------------------------------------------

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        headers = list(responseHeaders or []) + self._deny_headers
        super().failHandshake(reason, code, headers)

    def _deny(self, status: int, dg_error: str) -> None:
        self.record.status = status
        self.record.dg_error = dg_error
        self._deny_headers = [("dg-request-id", self.record.request_id), ("dg-error", dg_error)]
        raise ConnectionDeny(status, _PHRASES.get(status, "Error"))

    def _check_path_and_key(self, path: str, expected: str, fake: "FakeDeepgram") -> None:
        """
        Refuse (as Deepgram does) another path (404), an injected rejection,
        and a missing or wrong ``Authorization: Token <key>`` (401).
        """
        if path != expected:
            self._deny(404, f"No such path {path}")
        if fake._reject:
            status, message = fake._reject.pop(0)
            self._deny(status, message or DG_ERRORS.get(status, "Error."))
        auth = self.record.headers.get("authorization")
        if auth is None:
            self._deny(401, "Missing authorization header. Expected 'Authorization: Token <key>'.")
        if auth != f"Token {fake.api_key}":
            self._deny(401, DG_ERRORS[401])

    def onConnect(self, request: Any) -> Any:
        fake: FakeDeepgram = self.factory.fake
        rec = self.record
        rec.path = request.path
        rec.headers = dict(request.headers)
        rec.params = {k: v[0] for k, v in request.params.items()}
        rec.request_id = str(uuid.uuid4())
        fake.connections.append(rec)
        self._check_path_and_key(request.path, "/v1/listen", fake)
        p = rec.params
        if "encoding" not in p:
            self._deny(400, "Missing encoding: raw audio needs encoding and sample_rate.")
        if p["encoding"] != "linear16":
            self._deny(400, f"Unsupported encoding {p['encoding']!r} (this fake knows linear16 only).")
        try:
            rate = int(p["sample_rate"])
            channels = int(p.get("channels", "1"))
            if rate <= 0 or channels <= 0:
                raise ValueError
        except (KeyError, ValueError):
            self._deny(400, "sample_rate and channels must be positive integers; sample_rate is required "
                            "with encoding.")
        try:
            interim = _parse_bool(p.get("interim_results")) or False
            vad = _parse_bool(p.get("vad_events")) or False
            for k in ("smart_format", "punctuate"):
                _parse_bool(p.get(k))
            ep_raw = p.get("endpointing", "10")
            endpointing = None if ep_raw == "false" else int(ep_raw)
            ue = int(p["utterance_end_ms"]) if "utterance_end_ms" in p else None
        except ValueError:
            self._deny(400, "Bad value for a boolean or numeric query parameter.")
        if rate != RATE:
            rec.violations.append(f"sample_rate={rate}: the fake recognises 16000 Hz only")
        if channels != 1:
            rec.violations.append(f"channels={channels}: the fake is mono only")
        rec.status = 101
        self.rec = Recognizer(rec.request_id, interim=interim, endpointing_ms=endpointing,
                              utterance_end_ms=ue, vad_events=vad, model=p.get("model", ""))
        if fake._drops:
            after_bytes, after_seconds = fake._drops[0][1:]
            fake._drops[0][0] -= 1
            if fake._drops[0][0] <= 0:
                fake._drops.pop(0)
            self._drop_bytes = after_bytes
            if after_seconds is not None:
                self._calls.append(fake.reactor.callLater(after_seconds, self._drop))
        return (None, {"dg-request-id": rec.request_id, "dg-model-name": p.get("model", "")})

    def onOpen(self) -> None:
        self.factory.fake._live.add(self)
        self._touch()

    # -- traffic -----------------------------------------------------------

    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = self.factory.fake.reactor.callLater(self.factory.fake.idle_timeout, self._idle_close)

    def _idle_close(self) -> None:
        self._idle = None
        self._enqueue_close(1011, NET_0001, delay=False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._ended or self.rec is None:
            return
        rec = self.record
        if isBinary:
            rec.binary_sizes.append(len(payload))
            if not payload:
                rec.violations.append("empty binary frame (legacy close signal)")
                self._end_stream()
                return
            ms = len(payload) / 2 / RATE * 1000
            if len(payload) % 2:
                rec.violations.append(f"binary message of {len(payload)} bytes is not whole 16-bit samples")
            if not 20 <= ms <= 100:
                rec.violations.append(f"binary message of {ms:g} ms is outside 20-100 ms")
            if len(rec.audio) + len(payload) <= MAX_AUDIO_BYTES:
                rec.audio += payload
            self._touch()
            if self._drop_bytes is not None and len(rec.audio) >= self._drop_bytes:
                self._drop()
                return
            for m in self.rec.feed(payload):
                self._send_json(m)
            return
        text = payload.decode("utf-8", "replace")
        rec.text_messages.append(text)
        self._touch()
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            rec.violations.append(f"malformed text message {text[:80]!r}")
            return
        if kind == "KeepAlive":
            return
        if kind == "Finalize":
            for m in self.rec.finalize():
                self._send_json(m)
        elif kind == "CloseStream":
            self._end_stream()
        else:
            rec.violations.append(f"unknown control message type {kind!r}")

    def _end_stream(self) -> None:
        assert self.rec is not None
        self._ended = True
        for m in self.rec.finalize():
            m["from_finalize"] = False
            self._send_json(m)
        if self.factory.fake.metadata_at_end:
            self._send_json(self.rec.metadata(bytes(self.record.audio)))
        if self.factory.fake.abort_at_end:
            self._later(self._hang_up)
        else:
            self._enqueue_close(1000, None)

    # -- sending with latency ----------------------------------------------

    def _later(self, f: Any, *args: Any, delay: bool = True) -> None:
        fake = self.factory.fake
        if not delay or fake.latency <= 0:
            f(*args)
            return
        now = fake.reactor.seconds()
        self._due = max(self._due, now + fake.latency)
        self._calls.append(fake.reactor.callLater(self._due - now, f, *args))

    def _send_json(self, msg: dict[str, Any]) -> None:
        def go() -> None:
            if self.state == WebSocketServerProtocol.STATE_OPEN:
                self.record.sent.append(msg)
                self.sendMessage(json.dumps(msg).encode("utf-8"), isBinary=False)
        self._later(go)

    def _enqueue_close(self, code: int, reason: Optional[str], delay: bool = True) -> None:
        def go() -> None:
            if self.state == WebSocketServerProtocol.STATE_OPEN:
                self.record.close_code = code
                self.record.close_reason = reason
                # sendClose() only allows 1000 and 3000-4999; Deepgram sends 1011.
                self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8") if reason else None)
        self._later(go, delay=delay)

    def _hang_up(self) -> None:
        # TCP FIN after everything written, with no close frame: the client
        # gets every message, then a 1006.
        self.record.dropped = True
        if self.transport is not None:
            self.transport.loseConnection()

    def _drop(self) -> None:
        self.record.dropped = True
        if self.transport is not None:
            self.transport.abortConnection()

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.record.closed = True
        for c in self._calls:
            if c.active():
                c.cancel()
        self._calls = []
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None
        self.factory.fake._live.discard(self)
        if not self.closed_d.called:
            self.closed_d.callback(None)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        # A refused handshake may not reach onClose.
        self.factory.fake._live.discard(self)
        if not self.closed_d.called:
            self.record.closed = True
            self.closed_d.callback(None)


class FakeDeepgram:
    """
    A running fake; see the module docstring.

    :ivar port: the TCP port it listens on.
    :ivar url: ``ws://<interface>:<port>``, a base URL for the client.
    :ivar connections: one :class:`ConnectionRecord` per connection, in order.
    :ivar latency: seconds each server message is delayed (order kept).
    :ivar idle_timeout: seconds without audio or text before close 1011 NET-0001.
    :ivar abort_at_end: after ``CloseStream``'s ``Metadata``, close TCP
        with no close frame instead of closing with 1000.
    :ivar metadata_at_end: send the ``Metadata`` summary after
        ``CloseStream`` (the real service does); false = close 1000 after the
        last results without it (failure injection).
    """

    def __init__(self, reactor: Any, api_key: str = "test-key", latency: float = 0.0,
                 idle_timeout: float = 10.0) -> None:
        self.reactor = reactor
        self.api_key = api_key
        self.latency = latency
        self.idle_timeout = idle_timeout
        self.abort_at_end = False
        self.metadata_at_end = True
        self.connections: list[ConnectionRecord] = []
        self.port = 0
        self.url = ""
        self._port: Any = None
        self._live: set[FakeListenProtocol] = set()
        self._reject: list[tuple[int, Optional[str]]] = []
        self._drops: list[list[Any]] = []

    def reject_next(self, count: int, status: int, message: Optional[str] = None) -> None:
        """Refuse the next ``count`` upgrades with ``status`` (401/403/429/500...)."""
        self._reject += [(status, message)] * count

    def drop_next(self, count: int = 1, after_bytes: Optional[int] = None,
                  after_seconds: Optional[float] = None) -> None:
        """Abort the next ``count`` accepted connections after ``after_bytes`` audio or ``after_seconds``."""
        self._drops.append([count, after_bytes, after_seconds])

    def close_live(self, code: int = 1011, reason: Optional[str] = NET_0000) -> int:
        """
        Close every live connection now with a close frame ``code`` /
        ``reason`` (default 1011 ``NET-0000``: a server-side error mid-stream,
        PROTOCOLS.md 2.5), after the messages already queued.  Returns how many.
        """
        live = list(self._live)
        for p in live:
            p._enqueue_close(code, reason)
        return len(live)

    def drop_all(self) -> None:
        """Abort every live connection now (no close frame)."""
        for p in list(self._live):
            p._drop()

    @property
    def live(self) -> int:
        """Connections currently open."""
        return len(self._live)

    def listen(self, port: int = 0, interface: str = "127.0.0.1") -> None:
        factory = WebSocketServerFactory(reactor=self.reactor)
        factory.protocol = FakeListenProtocol
        factory.fake = self
        factory.noisy = False
        # Autobahn's timers round down to a whole second, so its default
        # 1 s close-handshake timeout can fire at once and abort a client
        # that was about to answer the close frame; 5 s gives it 4-5 s.
        factory.setProtocolOptions(openHandshakeTimeout=0, autoPingInterval=0, closeHandshakeTimeout=5)
        self._port = self.reactor.listenTCP(port, factory, interface=interface)
        self.port = self._port.getHost().port
        self.url = f"ws://{interface}:{self.port}"

    def stop(self) -> "Deferred[Any]":
        """Stop listening and abort live connections; fires when all are gone."""
        waits = [p.closed_d for p in self._live]
        for p in list(self._live):
            p._drop()
        d = self._port.stopListening() if self._port is not None else succeed(None)
        self._port = None
        return DeferredList([d, *waits])


def start_fake_deepgram(reactor: Any, port: int = 0, interface: str = "127.0.0.1",
                        api_key: str = "test-key", **options: Any) -> FakeDeepgram:
    """
    Listen on ``interface:port`` (0 = any free port).

    :param options: ``latency`` (s), ``idle_timeout`` (s).
    """
    fake = FakeDeepgram(reactor, api_key=api_key, **options)
    fake.listen(port, interface)
    return fake


def add_common_arguments(parser: argparse.ArgumentParser, port: int, idle_help: str) -> None:
    """The options both Deepgram fakes (``/v1`` and Flux) take."""
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--api-key", default="test-key", help="the key clients must send")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before each message")
    parser.add_argument("--idle-timeout", type=float, default=10.0, help=idle_help)
    parser.add_argument("--reject-first", type=int, default=0, help="refuse this many upgrades first")
    parser.add_argument("--reject-status", type=int, default=429, help="HTTP status for --reject-first")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for ``python -m tests.fakes deepgram``."""
    add_common_arguments(parser, 8801, "seconds without audio/KeepAlive before close 1011 NET-0001")
    parser.add_argument("--drop-after-seconds", type=float, default=None,
                        help="abort the first accepted connection after this many seconds")
    parser.add_argument("--no-metadata", action="store_true",
                        help="after CloseStream, close 1000 without sending the Metadata summary")


def run_from_args(reactor: Any, args: argparse.Namespace) -> FakeDeepgram:
    """Start the fake from parsed :func:`add_arguments` options."""
    fake = start_fake_deepgram(reactor, port=args.port, interface=args.interface, api_key=args.api_key,
                               latency=args.latency, idle_timeout=args.idle_timeout)
    if args.reject_first:
        fake.reject_next(args.reject_first, args.reject_status)
    if args.drop_after_seconds is not None:
        fake.drop_next(after_seconds=args.drop_after_seconds)
    if getattr(args, "no_metadata", False):
        fake.metadata_at_end = False
    Logger().info("fake Deepgram listening on {url} (api key {key!r})", url=fake.url, key=fake.api_key)
    return fake
