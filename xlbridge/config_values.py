"""
Parsers of single setting values: extension lists (and the AudioSocket
formats they may name), languages, payload types, numbers, choices,
booleans, addresses, endpoints, files.

Each takes the option's command-line name (for the error message) and the
raw value (a command-line string or a TOML value) and returns the parsed
value or raises :class:`~xlbridge.errors.ConfigError` naming the option.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from typing import Any, Callable, Mapping, cast

from twisted.internet.endpoints import serverFromString

from xlbridge.audio.codecs import CODEC_NAMES
from xlbridge.errors import ConfigError

#: The value that turns an optional listener off (``--monitor none``,
#: ``--ports none``).
NONE = "none"


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
    dup = {e for e in exts if exts.count(e) > 1} if len(exts) < 64 else duplicates(exts)
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


def duplicates(items: list[str]) -> set[str]:
    """
    The items that occur more than once in ``items``.
    """
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
    if not isinstance(spec, (str, list)):
        raise ConfigError(option, f"expected language codes like en,es, got {spec!r}")
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
    elif isinstance(spec, Mapping):
        items = dict(spec)
    else:
        raise ConfigError(option, f"expected codec=PT pairs like slin16=118 or a table, got {spec!r}")
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


def number_parser(kind: type, low: float, high: float) -> Callable[[str, Any], Any]:
    """
    A parser of ``kind`` (``int`` or ``float``) numbers within ``low..high``
    (NaN is outside every range).
    """

    what = "a whole number" if kind is int else "a number"

    def parse(option: str, value: Any) -> Any:
        # TOML gives bools and floats as themselves: ``true`` is not 1, and
        # 2.7 is not silently cut to 2 where a whole number is wanted.
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise ConfigError(option, f"{value!r} is not {what}")
        try:
            n = kind(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(option, f"{value!r} is not {what}") from None
        if not low <= n <= high:
            raise ConfigError(option, f"{n} is outside {low:g}..{high:g}")
        return n

    return parse


def choice_parser(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    """
    A parser of one of ``choices`` (case and surrounding blanks ignored);
    its error lists them.
    """

    def parse(option: str, value: Any) -> str:
        v = str(value).strip().lower()
        if v not in choices:
            raise ConfigError(option, f"{value!r} is not one of {', '.join(choices)}")
        return v

    return parse


def parse_text(option: str, value: Any) -> str:
    """
    Any value as stripped text.
    """
    return str(value).strip()


def parse_bool(option: str, value: Any) -> bool:
    """
    ``yes``/``true``/``on``/``1`` or ``no``/``false``/``off``/``0`` (or a
    TOML boolean).
    """
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("yes", "true", "on", "1"):
        return True
    if v in ("no", "false", "off", "0"):
        return False
    raise ConfigError(option, f"{value!r} is not yes or no")


def level_or_off_parser(low: float, high: float) -> Callable[[str, Any], Any]:
    """
    A parser of a level in dB within ``low..high``, or ``off`` (``None``).
    """
    number = number_parser(float, low, high)

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


def parse_ip_address(option: str, value: Any) -> str:
    """
    A literal IPv4 or IPv6 address to bind on (``127.0.0.1``, ``0.0.0.0``,
    ``::``).  The reactor binds UDP ports to literals only, so a host name
    would fail at start-up; it fails here instead.
    """
    text = str(value).strip()
    if not text:
        raise ConfigError(option, "empty bind address")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(option, f"{text!r} is not an IP address like 127.0.0.1, 0.0.0.0 or ::") from None
    return text


#: Endpoint types whose first argument (or ``port=``) is a TCP port.
_TCP_TYPES = ("tcp", "tcp6", "ssl")


def parse_listen_endpoint(option: str, value: Any) -> str:
    """
    A strports server description (``tcp:3001:interface=127.0.0.1``), or
    :data:`NONE`.  Checked as far as it can be without listening: Twisted's
    own parser takes the type and arguments apart (an ``ssl:`` endpoint
    reads its certificate here), and a TCP port must be within 0..65535.

    :return: the description, or ``"none"``.
    """
    text = str(value).strip()
    if text.lower() == NONE:
        return NONE
    example = "like tcp:3001:interface=127.0.0.1, or none"
    if not text:
        raise ConfigError(option, f"empty; give an endpoint {example}")
    try:
        # The endpoint is only built, never listened on: no reactor needed.
        serverFromString(cast(Any, None), text)
    except Exception as e:
        raise ConfigError(option, f"{text!r} is not an endpoint {example} ({e})") from None
    kind, *args = re.split(r"(?<!\\):", text)
    if kind.lower() in _TCP_TYPES:
        positional = [a for a in args if "=" not in a]
        named = dict(a.split("=", 1) for a in args if "=" in a)
        _port(option, named.get("port", positional[0] if positional else ""))
    return text


def parse_output_file(option: str, value: Any) -> str:
    """
    A file to append to (``--events``), checked without creating it (the
    service opens it later, after twistd has dropped privileges): its
    directory must exist, and the file must be writable or creatable there.

    :return: the path, or ``""`` for none.
    """
    path = str(value).strip()
    if not path:
        return ""
    if os.path.isdir(path):
        raise ConfigError(option, f"{path} is a directory, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(option, f"cannot write {path}: directory {folder} does not exist")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise ConfigError(option, f"cannot write {path}: permission denied")
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(option, f"cannot create {path}: directory {folder} is not writable")
    return path


def read_secret_file(option: str, path: str) -> str:
    """
    The stripped text of a file holding a secret (the ARI password).  The
    file must be readable by its owner only (mode 600 or 400): a secret
    that every local user can read is no secret.
    """
    try:
        with open(path, encoding="utf-8") as f:
            mode = os.fstat(f.fileno()).st_mode
            text = f.read().strip()
    except OSError as e:
        raise ConfigError(option, f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(option, f"{path} is not UTF-8 text") from None
    except (ValueError, TypeError) as e:  # a NUL in the path, a path that is no string
        raise ConfigError(option, f"{path!r} is not a file name: {e}") from None
    if mode & 0o044:
        who = " and ".join(w for bit, w in ((0o040, "its group"), (0o004, "other users")) if mode & bit)
        raise ConfigError(
            option, f"{path} is readable by {who} (mode {mode & 0o777:03o}); run: chmod 600 {shlex.quote(path)}"
        )
    if not text:
        raise ConfigError(option, f"{path} is empty")
    return text


def is_none(spec: Any) -> bool:
    """Whether an extension list says "none" (``none``, ``""`` or ``[]``)."""
    if isinstance(spec, list):
        return not spec
    return str(spec).strip().lower() in ("", NONE)


#: AudioSocket format names (as in Asterisk's ``c(...)`` and ExternalMedia
#: ``format``) and their sample rates in Hz: each is one audio kind
#: (0x10-0x18, PROTOCOLS.md 6).
AUDIOSOCKET_FORMATS: dict[str, int] = {
    "slin": 8000, "slin12": 12000, "slin16": 16000, "slin24": 24000, "slin32": 32000,
    "slin44": 44100, "slin48": 48000, "slin96": 96000, "slin192": 192000,
}


def split_audiosocket_formats(spec: str) -> tuple[str, dict[str, int]]:
    """
    Take the ``:FORMAT`` suffixes off an ``--audiosocket`` list
    (``7000=5050:slin16,7001=5052``): the list without them, and the
    sample rate in Hz each suffixed extension was given.
    """
    items, rates = [], {}
    for raw in spec.split(","):
        item, colon, fmt = raw.strip().partition(":")
        if colon:
            fmt = fmt.strip()
            if fmt not in AUDIOSOCKET_FORMATS:
                raise ConfigError(
                    "audiosocket",
                    f"unknown format {fmt!r} in {raw.strip()!r}: one of {', '.join(AUDIOSOCKET_FORMATS)}",
                )
            ext = item.partition("=")[0].strip()
            if "-" in ext:
                raise ConfigError("audiosocket", f"a format applies to one extension, not the range in {raw.strip()!r}")
            rates[ext] = AUDIOSOCKET_FORMATS[fmt]
        items.append(item)
    return ",".join(items), rates
