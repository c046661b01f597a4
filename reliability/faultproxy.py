"""
A small fault-injecting TCP proxy, for putting between xlbridge and an
engine (Deepgram, DeepL, ElevenLabs fakes) or the ARI server.

Why our own: the faults must be switched at run time, per connection, from
a test or a runner, and be exact about *how* traffic misbehaves (kernel
buffers filling, a socket that stays open but says nothing), which generic
tools (tc/netem needs root, toxiproxy needs Go) do not give us here.

Faults (all switchable at run time, for every connection or some):

``latency_ms`` + ``jitter_ms``
    Each chunk read is forwarded after ``latency_ms`` +- a uniform
    ``jitter_ms`` (milliseconds); byte order is kept (a chunk never
    overtakes an earlier one, as on one TCP stream).
``bandwidth`` (bytes per second, each direction of each connection)
    A token bucket: a chunk leaves once the link would have carried it;
    chunks are cut into pieces of at most 1 KiB so the stream trickles.
``reset``
    Abort both sides of the connection(s) now (RST, no FIN).
``blackhole``
    Stop forwarding both ways and stop reading the client's socket, but keep
    both open: a half-open connection.  (The server side is read into the
    proxy, bounded, only so that its close can be seen and hidden.)  The client's writes pile up in its
    kernel (then its own) buffers and it hears nothing, not even a close
    from the server: a server close is hidden while the blackhole lasts and
    turned into a reset of the client side when it ends (the path came back
    and the server no longer knows the connection).
``stall`` (seconds)
    A blackhole that ends by itself after N seconds; data held meanwhile
    is then delivered (TCP would have retransmitted it).
``slow_reads`` (``period_s``, ``read_ms``)
    The proxy reads from the *client* only ``read_ms`` milliseconds of
    every ``period_s`` seconds, so the client's kernel buffers fill and its
    writes back up (a slow or overloaded server); the server-to-client
    direction is unaffected.
``refuse``
    New connections are accepted and aborted at once (engine unreachable).

Faults set without ``conns`` apply to every live connection and to new
ones; with ``conns`` (connection ids, see :meth:`FaultProxy.status`) only to
those.  :meth:`FaultProxy.clear` removes them.

Control
-------

From Python (tests, the runner)::

    proxy = FaultProxy(reactor, ("127.0.0.1", 8801))
    port = proxy.listen(0)
    proxy.set(latency_ms=200, jitter_ms=50)
    proxy.blackhole(conns=[1, 3]); proxy.stall(5.0); proxy.reset()
    proxy.slow_reads(period_s=1.0, read_ms=20); proxy.set(bandwidth=8000)
    proxy.clear()

From the command line, with a line-based control port (loopback only)::

    python -m reliability.faultproxy --listen 9801 --target 127.0.0.1:8801 --control 9901

It prints ``faultproxy listening on 127.0.0.1:PORT control 127.0.0.1:PORT``.
Each control line is a command; each answer one JSON line
(``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``)::

    set latency_ms=200 jitter_ms=50 bandwidth=16000 [conns=1,2]
    blackhole [conns=...]          stall 5 [conns=...]
    slow_reads period_s=1 read_ms=20 [conns=...]
    reset [conns=...]              refuse on|off
    clear [conns=...]              status

e.g. ``printf 'stall 5\\n' | nc -q1 127.0.0.1 9901``.

The per-chunk timing is computed by the sans-I/O :class:`Shaper`; time
comes from the injected reactor (``IReactorTime``), so tests run on a
``task.Clock``.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
from typing import Any, Callable, Deque, Iterable, Optional

import attrs
from twisted.internet import protocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ITransport
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["FaultProxy", "Faults", "Shaper", "ControlProtocol", "main"]

#: Most bytes waiting in one direction's delay line before the proxy stops
#: reading the sender (so latency or a bandwidth limit backs up into the
#: sender's buffers instead of the proxy's memory).
MAX_QUEUED = 256 * 1024
#: Pieces a bandwidth-limited chunk is cut into, bytes.
PIECE = 1024


@attrs.define
class Faults:
    """
    The faults of one connection.

    :ivar latency_ms: added to every chunk, milliseconds.
    :ivar jitter_ms: +- uniform spread around ``latency_ms``, milliseconds.
    :ivar bandwidth: bytes per second per direction; ``None`` = unlimited.
    :ivar blackhole: forward nothing and read nothing while set.
    :ivar slow_period_s: with ``slow_reads``: one read window per period, seconds.
    :ivar slow_read_ms: length of the read window, milliseconds (0 = never read).
    :ivar slow_reads: read the client only during the windows.
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth: Optional[float] = None
    blackhole: bool = False
    slow_reads: bool = False
    slow_period_s: float = 1.0
    slow_read_ms: float = 20.0

    def as_dict(self) -> dict[str, Any]:
        """For ``status``."""
        return attrs.asdict(self)


