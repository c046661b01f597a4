"""
Deepgram live ASR over an Autobahn WebSocket: one :class:`DeepgramASR` per
caller, built by :func:`deepgram_asr_factory`.

The parsing, timing and replay rules live in the sans-I/O
:mod:`xlbridge.engines.deepgram.wire`, the settings and error rules in
:mod:`xlbridge.engines.deepgram.settings`; this module and
:mod:`xlbridge.engines.deepgram.connection` own the socket and the clock.
The connection lifecycle (connecting, timeouts, failures, backoff and
reconnecting, shutdown, with the state diagram) and the Autobahn protocol
are in the latter, as :class:`DeepgramConnection`, the base of
:class:`DeepgramASR`; what is left here is the ASR side: feeding and
finishing the stream, replay when a connection opens, keepalives and
incoming results.

Design notes
------------

* **Outage.**  The first retryable failure emits one
  ``EngineDown(EngineUnavailable)``; the next successful upgrade emits
  ``EngineUp``.  Audio keeps going into the bounded spool and is replayed
  on the new connection from the end of the last final result, with the
  session's timestamp offset moved to the first replayed sample.
* **Audio out** is little-endian linear16 (trap T1), one ``chunk_ms``
  message at a time, never empty; a ``KeepAlive`` text frame goes out after
  ``keepalive_s`` without sending anything (trap T4).
* **finish()** sends any remainder (padded to 20 ms), then ``Finalize`` and
  ``CloseStream``; results keep flowing until Deepgram closes with 1000.
  It fires then, or after ``finish_timeout_s``, and never errbacks.
"""

from __future__ import annotations

import random as _random
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from xlbridge.audio.codecs import little_endian_bytes
from xlbridge.audio.frame import FRAME_MS, SAMPLE_RATE, Samples
from xlbridge.engines.base import (
    ASR,
    ASREvent,
    ASRFactory,
    EngineUp,
    Transcript,
)
from xlbridge.engines.deepgram.connection import (
    DeepgramClientProtocol,
    DeepgramConnection,
    Reactor,
    State,
)
from xlbridge.engines.deepgram.wire import (
    CLOSE_STREAM,
    ENGINE,
    FINALIZE,
    KEEPALIVE,
    AudioSpool,
    Chunk,
    DeepgramSession,
    DeepgramSettings,
    backoff_delay,
    classify_close,
    classify_upgrade_failure,
    listen_url,
)
from xlbridge.errors import ConfigError

__all__ = [
    "DeepgramASR",
    "DeepgramClientProtocol",
    "DeepgramSession",
    "DeepgramSettings",
    "State",
    "backoff_delay",
    "classify_close",
    "classify_upgrade_failure",
    "deepgram_asr_factory",
    "listen_url",
]


