"""
The engine and language checks as ``twistd xlbridge`` meets them:
``--list-languages`` prints the table and exits 0; an impossible
``--langs`` or a typo in an engine section is a usage error naming the
option, and nothing is built.  (The checks themselves are tested in
:mod:`tests.engines.test_coverage` and :mod:`tests.engines.test_select`.)
"""

from __future__ import annotations

import contextlib
import io
import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from xlbridge import tap
from xlbridge.engines.apertium import settings as apertium_settings
from xlbridge.testing import MemoryUDPReactor


class StartUpTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(apertium_settings, "PROGRAMS", ("sh",))
        self.modes = self.mktemp()
        os.mkdir(self.modes)
        for mode in ("eng-spa", "spa-eng"):
            with open(os.path.join(self.modes, f"{mode}.mode"), "w") as f:
                f.write("cat\n")

    def config(self, extra: str = "") -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f'[apertium]\nmodes_dir = "{self.modes}"\n\n[local_asr]\nengine = "pocketsphinx"\n{extra}')
        return path

    def make(self, *args: str) -> None:
        options = tap.Options()
        options.parseOptions(["--monitor", "none", "--ports", "17777=0,18888=0", *args])
        tap.makeService(options, MemoryUDPReactor())

    def test_list_languages(self) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            e = self.assertRaises(SystemExit, tap.Options().parseOptions,
                                  ["--config", self.config(), "--list-languages"])
        self.assertEqual(e.code, 0)
        self.assertIn("Translation pairs, both ways:", out.getvalue())
        self.assertIn("en→es es→en", " ".join(out.getvalue().split()))

    def test_list_languages_is_in_help(self) -> None:
        self.assertIn("--list-languages", str(tap.Options()))

    def test_impossible_direction(self) -> None:
        e = self.assertRaises(usage.UsageError, self.make, "--config", self.config(), "--engines", "local",
                              "--langs", "en,fr")
        self.assertTrue(str(e).startswith("--langs: apertium cannot translate en→fr"), str(e))

    def test_not_a_language(self) -> None:
        e = self.assertRaises(usage.UsageError, self.make, "--config", self.config(), "--langs", "xx,yy")
        self.assertTrue(str(e).startswith("--langs: 'xx' is not a language code"), str(e))

    def test_typo_in_an_unused_engine_section(self) -> None:
        path = self.config('\n[deepgram]\nmodle = "nova-2"\n')
        e = self.assertRaises(usage.UsageError, self.make, "--config", path, "--engines", "relay")
        self.assertTrue(str(e).startswith("--config: deepgram.modle: unknown setting; did you mean model?"), str(e))

    def test_pairs_that_never_meet_are_not_checked(self) -> None:
        """en,es,es,en: two pairs of the same languages; fine. en,es,fr,fr: fr only meets fr (relayed)."""
        self.make("--config", self.config(), "--engines", "local", "--langs", "en,es,fr,fr",
                  "--ports", "17777=0,18888=0,17778=0,18889=0")
