"""
What the bridge's two clients use of it, as types.

:class:`~xlbridge.bridge.BridgeService` is a big object; the monitor and the
ARI controller each see only the part they need, named here, so that a
change to the bridge shows which of them it touches, and a test can hand
either of them something smaller.  The bridge provides both (structurally:
these are ``typing.Protocol`` classes, nothing to declare).

- :class:`MonitorView`: read the live state (calls, endpoints, counters,
  the egress clock), observe events and hook the egress tick.
- :class:`ControllerView`: the bridge's media settings, endpoints for legs
  set up at run time, listing them for the monitor, and rooms to pair them.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Protocol

from xlbridge.audio.frame import Samples
from xlbridge.call.service import CallService
from xlbridge.config import BridgeConfig
from xlbridge.egress import EgressClock
from xlbridge.events import Event, LegCounters
from xlbridge.room import Endpoint, Room
from xlbridge.transports.admission import MediaAdmission
from xlbridge.transports.rtp import RTPEndpoint


class MonitorView(Protocol):
    """
    What the monitor (``/api/calls``, ``/metrics``, the live WebSocket)
    uses of the bridge.
    """

    @property
    def egress(self) -> EgressClock:
        """
        The egress clock: tick counters, legs paced, and its ``on_tick``
        hook (set by the monitor while it runs).
        """

    @property
    def admission(self) -> MediaAdmission:
        """
        Connections refused by the media allow-list, calls by the new-call
        bound.
        """

    @property
    def observers(self) -> list[Callable[[Event], None]]:
        """
        Callables receiving every event; the monitor adds its own while it
        runs.
        """

    @property
    def retired_counters(self) -> dict[str, LegCounters]:
        """
        Counters of endpoints no longer listed, summed by transport kind.
        """

    def active_calls(self) -> list[CallService]:
        """
        The live calls.
        """

    def all_endpoints(self) -> Iterator[tuple[str, Endpoint, str]]:
        """
        ``(name, endpoint, origin)`` of every listed endpoint.
        """

    def status(self) -> dict[str, Any]:
        """
        JSON-ready state: egress, calls, endpoints.
        """


class ControllerView(Protocol):
    """
    What the ARI controller uses of the bridge.
    """

    @property
    def config(self) -> BridgeConfig:
        """
        The bridge's settings (``interface`` to bind on, ``codec`` to ask
        Asterisk for).
        """

    @property
    def admission(self) -> MediaAdmission:
        """
        Who may connect to the controller's media listeners.
        """

    def rtp_endpoint(self, name: str, on_audio: Callable[[RTPEndpoint, Samples], None]) -> RTPEndpoint:
        """
        A new RTP endpoint with the bridge's codecs, for the caller to bind.
        """

    def attach_endpoint(self, name: str, endpoint: Endpoint, origin: str = "runtime") -> str:
        """
        List a run-time endpoint for status, metrics and listen-in.
        """

    def detach_endpoint(self, name: str, endpoint: Optional[Endpoint] = None) -> bool:
        """
        Stop listing it; its counts stay in the totals.
        """

    def open_room(
        self,
        names: tuple[str, str],
        languages: tuple[str, str],
        endpoints: tuple[Endpoint, Endpoint],
        call_id: Optional[str] = None,
        channels: Optional[tuple[str, str]] = None,
    ) -> Room:
        """
        Pair two endpoints; the room starts their calls.
        """

    def close_room(self, room: Room, reason: str = "hangup") -> None:
        """
        End the room's call and forget the room.
        """
