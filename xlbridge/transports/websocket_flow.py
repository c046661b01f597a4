"""
How much audio waits in Asterisk's chan_websocket queue, sans I/O.

Asterisk owns the playout clock of a WebSocket channel: it re-frames what
the app sends into ``optimal_frame_size`` frames, queues them, and a timer
hands one frame to the core every ``ptime`` ms (PROTOCOLS.md 10.2).  So the
app does not pace; it keeps the queue topped up.  It cannot see the queue,
though (``GET_STATUS`` is a round trip), so :class:`PeerQueue` models it:
every frame sent joins the queue at the time it is sent, and the queue
plays one frame per ``ptime`` from then on, so what is left queued at time
*t* is ``drain_at - t``, where ``drain_at`` is when everything sent so far
will have played.

Why this is a good enough picture, and how it stays one:

- Asterisk's timer has its own phase: a frame sent to an empty queue waits
  up to one ptime for the next tick, so the real queue is at most one frame
  longer than modelled.
- Anything that makes Asterisk play slower than modelled only ever makes
  the model *too short*, so the owner corrects it forward when it learns
  the truth: a STATUS reply (``queue_length`` frames, :meth:`resync`), a
  mark processed later than modelled (:meth:`mark_processed`), MEDIA_XOFF
  (at least 900 frames), or bytes still waiting on our side of the socket
  (:meth:`stall`: they cannot have been played).
- While XOFF holds, nothing is wanted at all; XOFF time is counted.

The owner asks :meth:`room` how many frames it may send now: up to
``lookahead_ms`` of queue for speech, but only ``filler_ms`` for comfort
noise or silence, so filler queued ahead can delay speech that arrives
next by ``filler_ms`` at most.  Times are reactor seconds, durations ms.
"""

from __future__ import annotations

from typing import Optional

#: Tolerance of :meth:`PeerQueue.room`, in ms: an egress tick that comes a
#: hair early must not find the queue a hair too full and send nothing.
SLACK_MS = 1.0


class PeerQueue:
    """
    The modelled queue of one WebSocket channel.

    :param ptime_ms: milliseconds each frame plays for (MEDIA_START ``ptime``).
    :param lookahead_ms: most audio queued ahead when sending speech.
    :param filler_ms: most audio queued ahead when sending filler.

    :ivar xoff: Asterisk said MEDIA_XOFF and not yet MEDIA_XON.
    :ivar xoff_seconds: total time spent in XOFF (closed spells only; see
        :meth:`xoff_total`).
    """

    def __init__(self, ptime_ms: int = 20, lookahead_ms: int = 200, filler_ms: int = 40) -> None:
        if ptime_ms <= 0:
            raise ValueError(f"ptime must be positive, got {ptime_ms}")
        if not 0 <= filler_ms <= lookahead_ms:
            raise ValueError(f"need 0 <= filler ({filler_ms} ms) <= lookahead ({lookahead_ms} ms)")
        self.ptime_ms = ptime_ms
        self.lookahead_ms = lookahead_ms
        self.filler_ms = filler_ms
        self._drain_at = 0.0
        self.xoff = False
        self._xoff_since: Optional[float] = None
        self.xoff_seconds = 0.0

    def queued_ms(self, now: float) -> float:
        """
        Audio sent and, as far as we know, not yet played, in ms.
        """
        return max(0.0, self._drain_at - now) * 1000.0

    def room(self, now: float, speech: bool = True) -> int:
        """
        Frames that may be sent now: none during XOFF, else as many as fit
        under the lookahead (``filler_ms`` for filler).
        """
        if self.xoff:
            return 0
        limit = self.lookahead_ms if speech else self.filler_ms
        free = limit - self.queued_ms(now) + SLACK_MS
        return max(0, int(free // self.ptime_ms))

    def sent(self, now: float, frames: float) -> None:
        """
        ``frames`` frames (a fraction for a short one) were just written.
        """
        self._drain_at = max(self._drain_at, now) + frames * self.ptime_ms / 1000.0

    def stall(self, now: float, unsent_ms: float) -> None:
        """
        ``unsent_ms`` of audio is still on our side of the connection: the
        queue cannot drain before it has even arrived.
        """
        self._drain_at = max(self._drain_at, now + unsent_ms / 1000.0)

    def resync(self, now: float, frames: int) -> None:
        """
        Asterisk reported ``frames`` queued (STATUS): believe it.
        """
        self._drain_at = now + frames * self.ptime_ms / 1000.0

    def mark_processed(self, now: float, modelled_at: float) -> None:
        """
        A mark sent when the model said the queue would drain at
        ``modelled_at`` came back at ``now``: if that is later, Asterisk
        plays later than modelled (a pause, a late timer), by that much.
        """
        late = now - modelled_at
        if late > 0:
            self._drain_at += late

    @property
    def drain_at(self) -> float:
        """
        Reactor time by which everything sent so far will have played.
        """
        return self._drain_at

    def flush(self, now: float) -> float:
        """
        FLUSH_MEDIA was sent: the queue is empty.  Returns the ms of audio
        that were still queued (dropped, never heard).
        """
        dropped = self.queued_ms(now)
        self._drain_at = now
        return dropped

    def set_xoff(self, now: float, frames: int) -> None:
        """
        MEDIA_XOFF: Asterisk holds at least ``frames`` frames; stop.
        """
        if not self.xoff:
            self.xoff = True
            self._xoff_since = now
        self.stall(now, frames * self.ptime_ms)

    def set_xon(self, now: float) -> None:
        """
        MEDIA_XON: sending may resume (the lookahead still applies).
        """
        if self.xoff and self._xoff_since is not None:
            self.xoff_seconds += now - self._xoff_since
        self.xoff = False
        self._xoff_since = None

    def xoff_total(self, now: float) -> float:
        """
        Seconds spent in XOFF so far, the current spell included.
        """
        if self._xoff_since is not None:
            return self.xoff_seconds + now - self._xoff_since
        return self.xoff_seconds
