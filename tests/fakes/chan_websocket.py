"""
A fake of Asterisk's chan_websocket (PROTOCOLS.md section 10), Asterisk's
side of a WebSocket media channel, on Autobahn/Twisted.

Usable from trial tests (in memory over ``twisted.test.iosim``, or on
loopback) and by hand (``python -m tests.fakes chan_websocket``).  Both
directions of connection:

- **server mode** (ARI externalMedia ``connection_type=server``): an HTTP
  server where ``ws://host:port/media/<connection_id>`` is a channel's
  media.  Unknown id -> 404, a second connection -> 409, an offered
  subprotocol list without ``media`` -> 400 (no offer is fine).
- **client mode** (websocket_client.conf, ``Dial(WebSocket/<id>)``): the
  fake dials out to a ``ws://`` URL, with optional HTTP Basic auth and
  ``Sec-WebSocket-Protocol: media``.

What the channel does, as Asterisk does (master f0c1c1a):

- On connect it sends MEDIA_START (plain text or JSON per channel) with
  ``optimal_frame_size`` and ``ptime`` 20, then starts a timer on the
  injected clock that dequeues **one** frame per ptime; each dequeued frame
  is recorded, timestamped, in :attr:`Channel.heard` (what the caller
  heard).  An empty queue yields nothing: no silence is made.
- BINARY: a message arriving at >= 1000 queued frames is dropped whole;
  otherwise it is cut into optimal frames and the remainder dropped, unless
  between START/STOP_MEDIA_BUFFERING (then it joins the next message, and
  STOP queues it as a short frame).  XOFF at 900 queued frames, XON at the
  first tick below 800.  A payload over 65 527 bytes -> close 1009.
- TEXT commands (at most 128 bytes, stripped, case-sensitive): MARK_MEDIA
  and STOP_MEDIA_BUFFERING queue their event behind the frames before them
  (sent when reached; no tick used); FLUSH_MEDIA drops frames, queued events
  and the remainder and ends buffering; PAUSE/CONTINUE_MEDIA;
  REPORT_QUEUE_DRAINED; GET_STATUS; HANGUP -> close 1000.  In JSON mode
  bad JSON -> ``ERROR``; JSON sent to a plain-text channel is ignored.
- A PING is answered with a PONG; a PONG that answers no PING of the fake
  (:meth:`Channel.ping`) is unsolicited, and an **unsolicited PONG "crashes"** the
  fake (TCP dropped at once, :attr:`Channel.crashed`): a real Asterisk of
  that build segfaults.  An app CLOSE hangs the channel up.

Everything is written out here (not imported from xlbridge), so the fake
checks the bridge rather than agreeing with it.  Whatever Asterisk would
only log goes to :attr:`Channel.violations`, so tests can assert there was
none.
"""

from __future__ import annotations

import argparse
import base64
import json
import uuid
from collections import deque
from typing import Any, Callable, Optional, Union

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.task import LoopingCall

MAX_MESSAGE = 65527
MAX_TEXT = 128
QUEUE_MAX, XOFF_LEVEL, XON_LEVEL = 1000, 900, 800
FRAME_BYTES = {"slin16": 640, "slin": 320, "ulaw": 160, "alaw": 160, "g722": 160, "slin48": 1920}

#: A queued event: the text sent when the timer reaches it.
Entry = Union[bytes, tuple[str, str]]