class Shaper:
    """
    Sans-I/O timing of one direction of one connection: when may a chunk
    read at ``now`` leave?  Keeps byte order (no chunk leaves before an
    earlier one) and a token bucket for the bandwidth limit.

    :param uniform: ``uniform(a, b)`` for the jitter (injected for tests).
    """

    def __init__(self, uniform: Callable[[float, float], float] = random.uniform) -> None:
        self._uniform = uniform
        self.last_release = 0.0
        self.link_free_at = 0.0

    def release_time(self, now: float, nbytes: int, faults: Faults) -> float:
        """
        Seconds (reactor time) at which ``nbytes`` read at ``now`` leave.

        :param now: reactor time the chunk was read, seconds.
        """
        delay = faults.latency_ms / 1000.0
        if faults.jitter_ms:
            delay += self._uniform(-faults.jitter_ms, faults.jitter_ms) / 1000.0
        t = now + max(0.0, delay)
        if faults.bandwidth:
            start = max(now, self.link_free_at)
            self.link_free_at = start + nbytes / faults.bandwidth
            t = max(t, self.link_free_at)
        t = max(t, self.last_release)
        self.last_release = t
        return t


@implementer(IPushProducer)
class _ReadGate:
    """
    Pauses reading one transport for any of several reasons (backpressure
    from the other side, a full delay line, a fault) and resumes it only
    when none is left; registered as the producer of the *other* transport
    so Twisted's flow control goes through it too.
    """

    def __init__(self) -> None:
        self.transport: Optional[Any] = None
        self.reasons: set[str] = set()

    def attach(self, transport: Any) -> None:
        self.transport = transport
        if self.reasons:
            transport.pauseProducing()

    def pause(self, reason: str) -> None:
        was = bool(self.reasons)
        self.reasons.add(reason)
        if not was and self.transport is not None:
            self.transport.pauseProducing()

    def resume(self, reason: str) -> None:
        if reason not in self.reasons:
            return
        self.reasons.discard(reason)
        if not self.reasons and self.transport is not None:
            self.transport.resumeProducing()

    # IPushProducer, called by the other transport
    def pauseProducing(self) -> None:
        self.pause("backpressure")

    def resumeProducing(self) -> None:
        self.resume("backpressure")

    def stopProducing(self) -> None:
        pass


