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
from typing import Any, Callable, Mapping, Optional, Sequence

import attrs

from xlbridge.errors import ConfigError

#: What to tell a user whose machine has no Apertium.
INSTALL_HINT = "install the Debian packages apertium apertium-eng-spa (apt-get install apertium apertium-eng-spa)"

#: Bridge language pair (``source-target``, base codes) → Apertium mode.
DEFAULT_PAIRS: Mapping[str, str] = types.MappingProxyType({"en-es": "eng-spa", "es-en": "spa-eng"})

#: Programs the pipeline needs besides the mode's own (``apertium`` package).
PROGRAMS = ("apertium-wblank-mode", "lt-proc")

_PAIR_RE = re.compile(r"^[a-z]{2,3}-[a-z]{2,3}$")
_MODE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _pairs(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError("config", f"[apertium] pairs must be a table like {{en-es = \"eng-spa\"}}, not {value!r}")
    out: dict[str, str] = {}
    for key, mode in value.items():
        pair = str(key).strip().lower()
        if not _PAIR_RE.match(pair):
            raise ConfigError("config", f"[apertium.pairs] {key!r} is not a pair like en-es")
        if not isinstance(mode, str) or not _MODE_RE.match(mode):
            raise ConfigError("config", f"[apertium.pairs] {key}: {mode!r} is not a mode name like eng-spa")
        out[pair] = mode
    return types.MappingProxyType(out)


def _positive(name: str) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not value > 0:
            raise ConfigError("config", f"[apertium] {name} must be > 0, not {value!r}")

    return check


def _number(kind: type, value: Any) -> Any:
    if isinstance(value, bool):
        raise ConfigError("config", f"[apertium] {value!r} is not a number")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError("config", f"[apertium] {value!r} is not a {kind.__name__}") from None


def _float(value: Any) -> float:
    return float(_number(float, value))


def _int(value: Any) -> int:
    return int(_number(int, value))


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

    modes_dir: str = attrs.field(default="/usr/share/apertium/modes", converter=str)
    pairs: Mapping[str, str] = attrs.field(default=DEFAULT_PAIRS, converter=_pairs)
    timeout_s: float = attrs.field(default=2.0, converter=_float, validator=_positive("timeout_s"))
    first_timeout_s: float = attrs.field(
        default=5.0, converter=_float, validator=_positive("first_timeout_s")
    )
    max_queue: int = attrs.field(default=32, converter=_int, validator=_positive("max_queue"))
    backoff_initial_s: float = attrs.field(
        default=0.1, converter=_float, validator=_positive("backoff_initial_s")
    )
    backoff_max_s: float = attrs.field(default=5.0, converter=_float, validator=_positive("backoff_max_s"))
    max_failures: int = attrs.field(default=3, converter=_int, validator=_positive("max_failures"))

    @classmethod
    def from_options(cls, table: Mapping[str, Any]) -> "ApertiumSettings":
        """
        Settings from the TOML file's ``[apertium]`` table, whose keys are
        the field names.  ``pairs`` ( ``[apertium.pairs]``) adds to or
        overrides :data:`DEFAULT_PAIRS`.

        :raises ConfigError: an unknown key or a bad value.
        """
        known = {a.name for a in attrs.fields(cls)}
        values = dict(table)
        for key in values:
            if key not in known:
                raise ConfigError("config", f"[apertium] unknown setting {key!r} (known: {', '.join(sorted(known))})")
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
