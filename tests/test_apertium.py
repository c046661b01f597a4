"""
Tests for :mod:`xlbridge.engines.apertium.mt`.

The stream format, the framer and the settings are pure and tested without
a reactor.  The engine tests are integration tests: real Apertium pipelines
(Debian ``apertium`` and ``apertium-eng-spa``) under the real reactor, or
fake mode files whose pipelines hang or crash.  They are skipped when
Apertium is not installed.  The whole file runs in a few seconds.
"""

from __future__ import annotations

import os
import time
from typing import Any, Generator

from hypothesis import given, settings as hsettings, strategies as st
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from xlbridge.engines.apertium import mt as apertium, settings as apertium_settings
from xlbridge.engines.apertium.mt import (
    CARET_STAND_IN,
    DEFAULT_PAIRS,
    SPECIAL,
    ApertiumMT,
    ApertiumSettings,
    FrameTooLong,
    NullFramer,
    apertium_available,
    decode_reply,
    encode_sentence,
    escape,
    normalise,
    unescape,
)
from xlbridge.engines.base import EngineRequestError, EngineUnavailable
from xlbridge.errors import ConfigError

INSTALLED = apertium_available(ApertiumSettings())
SKIP = None if INSTALLED else "Apertium is not installed (apt-get install apertium apertium-eng-spa)"

#: English sentences and a word each Spanish translation must contain.
SENTENCES = [
    ("Where is the nearest hospital?", "hospital"),
    ("I need a doctor urgently because my child has a fever.", "fiebre"),
    ("My name is John.", "nombre"),
    ("The car is red.", "rojo"),
    ("I have two dogs.", "perros"),
    ("Please call the police.", "policía"),
    ("The water is cold.", "agua"),
    ("We are going to the beach tomorrow.", "playa"),
    ("She lives in a big house.", "casa"),
    ("Thank you very much.", "gracias"),
    ("Good morning.", "Buenos días"),
    ("I am hungry.", "hambre"),
    ("The book is on the table.", "libro"),
    ("Where is the train station?", "tren"),
    ("I would like a coffee.", "café"),
    ("It is raining today.", "hoy"),
    ("My brother works in a bank.", "banco"),
    ("The children play in the park.", "parque"),
    ("How much does it cost?", "Cuánto"),
    ("I have two cats.", "gatos"),
]


class EscapeTests(SynchronousTestCase):
    """
    :func:`escape` and :func:`unescape`.
    """

    def test_every_special_character(self) -> None:
        for c in SPECIAL:
            self.assertEqual(escape(c), "\\" + c)
            self.assertEqual(unescape(escape(c)), c)
        self.assertEqual(escape("$5 [approx] <b> @x"), "\\$5 \\[approx\\] \\<b\\> \\@x")
        self.assertEqual(escape("plain text, ¿sí?"), "plain text, ¿sí?")

    def test_unescape_table(self) -> None:
        table = {"\\\\": "\\", "a\\$b": "a$b", "\\x": "x", "trailing\\": "trailing\\", "": ""}
        for escaped, plain in table.items():
            self.assertEqual(unescape(escaped), plain)

    @hsettings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.sampled_from(SPECIAL + "ab \n\\é")) | st.text())
    def test_round_trip(self, text: str) -> None:
        escaped = escape(text)
        self.assertEqual(unescape(escaped), text)
        # Nothing special is left bare once the escape pairs are removed.
        bare = apertium._UNESCAPE_RE.sub("", escaped)
        self.assertFalse(set(bare) & set(SPECIAL), repr(escaped))


