"""
pocketsphinx for :mod:`xlbridge.engines.local_asr`: the model spec, the
(slow, blocking) decoder loader, the process-wide :class:`DecoderPool`, the
:class:`Reframer` that cuts audio into endpointer frames, and
:class:`SphinxStream`, the sans-I/O recogniser for one caller.

Design notes
------------

* **Frames.**  The ``Endpointer`` takes exactly
  :data:`~xlbridge.engines.local_asr.stream_clock.FRAME_BYTES` (640 bytes =
  320 samples = 20 ms at 16 kHz) of int16 in the machine's native byte
  order, which is also what ``Decoder.process_raw`` reads; callers cut
  their chunks with :class:`Reframer`.
* **Threads and the GIL.**  Everything here blocks: it runs in an ASR
  worker process (:mod:`~xlbridge.engines.local_asr.worker`, the default) or in
  the engine thread pool, never on the reactor.  Measured with pocketsphinx
  5.1.1: ``process_raw`` does *not* release the GIL (0.8 s of audio in one
  call stalled another thread for 0.8 s), so in a thread the reactor waits
  for the decoder; :meth:`SphinxStream.feed` therefore takes one 20 ms
  frame per call, so that wait is at most one frame's decode (median
  ~1.5 ms) plus the interpreter's switch interval, never a whole backlog.
  ``end_utt`` (10-50 ms with ``fwdflat=False``) holds it too: one stall of
  that size per utterance.  Hence the worker processes.
* **Timing.**  All times are seconds since the leg's stream began: frames
  fed plus frames the caller dropped (:meth:`SphinxStream.skip`), 20 ms
  each.  The endpointer hands speech on ~``window`` late and declares the
  end ~0.28 s after its own ``speech_end``, which itself trails the real end
  of speech by ~0.15-0.2 s (its hangover).  The decoder's word alignment
  (``Decoder.seg()``) came within -0.12..+0.05 s of the energy-measured end
  on the Allison prompts, so a final's ``speech_end`` is the end of the last
  real word, clamped to the endpointer's ``speech_end`` (also the fallback
  when no word was aligned); ``end`` is the endpointer's ``speech_end``.
* **Interims.**  ``Decoder.hyp()`` after a frame gives the partial
  hypothesis; it is read at most every ``interim_interval_s`` of audio and
  emitted only when its text changed.
* **Events** are :class:`~xlbridge.engines.base.Transcript` and
  :class:`~xlbridge.engines.base.SpeechStarted` with ``received_at=0.0``:
  this code runs off the reactor and has no clock; the owner stamps the
  reactor time when it delivers them.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Mapping, Optional

import attrs
import numpy as np

from xlbridge.audio.frame import SAMPLE_RATE, Samples
from xlbridge.config_values import config_path
from xlbridge.engines.base import ASREvent, EngineRequestError, SpeechStarted, Transcript
from xlbridge.engines.local_asr import ENGINE
from xlbridge.engines.local_asr.stream_clock import FRAME_BYTES, FRAME_S, StreamClock
from xlbridge.engines.options import unknown_setting
from xlbridge.errors import ConfigError


@attrs.frozen
class SphinxModel:
    """
    Where a pocketsphinx model lives; all ``None`` means the en-US model
    bundled with the PyPI wheel.

    :ivar hmm: acoustic model directory.
    :ivar lm: n-gram language model file (``.lm.bin`` or ARPA).
    :ivar jsgf: JSGF grammar file, instead of ``lm``.
    :ivar dictionary: pronunciation dictionary (TOML key ``dict``).
    """

    hmm: Optional[str] = None
    lm: Optional[str] = None
    jsgf: Optional[str] = None
    dictionary: Optional[str] = None

    engine = "pocketsphinx"

    @property
    def bundled(self) -> bool:
        """Whether this is the wheel's own en-US model."""
        return self.hmm is None and self.lm is None and self.jsgf is None and self.dictionary is None

    @classmethod
    def from_table(cls, key: str, table: Mapping[str, Any]) -> "SphinxModel":
        """
        ``[local_asr.models.<lang>]`` with ``hmm``, ``dict`` and one of
        ``lm``/``jsgf``.

        :raises ConfigError: naming the bad key under ``key``.
        """
        for k in table:
            if k not in ("engine", "hmm", "lm", "jsgf", "dict"):
                raise unknown_setting(key, k, ("engine", "hmm", "lm", "jsgf", "dict"))
        for k in ("hmm", "dict"):
            if k not in table:
                raise ConfigError("config", f"{key}.{k}: required for a pocketsphinx model")
        if ("lm" in table) == ("jsgf" in table):
            raise ConfigError("config", f"{key}.lm: give exactly one of lm or jsgf")
        return cls(
            hmm=config_path(f"{key}.hmm", table["hmm"]),
            lm=config_path(f"{key}.lm", table["lm"]) if "lm" in table else None,
            jsgf=config_path(f"{key}.jsgf", table["jsgf"]) if "jsgf" in table else None,
            dictionary=config_path(f"{key}.dict", table["dict"]),
        )

    def describe(self) -> str:
        """For log lines and error messages."""
        if self.bundled:
            return "pocketsphinx (bundled en-US)"
        return f"pocketsphinx hmm={self.hmm} {'jsgf' if self.jsgf else 'lm'}={self.jsgf or self.lm} dict={self.dictionary}"



