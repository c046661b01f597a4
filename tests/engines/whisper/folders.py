"""
Model folders for tests: the shape of a CTranslate2 Whisper model without
its weights (selection and checks read no weights), and where the real
packaged model is when this machine has it.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from xlbridge.engines.whisper.model import resolve


def shaped_folder(path: str, model_bin: bytes = b"\0" * 4096) -> str:
    """A folder that passes the cheap checks (config.json, model.bin, tokenizer.json, vocabulary.json)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"lang_ids": [], "suppress_ids": []}, f)
    with open(os.path.join(path, "model.bin"), "wb") as f:
        f.write(model_bin)
    for name in ("tokenizer.json", "vocabulary.json"):
        with open(os.path.join(path, name), "w") as f:
            f.write("{}")
    return path


def real_model() -> Optional[str]:
    """The packaged Whisper model folder if installed (``xlbridge-models install``), else ``None``."""
    return resolve(None, assemble_missing=False).path


NO_MODEL_REASON = "the Whisper model is not installed (sh scripts/setup.sh installs it)"
