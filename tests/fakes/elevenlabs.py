"""
A fake ElevenLabs text-to-speech server, faithful to both streaming
endpoints, on **one port** (HTTP and the WebSocket upgrade share it, as on
``api.elevenlabs.io``, so a client derives ``ws://`` from the ``http://`` URL):

``POST /v1/text-to-speech/{voice_id}/stream?output_format=pcm_16000``
    JSON body ``text``, ``model_id``, ``language_code``, ``voice_settings``;
    answers 200 with a chunked body of S16LE PCM (Content-Type
    ``audio/mpeg``, as the docs list it: clients must not rely on it).

``GET /v1/text-to-speech/{voice_id}/stream-input?model_id=..&output_format=..``
    WebSocket: init ``{"text": " "}`` first; text accumulates and is spoken on
    ``"flush": true``, when it reaches the first ``chunk_length_schedule``
    entry (default 120 characters), or at ``{"text": ""}`` (end of stream:
    ``{"isFinal": true}`` follows, then close 1000); ``" "`` only resets the
    inactivity timer; after ``inactivity_timeout`` seconds (default 20)
    without a message it closes 1008.  Audio goes out as ``{"audio":
    "<base64>", "isFinal": null, "normalizedAlignment": ...}``.

Checks: ``xi-api-key`` (401 ``invalid_api_key``; on the WebSocket an in-band
``{"message", "error", "code": 1008}`` then close 1008, as observed from the
real service), ``output_format`` (only ``pcm_16000``), ``model_id``, the voice
id (400 ``voice_not_found``), ``language_code`` only for Flash/Turbo v2.5,
``voice_settings`` only in the WebSocket init message.

Speech: text is "spoken" with :func:`tests.fakes.tonewords.encode_words`,
as 16 kHz S16LE (:func:`speak`), and sent in chunks of odd sizes
(``chunk_sizes``) every ``chunk_interval`` seconds, after ``first_byte_delay``.

Network model: each new TCP connection gets ``connect_delay`` seconds before
its first bytes are read (a TLS handshake), and every inbound byte is held
``rtt`` seconds (a round trip, since a reply goes straight back).

Failure injection (each counts one *request*: an HTTP request or a
WebSocket connection): :meth:`FakeElevenLabs.fail_next` (401, 429,
``"system_busy"``, 5xx, ``"quota"``), :meth:`FakeElevenLabs.drop_next`
(close the connection after N audio bytes), :meth:`FakeElevenLabs.slow_next`.
Every request is recorded in :attr:`FakeElevenLabs.requests`.
"""

from __future__ import annotations

import argparse
import base64
import collections
import itertools
import json
from typing import Any, Callable, Optional, Union, cast

import attrs
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web import server
from twisted.web.resource import Resource

from tests.fakes.tonewords import encode_words

#: Premade voices the fake knows (the client's defaults among them).
KNOWN_VOICES = frozenset({
    "JBFqnCBsd6RMkjVDRZzb", "EXAVITQu4vr4xnSDxMaL", "21m00Tcm4TlvDq8ikWAM",
    "pNInz6obpgDQGcFmaJgB", "Xb7hH8MSUJpSbSDYk0k2", "test-voice",
})
KNOWN_MODELS = frozenset({
    "eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_multilingual_v2", "eleven_v3",
})
LANGUAGE_CODE_MODELS = frozenset({"eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_v3"})
#: Odd on purpose: chunks split samples, as a client must expect.
DEFAULT_CHUNK_SIZES = (1023, 1531, 777, 2049, 511)
INACTIVITY_MESSAGE = (
    "Have not received a new text input within the timeout of {} seconds. "
    "Streaming input terminated."
)

InjectedFailure = Union[int, str]


def speak(text: str) -> bytes:
    """The fake's audio for ``text``: tone-words, 16 kHz mono S16LE."""
    return encode_words(text).astype("<i2").tobytes()


def _error_body(status: str, message: str) -> bytes:
    return json.dumps({"detail": {"status": status, "message": message}}).encode()


#: Injected failure -> (HTTP code, detail.status, message).
_FAILURES: dict[InjectedFailure, tuple[int, str, str]] = {
    401: (401, "invalid_api_key", "Invalid API key"),
    "quota": (401, "quota_exceeded", "This request exceeds your quota of 10000."),
    429: (429, "too_many_concurrent_requests", "Too many concurrent requests."),
    "system_busy": (429, "system_busy", "The system is experiencing heavy traffic."),
    500: (500, "internal_error", "Internal server error."),
    502: (502, "bad_gateway", "Bad gateway."),
    503: (503, "service_unavailable", "Service unavailable."),
}


