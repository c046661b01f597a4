"""
The seams of xlbridge, as small zope Interfaces.

The media core (legs, the egress clock, calls) knows nothing of wire formats
or engines.  Transports (RTP and AudioSocket) implement
:class:`ILegTransport`; per-leg processing (relay and translation)
implements :class:`IPipeline`.  The interfaces exist so that wiring mistakes
(a swapped argument, a missing method) fail loudly in tests via
``verifyObject``.  Speech engines are typed with the ``typing.Protocol``
classes of :mod:`xlbridge.engines.base` (``ASR``, ``MT``, ``TTS``), which
is what the pipelines are written against.

All audio crossing these interfaces is internal audio: 16 kHz mono int16,
native byte order (:mod:`xlbridge.audio.frame`).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from xlbridge.audio.frame import Samples


class ILegTransport(Interface):
    """
    Moves one leg's audio frames in and out over some wire.

    Inbound, a transport decodes what arrives and hands internal audio to the
    callable it was given.  Outbound, the egress clock calls
    :meth:`send_frame` exactly once per 20 ms tick while :attr:`ready`.
    """

    kind = Attribute("Short transport name for status pages: 'rtp', 'audiosocket'.")
    ready = Attribute("True while there is a peer to send to.")
    line_open = Attribute(
        "True while a connection holds the call open whether or not audio flows "
        "(an AudioSocket leg with its UUID); always False for RTP, whose calls end "
        "after call-timeout without audio."
    )
    counters = Attribute("The leg's LegCounters (packets, bytes, drops by reason).")

    def send_frame(samples: Optional[Samples], speech: Optional[bool] = None) -> None:
        """
        Send one 20 ms frame (320 samples), or digital silence if
        ``samples`` is ``None``.  ``speech`` says whether the frame carries
        speech (for the RTP marker bit); by default, whether ``samples`` is
        given.  Never raises for network trouble: counts it.
        """

    def skip(ticks: int) -> None:
        """
        ``ticks`` packet intervals passed without a packet being sent (the
        reactor stalled); keep the media clock in step.
        """

    def reset() -> None:
        """
        The call using this transport ended: forget the peer and all stream
        state, so the next call starts afresh.
        """

    def describe() -> dict[str, Any]:
        """
        A JSON-ready dict for status pages (kind, codecs, local and remote
        addresses).
        """


class IPipeline(Interface):
    """
    What happens to one caller's audio: relay it, or recognise, translate
    and speak it into the partner's outbound buffer.
    """

    def start() -> None:
        """
        The call started.
        """

    def audio_in(samples: Samples) -> None:
        """
        Decoded caller audio, in arrival order; called on the reactor thread
        and must return quickly (hand heavy work to a thread pool).
        """

    def stop() -> Optional["Deferred[None]"]:
        """
        The call ended: release engines.  May return a Deferred.
        """
