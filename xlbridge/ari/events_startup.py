"""
The start-up requests of the ARI events socket: what its owner asks of
Asterisk after each connection (the controller's access check and leftover
cleanup), run again while they fail for a reason that may heal.

:class:`~xlbridge.ari.events.ARIEvents` starts them once the socket is
open (state ``preparing``) and stops them when the socket closes, is
refused, or the service stops; :class:`StartupRequests` runs them and
says how they ended:

* **Success**: the owner's ``up(True)`` (state ``up``).
* **A reason that may heal** (an HTTP error, a timeout, a lost connection:
  :data:`~xlbridge.ari.client.RETRYABLE`): one warning
  (:data:`~xlbridge.ari.retry.PREPARE_FAILED`), the owner's ``retrying``
  with the reason, and a new run on the owner's backoff schedule while the
  socket stays open (events are handled meanwhile).  The count of failures
  in a row goes back to zero on success only.
* **Refused (401/403)** (:class:`~xlbridge.ari.client.ARIAuthError`): the
  owner's ``refused``, whatever the socket did meanwhile (unless the
  client's ``on_refused`` already did it, the owner's business).
* **Any other exception** is a bug: logged once with its traceback, not
  retried, and the owner's ``up(False)`` (events are still handled).

A run that ends after :meth:`StartupRequests.stop` (the socket closed, or
was replaced by a new one) changes nothing but a refusal.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.ari.client import RETRYABLE, ARIAuthError, describe_failure
from xlbridge.ari.retry import PREPARE_FAILED

__all__ = ["StartupRequests"]


class StartupRequests:
    """
    Run ``run`` for one open socket at a time, again on failures that may
    heal (see the module's notes).

    :param run: the requests; may return a Deferred.
    :param clock: schedules the runs again.
    :param delay: seconds to wait after ``n`` failures in a row.
    :param up: called once the requests succeeded (``True``), or failed
        with a bug (``False``: not retried).
    :param retrying: called with why a run failed, before the next one.
    :param refused: called with the failure when Asterisk refused our user.
    :param log: the owner's logger (lines appear under its name).

    :ivar failures: failed runs in a row (the backoff exponent).
    """

    def __init__(
        self,
        run: Callable[[], Optional["Deferred[Any]"]],
        clock: IReactorTime,
        delay: Callable[[int], float],
        up: Callable[[bool], None],
        retrying: Callable[[str], None],
        refused: Callable[[Failure], None],
        log: Logger,
    ) -> None:
        self.run = run
        self.clock = clock
        self._delay = delay
        self._up, self._retrying, self._refused = up, retrying, refused
        self.log = log
        self.failures = 0
        #: the socket the runs are for, while they are wanted
        self._socket: Optional[object] = None
        self._call: Optional[IDelayedCall] = None
        self._running: Optional[Deferred[Any]] = None

    def start(self, socket: object) -> None:
        """``socket`` is open: run the requests for it now."""
        self.stop()
        self._socket = socket
        self._run()

    def stop(self) -> None:
        """The socket closed or was refused: no run again, no outcome but a refusal."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._socket = None

    def cancel(self) -> None:
        """:meth:`stop`, and cancel a run under way (the service stops)."""
        self.stop()
        if self._running is not None:
            # Its requests would otherwise come back after the client's
            # connections are closed, and keep one open.
            self._running.cancel()

    def _run(self) -> None:
        self._call = None
        socket = self._socket
        if socket is None:
            return
        d = self._running = maybeDeferred(self.run)

        def settled(result: Any) -> Any:
            if self._running is d:
                self._running = None
            return result

        d.addBoth(settled)
        d.addCallbacks(self._done, self._failed, callbackArgs=(socket,), errbackArgs=(socket,))

    def _done(self, _: Any, socket: object) -> None:
        if socket is not self._socket:
            return
        self._socket = None
        self.failures = 0
        self._up(True)

    def _failed(self, failure: Failure, socket: object) -> None:
        if failure.check(ARIAuthError):
            self._refused(failure)
            return
        if socket is not self._socket:
            return  # closed or refused meanwhile
        if not failure.check(*RETRYABLE):
            self.log.failure("ARI start-up requests failed (a bug: not retried)", failure)
            self._socket = None
            self._up(False)
            return
        self.failures += 1
        delay = self._delay(self.failures)
        why = describe_failure(failure)
        self._retrying(why)
        self.log.warn(PREPARE_FAILED, why=why, delay=delay)
        self._call = self.clock.callLater(delay, self._run)