@attrs.define
class RecordedRequest:
    """
    One request as the fake saw it.

    :ivar kind: ``"http"`` or ``"websocket"``.
    :ivar headers: lower-case name -> last value.
    :ivar params: query parameters (last value of each).
    :ivar body: the HTTP JSON body (``None`` for WebSocket).
    :ivar messages: WebSocket client messages, parsed, in order.
    :ivar connection_id: the TCP connection (same id = connection reused).
    :ivar new_connection: first request on its connection.
    :ivar status: HTTP status sent (101 for an accepted upgrade).
    :ivar error: ``detail.status`` / in-band error sent, if any.
    :ivar pcm: every audio byte generated for it (S16LE), sent or not.
    :ivar sent: audio bytes actually written.
    :ivar chunk_sizes: sizes of the audio chunks written, in bytes.
    :ivar client_gone: the client went away before the end.
    :ivar close_code: WebSocket close code, once closed.
    """

    kind: str
    path: str
    voice_id: str
    headers: dict[str, str]
    params: dict[str, str]
    connection_id: int
    new_connection: bool
    at: float
    body: Any = None
    messages: list[Any] = attrs.Factory(list)
    status: int = 0
    error: Optional[str] = None
    pcm: bytes = b""
    sent: int = 0
    chunk_sizes: list[int] = attrs.Factory(list)
    client_gone: bool = False
    close_code: Optional[int] = None
    finished: bool = False

    @property
    def text(self) -> str:
        """What was asked to be spoken."""
        if self.kind == "http":
            return str((self.body or {}).get("text", ""))
        return "".join(str(m.get("text", "")) for m in self.messages[1:] if isinstance(m, dict)).strip()


