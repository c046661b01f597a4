"""
One TCP listener for every ARI AudioSocket leg (``--ari-media audiosocket``).

Design notes (PROTOCOLS.md 5.2 and 6):

- The controller creates each caller's ExternalMedia channel with
  ``encapsulation=audiosocket&transport=tcp&external_host=<us>:<port>`` and
  ``data=<fresh uuid4>``.  Asterisk (the TCP client) connects while it
  creates the channel, then sends 0x01 with that UUID in 16 binary bytes.
- All legs share one port, so a connection is anonymous until its UUID
  arrives.  :class:`AudioSocketRouter` registers the UUID of each leg
  *before* the REST request (Asterisk may connect before it answers), and
  its protocol hands itself, with the messages decoded so far, to the leg's
  :class:`~xlbridge.transports.audiosocket.AudioSocketEndpoint`.  From then
  on the endpoint does everything (audio, DTMF, hangup, paced replies):
  nothing of the frame handling is repeated here.
- Before the UUID: audio, any other kind, a malformed message, an unknown
  UUID, or nothing at all for :attr:`AudioSocketRouter.uuid_timeout`
  seconds, is a counted drop (:attr:`AudioSocketRouter.counters`) and the
  connection is closed.  Nothing here raises into the reactor.
"""

from __future__ import annotations

import uuid
from typing import Callable, Optional

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from xlbridge.audio.frame import Samples
from xlbridge.events import DropReason, LegCounters
from xlbridge.transports.audiosocket import AudioSocketEndpoint
from xlbridge.transports.audiosocket_connection import AudioSocketProtocol
from xlbridge.transports.audiosocket_codec import KIND_UUID, Frame, Malformed, Token, format_uuid


class RoutedProtocol(AudioSocketProtocol):
    """
    A connection to the shared port.  Until its UUID arrives its
    ``endpoint`` is the router; then it is the leg's endpoint.
    """

    timer: Optional[IDelayedCall] = None


class AudioSocketRouter(Factory):
    """
    Accept Asterisk's AudioSocket connections on one port and route each to
    the endpoint registered for the UUID it announces.

    :param clock: schedules the wait for a connection's UUID.
    :param uuid_timeout: seconds a connection may stay silent before its
        UUID; Asterisk sends it at once.
    :ivar counters: drops of connections that never reached an endpoint
        (``audiosocket_no_uuid``, ``audiosocket_unknown_uuid``, ...).
    :ivar local: ``host:port`` listened on (set by the listener service).
    """

    noisy = False
    log = Logger()

    def __init__(self, clock: IReactorTime, uuid_timeout: float = 5.0) -> None:
        self.clock = clock
        self.uuid_timeout = uuid_timeout
        self.routes: dict[str, AudioSocketEndpoint] = {}
        self.counters = LegCounters()
        self.pending: set[RoutedProtocol] = set()
        self.local: Optional[str] = None

    # -- legs ----------------------------------------------------------------

    def add(
        self, name: str, on_audio: Callable[[AudioSocketEndpoint, Samples], None]
    ) -> tuple[str, AudioSocketEndpoint]:
        """
        A new persistent endpoint for leg ``name`` under a fresh uuid4:
        ``(uuid, endpoint)``.  Pass the uuid as ExternalMedia ``data``.
        """
        call_id = str(uuid.uuid4())
        # We asked Asterisk for slin16: reply in 0x12 until it says otherwise.
        endpoint = AudioSocketEndpoint(
            name, on_audio, self._peer_hung_up, persistent=True, first_reply_rate=16000, clock=self.clock
        )
        endpoint.local = self.local
        self.routes[call_id] = endpoint
        return call_id, endpoint

    def remove(self, call_id: str) -> None:
        """
        Forget leg ``call_id`` and close its connection (0x00 first); a late
        connection with that UUID is then refused.  Idempotent.
        """
        endpoint = self.routes.pop(call_id, None)
        if endpoint is not None:
            endpoint.hangup()

    def _peer_hung_up(self, endpoint: AudioSocketEndpoint) -> None:
        # Asterisk hangs up the ExternalMedia channel when its socket closes;
        # the controller ends the leg on that channel's StasisEnd.
        self.log.info("{name}: AudioSocket connection closed by Asterisk", name=endpoint.extension)

    # -- connections -----------------------------------------------------------

    def buildProtocol(self, addr: Optional[IAddress]) -> RoutedProtocol:
        return RoutedProtocol(self)

    def connection_made(self, proto: RoutedProtocol) -> None:
        self.pending.add(proto)
        proto.timer = self.clock.callLater(self.uuid_timeout, self._no_uuid, proto)

    def data_received(self, proto: RoutedProtocol, data: bytes) -> None:
        try:
            self._route(proto, proto.decoder.feed(data))
        except Exception:
            self.counters.drop(DropReason.ERROR)
            self.log.failure("error routing an AudioSocket connection")
            self._drop(proto)

    def _route(self, proto: RoutedProtocol, tokens: list[Token]) -> None:
        if not tokens or proto not in self.pending:
            return
        first = tokens[0]
        if isinstance(first, Malformed):
            self._refuse(proto, first.reason, f"malformed first message (kind {first.kind:#04x})")
        elif first.kind != KIND_UUID:
            reason = DropReason.AUDIOSOCKET_NO_UUID if first.rate is not None else DropReason.AUDIOSOCKET_KIND
            self._refuse(proto, reason, f"kind {first.kind:#04x} before the UUID")
        else:
            self._hand_over(proto, first, tokens)

    def _hand_over(self, proto: RoutedProtocol, first: Frame, tokens: list[Token]) -> None:
        call_id = format_uuid(first.payload)
        endpoint = self.routes.get(call_id)
        if endpoint is None:
            self._refuse(proto, DropReason.AUDIOSOCKET_UNKNOWN_UUID, f"unknown UUID {call_id}")
            return
        self._settle(proto)
        endpoint.adopt(proto, tokens)

    def connection_lost(self, proto: RoutedProtocol) -> None:
        if proto in self.pending:
            self._settle(proto)
            if proto.decoder.pending:
                self.counters.drop(DropReason.AUDIOSOCKET_TRUNCATED)

    def _no_uuid(self, proto: RoutedProtocol) -> None:
        proto.timer = None
        self._refuse(proto, DropReason.AUDIOSOCKET_NO_UUID, f"no UUID within {self.uuid_timeout:g} s")

    def _refuse(self, proto: RoutedProtocol, reason: DropReason, why: str) -> None:
        self.counters.drop(reason)
        peer = _peer(proto)
        self.log.warn("refused AudioSocket connection from {peer}: {why}", peer=peer, why=why)
        self._drop(proto)

    def _drop(self, proto: RoutedProtocol) -> None:
        self._settle(proto)
        if proto.transport is not None:
            proto.transport.loseConnection()

    def _settle(self, proto: RoutedProtocol) -> None:
        self.pending.discard(proto)
        if proto.timer is not None and proto.timer.active():
            proto.timer.cancel()
        proto.timer = None

    def close_pending(self) -> None:
        """
        Close connections still waiting for their UUID (on shutdown).
        """
        for proto in list(self.pending):
            self._drop(proto)


def _peer(proto: RoutedProtocol) -> str:
    transport = proto.transport
    if transport is None:
        return "?"
    p = transport.getPeer()
    return f"{getattr(p, 'host', '?')}:{getattr(p, 'port', '?')}"
