"""
Stream time for the local recognisers (pocketsphinx, Vosk, Whisper), which
are all fed the same 20 ms frames: 640 bytes of 16 kHz int16 in native
byte order.

A stream's time is the frames fed plus the frames the owner dropped before
they got here (:meth:`StreamClock.skip`), 20 ms each, plus the last partial
frame given at the end: so event times stay true to the caller's audio
even when a busy leg sheds frames.
"""

from __future__ import annotations

from xlbridge.audio.frame import FRAME_SAMPLES, SAMPLE_RATE

#: Bytes in one frame: 320 int16 samples, native byte order.
FRAME_BYTES = FRAME_SAMPLES * 2

#: Seconds in one frame.
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE


class StreamClock:
    """
    The frame bookkeeping a recogniser stream shares: ``frames`` fed,
    ``skipped`` upstream, whether it is ``finished``, and ``tail_samples``:
    the samples of the partial last frame the stream ended with.  The
    recogniser subclassing it counts ``frames``, sets ``finished`` and
    ``tail_samples``, and calls :meth:`check_frame` before feeding.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.skipped = 0
        self.finished = False
        self.tail_samples = 0

    @property
    def position(self) -> float:
        """Seconds of stream audio accounted for (fed + skipped)."""
        return (self.frames + self.skipped) * FRAME_S + self.tail_samples / SAMPLE_RATE

    def skip(self, frames: int) -> None:
        """``frames`` 20 ms frames were dropped upstream: keep the clock true."""
        self.skipped += frames

    def check_frame(self, frame: bytes) -> None:
        """:class:`ValueError` unless ``frame`` may be fed now (stream open, :data:`FRAME_BYTES` long)."""
        if self.finished:
            raise ValueError("stream already finished")
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"frames must be {FRAME_BYTES} bytes, got {len(frame)}")
