"""
Tests for the pure helpers of :mod:`xlbridge.engines.whisper.decode` (the
guards against Whisper's speed and hallucination traps), and for a model
folder that has the right shape but no real weights: loading it is a
clear :class:`EngineRequestError`, not a crash.  The real model is in
``test_real_model``.
"""

from __future__ import annotations

import json

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.base import EngineRequestError
from xlbridge.engines.local_asr.wire import AUDIO, EVENTS, OPEN, Framer, Message, audio_payload, dump, spec_to_json
from xlbridge.engines.local_asr.worker import Worker
from xlbridge.engines.pocketsphinx.asr import DecoderPool
from xlbridge.engines.whisper.decode import (
    MAX_FRAMES,
    MIN_AVG_LOGPROB,
    NO_SPEECH_PROB,
    UNSURE_LOGPROB,
    WhisperDecoder,
    cut_repeats,
    db_level,
    feature_frames,
    is_garbage,
    loaded_decoder,
    max_tokens,
    pick_language,
    repeats_itself,
    shared_decoder,
    trim_silence,
)
from xlbridge.engines.whisper.settings import WhisperModel

from tests.engines.whisper.folders import shaped_folder

RATE = 16000


def tone(seconds: float, amplitude: int = 8000) -> np.ndarray:
    """A 440 Hz tone, int16."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


class FeatureFramesTests(SynchronousTestCase):
    def test_own_length(self) -> None:
        """100 feature frames a second (hop of 160 samples)."""
        self.assertEqual(feature_frames(RATE), 100)
        self.assertEqual(feature_frames(3 * RATE + 80), 300)

    def test_even(self) -> None:
        """The encoder halves its input: an odd count is rounded down."""
        self.assertEqual(feature_frames(101 * 160), 100)
        self.assertEqual(feature_frames(102 * 160 + 159), 102)
        self.assertEqual(feature_frames(RATE, 0.05), 100)
        self.assertEqual(feature_frames(0, 0.05), 4)
        for n in range(0, 5000, 37):
            self.assertEqual(feature_frames(n * 16, 0.013) % 2, 0, n)

    def test_min_input_pads(self) -> None:
        """Short audio is encoded as ``min_input_s`` long; longer audio as itself."""
        self.assertEqual(feature_frames(RATE, 5.0), 500)
        self.assertEqual(feature_frames(RATE // 10, 5.0), 500)
        self.assertEqual(feature_frames(7 * RATE, 5.0), 700)

    def test_thirty_second_cap(self) -> None:
        self.assertEqual(MAX_FRAMES, 3000)
        self.assertEqual(feature_frames(60 * RATE), 3000)
        self.assertEqual(feature_frames(RATE, 40.0), 3000)
        self.assertEqual(feature_frames(30 * RATE + 1000), 3000)

    def test_at_least_two(self) -> None:
        self.assertEqual(feature_frames(0), 2)
        self.assertEqual(feature_frames(1), 2)
        self.assertEqual(feature_frames(479), 2)


class MaxTokensTests(SynchronousTestCase):
    def test_bound(self) -> None:
        """10 plus ``tokens_per_s`` a second of speech; never below 10."""
        self.assertEqual(max_tokens(0.0), 10)
        self.assertEqual(max_tokens(1.0), 22)
        self.assertEqual(max_tokens(2.5, 4.0), 20)
        self.assertEqual(max_tokens(-3.0), 10)
        self.assertGreater(max_tokens(5.0), max_tokens(4.0))


class TrimSilenceTests(SynchronousTestCase):
    def test_trailing_silence_cut_to_100_ms(self) -> None:
        """Cut 100 ms after the last loud 20 ms frame."""
        x = np.concatenate([tone(1.0), silence(1.0)])
        out = trim_silence(x)
        self.assertEqual(len(out), int(1.1 * RATE))
        np.testing.assert_array_equal(out, x[:len(out)])

    def test_leading_audio_kept(self) -> None:
        """Leading silence, and quiet audio between loud parts, stay."""
        x = np.concatenate([silence(0.5), tone(0.4), silence(0.6), tone(0.2), silence(2.0)])
        out = trim_silence(x)
        self.assertEqual(len(out), int((0.5 + 0.4 + 0.6 + 0.2 + 0.1) * RATE))
        np.testing.assert_array_equal(out, x[:len(out)])

    def test_quiet_noise_is_silence(self) -> None:
        """Room noise below -50 dBFS counts as silence; -40 dBFS does not."""
        rng = np.random.default_rng(1)
        hiss = (rng.standard_normal(RATE) * 30).astype(np.int16)  # about -61 dBFS
        self.assertEqual(len(trim_silence(np.concatenate([tone(0.5), hiss]))), int(0.6 * RATE))
        louder = (hiss.astype(np.int32) * 10).astype(np.int16)  # about -41 dBFS
        self.assertEqual(len(trim_silence(np.concatenate([tone(0.5), louder]))), int(1.5 * RATE))

    def test_no_trailing_silence(self) -> None:
        x = tone(0.75)
        self.assertEqual(len(trim_silence(x)), len(x))

    def test_all_silent_is_empty(self) -> None:
        self.assertEqual(len(trim_silence(silence(2.0))), 0)
        self.assertEqual(len(trim_silence(np.zeros(100, np.int16))), 0, "under one frame")
        self.assertEqual(trim_silence(silence(1.0)).dtype, np.int16)

    def test_db_level(self) -> None:
        self.assertEqual(db_level(np.zeros(0, np.int16)), -np.inf)
        self.assertAlmostEqual(db_level(np.full(320, 16384, np.int16)), -6.02, places=2)
        self.assertLess(db_level(silence(0.02)), -200)


class CutRepeatsTests(SynchronousTestCase):
    def test_loop_reduced_to_one_copy(self) -> None:
        self.assertEqual(cut_repeats("Goodbye. Goodbye. Goodbye."), "Goodbye.")
        self.assertEqual(cut_repeats("Goodbye. " * 20), "Goodbye.")
        self.assertEqual(cut_repeats("Please hold. Goodbye. Goodbye. Goodbye. Goodbye."), "Please hold. Goodbye.")

    def test_multi_word_phrase(self) -> None:
        self.assertEqual(cut_repeats("I will call you back. I will call you back. I will call you back."),
                         "I will call you back.")
        self.assertEqual(cut_repeats("Thank you. Thank you. Thank you. Bye."), "Thank you. Bye.")

    def test_cut_off_last_copy_removed(self) -> None:
        """A loop truncated mid-phrase, or mid-word, loses the partial copy too."""
        self.assertEqual(cut_repeats("see you later see you later see you later see you"), "see you later")
        self.assertEqual(cut_repeats("Goodbye. Goodbye. Goodbye. Good"), "Goodbye.")

    def test_following_words_kept(self) -> None:
        """Only a cut-off copy at the very end goes: real words after the loop stay."""
        self.assertEqual(cut_repeats("Goodbye. Goodbye. Goodbye. Good morning."), "Goodbye. Good morning.")
        self.assertEqual(cut_repeats("ha ha ha see you"), "ha see you")

    def test_two_copies_kept(self) -> None:
        """Speech repeats words twice: "no, no"."""
        for text in ("no, no", "No, no, I said tomorrow.", "very very good", "bye bye"):
            self.assertEqual(cut_repeats(text), text)
            self.assertFalse(repeats_itself(text), text)

    def test_case_and_punctuation_ignored(self) -> None:
        self.assertEqual(cut_repeats("Hello. hello, HELLO! How are you?"), "Hello. How are you?")
        self.assertTrue(repeats_itself("Hello. hello, HELLO!"))

    def test_min_repeats(self) -> None:
        self.assertEqual(cut_repeats("no no", min_repeats=2), "no")
        self.assertEqual(cut_repeats("no no no", min_repeats=4), "no no no")
        self.assertFalse(repeats_itself("no no no", min_repeats=4))

    def test_plain_text_untouched(self) -> None:
        """Ordinary speech is unchanged (only whitespace normalised)."""
        for text in ("You are currently the only person in this conference.",
                     "Por el momento, usted es la única persona en la conferencia.", "", "..."):
            self.assertEqual(cut_repeats(text), text)
            self.assertFalse(repeats_itself(text), text)
        self.assertEqual(cut_repeats("  two   spaces "), "two spaces")
        self.assertFalse(repeats_itself("  two   spaces "))


class GarbageTests(SynchronousTestCase):
    def test_no_words(self) -> None:
        for text in ("", " ", "...", "- ♪ -"):
            self.assertTrue(is_garbage(text, 0.0, 0.0), text)

    def test_speech(self) -> None:
        self.assertFalse(is_garbage("Hello.", 0.1, -0.3))
        self.assertFalse(is_garbage("Goodbye.", 0.01, -1.7), "a clear one-word prompt scores this low")
        self.assertFalse(is_garbage("Hola.", NO_SPEECH_PROB + 0.3, UNSURE_LOGPROB + 0.2),
                         "confident text beats a high no-speech probability")
        self.assertFalse(is_garbage("Sí", 0.0, MIN_AVG_LOGPROB + 0.1))

    def test_not_speech(self) -> None:
        self.assertTrue(is_garbage("Thank you.", NO_SPEECH_PROB, UNSURE_LOGPROB - 0.01), "no speech, and unsure")
        self.assertTrue(is_garbage("Thank you.", 0.95, UNSURE_LOGPROB - 0.5))
        self.assertTrue(is_garbage("Thank you.", 0.0, MIN_AVG_LOGPROB - 0.1), "very unlikely text")
        self.assertFalse(is_garbage("Thank you.", NO_SPEECH_PROB - 0.01, UNSURE_LOGPROB - 0.5))


class PickLanguageTests(SynchronousTestCase):
    PROBS = [("<|en|>", 0.5), ("<|de|>", 0.3), ("<|es|>", 0.15), ("<|fr|>", 0.05)]

    def test_most_probable(self) -> None:
        self.assertEqual(pick_language(self.PROBS), ("en", 0.5))

    def test_among_allowed(self) -> None:
        self.assertEqual(pick_language(self.PROBS, ("es", "fr")), ("es", 0.15))
        self.assertEqual(pick_language(self.PROBS, ["fr"]), ("fr", 0.05))

    def test_fallback(self) -> None:
        """None of the allowed languages listed: the first allowed, probability 0; nothing at all: English."""
        self.assertEqual(pick_language(self.PROBS[:2], ("es", "fr")), ("es", 0.0))
        self.assertEqual(pick_language([]), ("en", 0.0))


class BadFolderTests(SynchronousTestCase):
    """A folder of the right shape without real weights."""

    def spec(self) -> WhisperModel:
        return WhisperModel(shaped_folder(self.mktemp()))

    def test_decoder(self) -> None:
        spec = self.spec()
        e = self.assertRaises(EngineRequestError, WhisperDecoder, spec)
        self.assertIn("could not load the Whisper model", e.message)
        self.assertIn(spec.path, e.message)
        self.assertFalse(e.retryable)

    def test_shared_decoder_keeps_nothing(self) -> None:
        """A failed load is not cached: the next caller gets the error again, nothing is half-loaded."""
        spec = self.spec()
        self.assertRaises(EngineRequestError, shared_decoder, spec)
        self.assertIsNone(loaded_decoder(spec))
        e = self.assertRaises(EngineRequestError, shared_decoder, spec)
        self.assertIn(spec.path, e.message)

    def test_no_folder(self) -> None:
        e = self.assertRaises(EngineRequestError, WhisperDecoder, WhisperModel("/nonexistent/whisper"))
        self.assertIn("/nonexistent/whisper", e.message)

    def test_worker_reports_it(self) -> None:
        """In an ASR worker, OPEN on such a folder is an error reply naming it, and later AUDIO repeats it."""
        spec = self.spec()
        worker = Worker(DecoderPool())
        replies = Framer().feed(b"".join(worker.handle(Message(OPEN, 7, dump({"model": spec_to_json(spec)})))))
        self.assertEqual([(m.kind, m.stream) for m in replies], [(EVENTS, 7)])
        error = json.loads(replies[0].payload)["error"]
        self.assertFalse(error["retryable"])
        self.assertIn(spec.path, error["message"])
        audio_msg = Message(AUDIO, 7, audio_payload([bytes(640)]))
        audio = Framer().feed(b"".join(worker.handle(audio_msg)))
        self.assertEqual(json.loads(audio[0].payload)["error"], error)


class LongPhraseLoopTests(SynchronousTestCase):
    def test_a_long_phrase_twice_is_a_loop(self) -> None:
        looped = "Weasels have eaten our phone system. Weasels have eaten our phone system. Weasels have eaten our"
        self.assertEqual(cut_repeats(looped), "Weasels have eaten our phone system.")

    def test_short_phrases_twice_are_speech(self) -> None:
        for text in ("thank you thank you", "no, no", "press one press two"):
            self.assertEqual(cut_repeats(text), text)
