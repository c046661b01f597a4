"""
Tests for :mod:`xlbridge.engines.whisper.settings` and the Whisper side of
:class:`~xlbridge.engines.local_asr.settings.LocalASRSettings`: the
``[local_asr.whisper]`` table, which recogniser each language gets, and
the spec as it travels to the ASR workers.
"""

from __future__ import annotations

import json
import os
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.local_asr.factory import LocalASRFactory
from xlbridge.engines.local_asr.settings import LocalASRSettings
from xlbridge.engines.local_asr.wire import spec_from_json, spec_to_json
from xlbridge.engines.pocketsphinx.asr import SphinxModel
from xlbridge.engines.vosk.asr import VoskModel
from xlbridge.engines.whisper.settings import AUTO, LANGUAGES, WhisperModel, WhisperSettings
from xlbridge.errors import ConfigError

MODEL = "/srv/whisper-base"


class WhisperTableTests(SynchronousTestCase):
    """``[local_asr.whisper]``."""

    def test_empty_table_gives_the_defaults(self) -> None:
        """No keys: the packaged model and :class:`WhisperModel`'s defaults."""
        s = WhisperSettings.from_options({})
        self.assertIsNone(s.model)
        self.assertEqual(s.spec(MODEL, "es"), WhisperModel(MODEL, "es"))
        self.assertEqual(WhisperModel(MODEL).language, "")

    def test_every_key(self) -> None:
        """Each key lands in the spec, numbers as their field's type, ``~`` expanded, languages lower-cased."""
        s = WhisperSettings.from_options({
            "model": "~/models/whisper", "device": "cuda", "compute_type": "float16", "cpu_threads": 4,
            "beam_size": 3, "min_input_s": 3, "end_silence_s": 0.5, "early_decode_s": 0.2, "start_speech_s": 0.04,
            "vad_mode": 1, "max_utterance_s": 10, "interim_interval_s": 0.5, "tokens_per_s": 20,
            "languages": ["EN", "es"],
        })
        self.assertEqual(s.model, os.path.expanduser("~/models/whisper"))
        self.assertNotIn("~", s.model or "~")
        spec = s.spec("/m", "fr")
        self.assertEqual(spec, WhisperModel(
            path="/m", language="fr", device="cuda", compute_type="float16", cpu_threads=4, beam_size=3,
            min_input_s=3.0, end_silence_s=0.5, early_decode_s=0.2, start_speech_s=0.04, vad_mode=1,
            max_utterance_s=10.0, interim_interval_s=0.5, tokens_per_s=20.0, languages=("en", "es")))
        for field in ("min_input_s", "max_utterance_s", "tokens_per_s"):
            self.assertIs(type(getattr(spec, field)), float, field)
        self.assertIs(type(spec.cpu_threads), int)

    def test_bounds_are_inclusive(self) -> None:
        """The ends of each range are accepted."""
        low = WhisperSettings.from_options({"cpu_threads": 0, "beam_size": 1, "min_input_s": 0, "vad_mode": 0,
                                            "interim_interval_s": 0, "early_decode_s": 0, "start_speech_s": 0.02,
                                            "end_silence_s": 0.1})
        high = WhisperSettings.from_options({"cpu_threads": 64, "beam_size": 16, "min_input_s": 30, "vad_mode": 3,
                                             "max_utterance_s": 28, "tokens_per_s": 50, "start_speech_s": 0.1})
        self.assertEqual((low.tuning["cpu_threads"], low.tuning["min_input_s"]), (0, 0.0))
        self.assertEqual((high.tuning["beam_size"], high.tuning["max_utterance_s"]), (16, 28.0))

    def test_errors_name_the_key(self) -> None:
        """Bad types, values out of range and unknown keys name ``local_asr.whisper.<key>``."""
        cases: list[tuple[str, Any]] = [
            ("model", 3), ("model", ""), ("model", "   "), ("model", ["/m"]),
            ("device", "tpu"), ("device", None),
            ("compute_type", "int4"), ("compute_type", 8),
            ("languages", "en"), ("languages", ["en", 3]), ("languages", ["en", "xx"]), ("languages", [["en"]]),
            ("languages", ("en",)),
            ("cpu_threads", 1.5), ("cpu_threads", -1), ("cpu_threads", 65), ("cpu_threads", True), ("cpu_threads", "2"),
            ("beam_size", 0), ("beam_size", 17),
            ("min_input_s", "5"), ("min_input_s", -0.1), ("min_input_s", 31),
            ("end_silence_s", 0.05), ("end_silence_s", 3.5),
            ("early_decode_s", -0.02), ("early_decode_s", 3.1), ("early_decode_s", "0.1"),
            ("start_speech_s", 0.01), ("start_speech_s", 0.2),
            ("vad_mode", 4), ("vad_mode", 1.0), ("vad_mode", False),
            ("max_utterance_s", 1.9), ("max_utterance_s", 29),
            ("interim_interval_s", -0.1), ("interim_interval_s", 11),
            ("tokens_per_s", 1), ("tokens_per_s", 51),
            ("beam", 2), ("language", "es"),
        ]
        for key, value in cases:
            e = self.assertRaises(ConfigError, WhisperSettings.from_options, {key: value})
            self.assertIn(f"local_asr.whisper.{key}:", str(e), (key, value))

    def test_unknown_key_lists_the_known_ones(self) -> None:
        e = self.assertRaises(ConfigError, WhisperSettings.from_options, {"beam": 2})
        self.assertIn("unknown setting", str(e))
        for known in ("model", "beam_size", "languages", "tokens_per_s"):
            self.assertIn(known, str(e))

    def test_not_a_table(self) -> None:
        for table in (["model"], "model", None):
            e = self.assertRaises(ConfigError, WhisperSettings.from_options, table)
            self.assertIn("[local_asr.whisper] must be a table", str(e))

    def test_languages_are_whisper_codes(self) -> None:
        """Every language Whisper knows is accepted; ``auto`` is a leg language, not a choice."""
        s = WhisperSettings.from_options({"languages": sorted(LANGUAGES)})
        self.assertEqual(len(s.tuning["languages"]), len(LANGUAGES))
        self.assertIn("yue", LANGUAGES)
        self.assertRaises(ConfigError, WhisperSettings.from_options, {"languages": [AUTO]})
        self.assertEqual(WhisperSettings.from_options({"languages": []}).tuning["languages"], ())


