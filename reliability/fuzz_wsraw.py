"""
A deliberately naive WebSocket client on a plain socket (RFC 6455 by hand),
so the fuzzer can send what no library would: unmasked frames, reserved
bits, unknown opcodes, oversized control frames, lying length fields,
invalid UTF-8 in TEXT frames, fragments out of order.
"""

from __future__ import annotations

import base64
import os
import random
import socket
import struct
from typing import Optional

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def handshake(
    sock: socket.socket, host: str, path: str = "/", protocols: Optional[str] = None,
    extra: Optional[list[str]] = None, key: Optional[str] = None, version: str = "13", timeout: float = 5.0,
) -> tuple[int, bytes]:
    """
    Send an upgrade request and read the response head.

    :return: ``(status, head bytes)``; status 0 if none came.
    """
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", f"Sec-WebSocket-Version: {version}"]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    lines.extend(extra or [])
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace"))
    sock.settimeout(timeout)
    head = b""
    try:
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    except OSError:
        pass
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return status, head


def frame(
    opcode: int, payload: bytes, fin: bool = True, mask: bool = True, rsv: int = 0,
    length: Optional[int] = None, rng: Optional[random.Random] = None,
) -> bytes:
    """
    One frame.  ``length`` overrides the length field (a lie); ``rsv`` sets
    the RSV1-3 bits (0-7); ``mask=False`` sends it unmasked (illegal from a
    client).
    """
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    m = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not mask:
        return head + payload
    key = (rng.randbytes(4) if rng else os.urandom(4))
    return head + key + _xor(payload, key)


def _xor(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    reps = (len(data) + 3) // 4
    k = int.from_bytes((key * reps)[: len(data)], "big")
    return (int.from_bytes(data, "big") ^ k).to_bytes(len(data), "big")
