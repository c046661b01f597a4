"""
One translation direction of :class:`~xlbridge.engines.apertium.mt.ApertiumMT`:
its queue, its pipeline process and the restarts (:class:`Direction`), and
the engine's :class:`ApertiumCounters`.
"""

from __future__ import annotations

import collections
import os
import shutil
from typing import Optional

import attrs
from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.engines.apertium.pipe import ApertiumPipe
from xlbridge.engines.apertium.settings import ApertiumSettings, install_problem
from xlbridge.engines.apertium.text import ENGINE, decode_reply, encode_sentence
from xlbridge.engines.base import EngineUnavailable, IProcessReactor


@attrs.define
class ApertiumCounters:
    """
    What the engine did, for the monitor.  Updated on the reactor thread.

    :ivar sentences: sentences translated.
    :ivar restarts: pipelines respawned after a failure.
    :ivar timeouts: sentences that got no answer in time (each restarts).
    :ivar rejected: requests refused because a direction's queue was full.
    :ivar failed: requests that errbacked for any other reason.
    :ivar last_latency_ms: milliseconds from ``translate()`` to the result
        of the last translated sentence, queueing included.
    """

    sentences: int = 0
    restarts: int = 0
    timeouts: int = 0
    rejected: int = 0
    failed: int = 0
    last_latency_ms: Optional[float] = None


@attrs.define(eq=False)
class _Request:
    text: str
    deferred: "Deferred[str]"
    submitted: float
    attempts: int = 0


