"""
Several Stasis applications in the fake ARI (tests/fakes/ari.py), as
Asterisk keeps them (res/res_stasis.c, res/stasis/app.c,
res/ari/resource_channels.c and resource_applications.c).

* Each events WebSocket subscribes to the apps of its ``app=`` query (a
  comma list).  An app is *active* while a socket for it is open.
* Each channel belongs to at most one app, its *owner*: the app it entered
  Stasis in (:meth:`FakeARI.enter`), or the app named by the request that
  made it (originate, ExternalMedia), which Asterisk subscribes to the new
  channel at once.  Events about a channel (its ``channel``, or a
  Playback's ``target_uri`` ``channel:<id>``) go only to the sockets of its
  owner, with ``"application": <owner>``; while the owner is inactive they
  are dropped (Asterisk logs "Inactive Stasis app missed message") and
  counted in :attr:`StasisApps.missed`.  Events about no owned channel are
  broadcast as ``xlbridge``, as the fake always did.
* ``GET /applications`` lists every app that is active or still owns
  channels (Asterisk keeps an inactive app registered until its last
  channel leaves, then drops it); ``GET /applications/{name}`` is one, or
  404.  ``bridge_ids`` are the bridges holding the app's channels now
  (Asterisk: the bridges it subscribed to).
* ``POST /channels/{id}/move?app=X[&appArgs=a,b]``: 404 / 409 / 400, else
  204 and, :data:`MOVE_DELAY` seconds later (Asterisk moves in the
  channel's own control thread): to an active X, StasisEnd to the old app
  then StasisStart to X with ``args`` (``appArgs`` split at commas, empty
  parts dropped, like ``strtok_r``); to an inactive or unknown X, an
  ``ApplicationMoveFailed`` (``destination``, ``args``) to the current app
  and the channel stays.  The channel keeps its bridge and its
  ``dialplan.app_data``.

Unlike Asterisk, entering an inactive app still works (its events are
dropped), so tests may put channels in Stasis before anyone connects; and a
second socket for an app does not replace the first (Asterisk sends the
first ``ApplicationReplaced`` and stops its events): every socket of an app
gets its events.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from tests.fakes.ari import FakeARI

#: seconds after its 204 that a move happens
MOVE_DELAY = 0.01


def split_args(text: Optional[str]) -> list[str]:
    """
    ``appArgs`` as Asterisk splits it (``strtok_r`` at ``,``: empty parts
    are dropped).
    """
    return [a for a in (text or "").split(",") if a]


def event_channel(event: dict[str, Any]) -> Optional[str]:
    """
    Id of the channel ``event`` is about, or ``None``.
    """
    channel = event.get("channel")
    if isinstance(channel, dict) and channel.get("id"):
        return str(channel["id"])
    target = (event.get("playback") or {}).get("target_uri", "")
    if isinstance(target, str) and target.startswith("channel:"):
        return target[len("channel:"):]
    return None


class StasisApps:
    """
    The apps of one :class:`~tests.fakes.ari.FakeARI` and who owns which
    channel.

    :ivar owner: channel id -> the app that gets its events (while the
        channel lives).
    :ivar former: destroyed channel id -> its last owner, so a late
        PlaybackFinished still goes to that app.
    :ivar missed: events dropped because their app was inactive, in order
        (each with its ``application``).
    """

    def __init__(self, fake: "FakeARI") -> None:
        self.fake = fake
        self.owner: dict[str, str] = {}
        self.former: dict[str, str] = {}
        self.missed: list[dict[str, Any]] = []
        #: the app the request being handled names: its new channel's owner
        self.creating: Optional[str] = None

    # -- state -------------------------------------------------------------

    def open_sockets(self) -> list[Any]:
        return [s for s in self.fake.sockets if s.state == s.STATE_OPEN]

    def active(self) -> set[str]:
        """
        Names of the apps some open events socket is subscribed to.
        """
        return {app for s in self.open_sockets() for app in s.apps if app}

    def registered(self) -> list[str]:
        """
        Apps Asterisk would list: active, or still owning channels (sorted).
        """
        return sorted(self.active() | set(self.owner.values()))

    def channels_of(self, app: str) -> list[str]:
        return [cid for cid, owner in self.owner.items() if owner == app]

    def application(self, app: str) -> dict[str, Any]:
        """
        The ARI ``Application`` object of ``app``.
        """
        channels = self.channels_of(app)
        bridges = [b["id"] for b in self.fake.bridges.values() if set(b["channels"]) & set(channels)]
        return {
            "name": app, "channel_ids": channels, "bridge_ids": bridges, "endpoint_ids": [],
            "device_names": [], "events_allowed": [], "events_disallowed": [],
        }

    # -- channels ----------------------------------------------------------

    def created(self, channel_id: str, app: str) -> None:
        """
        A request naming ``app`` made ``channel_id``: Asterisk subscribes
        the app to it before it enters Stasis.
        """
        self.owner[channel_id] = app

    def entered(self, channel_id: str, app: Optional[str]) -> str:
        """
        ``channel_id`` enters Stasis in ``app`` (``None``: the app its
        request named, else ``xlbridge``); returns the app.
        """
        app = app or self.owner.get(channel_id) or "xlbridge"
        self.owner[channel_id] = app
        return app

    def forget(self, channel_id: str) -> None:
        """
        ``channel_id`` is destroyed (after its last events were sent).
        """
        app = self.owner.pop(channel_id, None)
        if app is not None:
            self.former[channel_id] = app

    def app_of(self, channel_id: str) -> Optional[str]:
        return self.owner.get(channel_id)

    # -- events ------------------------------------------------------------

    def route(self, event: dict[str, Any]) -> Optional[str]:
        """
        The app that gets ``event``, or ``None`` if it is about no channel
        any app owns (or owned).
        """
        cid = event_channel(event)
        if cid is None:
            return None
        return self.owner.get(cid) or self.former.get(cid)

    def send(self, app: str, event: dict[str, Any]) -> None:
        """
        ``event`` (complete but for ``application``) to every open socket
        subscribed to ``app``; dropped, and counted, if there is none.
        """
        event = {**event, "application": app}
        sockets = [s for s in self.open_sockets() if app in s.apps]
        if not sockets:
            self.missed.append(event)
            return
        data = json.dumps(event).encode()
        for s in sockets:
            s.sendMessage(data)

    # -- REST --------------------------------------------------------------

    def handle(self, method: str, rest: list[str], params: dict[str, str]) -> tuple[int, Any]:
        """
        ``/applications[/{name}]``.
        """
        if method != "GET" or len(rest) > 1:
            return 404, {"message": "Resource not found"}
        if not rest or not rest[0]:
            return 200, [self.application(app) for app in self.registered()]
        if rest[0] not in self.registered():
            return 404, {"message": "Application not found"}
        return 200, self.application(rest[0])

    def move(self, channel_id: str, params: dict[str, str]) -> tuple[int, Any]:
        """
        ``POST /channels/{channel_id}/move``.
        """
        fake = self.fake
        target = params.get("app", "")
        if not target:
            return 400, {"message": "app is required"}
        if channel_id not in fake.channels:
            return 404, {"message": "Channel not found"}
        if channel_id not in fake.in_stasis:
            return 409, {"message": "Channel not in Stasis application"}
        if channel_id not in self.owner:
            # Put in Stasis by a test without enter(): the app it says.
            app_data = fake.channels[channel_id].get("dialplan", {}).get("app_data", "")
            self.owner[channel_id] = app_data.split(",")[0] or "xlbridge"
        fake.later(MOVE_DELAY, self._move, channel_id, target, split_args(params.get("appArgs")))
        return 204, None

    def _move(self, channel_id: str, target: str, args: list[str]) -> None:
        fake = self.fake
        channel = fake.channels.get(channel_id)
        if channel is None or channel_id not in fake.in_stasis:
            return  # hung up (or left) before its control thread moved it
        if target not in self.active():
            fake.emit({"type": "ApplicationMoveFailed", "channel": fake.public(channel),
                       "destination": target, "args": args})
            return
        fake.emit({"type": "StasisEnd", "channel": fake.public(channel)})
        self.owner[channel_id] = target
        fake.emit({"type": "StasisStart", "args": args, "channel": fake.public(channel)})