class LocalASRTableTests(SynchronousTestCase):
    """``[local_asr] engine`` and the ``whisper`` sub-table."""

    def test_engine(self) -> None:
        self.assertIsNone(LocalASRSettings.from_options({}).engine)
        self.assertEqual(LocalASRSettings.from_options({"engine": "whisper"}).engine, "whisper")
        self.assertEqual(LocalASRSettings.from_options({"engine": "pocketsphinx"}).engine, "pocketsphinx")
        for bad in ("vosk", "Whisper", 1, None):
            e = self.assertRaises(ConfigError, LocalASRSettings.from_options, {"engine": bad})
            self.assertIn("local_asr.engine:", str(e))
        self.assertRaises(ValueError, LocalASRSettings, engine="deepgram")

    def test_whisper_table(self) -> None:
        s = LocalASRSettings.from_options({"whisper": {"model": "/m", "beam_size": 2}})
        self.assertEqual(s.whisper, WhisperSettings("/m", {"beam_size": 2}))
        self.assertIsNone(s.whisper_path, "resolving the model is start-up's job, not parsing's")
        e = self.assertRaises(ConfigError, LocalASRSettings.from_options, {"whisper": {"beam_size": 0}})
        self.assertIn("local_asr.whisper.beam_size:", str(e))
        e = self.assertRaises(ConfigError, LocalASRSettings.from_options, {"whisper": "base"})
        self.assertIn("[local_asr.whisper]", str(e))


