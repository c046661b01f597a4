"""
The ARI events WebSocket (``/ari/events?app=...``), kept connected.

An Autobahn client protocol only forwards its callbacks; :class:`ARIEvents`
owns the connection: it connects, times out, says why each attempt failed,
backs off and reconnects, runs the owner's start-up requests after each
connection, and when Asterisk refuses our user (401/403) closes and tries
again slowly.  An Asterisk restart only costs the calls it dropped.
The socket itself (URL, credentials, Autobahn's factory and protocol) is in
:mod:`xlbridge.ari.events_socket`; one attempt to open it in
:mod:`~xlbridge.ari.events_attempts`, each message received in
:mod:`~xlbridge.ari.events_intake`, the start-up requests in
:mod:`~xlbridge.ari.events_startup`, what a refusal logs in
:mod:`~xlbridge.ari.events_refusals`, the states and their diagram in
:mod:`~xlbridge.ari.events_lifecycle`.

Design notes
------------

* **Why not ClientService?**  It counts a connection as made once TCP
  connects and resets its retry count, but Asterisk refuses a wrong
  password *after* TCP, in the HTTP upgrade: with a wrong password it
  retried about once a second for ever, and its only log line was
  "Scheduling retry N".  So the loop is ours, as in
  :mod:`xlbridge.engines.deepgram.connection`: a failure counter, our own
  log lines, ``clock.callLater``.
* **Backoff.**  :func:`~xlbridge.ari.retry.retry_delay`: ``initial_delay``
  (1 s) doubling per failure in a row up to ``max_delay`` (60 s), with
  jitter; what each failure logs is in :mod:`xlbridge.ari.retry` too.  The
  count goes back to zero once a connection has stayed open
  ``stable_after`` seconds (10 s), checked when it closes, so a socket
  Asterisk accepts and drops at once still backs off.
* **Start-up requests.**  ``on_connect`` may return a Deferred (the
  controller's access check and leftover cleanup); failures that may heal
  are retried on the same schedule while the socket stays open
  (:class:`~xlbridge.ari.events_startup.StartupRequests`).
* **Refused (401/403).**  On the upgrade, in the start-up requests, or in
  any later REST request (:meth:`refused`, which
  :attr:`~xlbridge.ari.client.ARIClient.on_refused` calls): the socket
  closed (so ``Stasis()`` fails at once in the dialplan instead of parking
  callers in a silent app) and a new attempt every ``refused_delay``
  (60 s), logged by :class:`~xlbridge.ari.events_refusals.RefusalLog`.  A
  user or password fixed in ``ari.conf`` (``module reload res_ari.so``) is
  picked up without restarting xlbridge; calls on the fixed ports never
  depend on ARI.
* **Liveness.**  A half-open socket (Asterisk's host gone with no FIN)
  looked connected for as long as TCP cared to wait.  Once open, the socket
  is watched by a :class:`~xlbridge.liveness.Liveness`: after
  ``liveness_idle`` (10 s) with nothing received a PING goes out (never an
  unsolicited PONG: it crashes some Asterisk builds), and if nothing arrives
  within ``liveness_timeout`` (10 s) the socket is aborted, one warning
  (:data:`UNANSWERED`) says so, and it is handled as any drop: backoff,
  reconnect, start-up requests.
* **Malformed events.**  Checked by :mod:`xlbridge.ari.event_checks`
  (re-exported here: :func:`check_event`, :func:`decode_event`), counted
  and logged by :class:`~xlbridge.ari.events_intake.EventIntake`.
  Counters for an exporter: :attr:`ARIEvents.counts`.
* **Clock.**  Every timer is on the injected clock; Autobahn's own are
  off (:mod:`xlbridge.ari.events_socket`).
"""

from __future__ import annotations

