"""
Tests for :mod:`xlbridge.engines.apertium.mt`.

Requests refused before any process is involved run on a fake process
clock.  The engine tests are integration tests: real Apertium pipelines
(Debian ``apertium`` and ``apertium-eng-spa``) under the real reactor,
skipped when Apertium is not installed.  Pipelines that hang or crash are
in :mod:`tests.engines.apertium.test_direction`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Generator

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from xlbridge.engines.apertium import settings as apertium_settings
from xlbridge.engines.apertium.mt import ApertiumMT
from xlbridge.engines.apertium.settings import ApertiumSettings, apertium_available
from xlbridge.engines.apertium.text import SPECIAL
from xlbridge.engines.base import EngineRequestError, EngineUnavailable

from tests.engines.fake_processes import ProcessClock

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


class EngineWithoutProcessTests(SynchronousTestCase):
    """
    Requests refused before any process is involved (a process clock
    stands in for the reactor: nothing is spawned).
    """

    def setUp(self) -> None:
        self.clock = ProcessClock()

    def test_pairs(self) -> None:
        mt = ApertiumMT(self.clock)
        self.assertEqual(mt.name, "apertium")
        self.assertTrue(mt.supported("en", "es"))
        self.assertTrue(mt.supported("en-US", "es_MX"))
        self.assertTrue(mt.supported("es", "en"))
        self.assertFalse(mt.supported("en", "de"))
        self.assertEqual(mt.mode_for("es-419", "en-gb"), "spa-eng")

    def test_unsupported_pair(self) -> None:
        mt = ApertiumMT(self.clock)
        f = self.failureResultOf(mt.translate("Hello", "en", "de"), EngineRequestError)
        self.assertIn("en→de", str(f.value))
        self.assertIn("en→es", str(f.value))
        self.assertIsNone(mt.pipe("en", "de"))

    def test_blank(self) -> None:
        mt = ApertiumMT(self.clock)
        self.assertEqual(self.successResultOf(mt.translate(" \n ", "en", "es")), "")
        self.assertIsNone(mt.pipe("en", "es"))

    def test_not_installed(self) -> None:
        self.patch(apertium_settings, "PROGRAMS", ("no-such-apertium-program",))
        mt = ApertiumMT(self.clock)
        f = self.failureResultOf(mt.translate("Hello", "en", "es"), EngineUnavailable)
        self.assertIn("apertium apertium-eng-spa", str(f.value))

    def test_mode_missing(self) -> None:
        empty = self.mktemp()
        os.mkdir(empty)
        mt = ApertiumMT(self.clock, ApertiumSettings(modes_dir=empty))
        f = self.failureResultOf(mt.translate("Hello", "en", "es"), EngineUnavailable)
        self.assertIn("eng-spa.mode", str(f.value))
        self.assertIn("apertium-eng-spa", str(f.value))
        self.assertEqual(self.clock.spawned, [])


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