def check_sphinx_model(spec: SphinxModel) -> Optional[str]:
    """
    Why ``spec`` cannot be loaded (pocketsphinx missing, a path that does
    not exist), or ``None`` if it looks loadable.  Cheap: no model is read.
    """
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return "pocketsphinx is not installed (pip install pocketsphinx)"
    checks = (("hmm", spec.hmm, os.path.isdir), ("lm", spec.lm, os.path.isfile),
              ("jsgf", spec.jsgf, os.path.isfile), ("dict", spec.dictionary, os.path.isfile))
    for key, path, ok in checks:
        if path is not None and not ok(path):
            kind = "directory" if key == "hmm" else "file"
            return f"pocketsphinx {key} {path!r} is not a {kind}"
    return None


def load_sphinx_decoder(spec: SphinxModel) -> Any:
    """
    Load a ``pocketsphinx.Decoder`` for 16 kHz audio (~270-330 ms for the
    bundled model; call from a worker process or thread).  ``fwdflat=False`` keeps
    ``end_utt`` at 10-36 ms instead of 130-1200 ms with the same results.

    :raises EngineRequestError: the model is missing or pocketsphinx
        refused it; retrying will not help.
    """
    problem = check_sphinx_model(spec)
    if problem is not None:
        raise EngineRequestError(ENGINE, problem)
    from pocketsphinx import Decoder

    kwargs: dict[str, Any] = {"samprate": SAMPLE_RATE, "loglevel": "FATAL", "fwdflat": False}
    if spec.hmm is not None:
        kwargs["hmm"] = spec.hmm
    if spec.lm is not None:
        kwargs["lm"] = spec.lm
    if spec.jsgf is not None:
        kwargs["jsgf"] = spec.jsgf
    if spec.dictionary is not None:
        kwargs["dict"] = spec.dictionary
    try:
        return Decoder(**kwargs)
    except Exception as e:
        raise EngineRequestError(ENGINE, f"pocketsphinx could not load {spec.describe()}: {e}") from None


