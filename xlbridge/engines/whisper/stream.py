"""
One caller's Whisper recogniser: voice activity cuts the 20 ms frames into
utterances (:class:`Segmenter`, pure), and each utterance is decoded whole
when it ends (:class:`WhisperStream`).

A detector (:mod:`~xlbridge.engines.whisper.vad`: Silero or the WebRTC
VAD) classifies each frame; an utterance starts when 3 of the last 5 frames
are voiced (with 0.3 s of pre-roll) and ends after ``end_silence_s`` of
unvoiced frames (0.3 s by default).  Whisper then gets the utterance with
its trailing silence trimmed.  A pause inside a sentence longer than that
splits it; Whisper decodes each part on its own and the pipeline
translates them in order.  The end decision is the detector's hangover
plus ``end_silence_s``: measured 325 ms after the last word with Silero,
435 ms with WebRTC mode 2 and 480 ms with mode 0, which is what
pocketsphinx's ``Endpointer`` uses (``bench/vad_compare.py``).  Its window
logic ends on the same frame; what this segmenter adds is the pre-roll and
an earlier start.

While the caller is silent for ``early_decode_s`` (0.1 s) the utterance is
decoded already; if the silence reaches ``end_silence_s`` with no voice in
between, that result is the final, so the 0.1-0.3 s decode overlaps the
wait instead of following it.  The early result is also reported at once
as an :class:`~xlbridge.engines.base.EagerEnd`, so the pipeline can start
translating and synthesising it (held until the final confirms it:
:mod:`xlbridge.pipeline.speculate`); voice before the end withdraws it
(:class:`~xlbridge.engines.base.TurnResumed`).

Like :class:`~xlbridge.engines.pocketsphinx.asr.SphinxStream`: fed 640-byte frames
of int16 in native byte order, blocking (the decode is 0.1-0.3 s), one
task at a time, times in seconds since the stream began, events with
``received_at=0.0`` that the owner stamps.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Optional, Sequence

import numpy as np

from xlbridge.engines.base import ASREvent, EagerEnd, SpeechStarted, Transcript, TurnResumed
from xlbridge.engines.local_asr.stream_clock import FRAME_S, StreamClock
from xlbridge.engines.whisper.decode import Hypothesis, WhisperDecoder
from xlbridge.engines.whisper.settings import WhisperModel
from xlbridge.engines.whisper.vad import VAD, make_vad, tail_pad_frames

#: Frames of audio kept from before the VAD's start decision.
PREROLL_FRAMES = 15
#: Frames in the window the start decision looks at (100 ms).
START_WINDOW = 5
#: A pause at least this many frames long is a place to cut a long utterance.
MIN_CUT_PAUSE = 3


def _ms(seconds: float) -> float:
    return round(seconds, 3)


class Segmenter:
    """
    Utterance boundaries from per-frame voice decisions, without audio.

    :meth:`push` takes one frame's decision and returns what happened:
    ``("start", n)`` (the utterance begins ``n`` frames back, pre-roll
    included: the frame pushed is frame 0), ``("end", n)`` (it ended; its
    last voiced frame was ``n`` frames back) or ``("cut", n)`` (it reached
    ``max_frames``: cut ``n`` frames back, at the longest pause of its last
    third; the rest begins the next one).

    :param start_frames: voiced frames among the last :data:`START_WINDOW`
        that start an utterance.
    :param end_frames: unvoiced frames in a row that end one.
    :param max_frames: the longest utterance.
    """

    def __init__(self, start_frames: int, end_frames: int, max_frames: int, preroll: int = PREROLL_FRAMES) -> None:
        self.start_frames = start_frames
        self.end_frames = end_frames
        self.max_frames = max_frames
        self.preroll = preroll
        self.in_speech = False
        self._recent: deque[bool] = deque(maxlen=START_WINDOW)
        self._voiced: list[bool] = []  # the current utterance's decisions
        self._silence = 0
        self._before = 0  # frames seen since the last utterance ended, capped at preroll

    @property
    def silence(self) -> int:
        """Unvoiced frames in a row at the end of the current utterance (0 outside one)."""
        return self._silence if self.in_speech else 0

    def push(self, voiced: bool) -> Optional[tuple[str, int]]:
        if not self.in_speech:
            self._recent.append(voiced)
            self._before = min(self._before + 1, self.preroll + 1)
            if sum(self._recent) >= self.start_frames:
                self.in_speech = True
                back = min(self._before - 1, self.preroll)
                self._voiced = [False] * back + [voiced]
                self._silence = 0 if voiced else 1
                self._recent.clear()
                return ("start", back)
            return None
        self._voiced.append(voiced)
        self._silence = 0 if voiced else self._silence + 1
        if self._silence >= self.end_frames:
            self.in_speech = False
            self._before = self._silence
            back = self._silence
            self._voiced = []
            return ("end", back)
        if len(self._voiced) >= self.max_frames:
            cut = self._cut_point()
            back = len(self._voiced) - cut
            self._voiced = self._voiced[cut:]
            return ("cut", back)
        return None

    def _cut_point(self) -> int:
        """Index in the utterance to cut at: the middle of the longest pause in its last third, else its end."""
        best_len, best_at = 0, len(self._voiced)
        run = 0
        lo = len(self._voiced) * 2 // 3
        for i in range(lo, len(self._voiced)):
            if not self._voiced[i]:
                run += 1
                if run >= MIN_CUT_PAUSE and run > best_len:
                    best_len, best_at = run, i - run // 2
            else:
                run = 0
        return best_at

    def end_of_stream(self) -> Optional[int]:
        """The stream ended: frames back to the last voiced frame if in an utterance, else ``None``."""
        if not self.in_speech:
            return None
        self.in_speech = False
        back = self._silence
        self._voiced = []
        return back


class WhisperStream(StreamClock):
    """
    One caller's recognition state over a shared :class:`WhisperDecoder`.

    :param decoder: the process's decoder for the model.
    :param spec: the leg's settings (its ``language`` may be ``auto``).
    :param vad: the caller's detector (made from ``spec.vad`` and
        ``spec.vad_mode`` when not given).
    """

    def __init__(self, decoder: WhisperDecoder, spec: WhisperModel, vad: Optional[VAD] = None) -> None:
        if vad is None:
            vad = make_vad(spec.vad, spec.vad_mode)
        self._pad = tail_pad_frames(spec.vad)
        self.decoder = decoder
        self.spec = spec
        self.vad = vad
        self.segmenter = Segmenter(
            start_frames=max(1, min(START_WINDOW, round(spec.start_speech_s / FRAME_S))),
            end_frames=max(1, round(spec.end_silence_s / FRAME_S)),
            max_frames=max(10, round(spec.max_utterance_s / FRAME_S)),
        )
        super().__init__()
        self._recent: deque[tuple[bytes, float]] = deque(maxlen=PREROLL_FRAMES + 1)
        self._utt: list[tuple[bytes, float]] = []  # (frame, stream time at its start)
        self._next_interim = 0.0
        self._interim_text = ""
        self._early_frames = round(spec.early_decode_s / FRAME_S) if spec.early_decode_s > 0 else 0
        self._early: Optional[tuple[int, Hypothesis]] = None  # (frames decoded, result)
        #: Decodes done, their seconds, and hypotheses cut for repeating.
        self.decodes = 0
        self.decode_s = 0.0
        self.repeats_cut = 0
        #: Early decodes that became the final, and those thrown away because speech resumed.
        self.early_used = 0
        self.early_wasted = 0

    def feed(self, frame: bytes) -> list[ASREvent]:
        """Process one 20 ms frame; the events it caused, oldest first (a final blocks for its decode)."""
        self.check_frame(frame)
        at = self.position
        self.frames += 1
        voiced = bool(self.vad.is_speech(frame))
        self._recent.append((frame, at))
        decision = self.segmenter.push(voiced)
        events: list[ASREvent] = []
        if self.segmenter.in_speech and decision is None:
            self._utt.append((frame, at))
        if decision is None:
            if not self.segmenter.in_speech:
                return events
            if voiced and self._early is not None:
                self._early = None  # the pause was not the end
                self.early_wasted += 1
                events.append(TurnResumed(0.0))
            if not voiced and self._early_frames and self.segmenter.silence == self._early_frames < self.segmenter.end_frames:
                # The tail pad is what has arrived by now (at most the pad): the
                # result is used if no voice follows, whatever the rest of the pad holds.
                voiced_frames = len(self._utt) - self.segmenter.silence
                hyp = self._decode(self._utt[:voiced_frames + self._pad])
                self._early = (voiced_frames, hyp)
                if hyp.text:
                    start, speech_end = self._utt[0][1], self._utt[voiced_frames - 1][1] + FRAME_S
                    events.append(EagerEnd(Transcript(
                        hyp.text, False, False, _ms(start), _ms(self.position), 0.0,
                        confidence=float(np.exp(hyp.avg_logprob)), speech_end=_ms(speech_end), language=hyp.language,
                    )))
            elif voiced and self.spec.interim_interval_s > 0 and self.position >= self._next_interim:
                self._next_interim = self.position + self.spec.interim_interval_s
                events.extend(self._interim())
            return events
        kind, back = decision
        early, self._early = self._early, None
        if early is not None and kind != "end":
            self.early_wasted += 1
            events.append(TurnResumed(0.0))
        if kind == "start":
            self._utt = list(self._recent)[-(back + 1):]
            self._next_interim = self.position + self.spec.interim_interval_s
            self._interim_text = ""
            events.append(SpeechStarted(_ms(self._utt[0][1]), 0.0))
        elif kind == "end":
            self._utt.append((frame, at))
            events.extend(self._final(len(self._utt) - back, speech_final=True, early=early))
            self._utt = []
        else:  # cut
            self._utt.append((frame, at))
            keep = self._utt[len(self._utt) - back:]
            events.extend(self._final(len(self._utt) - back, speech_final=False, end=keep[0][1] if keep else None))
            self._utt = keep
            self._interim_text = ""
        return events

    def finish(self, tail: bytes = b"") -> list[ASREvent]:
        """End of stream: decode an utterance still open (``tail``, under one frame, is only counted)."""
        if self.finished:
            return []
        self.finished = True
        self.tail_samples = len(tail) // 2
        back = self.segmenter.end_of_stream()
        early, self._early = self._early, None
        if back is None or not self._utt:
            return []
        events = self._final(len(self._utt) - back, speech_final=True, early=early)
        self._utt = []
        return events

    # -- internals ---------------------------------------------------------

    def _decode(self, frames: Sequence[tuple[bytes, float]]) -> Hypothesis:
        samples = np.frombuffer(b"".join(f for f, _ in frames), dtype=np.int16)
        t0 = time.perf_counter()
        hyp = self.decoder.decode(samples, self.spec.language or "en", self.spec.languages, self.spec)
        self.decodes += 1
        self.decode_s += time.perf_counter() - t0
        self.repeats_cut += int(hyp.repeated)
        return hyp

    def _interim(self) -> list[ASREvent]:
        hyp = self._decode(self._utt)
        if not hyp.text or hyp.text == self._interim_text:
            return []
        self._interim_text = hyp.text
        return [Transcript(hyp.text, False, False, _ms(self._utt[0][1]), _ms(self.position), 0.0,
                           confidence=float(np.exp(hyp.avg_logprob)), language=hyp.language)]

    def _final(self, voiced_frames: int, speech_final: bool, early: Optional[tuple[int, Hypothesis]] = None,
               end: Optional[float] = None) -> list[ASREvent]:
        """
        Decode the utterance's first ``voiced_frames`` frames (its trailing
        silence left out), or take ``early``'s result if it decoded exactly
        those.  ``end`` is where the span ends (default: now; a cut ends
        where the next part begins).
        """
        voiced = self._utt[:max(1, voiced_frames)]
        start = self._utt[0][1]
        speech_end = voiced[-1][1] + FRAME_S
        end = self.position if end is None else end
        if early is not None and early[0] == len(voiced):
            self.early_used += 1
            hyp = early[1]
        else:
            if early is not None:
                self.early_wasted += 1
            hyp = self._decode(self._utt[:len(voiced) + self._pad])
        had_interim = bool(self._interim_text)
        self._interim_text = ""
        if not hyp.text and not had_interim:
            return []  # a cough or a click: nothing was shown, nothing to retract
        return [Transcript(hyp.text, True, speech_final, _ms(start), _ms(end), 0.0,
                           confidence=float(np.exp(hyp.avg_logprob)), speech_end=_ms(speech_end),
                           language=hyp.language)]
