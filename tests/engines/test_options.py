"""
Tests for :mod:`xlbridge.engines.options`: messages about engine settings
name ``section.key`` (or the environment variable), suggest the closest
known key, and list them all.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.options import (
    EnvironmentSettingError,
    build_with_environment,
    check_keys,
    check_kinds,
    kind_problem,
    setting_error,
    unknown_setting,
)
from xlbridge.errors import ConfigError


class MessagesTests(SynchronousTestCase):
    def test_setting_error_names_the_key(self) -> None:
        e = setting_error("deepgram.model", "must not be empty")
        self.assertEqual(str(e), "--config: deepgram.model: must not be empty")
        self.assertEqual(e.option, "config")

    def test_unknown_setting_suggests_the_closest(self) -> None:
        e = unknown_setting("deepgram", "modle", ["model", "api_key", "base_url"])
        self.assertEqual(str(e), "--config: deepgram.modle: unknown setting; did you mean model? "
                                 "(known: api_key, base_url, model)")

    def test_unknown_setting_without_a_close_one_lists_them(self) -> None:
        e = unknown_setting("deepl", "zzz", ["formality", "model_type"])
        self.assertEqual(str(e), "--config: deepl.zzz: unknown setting; (known: formality, model_type)")

    def test_environment_error_names_the_variable(self) -> None:
        e = EnvironmentSettingError("XLBRIDGE_DEEPGRAM_URL", "must start with wss:// or ws://")
        self.assertIsInstance(e, ConfigError)
        self.assertEqual(str(e), "XLBRIDGE_DEEPGRAM_URL: must start with wss:// or ws://")
        self.assertEqual(e.option, "XLBRIDGE_DEEPGRAM_URL")


class ChecksTests(SynchronousTestCase):
    def test_check_keys(self) -> None:
        self.assertEqual(check_keys("espeak", {"pitch": 1}, ["pitch"]), {"pitch": 1})
        e = self.assertRaises(ConfigError, check_keys, "espeak", {"pich": 1}, ["pitch"])
        self.assertIn("espeak.pich: unknown setting; did you mean pitch?", str(e))
        e = self.assertRaises(ConfigError, check_keys, "espeak", "loud", ["pitch"])
        self.assertIn("espeak: expected a table of settings", str(e))

    def test_kind_problem(self) -> None:
        self.assertIsNone(kind_problem(3, float))
        self.assertIsNone(kind_problem(True, bool))
        self.assertIsNone(kind_problem({}, dict))
        self.assertEqual(kind_problem(True, int), "expected a whole number, got True")
        self.assertEqual(kind_problem("3", float), "expected a number, got '3'")
        self.assertEqual(kind_problem(1, bool), "expected true or false, got 1")
        self.assertEqual(kind_problem(1, str), "expected a string, got 1")
        self.assertEqual(kind_problem([], dict), "expected a table, got []")

    def test_check_kinds(self) -> None:
        @attrs.frozen
        class S:
            rate: Any = 1

        check_kinds("x", S(), {"rate": int})
        e = self.assertRaises(ConfigError, check_kinds, "x", S("fast"), {"rate": int})
        self.assertEqual(str(e), "--config: x.rate: expected a whole number, got 'fast'")

    def test_environment_values_are_named_by_their_variable(self) -> None:
        def build(values: dict[str, Any]) -> dict[str, Any]:
            if not str(values.get("url", "ws://")).startswith("ws"):
                raise setting_error("dg.url", "must start with ws://")
            return values

        env = {"url": ("XLBRIDGE_URL", "http://x")}
        e = self.assertRaises(ConfigError, build_with_environment, "dg", build, env, {})
        self.assertEqual(str(e), "XLBRIDGE_URL: must start with ws://")
        # The file's value wins, and a bad one is the file's.
        self.assertEqual(build_with_environment("dg", build, env, {"url": "ws://y"}), {"url": "ws://y"})
        e = self.assertRaises(ConfigError, build_with_environment, "dg", build, {}, {"url": "ftp://z"})
        self.assertEqual(str(e), "--config: dg.url: must start with ws://")
