"""
The bookkeeping of one utterance between its final transcript and its
playback: the texts, languages and timestamps the translation pipeline
needs to report what happened to it and how long each stage took.

Kept apart from :mod:`xlbridge.pipeline.translate` because it is plain data
read at every stage (MT, TTS, direction sync, playback events), with no
behaviour of its own.  Times are reactor-clock seconds (the call's clock,
so stream positions dated by :class:`~xlbridge.pipeline.timeline.Timeline`
compare with them); durations are milliseconds, as in the events that carry
them (:class:`~xlbridge.events.PlaybackStarted`).
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
from twisted.internet.defer import Deferred

from xlbridge.audio.mix import Utterance

__all__ = ["Pending"]


@attrs.define
class Pending:
    """
    Bookkeeping of one utterance on its way through MT and TTS.

    :ivar utterance: its place in the listener's speech queue, taken when
        the text was final (it gets the translation and the audio).
    :ivar source_text: what the speaker said (the final transcript).
    :ivar speech_end: when the speech ended, clock seconds, or ``None``.
    :ivar asr_ms: from the end of speech to the final transcript.
    :ivar mt_ms: how long MT took (``None`` when nothing was translated).
    :ivar tts_started: when TTS was asked, clock seconds.
    :ivar first_audio: when TTS delivered its first audio, clock seconds.
    :ivar sync_target: the direction-sync target it was held to, ms.
    :ivar source_language: the language it was translated from.
    :ivar target_language: the language it was translated into.
    :ivar heard_at: when the listener heard its first frame, clock seconds
        (later than the utterance's ``started_at`` on a transport that
        sends ahead), or ``None`` before.
    :ivar work: its MT and TTS requests in flight (a withdrawn speculation
        cancels them).
    """

    utterance: Utterance
    source_text: str
    speech_end: Optional[float]
    asr_ms: Optional[float]
    mt_ms: Optional[float] = None
    tts_started: Optional[float] = None
    first_audio: Optional[float] = None
    sync_target: Optional[float] = None
    source_language: str = ""
    target_language: str = ""
    heard_at: Optional[float] = None
    work: "set[Deferred[Any]]" = attrs.Factory(set)
