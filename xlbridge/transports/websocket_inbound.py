"""
What comes in on a WebSocket media leg: BINARY audio and TEXT control
events from Asterisk's chan_websocket (PROTOCOLS.md section 10).

Kept apart from :class:`~xlbridge.transports.websocket.WebSocketEndpoint`
(the connection's lifecycle, the stream boundaries and the transport API)
because it is a dispatcher with its own failure accounting, and reads
best as one page: each kind of message, what it does, and what it counts.

- BINARY audio is decoded (slin little-endian, G.711), resampled once to
  the internal 16 kHz by the stream's resampler (made at MEDIA_START by
  :meth:`InboundMedia.begin`), counted in ``packets_in`` / ``bytes_in``
  and handed to the owner's ``on_audio``.  Audio before MEDIA_START or not
  whole samples is counted as ``websocket_format``; an ``on_audio`` that
  raises as ``pipeline_error``.
- TEXT is parsed (:func:`~xlbridge.transports.websocket_codec.parse_event`):
  unparsable text is counted with the reason the parser gives
  (``websocket_malformed``); MEDIA_START goes back to the endpoint, which
  owns the stream; marks, MEDIA_XOFF / MEDIA_XON and STATUS go to the
  leg's :class:`~xlbridge.transports.websocket_outbound.OutboundStreams`
  (a mark played, then to ``on_mark``); DTMF digits are kept, never
  logged (they may be PINs); Asterisk's ERROR is logged.
- Nothing raises into the reactor: any other failure is counted as
  ``error`` and logged, throttled.

The owner (:class:`InboundOwner`) is read when a message comes, so its
callbacks may be replaced at any time.  Times are reactor seconds.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Optional, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xlbridge.audio.frame import SAMPLE_RATE, Samples
from xlbridge.audio.resample import StreamResampler
from xlbridge.events import DropReason, LegCounters
from xlbridge.logthrottle import LogThrottle
from xlbridge.transports.websocket_codec import (
    XOFF_LEVEL,
    DtmfEnd,
    Error,
    Malformed,
    MarkProcessed,
    MediaStart,
    Status,
    XOff,
    XOn,
    parse_event,
)
from xlbridge.transports.websocket_media import MediaFormat, decode_audio
from xlbridge.transports.websocket_outbound import OutboundStreams

__all__ = ["InboundMedia", "InboundOwner"]


class InboundOwner(Protocol):
    """
    What :class:`InboundMedia` reads of the endpoint that owns it
    (:class:`~xlbridge.transports.websocket.WebSocketEndpoint`).
    """

    #: the leg, for log lines
    extension: str
    counters: LegCounters
    clock: IReactorTime
    #: the stream's media format, ``None`` before MEDIA_START
    format: Optional[MediaFormat]
    #: DTMF digits of the connection, oldest first
    dtmf: deque[str]
    outbound: OutboundStreams

    @property
    def log(self) -> Logger:
        """The owner's logger, bound to it."""

    @property
    def on_audio(self) -> Callable[[Any, Samples], None]:
        """Called with ``(owner, samples)``, internal audio."""

    @property
    def on_mark(self) -> Callable[[Any, str, float], None]:
        """Called with ``(owner, correlation_id, time)`` when a mark played."""


class InboundMedia:
    """
    The inbound side of one WebSocket leg.

    :param owner: the endpoint (read live).
    :param media_start: called with a MEDIA_START event (the endpoint
        decides whether the stream starts, and calls :meth:`begin`).
    :param error_log: throttle for messages whose handling failed.
    :param pipeline_log: throttle for ``on_audio`` failures.
    :param control_log: throttle for bad control messages and ERROR events.
    """

    def __init__(
        self,
        owner: InboundOwner,
        media_start: Callable[[MediaStart], None],
        error_log: LogThrottle,
        pipeline_log: LogThrottle,
        control_log: LogThrottle,
    ) -> None:
        self.owner = owner
        self.media_start = media_start
        self.error_log = error_log
        self.pipeline_log = pipeline_log
        self.control_log = control_log
        self._in: Optional[StreamResampler] = None

    def begin(self, fmt: MediaFormat) -> None:
        """A new stream in ``fmt``: a fresh resampler to 16 kHz."""
        self._in = StreamResampler(fmt.rate, SAMPLE_RATE)

    def end(self) -> None:
        """The stream ended: audio is refused until the next :meth:`begin`."""
        self._in = None

    def message(self, payload: bytes, is_binary: bool) -> None:
        """
        One message from the live connection; never raises.
        """
        try:
            if is_binary:
                self._audio(payload)
            else:
                self._control(payload)
        except Exception:
            owner = self.owner
            owner.counters.drop(DropReason.ERROR)
            self.error_log.failure("{ext}: error handling WebSocket data", ext=owner.extension)

    def _audio(self, payload: bytes) -> None:
        owner = self.owner
        counters = owner.counters
        fmt = owner.format
        if fmt is None or self._in is None:
            counters.drop(DropReason.WEBSOCKET_FORMAT)
            return
        pcm = decode_audio(fmt, payload)
        if pcm is None:
            counters.drop(DropReason.WEBSOCKET_FORMAT)
            return
        counters.packets_in += 1
        counters.bytes_in += len(payload)
        samples = self._in.process(pcm)
        if len(samples):
            try:
                owner.on_audio(owner, samples)
            except Exception:
                counters.drop(DropReason.PIPELINE_ERROR)
                self.pipeline_log.failure("{ext}: pipeline error on WebSocket audio", ext=owner.extension)

    def _control(self, payload: bytes) -> None:
        owner = self.owner
        event = parse_event(payload)
        now = owner.clock.seconds()
        if isinstance(event, Malformed):
            owner.counters.drop(event.reason)
            self.control_log.warn("{ext}: bad control message: {detail}", ext=owner.extension,
                                  detail=event.detail)
        elif isinstance(event, MediaStart):
            self.media_start(event)
        elif isinstance(event, MarkProcessed):
            if owner.outbound.mark_processed(event.correlation_id, now):
                owner.on_mark(owner, event.correlation_id, now)
        elif isinstance(event, XOff):
            owner.outbound.queue.set_xoff(now, XOFF_LEVEL)
            owner.log.warn("{ext}: Asterisk's queue is full (MEDIA_XOFF)", ext=owner.extension)
        elif isinstance(event, XOn):
            owner.outbound.xon(now)
        elif isinstance(event, Status):
            owner.outbound.queue.resync(now, event.queue_length)
        elif isinstance(event, DtmfEnd):
            owner.dtmf.append(event.digit)  # never logged: digits may be PINs
        elif isinstance(event, Error):
            self.control_log.warn("{ext}: Asterisk error: {text}", ext=owner.extension, text=event.error_text)
