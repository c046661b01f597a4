"""
The ARI controller: callers in ``Stasis(xlbridge,room=R,lang=L)`` are
paired by room, each through its own mixing bridge and ExternalMedia
channel, whose RTP comes to a port of ``--rtp-ports`` (or, with
``--ari-media audiosocket``, whose AudioSocket connection comes to our one
AudioSocket port: :mod:`xlbridge.ari.audiosocket`; with ``--ari-media
websocket``, a chan_websocket channel we connect to, or that connects to
our one WebSocket port: :mod:`xlbridge.ari.websocket_media`).

Per caller (PROTOCOLS.md 5): answer, create bridge ``xlbridge-<channel>``,
bind a leg (an RTP port from the pool, an AudioSocket UUID registered
with the router, or a WebSocket endpoint under a channel id we choose),
create the ExternalMedia channel sending to it (a WebSocket one in server
mode: connect to it, since it enters Stasis only then), add both channels
to the bridge.  Each caller's lifecycle is a state machine
(:mod:`xlbridge.ari.caller`) that decides each step; this controller makes
the requests and keeps the books.  When both callers of a room are set up,
their legs are paired in a bridge :class:`~xlbridge.room.Room` (call id:
the first caller's channel id), which starts their call, and restarts it on
audio if it ended for inactivity.

Teardown (StasisEnd or ChannelDestroyed of a caller or its ExternalMedia
channel) also runs half-way through a setup: every resource is released as
soon as it exists once the caller is gone.  Ports rest in quarantine
before reuse.  The partner is hung up, kept, or first told (``prompt``:
:mod:`xlbridge.ari.prompt`).  ``dial=ENDPOINT`` originates the callee into
a private room (:mod:`xlbridge.ari.dial`).  On each (re)connection of the
events socket, once our user is known to be allowed to make changes,
bridges named ``xlbridge-*`` and ExternalMedia channels to our port range
or AudioSocket port, or WebSocket ones with our ids, that are not ours are
removed: they are leftovers of an
earlier run (:meth:`ARIController.remove_leftovers`, with the rules in
:mod:`xlbridge.ari.leftovers`).  Reconnecting, backing off and a refused
user (401/403) are the events socket's business (:mod:`xlbridge.ari.events`).

The controller keeps one registry of callers (:attr:`ARIController.callers`,
by channel id, until they leave) and one of rooms (by name); an
ExternalMedia channel is found through the caller that owns it.  The
callers' media legs (RTP ports, the AudioSocket and WebSocket listeners,
the ExternalMedia requests) are :class:`~xlbridge.ari.legs.MediaLegs`'
business, and the restart cleanup's requests are in
:mod:`xlbridge.ari.cleanup`.
"""

from __future__ import annotations

from typing import Any, Generator, Optional

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.ari import cleanup
from xlbridge.ari.caller import Caller, new_caller
from xlbridge.ari.client import ARIAuthError, ARIClient, ARIError
from xlbridge.ari.dial import Dialer
from xlbridge.ari.events import ARIEvents
from xlbridge.ari.leftovers import BRIDGE_PREFIX, bridge_name
from xlbridge.ari.legs import MediaLegs
from xlbridge.ari.ports import PortPool
from xlbridge.ari.prompt import PartnerPrompt
from xlbridge.ari.reactor import IARIReactor
from xlbridge.ari.rooms import StasisRoom, parse_args
from xlbridge.ari.settings import ARISettings
from xlbridge.audio.frame import Samples
from xlbridge.bridge_view import ControllerView

__all__ = ["BRIDGE_PREFIX", "MAX_ENDED", "ARIController", "parse_args"]

#: Bound on the ended channel ids remembered.
MAX_ENDED = 4096


