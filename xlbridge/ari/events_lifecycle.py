"""
The states of the ARI events socket and how it moves between them.

Kept apart from :class:`~xlbridge.ari.events.ARIEvents`, which makes the
moves, so that what reads the state (the monitor, the tests) depends on
this small enum, not on the service.  Why each move
happens (backoff, start-up requests, refusals, liveness) is in the notes of
:mod:`xlbridge.ari.events`.

Lifecycle (``ARIEvents.state``)::

    stopped --start--> connecting --upgrade 101--> preparing --on_connect done--> up
                          ^   |                      |  ^   |                      |
                          |   | refused, DNS,        |  |   | REST 5xx, timeout:   |
                          |   | timeout, HTTP 5xx    |  +---+ retried, socket open |
                          |   v                      v                             v
                          +-- backoff <-------- closed ------------------------- closed
    connecting, preparing, up --HTTP 401/403 (upgrade or any REST request)--> refused
    refused --refused_delay--> connecting
    any --stopService--> stopped
"""

from __future__ import annotations

import enum

__all__ = ["State"]


class State(enum.StrEnum):
    """
    State of an :class:`~xlbridge.ari.events.ARIEvents` (see the module's
    diagram); its value is what the status shows.
    """

    STOPPED = "stopped"
    CONNECTING = "connecting"
    PREPARING = "preparing"
    UP = "up"
    BACKOFF = "backoff"
    REFUSED = "refused"