class ModelForTests(SynchronousTestCase):
    """Which recogniser a leg's language gets."""

    def settings(self, table: dict[str, Any], whisper_path: str | None = MODEL) -> LocalASRSettings:
        return attrs.evolve(LocalASRSettings.from_options(table), whisper_path=whisper_path)

    def test_whisper_when_its_model_resolved(self) -> None:
        """Any language Whisper knows (primary subtag, any case or separator) gets Whisper in that language."""
        s = self.settings({})
        self.assertTrue(s.uses_whisper)
        self.assertEqual(s.model_for("en"), WhisperModel(MODEL, "en"))
        self.assertEqual(s.model_for("es-MX"), WhisperModel(MODEL, "es"))
        self.assertEqual(s.model_for("pt_BR"), WhisperModel(MODEL, "pt"))
        self.assertEqual(s.model_for(" ES "), WhisperModel(MODEL, "es"))
        self.assertEqual([s.engine_for(lang) for lang in ("en", "es", "de-AT")], ["whisper"] * 3)

    def test_auto(self) -> None:
        """``auto`` gets Whisper identifying the language; nothing else can do that."""
        s = self.settings({"whisper": {"languages": ["en", "es"]}})
        self.assertEqual(s.model_for("auto"), WhisperModel(MODEL, AUTO, languages=("en", "es")))
        self.assertEqual(s.engine_for("auto"), "whisper")
        self.assertIsNone(self.settings({}, whisper_path=None).model_for("auto"))
        self.assertEqual(self.settings({}, whisper_path=None).engine_for("auto"), "none")

    def test_language_unknown_to_whisper(self) -> None:
        s = self.settings({})
        self.assertIsNone(s.model_for("tlh"))
        self.assertEqual(s.engine_for("tlh"), "none")

    def test_tuning_is_carried(self) -> None:
        s = self.settings({"whisper": {"beam_size": 2, "end_silence_s": 0.5}})
        spec = s.model_for("es")
        assert isinstance(spec, WhisperModel)
        self.assertEqual((spec.path, spec.beam_size, spec.end_silence_s), (MODEL, 2, 0.5))

    def test_configured_language_model_wins(self) -> None:
        """A Vosk or pocketsphinx model configured for a language beats Whisper; the bundled English does not."""
        s = self.settings({"models": {
            "es": {"engine": "vosk", "path": "/m/vosk-es"},
            "de": {"engine": "pocketsphinx", "hmm": "/m/de", "lm": "/m/de.lm.bin", "dict": "/m/de.dict"},
        }})
        self.assertEqual(s.model_for("es"), VoskModel("/m/vosk-es"))
        self.assertEqual(s.model_for("es-MX"), VoskModel("/m/vosk-es"))
        self.assertEqual(s.model_for("de"), SphinxModel(hmm="/m/de", lm="/m/de.lm.bin", dictionary="/m/de.dict"))
        self.assertEqual(s.model_for("en"), WhisperModel(MODEL, "en"))
        self.assertEqual(s.model_for("fr"), WhisperModel(MODEL, "fr"))
        self.assertEqual([s.engine_for(lang) for lang in ("es", "de", "en", "fr")],
                         ["vosk", "pocketsphinx", "whisper", "whisper"])

    def test_configured_english_wins(self) -> None:
        """An English pocketsphinx model of one's own is not the bundled one: it beats Whisper."""
        s = self.settings({"models": {"en": {"hmm": "/m/en", "lm": "/m/en.lm", "dict": "/m/en.dict"}}})
        self.assertEqual(s.model_for("en-US"), SphinxModel(hmm="/m/en", lm="/m/en.lm", dictionary="/m/en.dict"))

    def test_bundled_english_without_whisper(self) -> None:
        """No Whisper model: English is the bundled pocketsphinx, other languages have nothing."""
        s = self.settings({}, whisper_path=None)
        self.assertFalse(s.uses_whisper)
        self.assertEqual(s.model_for("en-GB"), SphinxModel())
        self.assertIsNone(s.model_for("es"))
        self.assertEqual((s.engine_for("en"), s.engine_for("es")), ("pocketsphinx", "none"))
        asked = self.settings({"engine": "whisper"}, whisper_path=None)
        self.assertEqual(asked.model_for("en"), SphinxModel(), "engine = whisper without a model falls back")

    def test_pocketsphinx_when_asked(self) -> None:
        """``engine = "pocketsphinx"`` ignores a resolved Whisper model."""
        s = self.settings({"engine": "pocketsphinx"})
        self.assertFalse(s.uses_whisper)
        self.assertEqual(s.model_for("en"), SphinxModel())
        self.assertIsNone(s.model_for("es"))
        self.assertIsNone(s.model_for("auto"))
        self.assertTrue(self.settings({"engine": "whisper"}).uses_whisper)


