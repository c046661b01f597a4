"""
Stasis rooms: the callers who asked for one room (Stasis arguments
``room=R,lang=L``, or ``dial=ENDPOINT,lang=L,peer_lang=P`` for a private
room with the callee), and the arguments' syntax.

A :class:`StasisRoom` holds up to two callers, in the order they came.
Once both are set up, the controller pairs them in a bridge
:class:`~xlbridge.room.Room` (the first caller's leg first), which starts
and restarts their calls; it is closed when either leaves.
"""

from __future__ import annotations

from typing import Optional

import attrs

from xlbridge.ari.caller import Caller
from xlbridge.call.service import CallService
from xlbridge.room import Room


def parse_args(args: list[str]) -> dict[str, str]:
    """
    ``["room=R,lang=en"]`` or ``["room=R", "lang=en"]`` -> ``{"room": "R", "lang": "en"}``.
    """
    out: dict[str, str] = {}
    for arg in args:
        for item in str(arg).split(","):
            key, sep, value = item.partition("=")
            if sep and key.strip():
                out[key.strip().lower()] = value.strip()
    return out


@attrs.define(eq=False)
class StasisRoom:
    """
    Up to two callers gathered by room name, and the room pairing them
    once both are set up.
    """

    name: str
    callers: list[Caller] = attrs.Factory(list)
    pairing: Optional[Room] = None

    @property
    def call(self) -> Optional[CallService]:
        """
        The callers' call while it runs.
        """
        return self.pairing.call if self.pairing is not None else None
