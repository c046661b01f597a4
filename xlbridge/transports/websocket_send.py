"""
The outbound half of a WebSocket media leg: what goes to Asterisk, how
far ahead, and the marks that say when it was played.

Kept apart from :mod:`xlbridge.transports.websocket` (the connection) and
:mod:`xlbridge.transports.websocket_inbound` (the inbound audio and the
control events) because it is the part that decides
delay: a :class:`MediaSender` owns the model of Asterisk's queue
(:class:`~xlbridge.transports.websocket_flow.PeerQueue`), the output
resampler, the bytes short of a whole frame, and the pending marks.  It
writes through two callables its endpoint gives it, so it holds no
connection of its own and a test can drive it with lists.

- :meth:`MediaSender.frames_wanted`: how many 20 ms frames fit under the
  lookahead now (``ahead``: translated speech, made ahead of time) or the
  shallow one (live audio and filler); bytes still unsent on our side of
  the socket count as queued, since Asterisk cannot have played them.
- :meth:`MediaSender.send_frames`: resample and encode (little-endian for
  slin), cut into whole ``optimal_frame_size`` frames (the remainder waits
  for the next call: Asterisk drops a partial frame outside media
  buffering), at most :data:`~xlbridge.transports.websocket_media.MAX_MESSAGE`
  bytes per BINARY message.
- :meth:`MediaSender.mark` / :meth:`MediaSender.mark_processed`:
  MARK_MEDIA and its MEDIA_MARK_PROCESSED, with the callback waiting on
  it; a mark that comes back later than modelled moves the model later.
- :meth:`MediaSender.flush`: FLUSH_MEDIA; what the model still held is
  counted in ``flushed_bytes``, pending marks die (as in Asterisk).
- Filler (comfort noise, digital silence) only keeps Asterisk's queue from
  running dry while no audio comes (:meth:`MediaSender.filler_wanted`):
  none while audio flows (the partner's voice arrives every 20 ms and is
  sent as it arrives: a filler frame between two would stand as 20 ms of
  delay for the rest of the talkspurt), at most one frame ahead otherwise.
  When audio comes while only filler waits in Asterisk, that filler is
  flushed first, so speech never queues behind noise (not while a mark is
  pending: a flush would lose it).
"""

from __future__ import annotations

import itertools
from typing import Callable, Optional

from twisted.logger import Logger

from xlbridge.audio.frame import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, Samples, silence
from xlbridge.audio.resample import StreamResampler
from xlbridge.events import DropReason, LegCounters
from xlbridge.logthrottle import LogThrottle
from xlbridge.transports.websocket_flow import PeerQueue
from xlbridge.transports.websocket_media import MAX_MESSAGE, MediaFormat, encode_audio

__all__ = ["MediaSender"]


