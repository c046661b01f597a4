"""
When the ARI events socket tries again, and what it says about each failure.

:class:`~xlbridge.ari.events.ARIEvents` owns the connection, its state and
its timers; this module holds the policy it follows and the words it uses,
with no state and no clock, so the schedule is tested as plain arithmetic
and every operator-facing line about a failed attempt is in one place.

* **Backoff.**  :func:`retry_delay`: ``initial`` (1 s) doubling per failure
  in a row up to ``maximum`` (60 s), each up to ``jitter`` (a fifth)
  shorter at random (injected) so that restarts do not synchronise.
  Jitter only shortens: the cap stays a cap.
* **Why, once per attempt.**  Autobahn's own per-attempt lines are silenced
  (the events protocol logs at "error" only), so each failed attempt is one
  warning built here: where it stopped (TCP connect, the HTTP upgrade, the
  start-up requests), the reason in a few words and when the next attempt
  is.  A refused upgrade is named by its status and what Asterisk said
  (:func:`upgrade_refusal`).
* **Refused (401/403).**  One error the first time (:data:`REFUSED`): the
  user, Asterisk's answer, the options to check
  (:func:`~xlbridge.ari.client.refusal_advice`), that calls on the fixed
  ports are unaffected, and that a fix in ``ari.conf`` is picked up without
  a restart (but a changed password file is not: :func:`restart_hint`).
  The same refusal again is one warning per attempt
  (:data:`STILL_REFUSED`).

The templates are Twisted log formats; :class:`ARIEvents` logs them with
its own logger, filling the fields each one names.
"""

from __future__ import annotations

import random as _random
from typing import Callable, Optional

from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.python.failure import Failure

from xlbridge.ari.client import describe_failure, http_answer

__all__ = [
    "CLOSED",
    "PREPARE_FAILED",
    "REFUSED",
    "RETRYING",
    "STILL_REFUSED",
    "connect_failure",
    "restart_hint",
    "retry_delay",
    "upgrade_failure",
    "upgrade_refusal",
]

#: A connection attempt failed (fields ``why``, ``delay``, ``n``: failures
#: in a row).
RETRYING = "ARI events: {why}; next attempt in {delay:.1f} s ({n} failed in a row)"

#: An open socket closed (fields ``code``, ``reason``, ``up``: seconds it
#: was open, ``delay``).
CLOSED = "ARI events closed ({code} {reason}) after {up:.1f} s; next attempt in {delay:.1f} s"

#: The start-up requests failed for a reason that may heal (fields ``why``,
#: ``delay``); the socket stays open.
PREPARE_FAILED = "ARI start-up requests failed: {why}; retrying them in {delay:.1f} s (events still arrive)"

#: Asterisk refused our user, logged once per new ``(status, answer)``
#: (fields ``user``, ``answer``, ``where``, ``advice``, ``every``: the
#: refused delay, ``restart``: :func:`restart_hint`).
REFUSED = (
    "ARI refused user {user!r}: {answer} on {where}.  {advice}.  xlbridge's ARI part is "
    "stopped (Stasis() fails at once in the dialplan); calls on the fixed ports (--ports, "
    "--audiosocket) are not affected.  Trying again every {every:g} s: a fix in ari.conf "
    "(then 'module reload res_ari.so') is picked up then{restart}"
)

#: The same refusal again (fields ``user``, ``answer``, ``where``, ``delay``).
STILL_REFUSED = "ARI still refuses user {user!r} ({answer} on {where}); next attempt in {delay:.1f} s"


def retry_delay(
    failures: int,
    initial: float = 1.0,
    maximum: float = 60.0,
    jitter: float = 0.2,
    random: Callable[[], float] = _random.random,
) -> float:
    """
    Seconds to wait after ``failures`` failures in a row (1 for the first):
    ``initial`` doubling each time up to ``maximum``, made up to ``jitter``
    (a fraction) shorter by ``random()`` in ``[0, 1)``.
    """
    n = min(max(1, failures) - 1, 64)
    ceiling = min(maximum, initial * 2.0**n)
    return ceiling * (1.0 - jitter * min(max(random(), 0.0), 1.0))


def restart_hint(status: int) -> str:
    """
    The end of the :data:`REFUSED` error: after a 401 the password may be
    the one to fix, and xlbridge reads its password file only at start.
    """
    return "; a changed --ari-password-file needs a restart of xlbridge" if status == 401 else ""


def upgrade_refusal(proto: WebSocketClientProtocol) -> Optional[tuple[int, str]]:
    """
    The status of a refused upgrade and what Asterisk said (status line and
    as much of the body as came with the headers), or ``None``.
    """
    parts = str(getattr(proto, "http_status_line", "") or "").split(None, 2)
    if len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) == 101:
        return None
    status = int(parts[1])
    head = getattr(proto, "http_response_data", b"") or b""
    data = getattr(proto, "data", b"") or b""
    body = data[len(head):] if head and data.startswith(head) else b""
    return status, http_answer(status, body.decode("utf-8", "replace"), parts[2] if len(parts) > 2 else "")


def connect_failure(address: str, timeout: float, failure: Failure, timed_out: bool) -> str:
    """
    Why the TCP connection to ``address`` was not made: our ``timeout``
    (seconds) ran out, or the reason of ``failure``.
    """
    if timed_out:
        return f"timed out: no connection to {address} within {timeout:g} s"
    return f"cannot connect to {address}: {describe_failure(failure)}"


def upgrade_failure(
    address: str, timeout: float, refusal: Optional[tuple[int, str]], timed_out: bool, reason: Optional[str]
) -> str:
    """
    Why the WebSocket upgrade failed, other than a refused user: Asterisk
    answered ``refusal`` (see :func:`upgrade_refusal`), or did not answer
    within ``timeout`` seconds, or the connection closed first (Autobahn's
    ``reason``).
    """
    if refusal is not None:
        return f"Asterisk refused the WebSocket upgrade: {refusal[1]}"
    if timed_out:
        return f"timed out: {address} did not answer the WebSocket upgrade within {timeout:g} s"
    return f"connection to {address} closed before the WebSocket upgrade ({reason})"
