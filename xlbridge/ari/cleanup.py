"""
The restart cleanup the ARI controller runs after each (re)connection of
the events socket: the requests and the order they go in.  Which bridges
and channels count as leftovers is decided by the pure functions of
:mod:`xlbridge.ari.leftovers`; this module asks Asterisk what exists and
acts on their answer.

Events keep coming while the requests are on the way, so every decision
here is checked against what the controller knows *now*: a caller who
entered (or left) meanwhile is neither removed nor taken back twice.
"""

from __future__ import annotations

from typing import Any, Generator, Protocol

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from xlbridge.ari.caller import Caller
from xlbridge.ari.client import ARIClient
from xlbridge.ari.leftovers import bridge_name, orphans, partnerless, stale_bridges, stale_media, stale_websocket
from xlbridge.ari.legs import MediaLegs
from xlbridge.ari.settings import ARISettings


class CleanupOwner(Protocol):
    """
    What the cleanup reads of the controller, and asks of it.
    """

    @property
    def log(self) -> Logger:
        """
        Where the removals and take-backs are logged.
        """

    @property
    def settings(self) -> ARISettings:
        """
        Our app name, RTP port range and AudioSocket address.
        """

    @property
    def client(self) -> ARIClient:
        """
        The REST client the requests go through.
        """

    @property
    def legs(self) -> MediaLegs:
        """
        The media legs: RTP ports in use, AudioSocket routes, WebSocket ids.
        """

    @property
    def callers(self) -> dict[str, Caller]:
        """
        Live callers by channel id.
        """

    @property
    def ended(self) -> dict[str, None]:
        """
        Channel ids seen ending lately.
        """

    @property
    def dialing(self) -> dict[str, str]:
        """
        Originated callee channel id -> the caller waiting for it.
        """

    def media_ids(self) -> set[str]:
        """
        The ids of the live callers' ExternalMedia channels.
        """

    def quietly(self, d: "Deferred[Any]") -> "Deferred[Any]":
        """
        ``d``, a cleanup request: a 404 is success, another failure a log
        line; waited for on shutdown.
        """

    def start_caller(self, channel: dict[str, Any], args: list[str]) -> None:
        """
        Set up the caller of ``channel`` with its Stasis ``args``.
        """


@inlineCallbacks
def remove_leftovers(owner: CleanupOwner) -> Generator["Deferred[Any]", Any, None]:
    """
    Delete the ``xlbridge-*`` bridges and ExternalMedia channels (RTP to
    our range, AudioSocket to our listener, WebSocket with our ids,
    whatever the media is now) that no live caller of ``owner`` owns, end
    callers who hung up while we were away, and take back callers an
    earlier run left in our Stasis app.  Requests go one at a time.
    """
    client = owner.client
    legs = owner.legs
    settings = owner.settings
    bridges = yield client.bridges()
    # Ours as of the answer: callers who entered while it was on the
    # way may already have made theirs.
    ours_b = {c.bridge_id for c in owner.callers.values()} | {
        bridge_name(c, settings.app, settings.entry_app) for c in owner.callers
    }
    for b in stale_bridges(bridges or [], ours_b, settings.app, settings.entry_app):
        owner.log.info("removing stale bridge {name}", name=str(b.get("name", "")))
        yield owner.quietly(client.destroy_bridge(str(b["id"])))
    # Only callers we knew of before asking can be missing from the
    # answer because they are gone, not because they are newer.
    before = set(owner.callers)
    channels = yield client.channels()
    alive = {ch.get("id") for ch in channels or []}
    for caller in list(owner.callers.values()):
        if caller.channel_id in before and caller.channel_id not in alive:
            # Hung up while the events socket was down: no StasisEnd came.
            caller.lifecycle.hangup("gone while disconnected")
    ours = owner.media_ids() | (set(legs.audiosocket.routes) if legs.audiosocket is not None else set())
    dest = f"{settings.external_host}:{legs.audiosocket_port()}"
    stale = stale_media(channels or [], ours, settings.rtp_ports, dest, legs.pool.in_use, settings.external_host)
    ours_ws = owner.media_ids() | legs.websocket.ids()
    stale += stale_websocket(channels or [], ours_ws, settings.app)
    for ch in stale:
        owner.log.info("removing stale channel {name}", name=ch.get("name"))
        yield owner.quietly(client.hangup(str(ch["id"])))
    known = set(owner.callers) | owner.media_ids() | set(owner.dialing)
    in_app: set[str] | None = None
    if settings.entry_app:
        # A worker: only what Asterisk lists in our own app is ours.
        info = yield owner.quietly(client.application(settings.app))
        in_app = {str(i) for i in (info or {}).get("channel_ids") or []}
    found = orphans(channels or [], settings.app, known, settings.entry_app, in_app)
    lonely = partnerless(found)
    for ch, args in found:
        if ch.get("id") in owner.callers or ch.get("id") in owner.ended:
            continue  # its StasisStart, or its end, came meanwhile
        if str(ch.get("id")) in lonely:
            # A dial caller whose callee is gone (or a callee whose caller is).
            owner.log.info("hanging up {name}: its partner is gone", name=ch.get("name"))
            yield owner.quietly(client.hangup(str(ch["id"])))
            continue
        owner.log.info("taking back {name}, left in Stasis by an earlier run", name=ch.get("name"))
        owner.start_caller(ch, args)
