"""
Tests for the fake Deepgram Flux server :mod:`tests.fakes.deepgram_flux`,
over real loopback sockets: its messages must parse with the client's own
parser (:mod:`xlbridge.engines.deepgram.flux_wire`) and follow the turn
rules of PROTOCOLS.md 11.3, and it must refuse what Flux refuses (11.1).
"""

from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import urlencode

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.engines.deepgram.fixtures import KEY, eventually, reactor, silence_ms, sleep
from tests.fakes import tonewords
from tests.fakes.deepgram_flux import FakeFlux, FluxRecognizer, start_fake_flux
from xlbridge.engines.deepgram.flux_turns import Cancel, Commit, Speculate, TurnTracker
from xlbridge.engines.deepgram.flux_wire import (
    CLOSE_STREAM,
    FORCE_END_TURN,
    ConfigureResult,
    Connected,
    FluxError,
    TurnEvent,
    TurnInfo,
    configure,
    flux_query,
    parse_flux,
)

Script = list[tuple[bytes, bool]]


def speech(text: str) -> bytes:
    """Tone words as Flux wants them: linear16, little-endian, 16 kHz."""
    return bytes(tonewords.encode_words(text).astype("<i2").tobytes())


def quiet(ms: int) -> bytes:
    return bytes(silence_ms(ms).astype("<i2").tobytes())


def audio(*parts: bytes, chunk: int = 2560) -> Script:
    """Audio in 80 ms messages (PROTOCOLS.md 11.1's recommendation)."""
    data = b"".join(parts)
    return [(data[i:i + chunk], True) for i in range(0, len(data), chunk)]


def text(msg: str) -> Script:
    return [(msg.encode("utf-8"), False)]


class ScriptClient(WebSocketClientProtocol):  # type: ignore[misc]
    """Sends the factory's script on open; records messages and the close."""

    def onOpen(self) -> None:
        self.factory.proto = self
        for payload, binary in self.factory.script:
            self.sendMessage(payload, isBinary=binary)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.raw.append(json.loads(payload))
        self.factory.messages.append(parse_flux(payload))

    def onPong(self, payload: bytes) -> None:
        self.factory.pongs += 1

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.closes.append((wasClean, code, reason))
        # No headers when the connection failed before the response.
        self.factory.request_id = (getattr(self, "http_headers", None) or {}).get("dg-request-id")


class FluxTestCase(TestCase):
    def fake(self, **options: Any) -> FakeFlux:
        fake = start_fake_flux(reactor, api_key=KEY, **options)
        self.addCleanup(fake.stop)
        return fake

    def connect(self, fake: FakeFlux, script: Script, query: Optional[list[tuple[str, str]]] = None,
                path: str = "/v2/listen", key: Optional[str] = KEY) -> Any:
        q = flux_query("flux-general-en", eager_eot_threshold=0.5) if query is None else query
        headers = {"Authorization": f"Token {key}"} if key else {}
        factory: Any = WebSocketClientFactory(f"{fake.url}{path}?{urlencode(q)}", headers=headers, reactor=reactor)
        factory.protocol = ScriptClient
        factory.script, factory.raw, factory.messages, factory.closes, factory.pongs = script, [], [], [], 0
        conn = reactor.connectTCP("127.0.0.1", fake.port, factory)
        self.addCleanup(conn.disconnect)
        return factory

    def turns(self, f: Any) -> list[TurnInfo]:
        return [m for m in f.messages if isinstance(m, TurnInfo)]

    def events(self, f: Any) -> list[tuple[str, str]]:
        """(event, transcript) of every TurnInfo except ``Update``."""
        return [(m.event.value, m.transcript) for m in self.turns(f) if m.event is not TurnEvent.UPDATE]

    def ended(self, f: Any, count: int = 1) -> Any:
        return eventually(lambda: sum(m.event is TurnEvent.END for m in self.turns(f)) >= count)


