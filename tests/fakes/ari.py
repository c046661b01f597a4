"""
A fake Asterisk ARI (PROTOCOLS.md 5.1-5.2): REST under ``/ari`` and the
events WebSocket at ``/ari/events``, on one port.

* Auth: HTTP Basic or ``api_key=user:pass`` (split at the first ``:``);
  anything else is 401 (``{"message": "Authentication required"}``), on
  REST and on the WebSocket upgrade.  With :attr:`FakeARI.read_only` (the
  user's ``read_only = yes`` in ari.conf) every REST request but GET is 403
  ``{"message": "Write access denied"}``, checked, like Asterisk, after the
  user and before the resource (res_ari.c ``ast_ari_callback``).
* :attr:`FakeARI.ws_failures`: statuses the next WebSocket upgrades are
  refused with, one per attempt (503 as while Asterisk boots...).
* Every REST request is recorded as a :class:`Request` (method, path,
  query params) in :attr:`FakeARI.requests`.
* Channels look like Asterisk's (``id`` ``1724500000.N``, ``name``,
  ``state``, ``caller``, ``dialplan``...).  ``externalMedia`` validates its
  params, creates ``UnicastRTP/<host:port>-0x...`` whose own StasisStart is
  emitted, and answers with ``channelvars`` UNICASTRTP_LOCAL_ADDRESS/PORT
  naming a real UDP socket of the fake: :meth:`FakeARI.send_rtp` sends
  from it to ``external_host`` and what comes back is recorded.
* ``encapsulation=audiosocket`` needs ``transport=tcp`` (400 otherwise)
  and ``data`` (400 if empty; a non-UUID makes chan_audiosocket's request
  fail, which ARI reports as 500).  The fake connects to ``external_host``
  before answering (500 if it cannot), sends the 0x01 UUID, names the
  channel ``AudioSocket/<host:port>-<uuid>`` (chan_audiosocket.c) and
  emits its StasisStart with ``args`` ``[data]``: see
  tests/fakes/ari_audiosocket.py.  :meth:`FakeARI.send_audiosocket` sends
  audio on it; :attr:`FakeARI.audiosocket` holds each connection and what
  came back.  Our 0x00, a bad message or a closed socket hangs the channel
  up; hanging it up closes the socket.
* ``transport=websocket`` (``encapsulation=none``): chan_websocket
  channels, served at ``/media/<connection id>`` on this port (server
  mode) or dialling :attr:`FakeARI.websocket_clients` (client mode), each
  entering Stasis only once connected: see tests/fakes/ari_websocket.py.
  :attr:`FakeARI.websocket` holds each channel (``send_audio``,
  ``heard``...).
* ``POST /channels/{id}/play`` answers 201 with a Playback (``id`` uuid,
  ``media_uri``, ``target_uri`` ``channel:<id>``, ``language``, ``state``
  ``queued``), then emits PlaybackStarted (``playing``) and, unless
  :attr:`FakeARI.playbacks_finish` is false, PlaybackFinished (``done``)
  after :attr:`FakeARI.playback_seconds`.
* :meth:`FakeARI.enter` puts a caller into Stasis (StasisStart with
  ``args``); :meth:`FakeARI.hangup` (and ``DELETE /channels/{id}``) emits
  StasisEnd then ChannelDestroyed.  ``POST /channels`` (originate) enters
  the new channel, answered, with ``appArgs`` split at commas; with
  :attr:`FakeARI.originate_answers` false it rings (state ``Ring``) and,
  like Asterisk, is destroyed (cause 19, no answer) after ``timeout``
  seconds (default 30, -1 never) unless :attr:`FakeARI.originate_times_out`
  is false.
* Several Stasis apps (:attr:`FakeARI.apps`, tests/fakes/ari_apps.py):
  each channel's events go to its app's sockets only; ``GET
  /applications[/{name}]``; ``POST /channels/{id}/move``.
* :meth:`FakeARI.fail_next` makes the next request matching a method and
  path prefix fail with a status.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import json
import uuid
from http import HTTPStatus
from typing import Any, Optional
from urllib.parse import unquote

import attrs
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.fakes.ari_apps import StasisApps
from tests.fakes.ari_audiosocket import AudioSocketPeer, connect
from tests.fakes.ari_websocket import ARIChannel, external_websocket, hang_up
from tests.fakes.chan_websocket import FakeChanWebSocket

ASTERISK_ID = "02:42:ac:11:00:02"


@attrs.define
class Request:
    method: str
    path: str
    params: dict[str, str]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


class _RTPSocket(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr))


class _Events(WebSocketServerProtocol):
    def onConnect(self, request: Any) -> None:
        fake: FakeARI = self.factory.fake
        key = (request.params.get("api_key") or [None])[0]
        if not fake.authorized(request.headers.get("authorization"), key):
            fake.ws_rejected += 1
            raise ConnectionDeny(401, "Unauthorized")
        if fake.ws_failures:
            status = fake.ws_failures.pop(0)
            fake.ws_failed += 1
            raise ConnectionDeny(status, HTTPStatus(status).phrase)
        self.apps = set(",".join(request.params.get("app", [])).split(","))

    def onOpen(self) -> None:
        self.factory.fake.sockets.append(self)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.fake.closes.append(code)
        if self in self.factory.fake.sockets:
            self.factory.fake.sockets.remove(self)


class _Rest(Resource):
    isLeaf = True

    def __init__(self, fake: "FakeARI") -> None:
        super().__init__()
        self.fake = fake

    def render(self, request: Any) -> bytes:
        fake = self.fake
        method = request.method.decode()
        path = unquote(request.path.decode())[len("/ari"):]
        params = {k.decode(): v[-1].decode() for k, v in request.args.items()}
        key = params.pop("api_key", None)
        fake.requests.append(Request(method, path, params))
        request.setHeader(b"content-type", b"application/json")
        if not fake.authorized(request.getHeader("authorization"), key):
            request.setResponseCode(401)
            return b'{"message": "Authentication required"}'
        if fake.read_only and method not in ("GET", "OPTIONS"):
            request.setResponseCode(403)
            return b'{"message": "Write access denied"}'
        for i, (m, prefix, status) in enumerate(fake.failures):
            if m == method and path.startswith(prefix):
                del fake.failures[i]
                request.setResponseCode(status)
                return json.dumps({"message": "injected failure"}).encode()
        status, body = fake.handle(method, path.strip("/").split("/"), params)
        request.setResponseCode(status)
        return b"" if body is None else json.dumps(body).encode()


class FakeARI:
    """
    The fake.  ``listen(reactor)`` binds it; :attr:`url` is the base URL.
    """

    def __init__(self, reactor: Any, user: str = "xlbridge", password: str = "s3cret") -> None:
        self.reactor = reactor
        self.user, self.password = user, password
        self.requests: list[Request] = []
        self.channels: dict[str, dict[str, Any]] = {}
        self.bridges: dict[str, dict[str, Any]] = {}
        self.in_stasis: set[str] = set()
        self.sockets: list[_Events] = []
        self.failures: list[tuple[str, str, int]] = []
        self.rtp: dict[str, _RTPSocket] = {}
        self._rtp_ports: dict[str, Any] = {}
        self.ws_rejected = 0
        #: the user may only read (ari.conf ``read_only = yes``): REST but GET is 403
        self.read_only = False
        #: statuses to refuse the next upgrades with, and how many were
        self.ws_failures: list[int] = []
        self.ws_failed = 0
        #: close code of each events socket that ended (None: no close frame)
        self.closes: list[Any] = []
        #: ``POST /channels`` callees answer (enter Stasis) at once.
        self.originate_answers = True
        #: an unanswered callee is destroyed after the originate ``timeout``
        self.originate_times_out = True
        self.originated: list[str] = []
        #: ExternalMedia AudioSocket connections, by channel id
        self.audiosocket: dict[str, AudioSocketPeer] = {}
        #: every Playback created, in order
        self.playbacks: list[dict[str, Any]] = []
        self.playbacks_finish = True
        self.playback_seconds = 0.1
        #: Seconds after its REST answer that a new ExternalMedia channel
        #: enters Stasis.  Asterisk answers first and queues the channel
        #: into the app: adding it to a bridge before its StasisStart is a
        #: 422 (seen on Asterisk 22).  ``None``: enter before answering.
        self.media_stasis_delay: Optional[float] = 0.05
        #: chan_websocket: its channels' media, by connection id, and the
        #: ExternalMedia WebSocket channels by ARI channel id
        self.chan_websocket = FakeChanWebSocket(reactor)
        self.websocket: dict[str, ARIChannel] = {}
        #: websocket_client.conf: entry id -> ``ws://`` URI
        self.websocket_clients: dict[str, str] = {}
        #: seconds a server-mode WebSocket channel waits to be connected
        self.websocket_connect_timeout = 30.0
        self._delayed: list[Any] = []
        #: the Stasis apps and which channel is in which
        self.apps = StasisApps(self)
        self._ids = itertools.count(42)
        factory = WebSocketServerFactory()
        factory.protocol = _Events
        factory.fake = self  # type: ignore[attr-defined]
        ari = Resource()
        ari.putChild(b"events", WebSocketResource(factory))
        self._rest = _Rest(self)
        ari.getChild = lambda name, request: self._rest  # type: ignore[method-assign]
        root = Resource()
        root.putChild(b"ari", ari)
        root.putChild(b"media", WebSocketResource(self.chan_websocket.server_factory(reactor)))
        self.site = Site(root)
        self.connections: set[Any] = set()
        build = self.site.buildProtocol

        def tracked(addr: Any) -> Any:
            proto = build(addr)
            self.connections.add(proto)
            lost = proto.connectionLost

            def gone(reason: Any) -> None:
                self.connections.discard(proto)
                lost(reason)

            proto.connectionLost = gone
            return proto

        self.site.buildProtocol = tracked  # type: ignore[method-assign]
        self.port: Any = None

    # -- plumbing ----------------------------------------------------------

    def listen(self, port: int = 0) -> str:
        self.port = self.reactor.listenTCP(port, self.site, interface="127.0.0.1")
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"

    @property
    def empty(self) -> bool:
        """No channel and no bridge is left: everything was torn down."""
        return not self.channels and not self.bridges

    def later(self, seconds: float, f: Any, *args: Any) -> None:
        """
        ``callLater`` that :meth:`stop` cancels if still pending.
        """
        self._delayed = [c for c in self._delayed if c.active()]
        self._delayed.append(self.reactor.callLater(seconds, f, *args))

    def stop(self) -> Any:
        for c in self._delayed:
            if c.active():
                c.cancel()
        for peer in self.audiosocket.values():
            if peer.transport is not None and not peer.closed:
                peer.closing = True
                peer.transport.abortConnection()  # type: ignore[attr-defined]
        for s in self.sockets:
            s.dropConnection(abort=True)
        for ws in self.websocket.values():
            ws.stop()
        for p in self._rtp_ports.values():
            p.stopListening()
        for channel in list(self.connections):
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.abortConnection()
        d = self.port.stopListening()
        # Let aborted connections finish closing before trial checks.
        return d.addCallback(lambda _: deferLater(self.reactor, 0.05, lambda: None))

    def authorized(self, header: Optional[Any], api_key: Optional[str]) -> bool:
        want = f"{self.user}:{self.password}"
        if api_key is not None:
            return bool(api_key == want)
        if header:
            if isinstance(header, bytes):
                header = header.decode()
            scheme, _, token = header.partition(" ")
            try:
                return scheme.lower() == "basic" and base64.b64decode(token).decode() == want
            except ValueError:
                return False
        return False

    def fail_next(self, method: str, path_prefix: str, status: int = 500) -> None:
        self.failures.append((method, path_prefix, status))

    def app_of(self, channel_id: str) -> Optional[str]:
        """The Stasis app that gets ``channel_id``'s events, if any."""
        return self.apps.app_of(channel_id)

    def active_apps(self) -> set[str]:
        """The apps an open events socket is subscribed to."""
        return self.apps.active()

    def emit(self, event: dict[str, Any]) -> None:
        """
        ``event`` to the sockets of the app owning its channel; if no app
        does, to every socket as ``xlbridge``.
        """
        app = self.apps.route(event)
        event = {**event, "application": app or "xlbridge", "timestamp": _now(), "asterisk_id": ASTERISK_ID}
        if app is not None:
            self.apps.send(app, event)
            return
        data = json.dumps(event).encode()
        for s in list(self.sockets):
            if s.state == s.STATE_OPEN:  # not once the client said goodbye
                s.sendMessage(data)

    # -- channels ------------------------------------------------------------

    def new_channel(self, name: str, number: str = "7777", exten: str = "100", state: str = "Ring",
                    channel_id: Optional[str] = None) -> dict[str, Any]:
        cid = channel_id or f"1724500000.{next(self._ids)}"
        ch = {
            "id": cid, "name": name, "state": state,
            "caller": {"name": "", "number": number}, "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {"context": "from-internal", "exten": exten, "priority": 2,
                         "app_name": "Stasis", "app_data": "xlbridge"},
            "creationtime": _now(), "language": "en", "protocol_id": "",
        }
        self.channels[cid] = ch
        if self.apps.creating:
            self.apps.created(cid, self.apps.creating)
        return ch

    def enter(self, channel: dict[str, Any], args: list[str], app: Optional[str] = None) -> None:
        """
        ``channel`` enters ``Stasis(<app>, args...)``; like Asterisk's, its
        ``dialplan.app_data`` then reads ``<app>,<args>``.  ``app``
        defaults to the one the request that made the channel named, else
        ``xlbridge``.
        """
        app = self.apps.entered(channel["id"], app)
        self.in_stasis.add(channel["id"])
        channel["dialplan"] = {
            **channel.get("dialplan", {}), "app_name": "Stasis",
            "app_data": ",".join([app, *args]),
        }
        self.emit({"type": "StasisStart", "args": list(args), "channel": channel})

    def hangup(self, channel_id: str, cause: int = 16) -> None:
        ch = self.channels.pop(channel_id, None)
        if ch is None:
            return
        for b in self.bridges.values():
            if channel_id in b["channels"]:
                b["channels"].remove(channel_id)
        if channel_id in self.in_stasis:
            self.in_stasis.discard(channel_id)
            self.emit({"type": "StasisEnd", "channel": ch})
        self.emit({"type": "ChannelDestroyed", "cause": cause, "cause_txt": "Normal Clearing", "channel": ch})
        self.apps.forget(channel_id)
        port = self._rtp_ports.pop(channel_id, None)
        if port is not None:
            port.stopListening()
        peer = self.audiosocket.get(channel_id)
        if peer is not None:
            peer.close()
        hang_up(self, channel_id)

    def send_rtp(self, channel_id: str, packet: bytes) -> None:
        """
        Send ``packet`` from ExternalMedia channel ``channel_id`` to its
        ``external_host``.
        """
        host, _, port = self.channels[channel_id]["_external_host"].rpartition(":")
        self._rtp_ports[channel_id].write(packet, (host, int(port)))

    def send_audiosocket(self, channel_id: str, payload: bytes, kind: int = 0x12) -> None:
        """
        Send one audio message (``payload``: little-endian slin, 640 bytes
        per 20 ms for slin16) from AudioSocket channel ``channel_id``.
        """
        self.audiosocket[channel_id].send(kind, payload)

    def public(self, ch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in ch.items() if not k.startswith("_")}

    # -- REST ------------------------------------------------------------------

    def handle(self, method: str, parts: list[str], params: dict[str, str]) -> tuple[int, Any]:
        head = parts[0] if parts else ""
        if head == "channels":
            return self._channels(method, parts[1:], params)
        if head == "bridges":
            return self._bridges(method, parts[1:], params)
        if head == "applications":
            return self.apps.handle(method, parts[1:], params)
        return 404, {"message": "Resource not found"}

    def _channels(self, method: str, rest: list[str], params: dict[str, str]) -> tuple[int, Any]:
        if method == "GET" and not rest:
            return 200, [self.public(c) for c in self.channels.values()]
        if method == "POST" and rest == ["externalMedia"]:
            self.apps.creating = params.get("app") or None
            try:
                return self._external_media(params)
            finally:
                self.apps.creating = None
        if method == "POST" and not rest:
            if not params.get("endpoint") or not params.get("app"):
                return 400, {"message": "Endpoint and app are required"}
            try:
                timeout = int(params.get("timeout", "30"))
            except ValueError:
                return 400, {"message": "timeout must be an integer"}
            ch = self.new_channel(f"{params['endpoint']}-{next(self._ids):08x}", state="Down")
            args = params.get("appArgs", "")
            self.apps.created(ch["id"], params["app"])
            if self.originate_answers:
                ch["state"] = "Up"
                self.later(0.01, self.enter, ch, args.split(",") if args else [])
            else:
                ch["state"] = "Ring"
                if self.originate_times_out and timeout != -1:
                    self.later(timeout if timeout > 0 else 30, self.hangup, ch["id"], 19)
            self.originated.append(ch["id"])
            return 200, self.public(ch)
        if method == "POST" and rest[1:] == ["move"]:
            return self.apps.move(rest[0], params)
        if not rest or rest[0] not in self.channels:
            return 404, {"message": "Channel not found"}
        cid = rest[0]
        if method == "DELETE" and len(rest) == 1:
            self.later(0, self.hangup, cid)
            return 204, None
        if method == "POST" and rest[1:] == ["answer"]:
            if cid not in self.in_stasis:
                return 409, {"message": "Channel not in Stasis application"}
            self.channels[cid]["state"] = "Up"
            return 204, None
        if method == "POST" and rest[1:] == ["play"]:
            return self._play(cid, params)
        return 404, {"message": "Resource not found"}

    def _play(self, cid: str, params: dict[str, str]) -> tuple[int, Any]:
        if not params.get("media"):
            return 400, {"message": "media is required"}
        if cid not in self.in_stasis:
            return 409, {"message": "Channel not in Stasis application"}
        playback = {
            "id": params.get("playbackId") or str(uuid.uuid4()),
            "media_uri": params["media"].split(",")[0],
            "target_uri": f"channel:{cid}",
            "language": params.get("lang", self.channels[cid].get("language", "en")),
            "state": "queued",
        }
        self.playbacks.append(playback)
        self.later(0.02, self._playback_event, "PlaybackStarted", cid, {**playback, "state": "playing"})
        if self.playbacks_finish:
            self.later(
                0.02 + self.playback_seconds, self._playback_event, "PlaybackFinished", cid,
                {**playback, "state": "done"},
            )
        return 201, playback

    def _playback_event(self, kind: str, cid: str, playback: dict[str, Any]) -> None:
        # Asterisk publishes through the channel's control: nothing once the
        # channel is gone before the playback started.
        if kind == "PlaybackStarted" and cid not in self.channels:
            return
        self.emit({"type": kind, "playback": playback})

    def _external_media(self, params: dict[str, str]) -> tuple[int, Any]:
        if params.get("transport", "").lower() == "websocket" or params.get("encapsulation", "").lower() == "none":
            return external_websocket(self, params)
        host = params.get("external_host", "")
        h, sep, p = host.rpartition(":")
        if not params.get("app") or not params.get("format") or not sep or not p.isdigit():
            return 400, {"message": "external_host and format are required"}
        encapsulation = params.get("encapsulation", "rtp").lower()
        transport = params.get("transport", "udp").lower()
        if (encapsulation, transport) == ("audiosocket", "tcp"):
            return self._external_audiosocket(params, h, int(p))
        if encapsulation == "audiosocket" or transport == "tcp":
            return 400, {"message": "encapsulation audiosocket requires transport tcp"}
        if (encapsulation, transport) != ("rtp", "udp"):
            return 501, {"message": "The encapsulation and/or transport is not supported"}
        sock = _RTPSocket()
        port = self.reactor.listenUDP(0, sock, interface="127.0.0.1")
        ch = self.new_channel(f"UnicastRTP/{host}-0x7f{next(self._ids):06x}", number="", state="Up")
        ch["dialplan"] = {"context": "default", "exten": "s", "priority": 1, "app_name": "Stasis", "app_data": "xlbridge"}
        ch["_external_host"] = host
        ch["channelvars"] = {
            "UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1",
            "UNICASTRTP_LOCAL_PORT": str(port.getHost().port),
        }
        self.rtp[ch["id"]] = sock
        self._rtp_ports[ch["id"]] = port
        self._enter_media(ch, [params["data"]] if params.get("data") else [])
        return 200, self.public(ch)

    def _external_audiosocket(self, params: dict[str, str], host: str, port: int) -> tuple[int, Any]:
        data = params.get("data", "")
        if not data:
            return 400, {"message": "data can not be empty"}
        try:
            uuid.UUID(data)
        except ValueError:
            # chan_audiosocket's request fails; ARI says only this.
            return 500, {"message": "Allocation failed"}
        name = f"AudioSocket/{host}:{port}-{data}"
        pending: dict[str, Any] = {}

        def gone(peer: AudioSocketPeer) -> None:
            if "id" in pending:
                self.later(0, self.hangup, pending["id"])

        peer = connect(self.reactor, host, port, data, gone)
        if peer is None:
            return 500, {"message": "Allocation failed"}
        ch = self.new_channel(name, number="", state="Up")
        pending["id"] = ch["id"]
        ch["dialplan"] = {"context": "default", "exten": "s", "priority": 1, "app_name": "Stasis", "app_data": "xlbridge"}
        ch["channelvars"] = {"AUDIOSOCKET_UUID": data, "AUDIOSOCKET_SERVICE": f"{host}:{port}"}
        self.audiosocket[ch["id"]] = peer
        if peer.closed:
            gone(peer)
        self._enter_media(ch, [data])
        return 200, self.public(ch)

    def _enter_media(self, ch: dict[str, Any], args: list[str]) -> None:
        if self.media_stasis_delay is None:
            self.enter(ch, args)
        else:
            self.later(self.media_stasis_delay, lambda: ch["id"] in self.channels and self.enter(ch, args))

    def _bridges(self, method: str, rest: list[str], params: dict[str, str]) -> tuple[int, Any]:
        if method == "GET" and not rest:
            return 200, list(self.bridges.values())
        if method == "POST" and not rest:
            bid = params.get("bridgeId") or f"b{next(self._ids):04x}-0000-4000-8000-000000000000"
            if bid in self.bridges:
                return 409, {"message": "Bridge with id already exists"}
            self.bridges[bid] = {
                "id": bid, "technology": "simple_bridge", "bridge_type": params.get("type", "mixing"),
                "bridge_class": "stasis", "creator": "Stasis", "name": params.get("name", ""),
                "channels": [], "creationtime": _now(), "video_mode": "none",
            }
            return 200, self.bridges[bid]
        if not rest or rest[0] not in self.bridges:
            return 404, {"message": "Bridge not found"}
        bridge = self.bridges[rest[0]]
        if method == "DELETE" and len(rest) == 1:
            del self.bridges[rest[0]]
            return 204, None
        if method == "POST" and rest[1:] == ["addChannel"]:
            ids = [c for c in params.get("channel", "").split(",") if c]
            if not ids or any(c not in self.channels for c in ids):
                return 400, {"message": "Channel not found"}
            if any(c not in self.in_stasis for c in ids):
                return 422, {"message": "Channel not in Stasis application"}
            bridge["channels"].extend(ids)
            return 204, None
        return 404, {"message": "Resource not found"}
