"""
What a listener hears in a translated call, one 20 ms frame at a time.

A listener's output has three sources, mixed by :class:`OutputMix` when the
egress clock asks for a frame:

- **speech**: translated utterances, in the order the partner spoke them,
  never overlapping (:class:`SpeechQueue`).  An utterance is created when its
  text is final, *before* MT and TTS run, so its place in the queue is fixed
  even if a later utterance's audio arrives first; TTS chunks stream into
  their own utterance and only the head of the queue is played.
- **live**: the partner's original voice, at full level while an engine is
  down (fallback ``relay``), or as a quiet bed under the translation when
  configured (conference-interpreting style).
- **filler**: comfort noise at a low level when nothing else plays, so the
  line never sounds dead (see :class:`ComfortNoise`).

Every buffer is bounded: the live buffer like the relay buffer (drop
oldest), the speech queue by its backlog in seconds (the oldest pending
utterance is dropped and reported).

All samples are 16 kHz int16 native order.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterator, Optional

import numpy as np

from xlbridge.audio.buffer import OutboundBuffer
from xlbridge.audio.frame import FRAME_SAMPLES, SAMPLE_RATE, Samples


def db_to_gain(db: float) -> float:
    """
    Amplitude factor of ``db`` decibels.
    """
    return float(10.0 ** (db / 20.0))


def apply_gain(samples: Samples, gain: float) -> Samples:
    """
    Scale with saturation (no wrap-around clicks on loud audio).
    """
    if gain == 1.0:
        return samples
    return np.clip(samples.astype(np.float32) * gain, -32768, 32767).astype(np.int16)


class Utterance:
    """
    One translated utterance on its way to the listener.

    :ivar uid: increasing number per direction.
    :ivar text: what will be spoken (the translation).
    :ivar complete: no more audio will be added.
    :ivar started_at: reactor time its first frame was read for sending.
    """

    def __init__(self, uid: int, text: str = "") -> None:
        self.uid = uid
        self.text = text
        self._data = bytearray()
        self.complete = False
        self.dropped = False
        self.received_samples = 0
        self.started_at: Optional[float] = None
        #: reactor time before which playback must not start (direction sync)
        self.not_before: Optional[float] = None
        #: a speculation not yet confirmed: it holds its place but does not
        #: start playing (:mod:`xlbridge.pipeline.speculate`)
        self.held = False
        self.on_start: Optional[Callable[["Utterance"], None]] = None
        self.on_end: Optional[Callable[["Utterance"], None]] = None
        #: Called after audio was added (its queue's ``on_audio``).
        self.notify: Optional[Callable[[], None]] = None
        #: When ``on_end`` is called: true if the frame being read right
        #: then is its last (the end is heard after that frame), false if
        #: it ended after its last frame had already gone.
        self.ends_with_frame = False

    def __len__(self) -> int:
        return len(self._data) >> 1

    def add(self, samples: Samples) -> None:
        """
        Append synthesised audio (ignored once dropped).
        """
        if not self.dropped:
            self._data += samples.tobytes()
            self.received_samples += len(samples)
            notify = self.notify
            if notify is not None:
                notify()

    def finish(self) -> None:
        """
        No more audio will come.
        """
        self.complete = True


class SpeechQueue:
    """
    Ordered, non-overlapping playout of utterances with a backlog bound.

    :param backlog_s: most seconds of pending speech (queued audio of every
        utterance not yet played); beyond it the oldest utterance is dropped.
    :param on_drop: called with each dropped utterance.

    :ivar dropped: utterances dropped for the backlog bound.
    """

    def __init__(self, backlog_s: float = 10.0, on_drop: Callable[[Utterance], None] = lambda u: None) -> None:
        self.max_samples = int(backlog_s * SAMPLE_RATE)
        self.on_drop = on_drop
        #: Called whenever audio is added to a queued utterance: a transport
        #: that sends ahead sends it at once, not at the next tick.  Set by
        #: the leg.
        self.on_audio: Optional[Callable[[], None]] = None
        #: Called when an utterance that had started playing is dropped:
        #: what was already sent of it must not play on (a transport that
        #: sent it ahead flushes).  Set by the leg.
        self.on_cut: Optional[Callable[[], None]] = None
        self._queue: deque[Utterance] = deque()
        self._waited = False
        self.dropped = 0

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self._queue)

    def __len__(self) -> int:
        return len(self._queue)

    def pending_samples(self) -> int:
        """
        Audio queued and not yet played, in samples.
        """
        return sum(len(u) for u in self._queue)

    @property
    def playing(self) -> bool:
        """
        True while an utterance has started and not finished playing.
        """
        return bool(self._queue) and self._queue[0].started_at is not None

    def add(self, utterance: Utterance) -> Utterance:
        """
        Reserve the next place in line for ``utterance``.
        """
        self._queue.append(utterance)
        utterance.notify = self._audio_added
        return utterance

    def _audio_added(self) -> None:
        hook = self.on_audio
        if hook is not None:
            hook()

    def enforce_bound(self) -> None:
        """
        Drop the oldest utterances while the backlog exceeds the bound (the
        newest one is always kept, even when it alone is longer).
        """
        while len(self._queue) > 1 and self.pending_samples() > self.max_samples:
            u = self._queue.popleft()
            started = u.started_at is not None
            u.dropped = True
            u._data.clear()
            self.dropped += 1
            self._waited = False
            self.on_drop(u)
            if started and self.on_cut is not None:
                self.on_cut()

    def withdraw(self, utterance: Utterance) -> bool:
        """
        Take ``utterance`` out of the line without a trace (a withdrawn
        speculation is not a backlog drop); whether it had started playing
        (then the listener heard it cut, as for a drop).
        """
        utterance.dropped = True
        utterance._data.clear()
        try:
            self._queue.remove(utterance)
        except ValueError:
            return False
        started = utterance.started_at is not None
        if started:
            self._waited = False
            if self.on_cut is not None:
                self.on_cut()
        return started

    def clear(self) -> None:
        for u in self._queue:
            u.dropped = True
        self._queue.clear()

    def read_frame(self, now: float, n: int = FRAME_SAMPLES) -> Optional[Samples]:
        """
        The next frame of speech, or ``None`` when there is none right now.

        Only the head utterance plays.  When it has less than a frame
        buffered but is not complete, play nothing for one tick (its next
        chunk is probably on its way), then play what there is, padded.
        """
        queue = self._queue
        nbytes = n << 1
        while queue:
            head = queue[0]
            if head.started_at is None and (head.held or (head.not_before is not None and now < head.not_before)):
                return None
            data = head._data
            have = len(data)
            if have >= nbytes:
                take = nbytes
            elif head.complete:
                if not have:
                    head.ends_with_frame = False
                    self._finish_head(head)
                    continue
                take = have
            elif have and self._waited:
                take = have
            else:
                # Head still synthesising: wait a tick for the rest of a
                # partial frame; an empty head is an underrun.
                self._waited = bool(have)
                return None
            self._waited = False
            frame = np.zeros(n, dtype=np.int16)
            frame[: take >> 1] = np.frombuffer(bytes(data[:take]), dtype=np.int16)
            del data[:take]
            if head.started_at is None:
                head.started_at = now
                if head.on_start is not None:
                    head.on_start(head)
            if head.complete and not data:
                head.ends_with_frame = True
                self._finish_head(head)
            return frame
        return None

    def _finish_head(self, head: Utterance) -> None:
        self._queue.popleft()
        if head.started_at is not None and head.on_end is not None:
            head.on_end(head)


class ComfortNoise:
    """
    Low-level noise so a listener hears the line is alive between
    translations.

    :param dbfs: level relative to full scale, e.g. -60.
    """

    def __init__(self, dbfs: float = -60.0, seed: Optional[int] = None) -> None:
        self.rms = 32768.0 * db_to_gain(dbfs)
        self._rng = np.random.default_rng(seed)
        # A 1-second bank, read with a moving offset: no per-tick RNG cost.
        bank = self._rng.normal(0.0, self.rms, SAMPLE_RATE)
        self._bank = np.clip(bank, -32768, 32767).astype(np.int16)
        self._pos = 0

    def __call__(self, n: int = FRAME_SAMPLES) -> Samples:
        start = self._pos
        end = start + n
        if end > len(self._bank):
            start, end = 0, n
        self._pos = end
        return self._bank[start:end].copy()


class OutputMix:
    """
    A listener's output: translated speech over an optional bed of the
    partner's live voice, with fallback relay and output gain.

    :param speech: the ordered speech queue.
    :param live_ms: bound of the live (original voice) buffer.
    :param bed_db: level of the live voice under translation, or ``None``
        for no bed.
    :param gain_db: output gain applied to everything but comfort noise.
    :param clock: ``seconds()`` for utterance start times.

    :ivar fallback: while true, the live voice plays at full level (an
        engine is down and the fallback is ``relay``).
    """

    def __init__(
        self,
        speech: SpeechQueue,
        clock: Callable[[], float],
        live_ms: int = 200,
        bed_db: Optional[float] = None,
        gain_db: float = 0.0,
    ) -> None:
        self.speech = speech
        self.clock = clock
        self.live = OutboundBuffer(live_ms)
        self.bed_gain = db_to_gain(bed_db) if bed_db is not None else None
        self.gain = db_to_gain(gain_db)
        self.fallback = False

    @property
    def dropped_samples(self) -> int:
        return self.live.dropped_samples

    @property
    def trimmed_samples(self) -> int:
        return self.live.trimmed_samples

    @property
    def depth_ms(self) -> float:
        return (self.speech.pending_samples() + len(self.live)) * 1000 / SAMPLE_RATE

    @property
    def ahead_samples(self) -> int:
        """
        Translated speech waiting to play (made ahead of time); the live
        voice is not counted.
        """
        return self.speech.pending_samples()

    def write(self, samples: Samples) -> int:
        """
        The partner's live voice (always offered; used for fallback or bed).
        """
        if self.fallback or self.bed_gain is not None:
            return self.live.write(samples)
        return 0

    def clear(self) -> None:
        self.speech.clear()
        self.live.clear()

    def idle(self) -> None:
        """
        The listener cannot be sent to now: their partner's live voice is
        dropped (it would only stand as delay); translated speech waits.
        """
        self.live.idle()

    def read_frame(self, n: int = FRAME_SAMPLES) -> Optional[Samples]:
        speech = self.speech.read_frame(self.clock(), n)
        live = self.live.read_frame(n) if (self.fallback or self.bed_gain is not None) else None
        if speech is None:
            if live is None:
                return None
            out = live if self.fallback else apply_gain(live, self.bed_gain or 0.0)
        elif live is None:
            out = speech
        else:
            level = 1.0 if self.fallback else (self.bed_gain or 0.0)
            mixed = speech.astype(np.int32) + (live.astype(np.float32) * level).astype(np.int32)
            out = np.clip(mixed, -32768, 32767).astype(np.int16)
        return apply_gain(out, self.gain)
