"""
Tests for :mod:`xlbridge.engines.whisper.stream`: the :class:`Segmenter`
driven by voice decisions alone, and :class:`WhisperStream` with a fake
decoder and a fake VAD, so every boundary, time and decode is exact.

Frames carry their number: frame ``i`` is 320 samples of ``VOICE + i``
(voiced) or ``i`` (silent), so the audio a decode got says which frames
it was.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, cast

import attrs
import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.base import ASREvent, EagerEnd, SpeechStarted, Transcript
from xlbridge.engines.local_asr.stream_clock import FRAME_BYTES
from xlbridge.engines.whisper.decode import Hypothesis, WhisperDecoder
from xlbridge.engines.whisper.settings import WhisperModel
from xlbridge.engines.whisper.stream import PREROLL_FRAMES, Segmenter, WhisperStream

#: Sample value of voiced frames (plus the frame's number).
VOICE = 10000
#: The level VAD's threshold.
LOUD = 1000


def frame(i: int, voiced: bool) -> bytes:
    """Frame number ``i``."""
    return np.full(320, (VOICE + i) if voiced else i % LOUD, np.int16).tobytes()


def frame_numbers(samples: np.ndarray) -> list[int]:
    """Which frames ``samples`` (a decode's input) are made of."""
    rows = samples.reshape(-1, 320)
    assert (rows == rows[:, :1]).all(), "whole frames only"
    return [int(v) - VOICE if v >= VOICE else int(v) for v in rows[:, 0]]


class LevelVAD:
    """Voiced when the frame is loud."""

    def is_speech(self, data: bytes) -> bool:
        return bool(np.abs(np.frombuffer(data, np.int16)).max() >= LOUD)


class ScriptedVAD:
    """The decisions given, in order."""

    def __init__(self, decisions: Sequence[bool]) -> None:
        self.decisions = list(decisions)

    def is_speech(self, data: bytes) -> bool:
        return self.decisions.pop(0)


@attrs.define
class Call:
    samples: np.ndarray
    language: str
    allowed: tuple[str, ...]

    @property
    def frames(self) -> list[int]:
        return frame_numbers(self.samples)


class FakeDecoder:
    """
    Records each decode; answers ``respond(call)`` (by default "hello" in
    the language asked, or English for ``auto``).
    """

    def __init__(self, respond: Optional[Callable[[Call], Hypothesis]] = None) -> None:
        self.calls: list[Call] = []
        self.specs: list[Any] = []  # the spec each decode was given
        self.respond = respond or self.hello

    @staticmethod
    def hello(call: Call) -> Hypothesis:
        return Hypothesis("hello", "en" if call.language == "auto" else call.language, avg_logprob=-0.1)

    def decode(self, samples: np.ndarray, language: str, allowed: Sequence[str] = (), spec: Any = None) -> Hypothesis:
        call = Call(np.array(samples, dtype=np.int16), language, tuple(allowed))
        self.specs.append(spec)
        self.calls.append(call)
        return self.respond(call)


def text_hyp(text: str, language: str = "en", **kwargs: Any) -> Callable[[Call], Hypothesis]:
    return lambda call: Hypothesis(text, language, **kwargs)


#: 3 voiced frames start, 5 silent end, 100 frames at most; no early decode, no interims;
#: the WebRTC detector's settings (no tail pad), whatever the detector injected.
SPEC = WhisperModel("/unused", "en", start_speech_s=0.06, end_silence_s=0.1, early_decode_s=0.0,
                    max_utterance_s=2.0, interim_interval_s=0.0, vad="webrtc")


def run(stream: WhisperStream, script: str) -> list[tuple[int, ASREvent]]:
    """Feed ``script`` ("#" voiced, "." silent) as numbered frames; the events with the frame that caused them."""
    out = []
    for c in script:
        i = stream.frames
        out += [(i, ev) for ev in stream.feed(frame(i, c == "#"))]
    return out


def decisions(seg: Segmenter, script: str) -> list[tuple[int, tuple[str, int]]]:
    """Push ``script`` ("#" voiced); the decisions with their index."""
    out = []
    for i, c in enumerate(script):
        d = seg.push(c == "#")
        if d is not None:
            out.append((i, d))
    return out


class SegmenterTests(SynchronousTestCase):
    def test_start_after_start_frames_of_five(self) -> None:
        """``start_frames`` voiced among the last 5 start an utterance, in a row or not."""
        self.assertEqual(decisions(Segmenter(3, 4, 100, preroll=10), "#.#.#"), [(4, ("start", 4))])
        self.assertEqual(decisions(Segmenter(3, 4, 100, preroll=10), "##.#"), [(3, ("start", 3))])
        seg = Segmenter(3, 4, 100, preroll=10)
        self.assertEqual(decisions(seg, "#..#..#..#..#"), [], "never 3 in a window of 5")
        self.assertFalse(seg.in_speech)
        self.assertEqual(decisions(Segmenter(1, 4, 100), "....#"), [(4, ("start", 4))])

    def test_preroll(self) -> None:
        """The start reaches back up to ``preroll`` frames before the deciding one, no further than the stream."""
        self.assertEqual(decisions(Segmenter(3, 4, 100, preroll=10), "." * 30 + "###"), [(32, ("start", 10))])
        self.assertEqual(decisions(Segmenter(3, 4, 100), "." * 30 + "###"), [(32, ("start", PREROLL_FRAMES))])
        self.assertEqual(decisions(Segmenter(3, 4, 100, preroll=10), ".###"), [(3, ("start", 3))])
        self.assertEqual(decisions(Segmenter(3, 4, 100, preroll=10), "###"), [(2, ("start", 2))])

    def test_end(self) -> None:
        """``end_frames`` unvoiced in a row end it; the decision says how far back the last voiced frame was."""
        seg = Segmenter(3, 4, 100, preroll=10)
        self.assertEqual(decisions(seg, "###..#...."), [(2, ("start", 2)), (9, ("end", 4))])
        self.assertFalse(seg.in_speech)
        self.assertEqual(seg.silence, 0)

    def test_silence_counter(self) -> None:
        seg = Segmenter(3, 10, 100)
        decisions(seg, "###..")
        self.assertEqual((seg.in_speech, seg.silence), (True, 2))
        seg.push(True)
        self.assertEqual(seg.silence, 0)

    def test_next_preroll_starts_after_the_last_utterance(self) -> None:
        """The next utterance's pre-roll never reaches back into the last one's speech."""
        seg = Segmenter(3, 4, 100, preroll=10)
        self.assertEqual(decisions(seg, "###....###"), [(2, ("start", 2)), (6, ("end", 4)), (9, ("start", 6))])
        seg = Segmenter(3, 4, 100, preroll=2)
        self.assertEqual(decisions(seg, "###....###")[-1], (9, ("start", 2)))

    def test_cut_at_the_longest_pause_of_the_last_third(self) -> None:
        """A long pause early on is not used; of the last third's, the longest, cut in its middle."""
        voiced = ["#"] * 30
        for lo, hi in ((5, 11), (21, 24), (25, 29)):  # 6 frames early; 3 and 4 in the last third
            voiced[lo:hi] = ["."] * (hi - lo)
        seg = Segmenter(1, 100, 30, preroll=0)
        self.assertEqual(decisions(seg, "".join(voiced)), [(0, ("start", 0)), (29, ("cut", 4))])
        self.assertTrue(seg.in_speech, "the rest goes on")
        self.assertEqual(decisions(seg, "#" * 25), [])
        self.assertEqual(decisions(seg, "#"), [(0, ("cut", 0))], "the 4 kept frames plus 26 more")

    def test_cut_without_a_pause(self) -> None:
        """No pause of 3 frames in the last third: cut at the end."""
        seg = Segmenter(1, 100, 30, preroll=0)
        self.assertEqual(decisions(seg, "#" * 60), [(0, ("start", 0)), (29, ("cut", 0)), (59, ("cut", 0))])
        seg = Segmenter(1, 100, 30, preroll=0)
        self.assertEqual(decisions(seg, "#" * 24 + ".." + "####"), [(0, ("start", 0)), (29, ("cut", 0))])

    def test_end_of_stream(self) -> None:
        seg = Segmenter(3, 10, 100)
        self.assertIsNone(seg.end_of_stream())
        decisions(seg, "###..")
        self.assertEqual(seg.end_of_stream(), 2)
        self.assertFalse(seg.in_speech)
        self.assertIsNone(seg.end_of_stream())
        seg = Segmenter(3, 10, 100)
        decisions(seg, "###")
        self.assertEqual(seg.end_of_stream(), 0)


class WhisperStreamTests(SynchronousTestCase):
    def stream(self, decoder: FakeDecoder, spec: WhisperModel = SPEC, vad: Any = None) -> WhisperStream:
        return WhisperStream(cast(WhisperDecoder, decoder), spec, vad=vad or LevelVAD())

    def test_utterance(self) -> None:
        """SpeechStarted at the pre-roll's start; the final without the trailing silence, timed to the frame."""
        decoder = FakeDecoder()
        s = self.stream(decoder)
        events = run(s, "." * 20 + "#" * 50 + "." * 10)
        self.assertEqual(events, [
            (22, SpeechStarted(0.14, 0.0)),  # decided on the 3rd voiced frame; 15 frames of pre-roll
            (74, Transcript("hello", True, True, 0.14, 1.5, 0.0, confidence=float(np.exp(-0.1)), speech_end=1.4,
                            language="en")),
        ])
        [call] = decoder.calls
        self.assertEqual(call.frames, list(range(7, 70)), "pre-roll and speech, not the 5 silent frames")
        self.assertEqual(len(call.samples), 63 * 320)
        self.assertEqual((call.language, call.allowed), ("en", ()))
        self.assertEqual(s.decodes, 1)

    def test_speech_from_the_first_frame(self) -> None:
        decoder = FakeDecoder()
        events = run(self.stream(decoder), "#" * 30 + "." * 5)
        self.assertEqual(events[0], (2, SpeechStarted(0.0, 0.0)))
        final = events[1][1]
        assert isinstance(final, Transcript)
        self.assertEqual((final.start, final.speech_end, final.end), (0.0, 0.6, 0.7))
        self.assertEqual(decoder.calls[0].frames, list(range(30)))

    def test_two_utterances(self) -> None:
        decoder = FakeDecoder()
        events = run(self.stream(decoder), "." * 20 + "#" * 20 + "." * 30 + "#" * 10 + "." * 5)
        self.assertEqual([type(e).__name__ for _, e in events], ["SpeechStarted", "Transcript"] * 2)
        self.assertEqual(decoder.calls[0].frames, list(range(7, 40)))
        self.assertEqual(decoder.calls[1].frames, list(range(57, 80)), "15 frames of pre-roll again")

    def test_the_vad_decides(self) -> None:
        """The VAD's decision, not the level, makes speech."""
        decoder = FakeDecoder()
        vad = ScriptedVAD([False] * 5 + [True] * 10 + [False] * 5)
        events = run(self.stream(decoder, vad=vad), "." * 20)
        self.assertEqual([type(e).__name__ for _, e in events], ["SpeechStarted", "Transcript"])
        self.assertEqual(decoder.calls[0].frames, list(range(0, 15)))

    def test_nothing_heard(self) -> None:
        decoder = FakeDecoder()
        s = self.stream(decoder)
        self.assertEqual(run(s, "." * 100 + "#" + "." * 4 + "##"), [])
        self.assertEqual(s.finish(), [])
        self.assertEqual(decoder.calls, [])

    def test_not_speech_gives_no_final(self) -> None:
        """A cough: the decoder's empty hypothesis gives no Transcript."""
        decoder = FakeDecoder(text_hyp(""))
        events = run(self.stream(decoder), "." * 20 + "#" * 10 + "." * 10)
        self.assertEqual([type(e).__name__ for _, e in events], ["SpeechStarted"])
        self.assertEqual(len(decoder.calls), 1)

    def test_skip_keeps_times_true(self) -> None:
        """Frames dropped upstream count in every time."""
        decoder = FakeDecoder()
        s = self.stream(decoder)
        run(s, "." * 20)
        s.skip(50)
        events = run(s, "." * 20 + "#" * 30 + "." * 5)
        self.assertEqual(events[0], (42, SpeechStarted(1.54, 0.0)))
        final = events[1][1]
        assert isinstance(final, Transcript)
        self.assertEqual((final.start, final.speech_end, final.end), (1.54, 2.4, 2.5))
        self.assertAlmostEqual(s.position, 2.5)
        self.assertEqual(decoder.calls[0].frames, list(range(27, 70)))

    def test_finish_decodes_an_open_utterance(self) -> None:
        """End of stream mid-utterance: a final, without the trailing silence; the tail counts in ``end``."""
        decoder = FakeDecoder()
        s = self.stream(decoder)
        run(s, "." * 20 + "#" * 30 + "..")
        [final] = s.finish(bytes(100))
        self.assertEqual(final, Transcript("hello", True, True, 0.14, 1.043, 0.0, confidence=float(np.exp(-0.1)),
                                           speech_end=1.0, language="en"))
        self.assertEqual(decoder.calls[0].frames, list(range(7, 50)))
        self.assertEqual(s.finish(), [])
        self.assertRaises(ValueError, s.feed, frame(0, True))
        self.assertEqual(len(decoder.calls), 1)

    def test_finish_after_the_end(self) -> None:
        decoder = FakeDecoder()
        s = self.stream(decoder)
        run(s, "." * 20 + "#" * 30 + "." * 5)
        self.assertEqual(s.finish(), [])
        self.assertEqual(len(decoder.calls), 1)

    def test_frames_must_be_640_bytes(self) -> None:
        s = self.stream(FakeDecoder())
        for data in (b"", bytes(639), bytes(1280)):
            self.assertRaises(ValueError, s.feed, data)
        self.assertEqual(FRAME_BYTES, 640)

    def test_forced_cut_without_a_pause(self) -> None:
        """Past ``max_utterance_s``: a final that is not ``speech_final``, and the rest goes on."""
        decoder = FakeDecoder()
        events = run(self.stream(decoder), "." * 20 + "#" * 150 + "." * 5)
        self.assertEqual([type(e).__name__ for _, e in events], ["SpeechStarted", "Transcript", "Transcript"])
        (_, cut), (_, end) = events[1], events[2]
        assert isinstance(cut, Transcript) and isinstance(end, Transcript)
        self.assertEqual(events[1][0], 106, "2 s after the utterance began")
        self.assertEqual((cut.is_final, cut.speech_final, cut.start, cut.speech_end, cut.end),
                         (True, False, 0.14, 2.14, 2.14))
        self.assertEqual((end.is_final, end.speech_final, end.start, end.speech_end, end.end),
                         (True, True, 2.14, 3.4, 3.5))
        self.assertEqual(decoder.calls[0].frames, list(range(7, 107)))
        self.assertEqual(decoder.calls[1].frames, list(range(107, 170)))

    def test_forced_cut_at_a_pause(self) -> None:
        """The cut is in the middle of the last third's longest pause; the next part starts there."""
        decoder = FakeDecoder()
        spec = attrs.evolve(SPEC, end_silence_s=0.2)  # 10 frames end it
        script = "." * 20 + "#" * 20 + "." * 8 + "#" * 32 + "." * 3 + "#" * 7 + "." * 5 + "#" * 60 + "." * 10
        events = run(self.stream(decoder, spec), script)
        finals = [(i, e) for i, e in events if isinstance(e, Transcript)]
        self.assertEqual([i for i, _ in finals], [106, 164])
        cut, end = finals[0][1], finals[1][1]
        self.assertFalse(cut.speech_final)
        self.assertEqual((cut.start, cut.speech_end), (0.14, 1.84))
        self.assertTrue(end.speech_final)
        self.assertEqual((end.start, end.speech_end, end.end), (1.84, 3.1, 3.3))
        self.assertEqual(decoder.calls[0].frames, list(range(7, 92)), "to the middle of the 5-frame pause")
        self.assertEqual(decoder.calls[1].frames, list(range(92, 155)))

    def test_no_interims_by_default(self) -> None:
        decoder = FakeDecoder()
        events = run(self.stream(decoder), "." * 20 + "#" * 200 + "." * 5)
        self.assertFalse([e for _, e in events if isinstance(e, Transcript) and not e.is_final])
        self.assertEqual(len(decoder.calls), len([e for _, e in events if isinstance(e, Transcript)]))

    def test_interims(self) -> None:
        """With ``interim_interval_s``: partial decodes of the utterance so far, a new text each time."""
        words = "one two three four".split()
        decoder = FakeDecoder(lambda call: Hypothesis(" ".join(words[:len(call.frames) // 20]), "en"))
        spec = attrs.evolve(SPEC, interim_interval_s=0.2)
        events = run(self.stream(decoder, spec), "." * 20 + "#" * 50 + "." * 5)
        interims = [e for _, e in events if isinstance(e, Transcript) and not e.is_final]
        finals = [e for _, e in events if isinstance(e, Transcript) and e.is_final]
        self.assertEqual([e.text for e in interims], ["one", "one two"], "repeats are not sent again")
        self.assertTrue(all(e.start == 0.14 and not e.speech_final for e in interims))
        self.assertEqual([e.text for e in finals], ["one two three"])
        self.assertEqual(len(decoder.calls), 5, "every 0.2 s of speech, and the final")
        for call in decoder.calls:
            self.assertEqual(call.frames[0], 7, "each partial decode is the utterance from its start")

    def test_final_retracts_an_interim(self) -> None:
        """An interim was shown and the final is empty: an empty final says so."""
        decoder = FakeDecoder(lambda call: Hypothesis("" if len(call.frames) >= 60 else "hmm", "en"))
        spec = attrs.evolve(SPEC, interim_interval_s=0.2)
        events = run(self.stream(decoder, spec), "." * 20 + "#" * 50 + "." * 5)
        finals = [e for _, e in events if isinstance(e, Transcript) and e.is_final]
        self.assertEqual([(e.text, e.speech_final) for e in finals], [("", True)])

    def test_detected_language(self) -> None:
        """An ``auto`` leg asks for ``auto`` among its languages; the language heard is on the Transcript."""
        decoder = FakeDecoder(text_hyp("hola", "es", language_probability=0.7))
        spec = attrs.evolve(SPEC, language="auto", languages=("en", "es"))
        events = run(self.stream(decoder, spec), "." * 20 + "#" * 30 + "." * 5)
        final = events[-1][1]
        assert isinstance(final, Transcript)
        self.assertEqual((final.text, final.language), ("hola", "es"))
        self.assertEqual((decoder.calls[0].language, decoder.calls[0].allowed), ("auto", ("en", "es")))

    def test_no_language_means_english(self) -> None:
        decoder = FakeDecoder()
        run(self.stream(decoder, attrs.evolve(SPEC, language="")), "." * 20 + "#" * 30 + "." * 5)
        self.assertEqual(decoder.calls[0].language, "en")

    def test_statistics(self) -> None:
        decoder = FakeDecoder(text_hyp("Goodbye.", repeated=True))
        s = self.stream(decoder)
        run(s, "." * 20 + "#" * 30 + "." * 5 + "#" * 30 + "." * 5)
        self.assertEqual((s.decodes, s.repeats_cut), (2, 2))

    def test_real_vad_by_default(self) -> None:
        """Without a VAD given, pocketsphinx's WebRTC VAD is used: digital silence is no speech."""
        decoder = FakeDecoder()
        s = WhisperStream(cast(WhisperDecoder, decoder), SPEC)
        self.assertEqual([ev for _ in range(50) for ev in s.feed(bytes(640))], [])
        self.assertFalse(s.vad.is_speech(bytes(640)))


class EarlyDecodeTests(SynchronousTestCase):
    """The utterance decoded after ``early_decode_s`` of silence, while the end is still awaited."""

    SPEC = attrs.evolve(SPEC, end_silence_s=0.3, early_decode_s=0.1, max_utterance_s=10.0)  # end: 15 frames; early: 5

    def stream(self, decoder: FakeDecoder) -> WhisperStream:
        return WhisperStream(cast(WhisperDecoder, decoder), self.SPEC, vad=LevelVAD())

    def test_used_as_the_final(self) -> None:
        decoder = FakeDecoder()
        s = self.stream(decoder)
        events = run(s, "." * 20 + "#" * 50 + "." * 4)
        self.assertEqual(len(decoder.calls), 0)
        events += run(s, ".")
        self.assertEqual(len(decoder.calls), 1, "decoded on the 5th silent frame")
        self.assertEqual(decoder.calls[0].frames, list(range(7, 70)))
        events += run(s, "." * 10)
        self.assertEqual(len(decoder.calls), 1, "the end took the early result")
        # The early result is reported at once (the pipeline may start on
        # it), then confirmed by the final with the same words.
        self.assertEqual([(i, type(e).__name__) for i, e in events],
                         [(22, "SpeechStarted"), (74, "EagerEnd"), (84, "Transcript")])
        eager, final = events[1][1], events[2][1]
        assert isinstance(eager, EagerEnd) and isinstance(final, Transcript)
        self.assertEqual((final.speech_end, final.end, final.speech_final), (1.4, 1.7, True))
        self.assertEqual((eager.transcript.text, eager.transcript.speech_end, eager.transcript.is_final),
                         (final.text, 1.4, False))
        self.assertEqual((s.early_used, s.early_wasted), (1, 0))

    def test_wasted_when_speech_resumes(self) -> None:
        decoder = FakeDecoder()
        s = self.stream(decoder)
        events = run(s, "." * 20 + "#" * 50 + "." * 8 + "#" * 20 + "." * 15)
        self.assertEqual(len([e for _, e in events if isinstance(e, Transcript)]), 1)
        # eager at the 5th silent frame, withdrawn at the next voice, eager and final at the end
        kinds = [type(e).__name__ for _, e in events if not isinstance(e, SpeechStarted)]
        self.assertEqual(kinds, ["EagerEnd", "TurnResumed", "EagerEnd", "Transcript"])
        self.assertEqual(len(decoder.calls), 2)
        self.assertEqual(decoder.calls[-1].frames, list(range(7, 98)), "the final has all the speech")
        self.assertEqual((s.early_used, s.early_wasted), (1, 1))

    def test_used_at_finish(self) -> None:
        decoder = FakeDecoder()
        s = self.stream(decoder)
        run(s, "." * 20 + "#" * 50 + "." * 7)
        [final] = s.finish()
        self.assertEqual(len(decoder.calls), 1)
        self.assertEqual(decoder.calls[0].frames, list(range(7, 70)))
        self.assertEqual(final.speech_final if isinstance(final, Transcript) else None, True)
        self.assertEqual(s.early_used, 1)

    def test_off(self) -> None:
        decoder = FakeDecoder()
        s = WhisperStream(cast(WhisperDecoder, decoder), attrs.evolve(self.SPEC, early_decode_s=0.0), vad=LevelVAD())
        run(s, "." * 20 + "#" * 50 + "." * 14)
        self.assertEqual(decoder.calls, [])
        run(s, ".")
        self.assertEqual(len(decoder.calls), 1)
        self.assertEqual((s.early_used, s.early_wasted), (0, 0))


class LegSettingsTests(SynchronousTestCase):
    def test_each_decode_gets_the_legs_own_spec(self) -> None:
        """The model is shared by every leg; min_input_s, beam_size, tokens_per_s are the leg's, passed per decode."""
        decoder = FakeDecoder()
        spec = WhisperModel("/m", language="es", min_input_s=3.0, beam_size=2, early_decode_s=0, vad="webrtc")
        s = WhisperStream(decoder, spec, vad=LevelVAD())  # type: ignore[arg-type]
        run(s, "." * 10 + "#" * 30 + "." * 20)
        self.assertEqual(decoder.specs, [spec])


class TailPadTests(SynchronousTestCase):
    def test_silero_utterances_are_decoded_past_the_last_voiced_frame(self) -> None:
        """Silero lets go of word tails early: 5 more frames (0.1 s) go to the decoder, the times stay the VAD's."""
        decoder = FakeDecoder()
        s = WhisperStream(decoder, attrs.evolve(SPEC, vad="silero", end_silence_s=0.2), vad=LevelVAD())  # type: ignore[arg-type]
        events = run(s, "." * 5 + "#" * 20 + "." * 12)
        (call,) = decoder.calls
        self.assertEqual(frame_numbers(call.samples), list(range(0, 25)) + list(range(25, 30)))  # pre-roll, voice, pad
        (final,) = [e for _, e in events if isinstance(e, Transcript)]
        self.assertEqual(final.speech_end, 0.5)
