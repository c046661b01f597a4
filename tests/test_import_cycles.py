"""
Tests for ``scripts/import_cycles.py``, the check that keeps ``xlbridge/``
free of import cycles (run by tox and by ``scripts/test.sh``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "import_cycles.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_cycles", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ImportCycleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.check = _load()
        self.root = Path(self.mktemp()) / "pkg"
        (self.root / "sub").mkdir(parents=True)
        for init in (self.root / "__init__.py", self.root / "sub" / "__init__.py"):
            init.write_text("")

    def write(self, name: str, text: str) -> None:
        (self.root / name).write_text(text)

    def found(self) -> list[list[str]]:
        return [c for c in self.check.cycles(self.check.graph(self.root))]

    def test_no_cycle(self) -> None:
        self.write("a.py", "from pkg.b import x\n")
        self.write("b.py", "x = 1\n")
        self.assertEqual(self.found(), [])

    def test_module_level_cycle(self) -> None:
        self.write("a.py", "from pkg.b import x\ny = 2\n")
        self.write("b.py", "x = 1\nfrom pkg.a import y\n")
        self.assertEqual(self.found(), [["pkg.a", "pkg.b"]])

    def test_function_local_import_counts(self) -> None:
        self.write("a.py", "from pkg.b import x\n")
        self.write("b.py", "x = 1\ndef f():\n    from pkg import a\n    return a\n")
        self.assertEqual(self.found(), [["pkg.a", "pkg.b"]])

    def test_type_checking_import_counts(self) -> None:
        self.write("a.py", "from pkg.b import x\n")
        self.write(
            "b.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\nx = 1\n",
        )
        self.assertEqual(self.found(), [["pkg.a", "pkg.b"]])

    def test_relative_imports_resolve(self) -> None:
        self.write("sub/c.py", "from ..d import z\n")
        self.write("d.py", "from .sub.c import w\nz = 0\n")
        self.assertEqual(self.found(), [["pkg.d", "pkg.sub.c"]])

    def test_three_module_ring(self) -> None:
        self.write("a.py", "import pkg.b\n")
        self.write("b.py", "import pkg.c\n")
        self.write("c.py", "import pkg.a\n")
        self.assertEqual(self.found(), [["pkg.a", "pkg.b", "pkg.c"]])

    def test_exit_status_and_message(self) -> None:
        self.write("a.py", "from pkg.b import x\ny = 2\n")
        self.write("b.py", "x = 1\nfrom pkg.a import y\n")
        run = subprocess.run([sys.executable, str(SCRIPT), str(self.root)], capture_output=True, text=True)
        self.assertEqual(run.returncode, 1)
        self.assertIn("import cycle: pkg.a <-> pkg.b", run.stdout)
        (self.root / "b.py").write_text("x = 1\n")
        run = subprocess.run([sys.executable, str(SCRIPT), str(self.root)], capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stdout)
