"""
Tests for :mod:`xlbridge.engines.pocketsphinx.asr`: the :class:`Reframer`,
and :class:`SphinxStream` with the real decoder on real speech (Asterisk's
"Allison" prompts), fed 20 ms frames directly, with no threads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.frame import Samples
from xlbridge.engines.base import ASREvent, SpeechStarted
from xlbridge.engines.pocketsphinx.asr import Reframer, SphinxStream

from tests.engines.local_asr.speech import (
    BUNDLED, DECODERS, LEAD_S, RATE, SPEECH_MISSING, TRAIL_S, frames_of, prompt, speech_bounds, transcripts,
    with_silence,
)


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


class SphinxStreamTests(SynchronousTestCase):
    """The real decoder, fed 20 ms frames directly (no threads)."""

    skip = SPEECH_MISSING

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
