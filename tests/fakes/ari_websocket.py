"""
The Asterisk end of ExternalMedia chan_websocket channels, for the fake ARI
(PROTOCOLS.md 10.1 and 10.5; what the lab's Asterisk 22 does), on top of
the chan_websocket fake of :mod:`tests.fakes.chan_websocket`.

``POST /channels/externalMedia`` with ``transport=websocket``:

- ``encapsulation`` must be ``none`` (and ``none`` needs ``websocket``):
  400 otherwise; ``format`` is required (400).  ``channelId`` names the
  channel (409 if taken).
- **Server mode** (``connection_type=server``): ``external_host`` must be
  empty or ``INCOMING`` (anything else: 500).  The channel is
  ``WebSocket/INCOMING/0x...``, state ``Down``, in ``AppDial2`` (not in
  Stasis), and the 200 answer's ``channelvars`` hold
  ``MEDIA_WEBSOCKET_CONNECTION_ID`` (a fresh uuid) and
  ``MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE``.  Its media is served at
  ``/media/<connection id>`` on the fake's own HTTP port (unknown id 404,
  a second connection 409).  Only once the app connects does it send
  MEDIA_START (``channel_id`` = the channel's id) and, 2 ms later, enter
  Stasis (StasisStart, no args, state ``Up``).  Nobody connecting within
  :attr:`FakeARI.websocket_connect_timeout` (Asterisk: 30 s) destroys it
  (cause 19).
- **Client mode** (``connection_type=client``, the default):
  ``external_host`` must be an entry of :attr:`FakeARI.websocket_clients`
  (id -> ``ws://`` URI; 400 "external_host must be a valid
  websocket_client connection id." otherwise).  The channel is
  ``WebSocket/<id>/0x...``; ARI answers 200 first (``channelvars``
  ``MEDIA_WEBSOCKET_CONNECTION_ID`` = the entry's id), then the fake dials
  the URI offering ``media``; MEDIA_START's ``connection_id`` is the
  entry's id too.
  A refused dial (or a connection closed before it opens) destroys the
  channel (cause 3, "No route to destination").
- Either way: the app closing (CLOSE or TCP) hangs the channel up;
  hanging it up (ARI DELETE, :meth:`FakeARI.hangup`) sends CLOSE 1000.
"""

from __future__ import annotations

import itertools
import uuid
from typing import TYPE_CHECKING, Any, Callable, Optional

from tests.fakes.chan_websocket import Channel, FakeChanWebSocket

if TYPE_CHECKING:
    from tests.fakes.ari import FakeARI

_handles = itertools.count(0x7FD2A0000000)


class ARIChannel(Channel):
    """
    A chan_websocket channel that is also an ARI channel: it tells the
    fake ARI when its connection opens and ends.
    """

    def __init__(self, fake: FakeChanWebSocket, connection_id: str, ari_id: str, name: str,
                 on_open: Callable[["ARIChannel"], None], on_close: Callable[["ARIChannel"], None]) -> None:
        super().__init__(fake, connection_id, "slin16", "plain-text", channel_id=ari_id)
        self.name = name
        self.on_open = on_open
        self.on_close = on_close

    def opened(self, proto: Any) -> None:
        super().opened(proto)
        self.on_open(self)

    def closed(self, code: Optional[int]) -> None:
        was_open = self.proto is not None
        super().closed(code)
        if was_open:
            self.on_close(self)

    def stop(self) -> None:
        """The fake is stopping: drop the connection and the media timer."""
        proto = self.proto
        if proto is not None and proto.transport is not None:
            proto.transport.abortConnection()
        if self._timer is not None and self._timer.running:
            self._timer.stop()


def external_websocket(fake: "FakeARI", params: dict[str, str]) -> tuple[int, Any]:
    """
    ``POST /channels/externalMedia`` with ``transport=websocket`` (or
    ``encapsulation=none``), as Asterisk answers it.
    """
    if (params.get("encapsulation", "rtp").lower(), params.get("transport", "udp").lower()) != ("none", "websocket"):
        return 400, {"message": "encapsulation none requires transport websocket"}
    if not params.get("app") or not params.get("format"):
        return 400, {"message": "app and format are required"}
    wanted = params.get("channelId") or None
    if wanted is not None and wanted in fake.channels:
        return 409, {"message": "Channel with given unique ID already exists"}
    host = params.get("external_host", "")
    mode = params.get("connection_type", "client").lower()
    if mode == "server":
        if host not in ("", "INCOMING"):
            return 500, {"message": "Internal Server Error"}
        peer = "INCOMING"
    elif host not in fake.websocket_clients:
        return 400, {"message": "external_host must be a valid websocket_client connection id."}
    else:
        peer = host
    ch = fake.new_channel(f"WebSocket/{peer}/{next(_handles):#x}", number="", state="Down", channel_id=wanted)
    ch["dialplan"] = {"context": "default", "exten": "s", "priority": 1, "app_name": "AppDial2",
                      "app_data": "(Outgoing Line)"}
    cid = ch["id"]

    def opened(channel: ARIChannel) -> None:
        if cid in fake.channels:
            ch["state"] = "Up"
            fake.later(0.002, lambda: cid in fake.channels and fake.enter(ch, []))

    def closed(channel: ARIChannel) -> None:
        fake.later(0, fake.hangup, cid)

    # Client mode: the "connection id" is the websocket_client.conf entry's.
    connection_id = str(uuid.uuid4()) if mode == "server" else peer
    ch["channelvars"] = {"MEDIA_WEBSOCKET_CONNECTION_ID": connection_id, "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": "640"}
    if mode == "server":
        channel = ARIChannel(fake.chan_websocket, connection_id, cid, ch["name"], opened, closed)
        fake.chan_websocket.channels[connection_id] = channel
        fake.later(fake.websocket_connect_timeout, _unanswered, fake, cid, channel)
    else:
        channel = ARIChannel(fake.chan_websocket, peer, cid, ch["name"], opened, closed)
        fake.later(0, _dial, fake, cid, channel, fake.websocket_clients[peer])
    fake.websocket[cid] = channel
    return 200, fake.public(ch)


def _unanswered(fake: "FakeARI", cid: str, channel: ARIChannel) -> None:
    if channel.connections == 0 and cid in fake.channels:
        fake.hangup(cid, 19)


def _dial(fake: "FakeARI", cid: str, channel: ARIChannel, uri: str) -> None:
    if cid not in fake.channels:
        return
    factory = fake.chan_websocket.client_factory(uri, channel, protocols=["media"], reactor=fake.reactor)

    def failed(connector: Any, reason: Any) -> None:
        if channel.connections == 0:
            fake.later(0, fake.hangup, cid, 3)

    factory.clientConnectionFailed = failed
    factory.clientConnectionLost = failed
    fake.reactor.connectTCP(factory.host, factory.port, factory)


def hang_up(fake: "FakeARI", cid: str) -> None:
    """
    Channel ``cid`` was hung up (if it is a WebSocket one): close its
    connection with 1000, and serve its media no more.
    """
    channel = fake.websocket.get(cid)
    if channel is None:
        return
    fake.chan_websocket.channels.pop(channel.connection_id, None)
    channel.hang_up(1000)
