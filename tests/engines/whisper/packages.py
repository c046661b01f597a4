"""
A small packaged model for tests: a :class:`PackagedModel` whose parts are
a few kilobytes, published as two importable packages in a temporary
folder put on ``sys.path``, and assembled copies of it.  Nothing here
touches the real model or the virtualenv.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import uuid
from typing import Sequence

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.whisper.model import PackagedModel

from tests.engines.whisper.folders import shaped_folder

#: The two parts of the small model's ``model.bin`` (3000 + 2000 bytes).
PARTS = (bytes(range(256)) * 11 + bytes(184), bytes(reversed(range(256))) * 7 + b"tail" * 52)
CONFIG = {"lang_ids": [1, 2], "suppress_ids": []}


def small_model(parts: Sequence[bytes] = PARTS, name: str = "", sha256: str = "") -> PackagedModel:
    """A :class:`PackagedModel` for ``parts`` under unique import names (``sha256`` overrides the real hash)."""
    tag = uuid.uuid4().hex[:10]
    whole = b"".join(parts)
    return PackagedModel(
        name=name or f"tiny-{tag}",
        packages=tuple(f"xlbridge_test_model_{tag}_{i + 1}" for i in range(len(parts))),
        distributions=tuple(f"tiny-model-{tag}-{i + 1}==1.0" for i in range(len(parts))),
        parts=tuple(f"model.bin.part{i + 1}" for i in range(len(parts))),
        extra_files=("config.json", "tokenizer.json", "vocabulary.json"),
        size=len(whole),
        sha256=sha256 or hashlib.sha256(whole).hexdigest(),
        licence="test",
    )


def install_packages(test: SynchronousTestCase, model: PackagedModel, parts: Sequence[bytes] = PARTS,
                     skip_files: Sequence[str] = ()) -> str:
    """
    Write ``model``'s packages (``data/<part>``; the JSON files in the last
    one) in a temporary folder and put it on ``sys.path`` for the test;
    ``skip_files`` are left out.  Returns the folder.
    """
    root = os.path.abspath(test.mktemp())
    for i, (package, part) in enumerate(zip(model.packages, model.parts)):
        data = os.path.join(root, package, "data")
        os.makedirs(data)
        with open(os.path.join(root, package, "__init__.py"), "w") as f:
            f.write("")
        files = {part: parts[i]}
        if i == len(model.packages) - 1:
            files.update({"config.json": json.dumps(CONFIG).encode(), "tokenizer.json": b'{"model": {}}',
                          "vocabulary.json": b'["a", "b"]'})
        for name, content in files.items():
            if name not in skip_files:
                with open(os.path.join(data, name), "wb") as f:
                    f.write(content)
    test.patch(sys, "path", [root, *sys.path])
    importlib.invalidate_caches()
    return root


def assembled_copy(path: str, parts: Sequence[bytes] = PARTS) -> str:
    """An assembled-looking model folder in ``path`` whose ``model.bin`` is ``parts`` joined."""
    return shaped_folder(path, model_bin=b"".join(parts))
