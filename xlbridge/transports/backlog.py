"""
What waits unsent on a TCP connection we write live audio to, kept to a
frame or two.

A TCP connection is a chain of buffers: Twisted's own write buffer, then
the kernel's send queue.  When the peer reads slower than we write (an
Asterisk thread busy or stalled, a congested link), both fill, and every
frame written after that is heard that much later, for the rest of the
call: the same standing delay a full jitter buffer makes.  For live audio
a late frame is worth less than no frame, so before each frame the sender
asks :meth:`SendBacklog.full` and drops the frame (counted) instead of
queueing it behind more than ``limit`` bytes.

Two measurements, because either buffer can hold the backlog:

- Twisted's buffer: the backlog registers as the transport's streaming
  producer with a small ``bufferSize``; Twisted calls ``pauseProducing``
  when more than that waits in it and ``resumeProducing`` once it has all
  gone to the kernel.  Twisted hands its buffer to the kernel once per
  reactor iteration, so a burst of a few frames in one tick (the egress
  clock catching up) passes; only a buffer the kernel would not take stays.
- the kernel's: ``ioctl(SIOCOUTQNSD)`` (Linux) gives the bytes in the send
  queue not yet sent, i.e. waiting for the peer's window, not bytes in
  flight awaiting an acknowledgement (``SIOCOUTQ``, which would count a
  long round trip as backlog).  Where the ioctl does not exist the kernel
  part reads as 0, and the small ``SO_SNDBUF`` set by :func:`tune` still
  bounds it.

:func:`tune` also sets ``TCP_NODELAY``: 20 ms messages must not wait for
Nagle's algorithm to coalesce them with the next one.  And it makes a dead
peer (a machine gone without a FIN: power loss, a cut link) end its call
instead of holding it open for ever: ``TCP_USER_TIMEOUT`` aborts the
connection when what we sent stays unacknowledged for
:data:`DEAD_PEER_S` (we send every 20 ms during a call), and keepalive
probes find it while nothing is being sent (Linux; elsewhere the options
are skipped).
"""

from __future__ import annotations

import fcntl
import socket
import struct
from typing import Any, Optional

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

#: ``linux/sockios.h``: bytes in a TCP send queue not sent yet.
SIOCOUTQNSD = 0x894B
#: Kernel send buffer asked for (Linux doubles it for its bookkeeping):
#: room for a long round trip of 16 kHz audio in flight; unsent bytes are
#: bounded separately and much lower.
SEND_BUFFER = 32 * 1024
#: Seconds after which a peer that acknowledges nothing is taken for dead:
#: TCP_USER_TIMEOUT, and keepalive (idle + interval x count) while idle.
DEAD_PEER_S = 15
_KEEPALIVE = (
    ("TCP_USER_TIMEOUT", DEAD_PEER_S * 1000),
    ("TCP_KEEPIDLE", 5),
    ("TCP_KEEPINTVL", 2),
    ("TCP_KEEPCNT", 5),
)


def tune(transport: Any, send_buffer: int = SEND_BUFFER) -> None:
    """
    ``TCP_NODELAY`` and a small ``SO_SNDBUF`` on ``transport``'s socket;
    a transport without a socket (a test's memory transport) is left alone.
    """
    set_nodelay = getattr(transport, "setTcpNoDelay", None)
    try:
        if set_nodelay is not None:
            set_nodelay(True)
        handle = transport.getHandle()
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    except Exception:
        return
    try:
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE:
            option = getattr(socket, name, None)
            if option is not None:
                handle.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        pass


def peer_address(connection: Any) -> Optional[str]:
    """
    ``host:port`` of ``connection``'s peer (a protocol with a TCP
    transport), for status pages; ``None`` when not connected.
    """
    transport = getattr(connection, "transport", None) if connection is not None else None
    if transport is None:
        return None
    p = transport.getPeer()
    return f"{getattr(p, 'host', '?')}:{getattr(p, 'port', '?')}"


def kernel_unsent(transport: Any) -> int:
    """
    Bytes in ``transport``'s kernel send queue not sent yet; 0 when that
    cannot be known (no socket, not Linux).
    """
    try:
        fd = transport.getHandle().fileno()
        out = fcntl.ioctl(fd, SIOCOUTQNSD, b"\0\0\0\0")
    except Exception:
        return 0
    value: int = struct.unpack("i", out)[0]
    return value


@implementer(IPushProducer)
class SendBacklog:
    """
    How much of what was written to one TCP transport still waits.

    :param transport: the connection's transport; this object registers
        as its streaming producer.
    :param buffered: bytes Twisted may hold before it pauses us.

    :ivar paused: Twisted holds more than ``buffered`` bytes.
    """

    def __init__(self, transport: Any, buffered: int = 8192) -> None:
        self.transport = transport
        self.paused = False
        try:
            transport.bufferSize = buffered
            transport.registerProducer(self, True)
        except Exception:
            pass  # a transport without producers: the kernel check remains

    def full(self, limit: int) -> bool:
        """
        Another frame would wait behind more than ``limit`` bytes in the
        kernel, or Twisted is holding what the kernel would not take.
        """
        return self.paused or kernel_unsent(self.transport) > limit

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True