class DecoderPool:
    """
    Idle pocketsphinx decoders per model, for the whole process.

    A ``Decoder`` holds one stream's state, so it cannot serve two calls at
    once, but loading one costs ~330 ms and ~40 MB: a call borrows one
    (:meth:`acquire`) and gives it back when its stream ended
    (:meth:`release`).  Thread-safe: used from pool threads.

    Reuse also helps accuracy: the decoder's live cepstral mean settles on
    the line's sound over the first sentence; a fresh decoder heard a lone
    "good bye" as "didn't i", one that had decoded a sentence got it right.

    :ivar loads: decoders loaded.
    :ivar reuses: decoders lent out again instead of loaded.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[SphinxModel, list[Any]] = {}
        self.loads = 0
        self.reuses = 0

    def acquire(self, spec: SphinxModel) -> Any:
        """
        An idle decoder for ``spec``, or a new one (blocks while loading:
        worker processes or threads only).

        :raises EngineRequestError: the model cannot load.
        """
        with self._lock:
            idle = self._idle.get(spec)
            if idle:
                self.reuses += 1
                return idle.pop()
        decoder = load_sphinx_decoder(spec)  # outside the lock: other legs keep borrowing
        with self._lock:
            self.loads += 1
        return decoder

    def release(self, spec: SphinxModel, decoder: Any, max_idle: int) -> None:
        """Take back a decoder that is out of any utterance; keep at most ``max_idle``."""
        with self._lock:
            idle = self._idle.setdefault(spec, [])
            if len(idle) < max_idle:
                idle.append(decoder)

    def idle(self, spec: SphinxModel) -> int:
        """Idle decoders held for ``spec``."""
        with self._lock:
            return len(self._idle.get(spec, ()))


#: The process-wide pool used unless one is injected.
DECODERS = DecoderPool()


class Reframer:
    """
    Cuts arbitrary chunks of int16 samples into 640-byte frames
    (:data:`~xlbridge.engines.local_asr.stream_clock.FRAME_BYTES`: 320
    samples, 20 ms), native byte order, as the ``Endpointer`` insists.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def push(self, samples: Samples) -> list[bytes]:
        """Whole frames now available, oldest first; the rest is kept."""
        self._buf += np.ascontiguousarray(samples, dtype=np.int16).tobytes()
        n = len(self._buf) // FRAME_BYTES * FRAME_BYTES
        out = [bytes(self._buf[i:i + FRAME_BYTES]) for i in range(0, n, FRAME_BYTES)]
        del self._buf[:n]
        return out

    def tail(self) -> bytes:
        """The incomplete last frame (under 640 bytes), taken out."""
        rest, self._buf = bytes(self._buf), bytearray()
        return rest


def _ms(seconds: float) -> float:
    """Round stream seconds to the millisecond (frame sums drift by 1e-15)."""
    return round(seconds, 3)


def _is_word(w: str) -> bool:
    """Real words, not ``<s>``, ``</s>``, ``<sil>``, ``[NOISE]``, ``++UH++``."""
    return bool(w) and w[0] not in "<[+"


