"""
Tests for :mod:`xlbridge.engines.espeak.tts`: real synthesis through the
bundled libespeak-ng on the real reactor (the engine runs the library on
its own pool thread; each sentence takes a few ms, so these stay fast).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from xlbridge.audio.frame import SAMPLE_RATE, Samples
from xlbridge.engines.base import EngineRequestError, EngineUnavailable
from xlbridge.engines.espeak.lib import espeak_available
from xlbridge.engines.espeak.settings import ESpeakSettings
from xlbridge.engines.espeak.text import split_sentences
from xlbridge.engines.espeak.tts import ESpeakTTS

ENGLISH = "Hello world, how are you today?"
SPANISH = "Hola, ¿cómo estás hoy?"
THREE = "The train is late. Where is the station? Please call me tomorrow!"


def sleep(seconds: float) -> "Deferred[None]":
    return deferLater(reactor, seconds, lambda: None)


def spectrum_share(x: Samples, low: float, high: float) -> float:
    """Share of the energy of ``x`` (16 kHz) between ``low`` and ``high`` Hz."""
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / SAMPLE_RATE)
    return float(power[(freqs >= low) & (freqs < high)].sum() / power.sum())


def band_levels(x: Samples) -> "np.ndarray[Any, np.dtype[np.float64]]":
    """Long-term spectrum of ``x`` (16 kHz): share of energy in 32 bands of 250 Hz, in dB."""
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / SAMPLE_RATE)
    bands = np.array([power[(freqs >= f) & (freqs < f + 250)].sum() for f in range(0, 8000, 250)])
    return np.asarray(10 * np.log10(bands / bands.sum() + 1e-12), dtype=np.float64)


def spectral_distance(a: Samples, b: Samples) -> float:
    """
    RMS difference of the band levels of ``a`` and ``b``, in dB.

    espeak-ng is not bit-for-bit repeatable (its waveform generator carries
    phase from one call to the next, so a clip can come out a few samples
    longer or shorter), so "the same speech" is judged by this: the same
    voice and text measure 0.1-0.5 dB apart, the English and Spanish voices
    on the same text about 3.5 dB.
    """
    return float(np.sqrt(np.mean((band_levels(a) - band_levels(b)) ** 2)))


class _Heard:
    """Records ``on_audio`` calls and when the Deferred fired."""

    def __init__(self) -> None:
        self.chunks: list[Samples] = []
        self.events: list[str] = []

    def __call__(self, samples: Samples) -> None:
        self.chunks.append(samples)
        self.events.append("audio")

    def done(self, result: Any) -> Any:
        self.events.append("done")
        return result

    @property
    def audio(self) -> Samples:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)


class RefusalTests(SynchronousTestCase):
    """
    Requests refused before any synthesis: a clock stands in for the
    reactor, and the engine's thread never starts.
    """

    def engine(self, **settings: Any) -> ESpeakTTS:
        tts = ESpeakTTS(Clock(), ESpeakSettings(**settings))  # type: ignore[arg-type]
        self.addCleanup(tts.close)
        return tts

    def test_unknown_language_without_default_voice(self) -> None:
        tts = self.engine(default_voice=None)
        d = tts.synthesize(ENGLISH, "fr", _Heard())
        self.assertIn("'fr'", str(self.failureResultOf(d, EngineRequestError).value))
        self.assertEqual(tts.counters.errors, 1)

    def test_closed(self) -> None:
        tts = self.engine()
        self.successResultOf(tts.close())
        self.failureResultOf(tts.synthesize(ENGLISH, "en", _Heard()), EngineUnavailable)

    def test_blank_text_needs_no_synthesis(self) -> None:
        tts = self.engine()
        heard = _Heard()
        self.successResultOf(tts.synthesize(" ... ", "en", heard))
        self.assertEqual((heard.chunks, tts.counters.completed), ([], 1))


class ESpeakTTSTests(TestCase):
    """
    Real synthesis on the real reactor.
    """

    if not espeak_available():
        skip = "espeakng-loader (bundled libespeak-ng) is not installed"

    timeout = 10

    def engine(self, **settings: Any) -> ESpeakTTS:
        tts = ESpeakTTS(reactor, ESpeakSettings(**settings))
        self.addCleanup(tts.close)
        return tts

    @inlineCallbacks
    def speak(self, tts: ESpeakTTS, text: str, language: str) -> Any:
        heard = _Heard()
        yield tts.synthesize(text, language, heard).addCallback(heard.done)
        return heard

    def assertSameSpeech(self, a: Samples, b: Samples) -> None:
        self.assertLess(abs(len(a) - len(b)), 0.01 * len(b) + 20, f"{len(a)} vs {len(b)} samples")
        self.assertLess(spectral_distance(a, b), 1.0)

    def assertDifferentSpeech(self, a: Samples, b: Samples) -> None:
        self.assertTrue(
            abs(len(a) - len(b)) > 0.1 * len(b) or spectral_distance(a, b) > 2.0,
            f"{len(a)} vs {len(b)} samples, {spectral_distance(a, b):.2f} dB apart",
        )

    def assertSpeech(self, audio: Samples, low_s: float, high_s: float) -> None:
        self.assertEqual(audio.dtype, np.int16)
        seconds = len(audio) / SAMPLE_RATE
        self.assertTrue(low_s <= seconds <= high_s, f"{seconds:.2f} s of audio")
        rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        self.assertGreater(rms, 300.0)
        # Speech energy is mostly in the telephone band, and the 22050 ->
        # 16000 Hz resampler left nothing near the new Nyquist frequency.
        self.assertGreater(spectrum_share(audio, 0, 4000), 0.8)
        self.assertLess(spectrum_share(audio, 7500, 8001), 0.001)

    @inlineCallbacks
    def test_english_and_spanish(self) -> Any:
        tts = self.engine()
        en = yield self.speak(tts, ENGLISH, "en")
        es = yield self.speak(tts, SPANISH, "es")
        self.assertSpeech(en.audio, 1.0, 4.0)
        self.assertSpeech(es.audio, 0.7, 4.0)
        self.assertEqual((en.events, es.events), (["audio", "done"], ["audio", "done"]))
        self.assertEqual(tts.counters.requests, 2)
        self.assertEqual(tts.counters.sentences, 2)
        self.assertEqual(tts.counters.completed, 2)
        self.assertEqual(len(tts.counters.first_audio_history), 2)
        assert tts.counters.first_audio_ms is not None
        self.assertLess(tts.counters.first_audio_ms, 1000.0)

    @inlineCallbacks
    def test_sentence_by_sentence_in_order(self) -> Any:
        """
        One ``on_audio`` call per sentence, each the audio of that sentence
        alone (with the sentence pause, except after the last), all before
        the Deferred fires.
        """
        tts = self.engine()
        heard = yield self.speak(tts, THREE, "en")
        self.assertEqual(heard.events, ["audio", "audio", "audio", "done"])
        self.assertEqual(tts.counters.sentences, 3)
        for i, sentence in enumerate(split_sentences(THREE)):
            alone = yield self.speak(tts, sentence, "en")
            chunk = heard.chunks[i]
            if i < 2:  # followed by espeak's 300 ms sentence pause
                pause = len(chunk) - len(alone.audio)
                self.assertTrue(0.25 * SAMPLE_RATE < pause < 0.35 * SAMPLE_RATE, pause)
                self.assertLess(float(np.abs(chunk[-pause + 400:]).max()), 100)
                chunk = chunk[: len(alone.audio)]
            self.assertSameSpeech(chunk, alone.audio)

    @inlineCallbacks
    def test_concurrent_requests_are_serialised(self) -> Any:
        """
        Two calls speaking at once (different voices and texts) get exactly
        what each gets alone: no voice or sample mix-up in the library's
        global state.
        """
        tts = self.engine()
        solo_en = yield self.speak(tts, THREE, "en")
        solo_es = yield self.speak(tts, SPANISH + " " + SPANISH, "es")
        a, b = _Heard(), _Heard()
        yield gatherResults([
            tts.synthesize(THREE, "en", a).addCallback(a.done),
            tts.synthesize(SPANISH + " " + SPANISH, "es", b).addCallback(b.done),
        ])
        self.assertEqual(a.events, ["audio"] * 3 + ["done"])
        self.assertEqual(b.events, ["audio"] * 2 + ["done"])
        for mine, solo, other in [(a, solo_en, solo_es), (b, solo_es, solo_en)]:
            for chunk, alone in zip(mine.chunks, solo.chunks):
                self.assertSameSpeech(chunk, alone)
            self.assertDifferentSpeech(mine.audio, other.audio)

    @inlineCallbacks
    def test_two_engines_share_the_library(self) -> Any:
        one, two = self.engine(), self.engine()
        solo = yield self.speak(one, ENGLISH, "en")
        a, b = _Heard(), _Heard()
        yield gatherResults([one.synthesize(ENGLISH, "en", a), two.synthesize(ENGLISH, "en", b)])
        self.assertSameSpeech(a.audio, solo.audio)
        self.assertSameSpeech(b.audio, solo.audio)

    @inlineCallbacks
    def test_cancel_from_on_audio(self) -> Any:
        tts = self.engine()
        heard = _Heard()

        def on_audio(samples: Samples) -> None:
            heard(samples)
            d.cancel()

        d = tts.synthesize(THREE, "en", on_audio)
        yield self.assertFailure(d, CancelledError)
        yield sleep(0.1)
        self.assertEqual(len(heard.chunks), 1)
        self.assertEqual(tts.counters.cancelled, 1)
        self.assertEqual(tts.counters.completed, 0)

    @inlineCallbacks
    def test_cancel_at_once(self) -> Any:
        tts = self.engine()
        heard = _Heard()
        d = tts.synthesize(THREE, "en", heard)
        d.cancel()
        yield self.assertFailure(d, CancelledError)
        yield sleep(0.1)
        self.assertEqual(heard.chunks, [])
        # The engine still works afterwards.
        again = yield self.speak(tts, ENGLISH, "en")
        self.assertEqual(again.events, ["audio", "done"])

    @inlineCallbacks
    def test_queue_bound(self) -> Any:
        tts = self.engine(max_queue=3)
        taken = [tts.synthesize(ENGLISH, "en", _Heard()) for _ in range(3)]
        refused = tts.synthesize(ENGLISH, "en", _Heard())
        e = self.failureResultOf(refused, EngineUnavailable).value
        self.assertIn("queue full", str(e))
        self.assertEqual(tts.counters.refused, 1)
        yield gatherResults(taken)
        self.assertEqual(tts.counters.completed, 3)
        # Room again once they are done.
        heard = yield self.speak(tts, ENGLISH, "en")
        self.assertEqual(heard.events, ["audio", "done"])

    @inlineCallbacks
    def test_voice_per_language(self) -> Any:
        """
        ``es`` is spoken with the Spanish voice: it sounds different from
        the English voice on the same text, and the same once ``es`` is
        mapped to ``en-us``.
        """
        tts = self.engine()
        en = yield self.speak(tts, SPANISH, "en")
        es = yield self.speak(tts, SPANISH, "es")
        self.assertDifferentSpeech(es.audio, en.audio)
        remapped = self.engine(voices={"es": "en-us"})
        es_as_en = yield self.speak(remapped, SPANISH, "es")
        self.assertSameSpeech(es_as_en.audio, en.audio)
        self.assertDifferentSpeech(es_as_en.audio, es.audio)

    @inlineCallbacks
    def test_unknown_language_uses_default_voice_warning_once(self) -> Any:
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        tts = self.engine(default_voice="es")
        fr = yield self.speak(tts, SPANISH, "fr")
        yield self.speak(tts, SPANISH, "fr")
        es = yield self.speak(tts, SPANISH, "es")
        en = yield self.speak(tts, SPANISH, "en")
        self.assertSameSpeech(fr.audio, es.audio)
        self.assertDifferentSpeech(fr.audio, en.audio)
        warnings = [e for e in logged if e.get("language") == "fr"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["voice"], "es")

    @inlineCallbacks
    def test_unknown_voice(self) -> Any:
        tts = self.engine(voices={"en": "no-such-voice"})
        heard = _Heard()
        e = yield self.assertFailure(tts.synthesize(ENGLISH, "en", heard), EngineRequestError)
        self.assertIn("no-such-voice", str(e))
        self.assertEqual((heard.chunks, tts.counters.errors), ([], 1))

    @inlineCallbacks
    def test_rate_and_pitch(self) -> Any:
        slow = yield self.speak(self.engine(rate_wpm=120), ENGLISH, "en")
        fast = yield self.speak(self.engine(rate_wpm=300), ENGLISH, "en")
        self.assertGreater(len(slow.audio), 1.8 * len(fast.audio))
        low = yield self.speak(self.engine(pitch=10), ENGLISH, "en")
        high = yield self.speak(self.engine(pitch=90), ENGLISH, "en")
        self.assertGreater(pitch_hz(high.audio), 1.2 * pitch_hz(low.audio))

    @inlineCallbacks
    def test_blank_text(self) -> Any:
        tts = self.engine()
        heard = yield self.speak(tts, " ... ", "en")
        self.assertEqual(heard.events, ["done"])

    @inlineCallbacks
    def test_closed(self) -> Any:
        tts = self.engine()
        d = tts.synthesize(THREE, "en", _Heard())
        yield tts.close()
        self.failureResultOf(d, CancelledError)
        self.failureResultOf(tts.synthesize(ENGLISH, "en", _Heard()), EngineUnavailable)

    @inlineCallbacks
    def test_library_that_cannot_load(self) -> Any:
        tts = self.engine(library_path="/nonexistent/libespeak-ng.so")
        for _ in range(2):  # the failure is remembered
            e = yield self.assertFailure(tts.synthesize(ENGLISH, "en", _Heard()), EngineUnavailable)
            self.assertIn("cannot load libespeak-ng (/nonexistent/libespeak-ng.so)", str(e))
        self.assertEqual(tts.counters.errors, 2)


def pitch_hz(x: Samples) -> float:
    """Median fundamental frequency of the voiced 30 ms frames of ``x``, by autocorrelation."""
    frame = 480
    found: list[float] = []
    for start in range(0, len(x) - frame, frame):
        f = x[start:start + frame].astype(np.float64)
        if np.sqrt(np.mean(f ** 2)) < 1000:
            continue
        ac = np.correlate(f, f, "full")[frame - 1:]
        lo, hi = SAMPLE_RATE // 400, SAMPLE_RATE // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        found.append(SAMPLE_RATE / lag)
    return float(np.median(found))