import random as _random
from typing import Any, Callable, Optional, Union

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.ari.client import ARIAuthError
from xlbridge.ari.event_checks import Rejected, check_event, decode_event
from xlbridge.ari.events_attempts import ConnectAttempts, cancel_call
from xlbridge.ari.events_intake import EventHandler, EventIntake
from xlbridge.ari.events_lifecycle import State
from xlbridge.ari.events_refusals import RefusalLog
from xlbridge.ari.events_socket import EventsProtocol, close_socket, events_endpoint, events_factory, events_url
from xlbridge.ari.events_startup import StartupRequests
from xlbridge.liveness import LIVENESS_IDLE_S, LIVENESS_TIMEOUT_S, Liveness
from xlbridge.ari.reactor import IHTTPReactor
from xlbridge.ari.retry import CLOSED, RETRYING, retry_delay, upgrade_failure, upgrade_refusal

__all__ = [
    "LIVENESS_IDLE_S",
    "LIVENESS_TIMEOUT_S",
    "UNANSWERED",
    "ARIEvents",
    "check_event",
    "decode_event",
    "events_url",
]

#: The socket was dropped because a ping went unanswered (fields
#: ``silent``: seconds with nothing received, ``timeout``, ``up``: seconds
#: it was open, ``delay``).  The one line logged for that drop.
UNANSWERED = (
    "ARI events: no answer from Asterisk to a ping within {timeout:g} s (nothing received for "
    "{silent:.1f} s): connection dropped after {up:.1f} s; next attempt in {delay:.1f} s"
)