class _Streamer:
    """Writes ``pcm`` in odd-sized chunks at the fake's pace."""

    def __init__(
        self, fake: "FakeElevenLabs", record: RecordedRequest, pcm: bytes,
        write: Callable[[bytes, int], None], done: Callable[[], None], drop: Callable[[], None],
        first_byte_delay: float, drop_after: Optional[int],
    ) -> None:
        self.fake, self.record, self.pcm = fake, record, pcm
        self.write, self.done, self.drop = write, done, drop
        self.drop_after = drop_after
        self.pos = 0
        self.n = 0
        self.call: Any = fake.reactor.callLater(first_byte_delay, self._next)

    def _next(self) -> None:
        self.call = None
        sizes = self.fake.chunk_sizes
        chunk = self.pcm[self.pos : self.pos + sizes[self.n % len(sizes)]]
        if self.drop_after is not None and self.record.sent + len(chunk) >= self.drop_after:
            chunk = chunk[: max(0, self.drop_after - self.record.sent)]
            if chunk:
                self._write(chunk)
            self.drop()  # TCP close mid-body: what was written still arrives
            return
        if chunk:
            self._write(chunk)
        if self.pos >= len(self.pcm):
            self.done()
        else:
            self.call = self.fake.reactor.callLater(self.fake.chunk_interval, self._next)

    def _write(self, chunk: bytes) -> None:
        self.write(chunk, self.n)
        self.pos += len(chunk)
        self.n += 1
        self.record.sent += len(chunk)
        self.record.chunk_sizes.append(len(chunk))

    def stop(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None


class _Network(ProtocolWrapper):
    """Adds ``connect_delay`` to a new connection and ``rtt`` to inbound bytes."""

    factory: "_NetworkFactory"

    def makeConnection(self, transport: Any) -> None:
        fake = self.factory.fake
        self.conn_id = next(fake._conn_ids)
        self.served = 0
        self.ready_at = fake.reactor.seconds() + fake.connect_delay
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.pump: Any = None
        self.lost: Deferred[None] = Deferred()
        fake._connections.add(self)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        fake = self.factory.fake
        now = fake.reactor.seconds()
        # Bytes sent during the simulated handshake leave once it is over.
        release = max(now, self.ready_at) + fake.rtt
        if release <= now and not self.queue:
            self.wrappedProtocol.dataReceived(data)
            return
        self.queue.append((release, data))
        self.queued += len(data)
        if self.queued > 4 * 1024 * 1024:  # bounded: a client flooding a slow link
            self.abort()
            return
        if self.pump is None:
            self.pump = fake.reactor.callLater(release - now, self._pump)

    def _pump(self) -> None:
        self.pump = None
        reactor = self.factory.fake.reactor
        while self.queue and self.queue[0][0] <= reactor.seconds():
            _, data = self.queue.popleft()
            self.queued -= len(data)
            self.wrappedProtocol.dataReceived(data)
        if self.queue:
            self.pump = reactor.callLater(self.queue[0][0] - reactor.seconds(), self._pump)

    def abort(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self.pump is not None and self.pump.active():
            self.pump.cancel()
        self.queue.clear()
        self.factory.fake._connections.discard(self)
        super().connectionLost(reason)
        self.lost.callback(None)


class _NetworkFactory(WrappingFactory):
    protocol = _Network

    def __init__(self, fake: "FakeElevenLabs", wrapped: Any) -> None:
        super().__init__(wrapped)
        self.fake = fake


def _connection_of(transport: Any) -> tuple[int, bool]:
    if isinstance(transport, _Network):
        transport.served += 1
        return transport.conn_id, transport.served == 1
    return -1, True


# -- HTTP ---------------------------------------------------------------------


class _JSONNotFound(Resource):
    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"application/json")
        return b'{"detail":"Not Found"}'


class _TextToSpeech(Resource):
    def __init__(self, fake: "FakeElevenLabs") -> None:
        super().__init__()
        self.fake = fake

    def getChild(self, path: bytes, request: server.Request) -> Resource:
        return _Voice(self.fake, path.decode("utf-8", "replace"))


class _Voice(Resource):
    def __init__(self, fake: "FakeElevenLabs", voice_id: str) -> None:
        super().__init__()
        self.fake, self.voice_id = fake, voice_id

    def getChild(self, path: bytes, request: server.Request) -> Any:
        if path == b"stream":
            return _Stream(self.fake, self.voice_id)
        if path == b"stream-input":
            return self.fake._ws_resource
        return _JSONNotFound()


class _Stream(Resource):
    isLeaf = True

    def __init__(self, fake: "FakeElevenLabs", voice_id: str) -> None:
        super().__init__()
        self.fake, self.voice_id = fake, voice_id

    def render_POST(self, request: server.Request) -> Union[bytes, int]:
        fake = self.fake
        conn, new = _connection_of(request.channel.transport)
        rec = RecordedRequest(
            kind="http", path=request.path.decode(), voice_id=self.voice_id,
            headers={k.decode().lower(): v[-1].decode() for k, v in request.requestHeaders.getAllRawHeaders()},
            params={k.decode(): v[-1].decode() for k, v in (request.args or {}).items()},
            connection_id=conn, new_connection=new, at=fake.reactor.seconds(),
        )
        fake.requests.append(rec)
        raw = request.content.read() if request.content is not None else b""
        try:
            rec.body = json.loads(raw)
        except ValueError:
            return self._error(request, rec, 400, "invalid_json", "Body is not JSON.")
        injected, drop_after, first_byte = fake._take_injections()
        if rec.headers.get("xi-api-key") != fake.api_key:
            return self._error(request, rec, 401, "invalid_api_key", "Invalid API key")
        if injected is not None:
            code, status, message = _FAILURES[injected]
            return self._error(request, rec, code, status, message)
        problem = fake._check(self.voice_id, rec.params, rec.body)
        if problem is not None:
            return self._error(request, rec, *problem)
        rec.status = 200
        rec.pcm = speak(str(rec.body["text"]))
        request.setHeader(b"content-type", b"audio/mpeg")
        request.setHeader(b"request-id", f"fake-{len(fake.requests)}".encode())

        def done() -> None:
            rec.finished = True
            request.finish()

        def gone(_: object) -> None:
            if not rec.finished:
                rec.client_gone = True
            streamer.stop()

        streamer = _Streamer(
            fake, rec, rec.pcm, lambda chunk, n: request.write(chunk), done,
            cast(Any, request.channel.transport).loseConnection, first_byte, drop_after,
        )
        request.notifyFinish().addErrback(gone)
        return server.NOT_DONE_YET

    def _error(self, request: server.Request, rec: RecordedRequest, code: int, status: str, message: str) -> bytes:
        rec.status, rec.error = code, status
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        if code == 422:
            return json.dumps({"detail": [{"loc": ["body", "text"], "msg": message, "type": status}]}).encode()
        return _error_body(status, message)


# -- WebSocket ------------------------------------------------------------------


class _StreamInput(WebSocketServerProtocol):
    """One ``stream-input`` socket (single context)."""

    factory: "_StreamInputFactory"

    def onConnect(self, request: Any) -> None:
        fake = self.factory.fake
        self.fake = fake
        parts = request.path.strip("/").split("/")
        voice = parts[2] if len(parts) == 4 else ""
        conn, new = _connection_of(self.transport)
        self.rec = RecordedRequest(
            kind="websocket", path=request.path, voice_id=voice,
            headers={k.lower(): v for k, v in request.headers.items()},
            params={k: v[-1] for k, v in request.params.items()},
            connection_id=conn, new_connection=new, at=fake.reactor.seconds(),
        )
        fake.requests.append(self.rec)
        self.injected, self.drop_after, self.first_byte = fake._take_injections()
        self.buffer = ""
        self.init: Optional[dict[str, Any]] = None
        self.eos = False
        self.queue: collections.deque[str] = collections.deque()
        self.streamer: Optional[_Streamer] = None
        self.idle: Any = None
        if self.injected is not None and _FAILURES[self.injected][0] in (429, 500, 502, 503):
            code, status, message = _FAILURES[self.injected]
            self.rec.status, self.rec.error = code, status
            raise ConnectionDeny(code, message)
        self.rec.status = 101
        try:
            self.timeout = int(self.rec.params.get("inactivity_timeout", "20"))
        except ValueError:
            self.timeout = -1

    def onOpen(self) -> None:
        fake, rec = self.fake, self.rec
        if self.injected is not None:
            _, status, message = _FAILURES[self.injected]
            return self._fail(status, message)
        key = rec.headers.get("xi-api-key")
        if key is not None and key != fake.api_key:
            return self._fail("invalid_api_key", "Invalid API key")
        if not 1 <= self.timeout <= 180:
            return self._fail("invalid_request", "inactivity_timeout must be 1..180")
        problem = fake._check(rec.voice_id, rec.params, {"text": "x", **{
            k: rec.params[k] for k in ("model_id", "language_code") if k in rec.params}})
        if problem is not None:
            return self._fail(problem[1], problem[2])
        self._reset_idle()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.rec.error is not None:
            return  # closing already
        if isBinary:
            return self._fail("invalid_message", "Binary messages are not accepted.")
        try:
            msg = json.loads(payload.decode("utf-8"))
        except ValueError:
            return self._fail("invalid_message", "Message is not JSON.")
        self.rec.messages.append(msg)
        if not isinstance(msg, dict) or not isinstance(msg.get("text"), str):
            return self._fail("invalid_message", "Every message needs a text field.")
        self._reset_idle()
        if self.eos:
            return self._fail("invalid_message", "No text may follow the end of input.")
        text = msg["text"]
        if self.init is None:
            if text != " ":
                return self._fail("invalid_message", "The first message must have text ' '.")
            if "xi-api-key" not in self.rec.headers and msg.get("xi-api-key") != self.fake.api_key:
                return self._fail("invalid_api_key", "Invalid API key")
            self.init = msg
            return
        if "voice_settings" in msg and msg["voice_settings"] != self.init.get("voice_settings"):
            return self._fail("invalid_message", "voice_settings field must be provided in the first message and then either be not provided or not change.")
        if text == "":
            self.eos = True
            self._generate()
            return
        self.buffer += text
        schedule = (self.init.get("generation_config") or {}).get("chunk_length_schedule") or [120]
        if msg.get("flush") or msg.get("try_trigger_generation") or len(self.buffer.strip()) >= schedule[0]:
            self._generate()

    def _generate(self) -> None:
        if self.buffer.strip():
            self.queue.append(self.buffer)
        self.buffer = ""
        self._pump()

    def _pump(self) -> None:
        if self.streamer is not None:
            return
        if not self.queue:
            if self.eos:
                self.rec.finished = True
                self.sendMessage(b'{"isFinal":true}', isBinary=False)
                self.sendClose(1000)
            return
        text = self.queue.popleft()
        pcm = speak(text)
        self.rec.pcm += pcm
        spelling = self.fake.alignment_spelling

        def write(chunk: bytes, n: int) -> None:
            msg: dict[str, Any] = {"audio": base64.b64encode(chunk).decode(), "isFinal": None}
            if n == 0:
                chars = list(text)
                msg["normalizedAlignment"] = {"chars": chars, "charStartTimesMs": [i * 50 for i in range(len(chars))], spelling: [50] * len(chars)}
            self.sendMessage(json.dumps(msg).encode(), isBinary=False)

        def done() -> None:
            self.streamer = None
            self._reset_idle()
            self._pump()

        self.streamer = _Streamer(
            self.fake, self.rec, pcm, write, done, cast(Any, self.transport).loseConnection,
            self.first_byte, self.drop_after,
        )
        self.first_byte = self.fake.first_byte_delay

    def _reset_idle(self) -> None:
        if self.idle is not None and self.idle.active():
            self.idle.cancel()
        self.idle = self.fake.reactor.callLater(self.timeout, self._idle)

    def _idle(self) -> None:
        self.idle = None
        if self.streamer is None:
            self.rec.error = "input_timeout_exceeded"
            self._close(1008, INACTIVITY_MESSAGE.format(self.timeout))
        else:
            self._reset_idle()

    def _fail(self, status: str, message: str) -> None:
        self.rec.error = status
        self.sendMessage(json.dumps({"message": message, "error": status, "code": 1008}).encode(), isBinary=False)
        self._close(1008, message)

    def _close(self, code: int, reason: str) -> None:
        # sendClose() only takes 1000 and 3000-4999; the service sends 1008.
        self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        rec = getattr(self, "rec", None)
        if rec is None:
            return
        rec.close_code = code
        if not rec.finished and rec.error is None:
            rec.client_gone = True
        if self.streamer is not None:
            self.streamer.stop()
        if self.idle is not None and self.idle.active():
            self.idle.cancel()


class _StreamInputFactory(WebSocketServerFactory):
    protocol = _StreamInput  # type: ignore[assignment]

    def __init__(self, fake: "FakeElevenLabs") -> None:
        super().__init__(reactor=fake.reactor)
        self.fake = fake
        # Autobahn rounds its timers down to a whole second: the default
        # 1 s close-handshake timeout can abort a client about to answer.
        self.setProtocolOptions(closeHandshakeTimeout=5)


# -- the server -----------------------------------------------------------------


class FakeElevenLabs:
    """
    A running fake; see the module docstring.  Mutable knobs (all seconds):
    ``first_byte_delay``, ``connect_delay``, ``rtt``, ``chunk_interval``;
    ``chunk_sizes`` (bytes, odd); ``voices``, ``models``, ``api_key``.

    :ivar port: the TCP port listened on.
    :ivar url: ``http://{interface}:{port}``.
    :ivar requests: :class:`RecordedRequest` s, in arrival order.
    """

    def __init__(
        self, reactor: Any, api_key: str = "test-key", first_byte_delay: float = 0.0,
        connect_delay: float = 0.0, rtt: float = 0.0, chunk_interval: float = 0.0,
        chunk_sizes: tuple[int, ...] = DEFAULT_CHUNK_SIZES, voices: frozenset[str] = KNOWN_VOICES,
        models: frozenset[str] = KNOWN_MODELS, http_idle_timeout: Optional[float] = None,
        alignment_spelling: str = "charDurationsMs",
    ) -> None:
        self.reactor = reactor
        self.api_key = api_key
        self.first_byte_delay = first_byte_delay
        self.connect_delay = connect_delay
        self.rtt = rtt
        self.chunk_interval = chunk_interval
        self.chunk_sizes = tuple(chunk_sizes)
        self.voices = set(voices)
        self.models = set(models)
        self.alignment_spelling = alignment_spelling
        self.requests: list[RecordedRequest] = []
        self._failures: collections.deque[InjectedFailure] = collections.deque()
        self._drops: collections.deque[int] = collections.deque()
        self._slow: collections.deque[float] = collections.deque()
        self._conn_ids = itertools.count(1)
        self._connections: set[_Network] = set()
        self._ws_resource = WebSocketResource(_StreamInputFactory(self))
        root = Resource()
        v1 = Resource()
        root.putChild(b"v1", v1)
        v1.putChild(b"text-to-speech", _TextToSpeech(self))
        self.site = server.Site(root)
        if http_idle_timeout is not None:
            self.site.timeOut = http_idle_timeout
        self.site.noisy = False
        self._port: Any = None
        self.port = 0
        self.url = ""

    def __repr__(self) -> str:
        return f"<FakeElevenLabs {self.url}>"

    # -- failure knobs ----------------------------------------------------------

    def fail_next(self, failure: InjectedFailure, count: int = 1) -> None:
        """The next ``count`` requests fail with ``failure`` (401, 429,
        ``"system_busy"``, 500, 502, 503, ``"quota"``)."""
        if failure not in _FAILURES:
            raise ValueError(f"unknown failure {failure!r}; known: {sorted(map(str, _FAILURES))}")
        self._failures.extend([failure] * count)

    def drop_next(self, after_bytes: int, count: int = 1) -> None:
        """The next ``count`` requests have their connection closed after
        ``after_bytes`` audio bytes."""
        self._drops.extend([after_bytes] * count)

    def slow_next(self, first_byte_delay: float, count: int = 1) -> None:
        """The next ``count`` requests wait ``first_byte_delay`` s before audio."""
        self._slow.extend([first_byte_delay] * count)

    def _take_injections(self) -> tuple[Optional[InjectedFailure], Optional[int], float]:
        failure = self._failures.popleft() if self._failures else None
        drop = self._drops.popleft() if self._drops else None
        slow = self._slow.popleft() if self._slow else self.first_byte_delay
        return failure, drop, slow

    def _check(self, voice: str, params: dict[str, str], body: Any) -> Optional[tuple[int, str, str]]:
        if params.get("output_format") != "pcm_16000":
            return 400, "invalid_output_format", "The fake speaks output_format=pcm_16000 only."
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return 422, "missing", "Field required: text"
        model = body.get("model_id", "eleven_multilingual_v2")
        if model not in self.models:
            return 400, "model_not_found", f"Model {model!r} not found."
        if voice not in self.voices:
            return 400, "voice_not_found", f"A voice with the voice_id {voice} was not found."
        lang = body.get("language_code")
        if lang is not None and (model not in LANGUAGE_CODE_MODELS or len(str(lang)) != 2):
            return 400, "unsupported_language", f"language_code {lang!r} is not supported by {model}."
        return None

    # -- lifecycle --------------------------------------------------------------

    def start(self, port: int = 0, interface: str = "127.0.0.1") -> "FakeElevenLabs":
        self._port = self.reactor.listenTCP(port, _NetworkFactory(self, self.site), interface=interface)
        self.port = self._port.getHost().port
        self.url = f"http://{interface}:{self.port}"
        return self

    def stop(self) -> "Deferred[None]":
        """Stop listening, drop every connection; fires when all are gone."""
        waits: list[Deferred[Any]] = [c.lost for c in list(self._connections)]
        for c in list(self._connections):
            c.abort()
        if self._port is not None:
            waits.append(self._port.stopListening() or succeed(None))
            self._port = None
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)