class _Pipe:
    """One direction: a delay line from a source protocol to a sink transport."""

    def __init__(self, conn: "ProxyConnection", name: str, gate: _ReadGate) -> None:
        self.conn = conn
        self.name = name
        self.gate = gate  # the source's read gate
        self.sink: Optional[ITransport] = None
        self.shaper = Shaper(conn.proxy.uniform)
        self.queue: Deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.call: Optional[IDelayedCall] = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.eof = False  # the source closed; close the sink once drained

    def push(self, data: bytes) -> None:
        self.bytes_in += len(data)
        now = self.conn.proxy.clock.seconds()
        f = self.conn.faults
        pieces: Iterable[bytes] = [data]
        if f.bandwidth:
            pieces = [data[i:i + PIECE] for i in range(0, len(data), PIECE)]
        for p in pieces:
            self.queue.append((self.shaper.release_time(now, len(p), f), p))
            self.queued += len(p)
        if self.queued > MAX_QUEUED:
            self.gate.pause("queue")
        self.kick()

    def kick(self) -> None:
        """Deliver what is due now; schedule the rest."""
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        if self.conn.held or self.sink is None:
            return
        reactor = self.conn.proxy.clock
        now = reactor.seconds()
        out = []
        while self.queue and self.queue[0][0] <= now + 1e-6:
            _, p = self.queue.popleft()
            self.queued -= len(p)
            out.append(p)
        if out:
            data = b"".join(out)
            self.bytes_out += len(data)
            self.sink.write(data)
        if self.queued <= MAX_QUEUED // 2:
            self.gate.resume("queue")
        if self.queue:
            self.call = reactor.callLater(max(0.0, self.queue[0][0] - now), self.kick)
        elif self.eof:
            self.sink.loseConnection()

    def stop(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None


class _Upstream(protocol.Protocol):
    """The proxy's connection to the target (the server side)."""

    def __init__(self, conn: "ProxyConnection") -> None:
        self.conn = conn

    def connectionMade(self) -> None:
        self.conn.upstream_made(self)

    def dataReceived(self, data: bytes) -> None:
        self.conn.down.push(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.conn.side_lost("server", reason)


class _UpstreamFactory(protocol.ClientFactory):
    def __init__(self, conn: "ProxyConnection") -> None:
        self.conn = conn

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        p = _Upstream(self.conn)
        p.factory = self
        return p

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.conn.upstream_failed(reason)


class ProxyConnection(protocol.Protocol):
    """
    One proxied connection: the client side is this protocol; the server
    side is an :class:`_Upstream` it connects when the client arrives.

    :ivar id: 1-based number, for ``conns=``.
    :ivar state: ``connecting``, ``open``, ``closed``.
    """

    def __init__(self, proxy: "FaultProxy", conn_id: int, faults: Faults) -> None:
        self.proxy = proxy
        self.id = conn_id
        self.faults = faults
        self.state = "connecting"
        self.client_gate = _ReadGate()
        self.server_gate = _ReadGate()
        self.up = _Pipe(self, "up", self.client_gate)  # client -> server
        self.down = _Pipe(self, "down", self.server_gate)  # server -> client
        self.upstream: Optional[_Upstream] = None
        self.stall_call: Optional[IDelayedCall] = None
        self.slow_call: Optional[IDelayedCall] = None
        self.client_gone = False
        self.server_gone = False
        self.reset_done = False
        self.opened_at = proxy.clock.seconds()

    @property
    def held(self) -> bool:
        """Nothing is forwarded (blackhole or stall)."""
        return self.faults.blackhole or self.stall_call is not None

    # -- client side ---------------------------------------------------------

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.client_gate.attach(self.transport)
        self.client_gate.pause("connecting")
        if self.proxy.refusing:
            self.state = "closed"
            self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        self.proxy.reactor.connectTCP(self.proxy.target[0], self.proxy.target[1], _UpstreamFactory(self),
                                      timeout=self.proxy.connect_timeout)
        self.apply()

    def dataReceived(self, data: bytes) -> None:
        self.up.push(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.side_lost("client", reason)

    # -- server side ---------------------------------------------------------

    def upstream_made(self, up: _Upstream) -> None:
        if self.client_gone:
            up.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.upstream = up
        self.state = "open"
        assert self.transport is not None and up.transport is not None
        self.server_gate.attach(up.transport)
        # Flow control: a full sink pauses its source (through the gate).
        self.transport.registerProducer(self.server_gate, True)  # type: ignore[attr-defined]
        up.transport.registerProducer(self.client_gate, True)  # type: ignore[attr-defined]
        self.up.sink = up.transport
        self.down.sink = self.transport
        self.apply()
        self.client_gate.resume("connecting")
        self.up.kick()

    def upstream_failed(self, reason: Failure) -> None:
        self.state = "closed"
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- closing -------------------------------------------------------------

    def side_lost(self, side: str, reason: Failure) -> None:
        if side == "client":
            self.client_gone = True
        else:
            self.server_gone = True
        if self.client_gone and self.server_gone:
            self._finished()
            return
        if self.held:
            return  # hidden until the blackhole or stall ends (see _unhold)
        self._propagate(side, reason)

    def _propagate(self, side: str, reason: Failure) -> None:
        clean = reason.check(protocol.connectionDone.type) is not None  # type: ignore[arg-type]
        other = self.down if side == "server" else self.up
        target = self.transport if side == "server" else (self.upstream.transport if self.upstream else None)
        if target is None:
            return
        if clean and not self.reset_done:
            other.eof = True
            other.kick()
        else:
            target.abortConnection()  # type: ignore[attr-defined]

    def _finished(self) -> None:
        if self.state == "closed" and self.id not in self.proxy.live:
            return
        self.state = "closed"
        self.up.stop()
        self.down.stop()
        for c in (self.stall_call, self.slow_call):
            if c is not None and c.active():
                c.cancel()
        self.stall_call = self.slow_call = None
        self.proxy._gone(self)

    def abort(self) -> None:
        """Reset both sides now."""
        self.reset_done = True
        if self.transport is not None and not self.client_gone:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        if self.upstream is not None and self.upstream.transport is not None and not self.server_gone:
            self.upstream.transport.abortConnection()  # type: ignore[attr-defined]

    # -- faults --------------------------------------------------------------

    def apply(self) -> None:
        """Make the sockets' reading follow ``faults`` (after a change)."""
        if self.held:
            # The client's writes back up into its own buffers; the server
            # side is still read (into the held queue, bounded by
            # MAX_QUEUED) so that its close is seen and can be hidden.
            self.client_gate.pause("hold")
        else:
            self._unhold()
        if self.faults.slow_reads:
            if self.slow_call is None:
                self._slow_closed()
        else:
            if self.slow_call is not None and self.slow_call.active():
                self.slow_call.cancel()
            self.slow_call = None
            self.client_gate.resume("slow")

    def _unhold(self) -> None:
        self.client_gate.resume("hold")
        self.server_gate.resume("hold")
        # A side that went away while held: the other side learns now.
        if self.server_gone and not self.client_gone:
            self.down.kick()
            if self.transport is not None:
                self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        if self.client_gone and not self.server_gone:
            if self.upstream is not None and self.upstream.transport is not None:
                self.upstream.transport.abortConnection()  # type: ignore[attr-defined]
            return
        self.up.kick()
        self.down.kick()

    def stall(self, seconds: float) -> None:
        if self.stall_call is not None and self.stall_call.active():
            self.stall_call.cancel()
        self.stall_call = self.proxy.clock.callLater(seconds, self._stall_over)
        self.apply()

    def _stall_over(self) -> None:
        self.stall_call = None
        self.apply()

    def _slow_closed(self) -> None:
        """Slow reads: the read window is closed for the rest of the period."""
        f = self.faults
        self.client_gate.pause("slow")
        self.slow_call = self.proxy.clock.callLater(max(0.0, f.slow_period_s - f.slow_read_ms / 1000.0),
                                                      self._slow_open)

    def _slow_open(self) -> None:
        f = self.faults
        if f.slow_read_ms > 0:
            self.client_gate.resume("slow")
        self.slow_call = self.proxy.clock.callLater(f.slow_read_ms / 1000.0, self._slow_closed)

    def describe(self) -> dict[str, Any]:
        """For ``status``."""
        return {"id": self.id, "state": self.state, "held": self.held,
                "client": str(self.transport.getPeer()) if self.transport else None,  # type: ignore[union-attr]
                "bytes_up": self.up.bytes_out, "bytes_down": self.down.bytes_out,
                "queued_up": self.up.queued, "queued_down": self.down.queued,
                "paused_client": sorted(self.client_gate.reasons),
                "paused_server": sorted(self.server_gate.reasons),
                "faults": self.faults.as_dict()}


class _ProxyFactory(protocol.ServerFactory):
    def __init__(self, proxy: "FaultProxy") -> None:
        self.proxy = proxy

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return self.proxy._new_connection()


class FaultProxy:
    """
    A TCP proxy from a listening port to ``target`` with run-time faults
    (see the module docstring).

    :param reactor: provides ``IReactorTCP`` and ``IReactorTime``; all
        timing uses its clock.
    :param target: ``(host, port)`` of the server.
    :param uniform: jitter source ``uniform(a, b)``.
    :param connect_timeout: seconds for the upstream connect.
    :param clock: times the faults (``IReactorTime``); default ``reactor``.
        Tests pass a ``task.Clock`` with a real reactor for sockets.

    :ivar live: connection id -> :class:`ProxyConnection`, open ones.
    :ivar accepted: connections accepted so far.
    :ivar refusing: new connections are aborted at once.
    """

    def __init__(self, reactor: Any, target: tuple[str, int],
                 uniform: Callable[[float, float], float] = random.uniform,
                 connect_timeout: float = 10.0, clock: Optional[IReactorTime] = None) -> None:
        self.reactor = reactor
        self.clock: Any = clock if clock is not None else reactor
        self.target = target
        self.uniform = uniform
        self.connect_timeout = connect_timeout
        self.defaults = Faults()
        self.live: dict[int, ProxyConnection] = {}
        self.accepted = 0
        self.refusing = False
        self.port: Any = None

    def listen(self, port: int = 0, interface: str = "127.0.0.1") -> Any:
        """Listen on ``interface:port`` (0 = any free port); returns the listening port."""
        self.port = self.reactor.listenTCP(port, _ProxyFactory(self), interface=interface)
        return self.port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the proxy listens on."""
        h = self.port.getHost()
        return h.host, h.port

    def stop(self) -> Any:
        """Stop listening and reset every connection."""
        for c in list(self.live.values()):
            c.abort()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    def _new_connection(self) -> ProxyConnection:
        self.accepted += 1
        c = ProxyConnection(self, self.accepted, attrs.evolve(self.defaults))
        self.live[c.id] = c
        return c

    def _gone(self, c: ProxyConnection) -> None:
        self.live.pop(c.id, None)

    def _targets(self, conns: Optional[Iterable[int]]) -> list[ProxyConnection]:
        if conns is None:
            return list(self.live.values())
        ids = set(conns)
        return [c for c in self.live.values() if c.id in ids]

    # -- faults --------------------------------------------------------------

    def set(self, conns: Optional[Iterable[int]] = None, **values: Any) -> None:
        """
        Set fault fields (:class:`Faults` names: ``latency_ms``,
        ``jitter_ms``, ``bandwidth``...) on ``conns``, or on every live and
        new connection.
        """
        for k in values:
            if k not in attrs.fields_dict(Faults):
                raise ValueError(f"unknown fault {k!r}; known: {', '.join(attrs.fields_dict(Faults))}")
        if conns is None:
            self.defaults = attrs.evolve(self.defaults, **values)
        for c in self._targets(conns):
            c.faults = attrs.evolve(c.faults, **values)
            c.apply()

    def blackhole(self, on: bool = True, conns: Optional[Iterable[int]] = None) -> None:
        """Half-open: forward nothing, read nothing, keep the sockets (see the docstring)."""
        self.set(conns, blackhole=on)

    def stall(self, seconds: float, conns: Optional[Iterable[int]] = None) -> None:
        """Freeze the live connection(s) for ``seconds``, then deliver what was held."""
        for c in self._targets(conns):
            c.stall(seconds)

    def slow_reads(self, period_s: float = 1.0, read_ms: float = 20.0, on: bool = True,
                   conns: Optional[Iterable[int]] = None) -> None:
        """Read the client side only ``read_ms`` ms per ``period_s`` s."""
        self.set(conns, slow_reads=on, slow_period_s=period_s, slow_read_ms=read_ms)

    def reset(self, conns: Optional[Iterable[int]] = None) -> int:
        """Abort both sides of the connection(s) now; returns how many."""
        targets = self._targets(conns)
        for c in targets:
            c.abort()
        return len(targets)

    def refuse(self, on: bool = True) -> None:
        """Abort new connections at once while on."""
        self.refusing = on

    def clear(self, conns: Optional[Iterable[int]] = None) -> None:
        """Remove every fault (and any stall) from ``conns``, or from all and new connections."""
        if conns is None:
            self.defaults = Faults()
            self.refusing = False
        for c in self._targets(conns):
            c.faults = Faults()
            if c.stall_call is not None and c.stall_call.active():
                c.stall_call.cancel()
            c.stall_call = None
            c.apply()

    def status(self) -> dict[str, Any]:
        """Live connections and their faults, JSON-ready."""
        return {"target": f"{self.target[0]}:{self.target[1]}", "accepted": self.accepted,
                "refusing": self.refusing, "defaults": self.defaults.as_dict(),
                "live": [c.describe() for c in self.live.values()]}


# -- control port -----------------------------------------------------------------


def _parse_value(v: str) -> Any:
    if v in ("on", "true", "yes"):
        return True
    if v in ("off", "false", "no"):
        return False
    if v in ("none", "null"):
        return None
    try:
        return float(v)
    except ValueError:
        return v


def run_command(proxy: FaultProxy, line: str) -> dict[str, Any]:
    """
    Run one control line on ``proxy`` (see the module docstring);
    returns the JSON answer.  Never raises.
    """
    words = line.strip().split()
    if not words:
        return {"ok": False, "error": "empty command"}
    cmd, rest = words[0], words[1:]
    kw: dict[str, Any] = {}
    pos: list[str] = []
    for w in rest:
        if "=" in w:
            k, v = w.split("=", 1)
            kw[k] = [int(x) for x in v.split(",") if x] if k == "conns" else _parse_value(v)
        else:
            pos.append(w)
    conns = kw.pop("conns", None)
    try:
        if cmd == "set":
            proxy.set(conns, **kw)
        elif cmd == "blackhole":
            proxy.blackhole(not pos or bool(_parse_value(pos[0])), conns)
        elif cmd == "stall":
            proxy.stall(float(pos[0]) if pos else float(kw.get("seconds", 5.0)), conns)
        elif cmd == "slow_reads":
            on = not pos or bool(_parse_value(pos[0]))
            proxy.slow_reads(float(kw.get("period_s", 1.0)), float(kw.get("read_ms", 20.0)), on, conns)
        elif cmd == "reset":
            return {"ok": True, "reset": proxy.reset(conns)}
        elif cmd == "refuse":
            proxy.refuse(not pos or bool(_parse_value(pos[0])))
        elif cmd == "clear":
            proxy.clear(conns)
        elif cmd == "status":
            return {"ok": True, **proxy.status()}
        else:
            return {"ok": False, "error": f"unknown command {cmd!r}"}
    except Exception as e:  # a bad line must not kill the proxy
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return {"ok": True}


class ControlProtocol(LineReceiver):
    """One control connection: a command per line, a JSON answer per line."""

    delimiter = b"\n"

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy

    def lineReceived(self, line: bytes) -> None:
        answer = run_command(self.proxy, line.decode("utf-8", "replace"))
        self.sendLine(json.dumps(answer).encode("utf-8"))


class ControlFactory(protocol.ServerFactory):
    """Serves :class:`ControlProtocol` for one proxy."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        return ControlProtocol(self.proxy)


def _hostport(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m reliability.faultproxy --listen P --target host:port [--control C]``."""
    p = argparse.ArgumentParser(prog="python -m reliability.faultproxy",
                                description="A fault-injecting TCP proxy (see the module docstring).")
    p.add_argument("--listen", type=int, default=0, help="TCP port to listen on (0 = any)")
    p.add_argument("--interface", default="127.0.0.1")
    p.add_argument("--target", required=True, help="host:port of the server")
    p.add_argument("--control", type=int, default=None, help="loopback TCP port of the control socket (0 = any)")
    args = p.parse_args(argv)
    from twisted.internet import reactor

    proxy = FaultProxy(reactor, _hostport(args.target))
    host, port = proxy.listen(args.listen, args.interface).getHost().host, proxy.address[1]
    line = f"faultproxy listening on {host}:{port}"
    if args.control is not None:
        cport = reactor.listenTCP(args.control, ControlFactory(proxy), interface="127.0.0.1")  # type: ignore[attr-defined]
        control_port = cport.getHost().port  # type: ignore[attr-defined]
        line += f" control 127.0.0.1:{control_port}"
    print(line, flush=True)
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
