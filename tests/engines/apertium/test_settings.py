"""
Tests for :mod:`xlbridge.engines.apertium.settings`:
:class:`ApertiumSettings` from the TOML table, and the install check.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.apertium import settings as apertium_settings
from xlbridge.engines.apertium.settings import DEFAULT_PAIRS, ApertiumSettings, apertium_available, install_problem
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