class UpgradeTests(FluxTestCase):
    @inlineCallbacks
    def test_refusals(self) -> Any:
        """401 for auth, 404 off /v2/listen, 400 for what Flux's query rules forbid (11.1)."""
        fake = self.fake()
        good = dict(model="flux-general-en", encoding="linear16", sample_rate="16000")
        cases: list[tuple[int, dict[str, Any]]] = [
            (401, dict(key=None)), (401, dict(key="wrong")), (404, dict(path="/v1/listen")),
            (400, dict(query={**good, "model": "nova-3"})), (400, dict(query={**good, "encoding": "mulaw"})),
            (400, dict(query={**good, "sample_rate": "8000"})), (400, dict(query={**good, "eot_threshold": "0.4"})),
            (400, dict(query={**good, "eager_eot_threshold": "0.8"})),  # above the default 0.7
            (400, dict(query={**good, "eot_timeout_ms": "100"})),
            (400, dict(query={**good, "language_hint": "es"})),  # hints need flux-general-multi
            (400, dict(query={**good, "model": "flux-general-multi", "language_hint": ""})),
            (400, dict(query={**good, "eot_threshold": ""})),
            (101, dict(query=flux_query("flux-general-multi", language_hints=["es"]))),
        ]
        for i, (status, kw) in enumerate(cases):
            q = kw.pop("query", good)
            f = self.connect(fake, [], query=list(q.items()) if isinstance(q, dict) else q, **kw)
            yield eventually(lambda: len(fake.connections) > i and fake.connections[i].status != 0)
            rec = fake.connections[i]
            self.assertEqual(rec.status, status, (kw, q, rec.dg_error))
            if status != 101:
                yield eventually(lambda: bool(f.closes))
                self.assertEqual(f.request_id, rec.request_id)
                self.assertFalse(f.closes[0][0])

    @inlineCallbacks
    def test_reject_next(self) -> Any:
        fake = self.fake()
        fake.reject_next(1, 429)
        f = self.connect(fake, [])
        yield eventually(lambda: bool(f.closes))
        self.assertEqual(fake.connections[0].status, 429)


