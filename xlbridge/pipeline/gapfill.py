"""
Silence for the recogniser when a caller's audio stops arriving.

Asterisk sends nothing while a channel has no audio to send: a Local
channel waiting in the dialplan, a phone with voice activity detection or
DTX, a caller on hold.  A recogniser only finds the end of an utterance in
the silence after it (the local endpointer counts quiet 20 ms frames;
Deepgram's endpointing measures trailing silence in the audio), so without
that silence the last sentence before a pause is never finalised, never
translated, never heard (seen against Asterisk 22: interim captions, no
final, until the call ended).

:class:`GapFiller` watches one direction's inbound audio; once nothing has
arrived for :data:`GAP_S` it feeds digital silence, in 20 ms frames and in
real time, to the recogniser only (never to the partner), up to
:data:`FILL_MAX_S` seconds after the last real audio: enough for any
endpointer, and a silent caller costs no work after that.  One timer per
direction, checking every :data:`CHECK_S` while audio is missing; none per
packet.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from xlbridge.audio.frame import FRAME_SAMPLES, SAMPLE_RATE, Samples

#: Seconds without inbound audio before silence is fed.
GAP_S = 0.1
#: Seconds of silence fed after the last real audio, at most.
FILL_MAX_S = 1.5
#: Seconds between checks while audio is missing.
CHECK_S = 0.1

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE


class GapFiller:
    """
    :param clock: schedules the checks and says the time.
    :param feed: gives samples to the recogniser.
    :param note: records ``(samples, now)`` in the direction's timeline, so
        stream time and wall time stay in step.

    :ivar filled_frames: 20 ms silence frames fed so far.
    """

    def __init__(
        self, clock: IReactorTime, feed: Callable[[Samples], None], note: Callable[[int, float], None]
    ) -> None:
        self.clock = clock
        self.feed = feed
        self.note = note
        self.filled_frames = 0
        self._last: Optional[float] = None
        self._fed_until = 0.0
        self._timer: Optional[IDelayedCall] = None
        self._stopped = False
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def audio(self, now: float, samples: int) -> None:
        """
        Real audio (``samples`` of it) arrived at ``now``.
        """
        self._last = now
        self._fed_until = now
        if self._timer is None and not self._stopped:
            self._timer = self.clock.callLater(CHECK_S, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._stopped or self._last is None:
            return
        now = self.clock.seconds()
        if now - self._last < GAP_S:
            self._timer = self.clock.callLater(CHECK_S, self._check)
            return
        limit = min(now, self._last + FILL_MAX_S)
        while self._fed_until + FRAME_S <= limit + 1e-9:
            self._fed_until += FRAME_S
            self.note(FRAME_SAMPLES, self._fed_until)
            self.filled_frames += 1
            self.feed(self._silence)
        if self._fed_until + FRAME_S <= self._last + FILL_MAX_S + 1e-9:
            self._timer = self.clock.callLater(CHECK_S, self._check)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
