"""
Voice activity per 20 ms frame for the Whisper stream: Silero VAD v6 (the
ONNX model faster-whisper ships, run with onnxruntime) or the WebRTC VAD
(pocketsphinx's ``Vad``).

Why Silero is the default (``bench/vad_compare.py``, BENCHMARKS.md): on 60
Allison prompts with 0.3 s of end silence it declared the end 325 ms after
the last word at the median (WebRTC mode 2: 435 ms; its own hangover keeps
a frame "voiced" ~130 ms after the voice stops), had no false starts on
line noise (WebRTC opened an utterance on the first noise of 10 of 12 noisy
lines), and was the only detector that still separated the prompts in pink
noise at -30 dBFS.  Its price: ~5 ms CPU per second of audio per caller,
and it lets go of a word's tail early, so the stream decodes
:data:`TAIL_PAD_S` past the last voiced frame.

Silero looks at 512-sample windows (32 ms at 16 kHz) with 64 samples of the
previous window as context and carries a recurrent state (h, c) from one
window to the next, so each caller has its own :class:`SileroVAD`; the ONNX
session is shared by the whole process.  A frame's decision is the
hysteresis state after the latest complete window (on at 0.5, off under
0.35): at most one window behind the frame.

Audio: 640-byte frames of int16 in native byte order.  Blocking and
CPU-bound: ASR worker processes (or pool threads) only.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Optional, Protocol

import numpy as np

from xlbridge.audio.frame import SAMPLE_RATE
from xlbridge.engines.base import EngineRequestError
from xlbridge.engines.local_asr.stream_clock import FRAME_S
from xlbridge.engines.whisper.settings import ENGINE, VADS

#: Silero's window and context, samples at 16 kHz.
WINDOW = 512
CONTEXT = 64
#: Hysteresis: voiced from this probability, unvoiced under OFF.
ON, OFF = 0.5, 0.35
#: Audio decoded past Silero's last voiced frame, seconds.
TAIL_PAD_S = 0.1


class VAD(Protocol):
    """A per-caller voice activity detector (:class:`SileroVAD`, or pocketsphinx's ``Vad``)."""

    def is_speech(self, frame: bytes) -> bool:
        """Add one 20 ms frame (640 bytes, int16 native order); whether the caller is speaking."""


_session: Optional[Any] = None
_session_lock = threading.Lock()


def silero_model_path() -> Optional[str]:
    """The Silero ONNX file shipped in faster-whisper, or ``None``."""
    try:
        from faster_whisper.utils import get_assets_path
    except ImportError:
        return None
    path = os.path.join(get_assets_path(), "silero_vad_v6.onnx")
    return path if os.path.isfile(path) else None


def silero_session() -> Any:
    """
    The process's one onnxruntime session for Silero (one thread: it runs
    beside Whisper's decodes; ~0.15 ms per window).

    :raises EngineRequestError: onnxruntime or the model file is missing.
    """
    global _session
    with _session_lock:
        if _session is not None:
            return _session
        path = silero_model_path()
        try:
            import onnxruntime as ort
        except ImportError:
            ort = None
        if path is None or ort is None:
            raise EngineRequestError(ENGINE, "Silero VAD needs faster-whisper and onnxruntime "
                                             "(pip install faster-whisper), or set [local_asr.whisper] vad = \"webrtc\"")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        _session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        return _session


class SileroVAD:
    """
    One caller's Silero state, with the same ``is_speech(frame)`` as the
    WebRTC VAD.

    :param session: default the process's shared session.
    """

    def __init__(self, session: Any = None) -> None:
        self.session = silero_session() if session is None else session
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._buf = np.zeros(0, np.float32)
        self.voiced = False
        #: The last window's speech probability.
        self.probability = 0.0

    def is_speech(self, frame: bytes) -> bool:
        """Add a 20 ms frame; whether the caller is speaking as of the latest complete window."""
        samples = np.frombuffer(frame, dtype=np.int16).astype(np.float32) / 32768.0
        self._buf = np.concatenate([self._buf, samples])
        while len(self._buf) >= WINDOW:
            window, self._buf = self._buf[:WINDOW], self._buf[WINDOW:]
            x = np.concatenate([self._context, window])[None, :]
            prob, self._h, self._c = self.session.run(None, {"input": x, "h": self._h, "c": self._c})
            self._context = window[-CONTEXT:]
            self.probability = float(np.asarray(prob).reshape(-1)[0])
            if self.probability >= ON:
                self.voiced = True
            elif self.probability < OFF:
                self.voiced = False
        return self.voiced


def make_vad(kind: str, webrtc_mode: int = 2) -> VAD:
    """A fresh per-caller detector: ``silero`` or ``webrtc`` (pocketsphinx's ``Vad`` in ``webrtc_mode``)."""
    if kind == "silero":
        return SileroVAD()
    if kind == "webrtc":
        from pocketsphinx import Vad

        return Vad(mode=webrtc_mode, sample_rate=SAMPLE_RATE, frame_length=FRAME_S)
    raise EngineRequestError(ENGINE, f"unknown VAD {kind!r} (known: {', '.join(VADS)})")


def tail_pad_frames(kind: str) -> int:
    """Frames decoded past the last voiced one: Silero lets go of word tails early."""
    return round(TAIL_PAD_S / FRAME_S) if kind == "silero" else 0
