"""
The ARI controller: callers in ``Stasis(xlbridge,room=R,lang=L)`` are
paired by room, each through its own mixing bridge and ExternalMedia
channel, whose RTP comes to a port of ``--rtp-ports``.

Per caller (PROTOCOLS.md 5): answer, create bridge ``xlbridge-<channel>``,
bind an RTP leg on a pool port, create the ExternalMedia channel sending to
it, add both channels to the bridge.  When both callers of a room are set
up, their legs form a call (id: the first caller's channel id); it is
restarted by audio if it ended for inactivity.

Teardown (StasisEnd or ChannelDestroyed of a caller or its ExternalMedia
channel) is idempotent and also runs half-way through a setup: every
resource is released as soon as it exists once the caller is gone.  Ports
rest in quarantine before reuse.  ``dial=ENDPOINT`` originates the callee
into a private room.  On each (re)connection of the events socket,
bridges named ``xlbridge-*`` and ExternalMedia channels to our port range
that are not ours are removed: they are leftovers of an earlier run.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from xlbridge.ari.client import ARIClient, ARIError
from xlbridge.ari.events import ARIEvents
from xlbridge.ari.ports import PortPool
from xlbridge.call.service import CallService
from xlbridge.config import ARISettings
from xlbridge.transports.rtp import RTPEndpoint

BRIDGE_PREFIX = "xlbridge-"


def parse_args(args: list[str]) -> dict[str, str]:
    """
    ``["room=R,lang=en"]`` or ``["room=R", "lang=en"]`` -> ``{"room": "R", "lang": "en"}``.
    """
    out: dict[str, str] = {}
    for arg in args:
        for item in str(arg).split(","):
            key, sep, value = item.partition("=")
            if sep and key.strip():
                out[key.strip().lower()] = value.strip()
    return out


@attrs.define(eq=False)
class Caller:
    """
    One caller's channel and what xlbridge created for it.
    """

    channel_id: str
    name: str
    room: str
    lang: str
    bridge_id: Optional[str] = None
    media_id: Optional[str] = None
    port: Optional[int] = None
    endpoint: Optional[RTPEndpoint] = None
    listening: Optional[IListeningPort] = None
    ready: bool = False
    gone: bool = False


@attrs.define(eq=False)
class Room:
    name: str
    callers: list[Caller] = attrs.Factory(list)
    call: Optional[CallService] = None


class ARIController(MultiService):
    """
    Drive Asterisk through ARI for ``bridge``.

    :param client: REST client; ``events`` is built from the same settings
        unless given (tests).
    """

    log = Logger()

    def __init__(
        self, bridge: Any, settings: ARISettings, reactor: Any,
        client: Optional[ARIClient] = None, pool: Optional[PortPool] = None,
    ) -> None:
        super().__init__()
        self.setName("ari")
        self.bridge = bridge
        self.settings = settings
        self.reactor = reactor
        self.client = client or ARIClient(settings.url, settings.user, settings.password, reactor)
        self.pool = pool or PortPool(*settings.rtp_ports, reactor, settings.port_quarantine)
        self.callers: dict[str, Caller] = {}
        self.media: dict[str, Caller] = {}
        self.rooms: dict[str, Room] = {}
        self._pending: set[Deferred[Any]] = set()
        #: Originated callee channel id -> the caller waiting for it.
        self.dialing: dict[str, str] = {}
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
                return  # our ExternalMedia channel entering the app
            self.dialing.pop(cid, None)  # an originated callee answered
            self.start_caller(channel, list(event.get("args") or []))
        elif kind in ("StasisEnd", "ChannelDestroyed"):
            caller = self.callers.get(cid)
            if cid in self.dialing:
                # The callee went away before answering: so does the caller.
                waiting = self.callers.get(self.dialing.pop(cid))
                if waiting is not None:
                    self.teardown(waiting, "callee did not answer")
                    self._quietly(self.client.hangup(waiting.channel_id))
            elif caller is not None:
                self.teardown(caller, "hangup")
            elif cid in self.media:
                # Our ExternalMedia channel died under a live caller: the
                # caller can no longer be heard, so end its side too.
                caller = self.media[cid]
                self.teardown(caller, "media channel gone")
                self._quietly(self.client.hangup(caller.channel_id))

    def _is_our_media(self, channel: dict[str, Any]) -> bool:
        port = _media_port(str(channel.get("name", "")))
        return port is not None and port in self.pool.in_use

    def start_caller(self, channel: dict[str, Any], args: list[str]) -> None:
        cid = str(channel["id"])
        name = str(channel.get("name", cid))
        opts = parse_args(args)
        lang = opts.get("lang", "en").lower()
        if "dial" in opts:
            room_name = f"dial-{cid}"
            peer_args = f"room={room_name},lang={opts.get('peer_lang', 'es').lower()}"
            d = self.client.originate(opts["dial"], self.settings.app, peer_args)
            d.addCallback(self._originated, cid)
            d.addErrback(self._failed_originate, cid, opts["dial"])
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
        self.setup(caller).addErrback(self._failed_setup, caller)

    def _originated(self, callee: Any, caller_id: str) -> None:
        callee_id = str(callee["id"])
        if callee_id not in self.callers and caller_id in self.callers:
            self.dialing[callee_id] = caller_id
        elif caller_id not in self.callers:
            self._quietly(self.client.hangup(callee_id))  # the caller gave up meanwhile

    def _failed_originate(self, failure: Any, cid: str, endpoint: str) -> None:
        self.log.error("originating {endpoint} failed: {err}", endpoint=endpoint, err=failure.value)
        caller = self.callers.get(cid)
        if caller is not None:
            self.teardown(caller, "dial failed")
            self._quietly(self.client.hangup(cid))

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
        if addr and port and caller.endpoint is not None:
            # Asterisk does not learn our address from what we send (T8);
            # we can talk first, and latching still follows its real source.
            caller.endpoint.remote = (str(addr), int(port))
        yield c.add_channels(caller.bridge_id, caller.channel_id, caller.media_id)
        if caller.gone:
            return self._release(caller)
        caller.ready = True
        self._maybe_start(self.rooms[caller.room])

    def _bind(self, caller: Caller) -> None:
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
            a.channel_id, (a.name, b.name), (a.lang, b.lang), (a.endpoint, b.endpoint), ended
        )
        return room.call

    def _audio(self, caller: Caller, samples: Any) -> None:
        room = self.rooms.get(caller.room)
        if room is None or caller.gone:
            return
        call = self._maybe_start(room)
        if call is not None:
            call.audio_in(room.callers.index(caller), samples)

    # -- teardown ----------------------------------------------------------

    def teardown(self, caller: Caller, reason: str) -> None:
        """
        ``caller`` left: end its call, release what was created for it, and
        hang up (or keep) its partner.  Idempotent.
        """
        if caller.gone:
            return
        caller.gone = True
        self.log.info("{name} left room {room} ({reason})", name=caller.name, room=caller.room, reason=reason)
        self.callers.pop(caller.channel_id, None)
        room = self.rooms.get(caller.room)
        partner = None
        if room is not None:
            if caller in room.callers:
                room.callers.remove(caller)
            if room.call is not None:
                room.call.end("shutdown" if reason == "shutdown" else "hangup")
                room.call = None
            partner = room.callers[0] if room.callers else None
            if not room.callers:
                del self.rooms[caller.room]
        self._release(caller)
        for callee, waiting in list(self.dialing.items()):
            if waiting == caller.channel_id:
                del self.dialing[callee]
                self._quietly(self.client.hangup(callee))
        if partner is not None and self.settings.on_partner_hangup == "hangup":
            self._quietly(self.client.hangup(partner.channel_id))

    def _release(self, caller: Caller) -> None:
        if caller.listening is not None:
            caller.listening.stopListening()
            caller.listening = None
        if caller.port is not None:
            self.pool.release(caller.port)
            caller.port = None
        if caller.media_id is not None:
            self.media.pop(caller.media_id, None)
            self._quietly(self.client.hangup(caller.media_id))
            caller.media_id = None
        if caller.bridge_id is not None:
            self._quietly(self.client.destroy_bridge(caller.bridge_id))
            caller.bridge_id = None

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
        pending = list(self._pending)
        d = gatherResults([maybeDeferred(super().stopService), *pending], consumeErrors=True)
        d.addBoth(lambda _: self.client.close())
        return d.addCallback(lambda _: None)

    # -- restart cleanup ---------------------------------------------------

    def on_connect(self) -> None:
        self.cleanup().addErrback(lambda f: self.log.error("ARI cleanup failed: {err}", err=f.value))

    @inlineCallbacks
    def cleanup(self) -> Any:
        """
        Delete ``xlbridge-*`` bridges and ExternalMedia channels to our
        ports that no live caller owns (left by a crashed earlier run).
        """
        ours_b = {c.bridge_id for c in self.callers.values()}
        ours_c = set(self.media)
        bridges = yield self.client.bridges()
        for b in bridges or []:
            if str(b.get("name", "")).startswith(BRIDGE_PREFIX) and b.get("id") not in ours_b:
                self.log.info("removing stale bridge {name}", name=b.get("name"))
                yield self._quietly(self.client.destroy_bridge(str(b["id"])))
        channels = yield self.client.channels()
        alive = {ch.get("id") for ch in channels or []}
        for caller in list(self.callers.values()):
            if caller.channel_id not in alive:
                # Hung up while the events socket was down: no StasisEnd came.
                self.teardown(caller, "gone while disconnected")
        low, high = self.settings.rtp_ports
        for ch in channels or []:
            port = _media_port(str(ch.get("name", "")))
            if port is not None and low <= port <= high and ch.get("id") not in ours_c:
                self.log.info("removing stale channel {name}", name=ch.get("name"))
                yield self._quietly(self.client.hangup(str(ch["id"])))


def _media_port(name: str) -> Optional[int]:
    # "UnicastRTP/127.0.0.1:20000-0x7f..." -> 20000
    if not name.startswith("UnicastRTP/"):
        return None
    hostport = name[len("UnicastRTP/"):].rsplit("-", 1)[0]
    try:
        return int(hostport.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None
