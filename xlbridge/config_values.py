"""
Parsers of single setting values: extension lists, languages, payload
types, numbers, choices, booleans.

Each takes the option's command-line name (for the error message) and the
raw value (a command-line string or a TOML value) and returns the parsed
value or raises :class:`~xlbridge.errors.ConfigError` naming the option.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from xlbridge.audio.codecs import CODEC_NAMES
from xlbridge.errors import ConfigError


def _port(option: str, text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ConfigError(option, f"{text!r} is not a port number") from None
    if not 0 <= n <= 65535:
        raise ConfigError(option, f"port {n} is outside 0..65535")
    return n


def parse_ports(spec: str, option: str = "ports") -> list[tuple[str, int]]:
    """
    Parse an extension list.

    ``EXT`` means extension EXT on UDP port EXT; ``EXT=PORT`` maps it
    elsewhere; ``A-B`` is the consecutive extensions A..B, each on its own
    number as port.  Items are comma separated.

    :return: ``(extension, port)`` in the order given.
    """
    out: list[tuple[str, int]] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        if "=" in item:
            ext, _, port = item.partition("=")
            ext = ext.strip()
            if not ext.isdigit():
                raise ConfigError(option, f"extension {ext!r} in {item!r} is not a number")
            out.append((ext, _port(option, port.strip())))
        elif "-" in item:
            lo_s, _, hi_s = item.partition("-")
            lo, hi = _port(option, lo_s.strip()), _port(option, hi_s.strip())
            if hi < lo:
                raise ConfigError(option, f"range {item!r} runs backwards")
            out.extend((str(n), n) for n in range(lo, hi + 1))
        else:
            out.append((item, _port(option, item)))
    if not out:
        raise ConfigError(option, "no extensions given")
    exts = [e for e, _ in out]
    dup = {e for e in exts if exts.count(e) > 1} if len(exts) < 64 else _dups(exts)
    if dup:
        raise ConfigError(option, f"extension {sorted(dup)[0]} is listed twice")
    ports = [p for _, p in out if p != 0]
    if len(set(ports)) != len(ports):
        raise ConfigError(
            option, f"two extensions share one {'TCP' if option == 'audiosocket' else 'UDP'} port"
        )
    if len(out) % 2:
        raise ConfigError(
            option,
            f"{len(out)} extensions given; extensions pair up in order (1st with 2nd, ...), "
            "so the count must be even",
        )
    return out


def _dups(items: list[str]) -> set[str]:
    seen: set[str] = set()
    dups: set[str] = set()
    for i in items:
        (dups if i in seen else seen).add(i)
    return dups


def parse_langs(spec: str | list[str], option: str = "langs") -> list[str]:
    """
    Parse ``en,es``: one language per extension in pair order, repeated per
    pair when shorter than the extension list.
    """
    items = spec if isinstance(spec, list) else spec.split(",")
    langs = [str(i).strip().lower() for i in items if str(i).strip()]
    if not langs:
        raise ConfigError(option, "no languages given")
    for lang in langs:
        if not lang.replace("-", "").isalpha() or len(lang) > 16:
            raise ConfigError(option, f"{lang!r} is not a language code like en or es")
    return langs


def parse_payload_types(spec: str | Mapping[str, Any], option: str = "payload-types") -> dict[str, int]:
    """
    Parse ``slin16=118,g722=9`` (or a TOML table) into codec -> PT.
    """
    if isinstance(spec, str):
        pairs = [i.partition("=") for i in spec.split(",") if i.strip()]
        items = {k.strip(): v.strip() for k, _, v in pairs}
    else:
        items = dict(spec)
    out: dict[str, int] = {}
    for name, value in items.items():
        if name not in CODEC_NAMES:
            raise ConfigError(option, f"unknown codec {name!r} (known: {', '.join(CODEC_NAMES)})")
        try:
            pt = int(value)
        except (TypeError, ValueError):
            raise ConfigError(option, f"payload type {value!r} for {name} is not a number") from None
        if not 0 <= pt <= 127:
            raise ConfigError(option, f"payload type {pt} for {name} is outside 0..127")
        out[name] = pt
    return out


def _number(kind: type, low: float, high: float) -> Callable[[str, Any], Any]:
    def parse(option: str, value: Any) -> Any:
        try:
            n = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(option, f"{value!r} is not a {kind.__name__}") from None
        if not low <= n <= high:
            raise ConfigError(option, f"{n} is outside {low:g}..{high:g}")
        return n

    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(option: str, value: Any) -> str:
        v = str(value).strip().lower()
        if v not in choices:
            raise ConfigError(option, f"{value!r} is not one of {', '.join(choices)}")
        return v

    return parse


def _text(option: str, value: Any) -> str:
    return str(value).strip()


def _bool(option: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("yes", "true", "on", "1"):
        return True
    if v in ("no", "false", "off", "0"):
        return False
    raise ConfigError(option, f"{value!r} is not yes or no")


def _level_or_off(low: float, high: float) -> Callable[[str, Any], Any]:
    number = _number(float, low, high)

    def parse(option: str, value: Any) -> Any:
        if value is False or str(value).strip().lower() in ("off", "none", "no", "false"):
            return None
        return number(option, value)

    return parse


def parse_port_range(option: str, spec: str) -> tuple[int, int]:
    """
    ``20000-29999`` -> ``(20000, 29999)``.
    """
    lo, sep, hi = str(spec).partition("-")
    if not sep:
        raise ConfigError(option, f"{spec!r} is not a range like 20000-29999")
    low, high = _port(option, lo.strip()), _port(option, hi.strip())
    if low == 0 or high < low:
        raise ConfigError(option, f"range {spec!r} is empty or runs backwards")
    return low, high


def checked_number(key: str, value: Any, kind: type, lo: float, hi: float) -> Any:
    """
    ``value`` from a TOML table as ``kind`` (``int`` or ``float``) within
    ``lo..hi``, or :class:`ConfigError` naming ``key`` (e.g.
    ``local_asr.whisper.beam_size``).  Booleans are not numbers here.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ConfigError("config", f"{key}: expected {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError("config", f"{key}: {value!r} is outside {lo}..{hi}")
    return kind(value)

def config_path(key: str, value: Any) -> str:
    """A model path from TOML (``~`` expanded); :class:`ConfigError` naming ``key`` if not a path."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("config", f"{key}: expected a path, got {value!r}")
    return os.path.expanduser(value)
