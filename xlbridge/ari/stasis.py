"""
Waiting for a new ExternalMedia channel to enter Stasis.

Asterisk answers ``POST /channels/externalMedia`` before the new channel
has entered the app, and ``addChannel`` with it before its ``StasisStart``
fails with 422 "Channel not in Stasis application" (seen on Asterisk 22,
now and then).  The event may also come before the REST answer that names
the channel.  :class:`StasisWaiter` joins the two orders: :meth:`entered`
is told of every such ``StasisStart``; :meth:`wait` fires once the channel
is in, or fails after :data:`MEDIA_STASIS_TIMEOUT` seconds.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

#: Seconds a new ExternalMedia channel may take to enter Stasis.
MEDIA_STASIS_TIMEOUT = 5.0
#: Bound on channels remembered as entered before anyone waited for them
#: (beyond it the oldest are forgotten; their setups then time out).
MAX_EARLY = 1024


class StasisWaiter:
    """
    :param clock: runs the timeouts.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.early: dict[str, None] = {}
        self.waiting: dict[str, Deferred[None]] = {}

    def entered(self, cid: str) -> None:
        """
        Channel ``cid`` entered Stasis.
        """
        d = self.waiting.pop(cid, None)
        if d is not None:
            d.callback(None)
            return
        self.early[cid] = None
        if len(self.early) > MAX_EARLY:
            del self.early[next(iter(self.early))]

    def wait(self, cid: str) -> "Deferred[None]":
        """
        Fires once ``cid`` is in Stasis; fails with :class:`TimeoutError`.
        """
        if self.early.pop(cid, 0) is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.waiting[cid] = d

        def expire() -> None:
            if self.waiting.pop(cid, None) is d:
                d.errback(TimeoutError(
                    f"ExternalMedia channel {cid} did not enter Stasis within {MEDIA_STASIS_TIMEOUT:g} s"
                ))

        timer = self.clock.callLater(MEDIA_STASIS_TIMEOUT, expire)

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(done)

    def forget(self, cid: str) -> None:
        """
        ``cid`` is gone: forget it, and let a waiting setup go on (it will
        find its caller gone).
        """
        self.early.pop(cid, None)
        d = self.waiting.pop(cid, None)
        if d is not None:
            d.callback(None)
