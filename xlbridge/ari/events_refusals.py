"""
What the ARI events socket says when Asterisk refuses our user (HTTP 401 or
403), and when it accepts the user again.

:class:`~xlbridge.ari.events.ARIEvents` handles a refusal (on the upgrade,
in the start-up requests or on any later REST request: close the socket,
try again every ``refused_delay`` seconds); :class:`RefusalLog` only says
so, and says it once:

* **A new refusal** (a status and answer not the last logged in full): one
  error (:data:`~xlbridge.ari.retry.REFUSED`) naming the user, what
  Asterisk said and where, what to check (``--ari-user``,
  ``--ari-password-file``, ``read_only`` in ``ari.conf``:
  :func:`~xlbridge.ari.client.refusal_advice`), that a fix in
  ``ari.conf`` is picked up at the next attempt, and whether a changed
  password file needs a restart (:func:`~xlbridge.ari.retry.restart_hint`).
* **The same refusal again**, at each later attempt: one warning
  (:data:`~xlbridge.ari.retry.STILL_REFUSED`), so a log that says nothing
  else still shows that ARI is down.
* **Accepted again** (the start-up requests succeeded after a refusal):
  one info line; a later refusal is new again.
"""

from __future__ import annotations

from typing import Optional

from twisted.logger import Logger

from xlbridge.ari.client import refusal_advice
from xlbridge.ari.retry import REFUSED, STILL_REFUSED, restart_hint

__all__ = ["RefusalLog"]


class RefusalLog:
    """
    Log refusals of ``user`` and its acceptance again (see the module's
    notes).

    :param log: the owner's logger (lines appear under its name).
    :param user: the ARI user (``--ari-user``).

    :ivar last: (status, answer) of the refusal last logged in full, or
        ``None`` once the user is accepted.
    """

    def __init__(self, log: Logger, user: str) -> None:
        self.log = log
        self.user = user
        self.last: Optional[tuple[int, str]] = None

    def refused(self, status: int, answer: str, where: str, delay: float) -> None:
        """
        Asterisk answered ``status`` (401/403) with ``answer`` on ``where``;
        the next attempt is in ``delay`` seconds.
        """
        if self.last != (status, answer):
            self.last = (status, answer)
            self.log.error(
                REFUSED, user=self.user, answer=answer, where=where, advice=refusal_advice(status, self.user),
                every=delay, restart=restart_hint(status),
            )
        else:
            self.log.warn(STILL_REFUSED, user=self.user, answer=answer, where=where, delay=delay)

    def accepted(self) -> None:
        """The start-up requests succeeded: say so if the user was refused."""
        if self.last is not None:
            self.log.info("ARI accepts user {user!r} again", user=self.user)
            self.last = None
