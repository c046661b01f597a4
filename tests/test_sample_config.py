"""
etc/xlbridge.toml documents every setting there is: each key of the
``SETTINGS`` table in its section with its command-line twin named (or
said to be file-only), and each key the engine settings classes take in
theirs, and nothing else.  Walking the code's own tables keeps the sample
from drifting again.
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.config import ENGINE_SECTIONS, FILE_ONLY, SECTIONS, SETTINGS

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc", "xlbridge.toml")

_HEADER = re.compile(r"^#?\s*\[([A-Za-z0-9_.-]+)\]\s*$")
_KEY = re.compile(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")


def read_sample() -> str:
    with open(SAMPLE, encoding="utf-8") as f:
        return f.read()


def sections(text: str) -> dict[str, str]:
    """
    Section name -> its text, headers commented out or not;
    ``[local_asr.models.LANG]`` tables are gathered as ``local_asr.models``.
    """
    out: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            name = m.group(1)
            if name.startswith("local_asr.models."):
                name = "local_asr.models"
            out.setdefault(name, "")
            continue
        if name:
            out[name] += line + "\n"
    return out


def documented_keys(section_text: str) -> set[str]:
    """Keys set (``key = ...``) or shown commented out (``# key = ...``)."""
    return {m.group(1) for line in section_text.splitlines() if (m := _KEY.match(line))}


def _fields(cls: Any) -> set[str]:
    return {a.name for a in attrs.fields(cls)}


def engine_keys() -> dict[str, set[str]]:
    """
    The keys each engine section takes: the fields of its settings class
    (``[local_asr]`` without its sub-tables and what is resolved at
    start-up; ``[local_asr.whisper]`` as the Whisper model's tuning).
    """
    from xlbridge.engines.apertium.settings import ApertiumSettings
    from xlbridge.engines.deepgram.settings import DeepgramSettings
    from xlbridge.engines.deepl.settings import DeepLSettings
    from xlbridge.engines.elevenlabs.settings import ElevenLabsSettings
    from xlbridge.engines.espeak.settings import ESpeakSettings
    from xlbridge.engines.local_asr.settings import LocalASRSettings
    from xlbridge.engines.pocketsphinx.asr import SphinxModel
    from xlbridge.engines.vosk.asr import VoskModel
    from xlbridge.engines.whisper.settings import WhisperModel

    return {
        "deepgram": _fields(DeepgramSettings),
        "deepl": _fields(DeepLSettings),
        "elevenlabs": _fields(ElevenLabsSettings),
        "apertium": _fields(ApertiumSettings),
        "espeak": _fields(ESpeakSettings),
        "local_asr": _fields(LocalASRSettings) - {"models", "whisper", "whisper_path"},
        "local_asr.whisper": {"model"} | _fields(WhisperModel) - {"path", "language"},
        # TOML spells pocketsphinx's dictionary "dict".
        "local_asr.models": {"engine", "dict"} | _fields(VoskModel) | _fields(SphinxModel) - {"dictionary"},
    }


class SampleDocumentsEverySettingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.text = read_sample()
        self.sections = sections(self.text)

    def test_every_section(self) -> None:
        expected = set(SECTIONS) | {"local_asr.whisper", "local_asr.models"}
        self.assertEqual(set(self.sections), expected)
        self.assertEqual(set(ENGINE_SECTIONS) - set(engine_keys()), set())

    def test_every_core_key_and_only_those(self) -> None:
        by_section: dict[str, set[str]] = {}
        for section, key, _ in SETTINGS.values():
            by_section.setdefault(section, set()).add(key)
        for section, keys in by_section.items():
            self.assertEqual(documented_keys(self.sections[section]), keys, section)

    def test_every_engine_key_and_only_those(self) -> None:
        for section, keys in engine_keys().items():
            self.assertEqual(documented_keys(self.sections[section]), keys, section)

    def test_each_key_names_its_flag_or_says_file_only(self) -> None:
        for option, (section, key, _) in SETTINGS.items():
            text = self.sections[section]
            if option in FILE_ONLY:
                self.assertIn("file-only", text.lower(), option)
                self.assertIsNone(re.search(rf"--{option}(?![\w-])", self.text), option)
            else:
                self.assertRegex(text, rf"--{option}(?![\w-])", f"[{section}] {key}")

    def test_the_header_does_not_claim_every_key_has_a_twin(self) -> None:
        self.assertNotIn("Every key here has a command-line twin", self.text)
        for option in FILE_ONLY:
            self.assertIn(SETTINGS[option][1], self.text.split("\n[bridge]\n")[0])


class SampleSwitchesNothingOnTests(SynchronousTestCase):
    def test_core_values_set_are_the_defaults(self) -> None:
        """
        What the sample sets outside the engine sections is what loading no
        file gives: copying it changes nothing until a line is edited.
        """
        from xlbridge.config import load_config

        empty, sample = load_config({}, environ={}), load_config({}, SAMPLE, environ={})
        self.assertEqual(attrs.evolve(sample, engine_options={}), empty)

    def test_ports_are_documented_but_not_set(self) -> None:
        with open(SAMPLE, "rb") as f:
            data = tomllib.load(f)
        self.assertNotIn("ports", data["bridge"])
        self.assertIn('# ports = "7777,8888"', read_sample())


class SampleEngineSectionsLoadTests(SynchronousTestCase):
    """
    The engine sections as shipped are accepted by their engines.
    """

    def setUp(self) -> None:
        with open(SAMPLE, "rb") as f:
            self.data = tomllib.load(f)

    def test_cloud(self) -> None:
        from xlbridge.engines.deepgram.settings import DeepgramSettings
        from xlbridge.engines.deepl.settings import DeepLSettings
        from xlbridge.engines.elevenlabs.settings import ElevenLabsSettings

        DeepgramSettings.from_env({"DEEPGRAM_API_KEY": "k"}, **self.data["deepgram"])
        DeepLSettings.from_env({"DEEPL_AUTH_KEY": "k"}, **self.data["deepl"])
        ElevenLabsSettings.from_env({"ELEVENLABS_API_KEY": "k"}, **self.data["elevenlabs"])

    def test_local(self) -> None:
        from xlbridge.engines.apertium.settings import ApertiumSettings
        from xlbridge.engines.espeak.settings import ESpeakSettings
        from xlbridge.engines.local_asr.settings import LocalASRSettings

        ApertiumSettings.from_options(self.data["apertium"])
        ESpeakSettings.from_options(self.data["espeak"])
        LocalASRSettings.from_options(self.data["local_asr"])
