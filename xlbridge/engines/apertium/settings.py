"""
:class:`ApertiumSettings` (modes, pairs and limits), :data:`DEFAULT_PAIRS`
and the install check :func:`apertium_available`, for
:mod:`xlbridge.engines.apertium.mt`.
"""

from __future__ import annotations

import os
import re
import shutil
import types
from typing import Any, Mapping, Optional, Sequence

import attrs

from xlbridge.engines.options import as_float, as_int, check_keys, of_kind, setting_error

#: What to tell a user whose machine has no Apertium.
INSTALL_HINT = "install the Debian packages apertium apertium-eng-spa (apt-get install apertium apertium-eng-spa)"

#: Bridge language pair (``source-target``, base codes) → Apertium mode.
DEFAULT_PAIRS: Mapping[str, str] = types.MappingProxyType({"en-es": "eng-spa", "es-en": "spa-eng"})

#: Programs the pipeline needs besides the mode's own (``apertium`` package).
PROGRAMS = ("apertium-wblank-mode", "lt-proc")

_PAIR_RE = re.compile(r"^[a-z]{2,3}-[a-z]{2,3}$")
_MODE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


ENGINE = "apertium"


def _pairs(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise setting_error(f"{ENGINE}.pairs", f"expected a table like {{en-es = \"eng-spa\"}}, got {value!r}")
    out: dict[str, str] = {}
    for key, mode in value.items():
        pair = str(key).strip().lower()
        if not _PAIR_RE.match(pair):
            raise setting_error(f"{ENGINE}.pairs.{key}", "not a language pair like en-es")
        if not isinstance(mode, str) or not _MODE_RE.match(mode):
            raise setting_error(f"{ENGINE}.pairs.{key}", f"{mode!r} is not a mode name like eng-spa")
        out[pair] = mode
    return types.MappingProxyType(out)


def _positive(instance: Any, attribute: "attrs.Attribute[Any]", value: Any) -> None:
    if not value > 0:
        raise setting_error(f"{ENGINE}.{attribute.name}", f"must be > 0, got {value!r}")


_FLOAT = of_kind(ENGINE, float)
_INT = of_kind(ENGINE, int)


def _modes_dir(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise setting_error(f"{ENGINE}.modes_dir", f"expected the path of Apertium's modes directory, got {value!r}")
    return value


@attrs.frozen
class ApertiumSettings:
    """
    Where Apertium's modes are, which pairs to offer, and the time limits.
    Bad values raise :class:`~xlbridge.errors.ConfigError`.

    :ivar modes_dir: directory of ``<mode>.mode`` files.
    :ivar pairs: ``"source-target"`` (base codes) → mode name; the default
        is :data:`DEFAULT_PAIRS`.
    :ivar timeout_s: seconds a sentence may take before the pipeline counts
        as hung and is restarted.
    :ivar first_timeout_s: the same for the first sentence after a spawn,
        which loads the transducers (~120 ms on an idle machine).
    :ivar max_queue: requests that may wait per direction behind the one in
        flight; more are refused at once.
    :ivar backoff_initial_s: delay before respawning after a failure; it
        doubles with each failure in a row up to ``backoff_max_s``.
    :ivar max_failures: failures in a row after which waiting requests are
        failed rather than kept waiting.
    """

    modes_dir: str = attrs.field(default="/usr/share/apertium/modes", converter=_modes_dir)
    pairs: Mapping[str, str] = attrs.field(default=DEFAULT_PAIRS, converter=_pairs)
    timeout_s: float = attrs.field(default=2.0, converter=as_float, validator=[_FLOAT, _positive])
    first_timeout_s: float = attrs.field(default=5.0, converter=as_float, validator=[_FLOAT, _positive])
    max_queue: int = attrs.field(default=32, converter=as_int, validator=[_INT, _positive])
    backoff_initial_s: float = attrs.field(default=0.1, converter=as_float, validator=[_FLOAT, _positive])
    backoff_max_s: float = attrs.field(default=5.0, converter=as_float, validator=[_FLOAT, _positive])
    max_failures: int = attrs.field(default=3, converter=as_int, validator=[_INT, _positive])

    @classmethod
    def from_options(cls, table: Mapping[str, Any]) -> "ApertiumSettings":
        """
        Settings from the TOML file's ``[apertium]`` table, whose keys are
        the field names.  ``pairs`` ( ``[apertium.pairs]``) adds to or
        overrides :data:`DEFAULT_PAIRS`.

        :raises ConfigError: an unknown key or a bad value, naming
            ``apertium.<key>``.
        """
        values = dict(check_keys(ENGINE, table, [a.name for a in attrs.fields(cls)]))
        if "pairs" in values:
            values["pairs"] = {**DEFAULT_PAIRS, **_pairs(values["pairs"])}
        return cls(**values)

    def mode_path(self, mode: str) -> str:
        """
        The mode file for ``mode``.
        """
        return os.path.join(self.modes_dir, f"{mode}.mode")


def install_problem(settings: ApertiumSettings, modes: Sequence[str]) -> Optional[str]:
    """
    Why these modes cannot run here, or ``None``.  Cheap file checks only.
    """
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"Apertium is not installed ({', '.join(missing)} not found): {INSTALL_HINT}"
    for mode in modes:
        path = settings.mode_path(mode)
        if not os.path.isfile(path):
            return f"no Apertium mode {mode} ({path} not found): {INSTALL_HINT}, or the package for {mode}"
    return None


def apertium_available(settings: ApertiumSettings) -> bool:
    """
    Whether Apertium can run every configured pair: its programs are on
    ``PATH`` and each pair's mode file exists.  For the start-up decision
    between local and no MT; only looks at files.
    """
    return install_problem(settings, sorted(set(settings.pairs.values()))) is None


def installed_modes(settings: ApertiumSettings) -> list[str]:
    """
    The modes Apertium has on this machine: the ``<mode>.mode`` files of
    ``modes_dir`` (where ``apertium`` itself looks them up), sorted; empty
    when there is no such directory.
    """
    try:
        names = os.listdir(settings.modes_dir)
    except OSError:
        return []
    return sorted(name[: -len(".mode")] for name in names if name.endswith(".mode"))


def _base(code: str) -> str:
    return str(code).strip().lower().replace("_", "-").split("-")[0]


def direction_problem(settings: ApertiumSettings, source: str, target: str) -> Optional[str]:
    """
    Why Apertium cannot translate ``source`` → ``target`` (bridge codes) on
    this machine, naming the pairs it has and the modes installed, or
    ``None``.  Cheap file checks only.
    """
    return pair_problem(settings, [(source, target)])


def pair_problem(settings: ApertiumSettings, directions: Sequence[tuple[str, str]]) -> Optional[str]:
    """
    Why Apertium cannot translate every one of ``directions`` (both ways of
    a pair of callers, usually), in one sentence, or ``None``: the
    directions ``[apertium] pairs`` lacks, with the pairs it has, the modes
    installed and what to add; else the first one whose mode is not
    installed.
    """
    lacking = [(s, t) for s, t in directions if f"{_base(s)}-{_base(t)}" not in settings.pairs]
    if lacking:
        what = " or ".join(f"{s}→{t}" for s, t in lacking)
        adds = " and ".join(f"{_base(s)}-{_base(t)} = \"<mode>\"" for s, t in lacking)
        pairs = ", ".join(p.replace("-", "→") for p in sorted(settings.pairs))
        modes = ", ".join(installed_modes(settings)) or "none"
        return (f"apertium cannot translate {what}: its pairs are {pairs} ([apertium] pairs; "
                f"installed modes: {modes}); to add a pair, install its Debian package and add {adds} "
                "to [apertium] pairs")
    for source, target in directions:
        problem = install_problem(settings, [settings.pairs[f"{_base(source)}-{_base(target)}"]])
        if problem is not None:
            return f"apertium cannot translate {source}→{target}: {problem}"
    return None