class DeepgramASR(DeepgramConnection):
    """
    One Deepgram stream for one caller, implementing
    :class:`~xlbridge.engines.base.ASR`.

    :param reactor: provides ``IReactorTCP``, ``IReactorSSL`` and
        ``IReactorTime``; all timers and sockets use it.
    :param settings: shared client settings.
    :param language: BCP-47 code for this caller, e.g. ``en``.
    :param on_event: receives every :data:`~xlbridge.engines.base.ASREvent`
        on the reactor thread, stream-timed.
    :param random: jitter source returning ``[0, 1)``.

    Counters (for the monitor): ``sent_bytes`` (audio bytes sent, replays
    included), ``messages_out`` (binary and text messages), ``keepalives``,
    ``connect_attempts``, ``reconnects`` (attempts after the first),
    ``replayed_ms`` (audio re-sent after a reconnect), ``dropped_audio_ms``
    (audio that never reached Deepgram: spool overflow, or fed after a
    permanent failure or finish), ``malformed`` (unparseable messages).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Reactor,
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
        self.random = random
        self.url = listen_url(settings, language)
        self.session = DeepgramSession()
        self.spool = AudioSpool(settings.chunk_samples, int(settings.replay_s * SAMPLE_RATE))
        self.state = State.IDLE
        self.sent_bytes = 0
        self.messages_out = 0
        self.keepalives = 0
        self.connect_attempts = 0
        self.reconnects = 0
        self.replayed_ms = 0
        self._ignored_samples = 0
        self._attempt = 0
        self._failures = 0
        self._proto: Optional[DeepgramClientProtocol] = None
        self._connector: Any = None
        self._open = False
        self._ever_open = False
        self._down = False
        self._timed_out = False
        self._finishing = False
        self._close_sent = False
        self._last_send = 0.0
        self._timeout_call: Optional[IDelayedCall] = None
        self._retry_call: Optional[IDelayedCall] = None
        self._keepalive_call: Optional[IDelayedCall] = None
        self._finish_call: Optional[IDelayedCall] = None
        self._waiters: list[Deferred[None]] = []

    def __repr__(self) -> str:
        return (f"<DeepgramASR call={self.call_id!r} ext={self.extension!r} "
                f"language={self.language!r} state={self.state.value}>")

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
            self._connect()

    def feed(self, samples: Samples) -> None:
        """
        Queue caller audio (16 kHz int16, native order); whole chunks go out
        at once while connected, as little-endian bytes.
        """
        if self.state in (State.FAILED, State.CLOSED) or self._finishing:
            self._ignored_samples += len(samples)
            return
        chunks = self.spool.push(samples)
        if self._open and not self._close_sent:
            for c in chunks:
                self._send_chunk(c)
        self.spool.trim()

    def finish(self) -> "Deferred[None]":
        """
        End the stream: flush, ``Finalize``, ``CloseStream``, deliver the
        last results.  Fires when Deepgram closed the socket, or after
        ``finish_timeout_s``; never errbacks.
        """
        if self.state is State.IDLE:
            self.state = State.CLOSED
        if self.state in (State.FAILED, State.CLOSED):
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        if self._finishing:
            return d
        self._finishing = True
        self._finish_call = self.reactor.callLater(self.settings.finish_timeout_s, self._finish_timed_out)
        tail = self.spool.flush(SAMPLE_RATE * FRAME_MS // 1000)
        if self._open:
            if tail is not None:
                self._send_chunk(tail)
            self._send_finish()
        return d

    # -- the connection is open --------------------------------------------

    def ws_open(self, proto: DeepgramClientProtocol) -> None:
        """The WebSocket is open: replay, then stream live."""
        if proto is not self._proto or self.state is not State.CONNECTING:
            proto.dropConnection(abort=True)
            return
        self._cancel("_timeout_call")
        self.state = State.OPEN
        self._open = True
        self._close_sent = False
        self._failures = 0
        reconnect = self._ever_open
        self._ever_open = True
        final_pos = int(round(self.session.final_end * SAMPLE_RATE))
        chunks = self.spool.replay(final_pos)
        offset = chunks[0].position if chunks else self.spool.position
        self.session.connection_opened(offset / SAMPLE_RATE, self.session.request_id)
        self._last_send = self.reactor.seconds()
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
        self._arm_keepalive()
        if self._finishing:
            tail = self.spool.flush(SAMPLE_RATE * FRAME_MS // 1000)
            if tail is not None:
                self._send_chunk(tail)
            self._send_finish()
        if self._down:
            self._down = False
            self._emit(EngineUp(ENGINE, self.reactor.seconds()))

    # -- receiving ---------------------------------------------------------

    def ws_message(self, proto: DeepgramClientProtocol, payload: bytes, is_binary: bool) -> None:
        """One server message; never raises."""
        if proto is not self._proto:
            return
        if is_binary:
            self.session.unknown += 1
            return
        try:
            events = self.session.receive(payload, self.reactor.seconds())
        except Exception:
            self.log.failure("deepgram: bug parsing a message call={call_id}", call_id=self.call_id)
            return
        for ev in events:
            if isinstance(ev, Transcript) and ev.is_final:
                self.spool.release_before(int(round(self.session.final_end * SAMPLE_RATE)))
            self._emit(ev)

    # -- sending -----------------------------------------------------------

    def _send_chunk(self, c: Chunk) -> None:
        data = little_endian_bytes(c.samples)
        if not data or self._proto is None:
            return
        self._proto.sendMessage(data, isBinary=True)
        c.sent = True
        self.sent_bytes += len(data)
        self.messages_out += 1
        self._last_send = self.reactor.seconds()

    def _send_text(self, text: str) -> None:
        if self._proto is None:
            return
        self._proto.sendMessage(text.encode("utf-8"), isBinary=False)
        self.messages_out += 1
        self._last_send = self.reactor.seconds()

    def _send_finish(self) -> None:
        self._send_text(FINALIZE)
        self._send_text(CLOSE_STREAM)
        self._close_sent = True
        self._cancel("_keepalive_call")

    def _arm_keepalive(self) -> None:
        if self._keepalive_call is not None or not self._open or self._close_sent:
            return
        due = self._last_send + self.settings.keepalive_s - self.reactor.seconds()
        self._keepalive_call = self.reactor.callLater(max(0.0, due), self._keepalive_tick)

    def _keepalive_tick(self) -> None:
        self._keepalive_call = None
        if not self._open or self._close_sent:
            return
        # Re-armed from the last send, so a steady audio stream costs one
        # timer per keepalive_s, not one reset per chunk.
        if self.reactor.seconds() - self._last_send >= self.settings.keepalive_s * 0.999:
            self._send_text(KEEPALIVE)
            self.keepalives += 1
        self._arm_keepalive()

    # -- ending ------------------------------------------------------------

    def _finish_timed_out(self) -> None:
        self._finish_call = None
        self.log.warn("deepgram: finish timed out after {timeout} s call={call_id} ext={ext}",
                      timeout=self.settings.finish_timeout_s, call_id=self.call_id, ext=self.extension)
        self._shutdown()


def deepgram_asr_factory(reactor: Reactor, settings: DeepgramSettings) -> ASRFactory:
    """
    An :data:`~xlbridge.engines.base.ASRFactory` making one
    :class:`DeepgramASR` per caller.

    :raises ConfigError: if ``settings`` has no API key.
    """
    if not settings.api_key:
        raise ConfigError("deepgram-api-key", "no Deepgram API key (set DEEPGRAM_API_KEY)")

    def make(language: str, on_event: Callable[[ASREvent], None], call_id: str, extension: str) -> ASR:
        return DeepgramASR(reactor, settings, language, on_event, call_id=call_id, extension=extension)

    return make
