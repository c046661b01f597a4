"""
The real packaged Whisper base model on Asterisk's "Allison" prompts
(English and Mexican Spanish, 16 kHz G.722): decoding, language
identification, the loop guard, a stream and an ASR worker session.

Skipped when the model is not installed.  All tests share one decoder
(:func:`shared_decoder`: the ~1 s load is paid once); each decode takes
about 0.2-0.4 s, so the tests are few.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.base import SpeechStarted, Transcript
from xlbridge.engines.local_asr.stream_clock import FRAME_BYTES
from xlbridge.engines.local_asr.wire import StreamParams
from xlbridge.engines.local_asr.worker import Session
from xlbridge.engines.pocketsphinx.asr import DecoderPool
from xlbridge.engines.whisper.decode import WhisperDecoder, shared_decoder
from xlbridge.engines.whisper.settings import WhisperModel
from xlbridge.engines.whisper.stream import WhisperStream
from xlbridge.tools.demo import load_g722

from tests.engines.whisper.folders import NO_MODEL_REASON, real_model

SOUNDS = "/usr/share/asterisk/sounds"
EN = os.path.join(SOUNDS, "en_US_f_Allison")
ES = os.path.join(SOUNDS, "es_MX_f_Allison")
RATE = 16000

MODEL = real_model()


def _skip() -> str | None:
    if MODEL is None:
        return NO_MODEL_REASON
    if not (os.path.isdir(EN) and os.path.isdir(ES)):
        return "the Allison prompts are not installed (asterisk-core-sounds-en-g722, -es-g722)"
    return None


def decoder() -> WhisperDecoder:
    assert MODEL is not None
    return shared_decoder(WhisperModel(MODEL))


def prompt(folder: str, name: str) -> np.ndarray:
    return np.asarray(load_g722(os.path.join(folder, name + ".g722")), dtype=np.int16)


def with_silence(x: np.ndarray, lead: float = 0.5, trail: float = 1.0) -> np.ndarray:
    return np.concatenate([np.zeros(int(lead * RATE), np.int16), x, np.zeros(int(trail * RATE), np.int16)])


def frames_of(x: np.ndarray) -> list[bytes]:
    data = x.tobytes()
    return [data[i:i + FRAME_BYTES] for i in range(0, len(data) - FRAME_BYTES + 1, FRAME_BYTES)]


class RealModelTests(SynchronousTestCase):
    skip = _skip()

    def test_english(self) -> None:
        hyp = decoder().decode(prompt(EN, "conf-onlyperson"), "en")
        text = hyp.text.lower()
        self.assertIn("only person", text)
        self.assertIn("conference", text)
        self.assertEqual((hyp.language, hyp.repeated), ("en", False))

    def test_spanish(self) -> None:
        hyp = decoder().decode(prompt(ES, "conf-onlyperson"), "es")
        self.assertIn("única persona", hyp.text.lower())
        self.assertEqual(hyp.language, "es")

    def test_language_identification(self) -> None:
        """``auto`` among English and Spanish tells the two prompts apart, and decodes each in its language."""
        es = decoder().decode(prompt(ES, "conf-onlyperson"), "auto", ("en", "es"))
        en = decoder().decode(prompt(EN, "conf-onlyperson"), "auto", ("en", "es"))
        self.assertEqual((es.language, en.language), ("es", "en"))
        self.assertIn("única persona", es.text.lower())
        self.assertIn("only person", en.text.lower())
        self.assertLess(es.language_probability, 1.0, "identified, not given")

    def test_trailing_silence_makes_no_loop(self) -> None:
        """A second of digital silence after "Goodbye" does not make Whisper repeat it."""
        x = np.concatenate([prompt(EN, "vm-goodbye"), np.zeros(RATE, np.int16)])
        hyp = decoder().decode(x, "en")
        self.assertIn("goodbye", hyp.text.lower())
        self.assertLessEqual(hyp.text.lower().count("goodbye"), 1, hyp.text)

    def test_stream(self) -> None:
        """A Spanish prompt with silence around it through the real VAD: one SpeechStarted, exactly one final."""
        spec = WhisperModel(MODEL or "", "es")
        stream = WhisperStream(decoder(), spec)
        speech = prompt(ES, "conf-onlyperson")
        events: list[Any] = []
        for f in frames_of(with_silence(speech)):
            events += stream.feed(f)
        events += stream.finish()
        self.assertEqual(len([e for e in events if isinstance(e, SpeechStarted)]), 1)
        finals = [e for e in events if isinstance(e, Transcript) and e.is_final]
        self.assertEqual(len(finals), 1, finals)
        [final] = finals
        self.assertIn("única persona", final.text.lower())
        self.assertEqual((final.speech_final, final.language), (True, "es"))
        assert final.speech_end is not None
        self.assertLess(final.start, 0.5 + 0.3)
        self.assertLess(abs(final.speech_end - (0.5 + len(speech) / RATE)), 0.4, final)
        self.assertGreater(final.end, final.speech_end)

    def test_worker_session(self) -> None:
        """The ASR worker's Session, given a WhisperModel, decodes 640-byte frames with the shared model."""
        session = Session(WhisperModel(MODEL or "", "en"), StreamParams(), DecoderPool(), 4)
        events = session.feed(frames_of(with_silence(prompt(EN, "conf-onlyperson"))))
        events += session.finish()
        finals = [e for e in events if isinstance(e, Transcript) and e.is_final]
        self.assertEqual(len(finals), 1, finals)
        self.assertIn("only person", finals[0].text.lower())
        self.assertIsNone(session.stream, "finished")
        self.assertIs(decoder(), shared_decoder(WhisperModel(MODEL or "", "es")), "one model for every language")