class WireTests(SynchronousTestCase):
    """
    What goes into a pipeline and what comes back.
    """

    def test_normalise_one_line(self) -> None:
        self.assertEqual(normalise("  Hello\nworld\r\n\tagain\0x\u2028y  "), "Hello world again x y")
        self.assertEqual(normalise("\n \0 "), "")

    def test_encode(self) -> None:
        self.assertEqual(encode_sentence("a $b"), b"a \\$b\n\0")
        self.assertEqual(encode_sentence("2^3"), ("2" + CARET_STAND_IN + "3\n\0").encode())
        self.assertEqual(encode_sentence("médico").count(b"\0"), 1)

    def test_decode(self) -> None:
        self.assertEqual(decode_reply(b"Puede  me oigo?\n"), "Puede me oigo?")
        self.assertEqual(decode_reply(b"\\$5 \\[approx\\] \\<b\\> \\@x\n"), "$5 [approx] <b> @x")
        self.assertEqual(decode_reply(("Un " + CARET_STAND_IN + "\n").encode()), "Un ^")
        self.assertEqual(decode_reply("Dónde es".encode()), "Dónde es")

    def test_unknown_word_marks(self) -> None:
        self.assertEqual(decode_reply(b"Tengo *xyzzy y #casa y @perro"), "Tengo xyzzy y casa y perro")
        # A mark character the source itself had stays.
        self.assertEqual(decode_reply(b"Un *b #c", "a *b #c"), "Un *b #c")
        self.assertEqual(decode_reply(b"5 * 3"), "5 * 3")


class NullFramerTests(SynchronousTestCase):
    """
    :class:`NullFramer` with reads split and merged every way.
    """

    def test_split_reads(self) -> None:
        framer = NullFramer()
        data = b"Hola.\n\0Bueno.\n\0"
        out = []
        for i in range(len(data)):
            out += framer.feed(data[i:i + 1])
        self.assertEqual(out, [b"Hola.\n", b"Bueno.\n"])
        self.assertEqual(framer.pending, 0)

    def test_merged_reads(self) -> None:
        framer = NullFramer()
        self.assertEqual(framer.feed(b"a\0b\0\0c"), [b"a", b"b", b""])
        self.assertEqual(framer.pending, 1)
        self.assertEqual(framer.feed(b"d\0"), [b"cd"])

    def test_every_split_point(self) -> None:
        data = "uno\n\0dos €\n\0tres\n\0".encode()
        for cut in range(len(data) + 1):
            framer = NullFramer()
            self.assertEqual(framer.feed(data[:cut]) + framer.feed(data[cut:]), [b"uno\n", "dos €\n".encode(), b"tres\n"])

    def test_too_long(self) -> None:
        framer = NullFramer(max_bytes=10)
        framer.feed(b"12345")
        self.assertRaises(FrameTooLong, framer.feed, b"678901")


class SettingsTests(SynchronousTestCase):
    """
    :class:`ApertiumSettings`, :func:`apertium_available`.
    """

    def test_defaults(self) -> None:
        s = ApertiumSettings.from_options({})
        self.assertEqual(dict(s.pairs), {"en-es": "eng-spa", "es-en": "spa-eng"})
        self.assertEqual((s.timeout_s, s.first_timeout_s, s.max_queue), (2.0, 5.0, 32))
        self.assertEqual(s.modes_dir, "/usr/share/apertium/modes")

    def test_extra_pairs(self) -> None:
        s = ApertiumSettings.from_options(
            {"modes_dir": "/opt/modes", "pairs": {"EN-ES": "eng-spa", "es-de": "spa-deu"}, "timeout_s": 1}
        )
        self.assertEqual(dict(s.pairs), {**DEFAULT_PAIRS, "es-de": "spa-deu"})
        self.assertEqual(s.timeout_s, 1.0)
        self.assertEqual(s.mode_path("spa-deu"), "/opt/modes/spa-deu.mode")

    def test_bad(self) -> None:
        bad: list[dict[str, Any]] = [
            {"timeout": 2},
            {"timeout_s": 0},
            {"timeout_s": "soon"},
            {"max_queue": True},
            {"first_timeout_s": -1},
            {"pairs": "en-es"},
            {"pairs": {"english-spanish": "eng-spa"}},
            {"pairs": {"en-fr": "../etc/passwd"}},
            {"pairs": {"en-fr": 3}},
        ]
        for table in bad:
            e = self.assertRaises(ConfigError, ApertiumSettings.from_options, table)
            self.assertIn("apertium", str(e))

    def test_available(self) -> None:
        empty = self.mktemp()
        os.mkdir(empty)
        self.assertFalse(apertium_available(ApertiumSettings(modes_dir=empty)))
        self.patch(apertium_settings, "_PROGRAMS", ("no-such-apertium-program",))
        self.assertFalse(apertium_available(ApertiumSettings()))