class Direction:
    """
    The queue, the process and its restarts for one mode.
    """

    log = Logger()

    def __init__(self, reactor: IProcessReactor, settings: ApertiumSettings, mode: str,
                 counters: ApertiumCounters) -> None:
        self.reactor = reactor
        self.settings = settings
        self.mode = mode
        self.counters = counters
        self.pipe: Optional[ApertiumPipe] = None
        #: Every pipe not known to have exited, failed ones included, so
        #: :meth:`close` can wait for all of them.
        self._pipes: list[ApertiumPipe] = []
        self._queue: collections.deque[_Request] = collections.deque()
        self._inflight: Optional[_Request] = None
        self._script: Optional[str] = None
        self._starting: Optional[Deferred[None]] = None
        self._timer: Optional[IDelayedCall] = None
        self._restart_call: Optional[IDelayedCall] = None
        self._not_before = 0.0
        self._failures = 0
        self._restarting = False
        self._closed = False

    def submit(self, text: str) -> "Deferred[str]":
        if self._closed:
            return self._refuse("the engine is closed")
        if len(self._queue) >= self.settings.max_queue:
            self.counters.rejected += 1
            return fail(EngineUnavailable(ENGINE, f"{self.mode}: {len(self._queue)} sentences already waiting"))
        request = _Request(text, Deferred(lambda d: self._cancel(request)), self.reactor.seconds())
        self._queue.append(request)
        self._pump()
        return request.deferred

    def _refuse(self, why: str) -> "Deferred[str]":
        self.counters.failed += 1
        return fail(EngineUnavailable(ENGINE, why))

    def _cancel(self, request: _Request) -> None:
        if request in self._queue:
            self._queue.remove(request)
        # One in flight is left to finish; its reply is dropped.

    def _pump(self) -> None:
        if self._closed or self._inflight is not None or not self._queue:
            return
        if self.pipe is None:
            self._ensure_pipe()
            return
        request = self._queue.popleft()
        self._inflight = request
        request.attempts += 1
        first = self.pipe.replies == 0
        self.pipe.send(encode_sentence(request.text))
        timeout = self.settings.first_timeout_s if first else self.settings.timeout_s
        self._timer = self.reactor.callLater(timeout, self._timed_out, self.pipe, timeout)

    # -- process lifecycle --

    def _ensure_pipe(self) -> None:
        if self._closed or self.pipe is not None or self._starting is not None or self._restart_call is not None:
            return
        wait = self._not_before - self.reactor.seconds()
        if wait > 0:
            self._restart_call = self.reactor.callLater(wait, self._restart_due)
            return
        problem = install_problem(self.settings, [self.mode])
        if problem is not None:
            self._fail_waiting(problem)
            return
        if self._script is None:
            d = getProcessOutputAndValue(
                shutil.which("apertium-wblank-mode") or "apertium-wblank-mode",
                ["-z", self.settings.mode_path(self.mode)],
                env=dict(os.environ),
                reactor=self.reactor,
            )
            # Set before the callbacks, which clear it (even if d has fired).
            self._starting = d
            d.addCallbacks(self._got_script, self._script_failed)
            d.addErrback(lambda f: self.log.failure("Apertium start-up for {mode}", f, mode=self.mode))
            return
        self._spawn()

    def _restart_due(self) -> None:
        self._restart_call = None
        self._ensure_pipe()

    def _got_script(self, result: tuple[bytes, bytes, int]) -> None:
        self._starting = None
        out, err, code = result
        script = out.decode("utf-8", "replace").strip()
        if self._closed:
            return
        if code != 0 or err.strip() or not script or script.startswith("-z"):
            self._fail_waiting(
                f"apertium-wblank-mode could not read {self.settings.mode_path(self.mode)} "
                f"(exit {code}: {err.decode('utf-8', 'replace').strip()[:200]!r})"
            )
            return
        self._script = script
        self._spawn()

    def _script_failed(self, failure: Failure) -> None:
        self._starting = None
        self._fail_waiting(f"apertium-wblank-mode failed: {failure.value}")

    def _spawn(self) -> None:
        assert self._script is not None
        shell = shutil.which("bash") or "/bin/sh"
        argv = [shell, "-c", self._script, "apertium-pipe", "-n", ""]
        setsid = shutil.which("setsid")
        if setsid is not None:
            argv.insert(0, setsid)
        pipe = ApertiumPipe(self.mode, self._reply, self._pipe_failed)
        try:
            self.reactor.spawnProcess(pipe, argv[0], argv, env=dict(os.environ))
        except OSError as e:
            self._fail_waiting(f"cannot start the {self.mode} pipeline: {e}")
            return
        if self._restarting:
            self._restarting = False
            self.counters.restarts += 1
            self.log.info("Apertium {mode} pipeline restarted", mode=self.mode)
        self.pipe = pipe
        self._pipes = [p for p in self._pipes if not p.ended] + [pipe]
        self._pump()

    def _fail_waiting(self, why: str) -> None:
        """
        Errback everything waiting (and in flight) with ``why``.
        """
        waiting = list(self._queue)
        self._queue.clear()
        if self._inflight is not None:
            waiting.insert(0, self._inflight)
            self._inflight = None
        for request in waiting:
            self._errback(request, why)

    def _errback(self, request: _Request, why: str) -> None:
        if not request.deferred.called:
            self.counters.failed += 1
            request.deferred.errback(EngineUnavailable(ENGINE, f"{self.mode}: {why}"))

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- events from the pipe --

    def _reply(self, pipe: ApertiumPipe, reply: bytes) -> None:
        if pipe is not self.pipe:
            return
        request = self._inflight
        if request is None:
            self._pipe_failed(pipe, f"sent output nobody asked for: {reply[:100]!r}")
            return
        self._stop_timer()
        self._inflight = None
        self._failures = 0
        if not request.deferred.called:
            self.counters.sentences += 1
            self.counters.last_latency_ms = (self.reactor.seconds() - request.submitted) * 1000.0
            request.deferred.callback(decode_reply(reply, request.text))
        self._pump()

    def _timed_out(self, pipe: ApertiumPipe, timeout: float, looked_again: bool = False) -> None:
        self._timer = None
        if pipe is not self.pipe:
            return
        if not looked_again:
            # After a reactor stall (a long handler, the GIL held by a
            # thread), expired timers run before the I/O that came in
            # meanwhile is read: the reply may be waiting in the pipe.
            # Look once more after this turn's I/O.
            self._timer = self.reactor.callLater(0, self._timed_out, pipe, timeout, True)
            return
        self.counters.timeouts += 1
        # Not retried (see the notes in xlbridge.engines.apertium.mt): take it out of flight first,
        # so the restart below does not queue it again.
        request, self._inflight = self._inflight, None
        self._pipe_failed(pipe, f"no answer within {timeout:g} s")
        if request is not None:
            self._errback(request, f"no answer within {timeout:g} s; the pipeline was restarted")

    def _pipe_failed(self, pipe: ApertiumPipe, reason: str) -> None:
        if pipe is not self.pipe:
            return
        self.pipe = None
        self._stop_timer()
        pipe.kill()
        self._failures += 1
        delay = min(self.settings.backoff_initial_s * 2 ** (self._failures - 1), self.settings.backoff_max_s)
        self._not_before = self.reactor.seconds() + delay
        self._restarting = True
        self.log.warn(
            "Apertium {mode} pipeline failed: {reason}; respawning in {delay:.2f} s",
            mode=self.mode, reason=reason, delay=delay,
        )
        request, self._inflight = self._inflight, None
        if request is not None:
            if request.attempts < 2:
                self._queue.appendleft(request)
            else:
                self._errback(request, f"the pipeline failed twice on this sentence ({reason})")
        if self._failures >= self.settings.max_failures:
            self._fail_waiting(f"the pipeline failed {self._failures} times in a row ({reason})")
        self._pump()

    def close(self) -> "Deferred[None]":
        self._closed = True
        self._stop_timer()
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None
        self._fail_waiting("the engine was closed")
        self.pipe = None
        pipes, self._pipes = self._pipes, []
        ds = [p.close(self.reactor) for p in pipes if not p.ended]
        if self._starting is not None:
            # Let ``apertium-wblank-mode`` finish rather than leave it running.
            ds.append(self._starting)
        return DeferredList(ds).addCallback(lambda _: None)
