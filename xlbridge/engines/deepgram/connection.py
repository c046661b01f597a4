"""
Deepgram live ASR, the connection: at most one WebSocket to ``/v1/listen``
(Nova) or ``/v2/listen`` (Flux) at a time, owned by a
:class:`~xlbridge.engines.deepgram.asr.DeepgramASR` or a
:class:`~xlbridge.engines.deepgram.flux.FluxASR`.

:class:`DeepgramConnection` connects, times out, turns a refused upgrade or a
drop into an :class:`~xlbridge.engines.base.EngineError`, backs off and
reconnects or gives up, keeps an idle socket alive and shuts down.  It knows
nothing of audio positions, results or the pipeline: it reports to its owner
through :class:`DeepgramConnectionOwner` (opened, message, down, closed) and
takes bytes to send, which its
:class:`~xlbridge.engines.deepgram.traffic.SocketTraffic` sends (with the
keepalive and the liveness ping).  The Autobahn protocol and its factory
(one per attempt, :mod:`xlbridge.engines.deepgram.protocol`) only forward
Autobahn's callbacks to it.  What differs between the two APIs (keepalive
or none, the messages that end a stream, which closes are normal) is a
:class:`~xlbridge.engines.deepgram.dialect.Dialect` it is built with; the
URL comes from the owner.

Design notes
------------

Lifecycle (``state``)::

    idle --connect()--> connecting --upgrade 101--> open --end_stream(), normal close--> closed
                          ^   |                      |
                          |   | 429/5xx/drop         | drop, NET-xxxx
                          |   v                      v
                          +-- backoff <--------------+
    connecting --401/403/400--> failed (connection_down(retrying=False), no retry)
    any --close()--> closed

* **Why not ClientService?**  It counts a connection as a success once TCP
  connects and resets its retry count, but Deepgram refuses a stream
  *after* TCP, in the HTTP upgrade (429 at the concurrency limit, 401 for a
  bad key).  Its backoff would never grow, and it cannot tell "stop, the
  key is wrong" from "try later".  So the loop is ours: a failure counter
  reset only by a successful upgrade, :func:`backoff_delay` with injected
  jitter, and ``reactor.callLater``.
* **The end of a stream.**  After ``CloseStream`` ``/v1`` sends its last
  message, ``Metadata``, and closes with 1000; Flux sends the ``EndOfTurn``
  that ``ForceEndTurn`` asked for and closes with no status code (the
  dialect's ``normal_closes``).  Once the owner has seen that last message
  (:meth:`DeepgramConnection.last_message_received`) nothing is left to
  lose, so even an unclean end (a peer that drops TCP before the close
  handshake finishes) is the end, not a drop to recover from.  The owner
  parses messages, so it tells the connection about them and about
  ``Error`` messages; the latter's text explains the close that follows.
* **Keepalive and liveness** (:mod:`xlbridge.engines.deepgram.traffic`):
  a ``KeepAlive`` after ``keepalive_s`` without sending (``/v1`` only), and
  a ping after a quiet spell, whose lack of answer drops a half-open socket
  (then handled as any drop: ``EngineDown``, backoff, reconnect, replay).
* **Secrets.**  The key only travels in the ``Authorization`` header, and
  the protocol's logger scrubs it (see
  :mod:`~xlbridge.engines.deepgram.protocol`).
"""

from __future__ import annotations

import random as _random
from typing import Callable, Optional

from autobahn.websocket.types import ConnectionResponse
from twisted.internet.interfaces import IConnector, IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.engines.base import EngineError, EngineRequestError, EngineUnavailable
from xlbridge.engines.deepgram.dialect import NOVA, Dialect
from xlbridge.engines.deepgram.failures import ENGINE, backoff_delay, close_error
from xlbridge.engines.deepgram.lifecycle import DeepgramConnectionOwner, State
from xlbridge.engines.deepgram.protocol import (
    DeepgramClientFactory,
    DeepgramClientProtocol,
    DialError,
    IDeepgramReactor,
    dial,
    upgrade_status,
)
from xlbridge.engines.deepgram.settings import DeepgramSettings
from xlbridge.engines.deepgram.traffic import SocketTraffic

