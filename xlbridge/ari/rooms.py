"""
The ARI controller's bookkeeping: callers, the rooms that pair them, and
the Stasis arguments that say which room (``room=R,lang=L`` or
``dial=ENDPOINT,lang=L,peer_lang=P``).
"""

from __future__ import annotations

from typing import Optional

import attrs
from twisted.internet.interfaces import IListeningPort

from xlbridge.call.service import CallService
from xlbridge.transports.audiosocket import AudioSocketEndpoint
from xlbridge.transports.rtp import RTPEndpoint


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
class Caller:
    """
    One caller's channel and what xlbridge created for it.
    """

    channel_id: str
    name: str
    room: str
    lang: str
    bridge_id: Optional[str] = None
    media_id: Optional[str] = None
    port: Optional[int] = None
    endpoint: Optional[RTPEndpoint | AudioSocketEndpoint] = None
    listening: Optional[IListeningPort] = None
    #: AudioSocket media: the UUID its connection announces
    media_uuid: Optional[str] = None
    ready: bool = False
    gone: bool = False


@attrs.define(eq=False)
class Room:
    """
    Up to two callers paired by room name, and their call while it runs.
    """

    name: str
    callers: list[Caller] = attrs.Factory(list)
    call: Optional[CallService] = None
