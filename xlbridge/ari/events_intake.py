"""
What the ARI events socket does with each message it received: hand an
event to the owner's handler and count it, or count and log a malformed one.

Kept apart from :class:`~xlbridge.ari.events.ARIEvents`, which owns the
connection (attempts, backoff, liveness, refusals): receiving is the same
whatever the connection's state, and its counters outlive every connection.

* **Malformed events.**  Checked by :mod:`xlbridge.ari.event_checks`
  before they get here: a malformed message is one counted drop and a
  throttled warning, never an exception.
* **Handler failures.**  An exception from the owner's handler is logged
  (throttled, with its traceback), never raised into the socket's
  protocol: the next event is handled as usual.
* **Throttled.**  A peer that sends one bad event usually sends many: one
  line per 10 s each for drops and for handler failures
  (:class:`~xlbridge.logthrottle.LogThrottle`), the counts exact.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xlbridge.ari.event_checks import EventCounts, Rejected
from xlbridge.logthrottle import LogThrottle

__all__ = ["EventHandler", "EventIntake"]

#: Called with each event (a decoded JSON object) that passed the checks.
EventHandler = Callable[[dict[str, Any]], None]


class EventIntake:
    """
    Hand events to ``on_event``, count them and the malformed messages (see
    the module's notes).

    :param on_event: the owner's handler.
    :param log: the owner's logger (lines appear under its name).
    :param clock: times the log throttles.

    :ivar counts: an :class:`~xlbridge.ari.event_checks.EventCounts`, never
        reset.
    """

    def __init__(self, on_event: EventHandler, log: Logger, clock: Optional[IReactorTime]) -> None:
        self.on_event = on_event
        self.counts = EventCounts()
        self._malformed_log = LogThrottle(log, clock)
        self._handler_log = LogThrottle(log, clock)

    def event(self, event: dict[str, Any]) -> None:
        """Count ``event`` and hand it to the handler; log its failure."""
        self.counts.accepted(event)
        try:
            self.on_event(event)
        except Exception:
            self._handler_log.failure("ARI event handler failed for {type}", type=event.get("type"))

    def malformed(self, rejected: Rejected, payload: bytes) -> None:
        """Count and (throttled) log a message :func:`~xlbridge.ari.event_checks.parse_event` rejected."""
        self.counts.rejected(rejected)
        self._malformed_log.warn("ARI sent a malformed event ({why}): {p!r}", why=rejected.why, p=payload[:120])

    def flush(self) -> None:
        """Log what the throttles held back (the service is stopping)."""
        self._malformed_log.flush()
        self._handler_log.flush()
