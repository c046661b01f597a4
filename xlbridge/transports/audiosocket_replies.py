"""
The outbound half of an AudioSocket leg: the replies sent to Asterisk.

Why a module of its own: :mod:`xlbridge.transports.audiosocket` handles
the connection and what Asterisk sends; what goes back is a separate
concern with its own state (the reply rate and the resampler to it) and
its own failure policy (drop, never queue).  Which rate replies go at, and
when it changes, stays the endpoint's decision (see its module notes);
this module only carries it out.

- Replies are AudioSocket audio messages of the kind of their rate
  (:data:`~xlbridge.transports.audiosocket_codec.KIND_OF_RATE`: 0x10 at
  8 kHz, 0x12 at 16 kHz), signed 16-bit **little-endian** slin.  Internal
  16 kHz audio is resampled to the reply rate here, exactly once; a
  :class:`ReplyStream` that (re)starts gets a fresh resampler, so no state
  carries over a rate change.
- One 20 ms message per egress tick (:meth:`ReplyStream.send`), silence
  when there is nothing to say: Asterisk writes each message straight to
  the channel without re-timing, so the bridge paces.
- Before each message a look at what is still unsent
  (:mod:`xlbridge.transports.backlog`); behind more than two messages the
  frame is dropped and counted (``send_backlog``), never queued, so a peer
  that reads slowly gets gaps, not a delay that lasts the whole call.  A
  failed write is counted as ``error``.  Both are logged through the
  endpoint's :class:`~xlbridge.logthrottle.LogThrottle`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from twisted.internet.interfaces import ITransport

from xlbridge.audio.frame import FRAME_SAMPLES, SAMPLE_RATE, Samples, silence
from xlbridge.audio.pcm16 import little_endian_bytes
from xlbridge.audio.resample import StreamResampler
from xlbridge.events import DropReason, LegCounters
from xlbridge.logthrottle import LogThrottle
from xlbridge.transports.audiosocket_codec import KIND_OF_RATE, encode
from xlbridge.transports.backlog import SendBacklog

__all__ = ["ReplyStream"]


class ReplyStream:
    """
    What one AudioSocket endpoint sends back: internal 16 kHz frames,
    resampled to :attr:`rate` and written as little-endian slin messages.

    :param extension: the endpoint's extension, for log lines.
    :param log: where dropped and failed sends are logged (throttled); its
        held-back lines are reported by :meth:`flush_log`.

    :ivar rate: sample rate replies are sent at, in Hz (``None``: not
        sending).
    """

    def __init__(self, extension: str, log: LogThrottle) -> None:
        self.extension = extension
        self.rate: Optional[int] = None
        self._out: Optional[StreamResampler] = None
        self._silence = silence(FRAME_SAMPLES)
        self._log = log

    def start(self, rate: int) -> None:
        """
        Send at ``rate`` Hz (a key of ``KIND_OF_RATE``) from the next
        frame on, with a fresh resampler.
        """
        self.rate = rate
        self._out = StreamResampler(SAMPLE_RATE, rate)

    def stop(self) -> None:
        """
        Send nothing until the next :meth:`start`; the resampler's state
        is dropped.
        """
        self.rate = None
        self._out = None

    def flush_log(self) -> None:
        """
        Report the log lines held back so far (at the end of a call or
        connection), so their count is not lost.
        """
        self._log.flush()

    def send(
        self,
        transport: ITransport,
        backlog: Optional[SendBacklog],
        counters: LegCounters,
        samples: Samples | None,
        speech: bool | None = None,
    ) -> None:
        """
        Write one frame (``None``: silence) to ``transport`` as one
        message, unless not started, or the resampler holds everything
        back, or more than two messages wait unsent in ``backlog``.

        :param counters: the endpoint's counters: ``packets_out``,
            ``bytes_out`` (payload bytes), ``silence_out`` and the drops.
        :param speech: whether the frame counts as speech (default: it is
            not ``None``); ``False`` counts it in ``silence_out``.
        """
        out, rate = self._out, self.rate
        if out is None or rate is None:
            return
        if speech is None:
            speech = samples is not None
        pcm = out.process(samples if samples is not None else self._silence)
        payload = little_endian_bytes(np.asarray(pcm, dtype=np.int16))
        if not payload:
            return
        message = encode(KIND_OF_RATE[rate], payload)
        if backlog is not None and backlog.full(2 * len(message)):
            counters.drop(DropReason.SEND_BACKLOG)
            self._log.warn(
                "{ext}: Asterisk is not reading the AudioSocket connection fast enough: frame dropped",
                ext=self.extension,
            )
            return
        try:
            transport.write(message)
        except Exception as e:
            counters.drop(DropReason.ERROR)
            self._log.warn("{ext}: AudioSocket send failed: {err}", ext=self.extension, err=e)
            return
        counters.packets_out += 1
        counters.bytes_out += len(payload)
        if not speech:
            counters.silence_out += 1
