# -*- test-case-name: tests.transports.test_admission -*-
"""
Who may open a media connection, and how fast calls may start on it.

AudioSocket and WebSocket media have no authentication of their own: the
first process to reach a free AudioSocket port with a UUID becomes that
extension's caller.  RTP has latching; TCP media listeners get this:

- **An allow-list of peer addresses** (:class:`PeerFilter`): a connection
  from an address outside it is refused before any protocol exists for it
  (``buildProtocol`` returns ``None``: Twisted closes the socket at once,
  no byte is read).  The default is loopback and the ARI host; a
  production Asterisk on another machine is added with ``--media-allow``.
  Each refused address is logged once (at most :data:`MAX_LOGGED_PEERS`
  of them, then one line per :data:`SUMMARY_S` with the count), and every
  refusal is counted.
- **A bound on the rate of new calls per transport** (:class:`CallRate`, a
  token bucket): starting and ending a call costs the reactor a few
  milliseconds (legs, resamplers, log lines, event lines).  A peer that
  opens calls hundreds of times a second (a loop in a dialplan, a broken
  client, an attack from an allowed host) would otherwise take the
  reactor from the 20 ms egress clock every other call depends on, and
  their audio would be skipped.  Past the bound a new call is refused
  (AudioSocket: 0x00 hangup and close; WebSocket: close) and counted as
  ``call_rate``; calls already running are never touched.

Everything here is sans-I/O but the small :class:`AdmittingFactory`
wrapper, and time comes from an injected ``IReactorTime``.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Iterable, Optional, Sequence, Union
from urllib.parse import urlsplit

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from xlbridge.logthrottle import OncePerKey

__all__ = [
    "AdmittingFactory",
    "CallRate",
    "LOOPBACK",
    "MediaAdmission",
    "PeerFilter",
    "default_allow",
    "parse_allow",
]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: The networks every default allow-list holds.
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

#: Refused addresses logged one by one; past this, a summary line.
MAX_LOGGED_PEERS = 256

#: Seconds between two summary lines of refusals not logged one by one.
SUMMARY_S = 60.0


def parse_allow(spec: Union[str, Iterable[str]]) -> Optional[tuple[Network, ...]]:
    """
    ``"10.0.0.5, 192.168.1.0/24, ::1"`` (or a list of them) as networks;
    ``"any"`` is ``None``: every address is allowed.

    :raises ValueError: an item that is neither an address nor a network.
    """
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [s for s in (str(i).strip() for i in items) if s]
    if not items:
        raise ValueError("an empty allow-list would refuse every connection: give addresses or 'any'")
    if any(i.lower() == "any" for i in items):
        if len(items) > 1:
            raise ValueError("'any' allows every address: give it alone")
        return None
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network (like 10.0.0.5 or 10.0.0.0/24)") from None
    return tuple(out)


def default_allow(ari_url: Optional[str] = None) -> tuple[Network, ...]:
    """
    Loopback, plus the addresses of the ARI host when there is one (its
    name resolved once, at start-up; a name that does not resolve adds
    nothing).
    """
    nets = list(LOOPBACK)
    host = urlsplit(ari_url).hostname if ari_url else None
    if host:
        try:
            nets.append(ipaddress.ip_network(host))
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            except OSError:
                infos = []
            for info in infos:
                nets.append(ipaddress.ip_network(str(info[4][0]).split("%")[0]))
    unique: list[Network] = []
    for n in nets:
        if n not in unique:
            unique.append(n)
    return tuple(unique)


def _address(host: str) -> Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]:
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class PeerFilter:
    """
    The allow-list of one bridge's TCP media listeners.

    :param allow: networks allowed; ``None`` allows every address.
    :param clock: time of the summary lines.

    :ivar refused: connections refused so far.
    """

    log = Logger()

    def __init__(self, allow: Optional[Sequence[Network]], clock: IReactorTime) -> None:
        self.allow = None if allow is None else tuple(allow)
        self.clock = clock
        self.refused = 0
        self._once = OncePerKey(self.log, clock, MAX_LOGGED_PEERS, SUMMARY_S)

    def describe(self) -> str:
        """The allow-list as written in the start-up log line."""
        if self.allow is None:
            return "any address"
        return ", ".join(str(n) for n in self.allow)

    def allows(self, host: str) -> bool:
        """Whether ``host`` (an address as a transport reports it) may connect."""
        if self.allow is None:
            return True
        addr = _address(host)
        return addr is not None and any(addr in net for net in self.allow)

    def check(self, what: str, host: str) -> bool:
        """
        :meth:`allows`, counting and logging a refusal of a connection to
        ``what`` (a listener's name): each address once, then summaries.
        """
        if self.allows(host):
            return True
        self.refused += 1
        self._once.warn(
            host,
            "refused a media connection to {what} from {peer}: not in the allow-list "
            "(--media-allow; further refusals from it are only counted)",
            "refused {count} more media connections from addresses not in the allow-list (not logged one by one)",
            what=what, peer=host,
        )
        return False


class CallRate:
    """
    A token bucket: at most ``per_second`` new calls a second on average,
    ``burst`` at once.  ``per_second`` 0 means no bound.

    :ivar refused: calls refused so far.
    """

    def __init__(self, clock: IReactorTime, per_second: float, burst: Optional[int] = None) -> None:
        if per_second < 0:
            raise ValueError("per_second must be 0 (no bound) or more")
        self.clock = clock
        self.per_second = per_second
        self.burst = float(burst if burst is not None else max(1, round(per_second)))
        self.refused = 0
        self._tokens = self.burst
        self._at: Optional[float] = None

    def take(self) -> bool:
        """One new call: true if it may start now."""
        if not self.per_second:
            return True
        now = self.clock.seconds()
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.refused += 1
        return False


class MediaAdmission:
    """
    One bridge's admission rules: the allow-list shared by its TCP media
    listeners, and one new-call bucket per transport kind
    (``"audiosocket"``, ``"websocket"``).
    """

    log = Logger()

    def __init__(
        self, clock: IReactorTime, allow: Optional[Sequence[Network]] = LOOPBACK, calls_per_second: float = 20.0,
    ) -> None:
        self.clock = clock
        self.peers = PeerFilter(allow, clock)
        self.calls_per_second = calls_per_second
        self._rates: dict[str, CallRate] = {}
        self._rate_logged: dict[str, float] = {}

    def rate(self, kind: str) -> CallRate:
        """The new-call bucket of transport ``kind``."""
        bucket = self._rates.get(kind)
        if bucket is None:
            bucket = self._rates[kind] = CallRate(self.clock, self.calls_per_second, max(1, round(self.calls_per_second)))
        return bucket

    def new_call(self, kind: str, what: str) -> bool:
        """
        A call asks to start on transport ``kind`` (at ``what``, for the
        log): true if it may.  A refusal is counted by the caller (a drop
        of its leg) and logged here at most once per :data:`SUMMARY_S`.
        """
        bucket = self.rate(kind)
        if bucket.take():
            return True
        now = self.clock.seconds()
        last = self._rate_logged.get(kind)
        if last is None or now - last >= SUMMARY_S:
            self._rate_logged[kind] = now
            self.log.warn(
                "{what}: refused a new {kind} call: more than {rate:g} new calls a second on this transport "
                "(--max-new-calls; {refused} refused so far)",
                what=what, kind=kind, rate=self.calls_per_second, refused=bucket.refused,
            )
        return False

    @property
    def refused_calls(self) -> dict[str, int]:
        """Calls refused by the rate bound, by transport kind."""
        return {kind: bucket.refused for kind, bucket in self._rates.items()}


class AdmittingFactory(Factory):
    """
    Wraps a listener's factory: a connection from an address outside the
    allow-list gets no protocol (closed at once, counted).  What the
    listener tells the factory (``local``) and its start and stop reach
    the wrapped one.

    :param what: the listener's name in log lines (``"AudioSocket 7000"``).
    """

    noisy = False

    def __init__(self, wrapped: Factory, peers: PeerFilter, what: str) -> None:
        self.wrapped = wrapped
        self.peers = peers
        self.what = what

    @property
    def local(self) -> Optional[str]:
        return getattr(self.wrapped, "local", None)

    @local.setter
    def local(self, value: Optional[str]) -> None:
        self.wrapped.local = value  # type: ignore[attr-defined]

    def logPrefix(self) -> str:
        """The wrapped factory's, so "MediaServerFactory starting on 8703" reads as before."""
        prefix = getattr(self.wrapped, "logPrefix", None)
        return str(prefix()) if prefix is not None else self.wrapped.__class__.__name__

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: Optional[IAddress]) -> Optional[Protocol]:
        host = getattr(addr, "host", None)
        if host is not None and not self.peers.check(self.what, str(host)):
            return None  # (no host: a UNIX socket or a memory transport, local by nature)
        built: Optional[Protocol] = self.wrapped.buildProtocol(addr)  # type: ignore[assignment]
        return built