class TurnTests(FluxTestCase):
    @inlineCallbacks
    def test_eager_then_end_same_transcript(self) -> Any:
        """Connected first (sequence 0), ids contiguous (with latency); eager and end agree; turn_index moves on."""
        fake = self.fake(latency=0.02)
        f = self.connect(fake, audio(speech("hello world"), quiet(500), speech("good morning"), quiet(500)))
        yield self.ended(f, 2)
        first = f.messages[0]
        self.assertIsInstance(first, Connected)
        self.assertEqual([m["sequence_id"] for m in f.raw], list(range(len(f.raw))))
        self.assertEqual(self.events(f), [
            ("StartOfTurn", "hello"), ("EagerEndOfTurn", "hello world"), ("EndOfTurn", "hello world"),
            ("StartOfTurn", "good"), ("EagerEndOfTurn", "good morning"), ("EndOfTurn", "good morning")])
        turns = self.turns(f)
        self.assertTrue(any(m.event is TurnEvent.UPDATE for m in turns))
        self.assertEqual([m.turn_index for m in turns if m.event is TurnEvent.END], [0, 1])
        self.assertEqual([m.trigger for m in turns if m.event is TurnEvent.END], ["model", "model"])
        self.assertEqual([m.end for m in turns], sorted(m.end for m in turns))
        self.assertEqual(turns[-1].start, [m for m in turns if m.event is TurnEvent.END][0].end)
        self.assertEqual([w.word for w in turns[-1].words], ["good", "morning"])
        tracker = TurnTracker()
        decisions = [d for m in turns for d in tracker.feed(m)]
        self.assertEqual(decisions, [Speculate(0, "hello world"), Commit(0, "hello world", True),
                                     Speculate(1, "good morning"), Commit(1, "good morning", True)])
        self.assertEqual((tracker.sequence_gaps, tracker.violations), (0, {}))
        self.assertEqual([w for w, _, _ in fake.connections[0].heard], ["hello", "world", "good", "morning"])
        self.assertEqual(fake.connections[0].events(), [m.get("event", m["type"]) for m in f.raw])

    @inlineCallbacks
    def test_resumed(self) -> Any:
        """A pause past eager_ms but short of eot_ms, then more words: TurnResumed, longer end."""
        fake = self.fake()
        f = self.connect(fake, audio(speech("hello world"), quiet(140), speech("how are you"), quiet(500)))
        yield self.ended(f)
        self.assertEqual(self.events(f), [
            ("StartOfTurn", "hello"), ("EagerEndOfTurn", "hello world"), ("TurnResumed", "hello world"),
            ("EagerEndOfTurn", "hello world how are you"), ("EndOfTurn", "hello world how are you")])
        tracker = TurnTracker()
        decisions = [d for m in self.turns(f) for d in tracker.feed(m)]
        self.assertEqual(decisions, [
            Speculate(0, "hello world"), Cancel(0, "hello world", "resumed"),
            Speculate(0, "hello world how are you"), Commit(0, "hello world how are you", True)])
        self.assertEqual((tracker.used, tracker.wasted), (1, 1))

    @inlineCallbacks
    def test_no_eager_mode(self) -> Any:
        """Without eager_eot_threshold: no EagerEndOfTurn, no TurnResumed (11.3 rule 6)."""
        fake = self.fake()
        f = self.connect(fake, audio(speech("hello world"), quiet(140), speech("how are you"), quiet(500)),
                         query=flux_query("flux-general-en"))
        yield self.ended(f)
        self.assertEqual(self.events(f), [("StartOfTurn", "hello"), ("EndOfTurn", "hello world how are you")])

    @inlineCallbacks
    def test_timeout_trigger(self) -> Any:
        """eot_threshold 1.0 suppresses the model's end: eot_timeout_ms ends the turn."""
        fake = self.fake()
        f = self.connect(fake, audio(speech("yes"), quiet(700)),
                         query=flux_query("flux-general-en", eot_threshold=1.0, eot_timeout_ms=500))
        yield self.ended(f)
        end = self.turns(f)[-1]
        self.assertEqual((end.event, end.trigger, end.transcript), (TurnEvent.END, "timeout", "yes"))
        self.assertGreaterEqual(end.end, 0.5 + tonewords.WORD_MS / 1000)

    @inlineCallbacks
    def test_multilingual_languages(self) -> Any:
        """flux-general-multi: every TurnInfo has ``languages`` (11.3 rule 7)."""
        fake = self.fake()
        f = self.connect(fake, audio(speech("hola mundo"), quiet(500)),
                         query=flux_query("flux-general-multi", language_hints=["es"]))
        yield self.ended(f)
        self.assertTrue(all(m.languages == ("es",) for m in self.turns(f)))
        self.assertEqual(f.raw[-1]["languages_hinted"], ["es"])


