"""
The ARI controller: callers in ``Stasis(xlbridge,room=R,lang=L)`` are
paired by room, each through its own mixing bridge and ExternalMedia
channel, whose RTP comes to a port of ``--rtp-ports`` (or, with
``--ari-media audiosocket``, whose AudioSocket connection comes to our one
AudioSocket port: :mod:`xlbridge.ari.audiosocket`).

Per caller (PROTOCOLS.md 5): answer, create bridge ``xlbridge-<channel>``,
bind a leg (an RTP port from the pool, or an AudioSocket UUID registered
with the router), create the ExternalMedia channel sending to it, add both
channels to the bridge.  When both callers of a room are set up, their
legs form a call (id: the first caller's channel id); it is restarted by
audio if it ended for inactivity.

Teardown (StasisEnd or ChannelDestroyed of a caller or its ExternalMedia
channel) is idempotent and also runs half-way through a setup: every
resource is released as soon as it exists once the caller is gone.  Ports
rest in quarantine before reuse.  The partner is hung up, kept, or first
told (``prompt``: :mod:`xlbridge.ari.prompt`).  ``dial=ENDPOINT``
originates the callee into a private room (:mod:`xlbridge.ari.dial`).  On each (re)connection of the events socket, bridges
named ``xlbridge-*`` and ExternalMedia channels to our port range or
AudioSocket port that are not ours are removed: they are leftovers of an
earlier run (:mod:`xlbridge.ari.leftovers`).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xlbridge.ari.audiosocket import AudioSocketRouter
from xlbridge.ari.client import ARIClient, ARIError
from xlbridge.ari.dial import Dialer
from xlbridge.ari.events import ARIEvents
from xlbridge.ari.leftovers import audiosocket_target, remove_leftovers, unicast_rtp_port
from xlbridge.ari.ports import PortPool
from xlbridge.ari.prompt import PartnerPrompt
from xlbridge.ari.rooms import Caller, Room, parse_args
from xlbridge.ari.stasis import StasisWaiter
from xlbridge.bridge import TCPListenerService
from xlbridge.call.service import CallService
from xlbridge.config import ARISettings
from xlbridge.transports.rtp import RTPEndpoint

BRIDGE_PREFIX = "xlbridge-"
#: Bound on the ended channel ids remembered.
MAX_ENDED = 4096


class ARIController(MultiService):
    """
    Drive Asterisk through ARI for ``bridge``.

    :param client: REST client; ``events`` is built from the same settings
        unless given (tests).
    :param clock: schedules the dial and prompt guard timers (default: the
        reactor; tests pass a ``Clock``).
    """

    log = Logger()

    def __init__(
        self, bridge: Any, settings: ARISettings, reactor: Any,
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
                reactor, settings.audiosocket_port, self.audiosocket, bridge.config.interface
            )
            self.audiosocket_listener.setName("ari-audiosocket")
            self.audiosocket_listener.setServiceParent(self)
        self.callers: dict[str, Caller] = {}
        self.media: dict[str, Caller] = {}
        self.rooms: dict[str, Room] = {}
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
        #: Originated callee channel id -> the caller waiting for it.
        self.dialing = self.dialer.waiting
        self.events = ARIEvents(
            reactor, settings.url, settings.app, settings.user, settings.password,
            self.on_event, self.on_connect,
        )
        self.events.setServiceParent(self)

    # -- events ------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        channel = event.get("channel") or {}
        cid = str(channel.get("id", ""))
        if kind == "StasisStart":
            if cid in self.media or self._is_our_media(channel):
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
                self.teardown(caller, "hangup")
            elif cid in self.media:
                # Our ExternalMedia channel died under a live caller: the
                # caller can no longer be heard, so end its side too.
                caller = self.media[cid]
                self.teardown(caller, "media channel gone")
                self._quietly(self.client.hangup(caller.channel_id))

    def _mark_ended(self, cid: str) -> None:
        self.ended[cid] = None
        if len(self.ended) > MAX_ENDED:
            del self.ended[next(iter(self.ended))]

    def _is_our_media(self, channel: dict[str, Any]) -> bool:
        # Its StasisStart may come before the REST answer naming its id.
        name = str(channel.get("name", ""))
        port = unicast_rtp_port(name)
        if port is not None:
            return port in self.pool.in_use
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
        if "dial" in opts:
            room_name = f"dial-{cid}"
        elif "room" in opts:
            room_name = opts["room"]
        else:
            self.log.warn("{name}: Stasis args {args!r} have no room= or dial=; hanging up", name=name, args=args)
            self._quietly(self.client.hangup(cid))
            return
        room = self.rooms.setdefault(room_name, Room(room_name))
        if len(room.callers) >= 2:
            self.log.warn("{name}: room {room} is full; hanging up", name=name, room=room_name)
            self._quietly(self.client.hangup(cid))
            return
        caller = Caller(cid, name, room_name, lang)
        room.callers.append(caller)
        self.callers[cid] = caller
        self.log.info("{name} ({lang}) entered room {room}", name=name, lang=lang, room=room_name)
        if "dial" in opts:
            peer_args = f"room={room_name},lang={opts.get('peer_lang', 'es').lower()}"
            self.dialer.dial(cid, opts["dial"], peer_args)
        self.setup(caller).addErrback(self._failed_setup, caller)

    def _end_caller(self, caller_id: str, reason: str) -> None:
        caller = self.callers.get(caller_id)
        if caller is not None:
            self.teardown(caller, reason)
            self._quietly(self.client.hangup(caller_id))

    # -- setup -------------------------------------------------------------

    @inlineCallbacks
    def setup(self, caller: Caller) -> Any:
        c = self.client
        yield c.answer(caller.channel_id)
        if caller.gone:
            return
        bridge = yield c.create_bridge(BRIDGE_PREFIX + caller.channel_id)
        caller.bridge_id = str(bridge["id"])
        if caller.gone:
            return self._release(caller)
        self._bind(caller)
        if caller.media_uuid is not None:
            # AudioSocket: slin16 both ways (0x12), whatever --codec says.
            media = yield c.external_media(
                self.settings.app, self.settings.external_host, self.audiosocket_port(), "slin16",
                audiosocket_id=caller.media_uuid,
            )
        else:
            assert caller.port is not None
            media = yield c.external_media(
                self.settings.app, self.settings.external_host, caller.port, self.bridge.config.codec
            )
        caller.media_id = str(media["id"])
        self.media[caller.media_id] = caller
        if caller.gone:
            return self._release(caller)
        vars_ = media.get("channelvars") or {}
        addr, port = vars_.get("UNICASTRTP_LOCAL_ADDRESS"), vars_.get("UNICASTRTP_LOCAL_PORT")
        if addr and port and isinstance(caller.endpoint, RTPEndpoint):
            # Asterisk does not learn our address from what we send (T8);
            # we can talk first, and latching still follows its real source.
            caller.endpoint.remote = (str(addr), int(port))
        # Asterisk answers externalMedia before the new channel is in
        # Stasis; adding it to the bridge earlier fails with 422 "Channel
        # not in Stasis application" (seen on Asterisk 22).
        yield self.media_stasis.wait(caller.media_id)
        if caller.gone:
            return self._release(caller)
        yield c.add_channels(caller.bridge_id, caller.channel_id, caller.media_id)
        if caller.gone:
            return self._release(caller)
        caller.ready = True
        room = self.rooms.get(caller.room)
        if room is not None and caller in room.callers:
            self._maybe_start(room)

    def audiosocket_port(self) -> int:
        """
        The TCP port ExternalMedia AudioSocket channels connect to: the one
        we listen on (the configured one, unless 0 asked for any).
        """
        listener = self.audiosocket_listener
        if listener is not None and listener.port is not None:
            return int(getattr(listener.port.getHost(), "port"))
        return self.settings.audiosocket_port

    def _bind(self, caller: Caller) -> None:
        if self.audiosocket is not None:
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

    def _failed_setup(self, failure: Any, caller: Caller) -> None:
        self.log.error("{name}: setup failed: {err}", name=caller.name, err=failure.value)
        if not caller.gone:
            self.teardown(caller, "setup failed")
            self._quietly(self.client.hangup(caller.channel_id))

    def _maybe_start(self, room: Room) -> Optional[CallService]:
        if room.call is not None or len(room.callers) != 2 or not all(c.ready for c in room.callers):
            return room.call
        if not self.bridge.accepting_calls:
            return None
        a, b = room.callers
        assert a.endpoint is not None and b.endpoint is not None

        def ended(call: CallService) -> None:
            if room.call is call:
                room.call = None

        room.call = self.bridge.start_call(
            a.channel_id, (a.name, b.name), (a.lang, b.lang), (a.endpoint, b.endpoint), ended,
            channels=(a.channel_id, b.channel_id),
        )
        return room.call

    def _audio(self, caller: Caller, samples: Any) -> None:
        room = self.rooms.get(caller.room)
        if room is None or caller.gone or caller not in room.callers:
            return  # a prompted caller has left its room (maybe reopened by others)
        call = self._maybe_start(room)
        if call is not None:
            call.audio_in(room.callers.index(caller), samples)

    # -- teardown ----------------------------------------------------------

    def teardown(self, caller: Caller, reason: str) -> None:
        """
        ``caller`` left: end its call, release what was created for it, and
        hang up, keep, or prompt its partner.  Idempotent.
        """
        if caller.gone:
            return
        caller.gone = True
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
            if room.call is not None:
                room.call.end("shutdown" if reason == "shutdown" else "hangup")
                room.call = None
            partner = room.callers[0] if room.callers else None
            if partner is not None and self._prompting(reason):
                room.callers.remove(partner)  # nobody joins a caller about to be hung up
            if not room.callers:
                del self.rooms[caller.room]
        self._release(caller)
        if partner is not None and self.settings.on_partner_hangup == "hangup":
            self._quietly(self.client.hangup(partner.channel_id))
        elif partner is not None and self._prompting(reason):
            self.log.info("{name}: playing {media} before hanging up", name=partner.name,
                          media=self.settings.partner_hangup_sound)
            self.prompt.start(partner.channel_id, partner.lang)

    def _prompting(self, reason: str) -> bool:
        return self.settings.on_partner_hangup == "prompt" and reason != "shutdown"

    def _release(self, caller: Caller) -> None:
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
            self.media.pop(caller.media_id, None)
            media_id = caller.media_id
            self._quietly(self.client.hangup(caller.media_id))
            caller.media_id = None
        if caller.media_uuid is not None and self.audiosocket is not None:
            # After the hangup request: Asterisk may read our 0x00 first,
            # which ends the channel too.
            self.audiosocket.remove(caller.media_uuid)
            caller.media_uuid = None
        if caller.bridge_id is not None:
            self._quietly(self.client.destroy_bridge(caller.bridge_id))
            caller.bridge_id = None
        if media_id is not None:
            self.media_stasis.forget(media_id)  # its setup sees caller.gone

    def _quietly(self, d: "Deferred[Any]") -> "Deferred[Any]":
        # 404: already gone, which is what we wanted.
        def check(f: Any) -> None:
            if not (f.check(ARIError) and f.value.status == 404):
                self.log.warn("ARI cleanup request failed: {err}", err=f.value)

        d.addErrback(check)
        self._pending.add(d)

        def done(result: Any) -> Any:
            self._pending.discard(d)
            return result

        d.addBoth(done)
        return d

    def stopService(self) -> Any:
        # Callers would otherwise sit in silent Stasis: hang them up too.
        for caller in list(self.callers.values()):
            self.teardown(caller, "shutdown")
            self._quietly(self.client.hangup(caller.channel_id))
        self.prompt.cancel_all()
        self.dialer.cancel_all()
        if self.audiosocket is not None:
            self.audiosocket.close_pending()
        pending = list(self._pending)
        d = gatherResults([maybeDeferred(super().stopService), *pending], consumeErrors=True)
        d.addBoth(lambda _: self.client.close())
        return d.addCallback(lambda _: None)

    # -- restart cleanup ---------------------------------------------------

    def on_connect(self) -> None:
        self.cleanup().addErrback(lambda f: self.log.error("ARI cleanup failed: {err}", err=f.value))

    def cleanup(self) -> "Deferred[None]":
        """
        Delete ``xlbridge-*`` bridges and ExternalMedia channels to our
        ports that no live caller owns (left by a crashed earlier run).
        """
        return remove_leftovers(self)
