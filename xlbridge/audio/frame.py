"""
The one internal audio format of xlbridge.

Inside the bridge every sample is 16 kHz, mono, signed 16-bit in the machine's
native byte order, held in a one-dimensional ``numpy.ndarray`` of dtype
``int16``.  Wire formats (big-endian slin, little-endian AudioSocket, G.711,
G.722) are converted exactly once, at the edge, by :mod:`xlbridge.audio.codecs`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Internal sample rate, in Hz.
SAMPLE_RATE = 16000

#: Length of one packet / egress tick, in milliseconds.
FRAME_MS = 20

#: Samples in one 20 ms frame at :data:`SAMPLE_RATE` (320).
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000

#: Type alias for a block of internal audio.
Samples = npt.NDArray[np.int16]


def silence(n: int = FRAME_SAMPLES) -> Samples:
    """
    Return ``n`` samples of digital silence (zeros), a fresh array each call.
    """
    return np.zeros(n, dtype=np.int16)


def as_samples(data: object) -> Samples:
    """
    Coerce ``data`` (an int16 ndarray, ``array('h')`` or a sequence of ints)
    to a contiguous native-order int16 ndarray without copying when possible.
    """
    return np.ascontiguousarray(data, dtype=np.int16)
