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
ExternalMedia channel is found through the caller that owns it.
"""

from __future__ import annotations

from typing import Any, Generator, Optional

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.ari.audiosocket import AudioSocketRouter
from xlbridge.ari.caller import Caller, new_caller
from xlbridge.ari.client import ARIAuthError, ARIClient, ARIError
from xlbridge.ari.dial import Dialer
from xlbridge.ari.events import ARIEvents
from xlbridge.ari.leftovers import (
    BRIDGE_PREFIX,
    audiosocket_target,
    orphans,
    partnerless,
    stale_bridges,
    stale_media,
    stale_websocket,
    unicast_rtp_port,
)
from xlbridge.ari.ports import PortPool
from xlbridge.ari.prompt import PartnerPrompt
from xlbridge.ari.reactor import IARIReactor
from xlbridge.ari.rooms import StasisRoom, parse_args
from xlbridge.ari.stasis import StasisWaiter
from xlbridge.ari.websocket_media import WebSocketMedia
from xlbridge.audio.frame import Samples
from xlbridge.bridge import TCPListenerService
from xlbridge.bridge_view import ControllerView
from xlbridge.config import ARISettings
from xlbridge.transports.rtp import RTPEndpoint

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
        self.pool = pool or PortPool(*settings.rtp_ports, reactor, settings.port_quarantine)
        self.prompt = PartnerPrompt(
            self.client, self.clock, settings.partner_hangup_sound, settings.prompt_timeout,
            lambda cid: self._quietly(self.client.hangup(cid)), self._quietly,
        )
        #: With ``media = "audiosocket"``: routes connections by UUID, and
        #: the service listening for them (bound before the events connect).
        self.audiosocket: Optional[AudioSocketRouter] = None
        self.audiosocket_listener: Optional[TCPListenerService] = None
        if settings.media == "audiosocket":
            self.audiosocket = AudioSocketRouter(reactor)
            self.audiosocket_listener = TCPListenerService(
                reactor, settings.audiosocket_port, self.audiosocket, bridge.config.interface,
                bridge.admission.peers, "the ARI AudioSocket port",
            )
            self.audiosocket_listener.setName("ari-audiosocket")
            self.audiosocket_listener.setServiceParent(self)
        #: WebSocket legs: their dials (server mode) or the router and its
        #: listener (client mode, with ``media = "websocket"`` only).  Always
        #: there: a caller may ask for ``media=websocket`` in its Stasis
        #: arguments whatever ``--ari-media`` says, and server mode needs
        #: nothing of ours but ARI's own HTTP server.
        ws_settings = settings if settings.media == "websocket" else attrs.evolve(settings, websocket_connection="server")
        self.websocket: WebSocketMedia = WebSocketMedia(
            ws_settings, reactor, reactor, bridge.config.interface, bridge.config.websocket_lookahead_ms,
            bridge.admission.peers,
        )
        if self.websocket.listener is not None:
            self.websocket.listener.setServiceParent(self)
        self.callers: dict[str, Caller] = {}
        self.rooms: dict[str, StasisRoom] = {}
        self._pending: set[Deferred[Any]] = set()
        #: our ExternalMedia channels entering Stasis, and setups waiting
        self.media_stasis = StasisWaiter(self.clock)
        #: Channels seen ending (StasisEnd, ChannelDestroyed, our teardown),
        #: newest last, bounded: a restart cleanup working from an older
        #: channel list must not take them back.
        self.ended: dict[str, None] = {}
        self.dialer = Dialer(
            self.client, self.clock, settings.app, settings.dial_timeout, self._end_caller,
            lambda cid: cid in self.callers, lambda cid: self._quietly(self.client.hangup(cid)),
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
            if self._media_owner(cid) is not None or self._is_our_media(channel):
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

    def _media_ids(self) -> set[str]:
        return {c.media_id for c in self.callers.values() if c.media_id is not None}

    def _is_our_media(self, channel: dict[str, Any]) -> bool:
        # Its StasisStart may come before the REST answer naming its id.
        name = str(channel.get("name", ""))
        port = unicast_rtp_port(name)
        if port is not None:
            return port in self.pool.in_use
        if self.websocket.owns(channel):
            return True
        target = audiosocket_target(name)
        return target is not None and self.audiosocket is not None and target[1] in self.audiosocket.routes

    def start_caller(self, channel: dict[str, Any], args: list[str]) -> None:
        cid = str(channel["id"])
        name = str(channel.get("name", cid))
        if cid in self.callers:
            # Taken back by the restart cleanup while its StasisStart was
            # on the way (or the other way round): one caller, once.
            return
        opts = parse_args(args)
        lang = opts.get("lang", "en").lower()
        media = self._media_of(name, opts.get("media"))
        if "dial" in opts:
            room_name = f"dial-{cid}"
        elif "room" in opts:
            room_name = opts["room"]
        else:
            self.log.warn("{name}: Stasis args {args!r} have no room= or dial=; hanging up", name=name, args=args)
            self._quietly(self.client.hangup(cid))
            return
        room = self.rooms.setdefault(room_name, StasisRoom(room_name))
        if len(room.callers) >= 2:
            self.log.warn("{name}: room {room} is full; hanging up", name=name, room=room_name)
            self._quietly(self.client.hangup(cid))
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
        return self.client.create_bridge(BRIDGE_PREFIX + caller.channel_id)

    def create_media(self, caller: Caller) -> "Deferred[Any]":
        self._bind(caller)
        if caller.media_ws is not None:
            return self.websocket.create(self.client, caller.media_ws)  # slin16 both ways
        if caller.media_uuid is not None:
            # AudioSocket: slin16 both ways (0x12), whatever --codec says.
            return self.client.external_media(
                self.settings.app, self.settings.external_host, self.audiosocket_port(), "slin16",
                audiosocket_id=caller.media_uuid,
            )
        assert caller.port is not None
        return self.client.external_media(
            self.settings.app, self.settings.external_host, caller.port, self.bridge.config.codec
        )

    def wait_media(self, caller: Caller, channel: dict[str, Any]) -> "Deferred[None]":
        vars_ = channel.get("channelvars") or {}
        addr, port = vars_.get("UNICASTRTP_LOCAL_ADDRESS"), vars_.get("UNICASTRTP_LOCAL_PORT")
        if addr and port and isinstance(caller.endpoint, RTPEndpoint):
            # Asterisk does not learn our address from what we send (T8);
            # we can talk first, and latching still follows its real source.
            caller.endpoint.remote = (str(addr), int(port))
        # Asterisk answers externalMedia before the new channel is in
        # Stasis; adding it to the bridge earlier fails with 422 "Channel
        # not in Stasis application" (seen on Asterisk 22).
        assert caller.media_id is not None
        if caller.media_ws is not None:
            # A WebSocket channel only enters Stasis once connected: connect
            # first (PROTOCOLS.md 10.6).
            d = self.websocket.connect(caller.media_ws, channel)
            return d.addCallback(lambda _: self._media_in_stasis(caller))
        return self.media_stasis.wait(caller.media_id)

    def _media_in_stasis(self, caller: Caller) -> "Deferred[None] | None":
        if caller.media_id is None:
            return None  # released meanwhile: its setup goes on, to find its caller gone
        return self.media_stasis.wait(caller.media_id)

    def add_to_bridge(self, caller: Caller) -> "Deferred[Any]":
        assert caller.bridge_id is not None and caller.media_id is not None
        return self.client.add_channels(caller.bridge_id, caller.channel_id, caller.media_id)

    def set_up(self, caller: Caller) -> None:
        room = self.rooms.get(caller.room)
        if room is not None and caller in room.callers:
            self._pair(room)

    def audiosocket_port(self) -> int:
        """
        The TCP port ExternalMedia AudioSocket channels connect to: the one
        we listen on (the configured one, unless 0 asked for any).
        """
        listener = self.audiosocket_listener
        if listener is not None and listener.port is not None:
            return int(getattr(listener.port.getHost(), "port"))
        return self.settings.audiosocket_port

    def _media_of(self, name: str, asked: Optional[str]) -> str:
        """
        The media a caller gets: ``--ari-media``, unless its Stasis
        arguments say ``media=rtp`` or ``media=websocket`` (or
        ``audiosocket`` when that listener runs): one room may mix them.
        """
        default = self.settings.media
        if asked is None:
            return default
        asked = asked.strip().lower()
        usable = {"rtp", "websocket"} | ({"audiosocket"} if self.audiosocket is not None else set())
        if asked not in usable:
            self.log.warn(
                "{name}: media={asked} is not one of {usable}; using {default}",
                name=name, asked=asked, usable=", ".join(sorted(usable)), default=default,
            )
            return default
        return asked

    def _bind(self, caller: Caller) -> None:
        if caller.media == "websocket":
            caller.media_ws, caller.endpoint = self.websocket.bind(caller.name, lambda ep, s: self._audio(caller, s))
            self.bridge.attach_endpoint(caller.name, caller.endpoint, origin="ari")
            return
        if caller.media == "audiosocket" and self.audiosocket is not None:
            # One TCP port for all: the router hands Asterisk's connection
            # announcing this UUID to this endpoint.
            caller.media_uuid, caller.endpoint = self.audiosocket.add(
                caller.name, lambda ep, s: self._audio(caller, s)
            )
            self.bridge.attach_endpoint(caller.name, caller.endpoint, origin="ari")
            return
        endpoint = self.bridge.rtp_endpoint(caller.name, lambda ep, s: self._audio(caller, s))
        for _ in range(20):
            port = self.pool.allocate()
            try:
                caller.listening = self.reactor.listenUDP(
                    port, endpoint, interface=self.bridge.config.interface, maxPacketSize=8192
                )
            except CannotListenError:
                self.pool.skip(port)
                continue
            caller.port, caller.endpoint = port, endpoint
            # Listed for the monitor under its leg's name (status, metrics, Listen).
            self.bridge.attach_endpoint(caller.name, endpoint, origin="ari")
            return
        raise CannotListenError(self.bridge.config.interface, 0, "no bindable port in --rtp-ports")

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
            self._quietly(self.client.hangup(partner.channel_id))
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
        media_id = None
        if caller.listening is not None:
            caller.listening.stopListening()
            caller.listening = None
        if caller.endpoint is not None:
            # Its counts stay in the monitor's totals (idempotent).
            self.bridge.detach_endpoint(caller.name, caller.endpoint)
        if caller.port is not None:
            self.pool.release(caller.port)
            caller.port = None
        if caller.media_id is not None:
            media_id = caller.media_id
            self._quietly(self.client.hangup(caller.media_id))
            caller.media_id = None
        if caller.media_uuid is not None and self.audiosocket is not None:
            # After the hangup request: Asterisk may read our 0x00 first,
            # which ends the channel too.
            self.audiosocket.remove(caller.media_uuid)
            caller.media_uuid = None
        if caller.media_ws is not None:
            # Also after the hangup request (our close ends the channel too).
            self.websocket.remove(caller.media_ws)
            caller.media_ws = None
        if caller.bridge_id is not None:
            self._quietly(self.client.destroy_bridge(caller.bridge_id))
            caller.bridge_id = None
        if media_id is not None:
            self.media_stasis.forget(media_id)  # its setup goes on, to find its caller gone

    def hang_up(self, caller: Caller) -> None:
        """
        Hang up ``caller``'s channel.
        """
        self._quietly(self.client.hangup(caller.channel_id))

    def _quietly(self, d: "Deferred[Any]") -> "Deferred[Any]":
        # 404: already gone, which is what we wanted.
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
        if self.audiosocket is not None:
            self.audiosocket.close_pending()
        self.websocket.close_pending()
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

    @inlineCallbacks
    def remove_leftovers(self) -> Generator["Deferred[Any]", Any, None]:
        """
        What happens on each (re)connection of the events socket: delete
        the ``xlbridge-*`` bridges and ExternalMedia channels (RTP to our
        range, AudioSocket to our listener, WebSocket with our ids, whatever
        the media is now) that no live caller owns, end callers who hung up while we were away,
        and take back callers an earlier run left in our Stasis app.
        """
        client = self.client
        bridges = yield client.bridges()
        # Ours as of the answer: callers who entered while it was on the
        # way may already have made theirs.
        ours_b = {c.bridge_id for c in self.callers.values()} | {BRIDGE_PREFIX + c for c in self.callers}
        for b in stale_bridges(bridges or [], ours_b):
            self.log.info("removing stale bridge {name}", name=str(b.get("name", "")))
            yield self._quietly(client.destroy_bridge(str(b["id"])))
        # Only callers we knew of before asking can be missing from the
        # answer because they are gone, not because they are newer.
        before = set(self.callers)
        channels = yield client.channels()
        alive = {ch.get("id") for ch in channels or []}
        for caller in list(self.callers.values()):
            if caller.channel_id in before and caller.channel_id not in alive:
                # Hung up while the events socket was down: no StasisEnd came.
                caller.lifecycle.hangup("gone while disconnected")
        ours = self._media_ids() | (set(self.audiosocket.routes) if self.audiosocket is not None else set())
        dest = f"{self.settings.external_host}:{self.audiosocket_port()}"
        stale = stale_media(channels or [], ours, self.settings.rtp_ports, dest, self.pool.in_use)
        ours_ws = self._media_ids() | self.websocket.ids()
        stale += stale_websocket(channels or [], ours_ws, self.settings.app)
        for ch in stale:
            self.log.info("removing stale channel {name}", name=ch.get("name"))
            yield self._quietly(client.hangup(str(ch["id"])))
        known = set(self.callers) | self._media_ids() | set(self.dialing)
        found = orphans(channels or [], self.settings.app, known)
        lonely = partnerless(found)
        for ch, args in found:
            if ch.get("id") in self.callers or ch.get("id") in self.ended:
                continue  # its StasisStart, or its end, came meanwhile
            if str(ch.get("id")) in lonely:
                # A dial caller whose callee is gone (or a callee whose caller is).
                self.log.info("hanging up {name}: its partner is gone", name=ch.get("name"))
                yield self._quietly(client.hangup(str(ch["id"])))
                continue
            self.log.info("taking back {name}, left in Stasis by an earlier run", name=ch.get("name"))
            self.start_caller(ch, args)