class Channel:
    """
    One chan_websocket channel, Asterisk's side; the protocol that carries it
    calls :meth:`opened`, :meth:`binary`, :meth:`text`, :meth:`closed`.

    :ivar heard: ``(time, frame)`` for every frame the timer dequeued.
    :ivar events: every TEXT message sent to the app, in order.
    :ivar commands: every TEXT message received, stripped.
    :ivar binary_sizes: byte length of every BINARY message received.
    :ivar dropped_whole: BINARY messages dropped because the queue was full.
    :ivar remainder_dropped: bytes of partial frames dropped.
    :ivar pings: PING payloads received (each answered).
    :ivar pongs: PONGs received in answer to our :meth:`ping`.
    :ivar crashed: an unsolicited PONG arrived and the fake "segfaulted".
    :ivar close_code: the code of the CLOSE that ended the channel (ours or
        the app's), ``None`` while up or if TCP just dropped.
    :ivar hung_up_by: ``"app"`` (CLOSE or TCP drop), ``"asterisk"`` (HANGUP
        or :meth:`hang_up`), ``None`` while up.
    :ivar violations: what a real Asterisk would log as a warning, or drop.
    """

    def __init__(self, fake: "FakeChanWebSocket", connection_id: str, format: str = "slin16",
                 control: str = "plain-text", channel_id: str = "1796623357.1") -> None:
        self.fake = fake
        self.connection_id = connection_id
        self.format = format
        self.frame_size = FRAME_BYTES[format]
        self.ptime = 20
        self.control = control
        self.channel_id = channel_id
        self.name = f"WebSocket/{connection_id}/0x7fb79c00f280"
        self.proto: Optional[Any] = None
        self.queue: deque[Entry] = deque()
        self.queue_length = 0  # audio frames only, as Asterisk counts
        self.leftover = b""
        self.buffering = self.paused = self.queue_full = self.report_drained = False
        self.heard: list[tuple[float, bytes]] = []
        self.events: list[str] = []
        self.commands: list[str] = []
        self.binary_sizes: list[int] = []
        self.dropped_whole = 0
        self.remainder_dropped = 0
        self.pings: list[bytes] = []
        self.pings_out: list[bytes] = []
        self.pongs: list[bytes] = []
        self.crashed = False
        self.close_code: Optional[int] = None
        self.hung_up_by: Optional[str] = None
        self.violations: list[str] = []
        self.connections = 0
        self._timer: Optional[LoopingCall] = None

    # -- what the caller heard ---------------------------------------------------

    def heard_bytes(self) -> bytes:
        """Every frame the caller heard, joined."""
        return b"".join(f for _, f in self.heard)

    # -- the connection -----------------------------------------------------------

    def opened(self, proto: Any) -> None:
        self.proto = proto
        self.connections += 1
        self._event("MEDIA_START", connection_id=self.connection_id, channel=self.name,
                    channel_id=self.channel_id, format=self.format, optimal_frame_size=self.frame_size,
                    ptime=self.ptime)
        self._timer = LoopingCall(self.tick)
        self._timer.clock = self.fake.clock
        self._timer.start(self.ptime / 1000, now=False)

    def closed(self, code: Optional[int]) -> None:
        if self.hung_up_by is None:
            self.hung_up_by = "app"
            self.close_code = code
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        self.proto = None

    def binary(self, payload: bytes) -> None:
        self.binary_sizes.append(len(payload))
        if len(payload) > MAX_MESSAGE:
            self.violations.append(f"BINARY of {len(payload)} bytes > {MAX_MESSAGE}: closed 1009")
            self.hang_up(1009)
            return
        if self.queue_length >= QUEUE_MAX:
            self.dropped_whole += 1
            return
        size = self.frame_size
        data = payload
        if self.buffering and self.leftover:
            need = size - len(self.leftover)
            self.leftover += data[:need]
            data = data[need:]
            if len(self.leftover) < size:
                return
            self._queue_frame(self.leftover)
            self.leftover = b""
        whole = len(data) // size * size
        for i in range(0, whole, size):
            self._queue_frame(data[i:i + size])
        rest = data[whole:]
        if rest:
            if self.buffering:
                self.leftover = rest
            else:
                self.remainder_dropped += len(rest)
                self.violations.append(f"{len(rest)}-byte remainder dropped (not whole {size}-byte frames)")

    def _queue_frame(self, frame: bytes) -> None:
        self.queue.append(frame)
        self.queue_length += 1
        if not self.queue_full and self.queue_length >= XOFF_LEVEL:
            self.queue_full = True
            self._event("MEDIA_XOFF")

    def text(self, payload: bytes) -> None:
        if not payload:
            self.violations.append("empty TEXT message")
            return
        if len(payload) > MAX_TEXT:
            self.violations.append(f"TEXT of {len(payload)} bytes > {MAX_TEXT}: ignored")
            return
        text = payload.decode("utf-8", "replace").strip()
        self.commands.append(text)
        if self.control == "json":
            try:
                msg = json.loads(text)
                name = msg.get("command")
                cid = msg.get("correlation_id")
            except (ValueError, AttributeError):
                self._event("ERROR", error_text="Unable to parse JSON command")
                self.violations.append(f"not a JSON command: {text!r}")
                return
        else:
            name, _, cid = text.partition(" ")
            cid = cid or None
        self._command(name, cid)

    def _command(self, name: Any, cid: Optional[str]) -> None:
        if name == "ANSWER":
            pass
        elif name == "HANGUP":
            self.hang_up(1000)
        elif name == "START_MEDIA_BUFFERING":
            self.buffering = True
        elif name == "STOP_MEDIA_BUFFERING":
            self.buffering = False
            if self.leftover:
                self._queue_frame(self.leftover)
            self.leftover = b""
            self.queue.append(("MEDIA_BUFFERING_COMPLETED", cid or ""))
        elif name == "MARK_MEDIA":
            self.queue.append(("MEDIA_MARK_PROCESSED", cid or ""))
        elif name == "FLUSH_MEDIA":
            self.queue.clear()
            self.queue_length = 0
            self.buffering = False
            self.leftover = b""
        elif name == "REPORT_QUEUE_DRAINED":
            self.report_drained = True
        elif name == "GET_STATUS":
            self._event("STATUS", channel_id=self.channel_id, queue_length=self.queue_length,
                        xon_level=XON_LEVEL, xoff_level=XOFF_LEVEL, queue_full=self.queue_full,
                        bulk_media=self.buffering, media_paused=self.paused)
        elif name == "PAUSE_MEDIA":
            self.paused = True
        elif name == "CONTINUE_MEDIA":
            self.paused = False
        else:
            self.violations.append(f"unknown command {name!r}")

    def tick(self) -> None:
        """The media timer: chan_websocket's ``dequeue_frame``."""
        if self.paused or self.proto is None:
            return
        if self.queue_full and self.queue_length < XON_LEVEL:
            self.queue_full = False
            self._event("MEDIA_XON")
        queue = self.queue
        while queue and isinstance(queue[0], tuple):
            name, cid = queue.popleft()  # type: ignore[misc]
            self._event(name, correlation_id=cid)
        if not queue:
            if self.report_drained:
                self.report_drained = False
                self._event("QUEUE_DRAINED")
            return
        frame = queue.popleft()
        assert isinstance(frame, bytes)
        self.queue_length -= 1
        self.heard.append((self.fake.clock.seconds(), frame))

    # -- control events ---------------------------------------------------------------

    def _event(self, name: str, **fields: Any) -> None:
        if self.control == "json":
            msg: dict[str, Any] = {"event": name, "channel_id": self.channel_id}
            msg.update(fields)
            if name == "MEDIA_START":
                msg["channel_variables"] = {"MEDIA_WEBSOCKET_CONNECTION_ID": self.connection_id,
                                            "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": str(self.frame_size)}
            text = json.dumps(msg, separators=(",", ":"))
        elif name in ("MEDIA_MARK_PROCESSED", "MEDIA_BUFFERING_COMPLETED"):
            cid = fields.get("correlation_id")
            text = f"{name} {cid}" if cid else name
        elif name == "ERROR":
            text = f"ERROR channel_id:{self.channel_id} error_text:{fields['error_text']}"
        else:
            def plain(v: Any) -> str:
                return ("true" if v else "false") if isinstance(v, bool) else str(v)
            text = " ".join([name, *(f"{k}:{plain(v)}" for k, v in fields.items())])
        self.events.append(text)
        if self.proto is not None:
            self.proto.sendMessage(text.encode("utf-8"), isBinary=False)

    # -- on demand: the caller speaks, keys, hangs up ------------------------------

    def send_audio(self, payload: bytes) -> None:
        """The caller's audio: one BINARY message per optimal frame."""
        if self.proto is None:
            return
        size = self.frame_size
        for i in range(0, len(payload), size):
            self.proto.sendMessage(payload[i:i + size], isBinary=True)

    def ping(self, payload: bytes = b"ka") -> None:
        """A PING (client mode's ``enable_pingpongs``); its PONG is expected."""
        if self.proto is not None:
            self.pings_out.append(payload)
            self.proto.sendPing(payload)

    def send_dtmf(self, digit: str) -> None:
        self._event("DTMF_END", digit=digit, channel_id=self.channel_id)

    def hang_up(self, code: int = 1000) -> None:
        """The channel hangs up (ARI DELETE, HANGUP): CLOSE with ``code``."""
        proto = self.proto
        if proto is None:
            return
        self.hung_up_by = "asterisk"
        self.close_code = code
        proto.sendCloseFrame(code=code)

    def crash(self) -> None:
        """What an unsolicited PONG does to this Asterisk build."""
        self.crashed = True
        self.hung_up_by = "crash"
        proto = self.proto
        self.closed(None)
        if proto is not None and proto.transport is not None:
            proto.transport.abortConnection()


