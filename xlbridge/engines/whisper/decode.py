"""
Decoding one utterance with Whisper on CTranslate2, and the pure helpers
that keep it fast and keep it from hallucinating.

Why not ``faster_whisper.WhisperModel.transcribe()``: it pads every input
to 30 s, so the encoder costs the same 1.1-1.4 s on this 2-core machine
for one second of speech as for thirty.  CTranslate2's encoder takes
shorter inputs, so :class:`WhisperDecoder` computes the log-mel features of
the utterance's real length (padded to :attr:`WhisperModel.min_input_s`
with digital silence, see below) and calls ``generate`` directly: 100-300
ms per utterance of 1-5 s.  faster-whisper still provides the feature
extractor and the tokenizer.

The traps, each with a guard here:

* **Short inputs.**  On ~1 s of features Whisper stops after the first
  word ("Good" for "Goodbye") or repeats it to the end; with the input
  padded to 5 s every short Allison prompt came out right.  ``min_input_s``.
* **Loops.**  Trailing room noise or an unlucky pad makes Whisper repeat a
  phrase until ``max_length``.  :func:`max_tokens` bounds the output by the
  speech's duration, ``repetition_penalty`` and ``no_repeat_ngram_size``
  discourage it, :func:`trim_silence` cuts trailing silence before
  decoding, and :func:`cut_repeats` keeps one copy of a phrase that the
  hypothesis repeats three times or more.
* **Non-speech.**  A cough decodes to "Thank you." or "...": a hypothesis
  whose ``<|nospeech|>`` probability is high, or whose average log
  probability is very low, is dropped (:func:`is_garbage`).

Audio in: 16 kHz mono int16, native byte order.  All of this blocks: it
runs in an ASR worker process (or a pool thread), never on the reactor.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from typing import Any, Optional, Sequence

import attrs
import numpy as np

from xlbridge.audio.frame import SAMPLE_RATE
from xlbridge.engines.base import EngineRequestError
from xlbridge.engines.whisper.settings import AUTO, ENGINE, WhisperModel

#: Whisper's feature frames per second (hop of 160 samples at 16 kHz).
FRAMES_PER_S = 100
#: The encoder's longest input, feature frames (30 s).
MAX_FRAMES = 3000
#: Below this level (dBFS, per 20 ms) a trailing frame counts as silence.
SILENCE_DBFS = -50.0
#: Trailing audio kept after the last loud frame, seconds.
TAIL_KEEP_S = 0.1
#: A hypothesis with this no-speech probability or more and a mean token
#: log probability under :data:`UNSURE_LOGPROB` is not speech (faster-whisper's rule).
NO_SPEECH_PROB = 0.6
UNSURE_LOGPROB = -1.0
#: A mean token log probability under this is noise whatever else holds (a
#: clear one-word "Goodbye" scored -1.7).
MIN_AVG_LOGPROB = -3.0


# -- pure helpers ------------------------------------------------------------


def feature_frames(samples: int, min_input_s: float = 0.0) -> int:
    """
    Feature frames to encode for ``samples`` of 16 kHz audio: the audio's
    own length (at least ``min_input_s``), even (the encoder halves it),
    at least 2, at most 30 s.
    """
    frames = max(samples // (SAMPLE_RATE // FRAMES_PER_S), int(round(min_input_s * FRAMES_PER_S)), 2)
    frames -= frames % 2
    return min(frames, MAX_FRAMES)


def max_tokens(speech_s: float, tokens_per_s: float = 12.0) -> int:
    """
    The most text tokens a hypothesis for ``speech_s`` seconds may have: fast
    speech is ~4 words (~6 tokens) a second, so 12 a second plus 10 never
    cuts real speech and ends a loop early.
    """
    return int(10 + max(0.0, speech_s) * tokens_per_s)


def trim_silence(samples: np.ndarray, silence_dbfs: float = SILENCE_DBFS, keep_s: float = TAIL_KEEP_S) -> np.ndarray:
    """
    ``samples`` (int16) without trailing silence: cut ``keep_s`` after the
    last 20 ms frame louder than ``silence_dbfs``; all-silent input gives an
    empty array.
    """
    n = SAMPLE_RATE // 50
    frames = len(samples) // n
    if frames == 0:
        return samples[:0]
    x = samples[: frames * n].astype(np.float64).reshape(frames, n)
    db = 20 * np.log10(np.sqrt((x * x).mean(axis=1)) / 32768.0 + 1e-12)
    loud = np.nonzero(db > silence_dbfs)[0]
    if len(loud) == 0:
        return samples[:0]
    end = min(len(samples), (int(loud[-1]) + 1) * n + int(keep_s * SAMPLE_RATE))
    return samples[:end]


_WORD = re.compile(r"\S+")


def _norm(word: str) -> str:
    return re.sub(r"[^\w']+", "", word.lower())


#: A phrase of this many words or more repeated even twice in a row is a loop.
LONG_PHRASE = 4


def cut_repeats(text: str, min_repeats: int = 3, max_phrase: int = 12, long_phrase: int = LONG_PHRASE) -> str:
    """
    ``text`` with any phrase (1..``max_phrase`` words) that repeats
    back-to-back ``min_repeats`` times or more reduced to one copy:
    "Goodbye. Goodbye. Goodbye. Goodbye." -> "Goodbye.".  Two copies of a
    short phrase are left alone ("no, no" is speech), but a phrase of
    ``long_phrase`` words or more said twice in a row is Whisper looping
    ("Weasels have eaten our phone system. Weasels have eaten our phone
    system.").  A cut-off last copy goes too.  Comparison ignores case and
    punctuation.
    """
    words = _WORD.findall(text)
    keys = [_norm(w) for w in words]
    out_words: list[str] = []
    out_keys: list[str] = []
    i = 0
    while i < len(words):
        cut = False
        for size in range(1, max_phrase + 1):
            phrase = keys[i:i + size]
            if len(phrase) < size or not any(phrase):
                break
            count = 1
            while keys[i + count * size:i + (count + 1) * size] == phrase:
                count += 1
            if count >= (2 if size >= long_phrase else min_repeats):
                out_words.extend(words[i:i + size])
                out_keys.extend(phrase)
                i += count * size
                # a cut-off last copy ("... Goodbye. Good") goes too
                rest = keys[i:i + size]
                if (rest and i + len(rest) == len(words) and rest[:-1] == phrase[:len(rest) - 1]
                        and rest[-1] and phrase[len(rest) - 1].startswith(rest[-1])):
                    i += len(rest)
                cut = True
                break
        if not cut:
            out_words.append(words[i])
            out_keys.append(keys[i])
            i += 1
    return " ".join(out_words)


def repeats_itself(text: str, min_repeats: int = 3) -> bool:
    """Whether :func:`cut_repeats` would change ``text``."""
    return cut_repeats(text, min_repeats) != " ".join(_WORD.findall(text))


def is_garbage(text: str, no_speech_prob: float, avg_logprob: float) -> bool:
    """A hypothesis that is not speech: empty, punctuation only, or the model says so."""
    if not any(ch.isalnum() for ch in text):
        return True
    return no_speech_prob >= NO_SPEECH_PROB and avg_logprob < UNSURE_LOGPROB or avg_logprob < MIN_AVG_LOGPROB


def pick_language(probabilities: Sequence[tuple[str, float]], allowed: Sequence[str] = ()) -> tuple[str, float]:
    """
    The most probable language from CTranslate2's ``detect_language``
    result (``[("<|es|>", 0.8), ...]``), among ``allowed`` if given.
    """
    for token, p in probabilities:
        code = token.strip("<|>")
        if not allowed or code in allowed:
            return code, float(p)
    code = allowed[0] if allowed else "en"
    return code, 0.0


@attrs.frozen
class Hypothesis:
    """
    One decoded utterance.

    :ivar text: the words (loop guard applied; empty if it was not speech).
    :ivar language: the language decoded in (detected for ``auto``).
    :ivar language_probability: Whisper's probability for it (1.0 if given).
    :ivar avg_logprob: mean log probability per token.
    :ivar no_speech_prob: Whisper's ``<|nospeech|>`` probability.
    :ivar tokens: text tokens generated.
    :ivar repeated: the raw hypothesis repeated itself and was cut.
    :ivar seconds: time spent, for the cost figures.
    """

    text: str
    language: str
    language_probability: float = 1.0
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    tokens: int = 0
    repeated: bool = False
    seconds: float = 0.0


# -- the model ------------------------------------------------------------------


def load_whisper(spec: WhisperModel) -> Any:
    """
    ``ctranslate2.models.Whisper`` for ``spec`` (~0.8 s for base int8; a
    worker process or thread only).

    :raises EngineRequestError: CTranslate2 missing, or it refused the folder.
    """
    try:
        import ctranslate2
    except ImportError:
        raise EngineRequestError(ENGINE, "ctranslate2 is not installed (pip install faster-whisper)") from None
    try:
        return ctranslate2.models.Whisper(spec.path, device=spec.device, compute_type=spec.compute_type,
                                          intra_threads=spec.cpu_threads, inter_threads=1)
    except Exception as e:
        raise EngineRequestError(ENGINE, f"CTranslate2 could not load the Whisper model in {spec.path!r}: {e}") from None


class WhisperDecoder:
    """
    A loaded Whisper model with its feature extractor and tokenizer, shared
    by every stream of a process (CTranslate2 models are thread-safe; each
    ``generate`` call is one utterance).
    """

    def __init__(self, spec: WhisperModel) -> None:
        import tokenizers
        from faster_whisper.feature_extractor import FeatureExtractor

        self.spec = spec
        self.model = load_whisper(spec)
        try:
            self._hf = tokenizers.Tokenizer.from_file(os.path.join(spec.path, "tokenizer.json"))
        except Exception as e:
            raise EngineRequestError(ENGINE, f"cannot read {spec.path}/tokenizer.json: {e}") from None
        self.features = FeatureExtractor(feature_size=self.model.n_mels)
        self.multilingual = bool(self.model.is_multilingual)
        self._tokenizers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def tokenizer(self, language: str) -> Any:
        """faster-whisper's tokenizer for ``language`` (cached)."""
        from faster_whisper.tokenizer import Tokenizer

        with self._lock:
            tok = self._tokenizers.get(language)
            if tok is None:
                try:
                    tok = Tokenizer(self._hf, self.multilingual, task="transcribe", language=language)
                except ValueError:
                    raise EngineRequestError(ENGINE, f"Whisper does not know the language {language!r}") from None
                self._tokenizers[language] = tok
            return tok

    def decode(self, samples: np.ndarray, language: str, allowed: Sequence[str] = (),
               spec: Optional[WhisperModel] = None) -> Hypothesis:
        """
        Transcribe one utterance (int16 at 16 kHz) in ``language`` (or
        ``auto``: identified first, among ``allowed`` if given), with the
        leg's ``spec`` for its per-utterance settings (``min_input_s``,
        ``beam_size``, ``tokens_per_s``; default the loading spec's): the
        model is shared, the settings are each leg's.
        """
        import ctranslate2

        t0 = time.perf_counter()
        spec = self.spec if spec is None else spec
        audio = trim_silence(np.asarray(samples, dtype=np.int16))
        speech_s = len(audio) / SAMPLE_RATE
        if speech_s < 0.1:
            return Hypothesis("", language if language != AUTO else "")
        wave = audio.astype(np.float32) / 32768.0
        frames = feature_frames(len(wave), spec.min_input_s)
        need = frames * (SAMPLE_RATE // FRAMES_PER_S)
        if len(wave) < need:
            wave = np.concatenate([wave, np.zeros(need - len(wave), np.float32)])
        feats = self.features(wave, padding=0)[:, :frames]
        storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[None], dtype=np.float32))
        lang, lang_p = language, 1.0
        if language == AUTO or not self.multilingual:
            if self.multilingual:
                # Encode once: detect_language and generate both take the encoder's output.
                storage = self.model.encode(storage, to_cpu=False)
                lang, lang_p = pick_language(self.model.detect_language(storage)[0], allowed)
            else:
                lang = "en"
        tok = self.tokenizer(lang)
        result = self.model.generate(
            storage, [tok.sot_sequence + [tok.no_timestamps]], beam_size=spec.beam_size,
            max_length=max_tokens(speech_s, spec.tokens_per_s) + len(tok.sot_sequence) + 1,
            repetition_penalty=1.1, no_repeat_ngram_size=0, return_scores=True, return_no_speech_prob=True,
        )[0]
        ids = [t for t in result.sequences_ids[0] if t < tok.eot]
        raw = tok.decode(ids).strip()
        score = float(result.scores[0]) if result.scores else 0.0
        avg = score  # CTranslate2 returns the length-normalised log probability
        no_speech = float(getattr(result, "no_speech_prob", 0.0) or 0.0)
        text = cut_repeats(raw)
        repeated = text != " ".join(raw.split())
        if is_garbage(text, no_speech, avg):
            text = ""
        return Hypothesis(text, lang, lang_p, avg, no_speech, len(ids), repeated, time.perf_counter() - t0)