class ControlTests(FluxTestCase):
    @inlineCallbacks
    def test_force_end_turn(self) -> Any:
        """ForceEndTurn: EndOfTurn ``manual`` on the audio so far; ignored with no turn."""
        fake = self.fake()
        f = self.connect(fake, text(FORCE_END_TURN) + audio(speech("hello world")) + text(FORCE_END_TURN))
        yield self.ended(f)
        yield sleep(0.1)
        self.assertEqual(self.events(f), [("StartOfTurn", "hello"), ("EndOfTurn", "hello world")])
        self.assertEqual(self.turns(f)[-1].trigger, "manual")
        self.assertEqual(fake.connections[0].control_types, ["ForceEndTurn", "ForceEndTurn"])

    @inlineCallbacks
    def test_close_stream(self) -> Any:
        """CloseStream: Updates, then a close with no status code (1005) and no EndOfTurn (11.4)."""
        fake = self.fake()
        f = self.connect(fake, audio(speech("hello world")) + text(CLOSE_STREAM))
        yield eventually(lambda: bool(f.closes))
        last = self.turns(f)[-1]
        self.assertEqual((last.event, last.transcript), (TurnEvent.UPDATE, "hello world"))
        self.assertNotIn(TurnEvent.END, [m.event for m in self.turns(f)])
        self.assertEqual(f.closes[0][:2], (True, None))  # Autobahn's "no status" = 1005 elsewhere
        rec = fake.connections[0]
        self.assertEqual((rec.close_sent, rec.close_code), (True, None))

    @inlineCallbacks
    def test_keepalive_kills_the_stream(self) -> Any:
        """KeepAlive is not a v2 message: the stream is closed and a violation recorded."""
        fake = self.fake()
        f = self.connect(fake, audio(quiet(80)) + text(json.dumps({"type": "KeepAlive"})))
        yield eventually(lambda: bool(f.closes))
        self.assertEqual(f.closes[0][:2], (True, None))
        self.assertIn("KeepAlive", " ".join(fake.connections[0].violations))

    @inlineCallbacks
    def test_configure(self) -> Any:
        """Configure merges thresholds (eager mode on mid-stream); out of range fails."""
        fake = self.fake()
        f = self.connect(fake, text(configure(eager_eot_threshold=0.4)) + text(configure(eot_threshold=0.3))
                         + audio(speech("hello"), quiet(400)), query=flux_query("flux-general-en"))
        yield self.ended(f)
        ok, bad = [m for m in f.messages if isinstance(m, ConfigureResult)]
        self.assertTrue(ok.ok)
        self.assertEqual(ok.thresholds, {"eot_threshold": 0.7, "eot_timeout_ms": 5000, "eager_eot_threshold": 0.4})
        self.assertFalse(bad.ok)
        self.assertEqual(self.events(f), [("StartOfTurn", "hello"), ("EagerEndOfTurn", "hello"),
                                          ("EndOfTurn", "hello")])

    @inlineCallbacks
    def test_unknown_message(self) -> Any:
        """Any other text: a fatal Error, then close (1008, this fake's choice)."""
        fake = self.fake()
        f = self.connect(fake, text(json.dumps({"type": "Finalize"})))
        yield eventually(lambda: bool(f.closes))
        err = f.messages[-1]
        assert isinstance(err, FluxError)
        self.assertTrue(err.fatal)
        self.assertEqual(f.closes[0][1], 1008)


class LivenessTests(FluxTestCase):
    @inlineCallbacks
    def test_idle_close_and_pings(self) -> Any:
        """Pings (answered) keep an idle stream open; without them it closes 1011."""
        fake = self.fake(idle_timeout=2.0)
        f = self.connect(fake, audio(quiet(80)))
        yield eventually(lambda: fake.live == 1)
        for _ in range(8):  # 2.4 s of pings, no audio
            yield sleep(0.3)
            self.assertFalse(f.closes)
            f.proto.sendPing()
        yield eventually(lambda: fake.connections[0].pings == 8 and f.pongs == 8)  # all answered
        yield eventually(lambda: bool(f.closes), timeout=3.0)
        self.assertEqual(f.closes[0][1], 1011)

    @inlineCallbacks
    def test_close_live(self) -> Any:
        fake = self.fake()
        f = self.connect(fake, audio(quiet(80)))
        yield eventually(lambda: fake.live == 1)
        self.assertEqual(fake.close_live(), 1)
        yield eventually(lambda: bool(f.closes))
        self.assertIsInstance(f.messages[-1], FluxError)
        self.assertEqual(f.closes[0][1], 1011)


class RecognizerTests(SynchronousTestCase):
    def test_wrong_byte_order_hears_nothing(self) -> None:
        samples = tonewords.encode_words("where is the hospital")
        little, big = FluxRecognizer(), FluxRecognizer()
        little.feed(samples.astype("<i2").tobytes() + quiet(400))
        big.feed(samples.astype(">i2").tobytes() + quiet(400))
        self.assertEqual([w for w, _, _ in little.heard], ["where", "is", "the", "hospital"])
        self.assertNotEqual([w for w, _, _ in big.heard], ["where", "is", "the", "hospital"])
