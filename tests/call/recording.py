"""
Test doubles for the call core: a transport that records what the egress
clock sends, and a call context that records events.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.task import Clock
from zope.interface import implementer

from xlbridge.audio.frame import Samples
from xlbridge.events import Event, LegCounters
from xlbridge.interfaces import ILegTransport


@implementer(ILegTransport)
class RecordingTransport:
    """
    An :class:`ILegTransport` with no wire: ``sent`` holds ``(samples,
    speech)`` per frame, ``skipped`` the skip calls, ``resets`` the resets.
    """

    kind = "recording"

    def __init__(self, ready: bool = True, line_open: bool = False) -> None:
        self.ready = ready
        self.line_open = line_open
        self.counters = LegCounters()
        self.sent: list[tuple[Optional[Samples], Optional[bool]]] = []
        self.skipped: list[int] = []
        self.resets = 0

    def send_frame(self, samples: Optional[Samples], speech: Optional[bool] = None) -> None:
        self.sent.append((samples, speech))

    def skip(self, ticks: int) -> None:
        self.skipped.append(ticks)

    def reset(self) -> None:
        self.resets += 1

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def take(self) -> list[tuple[Optional[Samples], Optional[bool]]]:
        sent, self.sent = self.sent, []
        return sent


class RecordingContext:
    """
    A :class:`~xlbridge.call.context.CallContext` without a call: a fixed
    id, a ``Clock``, and the events in ``events``.
    """

    def __init__(self, call_id: str = "call-1", clock: Optional[Clock] = None) -> None:
        self.call_id = call_id
        self.clock = clock if clock is not None else Clock()
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)
