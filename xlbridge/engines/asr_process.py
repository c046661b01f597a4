# -*- test-case-name: tests.test_asr_worker -*-
"""
The parent side of the ASR worker processes (:mod:`xlbridge.engines.asr_worker`):
the ``process`` backend of :class:`~xlbridge.engines.local_asr.LocalASR`.

Design notes
------------

* **Why.**  pocketsphinx holds the GIL while decoding, so from a pool
  thread it still delays the reactor (and every call's 20 ms egress tick)
  ~2 ms per frame and 10-20 ms per utterance.  Here the reactor only
  writes frames to a pipe and parses small JSON replies.
* **Workers.**  :class:`ASRWorkerPool` runs ``workers`` children (default:
  CPU cores minus one, at least one), ``sys.executable -m
  xlbridge.engines.asr_worker`` with only ``PATH`` and ``PYTHONPATH``
  passed on; each keeps its own idle decoders.  A new stream goes to the
  least-loaded worker.  A leg sends one batch at a time
  (:meth:`WorkerStream.run`); replies match requests per stream, in order.
* **Crashes.**  When a worker dies, each stream on it tells its leg once
  (``on_lost``); the batch in flight errbacks :class:`WorkerLost`.  The
  worker is respawned after ``BACKOFF_S``, doubling per quick death up to
  ``MAX_BACKOFF_S``; every stream is re-opened on it with its clock
  intact (``skip``), and ``on_back`` follows the answer.
* **Shutdown.**  :meth:`ASRWorkerPool.close` sends CLOSE, closes stdin and
  kills a worker still there after ``close_timeout_s``.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

import xlbridge
from xlbridge.engines.asr_worker import (
    AUDIO, CLOSE, FINISH, FINISHED, LOAD, LOADED, OPEN, Framer, FramingError, Message, ModelSpec,
    StreamParams, audio_payload, dump, encode, event_from_json, spec_to_json,
)
from xlbridge.engines.base import EngineError, EngineRequestError, EngineUnavailable
from xlbridge.engines.sphinx import ENGINE

if TYPE_CHECKING:
    from xlbridge.engines.local_asr import _Batch

#: First respawn delay, seconds; doubles per worker that died within STABLE_S.
BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
#: A worker that lived this long (seconds) resets the backoff.
STABLE_S = 10.0

WORKER_ARGS = ["-m", "xlbridge.engines.asr_worker"]


class WorkerLost(EngineUnavailable):
    """The worker process died with this stream's request in it."""


def default_workers() -> int:
    """One worker per CPU core minus one (the reactor's), at least one."""
    return max(1, (os.cpu_count() or 1) - 1)


