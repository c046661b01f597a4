"""
What one caller hears: a :class:`Playout` per leg, built by the call.

Each direction of a call has exactly two seams with the other one, both
about a listener, and both go through that listener's :class:`Playout`:

- direction A->B *writes* what B hears: B's voice relayed into B's plain
  buffer, or translated speech into B's :class:`~xlbridge.audio.mix.OutputMix`,
  noting each played utterance in B's :attr:`Playout.heard`;
- direction B->A *reads* what B is being played, for its echo guard
  (:attr:`Playout.playing_speech` and :attr:`Playout.heard`): B's microphone
  may pick it up again.

:class:`~xlbridge.call.service.CallService` builds both playouts when the
call starts, from what its pipeline factory says each listener hears
(:class:`SpeechOutput`, or ``None`` for a relay), and hands each one to
both directions; no pipeline reaches into the other leg.  The egress clock
reads the playout's output and filler through the leg, every 20 ms.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Optional, Protocol

import attrs
from twisted.internet.interfaces import IReactorTime

from xlbridge.audio.buffer import OutboundBuffer
from xlbridge.audio.frame import Samples
from xlbridge.audio.mix import ComfortNoise, OutputMix, SpeechQueue

#: Played utterances remembered per listener (start and end of each).
HEARD_KEEP = 32


class OutputSource(Protocol):
    """
    Where a leg's outbound audio comes from: a plain bounded buffer in
    relay mode, an :class:`~xlbridge.audio.mix.OutputMix` when translating.
    """

    @property
    def dropped_samples(self) -> int: ...

    @property
    def depth_ms(self) -> float: ...

    @property
    def trimmed_samples(self) -> int:
        """
        Of the dropped samples, those cut because they stood as delay.
        """

    def write(self, samples: Samples) -> int: ...

    def read_frame(self) -> Optional[Samples]: ...

    @property
    def ahead_samples(self) -> int:
        """
        Samples of audio made ahead of time (translated speech) waiting to
        be read; live audio, which arrives as it is spoken, is not counted.
        """

    def idle(self) -> None:
        """
        Called every tick while the listener's transport cannot send: drop
        live audio (counted) so it never stands as delay once it can.
        """

    def clear(self) -> None: ...


@attrs.frozen
class SpeechOutput:
    """
    How a listener hears translated speech: the settings of its
    :class:`~xlbridge.audio.mix.OutputMix` and comfort noise.

    :ivar backlog_s: most seconds of pending translated speech.
    :ivar live_ms: bound of the partner's live-voice buffer (fallback, bed).
    :ivar bed_db: level of the partner's voice under translations, or
        ``None`` for no bed.
    :ivar gain_db: output gain of everything but comfort noise.
    :ivar comfort_noise_dbfs: comfort noise level, or ``None`` for digital
        silence between translations.
    """

    backlog_s: float = 10.0
    live_ms: int = 200
    bed_db: Optional[float] = None
    gain_db: float = 0.0
    comfort_noise_dbfs: Optional[float] = -60.0


@attrs.define(eq=False)
class Playout:
    """
    What one caller hears, and the translated speech they were played.

    Build one with :meth:`relay` or :meth:`speech`.

    :ivar output: what the egress clock reads one frame of per tick; the
        direction towards this caller writes into it.
    :ivar filler: a frame for ticks when ``output`` has nothing (comfort
        noise, sent without the RTP marker); ``None`` sends digital silence.
    :ivar mix: ``output`` itself when this caller hears translated speech,
        else ``None`` (they hear the partner's voice, relayed).
    :ivar heard: ``(time, text)`` of translated speech this caller was
        played recently (each utterance at its start and at its end); the
        echo guard of the direction *from* this caller compares the
        caller's transcripts to it.
    """

    def on_audio(self, callback: Optional[Callable[[], None]]) -> None:
        """
        Have ``callback`` called whenever audio for this caller arrives
        (the partner's voice, translated speech), so a transport that sends
        ahead can send it at once; ``None`` stops it.
        """
        mix = self.mix
        if mix is not None:
            mix.speech.on_audio = callback
            mix.live.on_write = callback
        elif isinstance(self.output, OutboundBuffer):
            self.output.on_write = callback

    def when_heard(self, now: float, callback: Callable[[float], None], current: bool = False) -> None:
        """
        Call ``callback(time)`` with when the caller hears what was read so
        far (and the frame being read now, if ``current``): at once with
        ``now`` when frames are sent as they are read, else when the
        transport's peer reports it played that far.
        """
        hook = self.after_queued
        if hook is None:
            callback(now)
        else:
            hook(now, callback, current)

    output: OutputSource
    filler: Optional[Callable[[], Samples]] = None
    mix: Optional[OutputMix] = None
    heard: deque[tuple[float, str]] = attrs.field(factory=lambda: deque(maxlen=HEARD_KEEP))
    #: Set by the leg while its transport's peer keeps the playout clock
    #: (WebSocket media, sent ahead): ``after_queued(now, callback,
    #: current)`` calls ``callback(time)`` once the caller has heard
    #: everything read so far, and the frame being read right now too if
    #: ``current``.  ``None``: each frame read is sent at once, heard now.
    after_queued: Optional[Callable[[float, Callable[[float], None], bool], None]] = None

    @classmethod
    def relay(cls, buffer_ms: int) -> "Playout":
        """
        The caller hears the partner's own voice through a bounded buffer
        of ``buffer_ms`` (drop oldest), and digital silence when it is
        empty.
        """
        return cls(OutboundBuffer(buffer_ms))

    @classmethod
    def speech(cls, settings: SpeechOutput, clock: IReactorTime) -> "Playout":
        """
        The caller hears translated speech, mixed as ``settings`` say, with
        comfort noise between utterances; ``clock`` dates when each
        utterance starts playing.
        """
        mix = OutputMix(
            SpeechQueue(settings.backlog_s), clock.seconds, settings.live_ms, settings.bed_db, settings.gain_db
        )
        dbfs = settings.comfort_noise_dbfs
        return cls(mix, ComfortNoise(dbfs) if dbfs is not None else None, mix)

    @property
    def playing_speech(self) -> bool:
        """
        Translated speech is playing to this caller right now (an utterance
        has started and not finished).
        """
        mix = self.mix
        return mix is not None and mix.speech.playing

    @property
    def speech_waiting(self) -> bool:
        """
        Translated speech is queued for this caller: audio made ahead of
        time, which a transport whose peer keeps time may send far ahead.
        """
        return self.output.ahead_samples > 0

    def played(self, time: float, text: str) -> None:
        """
        Note that this caller was played ``text`` at ``time`` (reactor
        seconds), for the echo guard.
        """
        self.heard.append((time, text))

    def clear(self) -> None:
        """
        The call ended: drop what was still to play and forget what was
        played (not counted as drops).
        """
        self.output.clear()
        self.heard.clear()