class ARIEvents(Service):
    """
    Keep the events socket open; ``on_event`` gets each event as a dict and
    ``on_connect`` is called after every (re)connection, so the owner can
    clean up what an earlier connection left behind (it may return a
    Deferred: see the module's notes).

    :param reactor: makes the TCP connections (and is the clock unless
        ``clock`` is given).
    :param endpoint: where to connect (default: ``HostnameEndpoint`` to the
        host and port of ``base``; tests pass their own).
    :param random: jitter source returning ``[0, 1)``.
    :param liveness_idle: seconds with nothing received before a ping.
    :param liveness_timeout: seconds a ping may go unanswered before the
        socket is dropped (see the module's notes).

    :ivar state: a :class:`~xlbridge.ari.events_lifecycle.State`.
    :ivar connections: connections opened so far.
    :ivar failures: failed attempts in a row (the backoff exponent).
    :ivar last_error: why the last attempt failed, or ``None``.
    :ivar next_attempt: clock time of the next attempt, or ``None``.
    :ivar malformed: events dropped as malformed (:func:`decode_event`),
        by reason text (``counts.malformed``).
    :ivar counts: an :class:`~xlbridge.ari.event_checks.EventCounts`:
        ``counts.received`` (events handed on, by type, ``"other"`` for
        types the controller ignores) and ``counts.dropped`` (malformed, by
        reason code), bounded key sets for ``/metrics``.
    :ivar liveness: the socket's :class:`~xlbridge.liveness.Liveness`
        (``liveness.pings``: pings sent; ``liveness.dead_count``: sockets
        dropped for an unanswered ping).
    :ivar startup: the :class:`~xlbridge.ari.events_startup.StartupRequests`
        running ``on_connect`` after each connection.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IHTTPReactor,
        base: str,
        app: str,
        user: str,
        password: str,
        on_event: EventHandler,
        on_connect: Callable[[], Optional["Deferred[Any]"]] = lambda: None,
        max_delay: float = 60.0,
        *,
        initial_delay: float = 1.0,
        refused_delay: float = 60.0,
        stable_after: float = 10.0,
        connect_timeout: float = 10.0,
        clock: Optional[IReactorTime] = None,
        endpoint: Optional[IStreamClientEndpoint] = None,
        random: Callable[[], float] = _random.random,
        liveness_idle: float = LIVENESS_IDLE_S,
        liveness_timeout: float = LIVENESS_TIMEOUT_S,
    ) -> None:
        self.url = events_url(base, app)
        self.user = user
        self._factory = events_factory(self.url, user, password, self)
        self.address, self.endpoint = events_endpoint(reactor, base, connect_timeout, endpoint)
        self.clock: IReactorTime = clock or reactor
        self.on_event = on_event
        self.on_connect = on_connect
        self.initial_delay, self.max_delay = initial_delay, max_delay
        self.refused_delay, self.stable_after = refused_delay, stable_after
        self.connect_timeout = connect_timeout
        self._random = random

        self.state = State.STOPPED
        self.connections = 0
        self.failures = 0
        self.last_error: Optional[str] = None
        self.next_attempt: Optional[float] = None
        self.protocol: Optional[EventsProtocol] = None
        self._open = False
        self._opened_at = 0.0
        self._retry_call: Optional[IDelayedCall] = None
        self.startup = StartupRequests(
            lambda: self.on_connect(), self.clock, self._delay, self._started, self._startup_failed,
            self.refused, self.log,
        )
        self._refusals = RefusalLog(self.log, user)
        self._stopping: list[Deferred[None]] = []
        self._attempts = ConnectAttempts(
            lambda: self.endpoint.connect(self._factory), self.clock, connect_timeout, self.address,
            lambda: bool(self.running) and self.state is State.CONNECTING, self._upgrading, self._failed,
            lambda: self.protocol,
        )
        self._intake = EventIntake(lambda event: self.on_event(event), self.log, self.clock)
        self.counts = self._intake.counts
        self.malformed: dict[str, int] = self.counts.malformed
        self.liveness = Liveness(self.clock, self._ping, self._unanswered, liveness_idle, liveness_timeout)
        #: seconds of silence when the liveness check dropped the socket
        self._dead: Optional[float] = None

    @property
    def connected(self) -> bool:
        """
        The socket is open (events arrive), whatever the start-up requests.
        """
        return self._open

    @property
    def attempts(self) -> int:
        """Connection attempts started so far."""
        return self._attempts.count

    def status(self) -> dict[str, Any]:
        """
        JSON-ready state, for an operator: ``state``, ``connections``,
        ``failures``, ``last_error``, ``next_attempt_in`` (seconds or
        ``None``), ``malformed`` (events dropped, by reason), ``pings``
        (liveness pings sent), ``silent_for`` (seconds since anything was
        received on the open socket, 0 when closed).
        """
        due = None if self.next_attempt is None else max(0.0, self.next_attempt - self.clock.seconds())
        return {
            "state": str(self.state), "connections": self.connections, "failures": self.failures,
            "last_error": self.last_error, "next_attempt_in": due, "malformed": dict(self.malformed),
            "pings": self.liveness.pings, "silent_for": self.liveness.silent_for(),
        }

    # -- service -------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._connect()

    def stopService(self) -> "Deferred[None]":
        # A WebSocket close first (Asterisk logs a dropped TCP connection
        # otherwise), then TCP is closed once that frame is written.
        super().stopService()
        self.state = State.STOPPED
        self.next_attempt = None
        self._intake.flush()
        self.liveness.stop()
        self.startup.cancel()
        cancel_call(self._retry_call)
        self._attempts.cancel()
        proto = self.protocol
        if proto is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stopping.append(d)
        self._close(proto, "xlbridge stopping")
        return d

    # -- attempts --------------------------------------------------------------

    def _connect(self) -> None:
        self._retry_call = None
        self.next_attempt = None
        if not self.running:
            return
        self.state = State.CONNECTING
        self._attempts.start()

    def _upgrading(self, proto: EventsProtocol) -> None:
        """TCP is connected for the current attempt: the upgrade is under way."""
        self.protocol = proto

    def _opened(self, proto: EventsProtocol) -> None:
        if proto is not self.protocol or self.state is not State.CONNECTING:
            proto.dropConnection(abort=True)
            return
        self._attempts.done()
        self._open = True
        self._opened_at = self.clock.seconds()
        self.connections += 1
        self.last_error = None
        self.state = State.PREPARING
        self.log.info("ARI events connected ({n})", n=self.connections)
        self.liveness.start()
        self.startup.start(proto)

    def _event(self, event: dict[str, Any]) -> None:
        self._intake.event(event)

    def _malformed(self, rejected: Rejected, payload: bytes) -> None:
        self._intake.malformed(rejected, payload)

    # -- liveness ------------------------------------------------------------------

    def _received(self, proto: EventsProtocol) -> None:
        if proto is self.protocol:
            self.liveness.received()

    def _ping(self) -> None:
        if self.protocol is not None and self._open:
            self.protocol.sendPing()  # a PING, never a PONG (module notes)

    def _unanswered(self, silent: float) -> None:
        """The liveness check judged the socket dead: abort it (logged in :meth:`_closed`)."""
        if self.protocol is None or not self._open:
            return
        self._dead = silent
        self.protocol.dropConnection(abort=True)

    # -- start-up requests -------------------------------------------------------

    def _started(self, ok: bool) -> None:
        """The start-up requests succeeded (``ok``) or failed with a bug."""
        self.state = State.UP
        if not ok:
            return
        self.last_error = None
        self._refusals.accepted()

    def _startup_failed(self, why: str) -> None:
        self.last_error = why

    # -- failures ----------------------------------------------------------------

    def _delay(self, failures: int) -> float:
        return retry_delay(failures, self.initial_delay, self.max_delay, random=self._random)

    def _schedule(self, delay: float) -> None:
        self.next_attempt = self.clock.seconds() + delay
        self._retry_call = self.clock.callLater(delay, self._connect)

    def _failed(self, why: str) -> None:
        self._attempts.done()
        self.failures += 1
        delay = self._delay(self.failures)
        self.state = State.BACKOFF
        self.last_error = why
        self._schedule(delay)
        self.log.warn(RETRYING, why=why, delay=delay, n=self.failures)

    def _closed(self, proto: EventsProtocol, code: Optional[int], reason: Optional[str]) -> None:
        if proto is not self.protocol:
            return
        was_open = self._open
        dead, self._dead = self._dead, None
        self.protocol = None
        self._open = False
        self.liveness.stop()
        self.startup.stop()
        self._attempts.done()
        if not self.running:
            self.log.info("ARI events closed")
            waiting, self._stopping = self._stopping, []
            for d in waiting:
                d.callback(None)
            return
        if self.state is State.REFUSED:
            return  # we closed it; the next attempt is scheduled
        if was_open:
            up = self.clock.seconds() - self._opened_at
            if up >= self.stable_after:
                self.failures = 0
            self.failures += 1
            delay = self._delay(self.failures)
            self.state = State.BACKOFF
            self._schedule(delay)
            if dead is not None:
                self.last_error = f"no answer to a ping within {self.liveness.timeout:g} s"
                self.log.warn(UNANSWERED, timeout=self.liveness.timeout, silent=dead, up=up, delay=delay)
            else:
                self.last_error = f"closed ({code} {reason})"
                self.log.warn(CLOSED, code=code, reason=reason, up=up, delay=delay)
            return
        refusal = upgrade_refusal(proto)
        if refusal is not None and refusal[0] in (401, 403):
            self._refuse(refusal[0], refusal[1], "the events WebSocket")
        else:
            self._failed(upgrade_failure(self.address, self.connect_timeout, refusal, self._attempts.timed_out, reason))

    def refused(self, error: Union[ARIAuthError, Failure]) -> None:
        """
        Asterisk refused our user on a REST request (401/403): close, say
        why, and try again in ``refused_delay`` seconds.  Once refused,
        later refusals until the next attempt change nothing.
        """
        err = error.value if isinstance(error, Failure) else error
        assert isinstance(err, ARIAuthError)
        if not self.running or self.state in (State.REFUSED, State.STOPPED):
            return
        self._refuse(err.status, err.answer, f"{err.method} {err.path}")

    def _refuse(self, status: int, answer: str, where: str) -> None:
        self.startup.stop()
        self._attempts.done()
        cancel_call(self._retry_call)
        self._retry_call = None
        self.state = State.REFUSED
        self.failures = 0
        self._attempts.cancel()
        if self.protocol is not None:
            self._close(self.protocol, "credentials refused")
        self.last_error = f"refused: {answer} on {where}"
        delay = self.refused_delay
        self._schedule(delay)
        self._refusals.refused(status, answer, where, delay)

    def _close(self, proto: EventsProtocol, why: str) -> None:
        self.liveness.stop()  # closing: no ping, and no judging the close handshake
        close_socket(proto, self._open, why)