class MediaSender:
    """
    What one WebSocket leg sends, for one stream (a MEDIA_START).

    :param name: the leg, for log lines.
    :param fmt: the channel's media format.
    :param frame_bytes: Asterisk's ``optimal_frame_size``.
    :param ptime_ms: Asterisk's ``ptime``.
    :param counters: the leg's counters (bytes and packets out, drops,
        flushed bytes, marks).
    :param clock: ``seconds()`` for the queue model.
    :param send_binary: writes one BINARY message; may raise.
    :param send_command: sends one control command ``(name, id)``;
        false if it could not.
    :param send_log: the endpoint's throttle for failed sends.
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        fmt: MediaFormat,
        frame_bytes: int,
        ptime_ms: int,
        counters: LegCounters,
        clock: Callable[[], float],
        send_binary: Callable[[bytes], None],
        send_command: Callable[[str, Optional[str]], bool],
        send_log: LogThrottle,
        lookahead_ms: int = 200,
        filler_lookahead_ms: int = 40,
    ) -> None:
        self.name = name
        self.format = fmt
        self.frame_bytes = frame_bytes
        self.counters = counters
        self.clock = clock
        self.send_binary = send_binary
        self.send_command = send_command
        self.send_log = send_log
        self.queue = PeerQueue(ptime_ms, lookahead_ms, filler_lookahead_ms)
        self.messages_out = 0
        self._out = StreamResampler(SAMPLE_RATE, fmt.rate)
        self._carry = b""  # bytes short of a whole optimal frame
        self._marks: dict[str, float] = {}  # id -> modelled drain time when sent
        self._then: dict[str, Callable[[float], None]] = {}
        self._ids = itertools.count(1)
        self._silence = silence(FRAME_SAMPLES)
        #: when the last audio (not filler) was sent; -inf before any
        self._last_audio = float("-inf")
        #: when the filler queued behind the last audio starts to play, or
        #: ``None`` when no filler is queued
        self._filler_from: Optional[float] = None
        #: filler flushes (audio came while only filler was queued)
        self.filler_flushes = 0

    @property
    def marks_pending(self) -> int:
        return len(self._marks)

    def frames_wanted(self, ahead: bool, unsent_bytes: Callable[[], int] = lambda: 0) -> int:
        """
        Frames that may be sent now (see the module notes);
        ``unsent_bytes()`` says how many still wait on our side of the
        connection.  It is a system call, so it is asked only when the
        model has room (not on every tick of a full queue).
        """
        now = self.clock()
        room = self.queue.room(now, ahead)
        if room:
            unsent = unsent_bytes()
            if unsent:
                self.queue.stall(now, unsent * self.queue.ptime_ms / self.frame_bytes)
                room = self.queue.room(now, ahead)
        return room

    def filler_wanted(self) -> int:
        """
        Filler frames to send now: 0 while audio flows (some was sent less
        than a ptime ago) or at least a ptime is still queued; else 1.
        """
        now = self.clock()
        ptime = self.queue.ptime_ms / 1000.0
        if self.queue.xoff or now - self._last_audio < ptime:
            return 0
        return 1 if self.queue.queued_ms(now) < self.queue.ptime_ms else 0

    def send_frames(self, frames: list[Optional[Samples]], speech: bool, room: int) -> None:
        """
        Send up to ``room`` of ``frames`` (internal 20 ms frames, ``None`` =
        digital silence); the rest is dropped and counted
        (``websocket_full``).  ``speech`` false: they are filler (counted as
        silence, flushed when audio comes).
        """
        now = self.clock()
        if speech:
            start = self._filler_from
            if start is not None and start <= now and not self._marks and self.queue.queued_ms(now) > 0:
                # Only filler waits (the audio before it has played): drop
                # it, so this audio plays at Asterisk's next tick.
                self.queue.flush(now)
                self._carry = b""
                self.filler_flushes += 1
                self.send_command("FLUSH_MEDIA", None)
                room = max(room, self.queue.room(now, False))
            self._filler_from = None
            self._last_audio = now
        elif self._filler_from is None:
            self._filler_from = max(now, self.queue.drain_at)
        counters = self.counters
        if len(frames) > room:
            counters.drop(DropReason.WEBSOCKET_FULL, len(frames) - room)
            frames = frames[:room]
            if not frames:
                return
        out, fmt = self._out, self.format
        data = self._carry + b"".join(
            encode_audio(fmt, out.process(f if f is not None else self._silence)) for f in frames
        )
        size = self.frame_bytes
        whole = len(data) // size * size
        self._carry = data[whole:]
        step = MAX_MESSAGE // size * size
        for i in range(0, whole, step):
            chunk = data[i : i + step]
            try:
                self.send_binary(chunk)
            except Exception as e:
                counters.drop(DropReason.ERROR)
                self.send_log.warn("{ext}: WebSocket send failed: {err}", ext=self.name, err=e)
                return
            self.messages_out += 1
            n = len(chunk) // size
            self.queue.sent(self.clock(), n)
            counters.bytes_out += len(chunk)
            counters.packets_out += n
            if not speech:
                counters.silence_out += n

    def flush(self) -> None:
        """
        FLUSH_MEDIA: drop what Asterisk still holds; pending marks die.
        """
        dropped_ms = self.queue.flush(self.clock())
        self.counters.flushed_bytes += int(dropped_ms / self.queue.ptime_ms * self.frame_bytes)
        self._carry = b""
        self._marks.clear()
        self._then.clear()
        self._filler_from = None
        self.send_command("FLUSH_MEDIA", None)

    def mark(self, correlation_id: Optional[str] = None, then: Optional[Callable[[float], None]] = None) -> Optional[str]:
        """
        MARK_MEDIA behind everything sent so far; ``then(time)`` when it was
        played.  The id used, or ``None`` if it could not be sent.
        """
        cid = correlation_id or f"m{next(self._ids)}"
        if not self.send_command("MARK_MEDIA", cid):
            return None
        self._marks[cid] = self.queue.drain_at
        if then is not None:
            self._then[cid] = then
        self.counters.marks_sent += 1
        return cid

    def mark_processed(self, correlation_id: str, now: float) -> bool:
        """
        Asterisk played up to mark ``correlation_id`` at ``now``: correct the
        model and call its callback.  False for a mark we do not wait for.
        """
        modelled = self._marks.pop(correlation_id, None)
        if modelled is None:
            return False
        self.counters.marks_processed += 1
        self.queue.mark_processed(now, modelled)
        then = self._then.pop(correlation_id, None)
        if then is not None:
            then(now)
        return True


def idle_queue(lookahead_ms: int, filler_lookahead_ms: int) -> PeerQueue:
    """
    The model's queue before any MEDIA_START: nothing sent, nothing wanted.
    """
    return PeerQueue(FRAME_MS, lookahead_ms, filler_lookahead_ms)
