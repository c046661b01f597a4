"""
A fake DeepL REST server: ``POST /v2/translate`` (and ``GET /v2/usage``).

It behaves like the real API as documented (and as DeepL's own
``deepl-mock`` imitates it) where a client could get it wrong, and refuses
what the real one refuses:

- ``Authorization: DeepL-Auth-Key <key>`` must carry the configured key
  (else 403 ``{"message": ...}``); keys in the body or query are not
  accepted.  A ``User-Agent`` is required (400 otherwise).
- Bodies are JSON (``text`` must be a list of strings) or form-encoded
  (``text`` repeated); ≤ 128 KiB (413 otherwise).  ``target_lang`` is
  required and must be a DeepL target; ``source_lang`` must be a base code
  (regional variants are target-only).  ``formality``/``model_type`` values
  are checked; ``more``/``less`` are refused for targets without formality.
- The response is ``{"translations": [{"detected_source_language", "text",
  "billed_characters"?, "model_type_used"?}]}``, with an ``X-Trace-ID``.

Translation is a small word-by-word English↔Spanish dictionary over the
vocabulary of :mod:`tests.fakes.tonewords` (unknown words are kept), so
audio can be checked end to end.

Failure injection, from Python (``fake.faults``) or, as with deepl-mock,
through ``mock-server-session*`` request headers (each session id gets its
own counters, set by the headers of its first request): next N requests 429,
next N 5xx (status configurable), quota exceeded (456) or a character
limit, key refused (403), a delay before every response, and next N
requests never answered (the client must time out).

Every request is recorded (:class:`RecordedRequest`): headers, parsed body,
arrival time, connection number and whether it reused a connection.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import unicodedata
from typing import Any, Optional
from urllib.parse import parse_qs

import attrs
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

MAX_BODY = 128 * 1024

#: Targets the fake accepts (a subset of DeepL's, enough for the bridge).
TARGETS = frozenset(
    {"AR", "BG", "CS", "DA", "DE", "EL", "EN", "EN-GB", "EN-US", "ES", "ES-419", "ET", "FI",
     "FR", "HE", "HU", "ID", "IT", "JA", "KO", "LT", "LV", "NB", "NL", "PL", "PT", "PT-BR",
     "PT-PT", "RO", "RU", "SK", "SL", "SV", "TH", "TR", "UK", "VI", "ZH", "ZH-HANS", "ZH-HANT"}
)
SOURCES = frozenset(t for t in TARGETS if "-" not in t)
#: Targets for which plain ``more``/``less`` formality works.
FORMALITY_TARGETS = frozenset(
    {"DE", "ES", "ES-419", "FR", "IT", "JA", "NL", "PL", "PT-BR", "PT-PT", "RU"}
)
FORMALITIES = frozenset({"default", "more", "less", "prefer_more", "prefer_less"})
MODEL_TYPES = {
    "latency_optimized": "latency_optimized",
    "quality_optimized": "quality_optimized",
    "prefer_quality_optimized": "quality_optimized",
}

EN_ES = {
    "hello": "hola", "world": "mundo", "how": "como", "are": "estas", "you": "tu",
    "today": "hoy", "good morning": "buenos dias", "thank you": "gracias", "bye": "adios",
    "where": "donde", "is": "esta", "the": "el", "hospital": "hospital", "one": "uno",
    "two": "dos", "three": "tres", "yes": "si", "no": "no",
}
ES_EN = {v: k for k, v in EN_ES.items()}
_DICTIONARIES = {("EN", "ES"): EN_ES, ("ES", "EN"): ES_EN}


def _fold(word: str) -> str:
    """
    Lower case without accents (``Cómo`` → ``como``).
    """
    decomposed = unicodedata.normalize("NFD", word.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


_WORD = re.compile(r"^(\W*)(.*?)(\W*)$", re.UNICODE)


def detect_language(text: str) -> str:
    """
    ``"ES"`` if more of the words are Spanish vocabulary than English, else
    ``"EN"`` (the real service also falls back to a guess).
    """
    words = [_fold(w) for w in re.findall(r"\w+", text)]
    es = sum(1 for w in words if w in ES_EN and w not in EN_ES)
    en = sum(1 for w in words if w in EN_ES and w not in ES_EN)
    return "ES" if es > en else "EN"


def translate_words(text: str, source: str, target: str) -> str:
    """
    Word-by-word translation between English and Spanish (longest phrase
    first, punctuation and initial capitals kept, unknown words kept).
    Other language pairs come back unchanged.
    """
    table = _DICTIONARIES.get((source.split("-")[0], target.split("-")[0]))
    if table is None:
        return text
    parts = []
    for token in text.split():
        m = _WORD.match(token)
        assert m is not None
        parts.append((m.group(1), m.group(2), m.group(3)))
    out: list[str] = []
    i = 0
    while i < len(parts):
        lead, core, trail = parts[i]
        if i + 1 < len(parts) and not trail and not parts[i + 1][0]:
            phrase = f"{_fold(core)} {_fold(parts[i + 1][1])}"
            if phrase in table:
                out.append(lead + _case_like(core, table[phrase]) + parts[i + 1][2])
                i += 2
                continue
        word = table.get(_fold(core))
        out.append(lead + (_case_like(core, word) if word is not None else core) + trail)
        i += 1
    return " ".join(out)


def _case_like(original: str, word: str) -> str:
    return word[:1].upper() + word[1:] if original[:1].isupper() else word


@attrs.define
class Faults:
    """
    Failure injection; counts are consumed one per request.

    :ivar fail_429: answer the next N requests 429.
    :ivar fail_5xx: answer the next N requests ``status_5xx``.
    :ivar no_response: never answer the next N requests.
    :ivar latency: seconds to wait before every answer.
    :ivar quota_exceeded: answer 456 while set.
    :ivar forbidden: answer 403 while set (a revoked key).
    :ivar character_limit: 456 once this many characters were translated
        (0 = unlimited).
    :ivar allow_missing_user_agent: accept requests without ``User-Agent``.
    :ivar retry_after: seconds sent as ``Retry-After`` with each injected
        429 (``None``: no header).  DeepL's API reference does not list the
        header (PROTOCOLS.md 3); HTTP allows it on 429 (RFC 6585), and a
        client must cope with it either way.
    """

    fail_429: int = 0
    fail_5xx: int = 0
    status_5xx: int = 503
    no_response: int = 0
    latency: float = 0.0
    quota_exceeded: bool = False
    forbidden: bool = False
    character_limit: int = 0
    characters_used: int = 0
    allow_missing_user_agent: bool = False
    retry_after: Optional[float] = None

    @classmethod
    def from_headers(cls, headers: dict[str, str]) -> "Faults":
        """
        A session's faults from deepl-mock's ``mock-server-session-*``
        headers (plus our ``-latency``).
        """
        p = "mock-server-session-"

        def num(name: str, default: float = 0) -> float:
            return float(headers.get(p + name, default))

        return cls(
            fail_429=int(num("429-count")),
            fail_5xx=int(num("5xx-count")),
            status_5xx=int(num("5xx-status", 503)),
            no_response=int(num("no-response-count")),
            latency=num("latency"),
            character_limit=int(num("init-character-limit")),
            allow_missing_user_agent=(p + "allow-missing-user-agent") in headers,
        )


@attrs.frozen
class RecordedRequest:
    """
    One request as the fake saw it.

    :ivar headers: lower-cased names → last value.
    :ivar body: the parsed body (JSON object, or form fields with ``text``
        as a list); ``None`` when it could not be parsed.
    :ivar arrived_at: reactor time of arrival, seconds.
    :ivar connection: 1-based number of the TCP connection it came on.
    :ivar reused: an earlier request came on the same connection.
    :ivar status: the status answered; ``None`` if never answered.
    """

    method: str
    path: str
    headers: dict[str, str]
    content_type: str
    body: Optional[dict[str, Any]]
    arrived_at: float
    connection: int
    reused: bool
    status: Optional[int]


class _Reject(Exception):
    def __init__(self, status: int, message: str, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class _Connections(WrappingFactory):
    """
    Numbers connections, counts their requests, and lets ``stop`` close them
    all and wait until they are gone.
    """

    def __init__(self, wrapped: Site) -> None:
        super().__init__(wrapped)
        self.opened = 0
        #: connection (its transport, as the channel sees it) → [number, requests]
        self.seen: dict[Any, list[int]] = {}
        self._idle: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Any:
        p = super().buildProtocol(addr)
        if p is not None:
            self.opened += 1
            self.seen[p] = [self.opened, 0]
        return p

    def count_request(self, transport: Any) -> tuple[int, int]:
        """
        ``(connection number, requests before this one on it)``.
        """
        entry = self.seen.get(transport, [0, 0])
        before = entry[1]
        entry[1] += 1
        return entry[0], before

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        self.seen.pop(p, None)
        if not self.protocols:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def close_all(self) -> "Deferred[None]":
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        for p in list(self.protocols):
            p.transport.abortConnection()
        return d


class _Translate(Resource):
    isLeaf = True

    def __init__(self, fake: "FakeDeepL") -> None:
        super().__init__()
        self.fake = fake

    def render(self, request: Request) -> Any:
        return self.fake._handle(request)


class FakeDeepL:
    """
    A running fake.  Build with :func:`start_fake_deepl`.

    :ivar port: the TCP port it listens on.
    :ivar url: ``http://127.0.0.1:PORT``, the client's ``server_url``.
    :ivar requests: every request received, in order.
    :ivar faults: failure injection for requests without a session header.
    :ivar sessions: faults of each ``mock-server-session`` id.
    """

    def __init__(self, reactor: Any, auth_key: str, faults: Faults) -> None:
        self.reactor = reactor
        self.auth_key = auth_key
        self.faults = faults
        self.sessions: dict[str, Faults] = {}
        self.requests: list[RecordedRequest] = []
        self.listening: Optional[IListeningPort] = None
        self.port = 0
        self.url = ""
        self._pending: set[IDelayedCall] = set()
        root = Resource()
        v2 = Resource()
        root.putChild(b"v2", v2)
        translate = _Translate(self)
        v2.putChild(b"translate", translate)
        v2.putChild(b"usage", translate)
        self.site = Site(root)
        self.site.displayTracebacks = False
        self.factory = _Connections(self.site)

    def stop(self) -> "Deferred[None]":
        """
        Stop listening, drop delayed answers, close every connection; fires
        when they are all closed.
        """
        for call in list(self._pending):
            if call.active():
                call.cancel()
        self._pending.clear()
        d: Deferred[Any] = succeed(None)
        if self.listening is not None:
            listening, self.listening = self.listening, None
            d = maybeDeferred(listening.stopListening)
        d.addCallback(lambda _: self.factory.close_all())
        return d

    # -- request handling --

    def _handle(self, request: Request) -> Any:
        arrived = self.reactor.seconds()
        number, previous = self.factory.count_request(
            request.channel.transport if request.channel is not None else None
        )
        headers = {
            k.decode("latin-1").lower(): v[-1].decode("latin-1")
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        raw = request.content.read() if request.content is not None else b""
        body: Optional[dict[str, Any]] = None
        status: Optional[int]
        try:
            body = _parse_body(raw, content_type)
        except _Reject:
            pass
        try:
            status, payload = self._respond(request, headers, raw, content_type)
        except _Reject as e:
            status, payload = e.status, {"message": e.message}
            for name, value in e.headers.items():
                request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        self.requests.append(
            RecordedRequest(
                method=request.method.decode("ascii"),
                path=request.path.decode("utf-8", "replace"),
                headers=headers,
                content_type=content_type,
                body=body,
                arrived_at=arrived,
                connection=number,
                reused=previous > 0,
                status=status,
            )
        )
        if status is None:
            return NOT_DONE_YET  # hang until the client gives up
        faults = self._faults(headers)
        data = json.dumps(payload).encode("utf-8")
        if faults.latency <= 0:
            return self._write(request, status, data)

        gone: list[bool] = []

        def later() -> None:
            self._pending.discard(call)
            if not gone:
                request.write(self._write(request, status, data))
                request.finish()

        def lost(reason: Any) -> None:
            gone.append(True)
            self._pending.discard(call)
            if call.active():
                call.cancel()

        call = self.reactor.callLater(faults.latency, later)
        self._pending.add(call)
        request.notifyFinish().addErrback(lost)
        return NOT_DONE_YET

    def _write(self, request: Request, status: int, data: bytes) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", str(len(data)).encode("ascii"))
        request.setHeader(b"x-trace-id", secrets.token_hex(16).encode("ascii"))
        return data

    def _faults(self, headers: dict[str, str]) -> Faults:
        session = headers.get("mock-server-session")
        if session is None:
            return self.faults
        if session not in self.sessions:
            self.sessions[session] = Faults.from_headers(headers)
        return self.sessions[session]

    def _respond(
        self, request: Request, headers: dict[str, str], raw: bytes, content_type: str
    ) -> tuple[Optional[int], Any]:
        """
        ``(status, JSON payload)``; status ``None`` = never answer.
        """
        path = request.path.split(b"?")[0].rstrip(b"/")
        method = request.method
        if path == b"/v2/usage":
            expected = b"GET"
        else:
            expected = b"POST"
        if method != expected:
            raise _Reject(405, "Method not allowed")
        auth = headers.get("authorization", "")
        if auth != f"DeepL-Auth-Key {self.auth_key}":
            raise _Reject(403, "Authorization failure, check auth_key" if auth else "Missing authentication")
        faults = self._faults(headers)
        if faults.forbidden:
            raise _Reject(403, "Authorization failure, check auth_key")
        if not headers.get("user-agent") and not faults.allow_missing_user_agent:
            raise _Reject(400, "Missing User-Agent header")
        if faults.no_response > 0:
            faults.no_response -= 1
            return None, None
        if faults.fail_429 > 0:
            faults.fail_429 -= 1
            extra = {"Retry-After": f"{faults.retry_after:g}"} if faults.retry_after is not None else None
            raise _Reject(429, "Too many requests", extra)
        if faults.fail_5xx > 0:
            faults.fail_5xx -= 1
            raise _Reject(faults.status_5xx, "Internal server error")
        if path == b"/v2/usage":
            return 200, {"character_count": faults.characters_used, "character_limit": faults.character_limit or 500000}
        if faults.quota_exceeded:
            raise _Reject(456, "Quota for this billing period has been exceeded.")
        if len(raw) > MAX_BODY:
            raise _Reject(413, "Request Entity Too Large")
        body = _parse_body(raw, content_type)
        texts, target, source, options = _validate(body)
        chars = sum(len(t) for t in texts)
        if faults.character_limit and faults.characters_used + chars > faults.character_limit:
            raise _Reject(456, "Quota for this billing period has been exceeded.")
        faults.characters_used += chars
        translations = []
        for text in texts:
            detected = source or detect_language(text)
            item: dict[str, Any] = {
                "detected_source_language": detected,
                "text": translate_words(text, detected, target),
            }
            if options["show_billed_characters"]:
                item["billed_characters"] = len(text)
            if options["model_type"] is not None:
                item["model_type_used"] = MODEL_TYPES[options["model_type"]]
            translations.append(item)
        return 200, {"translations": translations}


def _parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    """
    The body as a dict: a JSON object, or form fields where ``text`` (and
    tag lists) are lists and everything else is the last value.
    """
    if content_type == "application/json":
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _Reject(400, "Invalid JSON body")
        if not isinstance(body, dict):
            raise _Reject(400, "JSON body must be an object")
        return body
    if content_type in ("application/x-www-form-urlencoded", ""):
        try:
            fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise _Reject(400, "Invalid form body")
        listed = {"text", "glossary_ids", "non_splitting_tags", "splitting_tags", "ignore_tags", "custom_instructions"}
        return {k: (v if k in listed else v[-1]) for k, v in fields.items()}
    raise _Reject(415, f"Unsupported content type {content_type!r}")


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true"))


def _validate(body: dict[str, Any]) -> tuple[list[str], str, Optional[str], dict[str, Any]]:
    """
    ``(texts, TARGET, SOURCE or None, options)`` or a 400 the way DeepL
    words it.
    """
    if "auth_key" in body:
        raise _Reject(403, "Authentication via auth_key parameter is not supported; use the Authorization header")
    texts = body.get("text")
    if texts is None:
        raise _Reject(400, "Parameter 'text' not specified.")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise _Reject(400, "Parameter 'text' must be an array of strings.")
    if not texts:
        raise _Reject(400, "Parameter 'text' not specified.")
    target = body.get("target_lang")
    if not isinstance(target, str) or not target:
        raise _Reject(400, "Parameter 'target_lang' not specified.")
    target = target.upper()
    if target not in TARGETS:
        raise _Reject(400, "Value for 'target_lang' not supported.")
    source = body.get("source_lang")
    if source is not None:
        if not isinstance(source, str) or source.upper() not in SOURCES:
            raise _Reject(400, "Value for 'source_lang' not supported.")
        source = source.upper()
    formality = body.get("formality")
    if formality is not None:
        if formality not in FORMALITIES:
            raise _Reject(400, "Value for 'formality' not supported.")
        if formality in ("more", "less") and target not in FORMALITY_TARGETS:
            raise _Reject(400, "'formality' is not supported for given 'target_lang'.")
    model_type = body.get("model_type")
    if model_type is not None and model_type not in MODEL_TYPES:
        raise _Reject(400, "Value for 'model_type' not supported.")
    if body.get("custom_instructions") and model_type in (None, "latency_optimized"):
        raise _Reject(400, "'custom_instructions' cannot be used with model_type 'latency_optimized'.")
    context = body.get("context")
    if context is not None and not isinstance(context, str):
        raise _Reject(400, "Parameter 'context' must be a string.")
    options = {
        "show_billed_characters": _flag(body.get("show_billed_characters")),
        "model_type": model_type,
    }
    return texts, target, source, options


def start_fake_deepl(
    reactor: Any,
    port: int = 0,
    interface: str = "127.0.0.1",
    auth_key: str = "test-key:fx",
    **options: Any,
) -> FakeDeepL:
    """
    Listen on ``interface:port`` (0 = any free port).

    :param auth_key: the only key accepted.
    :param options: initial :class:`Faults` fields (``fail_429=2``, ``latency=0.5``...).
    """
    fake = FakeDeepL(reactor, auth_key, Faults(**options))
    fake.listening = reactor.listenTCP(port, fake.factory, interface=interface)
    fake.port = fake.listening.getHost().port  # type: ignore[union-attr]
    fake.url = f"http://{interface}:{fake.port}"
    return fake


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """
    Command-line options of ``python -m tests.fakes deepl``.
    """
    existing = getattr(parser, "_option_string_actions", {})
    if "--port" not in existing:
        parser.add_argument("--port", type=int, default=8802, help="TCP port (default 8802)")
    if "--interface" not in existing:
        parser.add_argument("--interface", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--auth-key", default="test-key:fx", help="the key clients must send")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--fail-429", type=int, default=0, help="answer the first N requests 429")
    parser.add_argument("--fail-5xx", type=int, default=0, help="answer the first N requests 5xx")
    parser.add_argument("--status-5xx", type=int, default=503, help="status for --fail-5xx")
    parser.add_argument("--no-response", type=int, default=0, help="never answer the first N requests")
    parser.add_argument("--quota-exceeded", action="store_true", help="answer 456 to everything")
    parser.add_argument("--retry-after", type=float, default=None,
                        help="send Retry-After: N (seconds) with each injected 429")
    parser.add_argument("--character-limit", type=int, default=0, help="456 after N characters (0 = none)")


def run_from_args(reactor: Any, args: argparse.Namespace) -> FakeDeepL:
    """
    Start a fake from :func:`add_arguments` options; prints its URL.
    """
    fake = start_fake_deepl(
        reactor,
        port=getattr(args, "port", 8802),
        interface=getattr(args, "interface", "127.0.0.1"),
        auth_key=args.auth_key,
        latency=args.latency,
        fail_429=args.fail_429,
        fail_5xx=args.fail_5xx,
        status_5xx=args.status_5xx,
        no_response=args.no_response,
        quota_exceeded=args.quota_exceeded,
        character_limit=args.character_limit,
        retry_after=getattr(args, "retry_after", None),
    )
    print(f"fake DeepL on {fake.url} (XLBRIDGE_DEEPL_URL={fake.url}, DEEPL_AUTH_KEY={fake.auth_key})", flush=True)
    return fake
