"""
What the partner hears of each translated utterance, and when: the
``PlaybackStarted`` and ``PlaybackEnded`` events (with the latency of each
stage) and the direction-sync observations, split out of
:mod:`xlbridge.pipeline.translate`.

On a transport that sends ahead (WebSocket media), a frame read for
sending is not yet heard: the playout says when Asterisk played it
(``when_heard``), and the events carry that time.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.interfaces import IReactorTime

from xlbridge.call.leg import Leg
from xlbridge.call.playout import Playout
from xlbridge.events import Event, PlaybackEnded, PlaybackStarted
from xlbridge.pipeline.pending import Pending
from xlbridge.pipeline.settings import DirectionSync

__all__ = ["PlaybackReporter"]


def _ms(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return (b - a) * 1000 if a is not None and b is not None else None


class PlaybackReporter:
    """
    Reports the playback of ``source``'s translated speech to ``partner``.
    """

    def __init__(
        self, call_id: str, source: Leg, partner: Leg, clock: IReactorTime, emit: Callable[[Event], None],
        partner_hears: Playout, sync: Optional[DirectionSync],
    ) -> None:
        self.call_id = call_id
        self.source, self.partner = source, partner
        self.clock = clock
        self.emit = emit
        self.partner_hears = partner_hears
        self.sync = sync

    def started(self, p: Pending) -> None:
        """``p``'s first frame was read for sending."""
        u = p.utterance
        self.partner_hears.when_heard(u.started_at or self.clock.seconds(), lambda t: self._heard_start(p, t))

    def _heard_start(self, p: Pending, now: float) -> None:
        u = p.utterance
        p.heard_at = now
        self.partner_hears.played(now, u.text)
        total = _ms(p.speech_end, now)
        if self.sync is not None and total is not None:
            held = _ms(p.first_audio, u.not_before) if u.not_before is not None else None
            self.sync.observe(self.source.extension, total, max(0.0, held or 0.0))
        self.emit(
            PlaybackStarted(
                self.call_id, self.partner.extension, self.source.extension, self.partner.language, u.text, u.uid, now,
                p.asr_ms, p.mt_ms, _ms(p.tts_started, p.first_audio), _ms(p.first_audio, now), total,
            )
        )

    def ended(self, p: Pending) -> None:
        """``p``'s last frame was read for sending."""
        u = p.utterance
        self.partner_hears.when_heard(self.clock.seconds(), lambda t: self._heard_end(p, t), current=u.ends_with_frame)

    def _heard_end(self, p: Pending, now: float) -> None:
        u = p.utterance
        self.partner_hears.played(now, u.text)
        self.emit(
            PlaybackEnded(
                self.call_id, self.partner.extension, self.source.extension, self.partner.language, u.text, u.uid,
                now, (now - (p.heard_at or u.started_at or now)) * 1000,
            )
        )
