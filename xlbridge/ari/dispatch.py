"""
Which worker a caller goes to: the dispatcher's decisions, without I/O.

With ``--workers``, callers enter the entry app (``Stasis(xlbridge,
room=R,lang=L)``) and the dispatcher (:mod:`xlbridge.ari.dispatcher`)
moves each to one worker's app (``xlbridge-<node>-<k>``) with ``POST
/channels/{id}/move``.  Everything it knows of the workers comes from
Asterisk: ``GET /applications`` lists every registered app with the
channels in it, so a worker on another machine joins by connecting to
the same Asterisk, and the load of a worker is the number of channels in
its app (each caller brings its ExternalMedia channel: two per caller).

Rules (:meth:`DispatchBook.choose`):

- **Rooms stay together.**  A caller of room R goes to the worker that
  holds another caller of R: one the book moved there whose channel is
  still in that app, or was moved less than :data:`PENDING_S` ago (the
  move is asynchronous: ``/applications`` may not show it yet).  A
  ``dial=`` caller needs nothing: its worker originates the callee into
  its own app.
- **Else the least loaded**: fewest channels, counting moves still in
  flight; ties go to the lowest app name, so the order is stable.
- **Dead workers are skipped.**  Asterisk keeps an app whose WebSocket is
  gone registered while channels are in it, and a move to it fails with
  an ``ApplicationMoveFailed`` event; that (or the supervisor seeing the
  worker's process end) marks the app dead for :data:`DEAD_S`, during
  which it gets no callers.

Nothing here does I/O: the service feeds in the answers and the clock.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Iterable, Optional

import attrs

from xlbridge.ari.rooms import parse_args

__all__ = ["DEAD_S", "MAX_ROOMS", "PENDING_S", "DispatchBook", "Placement", "caller_args", "room_of", "worker_apps"]

#: Seconds a move counts as in flight (towards the room and the load).
PENDING_S = 5.0
#: Seconds an app that failed a move (or whose process ended) gets no callers.
DEAD_S = 10.0
#: Rooms remembered (oldest forgotten first).
MAX_ROOMS = 4096


def worker_apps(applications: Iterable[dict[str, Any]], entry: str) -> dict[str, set[str]]:
    """
    The worker apps (``<entry>-<node>-<k>``) among ``GET /applications``'
    answer, each with the ids of the channels in it.
    """
    pattern = re.compile(rf"^{re.escape(entry)}-.+-\d+$")
    out: dict[str, set[str]] = {}
    for app in applications:
        name = str(app.get("name", "")) if isinstance(app, dict) else ""
        if pattern.match(name):
            ids = app.get("channel_ids") or []
            out[name] = {str(i) for i in ids} if isinstance(ids, list) else set()
    return out


def room_of(args: list[str]) -> Optional[str]:
    """The room a caller with Stasis ``args`` asked for, if any."""
    room = parse_args(args).get("room")
    return room or None


def caller_args(channel: dict[str, Any], apps: Iterable[str]) -> Optional[list[str]]:
    """
    The Stasis arguments of a caller sitting in ``Stasis(app, ...)`` for
    one of ``apps`` (its ``dialplan.app_data`` keeps what it entered
    with, whatever app it was moved to since), as one ``k=v,...`` item;
    ``None`` for a channel with no arguments (an ExternalMedia channel).
    A ``dial=`` caller becomes ``room=dial-<id>``: its callee, if up, is
    in that room already, and dialling again would ring a second one.
    """
    plan = channel.get("dialplan") or {}
    if plan.get("app_name") != "Stasis":
        return None
    head, _, rest = str(plan.get("app_data", "")).partition(",")
    if head.strip() not in set(apps) or not rest.strip():
        return None
    opts = parse_args([rest])
    if "dial" in opts:
        opts.pop("dial")
        opts["room"] = f"dial-{channel.get('id')}"
    if "room" not in opts:
        return None
    return [",".join(f"{k}={v}" for k, v in opts.items())]


@attrs.define
class Placement:
    """
    Where the book sent a room's callers: the app, and each caller's
    channel id with the clock time it was moved.
    """

    app: str
    moved: dict[str, float] = attrs.Factory(dict)


class DispatchBook:
    """
    The dispatcher's memory: rooms placed, moves in flight, dead apps.

    :param entry: the entry app (``xlbridge``); workers are ``<entry>-*-<k>``.
    """

    def __init__(self, entry: str, pending_s: float = PENDING_S, dead_s: float = DEAD_S,
                 max_rooms: int = MAX_ROOMS) -> None:
        self.entry = entry
        self.pending_s, self.dead_s, self.max_rooms = pending_s, dead_s, max_rooms
        self.rooms: OrderedDict[str, Placement] = OrderedDict()
        #: app -> {channel id: clock time moved there}
        self.in_flight: dict[str, dict[str, float]] = {}
        #: app -> clock time until which it gets no callers
        self.dead: dict[str, float] = {}

    def live(self, applications: Iterable[dict[str, Any]], now: float) -> dict[str, set[str]]:
        """The worker apps not marked dead, with their channels."""
        self.dead = {a: t for a, t in self.dead.items() if t > now}
        return {a: ids for a, ids in worker_apps(applications, self.entry).items() if a not in self.dead}

    def load(self, app: str, channels: set[str], now: float) -> int:
        """Channels in ``app`` plus moves to it still in flight and not yet seen there."""
        flying = self.in_flight.get(app, {})
        for cid, t in list(flying.items()):
            if cid in channels or now - t > self.pending_s:
                del flying[cid]
        return len(channels) + len(flying)

    def choose(self, room: Optional[str], applications: Iterable[dict[str, Any]], now: float) -> Optional[str]:
        """
        The app to move a caller of ``room`` to (see the module's rules),
        or ``None`` when no worker app is live.
        """
        live = self.live(applications, now)
        if not live:
            return None
        if room is not None:
            placed = self.rooms.get(room)
            if placed is not None and placed.app in live:
                here = live[placed.app]
                if any(cid in here or now - t <= self.pending_s for cid, t in placed.moved.items()):
                    return placed.app
        return min(live, key=lambda a: (self.load(a, live[a], now), a))

    def placed(self, room: Optional[str], app: str, channel_id: str, now: float) -> None:
        """A caller of ``room`` was moved to ``app``."""
        self.in_flight.setdefault(app, {})[channel_id] = now
        if room is None:
            return
        entry = self.rooms.get(room)
        if entry is None or entry.app != app:
            entry = self.rooms[room] = Placement(app)
        entry.moved[channel_id] = now
        self.rooms.move_to_end(room)
        while len(self.rooms) > self.max_rooms:
            self.rooms.popitem(last=False)

    def failed(self, app: str, channel_id: str, now: float) -> None:
        """A move of ``channel_id`` to ``app`` failed: the app is dead for a while."""
        self.in_flight.get(app, {}).pop(channel_id, None)
        self.mark_dead(app, now)

    def mark_dead(self, app: str, now: float) -> None:
        """No callers for ``app`` for :attr:`dead_s` seconds."""
        self.dead[app] = now + self.dead_s
        self.in_flight.pop(app, None)

    def mark_alive(self, app: str) -> None:
        """``app`` may get callers again."""
        self.dead.pop(app, None)
