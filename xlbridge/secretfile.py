"""
Whether a settings file that holds a secret can be read by other users.

The TOML file (``--config``) may hold the engines' API keys (``[deepgram]
api_key``, ``[deepl] auth_key``, ``[elevenlabs] api_key``) and the monitor's
tokens (``[monitor] token``, ``listen_token``).  A file like that which every
local user can read gives every local user the keys, so xlbridge warns at
start-up (a warning, not a refusal: the file is the operator's, and a
sample copied with the default umask is 644; refusing would turn an upgrade
into an outage).

Only *other users* count, not the file's group: the documented layout is
``root:xlbridge`` with mode 640, where the service reads the file through
its group.  The ARI password file is stricter and already refused when its
group or others can read it (:func:`xlbridge.config_values.read_secret_file`);
this module does not change that.

Pure functions with no logging of their own, so the caller (the config
loader or the twistd plugin) decides where the warning goes, and the tests
need no reactor.  The message names the file, what secret it holds (by
setting name, never the value), its mode and the fix.
"""

from __future__ import annotations

import os
import shlex
import stat
import tomllib
from typing import Any, Iterable, Mapping, Optional

#: ``(section, key)`` of the TOML settings that hold a secret.
SECRET_SETTINGS: tuple[tuple[str, str], ...] = (
    ("monitor", "token"),
    ("monitor", "listen_token"),
    ("deepgram", "api_key"),
    ("deepl", "auth_key"),
    ("elevenlabs", "api_key"),
)


def readable_by_others(path: str) -> bool:
    """
    Whether users other than the file's owner and group may read ``path``
    (the "other" read bit; a symbolic link is followed, since the target's
    mode is what protects the text).

    :raises OSError: ``path`` cannot be examined.
    """
    return bool(os.stat(path).st_mode & stat.S_IROTH)


def secrets_in(data: Mapping[str, Any]) -> list[str]:
    """
    The secret settings a parsed TOML file sets to a non-blank value, as
    ``section.key`` (``["deepgram.api_key", "monitor.token"]``), in
    :data:`SECRET_SETTINGS` order.  Blank values hold nothing to protect.
    """
    found = []
    for section, key in SECRET_SETTINGS:
        table = data.get(section)
        if isinstance(table, Mapping):
            value = table.get(key)
            if isinstance(value, str) and value.strip():
                found.append(f"{section}.{key}")
    return found


def permission_warning(path: str, holds_secret: bool, secrets: Iterable[str] = ()) -> Optional[str]:
    """
    The start-up warning for ``path``, or ``None`` when there is nothing to
    say: it holds no secret, others cannot read it, or it cannot be
    examined (whoever reads the file reports that, with its own message).

    :param holds_secret: the file sets a key, token or password.
    :param secrets: which ones, as ``section.key`` (:func:`secrets_in`),
        named in the message; their values never are.
    """
    if not holds_secret:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if not mode & stat.S_IROTH:
        return None
    names = list(secrets)
    what = f"secrets ({', '.join(names)})" if names else "a key, token or password"
    quoted = shlex.quote(path)
    return (
        f"{path} holds {what} and is readable by other users (mode {stat.S_IMODE(mode):03o}); "
        f"run: chmod 600 {quoted} (or chmod 640 {quoted} if xlbridge reads it through its group)"
    )


def config_file_warning(path: str) -> Optional[str]:
    """
    :func:`permission_warning` for a TOML settings file, finding its
    secrets itself: one call for the config loader.  A file that cannot be
    read or parsed gives ``None`` (the loader's own error says why).
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    names = secrets_in(data)
    return permission_warning(path, bool(names), names)
