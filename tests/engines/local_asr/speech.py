"""
Real speech for the local recogniser tests: Asterisk's "Allison" prompts
(16 kHz G.722 from Debian's ``asterisk-core-sounds-en-g722``) with lead-in
silence as on a phone line, cut into 20 ms frames; one module-wide
pocketsphinx :class:`DecoderPool`, so the ~300 ms model load is paid
about once per test process; and a pool that lends a decoder which
crashes.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional

import numpy as np

from xlbridge.audio.codecs import get_codec, make_decoder
from xlbridge.audio.frame import Samples
from xlbridge.engines.base import Transcript
from xlbridge.engines.local_asr.stream_clock import FRAME_BYTES
from xlbridge.engines.pocketsphinx.asr import DecoderPool, SphinxModel

SOUNDS = "/usr/share/asterisk/sounds/en_US_f_Allison"
RATE = 16000
#: Silence before the first clip and after each one, seconds.
LEAD_S = 0.5
TRAIL_S = 1.0


def _missing() -> Optional[str]:
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:  # pragma: no cover
        return "pocketsphinx is not installed"
    return None if os.path.isdir(SOUNDS) else "asterisk-core-sounds-en-g722 is not installed"


#: Why the tests on real speech cannot run here (a ``skip`` value), or ``None``.
SPEECH_MISSING = _missing()

#: Shared by every test on real speech: one model load serves them all.
DECODERS = DecoderPool()
BUNDLED = SphinxModel()


def prompt(name: str) -> Samples:
    """A prompt decoded to 16 kHz int16."""
    with open(os.path.join(SOUNDS, name + ".g722"), "rb") as f:
        return make_decoder(get_codec("g722")).decode(f.read())


def speech_bounds(x: Samples) -> tuple[float, float]:
    """First and last 20 ms frame within 40 dB of the loudest, in seconds."""
    n = len(x) // 320
    frames = x[: n * 320].reshape(n, 320).astype(np.float64)
    db = 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) + 1e-9)
    active = np.nonzero(db > db.max() - 40)[0]
    return active[0] * 0.02, (active[-1] + 1) * 0.02


def with_silence(*clips: Samples, lead: float = LEAD_S, gap: float = TRAIL_S) -> Samples:
    """``lead`` seconds of silence, then each clip followed by ``gap`` seconds of silence."""
    parts = [np.zeros(int(lead * RATE), np.int16)]
    for c in clips:
        parts += [c, np.zeros(int(gap * RATE), np.int16)]
    return np.concatenate(parts)


def frames_of(x: Samples) -> list[bytes]:
    """The whole 640-byte frames of ``x`` (native byte order)."""
    data = x.tobytes()
    return [data[i:i + FRAME_BYTES] for i in range(0, len(data) - FRAME_BYTES + 1, FRAME_BYTES)]


def transcripts(events: Iterable[Any]) -> list[Transcript]:
    return [e for e in events if isinstance(e, Transcript)]


class CrashingDecoder:
    """A pocketsphinx decoder stand-in that raises as soon as it is given speech."""

    config = {"frate": 100}

    def start_utt(self) -> None:
        pass

    def process_raw(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")


class FlakyPool(DecoderPool):
    """Lends one :class:`CrashingDecoder`, then real decoders from ``inner``."""

    def __init__(self, inner: DecoderPool) -> None:
        super().__init__()
        self.inner = inner
        self.bad = 1

    def acquire(self, spec: SphinxModel) -> Any:
        if self.bad:
            self.bad -= 1
            return CrashingDecoder()
        return self.inner.acquire(spec)

    def release(self, spec: SphinxModel, decoder: Any, max_idle: int) -> None:
        self.inner.release(spec, decoder, max_idle)
