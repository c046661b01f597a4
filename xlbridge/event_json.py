"""
The JSON form of an event, shared by the ``--events`` transcript file
(:mod:`xlbridge.eventlog`) and the monitor's live feed
(:mod:`xlbridge.monitor.live`).

It lives apart from the event classes (:mod:`xlbridge.events`) so that
module stays the plain list of what observers receive, and so both
writers agree on one record shape: the event's fields plus ``"event"``
(the class name), tuples as lists, floats rounded to 3 decimals (1 ms
for times and durations in seconds, 1 µs for the ``*_ms`` latencies).
"""

from __future__ import annotations

from typing import Any

import attrs

from xlbridge.events import Event


def event_to_dict(event: Event) -> dict[str, Any]:
    """
    Serialise an event for JSON lines and the monitor: its fields plus
    ``"event"``, the class name.
    """
    d: dict[str, Any] = {"event": type(event).__name__}
    d.update(attrs.asdict(event, recurse=False))
    for k, v in d.items():
        if isinstance(v, tuple):
            d[k] = list(v)
        elif isinstance(v, float):
            d[k] = round(v, 3)
    return d
