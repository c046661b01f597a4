"""
Checks shared by the engine sections of the TOML file (``[deepgram]``,
``[deepl]``, ``[elevenlabs]``, ``[apertium]``, ``[espeak]``, ``[local_asr]``
and its sub-tables), so that every message names the key the way the file
spells it, ``section.key`` (``deepgram.model``, ``espeak.rate_wpm``,
``local_asr.models.es.path``), and never an option that does not exist.

A value that came from an environment variable (``XLBRIDGE_DEEPGRAM_URL``)
is named by the variable instead (:class:`EnvironmentSettingError`).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterable, Mapping, Optional, TypeVar

from xlbridge.errors import ConfigError

__all__ = [
    "EnvironmentSettingError",
    "as_float",
    "as_int",
    "build_with_environment",
    "check_keys",
    "check_kinds",
    "kind_problem",
    "of_kind",
    "setting_error",
    "unknown_setting",
]


def setting_error(key: str, message: str) -> ConfigError:
    """
    The error for a bad value of the TOML key ``key`` (``deepgram.model``):
    ``--config: deepgram.model: <message>``.
    """
    return ConfigError("config", f"{key}: {message}")


class EnvironmentSettingError(ConfigError):
    """
    A bad or missing value that comes from an environment variable: the
    message names the variable (``XLBRIDGE_DEEPGRAM_URL: ...``), since no
    command-line option or TOML key was involved.

    :ivar option: the variable's name.
    """

    def __init__(self, variable: str, message: str) -> None:
        Exception.__init__(self, f"{variable}: {message}")
        self.option = variable
        self.message = message


_T = TypeVar("_T")


def build_with_environment(section: str, build: Callable[[dict[str, Any]], _T],
                           environment: Mapping[str, tuple[str, Any]], overrides: Mapping[str, Any]) -> _T:
    """
    ``build(values)``: the values the environment gives (``key -> (variable,
    value)``) under the ``overrides`` (the TOML table), so that a bad value
    that came from the environment is reported naming its variable.

    :raises ConfigError: from ``build``; an :class:`EnvironmentSettingError`
        when the bad key's value came from the environment.
    """
    values: dict[str, Any] = {key: value for key, (_, value) in environment.items()}
    values.update(overrides)
    try:
        return build(values)
    except ConfigError as e:
        for key, (variable, _) in environment.items():
            prefix = f"{section}.{key}: "
            if key not in overrides and e.option == "config" and e.message.startswith(prefix):
                raise EnvironmentSettingError(variable, e.message[len(prefix):]) from None
        raise


def unknown_setting(section: str, key: object, known: Iterable[str]) -> ConfigError:
    """
    ``--config: deepgram.modle: unknown setting; did you mean model? (known:
    api_key, base_url, ...)``: the closest known key when there is one, and
    always the whole list.
    """
    names = sorted(known)
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return setting_error(f"{section}.{key}", f"unknown setting; {hint}(known: {', '.join(names)})")


def check_keys(section: str, table: Any, known: Iterable[str]) -> Mapping[str, Any]:
    """
    ``table`` (the ``[section]`` table as parsed) if it is a table whose
    keys are all in ``known``.

    :raises ConfigError: naming ``section`` or the first unknown key.
    """
    if not isinstance(table, Mapping):
        raise setting_error(section, f"expected a table of settings, got {table!r}")
    names = list(known)
    for key in table:
        if key not in names:
            raise unknown_setting(section, key, names)
    return table


def kind_problem(value: Any, kind: type) -> Optional[str]:
    """
    Why ``value`` is not of ``kind`` (``bool``, ``int``, ``float``, ``str``,
    ``dict``), in words, or ``None``.  TOML's booleans are not numbers here,
    and an integer is a good float.
    """
    if kind is bool:
        ok = isinstance(value, bool)
        want = "true or false"
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "a whole number"
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        want = "a number"
    elif kind is str:
        ok = isinstance(value, str)
        want = "a string"
    elif kind is dict:
        ok = isinstance(value, Mapping)
        want = "a table"
    else:  # pragma: no cover - a programming error
        raise TypeError(kind)
    return None if ok else f"expected {want}, got {value!r}"


def check_kinds(section: str, values: Any, kinds: Mapping[str, type]) -> None:
    """
    Check the attributes of ``values`` (a settings object) named in
    ``kinds`` against their kinds (see :func:`kind_problem`).

    :raises ConfigError: naming ``section.key``.
    """
    for key, kind in kinds.items():
        problem = kind_problem(getattr(values, key), kind)
        if problem is not None:
            raise setting_error(f"{section}.{key}", problem)


def as_float(value: Any) -> Any:
    """
    An attrs converter: a number (not a boolean) as a ``float``; anything
    else unchanged, for an :func:`of_kind` validator to name.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def as_int(value: Any) -> Any:
    """
    An attrs converter: a whole ``float`` (``3.0``) as an ``int``;
    anything else unchanged, for an :func:`of_kind` validator to name.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def of_kind(section: str, kind: type) -> Callable[[Any, Any, Any], None]:
    """
    An attrs validator: the value is of ``kind`` (see :func:`kind_problem`),
    else a :class:`ConfigError` naming ``section.<attribute>``.
    """

    def check(instance: Any, attribute: Any, value: Any) -> None:
        problem = kind_problem(value, kind)
        if problem is not None:
            raise setting_error(f"{section}.{attribute.name}", problem)

    return check
