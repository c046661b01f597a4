"""
Packaging guards: every xlbridge package ships in the wheel, and the plugin
directory stays a namespace Twisted scans.
"""

from __future__ import annotations

import os
import tomllib

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PackagingTests(SynchronousTestCase):
    def test_every_package_is_listed(self) -> None:
        with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
            listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
        found = set()
        for dirpath, _, files in os.walk(os.path.join(ROOT, "xlbridge")):
            if "__init__.py" in files:
                found.add(os.path.relpath(dirpath, ROOT).replace(os.sep, "."))
        self.assertEqual(found - listed, set())
        self.assertIn("twisted.plugins", listed)

    def test_no_init_in_plugin_directories(self) -> None:
        # An __init__.py here makes Twisted skip the directory.
        self.assertFalse(os.path.exists(os.path.join(ROOT, "twisted", "__init__.py")))
        self.assertFalse(os.path.exists(os.path.join(ROOT, "twisted", "plugins", "__init__.py")))
