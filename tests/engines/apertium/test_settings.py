"""
Tests for :mod:`xlbridge.engines.apertium.settings`:
:class:`ApertiumSettings` from the TOML table, and the install check.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.apertium import settings as apertium_settings
from xlbridge.engines.apertium.settings import (
    DEFAULT_PAIRS,
    ApertiumSettings,
    apertium_available,
    direction_problem,
    install_problem,
    installed_modes,
    pair_problem,
)
from xlbridge.errors import ConfigError


class SettingsTests(SynchronousTestCase):
    """
    :class:`ApertiumSettings`, :func:`apertium_available`.
    """

    def test_defaults(self) -> None:
        s = ApertiumSettings.from_options({})
        self.assertEqual(dict(s.pairs), {"en-es": "eng-spa", "es-en": "spa-eng"})
        self.assertEqual((s.timeout_s, s.first_timeout_s, s.max_queue), (2.0, 5.0, 32))
        self.assertEqual(s.modes_dir, "/usr/share/apertium/modes")

    def test_extra_pairs(self) -> None:
        s = ApertiumSettings.from_options(
            {"modes_dir": "/opt/modes", "pairs": {"EN-ES": "eng-spa", "es-de": "spa-deu"}, "timeout_s": 1}
        )
        self.assertEqual(dict(s.pairs), {**DEFAULT_PAIRS, "es-de": "spa-deu"})
        self.assertEqual(s.timeout_s, 1.0)
        self.assertEqual(s.mode_path("spa-deu"), "/opt/modes/spa-deu.mode")

    def test_bad(self) -> None:
        bad: list[dict[str, Any]] = [
            {"timeout": 2},
            {"timeout_s": 0},
            {"timeout_s": "soon"},
            {"max_queue": True},
            {"first_timeout_s": -1},
            {"pairs": "en-es"},
            {"pairs": {"english-spanish": "eng-spa"}},
            {"pairs": {"en-fr": "../etc/passwd"}},
            {"pairs": {"en-fr": 3}},
        ]
        for table in bad:
            e = self.assertRaises(ConfigError, ApertiumSettings.from_options, table)
            self.assertIn("apertium", str(e))

    def test_available(self) -> None:
        empty = self.mktemp()
        os.mkdir(empty)
        self.assertFalse(apertium_available(ApertiumSettings(modes_dir=empty)))
        self.patch(apertium_settings, "PROGRAMS", ("no-such-apertium-program",))
        self.assertFalse(apertium_available(ApertiumSettings()))

    def test_install_problem_names_what_is_missing(self) -> None:
        modes = self.mktemp()
        os.mkdir(modes)
        self.patch(apertium_settings, "PROGRAMS", ("sh",))
        problem = install_problem(ApertiumSettings(modes_dir=modes), ["eng-spa"])
        assert problem is not None
        self.assertIn("no Apertium mode eng-spa", problem)
        with open(os.path.join(modes, "eng-spa.mode"), "w") as f:
            f.write("cat\n")
        self.assertIsNone(install_problem(ApertiumSettings(modes_dir=modes), ["eng-spa"]))
        self.patch(apertium_settings, "PROGRAMS", ("no-such-apertium-program",))
        problem = install_problem(ApertiumSettings(modes_dir=modes), ["eng-spa"])
        assert problem is not None
        self.assertIn("no-such-apertium-program not found", problem)


class MessagesTests(SynchronousTestCase):
    """Every message about [apertium] names apertium.<key>."""

    def test_bad_values_name_the_key(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"timeout": 2}, "apertium.timeout: unknown setting; did you mean timeout_s?"),
            ({"timeout_s": 0}, "apertium.timeout_s: must be > 0, got 0.0"),
            ({"timeout_s": "soon"}, "apertium.timeout_s: expected a number, got 'soon'"),
            ({"max_queue": True}, "apertium.max_queue: expected a whole number, got True"),
            ({"max_queue": 2.5}, "apertium.max_queue: expected a whole number, got 2.5"),
            ({"modes_dir": 3}, "apertium.modes_dir: expected the path of Apertium's modes directory"),
            ({"pairs": "en-es"}, "apertium.pairs: expected a table like"),
            ({"pairs": {"english-spanish": "eng-spa"}}, "apertium.pairs.english-spanish: not a language pair"),
            ({"pairs": {"en-fr": 3}}, "apertium.pairs.en-fr: 3 is not a mode name"),
        ]
        for table, words in cases:
            e = self.assertRaises(ConfigError, ApertiumSettings.from_options, table)
            self.assertIn(f"--config: {words}", str(e))


class DirectionTests(SynchronousTestCase):
    """:func:`installed_modes` and :func:`direction_problem`: what Apertium has here."""

    def modes(self, *names: str) -> str:
        path = self.mktemp()
        os.mkdir(path)
        for name in names:
            with open(os.path.join(path, f"{name}.mode"), "w") as f:
                f.write("cat\n")
        with open(os.path.join(path, "README"), "w") as f:
            f.write("not a mode\n")
        return path

    def test_installed_modes(self) -> None:
        path = self.modes("spa-eng", "eng-spa", "fra-cat")
        self.assertEqual(installed_modes(ApertiumSettings(modes_dir=path)), ["eng-spa", "fra-cat", "spa-eng"])
        self.assertEqual(installed_modes(ApertiumSettings(modes_dir="/nonexistent")), [])

    def test_direction_problem(self) -> None:
        self.patch(apertium_settings, "PROGRAMS", ("sh",))
        settings = ApertiumSettings(modes_dir=self.modes("eng-spa", "spa-eng", "fra-cat"))
        self.assertIsNone(direction_problem(settings, "en", "es"))
        self.assertIsNone(direction_problem(settings, "es-MX", "en-us"))
        problem = direction_problem(settings, "en", "fr")
        self.assertEqual(problem, "apertium cannot translate en→fr: its pairs are en→es, es→en ([apertium] pairs; "
                                  "installed modes: eng-spa, fra-cat, spa-eng); to add a pair, install its "
                                  "Debian package and add en-fr = \"<mode>\" to [apertium] pairs")
        missing = ApertiumSettings(modes_dir=self.modes("eng-spa"))
        problem = direction_problem(missing, "es", "en")
        assert problem is not None
        self.assertTrue(problem.startswith("apertium cannot translate es→en: no Apertium mode spa-eng"), problem)

    def test_pair_problem_says_both_ways_at_once(self) -> None:
        self.patch(apertium_settings, "PROGRAMS", ("sh",))
        settings = ApertiumSettings(modes_dir=self.modes("eng-spa", "spa-eng"))
        self.assertIsNone(pair_problem(settings, [("en", "es"), ("es", "en")]))
        problem = pair_problem(settings, [("en", "fr"), ("fr", "en")])
        assert problem is not None
        self.assertTrue(problem.startswith("apertium cannot translate en→fr or fr→en: its pairs are en→es, es→en"),
                        problem)
        self.assertIn('add en-fr = "<mode>" and fr-en = "<mode>" to [apertium] pairs', problem)
