"""
Tests for ``xlbridge-models`` (:func:`xlbridge.engines.whisper.install.main`):
its exit codes and messages, on the small fake packaged model of
:mod:`tests.engines.whisper.packages` in temporary folders.

``install.py`` uses :data:`~xlbridge.engines.whisper.model.WHISPER_BASE`
through its names and the functions' defaults, so the test patches those
names in :mod:`~xlbridge.engines.whisper.install` with the small model
bound in; the folders searched are temporary, never the virtualenv's.
"""

from __future__ import annotations

import functools
import io
import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.whisper import install, model
from xlbridge.engines.whisper.model import STAMP, verify_packaged

from tests.engines.whisper.folders import shaped_folder
from tests.engines.whisper.packages import PARTS, assembled_copy, install_packages, small_model


class InstallCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.model = small_model()
        base = os.path.abspath(self.mktemp())
        self.dirs = [os.path.join(base, "first", self.model.name), os.path.join(base, "second", self.model.name)]

        def dirs(m: model.PackagedModel = self.model) -> list[str]:
            return list(self.dirs)

        self.patch(model, "model_dirs", dirs)
        self.patch(install, "model_dirs", dirs)
        self.patch(install, "WHISPER_BASE", self.model)
        self.patch(install, "assemble", functools.partial(model.assemble, model=self.model))
        self.patch(install, "verify_packaged", functools.partial(model.verify_packaged, model=self.model))
        self.patch(install, "resolve", functools.partial(model.resolve, model=self.model))
        self.out, self.err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", self.out)
        self.patch(sys, "stderr", self.err)

    def run_main(self, *argv: str) -> int:
        return install.main(list(argv))

    # -- install

    def test_install_assembles(self) -> None:
        install_packages(self, self.model)
        self.assertEqual(self.run_main("install"), 0)
        self.assertIn(f"{self.model.name} assembled in {self.dirs[0]}", self.out.getvalue())
        self.assertIn(f"sha256 {self.model.sha256[:16]}... verified", self.out.getvalue())
        self.assertEqual(self.err.getvalue(), "")
        self.assertIsNone(verify_packaged(self.dirs[0], self.model, rehash=True))
        with open(os.path.join(self.dirs[0], "model.bin"), "rb") as f:
            self.assertEqual(f.read(), b"".join(PARTS))

    def test_install_already_in_place(self) -> None:
        """An intact copy in any folder searched: nothing to do, even without the packages."""
        assembled_copy(self.dirs[1])
        self.assertEqual(self.run_main("install"), 0)
        self.assertEqual(self.out.getvalue().strip(),
                         f"xlbridge-models: {self.model.name} is already in place in {self.dirs[1]}")
        self.assertFalse(os.path.exists(self.dirs[0]))

    def test_install_into_the_next_writable_folder(self) -> None:
        install_packages(self, self.model)
        first_parent = os.path.dirname(self.dirs[0])
        os.makedirs(os.path.dirname(first_parent))
        open(first_parent, "w").close()
        self.assertEqual(self.run_main("install"), 0)
        self.assertIn(f"assembled in {self.dirs[1]}", self.out.getvalue())

    def test_install_dir_option(self) -> None:
        install_packages(self, self.model)
        where = os.path.abspath(self.mktemp())
        self.assertEqual(self.run_main("install", "--dir", where), 0)
        target = os.path.join(where, self.model.name)
        self.assertIn(f"assembled in {target}", self.out.getvalue())
        self.assertIsNone(verify_packaged(target, self.model))
        self.assertFalse(os.path.exists(self.dirs[0]))

    def test_install_without_packages(self) -> None:
        """Exit 1, naming the pip distributions, once (not once per folder); nothing written."""
        self.assertEqual(self.run_main("install"), 1)
        err = self.err.getvalue()
        self.assertTrue(err.startswith("xlbridge-models: the "), err)
        self.assertIn(f"pip install '{self.model.distributions[0]}' '{self.model.distributions[1]}'", err)
        self.assertEqual(err.count("not installed"), 1)
        self.assertEqual(self.out.getvalue(), "")
        self.assertFalse(any(os.path.exists(d) for d in self.dirs))

    def test_install_repairs_a_partial_copy(self) -> None:
        install_packages(self, self.model)
        assembled_copy(self.dirs[0], parts=[PARTS[0]])
        self.assertEqual(self.run_main("install"), 0)
        self.assertIn(f"assembled in {self.dirs[0]}", self.out.getvalue())
        self.assertIsNone(verify_packaged(self.dirs[0], self.model, rehash=True))

    def test_install_fails_everywhere(self) -> None:
        """Parts that do not give the published hash: exit 1 with each folder's problem."""
        install_packages(self, self.model, parts=(PARTS[0], PARTS[1][:-1] + b"X"))
        self.assertEqual(self.run_main("install"), 1)
        err = self.err.getvalue()
        self.assertEqual(err.count("is corrupt"), 2, err)
        self.assertIn(self.dirs[0], err)
        self.assertIn(self.dirs[1], err)

    # -- check

    def test_check_intact(self) -> None:
        assembled_copy(self.dirs[0])
        self.assertEqual(self.run_main("check"), 0)
        self.assertEqual(self.out.getvalue().strip(),
                         f"xlbridge-models: {self.dirs[0]} is a usable Whisper model (packaged)")

    def test_check_rehashes(self) -> None:
        """Damage hidden from the stamp (same size and mtime) is found: check always hashes."""
        path = assembled_copy(self.dirs[0])
        self.assertIsNone(verify_packaged(path, self.model))
        self.assertTrue(os.path.exists(os.path.join(path, STAMP)))
        model_bin = os.path.join(path, "model.bin")
        st = os.stat(model_bin)
        with open(model_bin, "r+b") as f:
            f.write(b"\xff\xff")
        os.utime(model_bin, ns=(st.st_atime_ns, st.st_mtime_ns))
        self.assertEqual(self.run_main("check"), 1)
        self.assertIn("is corrupt", self.err.getvalue())

    def test_check_does_not_assemble(self) -> None:
        install_packages(self, self.model)
        self.assertEqual(self.run_main("check"), 1)
        self.assertIn("no Whisper model", self.err.getvalue())
        self.assertFalse(any(os.path.exists(d) for d in self.dirs))

    def test_check_configured_folder(self) -> None:
        path = shaped_folder(os.path.abspath(self.mktemp()))
        self.assertEqual(self.run_main("check", "--model", path), 0)
        self.assertIn(f"{path} is a usable Whisper model (configured)", self.out.getvalue())
        self.assertEqual(self.run_main("check", "--model", "/nonexistent/whisper"), 1)
        self.assertIn("[local_asr.whisper] model: '/nonexistent/whisper' is not a directory", self.err.getvalue())

    # -- path

    def test_path(self) -> None:
        assembled_copy(self.dirs[1])
        self.assertEqual(self.run_main("path"), 0)
        self.assertEqual(self.out.getvalue(), self.dirs[1] + "\n")

    def test_path_without_a_model(self) -> None:
        self.assertEqual(self.run_main("path"), 1)
        self.assertEqual(self.out.getvalue(), "")
        self.assertIn("xlbridge-models install", self.err.getvalue())

    def test_unknown_command(self) -> None:
        e = self.assertRaises(SystemExit, self.run_main, "download")
        self.assertEqual(e.code, 2)
        self.assertIn("invalid choice", self.err.getvalue())
