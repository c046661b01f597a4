"""
The seams of xlbridge, as small zope Interfaces.

The media core (legs, the egress clock, calls) knows nothing of wire formats
or engines.  Transports (RTP now, AudioSocket later) implement
:class:`ILegTransport`; per-leg processing (relay now, translation later)
implements :class:`IPipeline`; speech engines implement :class:`IASR`,
:class:`IMT` and :class:`ITTS`.  The interfaces exist so that wiring mistakes
(a swapped argument, a missing method) fail loudly in tests via
``verifyObject``.

All audio crossing these interfaces is internal audio: 16 kHz mono int16,
native byte order (:mod:`xlbridge.audio.frame`).
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class ILegTransport(Interface):
    """
    Moves one leg's audio frames in and out over some wire.

    Inbound, a transport decodes what arrives and hands internal audio to the
    callable it was given.  Outbound, the egress clock calls
    :meth:`send_frame` exactly once per 20 ms tick while :attr:`ready`.
    """

    kind = Attribute("Short transport name for status pages: 'rtp', 'audiosocket'.")
    ready = Attribute("True while there is a peer to send to.")
    counters = Attribute("The leg's LegCounters (packets, bytes, drops by reason).")

    def send_frame(samples, speech=None):  # type: ignore[no-untyped-def]
        """
        Send one 20 ms frame (320 samples), or digital silence if
        ``samples`` is ``None``.  ``speech`` says whether the frame carries
        speech (for the RTP marker bit); by default, whether ``samples`` is
        given.  Never raises for network trouble: counts it.
        """

    def skip(ticks):  # type: ignore[no-untyped-def]
        """
        ``ticks`` packet intervals passed without a packet being sent (the
        reactor stalled); keep the media clock in step.
        """

    def reset():  # type: ignore[no-untyped-def]
        """
        The call using this transport ended: forget the peer and all stream
        state, so the next call starts afresh.
        """

    def describe():  # type: ignore[no-untyped-def]
        """
        A JSON-ready dict for status pages (kind, codecs, local and remote
        addresses).
        """


class IPipeline(Interface):
    """
    What happens to one caller's audio: relay it, or recognise, translate
    and speak it into the partner's outbound buffer.
    """

    def start():  # type: ignore[no-untyped-def]
        """
        The call started.
        """

    def audio_in(samples):  # type: ignore[no-untyped-def]
        """
        Decoded caller audio, in arrival order; called on the reactor thread
        and must return quickly (hand heavy work to a thread pool).
        """

    def stop():  # type: ignore[no-untyped-def]
        """
        The call ended: release engines.  May return a Deferred.
        """


class IASR(Interface):
    """
    Streaming speech recognition for one leg.
    """

    def feed(samples):  # type: ignore[no-untyped-def]
        """
        Push caller audio.  Interim and final transcripts are delivered to the
        listener given at construction.
        """

    def finish():  # type: ignore[no-untyped-def]
        """
        No more audio: flush final results.  Returns a Deferred.
        """


class IMT(Interface):
    """
    Machine translation.
    """

    def translate(text, source, target, context):  # type: ignore[no-untyped-def]
        """
        Translate ``text`` from language ``source`` to ``target``; ``context``
        is a list of earlier sentences of the same speaker.  Returns a
        Deferred firing with the translated text.
        """


class ITTS(Interface):
    """
    Streaming speech synthesis.
    """

    def synthesize(text, language, on_audio):  # type: ignore[no-untyped-def]
        """
        Speak ``text``; call ``on_audio(samples)`` with each chunk of internal
        audio as soon as it exists.  Returns a Deferred that fires when the
        utterance is complete.
        """
