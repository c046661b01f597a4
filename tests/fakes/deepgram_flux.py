"""
A fake Deepgram **Flux** server (``/v2/listen``, turn-based streaming ASR) for
tests and by hand (``python -m tests.fakes deepgram-flux --port 0``).  The
``/v1`` fake's plumbing (:mod:`tests.fakes.deepgram`: upgrade denial with
``dg-request-id``/``dg-error``, latency, close, drop, idle close) is reused
by subclassing.  Faithful to PROTOCOLS.md section 11:

* Upgrade (11.1): 404 off ``/v2/listen``; 401 without ``Authorization: Token
  <key>``; 400 for another model, encoding or rate than ``flux-general-en|multi``,
  ``linear16``, 16000 (documented ones: "not supported by this fake"), a
  threshold out of range, ``language_hint`` off ``flux-general-multi`` or empty.
* Turns (11.2, 11.3) on audio time only (rule 8): a tone word
  (:mod:`tests.fakes.tonewords`, 16-bit little-endian) starts a turn;
  ``Update`` every ``update_ms`` of audio after the last turn event;
  ``eager_ms`` of silence: ``EagerEndOfTurn`` (eager mode only); ``eot_ms``:
  ``EndOfTurn`` (``trigger: "model"``) with the same transcript; sound after
  the eager event: ``TurnResumed`` first.  ``eot_threshold=1.0`` suppresses
  the model's end; ``eot_timeout_ms`` of silence then ends the turn
  (``trigger: "timeout"``).  ``languages`` on every TurnInfo for
  ``flux-general-multi`` (English/Spanish by the words heard).
* Client messages (11.4): ``ForceEndTurn``, ``CloseStream`` (``Update`` then a
  close with no status, no ``EndOfTurn``), ``Configure``; ``KeepAlive`` kills
  the stream (recorded as a violation); anything else: ``Error``, close 1008.

Simplified: lower-case words, no punctuation; fixed timings (not derived from
the thresholds); ``end_of_turn_confidence`` a plain function of the event;
``keyterm`` and the other optional parameters are recorded, not used.
"""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import attrs
import numpy as np
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.logger import Logger

from tests.fakes import tonewords
from tests.fakes.deepgram import (
    FRAME,
    MAX_AUDIO_BYTES,
    ConnectionRecord,
    FakeDeepgram,
    FrameFeeder,
    add_common_arguments,
)
from tests.fakes.deepgram import FakeListenProtocol as V1Protocol

MODELS = ("flux-general-en", "flux-general-multi")
ENCODINGS = ("linear16", "linear32", "mulaw", "alaw", "opus", "ogg-opus")  # PROTOCOLS.md 11.1
RATES = (8000, 16000, 24000, 44100, 48000)
V1_ONLY = ("language", "interim_results", "endpointing", "utterance_end_ms", "vad_events", "smart_format",
           "punctuate")
SPANISH = frozenset(tonewords.VOCABULARY[10:20] + ["donde", "esta", "el", "uno", "dos", "tres", "si"])
_RANGES = {"eot_threshold": (0.5, 1.0), "eager_eot_threshold": (0.3, 0.9), "eot_timeout_ms": (500, 60000)}


def check_thresholds(th: dict[str, Any]) -> Optional[str]:
    """What is wrong with merged thresholds (PROTOCOLS.md 11.1 ranges), or ``None``."""
    for key, (lo, hi) in _RANGES.items():
        v = th.get(key)
        if key == "eager_eot_threshold" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            return f"{key} must be {lo}..{hi}, got {v!r}"
    eager = th.get("eager_eot_threshold")
    if eager is not None and eager > th["eot_threshold"]:
        return "eager_eot_threshold must not be above eot_threshold"
    return None


@attrs.define(eq=False)
class FluxRecord(ConnectionRecord):
    """
    The v1 :class:`~tests.fakes.deepgram.ConnectionRecord` (query, text messages
    and ``control_types``, violations, audio, ``sent``, ``close_code``) plus
    ``heard`` (word, start s, end s), ``pings`` received, ``close_sent`` (a close
    frame went out; ``close_code`` ``None`` = no status) and the ``thresholds``
    in force (query, then ``Configure``).
    """

    heard: list[tuple[str, float, float]] = attrs.Factory(list)
    pings: int = 0
    close_sent: bool = False
    thresholds: dict[str, Any] = attrs.Factory(dict)

    def events(self) -> list[str]:
        """Every message sent: its ``event`` for ``TurnInfo``, else its ``type``."""
        return [str(m.get("event") if m.get("type") == "TurnInfo" else m.get("type")) for m in self.sent]