class EngineWithoutProcessTests(SynchronousTestCase):
    """
    Requests refused before any process is involved.
    """

    def test_pairs(self) -> None:
        mt = ApertiumMT(reactor)
        self.assertEqual(mt.name, "apertium")
        self.assertTrue(mt.supported("en", "es"))
        self.assertTrue(mt.supported("en-US", "es_MX"))
        self.assertTrue(mt.supported("es", "en"))
        self.assertFalse(mt.supported("en", "de"))
        self.assertEqual(mt.mode_for("es-419", "en-gb"), "spa-eng")

    def test_unsupported_pair(self) -> None:
        mt = ApertiumMT(reactor)
        f = self.failureResultOf(mt.translate("Hello", "en", "de"), EngineRequestError)
        self.assertIn("en→de", str(f.value))
        self.assertIn("en→es", str(f.value))
        self.assertIsNone(mt.pipe("en", "de"))

    def test_blank(self) -> None:
        mt = ApertiumMT(reactor)
        self.assertEqual(self.successResultOf(mt.translate(" \n ", "en", "es")), "")
        self.assertIsNone(mt.pipe("en", "es"))

    def test_not_installed(self) -> None:
        self.patch(apertium_settings, "_PROGRAMS", ("no-such-apertium-program",))
        mt = ApertiumMT(reactor)
        f = self.failureResultOf(mt.translate("Hello", "en", "es"), EngineUnavailable)
        self.assertIn("apertium apertium-eng-spa", str(f.value))

    def test_mode_missing(self) -> None:
        empty = self.mktemp()
        os.mkdir(empty)
        mt = ApertiumMT(reactor, ApertiumSettings(modes_dir=empty))
        f = self.failureResultOf(mt.translate("Hello", "en", "es"), EngineUnavailable)
        self.assertIn("eng-spa.mode", str(f.value))
        self.assertIn("apertium-eng-spa", str(f.value))