class WhisperModelTests(SynchronousTestCase):
    """:class:`WhisperModel` as data."""

    SPEC = WhisperModel(MODEL, AUTO, device="auto", compute_type="int8_float32", cpu_threads=3, beam_size=2,
                        min_input_s=4.0, end_silence_s=0.4, start_speech_s=0.08, vad_mode=3, max_utterance_s=12.0,
                        interim_interval_s=0.6, tokens_per_s=9.0, languages=("en", "es"))

    def test_json_round_trip(self) -> None:
        """Through real JSON (lists, not tuples) and back, equal, ``languages`` a tuple again."""
        d = json.loads(json.dumps(self.SPEC.to_json()))
        self.assertEqual(d["engine"], "whisper")
        self.assertEqual(d["languages"], ["en", "es"])
        back = WhisperModel.from_json(d)
        self.assertEqual(back, self.SPEC)
        self.assertIsInstance(back.languages, tuple)
        self.assertEqual(hash(back), hash(self.SPEC))

    def test_from_json_defaults_missing_fields(self) -> None:
        self.assertEqual(WhisperModel.from_json({"path": MODEL, "engine": "whisper", "later": 1}), WhisperModel(MODEL))

    def test_worker_spec_round_trip(self) -> None:
        """:func:`spec_to_json` / :func:`spec_from_json` carry a WhisperModel whole."""
        wire = json.loads(json.dumps(spec_to_json(self.SPEC)))
        back = spec_from_json(wire)
        self.assertIsInstance(back, WhisperModel)
        self.assertEqual(back, self.SPEC)
        self.assertEqual(spec_from_json(spec_to_json(WhisperModel(MODEL))), WhisperModel(MODEL))

    def test_model_key_ignores_the_language(self) -> None:
        """Streams of any language (and any stream tuning) share one loaded model."""
        same = attrs.evolve(self.SPEC, device="cpu", compute_type="int8", cpu_threads=2)
        self.assertEqual(WhisperModel(MODEL, "en").model_key(), same.model_key())
        self.assertNotEqual(WhisperModel(MODEL).model_key(), WhisperModel("/other").model_key())
        self.assertNotEqual(WhisperModel(MODEL).model_key(), WhisperModel(MODEL, compute_type="float32").model_key())

    def test_describe(self) -> None:
        self.assertEqual(self.SPEC.describe(), f"whisper {MODEL} (auto, int8_float32)")
        self.assertEqual(self.SPEC.engine, "whisper")


class PreloadTests(SynchronousTestCase):
    """What the factory loads at start-up: only the models some caller language uses."""

    def factory(self, languages: tuple[str, ...], **settings: object) -> LocalASRFactory:
        from xlbridge.engines.local_asr.factory import local_asr_factory
        from xlbridge.engines.threads import ThreadPoolService
        from xlbridge.testing import MemoryUDPReactor

        reactor = MemoryUDPReactor()
        pool = ThreadPoolService(reactor, name="test", max_threads=1, max_queued=1)
        return local_asr_factory(reactor, pool, LocalASRSettings(backend="thread", **settings),  # type: ignore[arg-type]
                                 languages=languages)

    def test_whisper_for_everyone_skips_the_pocketsphinx_decoders(self) -> None:
        f = self.factory(("en", "es"), whisper_path="/m")
        whisper = f.whisper_spec()
        assert whisper is not None
        self.assertTrue(f._wanted(whisper))
        self.assertFalse(f._wanted(SphinxModel()))

    def test_pocketsphinx_engine_preloads_pocketsphinx_only(self) -> None:
        f = self.factory(("en", "es"), whisper_path="/m", engine="pocketsphinx")
        self.assertIsNone(f.whisper_spec())
        self.assertTrue(f._wanted(SphinxModel()))

    def test_unknown_languages_preload_everything(self) -> None:
        f = self.factory((), whisper_path="/m")
        whisper = f.whisper_spec()
        assert whisper is not None
        self.assertTrue(f._wanted(whisper) and f._wanted(SphinxModel()))
