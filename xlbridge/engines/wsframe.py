"""
RFC 6455 client data frames for audio streamed to an engine, built in one
step instead of through Autobahn's per-message machinery.

Why: every caller streams one binary WebSocket message per 20 ms to the
speech recogniser, 100 messages a second per translated call.  Autobahn's
``sendMessage`` spends about 50 us on each (state and size checks, traffic
statistics, a new cffi masker object per frame, and two debug log calls
whose arguments are formatted even with debug off), about four times what
building the frame here costs: a few percent of a core at 20 calls.

Only complete, unfragmented, uncompressed binary frames from a client are
built (RFC 6455 section 5.2): ``FIN`` + opcode 2, the ``MASK`` bit and a 7,
16 or 64-bit big-endian payload length, the 4-byte masking key, then the
payload XORed with the key repeated.  Control frames (ping, pong, close),
text messages, and everything received stay with Autobahn; the caller
decides when the fast path is allowed (:func:`autobahn_can_take`).
"""

from __future__ import annotations

import os
import struct
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol

__all__ = ["client_binary_frame", "autobahn_can_take", "send_binary"]

_OPCODE_BINARY_FIN = 0x82
_MASK_BIT = 0x80
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def client_binary_frame(payload: bytes, mask: bytes) -> bytes:
    """
    One masked binary frame holding all of ``payload``.

    :param payload: the message (any length up to 2**63 - 1 bytes).
    :param mask: the 4-byte masking key (RFC 6455 wants it unpredictable:
        take it from ``os.urandom``).
    :return: the frame's bytes, ready for the transport.
    """
    if len(mask) != 4:
        raise ValueError(f"a masking key is 4 bytes, got {len(mask)}")
    n = len(payload)
    if n <= 125:
        head = bytes((_OPCODE_BINARY_FIN, _MASK_BIT | n))
    elif n <= 0xFFFF:
        head = _LEN16.pack(_OPCODE_BINARY_FIN, _MASK_BIT | 126, n)
    else:
        head = _LEN64.pack(_OPCODE_BINARY_FIN, _MASK_BIT | 127, n)
    if not n:
        return head + mask
    # XOR as one big integer: the key repeated to the payload's length, both
    # read in the same byte order, so byte i meets key byte i % 4.
    key = (mask * ((n >> 2) + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
    return head + mask + masked


def autobahn_can_take(proto: Any) -> bool:
    """
    Whether a frame may be written straight to ``proto``'s transport: the
    socket is open, Autobahn has nothing queued that a direct write would
    overtake, is not inside a message of its own, and compresses nothing
    (no permessage-deflate was agreed).
    """
    return (
        getattr(proto, "state", None) == WebSocketProtocol.STATE_OPEN
        and getattr(proto, "transport", None) is not None
        and not getattr(proto, "send_queue", True)
        and getattr(proto, "send_state", None) == WebSocketProtocol.SEND_STATE_GROUND
        and getattr(proto, "_perMessageCompress", True) is None
        and getattr(proto, "websocket_version", 0) != 0
    )


def send_binary(proto: Any, payload: bytes) -> None:
    """
    Send ``payload`` as one binary message on an Autobahn client protocol:
    directly when :func:`autobahn_can_take`, else through ``sendMessage``
    (which queues, fragments, compresses or raises as Autobahn does).
    """
    if autobahn_can_take(proto):
        proto.transport.write(client_binary_frame(payload, os.urandom(4)))
    else:
        proto.sendMessage(payload, isBinary=True)
