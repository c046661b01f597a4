"""
Tests for :mod:`xlbridge.engines.espeak.lib`: the ctypes binding to
libespeak-ng.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from xlbridge.engines.base import EngineUnavailable
from xlbridge.engines.espeak.lib import ESpeakLibrary, espeak_available, installed_voices, read_voices


class LibraryTests(SynchronousTestCase):
    def test_missing_library(self) -> None:
        e = self.assertRaises(EngineUnavailable, ESpeakLibrary, "/nonexistent/libespeak.so")
        self.assertIn("cannot load libespeak-ng", str(e))


class VoicesTests(SynchronousTestCase):
    """:func:`read_voices` and :func:`installed_voices`: the voices espeak-ng's data holds."""

    def data(self) -> str:
        path = self.mktemp()
        for folder, name, lines in (("lang/roa", "fr", "name French\nlanguage fr\n"),
                                    ("lang/roa", "fr-BE", "name French (Belgium)\nlanguage fr-be\nlanguage fr 8\n"),
                                    ("lang/gmw", "en-US", "name English (America)\nlanguage en-us 2\nlanguage en 3\n"),
                                    ("voices/!v", "f3", "name female3\nlanguage variant\n")):
            os.makedirs(os.path.join(path, folder), exist_ok=True)
            with open(os.path.join(path, folder, name), "w") as f:
                f.write(lines)
        return path

    def test_read_voices(self) -> None:
        voices = read_voices(self.data())
        assert voices is not None
        self.assertEqual(dict(voices.languages), {"en": ("en-us",), "fr": ("fr", "fr-be")})
        for name in ("fr", "FR-be", "en-us", "en-us+f3", "French (Belgium)"):
            self.assertTrue(voices.has(name), name)
        self.assertFalse(voices.has("frx"))
        self.assertIsNone(read_voices(self.mktemp()))

    def test_installed_voices(self) -> None:
        path = self.data()
        from_data = installed_voices(data_path=path)
        assert from_data is not None
        self.assertIn("fr", from_data.languages)
        # Another library with its own default data: not known.
        self.assertIsNone(installed_voices(library_path="/usr/lib/libespeak-ng.so.1"))

    def test_bundled_voices(self) -> None:
        if not espeak_available():
            raise SkipTest("espeakng-loader (bundled libespeak-ng) is not installed")
        voices = installed_voices()
        assert voices is not None
        self.assertTrue(voices.has("en-us") and voices.has("es"))
        self.assertIn("fr", voices.languages)
