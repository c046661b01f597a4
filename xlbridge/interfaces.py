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
    :meth:`send_frame` exactly once per 20 ms tick while :attr:`ready`,
    unless the transport also provides :class:`IPeerPacedTransport` (the
    peer keeps time; the leg keeps it filled instead).
    """

    kind = Attribute("Short transport name for status pages: 'rtp', 'audiosocket', 'websocket'.")
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


class IPeerPacedTransport(ILegTransport):
    """
    A leg transport whose peer owns the playout clock (Asterisk's
    chan_websocket queues what it gets and plays one frame per 20 ms).

    Such a transport is not paced by the egress clock.  On each tick the
    leg fills it instead: it asks :meth:`frames_wanted`, reads up to that
    many frames from the caller's output and sends them with
    :meth:`send_frames`; only when the output ran dry does it ask
    :meth:`filler_wanted` and send that many filler frames (comfort noise,
    or digital silence).

    Only audio made ahead of time may go far ahead: translated speech
    waiting in the listener's queue (``ahead``) is sent up to the full
    lookahead, so a pause of this machine does not reach the caller.
    Everything that arrives live (the partner's relayed voice, the voice
    bed) or is made up (filler) stays within the shallow lookahead: a frame
    queued ahead of live audio is a frame of delay for the rest of the
    call, and filler queued ahead delays the speech that comes next.
    Speech queued at the peer can still be cut (:meth:`flush`) when an
    utterance is dropped.
    """

    lookahead_ms = Attribute("Most speech made ahead of time queued at the peer, in ms.")
    filler_lookahead_ms = Attribute("Most live audio or filler queued ahead at the peer, in ms.")

    def frames_wanted(ahead: bool) -> int:
        """
        How many 20 ms frames may be sent now: of audio made ahead of time
        (``ahead``), or live audio and filler.  0 while the peer cannot
        take more (full, XOFF, our own send buffers backed up) or the
        transport is not ready.
        """

    def filler_wanted() -> int:
        """
        Filler frames (comfort noise, digital silence) to send now, when
        the output has nothing: only to keep the peer from running dry
        while no audio comes, never so much that audio would queue behind
        it.
        """

    def send_frames(frames: list[Optional[Samples]], speech: bool, ahead: Optional[bool] = None) -> None:
        """
        Send ``frames`` (320 samples each, ``None`` = digital silence), in
        order, batched into as few messages as the wire allows; ``speech``
        says whether they are audio or filler, ``ahead`` (default:
        ``speech``) which lookahead bounds them.  Never raises for network
        trouble: counts it.
        """

    def flush() -> None:
        """
        Drop everything queued at the peer and not yet played (an utterance
        was cut); counted.
        """

    def mark(correlation_id: Optional[str] = None, then: Optional[Any] = None) -> Optional[str]:
        """
        Put a mark behind everything sent so far; ``then(time)`` is called
        when the peer has played up to it (never, if a :meth:`flush` came
        first).  Returns the mark's id, or ``None`` when not connected.
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