class FluxRecognizer(FrameFeeder):
    """
    The turn state machine over tone words, sans-I/O: fed raw bytes (16-bit
    little-endian, 16 kHz), returns ``TurnInfo`` dicts without ``sequence_id``.
    All times are 20 ms frames of audio received on this connection.
    """

    def __init__(self, request_id: str = "", thresholds: Optional[dict[str, Any]] = None,
                 eager_ms: int = 150, eot_ms: int = 260, update_ms: int = 250,
                 multi: bool = False, hints: tuple[str, ...] = ()) -> None:
        self.request_id = request_id
        self.thresholds: dict[str, Any] = thresholds or {"eot_threshold": 0.7, "eot_timeout_ms": 5000}
        self.eager_ms, self.eot_ms, self.update_ms = eager_ms, eot_ms, update_ms
        self.multi = multi  # flux-general-multi: ``languages`` on every TurnInfo
        self.hints = hints
        self.heard: list[tuple[str, float, float]] = []
        self._run: list[np.ndarray] = []  # the frames of the loud run in progress
        # Frames received; the turn; its window's first frame; the last TurnInfo's frame (Update pacing).
        self.frame = self.turn_index = self.window_start = self.last_event = 0
        self.state = "Initial"  # PROTOCOLS.md 11.3: Initial, TurnOngoing, AwaitingEnd
        self.words: list[tuple[str, int, int]] = []  # this turn's words, frames
        self.run_start: Optional[int] = None
        self.last_loud: Optional[int] = None
        self.threshold = 0.05 * tonewords.LEVEL

    def _frame(self, f: np.ndarray) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        i = self.frame
        self.frame += 1
        if float(np.sqrt(np.mean(f ** 2))) > self.threshold:
            self._run.append(f)
            if self.run_start is None:
                self.run_start = i
                if self.state == "AwaitingEnd":  # speech after the eager event (11.3 rule 3/4)
                    self.state = "TurnOngoing"
                    out.append(self._info("TurnResumed"))
            self.last_loud = i
        else:
            if self.run_start is not None:
                out += self._close_run(i)
            if self.state != "Initial" and self.last_loud is not None:
                out += self._silence((i - self.last_loud) * 20)
        if self.state != "Initial" and (self.frame - self.last_event) * 20 >= self.update_ms:
            out.append(self._info("Update"))
        return out

    def _close_run(self, end: int) -> list[dict[str, Any]]:
        """A loud run ended at frame ``end``: a word, and the turn it starts."""
        start, self.run_start = self.run_start, None
        run, self._run = self._run, []
        assert start is not None
        if (end - start) * 20 < tonewords.WORD_MS // 2:
            return []
        pad = np.zeros(FRAME, dtype=np.float64)
        seg = np.concatenate((pad, *run, pad))
        found = tonewords.decode_words((seg * 32767).astype(np.int16))
        if not found:
            return []
        self.words.append((found[0], start, end))
        self.heard.append((found[0], start * 0.02, end * 0.02))
        if self.state == "Initial":
            self.state = "TurnOngoing"
            return [self._info("StartOfTurn")]
        return []

    def _silence(self, ms: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        model = self.thresholds["eot_threshold"] < 1.0  # 1.0 suppresses the model's end of turn (11.1)
        timeout = ms >= self.thresholds["eot_timeout_ms"]
        end = (model and ms >= self.eot_ms) or timeout
        eager_mode = self.thresholds.get("eager_eot_threshold") is not None
        if eager_mode and self.state == "TurnOngoing" and (ms >= self.eager_ms or end):
            self.state = "AwaitingEnd"
            out.append(self._info("EagerEndOfTurn"))
        if end:
            out += self.end_turn("model" if model and ms >= self.eot_ms else "timeout")
        return out

    def end_turn(self, trigger: str) -> list[dict[str, Any]]:
        """``EndOfTurn`` now (``ForceEndTurn`` is ``manual``); nothing outside a turn."""
        out: list[dict[str, Any]] = []
        if self.run_start is not None:
            out += self._close_run(self.frame)
        if self.state == "Initial":
            return out
        msg = self._info("EndOfTurn")
        msg["trigger"] = trigger
        out.append(msg)
        self.turn_index += 1
        self.state = "Initial"
        self.words = []
        self.window_start = self.frame
        return out

    def flush(self) -> list[dict[str, Any]]:
        """``CloseStream``: ``Update`` for the audio so far, never ``EndOfTurn``."""
        out = self._close_run(self.frame) if self.run_start is not None else []
        if self.state != "Initial":
            out.append(self._info("Update"))
        return out

    def _confidence(self, event: str) -> float:
        """Eager/end: their thresholds; otherwise rising with the silence so far."""
        if event in ("EagerEndOfTurn", "EndOfTurn"):
            key = "eager_eot_threshold" if event == "EagerEndOfTurn" else "eot_threshold"
            return float(min(self.thresholds.get(key) or 0.5, 0.99))
        quiet = 0 if self.last_loud is None or self.run_start is not None else (self.frame - 1 - self.last_loud) * 20
        return round(min(0.9, 0.02 + quiet / max(self.eot_ms, 1) * 0.5), 3)

    def _info(self, event: str) -> dict[str, Any]:
        self.last_event = self.frame
        words = [{"word": w, "confidence": 0.99, "start": round(s * 0.02, 3), "end": round(e * 0.02, 3)}
                 for w, s, e in self.words]
        msg: dict[str, Any] = {
            "type": "TurnInfo", "request_id": self.request_id, "event": event, "turn_index": self.turn_index,
            "audio_window_start": round(self.window_start * 0.02, 3), "audio_window_end": round(self.frame * 0.02, 3),
            "transcript": " ".join(w for w, _, _ in self.words), "words": words,
            "end_of_turn_confidence": self._confidence(event),
        }
        if self.multi:  # 11.3 rule 7: every TurnInfo on flux-general-multi
            es = sum(w in SPANISH for w, _, _ in self.words)
            en = len(self.words) - es
            seen = [lang for n, lang in sorted(((en, "en"), (es, "es")), reverse=True) if n]
            msg["languages"] = seen or list(self.hints[:1] or ["en"])
            if self.hints:
                msg["languages_hinted"] = list(self.hints)
        return msg


class _FluxProtocol(V1Protocol):
    """The ``/v1`` fake's plumbing (deny, latency, close, drop, idle) with Flux's messages."""

    def __init__(self) -> None:
        super().__init__()
        self.record: FluxRecord = FluxRecord()
        self.flux: Optional[FluxRecognizer] = None
        self._seq = 0
        self._keyterms: list[str] = []

    def onConnect(self, request: Any) -> Any:
        fake: FakeFlux = self.factory.fake
        rec = self.record
        rec.path = request.path
        rec.headers = dict(request.headers)
        # Autobahn's request.params drops blank values; Flux refuses an empty language_hint.
        every = parse_qs(urlsplit(self.http_request_uri).query, keep_blank_values=True)
        rec.params = {k: v[0] for k, v in every.items()}
        rec.request_id = str(uuid.uuid4())
        fake.connections.append(rec)
        self._check_path_and_key(request.path, "/v2/listen", fake)
        p = rec.params
        model = p.get("model")
        if model not in MODELS:
            self._deny(400, f"Invalid model {model!r}: Flux models are {', '.join(MODELS)}.")
        enc, rate = p.get("encoding", ""), p.get("sample_rate", "")
        if enc not in ENCODINGS or not rate.isdigit() or int(rate) not in RATES:
            self._deny(400, f"Invalid or missing encoding {enc!r} / sample_rate {rate!r} (containers are not "
                            "supported by this fake).")
        if enc != "linear16" or rate != "16000":
            self._deny(400, f"encoding={enc} sample_rate={rate} is not supported by this fake (linear16 16000).")
        th: dict[str, Any] = {}
        try:
            th["eot_threshold"] = float(p.get("eot_threshold", "0.7"))
            th["eot_timeout_ms"] = int(p.get("eot_timeout_ms", "5000"))
            if "eager_eot_threshold" in p:
                th["eager_eot_threshold"] = float(p["eager_eot_threshold"])
        except ValueError:
            self._deny(400, "eot_threshold, eager_eot_threshold and eot_timeout_ms must be numbers.")
        problem = check_thresholds(th)
        if problem:
            self._deny(400, problem)
        hints = tuple(every.get("language_hint", ()))
        if (hints and model != "flux-general-multi") or not all(hints):
            self._deny(400, "language_hint: non-empty, and only with flux-general-multi.")
        rec.violations += [f"{k}: a /v1/listen parameter, not Flux's" for k in V1_ONLY if k in p]
        rec.status = 101
        rec.thresholds, self._keyterms = th, list(every.get("keyterm", []))
        self.flux = FluxRecognizer(rec.request_id, th, fake.eager_ms, fake.eot_ms, fake.update_ms,
                                   multi=model == "flux-general-multi", hints=hints)
        self.flux.heard = rec.heard
        if fake._drops:
            after_bytes, after_seconds = fake._drops[0][1:]
            fake._drops[0][0] -= 1
            if fake._drops[0][0] <= 0:
                fake._drops.pop(0)
            self._drop_bytes = after_bytes
            if after_seconds is not None:
                self._calls.append(fake.reactor.callLater(after_seconds, self._drop))
        return (None, {"dg-request-id": rec.request_id, "dg-model-name": model})

    def onOpen(self) -> None:
        super().onOpen()
        self._emit({"type": "Connected", "request_id": self.record.request_id})

    def _emit(self, *msgs: dict[str, Any]) -> None:
        for msg in msgs:
            msg["sequence_id"] = self._seq  # 0 on Connected, +1 per server message (11.2)
            self._seq += 1
            self._send_json(msg)

    def sendCloseFrame(self, code: Optional[int] = None, reasonUtf8: Optional[bytes] = None,
                       isReply: bool = False) -> None:
        if not isReply and self.state == self.STATE_OPEN:
            self.record.close_sent = True
        super().sendCloseFrame(code, reasonUtf8, isReply)

    def onPing(self, payload: bytes) -> None:
        self.record.pings += 1
        if self.factory.fake.pings_keep_alive and not self._ended:
            self._touch()
        super().onPing(payload)  # answers with a pong

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._ended or self.flux is None:
            return
        rec, flux = self.record, self.flux
        if isBinary:
            rec.binary_sizes.append(len(payload))
            if not payload:
                rec.violations.append("empty binary frame")
                return
            if len(payload) % 2:
                rec.violations.append(f"binary message of {len(payload)} bytes is not whole 16-bit samples")
            if len(rec.audio) + len(payload) <= MAX_AUDIO_BYTES:
                rec.audio += payload
            self._touch()  # the idle timer counts audio only (and pings)
            if self._drop_bytes is not None and len(rec.audio) >= self._drop_bytes:
                self._drop()
                return
            self._emit(*flux.feed(payload))
            return
        text = payload.decode("utf-8", "replace")
        rec.text_messages.append(text)
        try:
            msg = json.loads(text)
            kind = msg.get("type")
        except (ValueError, AttributeError):
            msg, kind = {}, None
        if kind == "ForceEndTurn":
            self._emit(*flux.end_turn("manual"))
        elif kind == "CloseStream":
            self._emit(*flux.flush())
            self._finish(None)  # no status code: the client sees 1005 (11.4)
        elif kind == "Configure":
            self._configure(msg)
        elif kind == "KeepAlive":
            rec.violations.append("KeepAlive is not a /v2/listen message (the real service kills the stream)")
            self._finish(None)  # "killed the connection (1005)", PROTOCOLS.md 11.4
        else:
            rec.violations.append(f"unknown client message {text[:80]!r}")
            # Neither the code nor the close status is documented for this
            # case: this fake sends a FatalError-shaped Error (11.2) with a
            # code of its own and closes with 1008 (policy violation).
            self._emit({"type": "Error", "code": "UNPARSABLE_CLIENT_MESSAGE",
                        "description": f"Unknown or malformed client message: {text[:80]}"})
            self._finish(1008, "UNPARSABLE_CLIENT_MESSAGE")

    def _finish(self, code: Optional[int], reason: Optional[str] = None) -> None:
        self._ended = True
        self._enqueue_close(code, reason)  # type: ignore[arg-type]  # None = a close frame with no status

    def _configure(self, msg: dict[str, Any]) -> None:
        assert self.flux is not None
        th, keyterms, hints = msg.get("thresholds", {}), msg.get("keyterms"), msg.get("language_hints")
        ok = isinstance(th, dict) and not set(th) - set(_RANGES)
        merged = {**self.flux.thresholds, **(th if ok else {})}
        problem = check_thresholds(merged) if ok else f"unknown thresholds {th!r}"
        if keyterms is not None and not (isinstance(keyterms, list) and all(isinstance(k, str) for k in keyterms)):
            problem = "keyterms must be a list of strings"
        if hints is not None and (not self.flux.multi or not isinstance(hints, list)
                                  or not all(isinstance(h, str) and h for h in hints)):
            problem = "language_hints: non-empty strings, flux-general-multi only"
        if problem:
            self.record.violations.append(f"Configure refused: {problem}")
            self._emit({"type": "ConfigureFailure", "request_id": self.record.request_id})
            return
        self.flux.thresholds = self.record.thresholds = merged
        self.flux.hints = tuple(hints) if hints is not None else self.flux.hints
        self._keyterms = list(keyterms) if keyterms is not None else self._keyterms  # omitted: kept (11.4)
        reply: dict[str, Any] = {"type": "ConfigureSuccess", "request_id": self.record.request_id,
                                 "thresholds": dict(merged), "keyterms": list(self._keyterms)}
        if self.flux.multi:
            reply["language_hints"] = list(self.flux.hints)
        self._emit(reply)


class FakeFlux(FakeDeepgram):
    """
    A running fake Flux.  Failure injection is the v1 fake's
    (:class:`tests.fakes.deepgram.FakeDeepgram`): ``latency`` (s per message,
    order kept), ``reject_next(count, status)``, ``drop_next``, ``drop_all()``,
    and :meth:`close_live`.  ``eager_ms``/``eot_ms``/``update_ms``: audio
    silence before ``EagerEndOfTurn``/``EndOfTurn``; audio between ``Update``
    messages.

    Idle: ``idle_timeout`` real seconds with no audio -> close 1011 with v1's
    ``NET-0001`` reason: modelled on ``/v1`` (PROTOCOLS.md 2.5), as Flux's own
    idle close is undocumented (11.4: pings keep a stream open, ~60 s).  With
    ``pings_keep_alive`` (default) a WebSocket ping also resets the timer.
    """

    connections: list[FluxRecord]  # type: ignore[assignment]

    def __init__(self, reactor: Any, api_key: str = "test-key", latency: float = 0.0,
                 idle_timeout: float = 10.0, eager_ms: int = 150, eot_ms: int = 260,
                 update_ms: int = 250) -> None:
        super().__init__(reactor, api_key=api_key, latency=latency, idle_timeout=idle_timeout)
        self.eager_ms, self.eot_ms, self.update_ms = eager_ms, eot_ms, update_ms
        self.pings_keep_alive = True

    def close_live(self, code: Optional[int] = 1011, reason: Optional[str] = "INTERNAL_SERVER_ERROR",
                   error: bool = True) -> int:
        """
        End every live stream after what is queued: an ``Error``
        (``INTERNAL_SERVER_ERROR``, 11.2) if ``error``, then close ``code``
        (``None``: no status, as Flux's own closes).  Returns how many.
        """
        live = [p for p in self._live if isinstance(p, _FluxProtocol) and not p._ended]
        for p in live:
            if error:
                p._emit({"type": "Error", "code": "INTERNAL_SERVER_ERROR", "description": "Injected failure."})
            p._finish(code, reason)
        return len(live)

    def listen(self, port: int = 0, interface: str = "127.0.0.1") -> None:
        factory = WebSocketServerFactory(reactor=self.reactor)
        factory.protocol = _FluxProtocol
        factory.fake = self  # type: ignore[attr-defined]
        factory.noisy = False
        # As the v1 fake.  autoPingInterval=0 only stops *our* pings; the
        # client's are still answered with pongs (onPing).
        factory.setProtocolOptions(openHandshakeTimeout=0, autoPingInterval=0, closeHandshakeTimeout=5)
        self._port = self.reactor.listenTCP(port, factory, interface=interface)
        self.port = self._port.getHost().port
        self.url = f"ws://{interface}:{self.port}"


def start_fake_flux(reactor: Any, port: int = 0, interface: str = "127.0.0.1", api_key: str = "test-key",
                    **options: Any) -> FakeFlux:
    """Listen on ``interface:port`` (0 = any free port); ``options`` as :class:`FakeFlux`."""
    fake = FakeFlux(reactor, api_key=api_key, **options)
    fake.listen(port, interface)
    return fake


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for ``python -m tests.fakes deepgram-flux``."""
    add_common_arguments(parser, 8804, "seconds without audio (or ping) before close 1011")
    parser.add_argument("--eager-ms", type=int, default=150, help="silence before EagerEndOfTurn")
    parser.add_argument("--eot-ms", type=int, default=260, help="silence before EndOfTurn")


def run_from_args(reactor: Any, args: argparse.Namespace) -> FakeFlux:
    """Start the fake from parsed :func:`add_arguments` options."""
    fake = start_fake_flux(reactor, port=args.port, interface=args.interface, api_key=args.api_key,
                           latency=args.latency, idle_timeout=args.idle_timeout, eager_ms=args.eager_ms,
                           eot_ms=args.eot_ms)
    if args.reject_first:
        fake.reject_next(args.reject_first, args.reject_status)
    Logger().info("fake Deepgram Flux listening on {url}/v2/listen (api key {key!r})", url=fake.url,
                  key=fake.api_key)
    return fake
