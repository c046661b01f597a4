"""
The Asterisk end of an ExternalMedia AudioSocket channel, for the fake ARI
(PROTOCOLS.md 6; Asterisk's ``channels/chan_audiosocket.c`` and
``res/res_audiosocket.c``).

What Asterisk does, and so does this:

- It connects as a TCP client while the channel is requested, before the
  REST request is answered; if it cannot (2 s connect timeout), the request
  fails.  Here the connect is a blocking ``connect()`` to loopback (the
  kernel completes it from the listen backlog), then the socket is adopted
  by the reactor.
- It then sends 0x01 with the 16 binary bytes of the ``data`` UUID, then
  audio: 3-byte header (kind, big-endian u16 length), little-endian slin.
- From the app it accepts only 0x00 (hangup) and 0x10..0x18 (audio) with a
  non-zero length; anything else, 0x00, or the socket closing hangs up the
  channel.

Framing is written out here on purpose (not imported from xlbridge), so the
fake checks the bridge rather than agreeing with it.
"""

from __future__ import annotations

import socket
import struct
import uuid
from typing import Any, Callable, Optional

from twisted.internet.protocol import Factory, Protocol

HEADER = struct.Struct(">BH")
AUDIO_KINDS = range(0x10, 0x19)


class AudioSocketPeer(Protocol):
    """
    One ExternalMedia AudioSocket connection, Asterisk's side.

    :ivar frames: every message received, as ``(kind, payload)``.
    :ivar hangup_received: the app sent 0x00.
    :ivar refused: a message Asterisk would reject (kind, length), if any.
    :ivar closed: the connection is gone.
    """

    def __init__(self, call_id: str, on_gone: Callable[["AudioSocketPeer"], None]) -> None:
        self.call_id = call_id
        self.on_gone = on_gone
        self.frames: list[tuple[int, bytes]] = []
        self.hangup_received = False
        self.refused: Optional[tuple[int, int]] = None
        self.closed = False
        self.closing = False  # we (the channel) close it
        self._buf = b""

    def connectionMade(self) -> None:
        # chan_audiosocket's call(): the UUID first.
        self.send(0x01, uuid.UUID(self.call_id).bytes)

    def send(self, kind: int, payload: bytes = b"") -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(HEADER.pack(kind, len(payload)) + payload)

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= HEADER.size:
            kind, length = HEADER.unpack_from(self._buf)
            if len(self._buf) < HEADER.size + length:
                return
            payload = self._buf[HEADER.size : HEADER.size + length]
            self._buf = self._buf[HEADER.size + length :]
            self.frames.append((kind, payload))
            if kind == 0x00:
                self.hangup_received = True
                self._end()
                return
            if kind not in AUDIO_KINDS or length == 0:
                self.refused = (kind, length)
                self._end()
                return

    def audio(self, kind: int = 0x12) -> bytes:
        """
        The payloads of every audio message of ``kind`` received, joined.
        """
        return b"".join(p for k, p in self.frames if k == kind)

    def _end(self) -> None:
        # Asterisk: the read fails, so the channel hangs up (and closes).
        self.on_gone(self)

    def close(self) -> None:
        """
        The channel hung up: close the socket (``audiosocket_hangup``).
        """
        self.closing = True
        if self.transport is not None and not self.closed:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True
        if not self.closing:
            self.on_gone(self)


def connect(
    reactor: Any, host: str, port: int, call_id: str, on_gone: Callable[[AudioSocketPeer], None]
) -> Optional[AudioSocketPeer]:
    """
    Connect like ``ast_audiosocket_connect`` (blocking, 2 s timeout) and
    hand the socket to the reactor; ``None`` if the connection failed.
    """
    try:
        sock = socket.create_connection((host, port), timeout=2.0)
    except OSError:
        return None
    peer = AudioSocketPeer(call_id, on_gone)
    factory = Factory.forProtocol(lambda: peer)
    try:
        sock.setblocking(False)
        reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, factory)
    finally:
        sock.close()  # the reactor holds its own duplicate
    return peer
