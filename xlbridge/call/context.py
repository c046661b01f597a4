"""
What a pipeline may know of the call it runs in.

A pipeline factory gets the call as a :class:`CallContext`, not as a
:class:`~xlbridge.call.service.CallService`: the id to put in events, the
clock to date and schedule with, and where events go.  A test can hand a
pipeline three plain attributes instead of a running call.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IReactorTime

from xlbridge.events import Event


class CallContext(Protocol):
    """
    The call a pipeline belongs to.
    """

    @property
    def call_id(self) -> str:
        """
        The call's unique id, carried by every event of the call.
        """

    @property
    def clock(self) -> IReactorTime:
        """
        The reactor's time: ``seconds()`` dates events and latencies,
        ``callLater`` schedules.
        """

    def emit(self, event: Event) -> None:
        """
        Deliver ``event`` to the bridge's observers (never raises).
        """
