"""
Tests for :mod:`xlbridge.engines.local_asr.factory`, :mod:`xlbridge.engines.pocketsphinx.asr`
and :mod:`xlbridge.engines.vosk.asr`.

The recogniser is the real pocketsphinx on real speech: Asterisk's "Allison"
prompts (16 kHz G.722 from Debian's ``asterisk-core-sounds-en-g722``), with
lead-in silence as on a phone line.  :class:`SphinxStream` is driven
directly for the decoding logic; :class:`LocalASR` runs on the real reactor
with a real :class:`ThreadPoolService` (``thread`` backend) and with real
worker processes (``process`` backend, one worker per test).  In-process
decoders come from one module-wide pool, so the ~300 ms model load is paid
about twice for those tests.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import types
from typing import Any, Iterable, Optional

import attrs
import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import LoopingCall, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from xlbridge.audio.codecs import get_codec, make_decoder
from xlbridge.audio.frame import Samples
from xlbridge.engines.vosk import asr as vosk_asr
from xlbridge.engines.base import (
    ASREvent,
    EngineDown,
    EngineRequestError,
    EngineUnavailable,
    EngineUp,
    SpeechStarted,
    Transcript,
)
from xlbridge.engines.local_asr.factory import (
    LocalASR,
    LocalASRFactory,
    LocalASRSettings,
    coalesce,
    languages_with_models,
    local_asr_factory,
    missing_model_warning,
    model_problems,
)
from xlbridge.engines.pocketsphinx.asr import FRAME_BYTES, DecoderPool, Reframer, SphinxModel, SphinxStream
from xlbridge.engines.threads import ThreadPoolService
from xlbridge.engines.vosk.asr import INSTALL_HINT, VoskModel, VoskStream, check_vosk_model, load_vosk_model
from xlbridge.errors import ConfigError

SOUNDS = "/usr/share/asterisk/sounds/en_US_f_Allison"
RATE = 16000
LEAD_S = 0.5
TRAIL_S = 1.0

try:
    import pocketsphinx  # noqa: F401
except ImportError:  # pragma: no cover
    _skip: Optional[str] = "pocketsphinx is not installed"
else:
    _skip = None if os.path.isdir(SOUNDS) else "asterisk-core-sounds-en-g722 is not installed"

#: Shared by every test here: one model load serves them all.
DECODERS = DecoderPool()
BUNDLED = SphinxModel()


def prompt(name: str) -> Samples:
    """A prompt decoded to 16 kHz int16."""
    with open(os.path.join(SOUNDS, name + ".g722"), "rb") as f:
        return make_decoder(get_codec("g722")).decode(f.read())


def speech_bounds(x: Samples) -> tuple[float, float]:
    """First and last 20 ms frame within 40 dB of the loudest, in seconds."""
    n = len(x) // 320
    frames = x[: n * 320].reshape(n, 320).astype(np.float64)
    db = 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) + 1e-9)
    active = np.nonzero(db > db.max() - 40)[0]
    return active[0] * 0.02, (active[-1] + 1) * 0.02


def with_silence(*clips: Samples, lead: float = LEAD_S, gap: float = TRAIL_S) -> Samples:
    parts = [np.zeros(int(lead * RATE), np.int16)]
    for c in clips:
        parts += [c, np.zeros(int(gap * RATE), np.int16)]
    return np.concatenate(parts)


def frames_of(x: Samples) -> list[bytes]:
    data = x.tobytes()
    return [data[i:i + FRAME_BYTES] for i in range(0, len(data) - FRAME_BYTES + 1, FRAME_BYTES)]


def transcripts(events: Iterable[Any]) -> list[Transcript]:
    return [e for e in events if isinstance(e, Transcript)]


class _Stream:
    """Borrows a decoder from the module pool and always gives it back."""

    def open(self, test: SynchronousTestCase, **kwargs: Any) -> SphinxStream:
        decoder = DECODERS.acquire(BUNDLED)
        stream = SphinxStream(decoder, **kwargs)

        def back() -> None:
            stream.finish()
            DECODERS.release(BUNDLED, decoder, 4)

        test.addCleanup(back)
        return stream


# -- settings ------------------------------------------------------------------


class SettingsTests(SynchronousTestCase):
    def test_english_built_in(self) -> None:
        s = LocalASRSettings()
        self.assertEqual(s.model_for("en"), SphinxModel())
        self.assertEqual(s.model_for("en-US"), SphinxModel())
        self.assertIsNone(s.model_for("es"))
        self.assertTrue(SphinxModel().bundled)

    def test_from_options(self) -> None:
        s = LocalASRSettings.from_options({
            "models": {
                "es": {"engine": "vosk", "path": "/srv/models/vosk-es"},
                "de": {"engine": "pocketsphinx", "hmm": "/m/de", "lm": "/m/de.lm.bin", "dict": "/m/de.dict"},
                "fr": {"path": "~/vosk-fr"},
            },
            "endpoint_window_s": 0.4, "vad_mode": 2, "queue_s": 2, "interim_interval_s": 0.25,
        })
        self.assertEqual(s.model_for("es-MX"), VoskModel("/srv/models/vosk-es"))
        self.assertEqual(s.model_for("de"), SphinxModel(hmm="/m/de", lm="/m/de.lm.bin", dictionary="/m/de.dict"))
        self.assertEqual(s.model_for("fr"), VoskModel(os.path.expanduser("~/vosk-fr")))
        self.assertEqual(s.model_for("en"), SphinxModel())
        self.assertEqual((s.endpoint_window_s, s.vad_mode, s.queue_s, s.interim_interval_s), (0.4, 2, 2.0, 0.25))
        self.assertIsInstance(s.queue_s, float)

    def test_errors_name_the_key(self) -> None:
        cases = [
            ({"window": 1}, "local_asr.window"),
            ({"queue_s": "3"}, "local_asr.queue_s"),
            ({"queue_s": 0}, "local_asr.queue_s"),
            ({"vad_mode": 1.5}, "local_asr.vad_mode"),
            ({"vad_mode": True}, "local_asr.vad_mode"),
            ({"endpoint_ratio": 0.97}, "local_asr.endpoint_ratio"),
            ({"endpoint_window_s": 0.06, "endpoint_ratio": 0.1}, "local_asr.endpoint_ratio"),
            ({"models": []}, "local_asr.models"),
            ({"models": {"es": "vosk"}}, "local_asr.models.es"),
            ({"models": {"Spanish!": {"path": "/x"}}}, "local_asr.models.Spanish!"),
            ({"models": {"es": {"engine": "whisper", "path": "/x"}}}, "local_asr.models.es.engine"),
            ({"models": {"es": {"engine": "vosk"}}}, "local_asr.models.es.path"),
            ({"models": {"es": {"engine": "vosk", "path": 3}}}, "local_asr.models.es.path"),
            ({"models": {"es": {"path": "/x", "lm": "/y"}}}, "local_asr.models.es.lm"),
            ({"models": {"de": {"engine": "pocketsphinx", "lm": "/l", "dict": "/d"}}}, "local_asr.models.de.hmm"),
            ({"models": {"de": {"hmm": "/h", "lm": "/l"}}}, "local_asr.models.de.dict"),
            ({"models": {"de": {"hmm": "/h", "dict": "/d"}}}, "local_asr.models.de.lm"),
            ({"models": {"de": {"hmm": "/h", "dict": "/d", "lm": "/l", "jsgf": "/j"}}}, "local_asr.models.de.lm"),
        ]
        for table, key in cases:
            e = self.assertRaises(ConfigError, LocalASRSettings.from_options, table)
            self.assertIn(key + ":", str(e), table)
        self.assertRaises(ConfigError, LocalASRSettings.from_options, ["models"])

    def test_backend_and_workers(self) -> None:
        default = LocalASRSettings()
        self.assertEqual((default.backend, default.workers), ("process", None))
        self.assertGreaterEqual(default.worker_count(), 1)
        s = LocalASRSettings.from_options({"backend": "thread", "workers": 3})
        self.assertEqual((s.backend, s.workers, s.worker_count()), ("thread", 3, 3))
        for table, key in [({"backend": "fork"}, "local_asr.backend"), ({"backend": ["thread"]}, "local_asr.backend"),
                           ({"workers": 0}, "local_asr.workers"), ({"workers": 1.5}, "local_asr.workers")]:
            e = self.assertRaises(ConfigError, LocalASRSettings.from_options, table)
            self.assertIn(key + ":", str(e), table)
        self.assertRaises(ValueError, LocalASRSettings, backend="fork")

    def test_languages_with_models(self) -> None:
        self.patch(sys, "modules", {**sys.modules, "vosk": None})
        s = LocalASRSettings.from_options({"models": {
            "es": {"path": "/nonexistent/vosk-es"},
            "de": {"hmm": "/nonexistent/de", "lm": "/nonexistent/de.lm", "dict": "/nonexistent/de.dict"},
        }})
        self.assertEqual(languages_with_models(s), {"en"})
        problems = model_problems(s)
        self.assertIn("pip install vosk", problems["es"])
        self.assertIn("'/nonexistent/de' is not a directory", problems["de"])
        self.assertEqual(missing_model_warning("es"),
                         "no ASR model for es: add [local_asr.models.es] with path=... (see README)")


# -- sans-I/O pieces --------------------------------------------------------------


class ReframerTests(SynchronousTestCase):
    def test_any_chunking_gives_640_byte_frames(self) -> None:
        x = (np.arange(16000) % 3000 - 1500).astype(np.int16)
        r = Reframer()
        out: list[bytes] = []
        i = 0
        for n in [1, 7, 333, 160, 1000, 4001, 319, 321] * 10:
            out += r.push(x[i:i + n])
            i += n
            if i >= len(x):
                break
        self.assertTrue(all(len(f) == 640 for f in out))
        rest = r.tail()
        self.assertLess(len(rest), 640)
        self.assertEqual(b"".join(out) + rest, x[:i].tobytes())
        self.assertEqual(r.tail(), b"")

    def test_coalesce_keeps_only_the_newest_interim(self) -> None:
        def t(text: str, final: bool) -> Transcript:
            return Transcript(text, final, final, 0.0, 1.0, 0.0)

        started = SpeechStarted(0.1, 0.0)
        events: list[ASREvent] = [started, t("a", False), t("a b", False), t("a b c", True), t("d", False), t("d e", False)]
        self.assertEqual(coalesce(events), [started, t("a b c", True), t("d e", False)])


class SphinxStreamTests(SynchronousTestCase):
    """The real decoder, fed 20 ms frames directly (no threads)."""

    skip = _skip

    def assertNear(self, a: float, b: float, tolerance: float) -> None:
        self.assertTrue(abs(a - b) <= tolerance, f"{a} is not within {tolerance} of {b}")

    def run_clip(self, stream: SphinxStream, audio: Samples) -> list[tuple[float, ASREvent]]:
        out: list[tuple[float, ASREvent]] = []
        for frame in frames_of(audio):
            out += [(stream.position, e) for e in stream.feed(frame)]
        out += [(stream.position, e) for e in stream.finish(audio.tobytes()[len(audio) // 320 * 640:])]
        return out

    def test_prompts(self) -> None:
        """
        Three prompts in one stream, as one caller would say them: each gets
        interims, then one final with the right words and times.

        (They share a stream because the decoder's live cepstral mean needs
        some speech to settle: on a fresh decoder a lone "good bye" comes
        out as "didn't i", after one sentence it is right.)
        """
        clips = [(prompt(n), words) for n, words in [
            ("conf-onlyperson", ["only person", "conference"]),
            ("vm-goodbye", ["good bye"]),
            ("auth-thankyou", ["thank you"]),
        ]]
        stream = _Stream().open(self)
        events = self.run_clip(stream, with_silence(*(c for c, _ in clips)))
        ts = transcripts(e for _, e in events)
        finals = [t for t in ts if t.is_final]
        self.assertEqual(len(finals), 3, ts)
        self.assertEqual(sum(isinstance(e, SpeechStarted) for _, e in events), 3)
        offset = LEAD_S
        previous_end = 0.0
        for (clip, words), final in zip(clips, finals):
            for w in words:
                self.assertIn(w, final.text)
            self.assertTrue(final.speech_final)
            i = ts.index(final)
            interims = [t for t in ts[:i] if t.start == final.start]
            self.assertTrue(interims, f"no interim before {final.text!r}")
            self.assertFalse(any(t.is_final for t in interims))
            # Stream times agree with where the energy says the speech is.
            begin, end = speech_bounds(clip)
            assert final.speech_end is not None
            self.assertNear(final.speech_end, offset + end, 0.15)
            self.assertLessEqual(final.start, offset + begin)
            self.assertGreater(final.start, max(previous_end, offset + begin - 0.4))
            self.assertLessEqual(final.speech_end, final.end)
            # The endpoint is declared ~window after the endpointer's end.
            when = [p for p, e in events if e is final][0]
            self.assertNear(when - final.end, 0.28, 0.05)
            offset += len(clip) / RATE + TRAIL_S
            previous_end = final.end

    def test_finish_flushes_speech_in_progress(self) -> None:
        """Audio that stops mid-sentence still gets its final from finish()."""
        clip = prompt("conf-onlyperson")
        audio = np.concatenate([np.zeros(8000, np.int16), clip[: len(clip) - 1234]])
        stream = _Stream().open(self)
        events = self.run_clip(stream, audio)
        finals = [t for t in transcripts(e for _, e in events) if t.is_final]
        self.assertEqual(len(finals), 1)
        self.assertIn("only person", finals[0].text)
        self.assertNear(finals[0].end, len(audio) / RATE, 0.05)
        self.assertTrue(stream.finished)
        self.assertFalse(stream.in_utterance)

    def test_skipped_frames_keep_stream_time(self) -> None:
        """Frames dropped upstream still count: times move by what was skipped."""
        clip = with_silence(prompt("auth-thankyou"))
        stream = _Stream().open(self)
        stream.skip(50)
        final = [t for t in transcripts(e for _, e in self.run_clip(stream, clip)) if t.is_final][0]
        _, end = speech_bounds(prompt("auth-thankyou"))
        assert final.speech_end is not None
        self.assertNear(final.speech_end, 1.0 + LEAD_S + end, 0.1)
        self.assertNear(stream.position, 1.0 + len(clip) / RATE, 0.001)

    def test_long_speech_is_cut(self) -> None:
        stream = _Stream().open(self, max_utterance_s=1.5)
        ts = transcripts(e for _, e in self.run_clip(stream, with_silence(prompt("conf-onlyperson"))))
        finals = [t for t in ts if t.is_final]
        self.assertGreaterEqual(len(finals), 2)
        self.assertFalse(finals[0].speech_final)
        self.assertTrue(finals[-1].speech_final)
        self.assertIn("currently the", " ".join(t.text for t in finals))
        for a, b in zip(finals, finals[1:]):
            self.assertNear(a.end, b.start, 0.001)
            self.assertLessEqual(b.start - a.start, 1.5 + 0.02)

    def test_frames_must_be_640_bytes(self) -> None:
        stream = _Stream().open(self)
        self.assertRaises(ValueError, stream.feed, b"\0" * 320)
        stream.finish()
        self.assertRaises(ValueError, stream.feed, b"\0" * 640)


# -- Vosk -----------------------------------------------------------------------


class _FakeRecognizer:
    """Answers like vosk.KaldiRecognizer: a partial, then a final at frame 30."""

    def __init__(self, model: Any, rate: int) -> None:
        assert rate == RATE
        self.fed = 0

    def SetWords(self, on: bool) -> None:
        assert on

    def AcceptWaveform(self, data: bytes) -> bool:
        self.fed += len(data)
        return self.fed == 30 * 640

    def PartialResult(self) -> str:
        return json.dumps({"partial": "hola" if 10 * 640 < self.fed < 30 * 640 else ""})

    def Result(self) -> str:
        words = [{"word": "hola", "start": 0.25, "end": 0.5, "conf": 0.8},
                 {"word": "mundo", "start": 0.52, "end": 0.55, "conf": 0.6}]
        return json.dumps({"text": "hola mundo", "result": words})

    def FinalResult(self) -> str:
        return json.dumps({"text": ""})


class VoskTests(SynchronousTestCase):
    def test_absent_is_a_clear_error(self) -> None:
        self.patch(sys, "modules", {**sys.modules, "vosk": None})
        self.assertEqual(check_vosk_model(VoskModel("/srv/vosk-es")), INSTALL_HINT)
        e = self.assertRaises(EngineRequestError, load_vosk_model, VoskModel("/srv/vosk-es"))
        self.assertIn("pip install vosk", str(e))
        self.assertFalse(e.retryable)

    def fake_vosk(self) -> types.ModuleType:
        fake = types.ModuleType("vosk")
        fake.Model = lambda path: ("model", path)  # type: ignore[attr-defined]
        fake.KaldiRecognizer = _FakeRecognizer  # type: ignore[attr-defined]
        fake.SetLogLevel = lambda level: None  # type: ignore[attr-defined]
        self.patch(sys, "modules", {**sys.modules, "vosk": fake})
        return fake

    def test_path_must_be_a_model(self) -> None:
        self.fake_vosk()
        d = self.mktemp()
        os.makedirs(d)
        self.assertIn("is not a Vosk model", check_vosk_model(VoskModel(d)) or "")
        self.assertIn("is not a directory", check_vosk_model(VoskModel(d + "/nope")) or "")
        os.makedirs(os.path.join(d, "am"))
        open(os.path.join(d, "am", "final.mdl"), "wb").close()
        self.assertIsNone(check_vosk_model(VoskModel(d)))
        self.patch(vosk_asr, "_models", {})
        self.assertIs(vosk_asr.shared_model(VoskModel(d)), vosk_asr.shared_model(VoskModel(d)))

    def test_stream_maps_results(self) -> None:
        self.fake_vosk()
        s = VoskStream(object(), interim_interval_s=0.1)
        s.skip(10)
        events = []
        for _ in range(40):
            events += s.feed(b"\0" * 640)
        events += s.finish(b"\0" * 100)
        interim, final = transcripts(events)
        self.assertEqual((interim.text, interim.is_final), ("hola", False))
        self.assertEqual((final.text, final.is_final, final.speech_final), ("hola mundo", True, True))
        self.assertEqual((final.start, final.speech_end, final.end), (0.45, 0.75, 0.8))
        self.assertTrue(abs(final.confidence - 0.7) < 1e-9)


# -- LocalASR on the real reactor ---------------------------------------------------


def feed_paced(asr: LocalASR, audio: Samples, sizes: Iterable[int] = (320,), interval: float = 0.005) -> "Deferred[Any]":
    """Feed ``audio`` in chunks of ``sizes`` samples (cycled), one per ``interval`` s."""
    sizes = list(sizes)
    pos = [0, 0]

    def tick() -> None:
        i, k = pos
        if i >= len(audio):
            lc.stop()
            return
        n = sizes[k % len(sizes)]
        asr.feed(audio[i:i + n])
        pos[:] = [i + n, k + 1]

    lc = LoopingCall(tick)
    lc.clock = reactor
    return lc.start(interval)


class _LegTests:
    """:class:`LocalASR` on the real reactor; run for each backend."""

    skip = _skip
    timeout = 20
    backend = "thread"

    def setUp(self) -> None:
        self._factories: dict[tuple[int, int], tuple[LocalASRSettings, LocalASRFactory]] = {}
        # A generous queue: these tests feed faster than real time, and a
        # loaded CI machine (or a worker still loading its decoder) must not
        # turn that into dropped frames.  The tests of the bound set their own.
        self._default = LocalASRSettings(queue_s=10.0)

    def start_pool(self, max_threads: int = 2, max_queued: int = 16) -> ThreadPoolService:
        pool = ThreadPoolService(reactor, name="test-local-asr", max_threads=max_threads, max_queued=max_queued)
        pool.startService()
        self.addCleanup(pool.stopService)  # type: ignore[attr-defined]
        return pool

    def make(self, pool: ThreadPoolService, language: str = "en", settings: Optional[LocalASRSettings] = None,
             decoders: Optional[DecoderPool] = None) -> tuple[LocalASR, list[ASREvent]]:
        """A leg from this test's factory for ``settings`` (one worker process per factory)."""
        settings = settings or self._default
        key = (id(settings), id(decoders))
        if key not in self._factories:
            configured = attrs.evolve(settings, backend=self.backend, workers=1)
            factory = local_asr_factory(reactor, pool, configured, decoders or DECODERS)
            self.addCleanup(factory.close)  # type: ignore[attr-defined]
            self._factories[key] = (settings, factory)
        events: list[ASREvent] = []
        asr = self._factories[key][1](language, events.append, "call-1", "100")
        assert isinstance(asr, LocalASR)
        self.addCleanup(asr.finish)  # type: ignore[attr-defined]
        return asr, events

    @inlineCallbacks
    def test_leg(self) -> Any:
        """Interims, then one final, delivered on the reactor in order."""
        pool = self.start_pool()
        asr, events = self.make(pool)
        asr.start()
        clip = prompt("conf-onlyperson")
        yield feed_paced(asr, with_silence(clip))
        yield asr.finish()
        ts = transcripts(events)
        final = ts[-1]
        self.assertTrue(final.is_final and final.speech_final)
        self.assertIn("only person", final.text)
        self.assertIn("conference", final.text)
        self.assertTrue(ts[:-1])
        self.assertFalse(any(t.is_final for t in ts[:-1]))
        stamps = [e.received_at for e in events if hasattr(e, "received_at")]
        self.assertEqual(stamps, sorted(stamps))
        self.assertGreater(stamps[0], 0)
        assert final.speech_end is not None
        self.assertTrue(abs(final.speech_end - LEAD_S - speech_bounds(clip)[1]) < 0.1, final)
        self.assertEqual((asr.state.value, asr.dropped_frames), ("closed", 0))
        self.assertEqual(asr.frames_decoded, asr.frames_in)

    @inlineCallbacks
    def test_odd_chunks(self) -> Any:
        pool = self.start_pool()
        asr, events = self.make(pool)
        asr.start()
        audio = with_silence(prompt("auth-thankyou"), gap=0.7)[:-77]
        yield feed_paced(asr, audio, sizes=[1, 77, 333, 1000, 4001, 160], interval=0.01)
        yield asr.finish()
        self.assertEqual(asr.frames_in, len(audio) // 320)
        finals = [t for t in transcripts(events) if t.is_final]
        self.assertEqual([t.text for t in finals], ["thank you"])

    @inlineCallbacks
    def test_two_legs_do_not_mix(self) -> Any:
        pool = self.start_pool()
        a, a_events = self.make(pool)
        b, b_events = self.make(pool)
        a.start()
        b.start()
        yield _both(feed_paced(a, with_silence(prompt("conf-onlyperson"))),
                    feed_paced(b, with_silence(prompt("vm-intro"), prompt("auth-thankyou"), gap=0.6)))
        yield _both(a.finish(), b.finish())
        a_text = " | ".join(t.text for t in transcripts(a_events) if t.is_final)
        b_text = " | ".join(t.text for t in transcripts(b_events) if t.is_final)
        self.assertIn("conference", a_text)
        self.assertNotIn("thank", a_text)
        self.assertIn("leave your message", b_text)
        self.assertTrue(b_text.endswith(" | thank you"), b_text)
        self.assertNotIn("conference", " ".join(t.text for t in transcripts(b_events)))

    @inlineCallbacks
    def test_queue_bound_drops_oldest_and_counts(self) -> Any:
        """Audio fed while the first batch (the open) is out queues, bounded: oldest dropped, counted."""
        pool = self.start_pool()
        asr, events = self.make(pool, settings=LocalASRSettings(queue_s=0.2))
        asr.start()  # its first batch is in flight until the reactor turns
        asr.feed(np.zeros(RATE, np.int16))  # 50 frames into a 10-frame queue
        asr.feed(np.zeros(RATE, np.int16))
        self.assertEqual((asr.frames_in, asr.dropped_frames, asr.max_queue), (100, 90, 10))
        yield asr.finish()
        self.assertEqual(asr.frames_decoded, 10)
        self.assertEqual(asr.state.value, "closed")

    @inlineCallbacks
    def test_language_without_model(self) -> Any:
        pool = self.start_pool()
        asr, events = self.make(pool, language="es")
        asr.start()
        asr.feed(np.zeros(3200, np.int16))
        yield deferLater(reactor, 0, lambda: None)
        [down] = events
        assert isinstance(down, EngineDown)
        self.assertIsInstance(down.error, EngineRequestError)
        self.assertIn("no model for es", str(down.error))
        self.assertEqual(asr.ignored_frames, 10)
        yield asr.finish()

    @inlineCallbacks
    def test_unloadable_models(self) -> Any:
        """A missing path or a missing Vosk package: one clear EngineDown, no exception."""
        self.patch(sys, "modules", {**sys.modules, "vosk": None})
        settings = LocalASRSettings.from_options({"models": {
            "de": {"hmm": "/nonexistent/de", "lm": "/nonexistent/de.lm", "dict": "/nonexistent/de.dict"},
            "es": {"path": "/srv/vosk-es"},
        }})
        pool = self.start_pool()
        for language, words in [("de", "'/nonexistent/de' is not a directory"), ("es", "pip install vosk")]:
            asr, events = self.make(pool, language=language, settings=settings)
            asr.start()
            asr.feed(np.zeros(3200, np.int16))
            yield asr.finish()
            [down] = events
            assert isinstance(down, EngineDown)
            self.assertIsInstance(down.error, EngineRequestError)
            self.assertIn(words, str(down.error))
            self.assertEqual(asr.state.value, "failed")

class ThreadLegTests(_LegTests, TestCase):
    """The ``thread`` backend, plus what only it has: the thread pool and in-process decoders."""

    backend = "thread"

    @inlineCallbacks
    def test_blocked_pool_bounds_the_queue(self) -> Any:
        pool = self.start_pool(max_threads=1)
        gate = threading.Event()
        blocker = pool.run(gate.wait, 5)
        asr, events = self.make(pool, settings=LocalASRSettings(queue_s=0.2))
        asr.start()  # its first task waits behind the blocker
        asr.feed(np.zeros(RATE, np.int16))
        asr.feed(np.zeros(RATE, np.int16))
        self.assertEqual((asr.frames_in, asr.dropped_frames), (100, 90))
        gate.set()
        yield blocker
        yield asr.finish()
        self.assertEqual(asr.frames_decoded, 10)

    @inlineCallbacks
    def test_pool_full_is_retried(self) -> Any:
        pool = self.start_pool(max_threads=1, max_queued=1)
        gate = threading.Event()
        blocker = pool.run(gate.wait, 5)
        asr, events = self.make(pool)
        asr.start()
        asr.feed(np.zeros(3200, np.int16))
        self.assertEqual(asr.pool_refused, 1)  # then it waits POOL_RETRY_S, not hammering
        gate.set()
        yield blocker
        yield asr.finish()
        self.assertEqual((asr.frames_decoded, asr.dropped_frames), (10, 0))

    @inlineCallbacks
    def test_decoders_are_reused(self) -> Any:
        """warm_up() loads a decoder; calls borrow it in turn: one model load."""
        pool = self.start_pool()
        decoders = DecoderPool()
        settings = LocalASRSettings(preload_decoders=1, backend="thread")
        factory = local_asr_factory(reactor, pool, settings, decoders)
        yield factory.warm_up()
        self.assertEqual((decoders.loads, decoders.idle(BUNDLED)), (1, 1))
        yield factory.warm_up()  # already there: nothing more to load
        for _ in range(2):
            asr, _events = self.make(pool, settings=settings, decoders=decoders)
            asr.start()
            asr.feed(with_silence(prompt("vm-goodbye")))
            yield asr.finish()
            self.assertEqual(decoders.idle(BUNDLED), 1)
        self.assertEqual((decoders.loads, decoders.reuses), (1, 2))

    @inlineCallbacks
    def test_decoder_crash(self) -> Any:
        """A decoder that raises is dropped; a fresh one takes over (EngineUp)."""
        pool = self.start_pool()
        decoders = _FlakyPool(DECODERS)
        asr, events = self.make(pool, decoders=decoders)
        asr.start()
        clip = with_silence(prompt("vm-goodbye"), prompt("auth-thankyou"))
        yield feed_paced(asr, clip, interval=0.002)
        yield asr.finish()
        kinds = [type(e).__name__ for e in events]
        self.assertEqual(kinds[:2], ["EngineDown", "EngineUp"])
        self.assertIsInstance(events[1], EngineUp)
        down = events[0]
        assert isinstance(down, EngineDown)
        self.assertIsInstance(down.error, EngineUnavailable)
        self.assertIn("boom", str(down.error))
        self.assertEqual(asr.crashes, 1)
        self.assertIn("thank you", [t.text for t in transcripts(events) if t.is_final])


class ProcessLegTests(_LegTests, TestCase):
    """The same legs with pocketsphinx in a worker process (see also tests.test_asr_worker)."""

    backend = "process"


class _Crashing:
    config = {"frate": 100}

    def start_utt(self) -> None:
        pass

    def process_raw(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")


class _FlakyPool(DecoderPool):
    """Lends one decoder that raises, then real ones."""

    def __init__(self, inner: DecoderPool) -> None:
        super().__init__()
        self.inner = inner
        self.bad = 1

    def acquire(self, spec: SphinxModel) -> Any:
        if self.bad:
            self.bad -= 1
            return _Crashing()
        return self.inner.acquire(spec)

    def release(self, spec: SphinxModel, decoder: Any, max_idle: int) -> None:
        self.inner.release(spec, decoder, max_idle)


def _both(a: "Deferred[Any]", b: "Deferred[Any]") -> "Deferred[Any]":
    return gatherResults([a, b], consumeErrors=True)