def start_fake_elevenlabs(
    reactor: Any, port: int = 0, interface: str = "127.0.0.1", api_key: str = "test-key", **options: Any
) -> FakeElevenLabs:
    """Start a :class:`FakeElevenLabs` listening on ``interface:port`` (0: any free port)."""
    return FakeElevenLabs(reactor, api_key=api_key, **options).start(port, interface)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for ``python -m tests.fakes elevenlabs``."""
    parser.add_argument("--port", type=int, default=8803)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--first-byte-ms", type=float, default=100.0, help="delay before audio")
    parser.add_argument("--connect-delay-ms", type=float, default=0.0, help="per new connection (TLS)")
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="added to every inbound byte")
    parser.add_argument("--chunk-interval-ms", type=float, default=10.0, help="pause between chunks")


def run_from_args(reactor: Any, args: argparse.Namespace) -> FakeElevenLabs:
    """Start the fake from parsed :func:`add_arguments` options."""
    return start_fake_elevenlabs(
        reactor, port=args.port, interface=args.interface, api_key=args.api_key,
        first_byte_delay=args.first_byte_ms / 1000.0, connect_delay=args.connect_delay_ms / 1000.0,
        rtt=args.rtt_ms / 1000.0, chunk_interval=args.chunk_interval_ms / 1000.0,
    )


__all__ = [
    "FakeElevenLabs", "RecordedRequest", "add_arguments", "run_from_args", "speak",
    "start_fake_elevenlabs",
]
