"""
Deepgram live ASR over an Autobahn WebSocket: one :class:`DeepgramASR`
(``/v1/listen``, Nova) or :class:`~xlbridge.engines.deepgram.flux.FluxASR`
(``/v2/listen``, Flux: ``[deepgram] api = "flux"``) per caller, built by
:func:`~xlbridge.engines.deepgram.factory.deepgram_asr_factory`.

The package, by concern:

* :mod:`~xlbridge.engines.deepgram.settings`: settings, the ``/v1/listen``
  URL, the reconnect delay and error classification (no I/O);
* :mod:`~xlbridge.engines.deepgram.wire`: server messages to events, the
  control messages, the replay spool (sans-I/O);
* :mod:`~xlbridge.engines.deepgram.connection`: the socket and its
  lifecycle (connecting, timeouts, backoff and reconnecting, keepalives,
  shutdown; with the state diagram), as a :class:`DeepgramConnection`;
* :mod:`~xlbridge.engines.deepgram.flux` and ``flux_session``: the same for
  Flux, on the same connection and spool (:class:`SpooledASR`);
* this module: the ASR side.  A :class:`SpooledASR` owns one
  :class:`DeepgramConnection` and is its
  :class:`~xlbridge.engines.deepgram.connection.DeepgramConnectionOwner`:
  it feeds and finishes the stream, replays audio when a connection opens,
  turns incoming messages into events and connection failures into
  ``EngineDown`` / ``EngineUp``.

Design notes
------------

* **Outage.**  The first retryable failure emits one
  ``EngineDown(EngineUnavailable)``; the next successful upgrade emits
  ``EngineUp``.  Audio keeps going into the bounded spool and is replayed
  on the new connection from the end of the last final result, with the
  session's timestamp offset moved to the first replayed sample.
* **Audio out** is little-endian linear16 (trap T1), one ``chunk_ms``
  message at a time, never empty; on Nova the connection sends a
  ``KeepAlive`` text frame after ``keepalive_s`` without sending anything
  (trap T4); Flux gets none (it would kill the stream).
* **finish()** sends any remainder (padded to 20 ms), then ``Finalize`` and
  ``CloseStream`` (Flux: ``ForceEndTurn`` and ``CloseStream``); results keep
  flowing until Deepgram closes (Nova: 1000; Flux: no status code).  It
  fires then, or after ``finish_timeout_s``, and never errbacks.
"""

from __future__ import annotations

import random as _random
from typing import Callable, ClassVar, Optional, Protocol, Union, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from xlbridge.audio.frame import FRAME_MS, SAMPLE_RATE, Samples
from xlbridge.audio.pcm16 import little_endian_bytes
from xlbridge.engines.base import (
    ASREvent,
    EngineDown,
    EngineError,
    EngineUp,
    Transcript,
    deliver,
)
from xlbridge.engines.deepgram.connection import DeepgramConnection, State
from xlbridge.engines.deepgram.dialect import NOVA, Dialect
from xlbridge.engines.deepgram.protocol import IDeepgramReactor
from xlbridge.engines.deepgram.settings import ENGINE, DeepgramSettings, listen_url
from xlbridge.engines.deepgram.wire import AudioSpool, Chunk, DeepgramSession

# DeepgramSettings is the type of deepgram_asr_factory's settings, so
# callers may take both from here.
__all__ = ["DeepgramASR", "DeepgramSettings", "SpooledASR", "StreamSession"]


class StreamSession(Protocol):
    """
    What :class:`SpooledASR` needs of its session (the sans-I/O parser of
    one API's messages, :class:`~xlbridge.engines.deepgram.wire.DeepgramSession`
    or :class:`~xlbridge.engines.deepgram.flux_session.FluxSession`).

    ``offset``: stream seconds of the current connection's time 0;
    ``final_end``: stream seconds up to which results are final (the
    replay starts there).
    """

    offset: float
    final_end: float
    request_id: Optional[str]
    last_error: Optional[str]
    malformed: int
    unknown: int

    def connection_opened(self, offset: float, request_id: Optional[str] = None) -> None:
        """A new connection is open; its first sample is at stream second ``offset``."""

    def receive(self, text: Union[str, bytes], now: float) -> list[ASREvent]:
        """One server text frame to events; never raises."""


