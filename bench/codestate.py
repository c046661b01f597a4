"""
Which xlbridge a benchmark measured, for its result file: the tree's HEAD
(read with git, never written) and a digest of its ``xlbridge/*.py``, so a
run on a moving working tree (or a copy of one commit) can be told apart.
"""

from __future__ import annotations

import hashlib
import os
import subprocess


def code_state(root: str) -> dict[str, str]:
    """Which xlbridge was measured: the tree's HEAD (read-only) and a digest of its xlbridge/*.py."""
    h = hashlib.sha1()
    for dirpath, _dirs, files in sorted(os.walk(os.path.join(root, "xlbridge"))):
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), "rb") as f:
                    h.update(name.encode() + f.read())
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except OSError:
        head = ""
    return {"root": root, "git_head": head or os.path.basename(root), "xlbridge_py_sha1": h.hexdigest()[:12]}