class _ChannelProtocolMixin:
    """What both directions share: forward Autobahn's callbacks to a channel."""

    channel: Optional[Channel] = None
    _frames_in_message = 0

    def onOpen(self) -> None:
        assert self.channel is not None
        self.channel.opened(self)

    def onMessageBegin(self, isBinary: bool) -> None:
        self._frames_in_message = 0
        super().onMessageBegin(isBinary)  # type: ignore[misc]

    def onMessageFrameBegin(self, length: int) -> None:
        self._frames_in_message += 1
        super().onMessageFrameBegin(length)  # type: ignore[misc]

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        channel = self.channel
        if channel is None or channel.proto is not self:
            return
        if self._frames_in_message > 1:
            channel.violations.append(f"fragmented message ({self._frames_in_message} frames)")
        if isBinary:
            channel.binary(payload)
        else:
            channel.text(payload)

    def onPing(self, payload: bytes) -> None:
        if self.channel is not None:
            self.channel.pings.append(payload)
        super().onPing(payload)  # type: ignore[misc]

    def onPong(self, payload: bytes) -> None:
        channel = self.channel
        if channel is None:
            return
        if payload in channel.pings_out:
            channel.pings_out.remove(payload)
            channel.pongs.append(payload)
            return
        channel.violations.append("unsolicited PONG: Asterisk segfaults")
        channel.crash()

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if self.channel is not None and self.channel.proto is self:
            self.channel.closed(code)


