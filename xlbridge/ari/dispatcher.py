"""
The ARI dispatcher: callers enter the entry app (``Stasis(xlbridge,...)``)
and are moved, one at a time, to a worker's app with ``POST
/channels/{id}/move``; which worker is :mod:`xlbridge.ari.dispatch`'s
decision, from what ``GET /applications`` says now.

It also rescues the callers of a worker that died (:meth:`ARIDispatcher.rescue`,
called by the supervisor when the worker's process ends): Asterisk keeps
them in Stasis under the dead worker's app, silent.  The dispatcher
removes that worker's bridges (``<app>:<channel>``) and ExternalMedia
channels, and moves its callers back to the entry app with their Stasis
arguments; they arrive as new callers and go, both callers of a room
together, to a live worker, which sets them up like any caller.

Only Asterisk's mechanisms are used (apps, moves, the channel list), so a
worker on another machine that connects to the same Asterisk with an app
``<entry>-<node>-<k>`` is dispatched to like a local one; only a local
worker's death is seen at once (a remote one's first failed move marks it
dead).
"""

from __future__ import annotations

from typing import Any, Generator, Optional

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.ari.client import ARIClient, ARIError, describe_failure
from xlbridge.ari.dispatch import DispatchBook, caller_args, room_of
from xlbridge.ari.events import ARIEvents
from xlbridge.ari.reactor import IARIReactor
from xlbridge.ari.rescue import rescue
from xlbridge.ari.settings import ARISettings

__all__ = ["FRESH_S", "MAX_MOVED", "MAX_TRIES", "MAX_WAITING", "RETRY_S", "ARIDispatcher"]

#: Seconds an answer of ``GET /applications`` is reused (moves made since
#: are counted by the book).
FRESH_S = 0.25
#: Callers kept waiting for a live worker; past it a new one is hung up.
MAX_WAITING = 1000
#: Seconds between attempts to place waiting callers.
RETRY_S = 1.0
#: Failed moves of one caller before it waits for the next retry round.
MAX_TRIES = 3
#: Moved callers remembered (not moved twice), oldest forgotten first.
MAX_MOVED = 4096


