"""
One ASR worker process as :mod:`xlbridge.engines.local_asr.pool` sees it: its
process protocol (:class:`WorkerProtocol`), one leg's stream on it
(:class:`WorkerStream`, the ``process`` backend of
:class:`~xlbridge.engines.local_asr.leg.LocalASR`) and :class:`WorkerLost`.

What they need from the slot their worker runs in, and from the pool, is
spelled out here as :class:`LinkSlot` and :class:`LinkPool`; the pool's
:class:`~xlbridge.engines.local_asr.pool.WorkerSlot` and
:class:`~xlbridge.engines.local_asr.pool.ASRWorkerPool` provide them, so
this module never imports the pool.
"""

from __future__ import annotations

import collections
import json
from typing import Any, Callable, Optional, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.engines.base import EngineError, EngineRequestError, EngineUnavailable
from xlbridge.engines.local_asr import ENGINE
from xlbridge.engines.local_asr.backends import Batch
from xlbridge.engines.local_asr.wire import (
    AUDIO, CLOSE, FINISH, FINISHED, OPEN, Framer, FramingError, Message, ModelSpec,
    StreamParams, audio_payload, dump, encode, event_from_json, spec_to_json,
)


class LinkPool(Protocol):
    """What a :class:`WorkerStream` needs from the pool of workers."""

    @property
    def reactor(self) -> IReactorTime:
        """Stamps each reply with the time it arrived."""

    @property
    def idle_decoders(self) -> int:
        """Idle decoders per model each worker keeps (sent with every OPEN)."""

    @property
    def log(self) -> Logger:
        """Where a reply nobody waits for is logged."""


class LinkSlot(Protocol):
    """What :class:`WorkerProtocol` and :class:`WorkerStream` need from the slot their worker runs in."""

    @property
    def pool(self) -> LinkPool:
        """The pool the slot belongs to."""

    @property
    def streams(self) -> dict[int, "WorkerStream"]:
        """The slot's streams by id; a stream removes itself once it is gone."""

    def send(self, data: bytes) -> None:
        """Write encoded requests to the slot's running worker, if any."""

    def reply(self, proto: "WorkerProtocol", msg: Message) -> None:
        """A reply from ``proto``'s worker (ignored unless ``proto`` is the slot's current one)."""

    def ended(self, proto: "WorkerProtocol", reason: Failure) -> None:
        """``proto``'s worker exited."""


class WorkerLost(EngineUnavailable):
    """The worker process died with this stream's request in it."""


def _error(d: dict[str, Any]) -> EngineError:
    cls = EngineUnavailable if d.get("retryable", True) else EngineRequestError
    return cls(ENGINE, str(d.get("message", "unknown worker error")))


class WorkerProtocol(ProcessProtocol):
    """One worker process: frames its stdout into replies for its slot, relays stderr to the log."""

    log = Logger()

    def __init__(self, slot: LinkSlot) -> None:
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

    def stop(self, reactor: IReactorTime, timeout_s: float) -> "Deferred[None]":
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

    def __init__(self, slot: LinkSlot, stream_id: int, spec: ModelSpec, params: StreamParams,
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
        self._held: list[tuple[Batch, Deferred[Batch]]] = []

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

    def run(self, batch: Batch) -> "Deferred[Batch]":
        """
        Decode ``batch`` (its ``skip``, ``frames``, and if ``final`` its
        ``tail``) in the worker; fires with it, events (stamped with the
        reactor time the reply arrived) and decode seconds filled in, or
        errbacks an :class:`EngineError` (:class:`WorkerLost` if the worker
        died first: then the worker did not account for its frames).
        """
        d: Deferred[Batch] = Deferred()
        if self.attached:
            self._send_batch(batch, d)
        else:
            self._held.append((batch, d))  # sent once the worker (re)starts
        return d

    def _send_batch(self, batch: Batch, d: "Deferred[Batch]") -> None:
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
