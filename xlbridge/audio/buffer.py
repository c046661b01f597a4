"""
The bounded outbound audio buffer of a leg.

Whatever a leg's partner produces (relayed voice now, translated speech
later) is written here; the egress clock reads exactly one 20 ms frame per
tick.  The buffer has a bound in samples and drops the *oldest* audio when a
write would overflow it, counting what it dropped, so the delay a listener
hears can never build up past the bound.

Samples are stored as native-order int16 bytes in a ``bytearray``: CPython
deletes from the front of a bytearray without moving the rest, so a read is
O(frame), not O(buffer).
"""

from __future__ import annotations

import numpy as np

from xlbridge.audio.frame import FRAME_SAMPLES, SAMPLE_RATE, Samples


class OutboundBuffer:
    """
    Bounded FIFO of 16 kHz int16 samples with drop-oldest overflow.

    :param max_ms: bound in milliseconds of audio.

    :ivar dropped_samples: samples discarded because the buffer was full.
    :ivar overflows: writes that caused a drop.
    """

    def __init__(self, max_ms: int = 200) -> None:
        if max_ms < 20:
            raise ValueError("outbound buffer must hold at least one 20 ms frame")
        self.max_samples = max_ms * SAMPLE_RATE // 1000
        self._data = bytearray()
        self._waited = False
        self.dropped_samples = 0
        self.overflows = 0

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

    def clear(self) -> None:
        """
        Discard everything (not counted as a drop: the call ended).
        """
        del self._data[:]
        self._waited = False

    def write(self, samples: Samples) -> int:
        """
        Append samples, dropping the oldest buffered audio if the bound would
        be exceeded.

        :return: samples dropped by this write.
        """
        data = self._data
        data += samples.tobytes()
        excess = (len(data) >> 1) - self.max_samples
        if excess > 0:
            del data[: excess << 1]
            self.dropped_samples += excess
            self.overflows += 1
            return excess
        return 0

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
            with memoryview(data) as view:  # one copy, not two
                out = np.frombuffer(view[:nbytes].tobytes(), dtype=np.int16)
            del data[:nbytes]
            self._waited = False
            return out
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
