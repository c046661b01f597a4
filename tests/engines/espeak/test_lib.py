"""
Tests for :mod:`xlbridge.engines.espeak.lib`: the ctypes binding to
libespeak-ng.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.base import EngineUnavailable
from xlbridge.engines.espeak.lib import ESpeakLibrary


class LibraryTests(SynchronousTestCase):
    def test_missing_library(self) -> None:
        e = self.assertRaises(EngineUnavailable, ESpeakLibrary, "/nonexistent/libespeak.so")
        self.assertIn("cannot load libespeak-ng", str(e))
