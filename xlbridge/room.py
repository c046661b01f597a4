"""
Rooms: two legs that talk to each other, and their call while it runs.

A :class:`Room` pairs two endpoints, whoever made them:

- the bridge opens one per configured pair (``--ports``, ``--audiosocket``)
  at start-up, for good (:class:`xlbridge.bridge.Pair` feeds it);
- the ARI controller opens one when both callers of a Stasis room are set
  up, and closes it when either of them leaves.

Either way the room is the one place a call starts:

- :meth:`Room.start_call` builds the two legs and a
  :class:`~xlbridge.call.service.CallService` and adds it to the bridge's
  running calls container, so it starts at once (nothing while the bridge
  shuts down);
- :meth:`Room.audio_in` is "start on first audio": audio on either leg
  starts a call if none runs (none yet, or the last one ended for
  inactivity), then goes to that call.

The call id is the one the room was opened with (ARI: the first caller's
channel id); otherwise the AudioSocket UUID of the leg that started the
call, else its partner's (a mixed pair whose RTP leg spoke first); otherwise
a fresh uuid4.
"""

from __future__ import annotations

import uuid
from typing import Optional, Protocol

from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xlbridge.audio.frame import Samples
from xlbridge.call.leg import Leg
from xlbridge.call.service import CallService, PipelineFactory
from xlbridge.config import BridgeConfig
from xlbridge.egress import EgressClock
from xlbridge.events import Event
from xlbridge.transports.audiosocket import AudioSocketEndpoint
from xlbridge.transports.rtp import RTPEndpoint
from xlbridge.transports.websocket import WebSocketEndpoint

#: A leg's transport: RTP on a UDP port, or one AudioSocket or WebSocket
#: (chan_websocket) connection.
Endpoint = RTPEndpoint | AudioSocketEndpoint | WebSocketEndpoint


class RoomHost(Protocol):
    """
    What a room needs of the bridge to start its calls.
    """

    @property
    def config(self) -> BridgeConfig: ...

    @property
    def pipeline_factory(self) -> PipelineFactory: ...

    @property
    def egress(self) -> EgressClock: ...

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def calls(self) -> MultiService: ...

    @property
    def accepting_calls(self) -> bool: ...

    def emit(self, event: Event) -> None: ...


class Room:
    """
    Two legs that talk to each other, and their current call.

    :param names: the legs' names, in pair order (configured extensions, or
        ARI channel names); the legs of every call are named so.
    :param languages: what each caller speaks, in the same order.
    :param endpoints: each leg's transport, bound by whoever opened the room.
    :param call_id: the id of every call of this room, if fixed.
    :param channels: the callers' Asterisk channel ids (ARI), carried by the
        call's events.

    :ivar call: the live :class:`CallService`, or ``None``.
    :ivar calls_started: calls this room has started so far.
    """

    log = Logger()

    def __init__(
        self,
        host: RoomHost,
        names: tuple[str, str],
        languages: tuple[str, str],
        endpoints: tuple[Endpoint, Endpoint],
        call_id: Optional[str] = None,
        channels: Optional[tuple[str, str]] = None,
    ) -> None:
        self.host = host
        self.names = names
        self.languages = languages
        self.endpoints = endpoints
        self.call_id = call_id
        self.channels = channels
        self.call: Optional[CallService] = None
        self.calls_started = 0

    def __repr__(self) -> str:
        return f"<Room {self.names[0]} <-> {self.names[1]}>"

    def index(self, endpoint: Endpoint) -> int:
        """
        The leg of ``endpoint`` (0 or 1).
        """
        return 0 if endpoint is self.endpoints[0] else 1

    def audio_in(self, index: int, samples: Samples) -> bool:
        """
        Inbound audio from leg ``index``: to the call, started by it if
        none runs.  Runs per frame.

        :return: false if there is no call and none may start (the bridge is
            shutting down); the audio went nowhere.
        """
        call = self.call
        if call is None:
            call = self.start_call(index)
            if call is None:
                return False
        call.audio_in(index, samples)
        return True

    def start_call(self, first: int = 0) -> Optional[CallService]:
        """
        Start a call between the two legs, unless one runs (then that one)
        or the bridge is shutting down (then ``None``).

        :param first: the leg whose audio or line starts it (its AudioSocket
            UUID names the call when the room was given no id).
        """
        if self.call is not None:
            return self.call
        host = self.host
        if not host.accepting_calls:
            return None
        config = host.config
        buf = config.relay_buffer_ms
        legs = (
            Leg(self.names[0], self.languages[0], self.endpoints[0], buf),
            Leg(self.names[1], self.languages[1], self.endpoints[1], buf),
        )
        call = CallService(
            self._unique(self.call_id or self._transport_call_id(first)),
            legs,
            host.pipeline_factory,
            host.egress,
            host.clock,
            inactivity_timeout=config.call_timeout,
            emit=host.emit,
            on_end=self._ended,
            channels=self.channels,
        )
        self.call = call
        self.calls_started += 1
        call.setServiceParent(host.calls)
        return call

    def _unique(self, call_id: str) -> str:
        """
        ``call_id``, or ``call_id-2``, ``-3``... if a live call has it: two
        AudioSocket connections may announce one UUID (a peer's bug or a
        hostile one), and a call is a named service of the bridge.
        """
        live = getattr(self.host.calls, "namedServices", {})
        n, unique = 1, call_id
        while unique in live:
            n += 1
            unique = f"{call_id}-{n}"
        return unique

    def end_call(self, reason: str) -> None:
        """
        End the current call, if any, for ``reason`` (``"hangup"``...).
        """
        call = self.call
        if call is not None:
            call.end(reason)

    def _transport_call_id(self, first: int) -> str:
        for endpoint in (self.endpoints[first], *self.endpoints):
            if isinstance(endpoint, (AudioSocketEndpoint, WebSocketEndpoint)) and endpoint.call_id:
                return endpoint.call_id
        return str(uuid.uuid4())

    def _ended(self, call: CallService) -> None:
        if self.call is call:
            self.call = None
