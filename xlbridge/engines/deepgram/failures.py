"""
Deepgram live ASR, failure policy: how a refused upgrade, a failed connect
or an unexpected close maps to an :class:`~xlbridge.engines.base.EngineError`
(which says whether a retry may help), and how long to wait before the
retry (:func:`backoff_delay`).  The same for ``/v1/listen`` and Flux's
``/v2/listen`` (PROTOCOLS.md 2.5, 11.1: the same upgrade refusals).

Pure functions, no socket or clock: the connection
(:mod:`xlbridge.engines.deepgram.connection`) collects the facts of a
failure and asks here what it means.  Moved out of
:mod:`~xlbridge.engines.deepgram.settings`, which still re-exports them.

Errors
------

An upgrade refused with 401/403 is an
:class:`~xlbridge.engines.base.EngineAuthError`, 402 an
:class:`~xlbridge.engines.base.EngineQuotaError`, 400 and other 4xx an
:class:`~xlbridge.engines.base.EngineRequestError` (none is retried);
408, 429, 5xx, drops and ``NET-`` closes are
:class:`~xlbridge.engines.base.EngineUnavailable` (retried with backoff).
Close reasons are keyed on their prefix (``NET-``, ``DATA-``), not the
close code, because the documented codes disagree (PROTOCOLS.md 2.5).
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

from xlbridge.engines.base import (
    EngineAuthError,
    EngineError,
    EngineQuotaError,
    EngineRequestError,
    EngineUnavailable,
    redact,
)

__all__ = [
    "ENGINE",
    "backoff_delay",
    "classify_close",
    "classify_upgrade_failure",
    "close_error",
]

ENGINE = "deepgram"


def backoff_delay(
    attempt: int,
    initial: float,
    maximum: float,
    factor: float = 2.0,
    random: Callable[[], float] = lambda: 1.0,
) -> float:
    """
    Seconds to wait before reconnect attempt number ``attempt``.

    Exponential with "equal jitter": the ceiling ``min(maximum, initial *
    factor ** (attempt - 1))`` is halved and the other half is random, so
    legs that dropped together do not reconnect together, the delay never
    reaches zero, and never exceeds ``maximum``.

    :param attempt: consecutive failures so far, 1 for the first retry.
    :param random: returns a float in ``[0, 1)`` (injected for tests).
    """
    n = max(1, attempt) - 1
    # Cap the exponent so huge attempt counts cannot overflow a float.
    ceiling = min(maximum, initial * factor ** min(n, 64))
    return ceiling / 2 + ceiling / 2 * min(max(random(), 0.0), 1.0)


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, redact(secret)) if secret else text


def classify_upgrade_failure(
    status: int, dg_error: Optional[str], request_id: Optional[str] = None, secret: str = ""
) -> EngineError:
    """
    The error for an HTTP upgrade answered with ``status`` instead of 101.

    :param dg_error: the ``dg-error`` response header, Deepgram's reason.
    :param request_id: the ``dg-request-id`` header, for support tickets.
    :param secret: scrubbed from the message should the server echo it.
    """
    detail = f"HTTP {status}"
    if dg_error:
        detail += f": {dg_error}"
    if request_id:
        detail += f" (dg-request-id {request_id})"
    detail = _scrub(detail, secret)
    if status in (401, 403):
        return EngineAuthError(ENGINE, detail)
    if status == 402:
        return EngineQuotaError(ENGINE, detail)
    if status in (408, 429) or status >= 500:
        return EngineUnavailable(ENGINE, detail)
    return EngineRequestError(ENGINE, detail)


def classify_close(code: Optional[int], reason: Optional[str], detail: str = "") -> EngineError:
    """
    The error for a connection that closed while we did not expect it.

    ``DATA-`` reasons mean Deepgram cannot decode our audio: a bug that a
    retry would repeat.  Everything else (``NET-0001`` idle timeout,
    ``NET-0000``, 1006 drops, an early 1000) may heal by reconnecting.

    :param detail: extra text, e.g. the last legacy ``Error`` message.
    """
    text = f"connection closed (code {code}" + (f", {reason}" if reason else "") + ")"
    if detail:
        text += f"; {detail}"
    if (reason or "").startswith("DATA-"):
        return EngineRequestError(ENGINE, text)
    return EngineUnavailable(ENGINE, text)



def close_error(
    was_open: bool,
    code: Optional[int],
    reason: Optional[str],
    upgrade: Optional[int],
    headers: Mapping[str, str],
    timed_out: bool,
    dead_after: Optional[float],
    server_error: str,
    connect_timeout_s: float,
    secret: str,
) -> EngineError:
    """
    The error for a WebSocket that closed when the stream was not over.

    :param was_open: the upgrade had succeeded (else it failed or was refused).
    :param upgrade: the HTTP status of a refused upgrade, or ``None``.
    :param headers: that response's headers (``dg-error``, ``dg-request-id``).
    :param timed_out: our ``connect_timeout_s`` dropped the attempt.
    :param dead_after: seconds the server had been silent when the
        liveness check dropped the socket, or ``None`` if it did not.
    :param server_error: the text of the last ``Error`` message, if any.
    :param secret: the API key, scrubbed should the server echo it.
    """
    if not was_open:
        if upgrade is not None:
            return classify_upgrade_failure(upgrade, headers.get("dg-error"), headers.get("dg-request-id"), secret)
        if timed_out:
            return EngineUnavailable(ENGINE, f"upgrade timed out after {connect_timeout_s} s")
        return EngineUnavailable(ENGINE, f"connection failed: {reason}")
    if dead_after is not None:
        return EngineUnavailable(ENGINE, f"no answer from the server for {dead_after:g} s "
                                         f"(ping unanswered): connection dropped")
    return classify_close(code, reason, server_error)