class MediaServerProtocol(_ChannelProtocolMixin, WebSocketServerProtocol):  # type: ignore[misc]
    """``/media/<connection_id>`` on Asterisk's HTTP server."""

    def onConnect(self, request: Any) -> Any:
        fake: FakeChanWebSocket = self.factory.fake
        fake.requests.append(request)
        prefix, _, cid = request.path.partition("/media/")
        channel = fake.channels.get(cid) if prefix == "" else None
        if channel is None:
            raise ConnectionDeny(404, "Not Found")
        if channel.proto is not None or channel.connections:
            raise ConnectionDeny(409, "Conflict")
        if request.protocols and "media" not in request.protocols:
            raise ConnectionDeny(400, "Bad Request")
        self.channel = channel
        return "media" if request.protocols else None


class MediaClientProtocol(_ChannelProtocolMixin, WebSocketClientProtocol):  # type: ignore[misc]
    """Asterisk dialling the app (websocket_client.conf)."""

    def onConnect(self, response: Any) -> None:
        self.channel = self.factory.channel


def _quiet(factory: Any) -> None:
    # Autobahn's own timers run on txaio's global reactor: none here, so
    # memory tests stay deterministic; Asterisk never PINGs in server mode,
    # and echoes the app's close code.
    options: dict[str, Any] = dict(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0,
                                   echoCloseCodeReason=True)
    if not factory.isServer:
        options["serverConnectionDropTimeout"] = 0
    factory.setProtocolOptions(**options)
    factory.noisy = False