_decoders: dict[tuple[str, str, str, int], WhisperDecoder] = {}
_decoders_lock = threading.Lock()


def shared_decoder(spec: WhisperModel) -> WhisperDecoder:
    """
    The process's one :class:`WhisperDecoder` for ``spec``'s model, loaded
    on first use (blocks; a second caller waits rather than loading twice).

    :raises EngineRequestError: the model cannot load.
    """
    key = spec.model_key()
    with _decoders_lock:
        decoder = _decoders.get(key)
        if decoder is None:
            decoder = WhisperDecoder(attrs.evolve(spec, language=""))
            # The first generate() allocates its buffers (+0.2-0.3 s): pay
            # that at load, not in a caller's first utterance.
            decoder.decode(np.full(SAMPLE_RATE // 2, 1000, dtype=np.int16), "en")
            _decoders[key] = decoder
        return decoder


def db_level(samples: np.ndarray) -> float:
    """RMS level of int16 ``samples`` in dBFS (-inf guarded)."""
    if len(samples) == 0:
        return -math.inf
    x = samples.astype(np.float64)
    return 20 * math.log10(math.sqrt(float((x * x).mean())) / 32768.0 + 1e-12)


def loaded_decoder(spec: WhisperModel) -> Optional[WhisperDecoder]:
    """The decoder already loaded for ``spec``'s model, if any."""
    with _decoders_lock:
        return _decoders.get(spec.model_key())
