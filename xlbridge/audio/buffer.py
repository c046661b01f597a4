"""
The bounded outbound audio buffer of a leg.

Whatever a leg's partner produces (relayed voice now, translated speech
later) is written here; the egress clock reads exactly one 20 ms frame per
tick.  The buffer has a bound in samples and drops the *oldest* audio when a
write would overflow it, counting what it dropped, so the delay a listener
hears can never build up past the bound.

A bound alone still lets a *standing* delay form: audio written while
nobody reads (the listener's transport not connected yet), or a burst after
a network stall, fills the buffer, and from then on one frame goes in and
one comes out per 20 ms, so the backlog never drains and the listener hears
everything that much later for the rest of the call.  Two rules keep the
delay at what the pacing itself needs:

- :meth:`OutboundBuffer.idle`: while the listener's transport cannot send,
  the leg empties the buffer every tick (what nobody can hear is dropped,
  and counted), so the first frame sent is the newest audio;
- :meth:`OutboundBuffer.read_frame` watches the smallest depth over each
  window of ``STANDING_WINDOW`` reads: if even the smallest was more than
  ``STANDING_SLACK`` frames, that much audio was waiting all along, and the
  oldest of it is dropped (counted in :attr:`OutboundBuffer.trimmed_samples`)
  down to one frame.  Arrival jitter makes the depth swing, but its minimum
  returns to about one frame; only a real backlog is cut.

Samples are stored as native-order int16 bytes in a ``bytearray``: CPython
deletes from the front of a bytearray without moving the rest, so a read is
O(frame), not O(buffer).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from xlbridge.audio.frame import FRAME_SAMPLES, SAMPLE_RATE, Samples

#: Reads per window of the standing-delay check (25 x 20 ms = 0.5 s).
STANDING_WINDOW = 25
#: Frames the smallest depth of a window may exceed one frame by before
#: the excess is dropped (1: a frame of arrival jitter is left alone).
STANDING_SLACK = 1


class OutboundBuffer:
    """
    Bounded FIFO of 16 kHz int16 samples with drop-oldest overflow.

    :param max_ms: bound in milliseconds of audio.

    :ivar dropped_samples: samples discarded: the buffer was full, nobody
        could hear them (:meth:`idle`), or they stood waiting (trimmed).
    :ivar overflows: writes that caused a drop.
    :ivar trimmed_samples: of those, samples dropped because a backlog
        stood in the buffer for a whole window (see the module notes).
    :ivar idle_samples: of those, samples dropped by :meth:`idle`.
    """

    def __init__(self, max_ms: int = 200) -> None:
        if max_ms < 20:
            raise ValueError("outbound buffer must hold at least one 20 ms frame")
        self.max_samples = max_ms * SAMPLE_RATE // 1000
        self._data = bytearray()
        self._waited = False
        self.dropped_samples = 0
        self.overflows = 0
        self.trimmed_samples = 0
        self.idle_samples = 0
        self._reads = 0
        self._least = -1
        #: Called after each write (a transport that sends ahead sends the
        #: audio at once, not at the next tick); set by the leg.
        self.on_write: Optional[Callable[[], None]] = None

    def __len__(self) -> int:
        """
        Buffered samples.
        """
        return len(self._data) >> 1

    @property
    def depth_ms(self) -> float:
        """
        Buffered audio in milliseconds.
        """
        return len(self) * 1000 / SAMPLE_RATE

    @property
    def ahead_samples(self) -> int:
        """
        None of this is made ahead of time: it is live audio (see
        :meth:`xlbridge.call.playout.OutputSource.ahead_samples`).
        """
        return 0

    def clear(self) -> None:
        """
        Discard everything (not counted as a drop: the call ended).
        """
        del self._data[:]
        self._waited = False
        self._reads = 0
        self._least = -1

    def idle(self) -> None:
        """
        Nobody can hear this buffer now (the listener's transport cannot
        send): drop what it holds, counted, so no backlog waits for them.
        """
        dropped = len(self._data) >> 1
        if dropped:
            del self._data[:]
            self.dropped_samples += dropped
            self.idle_samples += dropped
        self._waited = False
        self._reads = 0
        self._least = -1

    def write(self, samples: Samples) -> int:
        """
        Append samples, dropping the oldest buffered audio if the bound would
        be exceeded.

        :return: samples dropped by this write.
        """
        data = self._data
        data += samples.tobytes()
        excess = (len(data) >> 1) - self.max_samples
        dropped = 0
        if excess > 0:
            del data[: excess << 1]
            self.dropped_samples += excess
            self.overflows += 1
            dropped = excess
        hook = self.on_write
        if hook is not None:
            hook()
        return dropped

    def read_frame(self, n: int = FRAME_SAMPLES) -> Samples | None:
        """
        Take the next ``n`` samples, or ``None`` if there is nothing to play.

        A partial frame (fewer than ``n`` samples) is held back for one tick
        in case the rest is on its way, then played padded with silence, so
        the tail of a stream is never stuck.
        """
        data = self._data
        nbytes = n << 1
        have = len(data)
        if have >= nbytes:
            least = self._least
            if least < 0 or have < least:
                self._least = least = have
            self._reads += 1
            if self._reads >= STANDING_WINDOW:
                self._reads = 0
                self._least = -1
                if least > (1 + STANDING_SLACK) * nbytes:
                    # A backlog stood here for the whole window: cut it
                    # to one frame (whole samples, oldest first).
                    excess = least - nbytes
                    del data[:excess]
                    self.dropped_samples += excess >> 1
                    self.trimmed_samples += excess >> 1
                    have = len(data)
            with memoryview(data) as view:  # one copy, not two
                out = np.frombuffer(view[:nbytes].tobytes(), dtype=np.int16)
            del data[:nbytes]
            self._waited = False
            return out
        # An empty or short buffer: the window starts again, so a gap in
        # the stream never counts towards a backlog.
        self._reads = 0
        self._least = -1
        if have == 0:
            self._waited = False
            return None
        if not self._waited:
            self._waited = True
            return None
        frame = np.zeros(n, dtype=np.int16)
        frame[: have >> 1] = np.frombuffer(bytes(data), dtype=np.int16)
        del data[:]
        self._waited = False
        return frame
