"""
``Stasis(xlbridge,dial=ENDPOINT,...)``: call the callee for a caller, and
give up on a callee that never answers.

``POST /channels?endpoint=...&app=...&appArgs=...&timeout=T`` answers the
new channel at once (state ``Down``) and rings it; Asterisk hangs it up
after ``timeout`` seconds unanswered (``-1``: never; default 30; Asterisk's
``res/ari/resource_channels.c``), and the app, subscribed to the channel,
gets its ``ChannelDestroyed``.  An answered callee enters Stasis with the
``appArgs`` (``StasisStart``) and becomes the caller's partner in a private
room.

Our own guard timer fires ``grace`` seconds after Asterisk should have given
up, in case that event never comes (lost while the events socket was down,
or a channel driver that ignores the dial timeout): it hangs the callee up
and ends the caller.  It is cancelled when the callee answers, fails, or
the caller leaves.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.ari.client import ARIClient

#: Seconds we wait beyond ``dial_timeout`` for Asterisk to give up on an
#: unanswered callee before we do.
DIAL_GRACE = 5.0


class Dialer:
    """
    Callees being called, and who waits for each.

    :param timeout: seconds a callee may ring (``dial_timeout``).
    :param end_caller: ``(caller_id, reason)``: end that caller (teardown
        and hang up); called when its callee fails or never answers.
    :param is_in_stasis: whether a channel already entered Stasis as a
        caller (a callee that answered before the originate reply came).
    :param hangup: hangs up a channel by id, tolerating 404.
    """

    log = Logger()

    def __init__(
        self,
        client: ARIClient,
        clock: IReactorTime,
        app: str,
        timeout: int,
        end_caller: Callable[[str, str], None],
        is_in_stasis: Callable[[str], bool],
        hangup: Callable[[str], object],
        grace: float = DIAL_GRACE,
    ) -> None:
        self.client = client
        self.clock = clock
        self.app = app
        self.timeout = timeout
        self.grace = grace
        self.end_caller = end_caller
        self.is_in_stasis = is_in_stasis
        self.hangup = hangup
        #: callee channel id -> id of the caller waiting for it
        self.waiting: dict[str, str] = {}
        #: caller id -> its guard timer
        self.timers: dict[str, IDelayedCall] = {}

    def dial(self, caller_id: str, endpoint: str, app_args: str) -> None:
        """
        Originate ``endpoint`` into our app with ``app_args`` for caller
        ``caller_id``, and start the guard timer.
        """
        self.timers[caller_id] = self.clock.callLater(self.timeout + self.grace, self._expired, caller_id)
        d = self.client.originate(endpoint, self.app, app_args, self.timeout)
        d.addCallback(self._originated, caller_id)
        d.addErrback(self._failed, caller_id, endpoint)

    def _originated(self, callee: dict[str, Any], caller_id: str) -> None:
        callee_id = str(callee["id"])
        if caller_id not in self.timers:
            self.hangup(callee_id)  # the caller gave up meanwhile
        elif self.is_in_stasis(callee_id):
            self._stop(caller_id)  # it answered before this reply came
        else:
            self.waiting[callee_id] = caller_id

    def _failed(self, failure: Failure, caller_id: str, endpoint: str) -> None:
        self.log.error("originating {endpoint} failed: {err}", endpoint=endpoint, err=failure.value)
        if caller_id in self.timers:
            self._stop(caller_id)
            self.end_caller(caller_id, "dial failed")

    def _expired(self, caller_id: str) -> None:
        self.timers.pop(caller_id, None)
        self.log.warn(
            "callee of {caller} did not answer within {t} s; hanging up", caller=caller_id, t=self.timeout
        )
        self.end_caller(caller_id, "callee did not answer")  # caller_gone hangs up the callee

    def _stop(self, caller_id: str) -> None:
        timer = self.timers.pop(caller_id, None)
        if timer is not None and timer.active():
            timer.cancel()

    def answered(self, channel_id: str) -> None:
        """
        ``channel_id`` entered Stasis: if it is a callee, stop waiting.
        """
        caller_id = self.waiting.pop(channel_id, None)
        if caller_id is not None:
            self._stop(caller_id)

    def callee_gone(self, channel_id: str) -> bool:
        """
        ``channel_id`` ended: if it was a callee still ringing, end its
        caller too.  Whether it was one.
        """
        caller_id = self.waiting.pop(channel_id, None)
        if caller_id is None:
            return False
        self._stop(caller_id)
        self.end_caller(caller_id, "callee did not answer")
        return True

    def caller_gone(self, caller_id: str) -> None:
        """
        Caller ``caller_id`` left: stop its timer and hang up its callee if
        it still rings.  Idempotent.
        """
        self._stop(caller_id)
        for callee_id, waiting in list(self.waiting.items()):
            if waiting == caller_id:
                del self.waiting[callee_id]
                self.hangup(callee_id)

    def cancel_all(self) -> None:
        for caller_id in list(self.timers):
            self._stop(caller_id)