class ARIDispatcher(MultiService):
    """
    Dispatch the callers of ``settings.app`` (the entry app) to worker apps.

    :param reactor: for the REST client and the events socket.
    :param client: tests pass their own; else one for ``settings``.
    :param events: tests pass their own factory result; else an
        :class:`~xlbridge.ari.events.ARIEvents` for the entry app.

    :ivar counts: ``dispatched``, ``move_failed``, ``rescued`` (callers moved
        back from dead workers), ``dropped`` (hung up: too many waiting),
        ``errors`` (requests that failed).
    :ivar waiting: callers with no live worker to go to, id -> arguments.
    """

    log = Logger()

    def __init__(self, settings: ARISettings, reactor: IARIReactor, *, client: Optional[ARIClient] = None,
                 clock: Optional[IReactorTime] = None, book: Optional[DispatchBook] = None) -> None:
        super().__init__()
        self.settings = settings
        self.entry = settings.app
        self.clock: IReactorTime = clock or reactor
        self.client = client or ARIClient(settings.url, settings.user, settings.password, reactor, timeout=10.0)
        self.book = book or DispatchBook(self.entry)
        self.events = ARIEvents(
            reactor, settings.url, self.entry, settings.user, settings.password, self.on_event, self.on_connect,
            clock=clock,
        )
        self.events.setServiceParent(self)
        self.client.on_refused = self.events.refused
        self.lock = DeferredLock()
        self.counts = {"dispatched": 0, "move_failed": 0, "rescued": 0, "dropped": 0, "errors": 0}
        self.waiting: dict[str, list[str]] = {}
        self._tries: dict[str, int] = {}
        self._apps: Optional[tuple[float, list[dict[str, Any]]]] = None
        self._retry: Optional[IDelayedCall] = None
        #: callers queued for a decision
        self._queued: set[str] = set()
        #: callers moved since they last entered the entry app, oldest first
        self._moved: dict[str, None] = {}

    def stopService(self) -> "Deferred[None]":
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        d = super().stopService()
        d.addBoth(lambda _: self.client.close())
        return d.addCallback(lambda _: None)

    # -- events ----------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        """Handle one event of the entry app."""
        kind = event.get("type")
        channel = event.get("channel") or {}
        cid = str(channel.get("id", ""))
        if not cid:
            return
        if kind == "StasisStart":
            # New, or back (rescued from a dead worker): placed afresh.
            self._tries.pop(cid, None)
            self._moved.pop(cid, None)
            self.dispatch(cid, [str(a) for a in event.get("args") or []])
        elif kind == "ApplicationMoveFailed":
            dest = str(event.get("destination", ""))
            self.counts["move_failed"] += 1
            self.book.failed(dest, cid, self.clock.seconds())
            self._moved.pop(cid, None)
            self.log.warn("moving {channel} to {app} failed (the app is not active); trying another worker",
                          channel=channel.get("name", cid), app=dest)
            self.dispatch(cid, [str(a) for a in event.get("args") or []])
        elif kind in ("StasisEnd", "ChannelDestroyed"):
            self.waiting.pop(cid, None)
            self._tries.pop(cid, None)

    def on_connect(self) -> "Deferred[Any]":
        """
        After each (re)connection: place the callers waiting in the entry
        app (they entered while we were away, or were rescued then).
        """
        self._apps = None
        return self._adopt()

    @inlineCallbacks
    def _adopt(self) -> Generator["Deferred[Any]", Any, None]:
        try:
            info = yield self.client.application(self.entry)
        except ARIError as e:
            if e.status == 404:
                return
            raise
        ids = {str(i) for i in (info or {}).get("channel_ids") or []}
        if not ids:
            return
        channels = yield self.client.channels()
        for ch in channels or []:
            cid = str(ch.get("id", ""))
            args = caller_args(ch, [self.entry])
            if cid in ids and args is not None:
                self.dispatch(cid, args)

    # -- placing ---------------------------------------------------------------

    def dispatch(self, channel_id: str, args: list[str]) -> "Deferred[None]":
        """
        Move one caller to a worker (queued behind earlier decisions).  A
        caller already queued, or moved since it last entered the entry
        app, is not moved again: the start-up listing and its StasisStart
        may both name it, and a second move would pull it out of the
        worker that is setting it up.
        """
        if channel_id in self._queued or channel_id in self._moved:
            return succeed(None)
        self._queued.add(channel_id)

        def done(result: Any) -> Any:
            self._queued.discard(channel_id)
            return result

        return self.lock.run(self._place, channel_id, args).addBoth(done)

    @inlineCallbacks
    def _place(self, channel_id: str, args: list[str]) -> Generator["Deferred[Any]", Any, None]:
        now = self.clock.seconds()
        try:
            apps = yield self._applications(now)
        except Exception as e:
            self.counts["errors"] += 1
            self.log.warn("cannot list ARI applications ({why}); caller {channel} waits",
                          why=describe_failure(e), channel=channel_id)
            self._wait(channel_id, args)
            return
        room = room_of(args)
        target = self.book.choose(room, apps, now)
        tries = self._tries.get(channel_id, 0)
        if target is None or tries >= MAX_TRIES:
            if channel_id not in self.waiting:
                self.log.warn("no worker app is up for {channel}; it waits (retry every {s:g} s)",
                              channel=channel_id, s=RETRY_S)
            self._tries.pop(channel_id, None)
            self._wait(channel_id, args)
            return
        self._tries[channel_id] = tries + 1
        self.book.placed(room, target, channel_id, now)
        try:
            yield self.client.move(channel_id, target, ",".join(args))
        except ARIError as e:
            if e.status in (404, 409):  # gone, or no longer in Stasis
                self.waiting.pop(channel_id, None)
                return
            self.counts["errors"] += 1
            self.log.warn("moving {channel} to {app} failed: {why}", channel=channel_id, app=target, why=e)
            self._wait(channel_id, args)
            return
        except Exception as e:
            self.counts["errors"] += 1
            self.log.warn("moving {channel} to {app} failed: {why}", channel=channel_id, app=target,
                          why=describe_failure(e))
            self._wait(channel_id, args)
            return
        self.waiting.pop(channel_id, None)
        self._moved[channel_id] = None
        while len(self._moved) > MAX_MOVED:
            self._moved.pop(next(iter(self._moved)))
        self.counts["dispatched"] += 1
        self.log.debug("{channel} (room {room}) -> {app}", channel=channel_id, room=room, app=target)

    def _applications(self, now: float) -> "Deferred[list[dict[str, Any]]]":
        if self._apps is not None and now - self._apps[0] < FRESH_S:
            return succeed(self._apps[1])

        def keep(answer: Any) -> list[dict[str, Any]]:
            apps = [a for a in answer or [] if isinstance(a, dict)]
            self._apps = (now, apps)
            return apps

        return self.client.applications().addCallback(keep)

    def _wait(self, channel_id: str, args: list[str]) -> None:
        if channel_id not in self.waiting and len(self.waiting) >= MAX_WAITING:
            self.counts["dropped"] += 1
            self.log.error("{n} callers already wait for a worker: hanging up {channel}",
                           n=len(self.waiting), channel=channel_id)
            self._quietly(self.client.hangup(channel_id))
            return
        self.waiting[channel_id] = args
        if self._retry is None or not self._retry.active():
            self._retry = self.clock.callLater(RETRY_S, self._retry_waiting)

    def _retry_waiting(self) -> None:
        self._apps = None
        for cid, args in list(self.waiting.items()):
            self.dispatch(cid, args)

    # -- dead workers ------------------------------------------------------------

    def worker_died(self, app: str) -> "Deferred[Optional[int]]":
        """
        ``app``'s worker process ended: no callers for it for a while, and
        its callers are rescued.  Never fails: the number rescued, or
        ``None`` if that failed (logged).
        """
        self.book.mark_dead(app, self.clock.seconds())
        self._apps = None
        d = self.rescue(app)

        def failed(f: Failure) -> None:
            self.counts["errors"] += 1
            self.log.error("rescuing the callers of {app} failed: {why}", app=app, why=describe_failure(f))

        return d.addErrback(failed)

    def rescue(self, app: str) -> "Deferred[int]":
        """
        Move dead worker ``app``'s callers back to the entry app
        (:func:`xlbridge.ari.rescue.rescue`); the number moved.
        """
        d = rescue(self.client, app, self.entry, self._quietly)

        def counted(moved: int) -> int:
            self.counts["rescued"] += moved
            return moved

        return d.addCallback(counted)

    def _quietly(self, d: "Deferred[Any]") -> "Deferred[Any]":
        def failed(f: Failure) -> None:
            if isinstance(f.value, ARIError) and f.value.status in (404, 409):
                return
            self.counts["errors"] += 1
            self.log.warn("ARI request failed: {why}", why=describe_failure(f))

        return d.addErrback(failed)

    def status(self) -> dict[str, Any]:
        """For the machine monitor."""
        return {**self.counts, "waiting": len(self.waiting), "connected": self.events.connected,
                "dead": sorted(self.book.dead)}