class SpooledASR:
    """
    One Deepgram stream for one caller, implementing
    :class:`~xlbridge.engines.base.ASR`, whichever API: the spool, the
    connection, replay after a reconnect, ``finish()`` and the outage
    events.  Subclasses say which API (:attr:`dialect`, :meth:`_make_url`,
    :meth:`_make_session`) and what a message means (:meth:`message_received`).

    :param reactor: all timers and sockets use it.
    :param settings: shared client settings.
    :param language: BCP-47 code for this caller, e.g. ``en``.
    :param on_event: receives every :data:`~xlbridge.engines.base.ASREvent`
        on the reactor thread, stream-timed.
    :param random: jitter source returning ``[0, 1)``.

    :ivar connection: the :class:`DeepgramConnection` it owns.
    :ivar session: parses the server's messages (stream time).
    :ivar spool: the audio kept for replay.

    Counters (for the monitor): ``sent_bytes`` (audio bytes sent, replays
    included), ``messages_out`` (binary and text messages), ``keepalives``,
    ``connect_attempts``, ``reconnects`` (attempts after the first),
    ``replayed_ms`` (audio re-sent after a reconnect), ``dropped_audio_ms``
    (audio that never reached Deepgram: spool overflow, or fed after a
    permanent failure or finish), ``malformed`` (unparseable messages).
    """

    log = Logger()
    #: What the connection must do for this API.
    dialect: ClassVar[Dialect] = NOVA
    session: StreamSession

    def __init__(
        self,
        reactor: IDeepgramReactor,
        settings: DeepgramSettings,
        language: str,
        on_event: Callable[[ASREvent], None],
        call_id: str = "",
        extension: str = "",
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.language = language
        self.on_event = on_event
        self.call_id = call_id
        self.extension = extension
        self.session = self._make_session()
        self.spool = AudioSpool(settings.chunk_samples, int(settings.replay_s * SAMPLE_RATE))
        self.connection = DeepgramConnection(reactor, settings, self._make_url(language), self,
                                             call_id=call_id, extension=extension, random=random,
                                             dialect=self.dialect)
        self.replayed_ms = 0
        self._ignored_samples = 0
        self._ever_open = False
        self._down = False
        self._finishing = False
        self._finish_call: Optional[IDelayedCall] = None
        self._waiters: list[Deferred[None]] = []

    def message_received(self, payload: bytes, is_binary: bool) -> None:
        """One server message; never raises."""
        if is_binary:
            self.session.unknown += 1
            return
        try:
            events = self.session.receive(payload, self.reactor.seconds())
        except Exception:
            api = "deepgram" if self.dialect.name == "nova" else f"deepgram {self.dialect.name}"
            self.log.failure("{api}: bug parsing a message call={call_id}", api=api, call_id=self.call_id)
            return
        if self.session.last_error is not None:
            self.connection.error_received(self.session.last_error)
        self._judge_close()
        for ev in events:
            if isinstance(ev, Transcript) and ev.is_final:
                self.spool.release_before(int(round(self.session.final_end * SAMPLE_RATE)))
            self._emit(ev)

    def _judge_close(self) -> None:
        """Tell the connection whether the stream's last message came (after a message)."""
        raise NotImplementedError

    def _make_session(self) -> StreamSession:
        raise NotImplementedError

    def _make_url(self, language: str) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} call={self.call_id!r} ext={self.extension!r} "
                f"language={self.language!r} state={self.state.value}>")

    @property
    def state(self) -> State:
        """The connection's state."""
        return self.connection.state

    @property
    def sent_bytes(self) -> int:
        """Audio bytes sent, replays included."""
        return self.connection.sent_bytes

    @property
    def messages_out(self) -> int:
        """Binary and text messages sent."""
        return self.connection.messages_out

    @property
    def keepalives(self) -> int:
        """``KeepAlive`` messages sent."""
        return self.connection.keepalives

    @property
    def connect_attempts(self) -> int:
        """Connection attempts so far."""
        return self.connection.connect_attempts

    @property
    def reconnects(self) -> int:
        """Connection attempts after the first."""
        return self.connection.reconnects

    @property
    def malformed(self) -> int:
        """Server messages that could not be parsed."""
        return self.session.malformed

    @property
    def dropped_audio_ms(self) -> int:
        """Milliseconds of fed audio that never reached Deepgram."""
        return (self.spool.dropped_samples + self._ignored_samples) * 1000 // SAMPLE_RATE

    # -- the ASR interface -------------------------------------------------

    def start(self) -> None:
        """Connect; audio fed meanwhile is spooled (bounded)."""
        if self.state is State.IDLE:
            self.connection.connect()

    def feed(self, samples: Samples) -> None:
        """
        Queue caller audio (16 kHz int16, native order); whole chunks go out
        at once while connected, as little-endian bytes.
        """
        if self.state in (State.FAILED, State.CLOSED) or self._finishing:
            self._ignored_samples += len(samples)
            return
        chunks = self.spool.push(samples)
        if self.connection.is_open and not self.connection.close_sent:
            for c in chunks:
                self._send_chunk(c)
        self.spool.trim()

    def finish(self) -> "Deferred[None]":
        """
        End the stream: flush, the dialect's end messages (``Finalize`` or
        ``ForceEndTurn``, then ``CloseStream``), deliver the last results.  Fires when Deepgram closed the socket, or after
        ``finish_timeout_s``; never errbacks.
        """
        if self.state is State.IDLE:
            self.connection.close()
        if self.state in (State.FAILED, State.CLOSED):
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        if self._finishing:
            return d
        self._finishing = True
        self._finish_call = self.reactor.callLater(self.settings.finish_timeout_s, self._finish_timed_out)
        tail = self.spool.flush(SAMPLE_RATE * FRAME_MS // 1000)
        if self.connection.is_open:
            if tail is not None:
                self._send_chunk(tail)
            self.connection.end_stream()
        return d

    # -- what the connection reports (DeepgramConnectionOwner) --------------

    def connection_opened(self, request_id: Optional[str]) -> None:
        """The WebSocket is open: replay, then stream live."""
        reconnect = self._ever_open
        self._ever_open = True
        final_pos = int(round(self.session.final_end * SAMPLE_RATE))
        chunks = self.spool.replay(final_pos)
        offset = chunks[0].position if chunks else self.spool.position
        self.session.connection_opened(offset / SAMPLE_RATE, request_id)
        self.log.info("deepgram: open call={call_id} ext={ext} request_id={request_id} "
                      "replaying={replay_ms} ms from {offset:.2f} s",
                      call_id=self.call_id, ext=self.extension, request_id=self.session.request_id,
                      replay_ms=sum(len(c.samples) for c in chunks) * 1000 // SAMPLE_RATE,
                      offset=offset / SAMPLE_RATE)
        for c in chunks:
            if reconnect:
                self.replayed_ms += len(c.samples) * 1000 // SAMPLE_RATE
            self._send_chunk(c)
        self.spool.trim()
        if self._finishing:
            tail = self.spool.flush(SAMPLE_RATE * FRAME_MS // 1000)
            if tail is not None:
                self._send_chunk(tail)
            self.connection.end_stream()
        if self._down:
            self._down = False
            self._emit(EngineUp(ENGINE, self.reactor.seconds()))

    def connection_down(self, error: EngineError, retrying: bool) -> None:
        """
        One ``EngineDown`` per outage while retrying; a permanent failure
        always emits one and fires :meth:`finish`'s waiters.
        """
        now = self.reactor.seconds()
        self._connection_lost()
        if not retrying:
            self._emit(EngineDown(error, now), force=True)
            self._fire_waiters()
        elif not self._down:
            self._down = True
            self._emit(EngineDown(error, now))

    def connection_closed(self) -> None:
        """The stream ended: :meth:`finish` fires."""
        self._connection_lost()
        self._fire_waiters()

    def _connection_lost(self) -> None:
        """The connection ended (dropped, failed or closed); before the events about it."""

    # -- internals -----------------------------------------------------------

    def _send_chunk(self, c: Chunk) -> None:
        if self.connection.send_audio(little_endian_bytes(c.samples)):
            c.sent = True

    def _finish_timed_out(self) -> None:
        self._finish_call = None
        self.log.warn("deepgram: finish timed out after {timeout} s call={call_id} ext={ext}",
                      timeout=self.settings.finish_timeout_s, call_id=self.call_id, ext=self.extension)
        self.connection.close()

    def _fire_waiters(self) -> None:
        call, self._finish_call = self._finish_call, None
        if call is not None and call.active():
            call.cancel()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def _emit(self, ev: ASREvent, force: bool = False) -> None:
        if self.state is State.CLOSED and not force:
            return
        deliver(self.on_event, ev, self.log, "deepgram", self.call_id, self.extension)


class DeepgramASR(SpooledASR):
    """
    A ``/v1/listen`` (Nova) stream: results, endpointing, ``Metadata`` at
    the end.  See :class:`SpooledASR` for the parameters and counters.
    """

    session: DeepgramSession

    def _make_session(self) -> DeepgramSession:
        return DeepgramSession()

    def _make_url(self, language: str) -> str:
        return listen_url(self.settings, language)

    def _judge_close(self) -> None:
        # What the connection needs to judge the close that will follow.
        if cast(DeepgramSession, self.session).metadata is not None:
            self.connection.metadata_received()
