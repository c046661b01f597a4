# -*- test-case-name: tests.engines.local_asr.test_pool -*-
"""
The parent side of the ASR worker processes (:mod:`xlbridge.engines.local_asr.worker`):
the ``process`` backend of :class:`~xlbridge.engines.local_asr.leg.LocalASR`.

Design notes
------------

* **Why.**  pocketsphinx holds the GIL while decoding, so from a pool
  thread it still delays the reactor (and every call's 20 ms egress tick)
  ~2 ms per frame and 10-20 ms per utterance.  Here the reactor only
  writes frames to a pipe and parses small JSON replies.
* **Workers.**  :class:`ASRWorkerPool` runs ``workers`` children (default:
  CPU cores minus one, at least one), ``sys.executable -m
  xlbridge.engines.local_asr.worker`` with only ``PATH`` and ``PYTHONPATH``
  passed on; each keeps its own idle decoders.  A new stream goes to the
  least-loaded worker.  A leg sends one batch at a time
  (:meth:`~xlbridge.engines.local_asr.worker_link.WorkerStream.run`);
  replies match requests per stream, in order.  A :class:`WorkerSlot`
  provides what :mod:`~xlbridge.engines.local_asr.worker_link` asks of it
  (:class:`~xlbridge.engines.local_asr.worker_link.LinkSlot`).
* **Crashes.**  When a worker dies, each stream on it tells its leg once
  (``on_lost``); the batch in flight errbacks
  :class:`~xlbridge.engines.local_asr.worker_link.WorkerLost`.  The
  worker is respawned after ``BACKOFF_S``, doubling per quick death up to
  ``MAX_BACKOFF_S``; every stream is re-opened on it with its clock
  intact (``skip``), and ``on_back`` follows the answer.
* **Shutdown.**  :meth:`ASRWorkerPool.close` sends CLOSE, closes stdin and
  kills a worker still there after ``close_timeout_s``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Optional, Sequence

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

import xlbridge
from xlbridge.engines.base import EngineError, IProcessReactor
from xlbridge.engines.local_asr import ENGINE
from xlbridge.engines.local_asr.wire import LOAD, LOADED, Message, ModelSpec, StreamParams, dump, encode, spec_to_json
from xlbridge.engines.local_asr.worker_link import WorkerLost, WorkerProtocol, WorkerStream

#: First respawn delay, seconds; doubles per worker that died within STABLE_S.
BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
#: A worker that lived this long (seconds) resets the backoff.
STABLE_S = 10.0

WORKER_ARGS = ["-m", "xlbridge.engines.local_asr.worker"]


def usable_cpus() -> int:
    """
    CPUs this process may run on: its affinity (``taskset``, a container's
    cpuset), not every core the machine has.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """One worker per usable CPU minus one (the reactor's), at least one."""
    return max(1, usable_cpus() - 1)


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


class WorkerSlot:
    """
    A place for one worker process: its streams outlive the process, which
    is respawned (with backoff) when it dies.  It is the
    :class:`~xlbridge.engines.local_asr.worker_link.LinkSlot` of its
    worker's protocol and streams.
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

    def __init__(self, reactor: IProcessReactor, workers: Optional[int] = None, idle_decoders: int = 4,
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

    def warm_up(self, specs: Sequence[ModelSpec], count: int) -> "Deferred[list[str]]":
        """
        Spawn every worker and have each load ``count`` idle decoders per
        model in ``specs`` (respawned workers do it again).  Fires when all
        answered, with the problems (also logged); never errbacks.
        """
        self.preload = dump({"models": [spec_to_json(s) for s in specs], "count": count, "idle": self.idle_decoders})
        ds = []
        for slot in self.slots:
            slot.ensure_running()
            ds.append(slot.load(self.preload))

        def report(replies: list[dict[str, Any]]) -> list[str]:
            errors = sorted({str(e) for reply in replies for e in reply.get("errors", ())})
            for error in errors:
                self.log.warn("asr: warm-up: {error}", error=error)
            return errors

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