__all__ = [
    "DeepgramConnection",
    "DeepgramConnectionOwner",
    "State",
]

def _cancel(call: Optional[IDelayedCall]) -> None:
    if call is not None and call.active():
        call.cancel()


class DeepgramConnection:
    """
    The connection of one Deepgram stream: connect, time out, turn a
    refused upgrade or a drop into an error, back off and reconnect, or
    give up; keep an idle socket alive; shut down.

    :param reactor: all sockets and timers use it.
    :param settings: timeouts, backoff, keepalive and the API key.
    :param url: the ``/v1/listen`` or ``/v2/listen`` URL (see
        :func:`~xlbridge.engines.deepgram.settings.listen_url`); read at
        each attempt.
    :param dialect: what the API wants (keepalive, end of stream, normal
        closes): :data:`~xlbridge.engines.deepgram.dialect.NOVA` or
        :data:`~xlbridge.engines.deepgram.dialect.FLUX`.
    :param owner: receives the reports, see :class:`DeepgramConnectionOwner`.
    :param call_id: for log lines.
    :param extension: for log lines.
    :param random: backoff jitter source returning ``[0, 1)``.

    :ivar protocol: the WebSocket of the current attempt (from TCP connect
        until it closes), or ``None``.
    :ivar connect_attempts: attempts so far; the current one's number.
    :ivar reconnects: attempts after the first.
    :ivar liveness: the liveness ping timer of the open socket.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IDeepgramReactor,
        settings: DeepgramSettings,
        url: str,
        owner: DeepgramConnectionOwner,
        call_id: str = "",
        extension: str = "",
        random: Callable[[], float] = _random.random,
        dialect: Dialect = NOVA,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.url = url
        self.dialect = dialect
        self.call_id = call_id
        self.extension = extension
        self._owner = owner
        self._random = random
        self.state = State.IDLE
        self.protocol: Optional[DeepgramClientProtocol] = None
        self.connect_attempts = 0
        self.reconnects = 0
        self._failures = 0
        self._connector: Optional[IConnector] = None
        self._timed_out = False
        self._request_id: Optional[str] = None
        self._last_seen = False
        self._server_error: Optional[str] = None
        self._timeout_call: Optional[IDelayedCall] = None
        self._retry_call: Optional[IDelayedCall] = None
        self._traffic = SocketTraffic(reactor, dialect, settings.keepalive_s, lambda: self.protocol,
                                      self.log, call_id, extension)
        self.liveness = self._traffic.liveness

    def __repr__(self) -> str:
        return (f"<DeepgramConnection call={self.call_id!r} ext={self.extension!r} "
                f"state={self.state.value} attempts={self.connect_attempts}>")

    @property
    def is_open(self) -> bool:
        """The WebSocket is open: the owner may send."""
        return self._traffic.open

    @property
    def close_sent(self) -> bool:
        """``CloseStream`` went out on the open connection: no more audio."""
        return self._traffic.close_sent

    @property
    def sent_bytes(self) -> int:
        """Audio bytes sent."""
        return self._traffic.sent_bytes

    @property
    def messages_out(self) -> int:
        """Binary and text messages sent."""
        return self._traffic.messages_out

    @property
    def keepalives(self) -> int:
        """``KeepAlive`` messages sent (always 0 on Flux)."""
        return self._traffic.keepalives

    # -- what the owner does -----------------------------------------------

    def connect(self) -> None:
        """
        Start a connection attempt: the first from ``idle``, or a retry from
        ``backoff`` (the retry timer calls this).  Does nothing otherwise.
        """
        if self.state not in (State.IDLE, State.BACKOFF):
            return
        _cancel(self._retry_call)
        self._retry_call = None
        self.connect_attempts += 1
        if self.connect_attempts > 1:
            self.reconnects += 1
        self.state = State.CONNECTING
        self._timed_out = False
        self._request_id = None
        attempt = self.connect_attempts
        factory = DeepgramClientFactory(self, attempt, self.url, self.settings.api_key, self.reactor)
        timeout = self.settings.connect_timeout_s
        self.log.debug("deepgram: connecting {url} call={call_id} ext={ext} attempt={attempt}",
                       url=self.url, call_id=self.call_id, ext=self.extension, attempt=attempt)
        try:
            self._connector = dial(self.reactor, self.url, factory, timeout)
        except DialError as e:
            # Missing TLS support or a bad host name: retrying cannot help.
            self._failed(EngineRequestError(ENGINE, str(e)))
            return
        if self.state is State.CONNECTING and attempt == self.connect_attempts:
            self._timeout_call = self.reactor.callLater(timeout, self._connect_timed_out, attempt)

    def send_audio(self, data: bytes) -> bool:
        """
        Send one binary message of audio (little-endian linear16).

        :return: whether it went out (not if empty or not open).
        """
        return self._traffic.send_audio(data)

    def end_stream(self) -> None:
        """
        Send the dialect's end messages: ``Finalize`` and ``CloseStream``
        (``/v1``: the last results, ``Metadata``, close 1000), or
        ``ForceEndTurn`` and ``CloseStream`` (Flux: the open turn's
        ``EndOfTurn``, a close without status).  That close is reported as
        ``connection_closed``.  No keepalives or pings after this.
        """
        self._traffic.end_stream()

    def last_message_received(self) -> None:
        """
        The owner parsed the message that comes last after ``CloseStream``
        (``/v1``: ``Metadata``; Flux: the ``EndOfTurn`` ``ForceEndTurn``
        asked for): any close now is the end of the stream.
        """
        self._last_seen = True

    #: The ``/v1`` name of :meth:`last_message_received`.
    metadata_received = last_message_received

    def error_received(self, text: str) -> None:
        """
        The owner parsed an ``Error`` message on the open connection;
        ``text`` goes into the error of the close that follows.
        """
        self._server_error = text

    def close(self) -> None:
        """
        Become ``closed``: cancel every timer, drop any socket, stop any
        connect; report ``connection_closed``.  Does nothing if closed.
        """
        if self.state is State.CLOSED:
            return
        self._shutdown()

    # -- what the protocol and factory report ------------------------------

    def ws_built(self, attempt: int, proto: DeepgramClientProtocol) -> None:
        """The TCP (and TLS) connection of ``attempt`` exists."""
        if attempt == self.connect_attempts and self.state is State.CONNECTING:
            self.protocol = proto

    def ws_connect_failed(self, attempt: int, reason: Failure) -> None:
        """TCP connect failed (refused, unreachable, timed out, cancelled)."""
        if attempt != self.connect_attempts or self.state is not State.CONNECTING:
            return
        _cancel(self._timeout_call)
        self._timeout_call = None
        self.protocol = None
        if self._timed_out:
            err = EngineUnavailable(ENGINE, f"connect timed out after {self.settings.connect_timeout_s} s")
        else:
            err = EngineUnavailable(ENGINE, f"connect failed: {reason.getErrorMessage()}")
        self._failed(err)

    def ws_connect(self, proto: DeepgramClientProtocol, response: ConnectionResponse) -> None:
        """The server accepted the upgrade (101); remember its request id."""
        if proto is self.protocol:
            headers = response.headers or {}
            self._request_id = headers.get("dg-request-id")

    def ws_open(self, proto: DeepgramClientProtocol) -> None:
        """The WebSocket is open: tell the owner, then keep it alive."""
        if proto is not self.protocol or self.state is not State.CONNECTING:
            proto.dropConnection(abort=True)
            return
        _cancel(self._timeout_call)
        self._timeout_call = None
        self.state = State.OPEN
        self._last_seen = False
        self._server_error = None
        self._failures = 0
        self._traffic.opened()
        self._owner.connection_opened(self._request_id)
        self._traffic.start()

    def ws_message(self, proto: DeepgramClientProtocol, payload: bytes, is_binary: bool) -> None:
        """One server message: to the owner, if it is from the current socket."""
        if proto is self.protocol:
            self.liveness.received()
            self._owner.message_received(payload, is_binary)

    def ws_pong(self, proto: DeepgramClientProtocol) -> None:
        """A pong (the answer to our liveness ping) from the current socket."""
        if proto is self.protocol:
            self.liveness.received()

    def ws_close(self, proto: DeepgramClientProtocol, was_clean: bool, code: Optional[int],
                 reason: Optional[str]) -> None:
        """The connection ended: a normal end, a refused upgrade, or a drop."""
        if proto is not self.protocol:
            return
        was_open = self._traffic.open
        self.protocol = None
        _cancel(self._timeout_call)
        self._timeout_call = None
        self._traffic.ended()
        if self.state in (State.CLOSED, State.FAILED):
            return
        if was_open and self._traffic.close_sent and (code in self.dialect.normal_closes or self._last_seen):
            self.log.info("deepgram: closed call={call_id} ext={ext} api={api} code={code}",
                          call_id=self.call_id, ext=self.extension, api=self.dialect.name, code=code)
            self._shutdown()
            return
        headers = getattr(proto, "http_headers", None) or {}
        err = close_error(was_open, code, reason, None if was_open else upgrade_status(proto), headers,
                          self._timed_out, self._traffic.dead_after,
                          self._server_error or "", self.settings.connect_timeout_s, self.settings.api_key)
        self._traffic.dead = False
        self._failed(err)

    # -- internals ---------------------------------------------------------

    def _connect_timed_out(self, attempt: int) -> None:
        self._timeout_call = None
        if attempt != self.connect_attempts or self.state is not State.CONNECTING:
            return
        self._timed_out = True
        if self.protocol is not None:
            self.protocol.dropConnection(abort=True)
        elif self._connector is not None:
            try:
                self._connector.stopConnecting()
            except Exception:
                pass

    def _failed(self, err: EngineError) -> None:
        self._timed_out = False
        if not err.retryable:
            self.state = State.FAILED
            self._cancel_timers()
            self.log.error("deepgram: giving up call={call_id} ext={ext}: {error}",
                           call_id=self.call_id, ext=self.extension, error=err.message)
            self._owner.connection_down(err, retrying=False)
            return
        self._failures += 1
        delay = backoff_delay(self._failures, self.settings.backoff_initial_s, self.settings.backoff_max_s,
                              self.settings.backoff_factor, self._random)
        self.state = State.BACKOFF
        self._retry_call = self.reactor.callLater(delay, self.connect)
        self.log.warn("deepgram: {error}; retry {attempt} in {delay:.2f} s call={call_id} ext={ext}",
                      error=err.message, attempt=self._failures, delay=delay,
                      call_id=self.call_id, ext=self.extension)
        self._owner.connection_down(err, retrying=True)

    def _shutdown(self) -> None:
        self.state = State.CLOSED
        self._cancel_timers()
        proto, self.protocol = self.protocol, None
        self._traffic.open = False
        if proto is not None:
            proto.dropConnection(abort=True)
        elif self._connector is not None and getattr(self._connector, "state", None) == "connecting":
            try:
                self._connector.stopConnecting()
            except Exception:
                pass
        self._owner.connection_closed()

    def _cancel_timers(self) -> None:
        for call in (self._timeout_call, self._retry_call):
            _cancel(call)
        self._timeout_call = self._retry_call = None
        self._traffic.stop()