class ARIController(MultiService):
    """
    Drive Asterisk through ARI for ``bridge``.

    :param reactor: for the REST client, the events socket, the RTP ports
        and the AudioSocket listener.
    :param client: REST client; ``events`` is built from the same settings
        unless given (tests).
    :param clock: schedules the dial, prompt and Stasis guard timers
        (default: the reactor; tests pass a ``Clock``).

    :ivar callers: every caller from its StasisStart until it leaves, by
        channel id.
    :ivar rooms: Stasis rooms with at least one caller, by name.
    """

    log = Logger()

    def __init__(
        self, bridge: ControllerView, settings: ARISettings, reactor: IARIReactor,
        client: Optional[ARIClient] = None, pool: Optional[PortPool] = None,
        clock: Optional[IReactorTime] = None,
    ) -> None:
        super().__init__()
        self.setName("ari")
        self.bridge = bridge
        self.settings = settings
        self.reactor = reactor
        self.clock: IReactorTime = clock or reactor
        self.client = client or ARIClient(settings.url, settings.user, settings.password, reactor)
        self.prompt = PartnerPrompt(
            self.client, self.clock, settings.partner_hangup_sound, settings.prompt_timeout,
            lambda cid: self.quietly(self.client.hangup(cid)), self.quietly,
        )
        #: RTP ports, the AudioSocket router and listener, WebSocket media,
        #: and our ExternalMedia channels entering Stasis; its listeners are
        #: children of ours, bound before the events connect.
        self.legs = MediaLegs(self, bridge, settings, reactor, self.client, self.clock, pool)
        # Shorter names for the legs' parts (the same objects).
        self.pool, self.websocket, self.media_stasis = self.legs.pool, self.legs.websocket, self.legs.stasis
        self.audiosocket, self.audiosocket_listener = self.legs.audiosocket, self.legs.audiosocket_listener
        self.callers: dict[str, Caller] = {}
        self.rooms: dict[str, StasisRoom] = {}
        self._pending: set[Deferred[Any]] = set()
        #: Channels seen ending (StasisEnd, ChannelDestroyed, our teardown),
        #: newest last, bounded: a restart cleanup working from an older
        #: channel list must not take them back.
        self.ended: dict[str, None] = {}
        self.dialer = Dialer(
            self.client, self.clock, settings.app, settings.dial_timeout, self._end_caller,
            lambda cid: cid in self.callers, lambda cid: self.quietly(self.client.hangup(cid)),
        )
        self.events = ARIEvents(
            reactor, settings.url, settings.app, settings.user, settings.password,
            self.on_event, self.on_connect,
        )
        self.events.setServiceParent(self)
        # A 401/403 on any request stops the ARI part until Asterisk takes
        # the user again (ari/events.py).
        self.client.on_refused = self.events.refused

    @property
    def dialing(self) -> dict[str, str]:
        """
        Originated callee channel id -> the caller waiting for it.
        """
        return self.dialer.waiting

    # -- events ------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        channel = event.get("channel") or {}
        cid = str(channel.get("id", ""))
        if kind == "StasisStart":
            if self._media_owner(cid) is not None or self.legs.is_ours(channel):
                self.media_stasis.entered(cid)  # our ExternalMedia channel
                return
            self.dialer.answered(cid)
            self.start_caller(channel, list(event.get("args") or []))
        elif kind == "PlaybackFinished":
            self.prompt.playback_finished(event.get("playback") or {})
        elif kind in ("StasisEnd", "ChannelDestroyed"):
            self._mark_ended(cid)
            caller = self.callers.get(cid)
            if self.dialer.callee_gone(cid):
                pass  # it went away before answering: so did its caller
            elif caller is not None:
                caller.lifecycle.hangup("hangup")
            else:
                # Our ExternalMedia channel died under a live caller: the
                # caller can no longer be heard, so end its side too.
                owner = self._media_owner(cid)
                if owner is not None:
                    owner.lifecycle.end("media channel gone")

    def _mark_ended(self, cid: str) -> None:
        self.ended[cid] = None
        if len(self.ended) > MAX_ENDED:
            del self.ended[next(iter(self.ended))]

    def _media_owner(self, media_id: str) -> Optional[Caller]:
        # The live caller whose ExternalMedia channel this is.
        for caller in self.callers.values():
            if caller.media_id == media_id:
                return caller
        return None

    def media_ids(self) -> set[str]:
        """
        The ids of the live callers' ExternalMedia channels.
        """
        return {c.media_id for c in self.callers.values() if c.media_id is not None}

    def start_caller(self, channel: dict[str, Any], args: list[str]) -> None:
        cid = str(channel["id"])
        name = str(channel.get("name", cid))
        if cid in self.callers:
            # Taken back by the restart cleanup while its StasisStart was
            # on the way (or the other way round): one caller, once.
            return
        opts = parse_args(args)
        lang = opts.get("lang", "en").lower()
        media = self.legs.media_of(name, opts.get("media"))
        if "dial" in opts:
            room_name = f"dial-{cid}"
        elif "room" in opts:
            room_name = opts["room"]
        else:
            self.log.warn("{name}: Stasis args {args!r} have no room= or dial=; hanging up", name=name, args=args)
            self.quietly(self.client.hangup(cid))
            return
        room = self.rooms.setdefault(room_name, StasisRoom(room_name))
        if len(room.callers) >= 2:
            self.log.warn("{name}: room {room} is full; hanging up", name=name, room=room_name)
            self.quietly(self.client.hangup(cid))
            return
        caller = new_caller(cid, name, room_name, lang, self, media)
        room.callers.append(caller)
        self.callers[cid] = caller
        self.log.info("{name} ({lang}) entered room {room}", name=name, lang=lang, room=room_name)
        if "dial" in opts:
            peer_args = f"room={room_name},lang={opts.get('peer_lang', 'es').lower()}"
            if "peer_media" in opts:
                peer_args += f",media={opts['peer_media']}"
            self.dialer.dial(cid, opts["dial"], peer_args)
        caller.lifecycle.start()

    def _end_caller(self, caller_id: str, reason: str) -> None:
        caller = self.callers.get(caller_id)
        if caller is not None:
            caller.lifecycle.end(reason)

    # -- setup steps (the caller's lifecycle calls these) --------------------

    def answer(self, caller: Caller) -> "Deferred[Any]":
        return self.client.answer(caller.channel_id)

    def create_bridge(self, caller: Caller) -> "Deferred[Any]":
        return self.client.create_bridge(bridge_name(caller.channel_id, self.settings.app, self.settings.entry_app))

    def create_media(self, caller: Caller) -> "Deferred[Any]":
        return self.legs.create(caller, lambda samples: self._audio(caller, samples))

    def wait_media(self, caller: Caller, channel: dict[str, Any]) -> "Deferred[None]":
        return self.legs.wait(caller, channel)

    def add_to_bridge(self, caller: Caller) -> "Deferred[Any]":
        assert caller.bridge_id is not None and caller.media_id is not None
        return self.client.add_channels(caller.bridge_id, caller.channel_id, caller.media_id)

    def set_up(self, caller: Caller) -> None:
        room = self.rooms.get(caller.room)
        if room is not None and caller in room.callers:
            self._pair(room)

    def audiosocket_port(self) -> int:
        """
        The TCP port ExternalMedia AudioSocket channels connect to
        (:meth:`MediaLegs.audiosocket_port`).
        """
        return self.legs.audiosocket_port()

    # -- pairing -------------------------------------------------------------

    def _pair(self, room: StasisRoom) -> None:
        if room.pairing is not None or len(room.callers) != 2 or not all(c.ready for c in room.callers):
            return
        a, b = room.callers
        assert a.endpoint is not None and b.endpoint is not None
        pairing = room.pairing = self.bridge.open_room(
            (a.name, b.name), (a.lang, b.lang), (a.endpoint, b.endpoint),
            call_id=a.channel_id, channels=(a.channel_id, b.channel_id),
        )
        a.lifecycle.partner_ready(pairing, 0)
        b.lifecycle.partner_ready(pairing, 1)
        pairing.start_call()

    def _audio(self, caller: Caller, samples: Samples) -> None:
        # Per frame.  Only a caller in a call has a room; a prompted caller
        # has left its room, and a kept one waits for a new partner.
        room = caller.pairing
        if room is not None:
            room.audio_in(caller.seat, samples)

    # -- teardown (the caller's lifecycle calls these) ------------------------

    def leave(self, caller: Caller, reason: str) -> None:
        """
        ``caller`` left: end its call, release what was created for it, and
        hang up, keep, or prompt its partner.  Its lifecycle calls this
        once.
        """
        self._mark_ended(caller.channel_id)
        self.log.info("{name} left room {room} ({reason})", name=caller.name, room=caller.room, reason=reason)
        self.callers.pop(caller.channel_id, None)
        self.prompt.cancel(caller.channel_id)
        self.dialer.caller_gone(caller.channel_id)
        room = self.rooms.get(caller.room)
        partner = None
        # A prompted caller has already left its room (which may since
        # have been opened again by others): then there is nothing to end.
        if room is not None and caller in room.callers:
            room.callers.remove(caller)
            pairing, room.pairing = room.pairing, None
            if pairing is not None:
                self.bridge.close_room(pairing, "shutdown" if reason == "shutdown" else "hangup")
            partner = room.callers[0] if room.callers else None
            if partner is not None and pairing is not None:
                partner.lifecycle.partner_left()
            if partner is not None and self._prompting(reason):
                room.callers.remove(partner)  # nobody joins a caller about to be hung up
            if not room.callers:
                del self.rooms[caller.room]
        self.release(caller)
        if partner is not None and self.settings.on_partner_hangup == "hangup":
            self.quietly(self.client.hangup(partner.channel_id))
        elif partner is not None and self._prompting(reason):
            self.log.info("{name}: playing {media} before hanging up", name=partner.name,
                          media=self.settings.partner_hangup_sound)
            self.prompt.start(partner.channel_id, partner.lang)

    def _prompting(self, reason: str) -> bool:
        return self.settings.on_partner_hangup == "prompt" and reason != "shutdown"

    def release(self, caller: Caller) -> None:
        """
        Release whatever exists of what was created for ``caller``
        (idempotent).
        """
        media_id = self.legs.release(caller, lambda cid: self.quietly(self.client.hangup(cid)))
        if caller.bridge_id is not None:
            self.quietly(self.client.destroy_bridge(caller.bridge_id))
            caller.bridge_id = None
        if media_id is not None:
            self.media_stasis.forget(media_id)  # its setup goes on, to find its caller gone

    def hang_up(self, caller: Caller) -> None:
        """
        Hang up ``caller``'s channel.
        """
        self.quietly(self.client.hangup(caller.channel_id))

    def quietly(self, d: "Deferred[Any]") -> "Deferred[Any]":
        """
        ``d``, a cleanup request, with its failure handled: 404 (already
        gone) is what we wanted, 401/403 the events socket reports, anything
        else is a log line.  Shutdown waits for it.
        """
        def check(f: Failure) -> None:
            if f.check(ARIAuthError):
                return  # the events socket said so, once (ari/events.py)
            if not (f.check(ARIError) and getattr(f.value, "status", None) == 404):
                self.log.warn("ARI cleanup request failed: {err}", err=f.value)

        d.addErrback(check)
        self._pending.add(d)

        def done(result: Any) -> Any:
            self._pending.discard(d)
            return result

        d.addBoth(done)
        return d

    def stopService(self) -> "Deferred[None]":
        # Callers would otherwise sit in silent Stasis: hang them up too.
        for caller in list(self.callers.values()):
            caller.lifecycle.end("shutdown")
        self.prompt.cancel_all()
        self.dialer.cancel_all()
        self.legs.close_pending()
        pending = list(self._pending)
        d = gatherResults([maybeDeferred(super().stopService), *pending], consumeErrors=True)
        d.addBoth(lambda _: self.client.close())
        return d.addCallback(lambda _: None)

    # -- restart cleanup ---------------------------------------------------

    @inlineCallbacks
    def on_connect(self) -> Generator["Deferred[Any]", Any, None]:
        """
        After each (re)connection of the events socket: check that our user
        may make changes (a read-only one is refused here, not at the first
        caller), then :meth:`remove_leftovers`.  The events socket retries
        this when it fails and stops on 401/403 (:mod:`xlbridge.ari.events`).
        """
        yield self.client.check_access()
        yield self.remove_leftovers()

    def remove_leftovers(self) -> "Deferred[None]":
        """
        What happens on each (re)connection of the events socket: delete
        the ``xlbridge-*`` bridges and ExternalMedia channels (RTP to our
        range, AudioSocket to our listener, WebSocket with our ids, whatever
        the media is now) that no live caller owns, end callers who hung up while we were away,
        and take back callers an earlier run left in our Stasis app
        (:func:`xlbridge.ari.cleanup.remove_leftovers`).
        """
        return cleanup.remove_leftovers(self)