class SphinxStream(StreamClock):
    """
    One caller's recognition state: an ``Endpointer`` (per stream, cheap)
    over a ``Decoder`` (expensive, borrowed from the process pool).

    Not thread-safe: the owner calls it from one task at a time.

    :param decoder: a ``pocketsphinx.Decoder`` not in an utterance.
    :param window_s: endpointer decision window, seconds.
    :param ratio: fraction of the window that must agree to switch.
    :param vad_mode: 0 (loose) to 3 (strict).
    :param interim_interval_s: least audio between partial-hypothesis reads.
    :param max_utterance_s: a longer utterance is cut (final with
        ``speech_final=False``) so a talker who never pauses still gets
        translated; the decoder continues with a fresh utterance.
    """

    def __init__(
        self,
        decoder: Any,
        *,
        window_s: float = 0.3,
        ratio: float = 0.9,
        vad_mode: int = 0,
        interim_interval_s: float = 0.2,
        max_utterance_s: float = 20.0,
    ) -> None:
        from pocketsphinx import Endpointer

        self.decoder = decoder
        self.endpointer = Endpointer(window=window_s, ratio=ratio, vad_mode=vad_mode,
                                     sample_rate=SAMPLE_RATE, frame_length=FRAME_S)
        if self.endpointer.frame_bytes != FRAME_BYTES:
            raise EngineRequestError(ENGINE, f"endpointer wants {self.endpointer.frame_bytes}-byte frames")
        self.interim_interval_s = interim_interval_s
        self.max_utterance_s = max_utterance_s
        try:
            self.frate = int(decoder.config["frate"])
        except Exception:
            self.frate = 100
        super().__init__()
        self.in_utterance = False
        self._origin = 0.0  # stream time of the decoder's first frame in this utterance
        self._origin_skipped = 0
        self._utt_start = 0.0
        self._dec_samples = 0
        self._interim_text = ""
        self._interims = 0
        self._next_interim = 0.0

    def feed(self, frame: bytes) -> list[ASREvent]:
        """
        Process one 20 ms frame (640 bytes, int16 native order); return the
        events it caused, oldest first.
        """
        self.check_frame(frame)
        speech = self.endpointer.process(frame)
        self.frames += 1
        if speech is None:
            return []
        return self._speech(speech, ended=not self.endpointer.in_speech)

    def finish(self, tail: bytes = b"") -> list[ASREvent]:
        """
        End of stream: flush the endpointer with ``tail`` (under one frame),
        end any utterance and return the last events.  The decoder is then
        idle and may go back to the pool.
        """
        if self.finished:
            return []
        self.finished = True
        tail = tail[: len(tail) // 2 * 2][:FRAME_BYTES]
        events: list[ASREvent] = []
        self.tail_samples = len(tail) // 2
        if self.endpointer.in_speech:
            speech = self.endpointer.end_stream(tail)
            if speech:
                events.extend(self._speech(speech, ended=True))
        if self.in_utterance:
            events.extend(self._end_utterance(speech_final=True))
        return events

    # -- internals ---------------------------------------------------------

    def _stream_time(self, ep_seconds: float) -> float:
        """Endpointer seconds (frames it saw) -> stream seconds."""
        return ep_seconds + self.skipped * FRAME_S

    def _speech(self, speech: bytes, ended: bool) -> list[ASREvent]:
        events: list[ASREvent] = []
        if not self.in_utterance:
            self._begin(self._stream_time(self.endpointer.speech_start))
            events.append(SpeechStarted(_ms(self._utt_start), 0.0))
        self.decoder.process_raw(speech, full_utt=False)
        self._dec_samples += len(speech) // 2
        if ended:
            events.extend(self._end_utterance(speech_final=True))
            return events
        if self.position - self._utt_start >= self.max_utterance_s:
            events.extend(self._end_utterance(speech_final=False))
            self._begin(self._decoder_time())
            return events
        if self.position >= self._next_interim:
            self._next_interim = self.position + self.interim_interval_s
            hyp = self.decoder.hyp()
            text = hyp.hypstr.strip() if hyp is not None else ""
            if text and text != self._interim_text:
                self._interim_text = text
                self._interims += 1
                events.append(Transcript(text, False, False, _ms(self._utt_start), _ms(self._decoder_time()), 0.0))
        return events

    def _begin(self, start: float) -> None:
        self.decoder.start_utt()
        self.in_utterance = True
        self._origin = start
        self._origin_skipped = self.skipped
        self._utt_start = start
        self._dec_samples = 0
        self._interim_text = ""
        self._interims = 0
        self._next_interim = self.position + self.interim_interval_s

    def _decoder_time(self) -> float:
        """Stream time of the end of the audio the decoder has heard."""
        gap = (self.skipped - self._origin_skipped) * FRAME_S
        return self._origin + self._dec_samples / SAMPLE_RATE + gap

    def _last_word_end(self) -> Optional[float]:
        last = None
        for seg in self.decoder.seg():
            if _is_word(seg.word):
                last = seg.end_frame
        if last is None:
            return None
        gap = (self.skipped - self._origin_skipped) * FRAME_S
        return self._origin + (last + 1) / self.frate + gap

    def _end_utterance(self, speech_final: bool) -> list[ASREvent]:
        self.decoder.end_utt()
        self.in_utterance = False
        hyp = self.decoder.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        if speech_final:
            end = min(self._stream_time(self.endpointer.speech_end), self._decoder_time())
        else:
            end = self._decoder_time()
        word_end = self._last_word_end()
        speech_end = end if word_end is None else min(word_end, end)
        start = self._utt_start
        had_interims = self._interims > 0
        self._utt_start = end
        if not text and not had_interims:
            return []  # a cough or a click: nothing was shown, nothing to retract
        return [Transcript(text, True, speech_final, _ms(start), _ms(end), 0.0, speech_end=_ms(speech_end))]