class RealApertiumTests(TestCase):
    """
    Real Apertium pipelines under the real reactor.
    """

    skip = SKIP
    timeout = 15

    def engine(self, **kw: Any) -> ApertiumMT:
        mt = ApertiumMT(reactor, ApertiumSettings(**kw))
        self.addCleanup(mt.close)
        return mt

    @inlineCallbacks
    def test_hospital(self) -> Generator[Deferred[Any], Any, None]:
        mt = self.engine()
        out = yield mt.translate("Where is the nearest hospital?", "en", "es", context=["ignored"])
        self.assertIn("hospital", out)
        self.assertEqual(mt.counters.sentences, 1)
        self.assertIsNotNone(mt.counters.last_latency_ms)

    @inlineCallbacks
    def test_reply_read_after_a_reactor_stall_is_no_timeout(self) -> Generator[Deferred[Any], Any, None]:
        """
        A handler blocks the reactor past the sentence's deadline while the
        reply arrives: the expired timer runs before the pipe is read, yet
        the sentence is translated, not timed out (and nothing restarts).
        """
        mt = self.engine(first_timeout_s=0.5, timeout_s=0.5)
        yield mt.translate("Good morning.", "en", "es")  # spawned and warm

        class Stall(DatagramProtocol):
            def datagramReceived(self, data: bytes, addr: Any) -> None:
                time.sleep(1.0)

        port = reactor.listenUDP(0, Stall(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        d = mt.translate("Where is the nearest hospital?", "en", "es")
        sender = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(sender.stopListening)
        sender.write(b"stall", ("127.0.0.1", port.getHost().port))
        out = yield d
        self.assertIn("hospital", out)
        self.assertEqual((mt.counters.timeouts, mt.counters.restarts), (0, 0))

    @inlineCallbacks
    def test_spanish_to_english(self) -> Generator[Deferred[Any], Any, None]:
        mt = self.engine()
        out = yield mt.translate("Mi hijo tiene fiebre y necesito un médico.", "es", "en")
        self.assertIn("fever", out)
        self.assertIn("doctor", out)

    @inlineCallbacks
    def test_twenty_in_a_row(self) -> Generator[Deferred[Any], Any, None]:
        mt = self.engine()
        for text, word in SENTENCES:
            out = yield mt.translate(text, "en", "es")
            self.assertIn(word, out, text)
        self.assertEqual(mt.counters.sentences, 20)
        self.assertEqual((mt.counters.restarts, mt.counters.timeouts), (0, 0))

    @inlineCallbacks
    def test_concurrent_in_order(self) -> Generator[Deferred[Any], Any, None]:
        """
        Requests made at once queue up and each gets its own answer.
        """
        mt = self.engine()
        ds = [mt.translate(text, "en", "es") for text, _ in SENTENCES]
        ds.append(mt.translate("El perro es grande.", "es", "en"))
        outs = yield gatherResults(ds)
        for (text, word), out in zip(SENTENCES, outs):
            self.assertIn(word, out, text)
        self.assertEqual(outs[-1], "The dog is big.")
        # Same answers one at a time: nothing got mixed up.
        sequential = []
        for text, _ in SENTENCES[:5]:
            sequential.append((yield mt.translate(text, "en", "es")))
        self.assertEqual(sequential, outs[:5])

    @inlineCallbacks
    def test_special_characters(self) -> Generator[Deferred[Any], Any, None]:
        mt = self.engine()
        out = yield mt.translate("$5 [approx] <b> @x", "en", "es")
        self.assertEqual(out, "$5 [approx] <b> @x")
        for c in SPECIAL:
            # "a ^" alone hangs lrx-proc without the stand-in.
            for text in (f"a {c}", f"Hello {c} friend."):
                out = yield mt.translate(text, "en", "es")
                self.assertIn(c, out, text)
        out = yield mt.translate("Where is\nthe nearest\r\nhospital?", "en", "es")
        self.assertIn("hospital", out)
        self.assertNotIn("\n", out)
        self.assertEqual(mt.counters.timeouts, 0)

    @inlineCallbacks
    def test_killed_mid_sentence(self) -> Generator[Deferred[Any], Any, None]:
        """
        The pipeline dies with a sentence in flight: a new one is spawned
        and the sentence retried on it.
        """
        mt = self.engine(backoff_initial_s=0.01)
        yield mt.translate("Good morning.", "en", "es")
        first = mt.pipe("en", "es")
        assert first is not None
        d = mt.translate("Where is the nearest hospital?", "en", "es")
        first.kill()
        out = yield d
        self.assertIn("hospital", out)
        self.assertEqual(mt.counters.restarts, 1)
        self.assertIsNot(mt.pipe("en", "es"), first)
        self.assertTrue(first.ended)

    @inlineCallbacks
    def test_queue_bound(self) -> Generator[Deferred[Any], Any, None]:
        mt = self.engine(max_queue=2)
        ds = [mt.translate(text, "en", "es") for text, _ in SENTENCES[:4]]
        for d in ds[2:]:
            self.failureResultOf(d, EngineUnavailable)
        self.assertEqual(mt.counters.rejected, 2)
        outs = yield gatherResults(ds[:2])
        self.assertIn("hospital", outs[0])
        self.assertIn("fiebre", outs[1])

    @inlineCallbacks
    def test_cancel_waiting(self) -> Generator[Deferred[Any], Any, None]:
        mt = self.engine()
        ds = [mt.translate(text, "en", "es") for text, _ in SENTENCES[:3]]
        ds[1].cancel()
        self.failureResultOf(ds[1], CancelledError)
        outs = yield gatherResults([ds[0], ds[2]])
        self.assertIn("hospital", outs[0])
        self.assertIn("nombre", outs[1])
        self.assertEqual(mt.counters.sentences, 2)

    @inlineCallbacks
    def test_close_while_starting(self) -> Generator[Deferred[Any], Any, None]:
        mt = self.engine()
        d = mt.translate("Hello.", "en", "es")
        yield mt.close()
        self.failureResultOf(d, EngineUnavailable)
        self.assertIsNone(mt.pipe("en", "es"))

    @inlineCallbacks
    def test_close(self) -> Generator[Deferred[Any], Any, None]:
        mt = self.engine()
        yield gatherResults([mt.translate("Hello.", "en", "es"), mt.translate("Hola.", "es", "en")])
        pipes = [mt.pipe("en", "es"), mt.pipe("es", "en")]
        yield mt.close()
        self.assertTrue(all(p is not None and p.ended for p in pipes))
        self.failureResultOf(mt.translate("Hello.", "en", "es"), EngineUnavailable)

    @inlineCallbacks
    def test_warm_up(self) -> Generator[Deferred[Any], Any, None]:
        mt = self.engine()
        yield mt.warm_up()
        self.assertIsNotNone(mt.pipe("en", "es"))
        self.assertIsNotNone(mt.pipe("es", "en"))
        start = time.perf_counter()
        yield mt.translate("Where is the nearest hospital?", "en", "es")
        self.assertLess(time.perf_counter() - start, 1.0)


class FakePipelineTests(TestCase):
    """
    Pipelines that hang, crash or complain, from fake mode files (run
    through the real ``apertium-wblank-mode``, which adds ``-z`` to each
    stage).
    """

    skip = SKIP
    timeout = 10

    def engine(self, script: str, **kw: Any) -> ApertiumMT:
        modes = self.mktemp()
        os.mkdir(modes)
        with open(os.path.join(modes, "eng-spa.mode"), "w") as f:
            f.write(script + "\n")
        kw.setdefault("backoff_initial_s", 0.01)
        mt = ApertiumMT(reactor, ApertiumSettings(modes_dir=modes, **kw))
        self.addCleanup(mt.close)
        return mt

    @inlineCallbacks
    def test_hung_pipeline(self) -> Generator[Deferred[Any], Any, None]:
        """
        ``sort -z`` waits for the end of input, so it never answers: the
        sentence times out, the pipeline is killed and a new one started.
        """
        mt = self.engine("sort", first_timeout_s=0.3, timeout_s=0.2)
        d = mt.translate("Hello.", "en", "es")
        first = None
        while first is None:  # the mode script is read asynchronously
            yield deferLater(reactor, 0.01, lambda: None)
            first = mt.pipe("en", "es")
        f = yield self.assertFailure(d, EngineUnavailable)
        self.assertIn("no answer within 0.3 s", str(f))
        self.assertEqual(mt.counters.timeouts, 1)
        d = mt.translate("Hello again.", "en", "es")
        yield self.assertFailure(d, EngineUnavailable)
        self.assertEqual((mt.counters.timeouts, mt.counters.restarts), (2, 1))
        for _ in range(50):
            if first.ended:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertTrue(first.ended)
        self.assertIsNot(mt.pipe("en", "es"), first)

    @inlineCallbacks
    def test_crash_twice(self) -> Generator[Deferred[Any], Any, None]:
        """
        ``head -c 5`` exits after five bytes, so the retry crashes too.
        """
        mt = self.engine("head -c 5")
        f = yield self.assertFailure(mt.translate("Where is the nearest hospital?", "en", "es"), EngineUnavailable)
        self.assertIn("failed twice", str(f))
        self.assertEqual(mt.counters.restarts, 1)

    @inlineCallbacks
    def test_stderr_is_a_crash(self) -> Generator[Deferred[Any], Any, None]:
        mt = self.engine("sed -n 'w /dev/stderr'")
        f = yield self.assertFailure(mt.translate("Hello.", "en", "es"), EngineUnavailable)
        self.assertIn("stderr", str(f))
        self.assertEqual(mt.counters.restarts, 1)

    @inlineCallbacks
    def test_keeps_failing(self) -> Generator[Deferred[Any], Any, None]:
        """
        After ``max_failures`` in a row the waiting requests fail too.
        """
        mt = self.engine("head -c 5", max_failures=2)
        ds = [mt.translate(f"Sentence number {i}.", "en", "es") for i in range(4)]
        for d in ds:
            yield self.assertFailure(d, EngineUnavailable)
        self.assertEqual(mt.counters.failed, 4)