def worker_env() -> dict[str, str]:
    """
    The child's environment: ``PATH`` and ``PYTHONPATH`` only, with the
    directory holding this ``xlbridge`` package first, so the child imports
    the same code even when the parent found it via its working directory.
    """
    env = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    root = os.path.dirname(os.path.dirname(os.path.abspath(xlbridge.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    return env


def _error(d: dict[str, Any]) -> EngineError:
    cls = EngineUnavailable if d.get("retryable", True) else EngineRequestError
    return cls(ENGINE, str(d.get("message", "unknown worker error")))


class WorkerProtocol(ProcessProtocol):
    """One worker process: frames its stdout into replies for its slot, relays stderr to the log."""

    log = Logger()

    def __init__(self, slot: "WorkerSlot") -> None:
        self.slot = slot
        self.framer = Framer()
        self.ended = False
        self.stopping = False
        self.pid: Optional[int] = None
        self._err = b""
        self._end_waiters: list[Deferred[None]] = []

    def connectionMade(self) -> None:
        self.pid = getattr(self.transport, "pid", None)

    def send(self, data: bytes) -> None:
        """Write encoded requests (buffered by the transport, never blocking)."""
        if not (self.ended or self.stopping) and self.transport is not None:
            self.transport.write(data)

    def outReceived(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except FramingError as e:
            self.log.error("asr-worker[{pid}]: bad framing on stdout ({error}); killing it", pid=self.pid, error=e)
            self.kill()
            return
        for msg in messages:
            try:
                self.slot.reply(self, msg)
            except Exception:
                self.log.failure("asr-worker[{pid}]: bad reply {kind}; killing it", pid=self.pid, kind=msg.kind)
                self.kill()
                return

    def errReceived(self, data: bytes) -> None:
        self._err += data
        *lines, self._err = self._err.split(b"\n")
        if len(self._err) > 65536:  # no newline in sight: log what there is
            lines.append(self._err)
            self._err = b""
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            level, _, text = line.partition(" ")
            emit = {"error": self.log.error, "warn": self.log.warn, "info": self.log.info}.get(level)
            if emit is None:
                emit, text = self.log.info, line
            emit("asr-worker[{pid}]: {text}", pid=self.pid, text=text)

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        self.slot.ended(self, reason)
        waiters, self._end_waiters = self._end_waiters, []
        for d in waiters:
            d.callback(None)

    def kill(self) -> None:
        """SIGKILL, if still running."""
        if not self.ended and self.transport is not None:
            try:
                self.transport.signalProcess("KILL")  # type: ignore[attr-defined]
            except Exception:
                pass

    def stop(self, reactor: Any, timeout_s: float) -> "Deferred[None]":
        """CLOSE and end of input; SIGKILL after ``timeout_s``.  Fires when it exited."""
        if self.ended:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._end_waiters.append(d)
        if self.stopping:
            return d
        self.send(encode(CLOSE, 0))
        self.stopping = True
        if self.transport is not None:
            self.transport.closeStdin()  # type: ignore[attr-defined]
        timer = reactor.callLater(timeout_s, self.kill)
        return d.addCallback(lambda _: timer.cancel() if timer.active() else None)


class WorkerStream:
    """
    One leg's stream on a worker slot (it survives the worker's respawn).

    :param on_lost: called with a :class:`WorkerLost` when the worker died.
    :param on_back: called when the stream was re-opened on the respawned
        worker, with the error if that failed, else ``None``.
    """

    def __init__(self, slot: "WorkerSlot", stream_id: int, spec: ModelSpec, params: StreamParams,
                 on_lost: Callable[[EngineError], None], on_back: Callable[[Optional[EngineError]], None]) -> None:
        self.slot = slot
        self.stream_id = stream_id
        self.spec = spec
        self.params = params
        self.on_lost = on_lost
        self.on_back = on_back
        #: Frames (fed + skipped) the worker answered for: a re-open skips them.
        self.accounted = 0
        self.attached = False
        self.closed = False  # the leg is done with it
        self._was_lost = False
        self._finish_sent = False
        #: Reply handlers in request order; called with ``None`` if the worker died.
        self._replies: collections.deque[Callable[[Optional[Message]], None]] = collections.deque()
        self._held: list[tuple["_Batch", Deferred["_Batch"]]] = []

    def attach(self) -> None:
        """Open on the slot's (new) worker, then send any batch held meanwhile."""
        self.attached, self._finish_sent = True, False
        payload = {"model": spec_to_json(self.spec), "params": self.params.to_json(),
                   "idle": self.slot.pool.idle_decoders, "skip": self.accounted}
        self._send(OPEN, dump(payload), self._reopened if self._was_lost else lambda msg: None)
        self._was_lost = False
        held, self._held = self._held, []
        for batch, d in held:
            self._send_batch(batch, d)

    def _reopened(self, msg: Optional[Message]) -> None:
        if msg is not None and not self.closed:
            err = json.loads(msg.payload).get("error")
            self.on_back(None if err is None else _error(err))

    def run(self, batch: "_Batch") -> "Deferred[_Batch]":
        """
        Decode ``batch`` (its ``skip``, ``frames``, and if ``final`` its
        ``tail``) in the worker; fires with it, events (stamped with the
        reactor time the reply arrived) and decode seconds filled in, or
        errbacks an :class:`EngineError` (:class:`WorkerLost` if the worker
        died first: then the worker did not account for its frames).
        """
        d: Deferred[_Batch] = Deferred()
        if self.attached:
            self._send_batch(batch, d)
        else:
            self._held.append((batch, d))  # sent once the worker (re)starts
        return d

    def _send_batch(self, batch: "_Batch", d: "Deferred[_Batch]") -> None:
        parts: list[tuple[int, bytes]] = []
        if batch.frames or batch.skip or not batch.final:
            parts.append((AUDIO, audio_payload(batch.frames, batch.skip)))
        if batch.final:
            parts.append((FINISH, batch.tail))
            self._finish_sent = True
        left = [len(parts)]
        errors: list[EngineError] = []

        def got(msg: Optional[Message]) -> None:
            if msg is None:
                errors.insert(0, WorkerLost(ENGINE, "the ASR worker exited"))
            else:
                reply = json.loads(msg.payload)
                now = self.slot.pool.reactor.seconds()
                batch.events.extend(event_from_json(e, now) for e in reply.get("events", ()))
                batch.seconds += reply.get("seconds", 0.0)
                if reply.get("error") is not None:
                    errors.append(_error(reply["error"]))
                if msg.kind == FINISHED:
                    self._gone()
            left[0] -= 1
            if left[0]:
                return
            if errors and isinstance(errors[0], WorkerLost):
                d.errback(errors[0])
                return
            self.accounted += batch.skip + len(batch.frames)
            d.errback(errors[0]) if errors else d.callback(batch)

        for kind, payload in parts:
            self._send(kind, payload, got)

    def _send(self, kind: int, payload: bytes, on_reply: Callable[[Optional[Message]], None]) -> None:
        self._replies.append(on_reply)
        self.slot.send(encode(kind, self.stream_id, payload))

    def reply(self, msg: Message) -> None:
        """A reply from the worker for this stream (they come in request order)."""
        if not self._replies:
            self.slot.pool.log.warn("asr: unexpected reply for stream {sid}", sid=self.stream_id)
            return
        self._replies.popleft()(msg)

    def lost(self, err: EngineError) -> None:
        """The worker died: tell the leg first, then fail what was in flight."""
        self.attached = False
        waiting, self._replies = self._replies, collections.deque()
        if self.closed:
            self._gone()
        else:
            self._was_lost = True
            self.on_lost(err)
        for on_reply in waiting:
            on_reply(None)

    def abandon(self) -> None:
        """The leg is done: end the stream in the worker (its decoder goes back to the pool) and forget it."""
        if self.closed:
            return
        self.closed = True
        if not self.attached:
            self._gone()
        elif not self._finish_sent:
            self._finish_sent = True
            self._send(FINISH, b"", lambda msg: self._gone())

    def _gone(self) -> None:
        self.attached = False
        self.slot.streams.pop(self.stream_id, None)


class WorkerSlot:
    """
    A place for one worker process: its streams outlive the process, which
    is respawned (with backoff) when it dies.
    """

    def __init__(self, pool: "ASRWorkerPool", index: int) -> None:
        self.pool = pool
        self.index = index
        self.protocol: Optional[WorkerProtocol] = None
        self.streams: dict[int, WorkerStream] = {}
        #: Times the worker was respawned after dying; deaths within STABLE_S in a row.
        self.restarts = 0
        self.quick_deaths = 0
        self.started_at = 0.0
        self.respawn_call: Optional[IDelayedCall] = None
        self._loads: dict[int, Deferred[dict[str, Any]]] = {}

    def ensure_running(self) -> None:
        """Spawn the worker unless it runs, waits to respawn, or the pool is closing."""
        if self.protocol is None and self.respawn_call is None and not self.pool.closing:
            self._spawn()

    def _spawn(self) -> None:
        proto = WorkerProtocol(self)
        exe = self.pool.executable
        self.started_at = self.pool.reactor.seconds()
        try:
            self.pool.reactor.spawnProcess(proto, exe, [exe, *WORKER_ARGS], env=worker_env())
        except Exception as e:
            self.pool.log.error("asr: cannot start an ASR worker: {error}", error=e)
            self._died(f"could not start: {e}")
            return
        self.protocol = proto
        for stream in list(self.streams.values()):
            stream.attach()

    def send(self, data: bytes) -> None:
        if self.protocol is not None:
            self.protocol.send(data)

    def load(self, payload: bytes) -> "Deferred[dict[str, Any]]":
        """Ask the running worker to preload decoders; fires with its LOADED reply."""
        if self.protocol is None:
            return succeed({"loaded": 0, "errors": ["the worker is not running"]})
        rid = self.pool.next_id()
        d: Deferred[dict[str, Any]] = Deferred()
        self._loads[rid] = d
        self.protocol.send(encode(LOAD, rid, payload))
        return d

    def reply(self, proto: WorkerProtocol, msg: Message) -> None:
        if proto is not self.protocol:
            return
        if msg.kind == LOADED:
            d = self._loads.pop(msg.stream, None)
            if d is not None:
                d.callback(json.loads(msg.payload))
            return
        stream = self.streams.get(msg.stream)
        if stream is not None:
            stream.reply(msg)

    def ended(self, proto: WorkerProtocol, reason: Failure) -> None:
        if proto is not self.protocol:
            return
        self.protocol = None
        code, sig = getattr(reason.value, "exitCode", None), getattr(reason.value, "signal", None)
        self._died(f"pid {proto.pid} exited ({f'signal {sig}' if sig else f'exit code {code}'})")

    def _died(self, why: str) -> None:
        loads, self._loads = self._loads, {}
        for d in loads.values():
            d.callback({"loaded": 0, "errors": [f"the worker died ({why})"]})
        err = WorkerLost(ENGINE, f"ASR worker {why}")
        if self.pool.closing:
            for stream in list(self.streams.values()):
                stream.lost(err)
            return
        lived = self.pool.reactor.seconds() - self.started_at
        self.quick_deaths = 0 if lived >= STABLE_S else self.quick_deaths + 1
        delay = min(MAX_BACKOFF_S, BACKOFF_S * 2 ** self.quick_deaths)
        self.pool.log.error("asr: worker {why} after {lived:.1f} s with {n} stream(s); respawning in {delay:.2f} s",
                            why=why, lived=lived, n=len(self.streams), delay=delay)
        for stream in list(self.streams.values()):
            stream.lost(err)
        if self.streams or self.pool.preload is not None:
            self.respawn_call = self.pool.reactor.callLater(delay, self._respawn)

    def _respawn(self) -> None:
        self.respawn_call = None
        self.restarts += 1
        self.ensure_running()
        if self.protocol is not None and self.pool.preload is not None:
            self.load(self.pool.preload)


class ASRWorkerPool:
    """
    The worker processes of the ``process`` backend, shared by every leg.

    :param reactor: spawns the workers and times their respawns.
    :param workers: how many (default :func:`default_workers`).
    :param idle_decoders: idle decoders each worker keeps per model.
    :param executable: the Python to run (default ``sys.executable``).
    """

    log = Logger()

    def __init__(self, reactor: Any, workers: Optional[int] = None, idle_decoders: int = 4,
                 executable: Optional[str] = None, close_timeout_s: float = 5.0) -> None:
        self.reactor = reactor
        self.idle_decoders = idle_decoders
        self.executable = executable or sys.executable
        self.close_timeout_s = close_timeout_s
        self.slots = [WorkerSlot(self, i) for i in range(workers or default_workers())]
        self.closing = False
        #: The LOAD payload of :meth:`warm_up`, sent again to respawned workers.
        self.preload: Optional[bytes] = None
        self._ids = 0

    @property
    def restarts(self) -> int:
        """Workers respawned after dying."""
        return sum(s.restarts for s in self.slots)

    def next_id(self) -> int:
        self._ids = self._ids % 0xFFFFFFFF + 1
        return self._ids

    def open_stream(self, spec: ModelSpec, params: StreamParams, on_lost: Callable[[EngineError], None],
                    on_back: Callable[[Optional[EngineError]], None]) -> WorkerStream:
        """A stream on the least-loaded worker (preferring one not waiting to respawn), spawning it if needed."""
        slot = min(self.slots, key=lambda s: (s.respawn_call is not None, len(s.streams), s.index))
        stream = WorkerStream(slot, self.next_id(), spec, params, on_lost, on_back)
        slot.streams[stream.stream_id] = stream
        if slot.protocol is not None:
            stream.attach()
        elif self.closing:
            stream.lost(WorkerLost(ENGINE, "the ASR workers are shut down"))
        else:
            slot.ensure_running()
        return stream

    def warm_up(self, specs: Sequence[ModelSpec], count: int) -> "Deferred[None]":
        """
        Spawn every worker and have each load ``count`` idle decoders per
        model in ``specs`` (respawned workers do it again).  Fires when all
        answered; problems are logged, never errbacked.
        """
        self.preload = dump({"models": [spec_to_json(s) for s in specs], "count": count, "idle": self.idle_decoders})
        ds = []
        for slot in self.slots:
            slot.ensure_running()
            ds.append(slot.load(self.preload))

        def report(replies: list[dict[str, Any]]) -> None:
            for reply in replies:
                for error in reply.get("errors", ()):
                    self.log.warn("asr: warm-up: {error}", error=error)

        return gatherResults(ds).addCallback(report)

    def close(self) -> "Deferred[None]":
        """End every worker (CLOSE, then SIGKILL after ``close_timeout_s``); fires when all exited."""
        self.closing = True
        ds = []
        for slot in self.slots:
            if slot.respawn_call is not None and slot.respawn_call.active():
                slot.respawn_call.cancel()
            slot.respawn_call = None
            if slot.protocol is not None:
                ds.append(slot.protocol.stop(self.reactor, self.close_timeout_s))
        return gatherResults(ds).addCallback(lambda _: None)