class FakeChanWebSocket:
    """
    Asterisk's chan_websocket: channels by connection id, a server factory
    for server mode and :meth:`dial` for client mode.

    :param clock: the media timers and timestamps run on it.
    :ivar channels: by connection id.
    :ivar requests: every upgrade request the server saw.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.channels: dict[str, Channel] = {}
        self.requests: list[Any] = []
        self.port: Any = None

    def add_channel(self, connection_id: Optional[str] = None, format: str = "slin16",
                    control: str = "plain-text") -> Channel:
        """A channel waiting for its connection (externalMedia answered 200)."""
        cid = connection_id or str(uuid.uuid4())
        channel = self.channels[cid] = Channel(self, cid, format, control)
        return channel

    def server_factory(self, reactor: Any = None) -> WebSocketServerFactory:
        factory = WebSocketServerFactory(reactor=reactor or self.clock)
        factory.protocol = MediaServerProtocol
        factory.fake = self
        _quiet(factory)
        return factory

    def listen(self, reactor: Any, port: int = 0, interface: str = "127.0.0.1") -> str:
        """Serve ``/media/<id>`` on ``interface:port``; returns ``ws://host:port``."""
        self.port = reactor.listenTCP(port, self.server_factory(reactor), interface=interface)
        return f"ws://{interface}:{self.port.getHost().port}"

    def client_factory(self, url: str, channel: Channel, username: Optional[str] = None,
                       password: Optional[str] = None, protocols: Optional[list[str]] = None,
                       reactor: Any = None) -> WebSocketClientFactory:
        """Asterisk's side of a websocket_client.conf connection to ``url``."""
        headers = {}
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        factory = WebSocketClientFactory(url, protocols=protocols or [], headers=headers,
                                         useragent="Asterisk", reactor=reactor or self.clock)
        factory.protocol = MediaClientProtocol
        factory.channel = channel
        _quiet(factory)
        return factory

    def dial(self, reactor: Any, url: str, channel: Optional[Channel] = None,
             **options: Any) -> Channel:
        """Client mode: connect a (new) channel to ``url`` over TCP."""
        channel = channel or self.add_channel(connection_id=options.pop("connection_id", "media1"),
                                              format=options.pop("format", "slin16"),
                                              control=options.pop("control", "plain-text"))
        factory = self.client_factory(url, channel, reactor=reactor, **options)
        reactor.connectTCP(factory.host, factory.port, factory)
        return channel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for ``python -m tests.fakes chan_websocket``."""
    parser.add_argument("--dial", metavar="URL", help="client mode: connect to this ws:// URL (the bridge's "
                        "--websocket port) and play a tone; default: server mode")
    parser.add_argument("--port", type=int, default=8088, help="server mode: port of /media/<id>")
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--format", default="slin16", choices=sorted(FRAME_BYTES))
    parser.add_argument("--json", action="store_true", help="control messages in JSON (f(json))")
    parser.add_argument("--tone", type=float, default=440.0, help="Hz of the caller's tone (0: silent)")


def run_from_args(reactor: Any, args: argparse.Namespace) -> FakeChanWebSocket:
    """Start the fake from parsed :func:`add_arguments` options."""
    import math
    import struct

    fake = FakeChanWebSocket(reactor)
    control = "json" if args.json else "plain-text"
    if args.dial:
        channel = fake.dial(reactor, args.dial, format=args.format, control=control, protocols=["media"])
    else:
        channel = fake.add_channel(format=args.format, control=control)
        base = fake.listen(reactor, args.port, args.interface)
        fake.url = f"{base}/media/{channel.connection_id}"  # type: ignore[attr-defined]
        print(f"fake chan_websocket channel at {fake.url}", flush=True)
    if args.tone and args.format in ("slin16", "slin"):
        rate = 16000 if args.format == "slin16" else 8000
        n = rate // 50
        phase = [0]

        def speak() -> None:
            i0 = phase[0]
            phase[0] += n
            samples = (int(8000 * math.sin(2 * math.pi * args.tone * (i0 + i) / rate)) for i in range(n))
            channel.send_audio(struct.pack(f"<{n}h", *samples))

        loop = LoopingCall(speak)
        loop.clock = reactor
        loop.start(0.02)
    return fake
