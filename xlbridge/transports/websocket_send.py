"""
The outbound half of a WebSocket media leg: what goes to Asterisk, how
far ahead, and the marks that say when it was played.

Kept apart from :mod:`xlbridge.transports.websocket` (the connection, the
inbound audio and the control events) because it is the part that decides
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
  buffering), at most :data:`~xlbridge.transports.websocket_codec.MAX_MESSAGE`
  bytes per BINARY message.
- :meth:`MediaSender.mark` / :meth:`MediaSender.mark_processed`:
  MARK_MEDIA and its MEDIA_MARK_PROCESSED, with the callback waiting on
  it; a mark that comes back later than modelled moves the model later.
- :meth:`MediaSender.flush`: FLUSH_MEDIA; what the model still held is
  counted in ``flushed_bytes``, pending marks die (as in Asterisk).
"""

from __future__ import annotations

import itertools
from typing import Callable, Optional

from twisted.logger import Logger

from xlbridge.audio.frame import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, Samples, silence
from xlbridge.audio.resample import StreamResampler
from xlbridge.events import DropReason, LegCounters
from xlbridge.logthrottle import LogThrottle
from xlbridge.transports.websocket_codec import MAX_MESSAGE, MediaFormat, encode_audio
from xlbridge.transports.websocket_flow import PeerQueue

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

    @property
    def marks_pending(self) -> int:
        return len(self._marks)

    def frames_wanted(self, ahead: bool, unsent_bytes: int = 0) -> int:
        """
        Frames that may be sent now (see the module notes); ``unsent_bytes``
        still wait on our side of the connection.
        """
        now = self.clock()
        room = self.queue.room(now, ahead)
        if room and unsent_bytes:
            self.queue.stall(now, unsent_bytes * self.queue.ptime_ms / self.frame_bytes)
            room = self.queue.room(now, ahead)
        return room

    def send_frames(self, frames: list[Optional[Samples]], speech: bool, room: int) -> None:
        """
        Send up to ``room`` of ``frames`` (internal 20 ms frames, ``None`` =
        digital silence); the rest is dropped and counted
        (``websocket_full``).  ``speech`` false counts them as silence.
        """
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


#: The model's queue before any MEDIA_START (nothing sent, nothing wanted).
def idle_queue(lookahead_ms: int, filler_lookahead_ms: int) -> PeerQueue:
    return PeerQueue(FRAME_MS, lookahead_ms, filler_lookahead_ms)
