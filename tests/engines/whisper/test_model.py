"""
Tests for :mod:`xlbridge.engines.whisper.model`: checking a model folder,
verifying and assembling a packaged model, and resolving the model at
start-up.  A model of a few kilobytes in two fake packages stands in for
Whisper base (:mod:`tests.engines.whisper.packages`); the folders searched
are temporary ones, never the virtualenv's.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any, Callable

import attrs
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.whisper import model
from xlbridge.engines.whisper.model import (
    STAMP,
    ModelProblem,
    assemble,
    check_folder,
    model_dirs,
    package_data,
    packages_installed,
    resolve,
    verify_packaged,
)

from tests.engines.whisper.folders import shaped_folder
from tests.engines.whisper.packages import PARTS, assembled_copy, install_packages, small_model


def count_hashes(test: SynchronousTestCase) -> list[str]:
    """Patch :func:`model.sha256_of` to record the files it hashes."""
    hashed: list[str] = []
    real = model.sha256_of

    def counting(path: str) -> str:
        hashed.append(path)
        return real(path)

    test.patch(model, "sha256_of", counting)
    return hashed


def patch_environ(test: SynchronousTestCase, **values: str | None) -> None:
    """``os.environ`` for the test, with ``values`` set (``None``: removed)."""
    env = dict(os.environ)
    for k, v in values.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    test.patch(os, "environ", env)


class CheckFolderTests(SynchronousTestCase):
    def test_usable(self) -> None:
        self.assertIsNone(check_folder(shaped_folder(self.mktemp())))

    def test_vocabulary_txt_will_do(self) -> None:
        path = shaped_folder(self.mktemp())
        os.rename(os.path.join(path, "vocabulary.json"), os.path.join(path, "vocabulary.txt"))
        self.assertIsNone(check_folder(path))

    def test_missing_directory(self) -> None:
        self.assertEqual(check_folder("/nonexistent/whisper"), "'/nonexistent/whisper' is not a directory")
        path = self.mktemp()
        open(path, "w").close()
        self.assertIn("is not a directory", check_folder(path) or "")

    def test_missing_files_named(self) -> None:
        path = shaped_folder(self.mktemp())
        os.unlink(os.path.join(path, "model.bin"))
        os.unlink(os.path.join(path, "vocabulary.json"))
        problem = check_folder(path) or ""
        self.assertIn("is not a CTranslate2 Whisper model", problem)
        self.assertIn("model.bin, vocabulary.json missing", problem)
        self.assertNotIn("config.json", problem)
        empty = self.mktemp()
        os.mkdir(empty)
        self.assertIn("config.json, model.bin, tokenizer.json, vocabulary.json missing", check_folder(empty) or "")

    def test_bad_config(self) -> None:
        path = shaped_folder(self.mktemp())
        config = os.path.join(path, "config.json")
        for content in ("{not json", "[1, 2]", ""):
            with open(config, "w") as f:
                f.write(content)
            problem = check_folder(path) or ""
            self.assertIn("config.json is unreadable or not JSON", problem, content)

    def test_truncated_model(self) -> None:
        path = shaped_folder(self.mktemp(), model_bin=b"\0" * 100)
        self.assertEqual(check_folder(path), f"{path}/model.bin is truncated (100 bytes)")


class VerifyPackagedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.model = small_model()
        self.path = assembled_copy(self.mktemp())
        self.model_bin = os.path.join(self.path, "model.bin")

    def test_intact(self) -> None:
        """The right size and hash: usable, and stamped with the hash, size and mtime."""
        self.assertIsNone(verify_packaged(self.path, self.model))
        with open(os.path.join(self.path, STAMP)) as f:
            stamp = f.read().split()
        st = os.stat(self.model_bin)
        self.assertEqual(stamp, [self.model.sha256, str(st.st_size), str(st.st_mtime_ns)])

    def test_stamp_avoids_rehashing(self) -> None:
        hashed = count_hashes(self)
        self.assertIsNone(verify_packaged(self.path, self.model))
        self.assertIsNone(verify_packaged(self.path, self.model))
        self.assertIsNone(verify_packaged(self.path, self.model))
        self.assertEqual(hashed, [self.model_bin])
        self.assertIsNone(verify_packaged(self.path, self.model, rehash=True))
        self.assertEqual(len(hashed), 2)

    def test_changed_file_is_rehashed(self) -> None:
        """Same size, new content and mtime: the stamp is stale, the hash finds the damage."""
        hashed = count_hashes(self)
        self.assertIsNone(verify_packaged(self.path, self.model))
        data = bytearray(b"".join(PARTS))
        data[2000] ^= 0xFF
        with open(self.model_bin, "wb") as f:
            f.write(data)
        st = os.stat(self.model_bin)
        os.utime(self.model_bin, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        problem = verify_packaged(self.path, self.model) or ""
        self.assertEqual(len(hashed), 2)
        self.assertIn("is corrupt", problem)
        self.assertIn("re-run xlbridge-models install", problem)

    def test_stale_stamp_is_rehashed(self) -> None:
        """A stamp whose size, mtime or hash does not match is ignored."""
        hashed = count_hashes(self)
        st = os.stat(self.model_bin)
        stale = [f"{self.model.sha256} {st.st_size + 1} {st.st_mtime_ns}",
                 f"{self.model.sha256} {st.st_size} {st.st_mtime_ns - 1}",
                 f"{'0' * 64} {st.st_size} {st.st_mtime_ns}", "garbage"]
        for n, content in enumerate(stale, 1):
            with open(os.path.join(self.path, STAMP), "w") as f:
                f.write(content)
            self.assertIsNone(verify_packaged(self.path, self.model), content)
            self.assertEqual(len(hashed), n, content)

    def test_stamp_trusted_for_an_unchanged_file(self) -> None:
        """Damage that kept size and mtime passes the stamp; ``rehash`` (``xlbridge-models check``) finds it."""
        self.assertIsNone(verify_packaged(self.path, self.model))
        st = os.stat(self.model_bin)
        with open(self.model_bin, "r+b") as f:
            f.seek(10)
            f.write(b"\xff")
        os.utime(self.model_bin, ns=(st.st_atime_ns, st.st_mtime_ns))
        self.assertIsNone(verify_packaged(self.path, self.model))
        self.assertIn("is corrupt", verify_packaged(self.path, self.model, rehash=True) or "")

    def test_wrong_size_is_partial(self) -> None:
        hashed = count_hashes(self)
        with open(self.model_bin, "ab") as f:
            f.write(b"more")
        problem = verify_packaged(self.path, self.model) or ""
        self.assertIn(f"has {self.model.size + 4} bytes, not {self.model.size}: partial", problem)
        self.assertEqual(hashed, [], "the size alone decides")
        self.assertFalse(os.path.exists(os.path.join(self.path, STAMP)))

    def test_wrong_hash_is_corrupt(self) -> None:
        wrong = attrs.evolve(self.model, sha256="ab" * 32)
        problem = verify_packaged(self.path, wrong) or ""
        self.assertIn("model.bin is corrupt: sha256 ", problem)
        self.assertIn("expected abababababababab...", problem)
        self.assertFalse(os.path.exists(os.path.join(self.path, STAMP)), "no stamp for a bad file")

    def test_folder_problem(self) -> None:
        os.unlink(os.path.join(self.path, "tokenizer.json"))
        self.assertIn("tokenizer.json missing", verify_packaged(self.path, self.model) or "")


class AssembleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.model = small_model()

    def test_packages_found(self) -> None:
        self.assertFalse(packages_installed(self.model))
        self.assertIsNone(package_data(self.model.packages[0]))
        root = install_packages(self, self.model)
        self.assertTrue(packages_installed(self.model))
        self.assertEqual(package_data(self.model.packages[1]), os.path.join(root, self.model.packages[1], "data"))

    def test_concatenation(self) -> None:
        """model.bin is the parts in order, the JSON files come from the last package, the result is stamped."""
        install_packages(self, self.model)
        target = os.path.join(self.mktemp(), "nested", self.model.name)
        self.assertEqual(assemble(target, self.model), target)
        with open(os.path.join(target, "model.bin"), "rb") as f:
            self.assertEqual(f.read(), PARTS[0] + PARTS[1])
        with open(os.path.join(target, "config.json")) as f:
            self.assertEqual(json.load(f), {"lang_ids": [1, 2], "suppress_ids": []})
        self.assertEqual(sorted(os.listdir(target)),
                         sorted([STAMP, "config.json", "model.bin", "tokenizer.json", "vocabulary.json"]))
        self.assertIsNone(verify_packaged(target, self.model, rehash=True))
        self.assertIsNone(check_folder(target))

    def test_model_is_readable_by_all(self) -> None:
        """0644, not mkstemp's 0600: a service user must read it."""
        install_packages(self, self.model)
        target = assemble(self.mktemp(), self.model)
        self.assertEqual(os.stat(os.path.join(target, "model.bin")).st_mode & 0o777, 0o644)

    def test_missing_package_names_the_distributions(self) -> None:
        install_packages(self, self.model)
        missing = attrs.evolve(self.model, packages=(self.model.packages[0], "xlbridge_no_such_package"))
        target = self.mktemp()
        e = self.assertRaises(ModelProblem, assemble, target, missing)
        self.assertIn("packages are not installed", str(e))
        self.assertIn(f"pip install '{self.model.distributions[0]}' '{self.model.distributions[1]}'", str(e))
        self.assertFalse(os.path.exists(target), "nothing written")

    def test_failure_leaves_no_temporary_file(self) -> None:
        """A part that cannot be read: no temporary file, and the model.bin already there is untouched."""
        install_packages(self, self.model, skip_files=[self.model.parts[1]])
        target = self.mktemp()
        os.mkdir(target)
        with open(os.path.join(target, "model.bin"), "wb") as f:
            f.write(b"old")
        e = self.assertRaises(ModelProblem, assemble, target, self.model)
        self.assertIn(f"cannot write the {self.model.name} model to {target}", str(e))
        self.assertEqual(os.listdir(target), ["model.bin"])
        with open(os.path.join(target, "model.bin"), "rb") as f:
            self.assertEqual(f.read(), b"old")

    def test_interrupted_write_leaves_no_temporary_file(self) -> None:
        """Even an exception that is not an OSError (Ctrl-C) removes the temporary file."""
        install_packages(self, self.model)
        target = self.mktemp()

        def interrupted(*args: Any) -> None:
            raise KeyboardInterrupt()

        self.patch(os, "replace", interrupted)
        self.assertRaises(KeyboardInterrupt, assemble, target, self.model)
        self.assertEqual(os.listdir(target), [])

    def test_unwritable_target(self) -> None:
        install_packages(self, self.model)
        blocker = self.mktemp()
        open(blocker, "w").close()
        e = self.assertRaises(ModelProblem, assemble, os.path.join(blocker, "model"), self.model)
        self.assertIn("cannot write the", str(e))

    def test_wrong_result_is_a_problem(self) -> None:
        """Parts that do not give the published hash: a problem, not a model."""
        install_packages(self, self.model, parts=(PARTS[0], PARTS[1][:-1] + b"X"))
        e = self.assertRaises(ModelProblem, assemble, self.mktemp(), self.model)
        self.assertIn("is corrupt", str(e))


class ModelDirsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.model = small_model()

    def test_order(self) -> None:
        """``$XLBRIDGE_MODEL_DIR`` first, then the virtualenv's share folder, then the user's cache."""
        patch_environ(self, XLBRIDGE_MODEL_DIR="/opt/models", XDG_CACHE_HOME="/var/cache/me")
        self.assertEqual(model_dirs(self.model), [
            os.path.join("/opt/models", self.model.name),
            os.path.join(sys.prefix, "share", "xlbridge", "models", self.model.name),
            os.path.join("/var/cache/me", "xlbridge", "models", self.model.name),
        ])

    def test_defaults(self) -> None:
        patch_environ(self, XLBRIDGE_MODEL_DIR=None, XDG_CACHE_HOME=None, HOME="/home/op")
        self.assertEqual(model_dirs(self.model), [
            os.path.join(sys.prefix, "share", "xlbridge", "models", self.model.name),
            os.path.join("/home/op", ".cache", "xlbridge", "models", self.model.name),
        ])
        patch_environ(self, XLBRIDGE_MODEL_DIR="~/models", HOME="/home/op")
        self.assertEqual(model_dirs(self.model)[0], os.path.join("/home/op", "models", self.model.name))


class ResolveTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.model = small_model()
        base = self.mktemp()
        self.dirs = [os.path.join(base, "first", self.model.name), os.path.join(base, "second", self.model.name)]
        dirs: Callable[..., list[str]] = lambda model=None: list(self.dirs)
        self.patch(model, "model_dirs", dirs)

    def test_configured_wins(self) -> None:
        """A configured folder is used even when a packaged copy is in place."""
        assembled_copy(self.dirs[0])
        configured = shaped_folder(self.mktemp())
        self.assertEqual(resolve(configured, self.model), model.Resolution(configured, "configured"))

    def test_bad_configured_folder_is_a_problem(self) -> None:
        """Never a silent switch to the packaged model: the problem names the setting."""
        assembled_copy(self.dirs[0])
        found = resolve("/nonexistent/whisper", self.model)
        self.assertIsNone(found.path)
        self.assertEqual(found.problem, "[local_asr.whisper] model: '/nonexistent/whisper' is not a directory")
        partial = shaped_folder(self.mktemp(), model_bin=b"x")
        self.assertIn("[local_asr.whisper] model:", resolve(partial, self.model).problem or "")
        self.assertIn("truncated", resolve(partial, self.model).problem or "")

    def test_packaged_copy(self) -> None:
        """The first intact copy, in search order."""
        assembled_copy(self.dirs[1])
        self.assertEqual(resolve(None, self.model), model.Resolution(self.dirs[1], "packaged"))
        assembled_copy(self.dirs[0])
        self.assertEqual(resolve(None, self.model), model.Resolution(self.dirs[0], "packaged"))

    def test_environment_folder_searched_first(self) -> None:
        """With the real :func:`model_dirs`: ``$XLBRIDGE_MODEL_DIR`` beats the cache folder."""
        self.patch(model, "model_dirs", model_dirs)
        env_dir, cache = self.mktemp(), self.mktemp()
        patch_environ(self, XLBRIDGE_MODEL_DIR=env_dir, XDG_CACHE_HOME=cache)
        in_cache = assembled_copy(os.path.join(cache, "xlbridge", "models", self.model.name))
        self.assertEqual(resolve(None, self.model, assemble_missing=False).path, in_cache)
        in_env = assembled_copy(os.path.join(env_dir, self.model.name))
        self.assertEqual(resolve(None, self.model, assemble_missing=False), model.Resolution(in_env, "packaged"))

    def test_assembled_when_packages_are_installed(self) -> None:
        install_packages(self, self.model)
        found = resolve(None, self.model)
        self.assertEqual(found, model.Resolution(self.dirs[0], "assembled"))
        self.assertIsNone(verify_packaged(self.dirs[0], self.model))
        self.assertEqual(resolve(None, self.model).source, "packaged", "the next start finds it")

    def test_assembled_in_the_next_writable_folder(self) -> None:
        install_packages(self, self.model)
        blocker = os.path.dirname(os.path.dirname(self.dirs[0]))
        os.makedirs(blocker)
        open(os.path.join(blocker, "first"), "w").close()  # a file where the folder would go
        self.assertEqual(resolve(None, self.model), model.Resolution(self.dirs[1], "assembled"))

    def test_partial_copy_is_repaired(self) -> None:
        install_packages(self, self.model)
        assembled_copy(self.dirs[0], parts=[PARTS[0]])
        self.assertEqual(resolve(None, self.model), model.Resolution(self.dirs[0], "assembled"))
        with open(os.path.join(self.dirs[0], "model.bin"), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), self.model.sha256)

    def test_no_assembly_when_not_asked(self) -> None:
        install_packages(self, self.model)
        found = resolve(None, self.model, assemble_missing=False)
        self.assertIsNone(found.path)
        self.assertFalse(os.path.exists(self.dirs[0]))

    def test_partial_copy_without_packages(self) -> None:
        assembled_copy(self.dirs[0], parts=[PARTS[0]])
        found = resolve(None, self.model)
        self.assertIsNone(found.path)
        self.assertIn("the Whisper model is not usable: ", found.problem or "")
        self.assertIn("partial", found.problem or "")

    def test_nothing_says_how_to_install(self) -> None:
        found = resolve(None, self.model)
        self.assertIsNone(found.path)
        problem = found.problem or ""
        self.assertIn("set [local_asr.whisper] model = PATH", problem)
        self.assertIn(f"pip install '{self.model.distributions[0]}' '{self.model.distributions[1]}'", problem)
        self.assertIn("xlbridge-models install", problem)
        self.assertFalse(any(os.path.exists(d) for d in self.dirs), "nothing written")

    def test_packaged_model_is_whisper_base(self) -> None:
        """Whisper base is published as two pinned parts, with the hash of the whole."""
        base = model.WHISPER_BASE
        self.assertEqual((len(base.packages), len(base.distributions), len(base.parts)), (2, 2, 2))
        self.assertTrue(all("==" in d for d in base.distributions), "pinned")
        self.assertEqual(len(base.sha256), 64)
