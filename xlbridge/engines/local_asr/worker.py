# -*- test-case-name: tests.engines.local_asr.test_worker -*-
"""
The ASR worker: pocketsphinx decoding in a child process, away from the
reactor's GIL.  Run as ``python -m xlbridge.engines.local_asr.worker``; the parent
side is :mod:`xlbridge.engines.local_asr.pool`.

Why a process: pocketsphinx 5.1.1 holds the GIL while it works
(``process_raw`` ~1.5-2 ms per 20 ms frame, ``end_utt`` 10-20 ms per
utterance, loading a decoder ~340 ms), so from a thread it still stalls the
reactor and every call's 20 ms egress clock.  A child process has its own
GIL; the reactor only moves bytes.

Wire protocol
-------------

Both directions carry messages, each::

    length   u32, big-endian: the bytes after this field (5 + payload)
    kind     u8
    stream   u32, big-endian: the stream id (a request id for LOAD)
    payload  length - 5 bytes

Requests (parent → worker, on stdin):

* ``OPEN`` JSON ``{"model": spec, "params": {...}, "idle": n, "skip": n}``:
  begin a stream, borrowing a decoder now; ``skip`` is the 20 ms frames of
  the stream already accounted for elsewhere (a stream re-opened after a
  worker crash keeps its clock).
* ``AUDIO``: u32 big-endian frames dropped upstream just before these, then
  any number of 640-byte frames (320 int16 samples, 20 ms at 16 kHz, in
  *native* byte order: parent and worker share the machine).
* ``FINISH``: the stream's last partial frame (under 640 bytes, native
  int16); flushes it and returns the decoder.
* ``LOAD`` JSON ``{"models": [spec, ...], "count": n, "idle": n}``: load up
  to ``count`` idle decoders per model, before calls arrive.
* ``CLOSE``: exit now (end of input does the same).

Replies (worker → parent, on stdout), exactly one per request but CLOSE:

* ``EVENTS`` (to OPEN and AUDIO) and ``FINISHED`` (to FINISH; the stream is
  then gone): JSON ``{"events": [...], "frames": n, "seconds": s}`` plus
  ``"error": {"message": ..., "retryable": bool}`` when something failed.
  Event times are seconds since that stream began; ``seconds`` is the
  worker's decode time.
* ``LOADED``: JSON ``{"loaded": n, "errors": [...]}``.

stderr carries log lines only (``LEVEL message``); the protocol's stdout is
a private copy of fd 1, and fd 1 itself points at stderr, so a stray C-level
``printf`` cannot corrupt the stream.  Ctrl-C in the terminal is left to the
parent (SIGINT is ignored): the worker ends on ``CLOSE`` or end of input.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

from xlbridge.engines.base import ASREvent, EngineError, EngineRequestError
from xlbridge.engines.local_asr import ENGINE
from xlbridge.engines.local_asr.wire import (
    AUDIO,
    CLOSE,
    EVENTS,
    FINISH,
    FINISHED,
    LOAD,
    LOADED,
    OPEN,
    Framer,
    FramingError,
    Message,
    ModelSpec,
    StreamParams,
    dump,
    encode,
    error_to_json,
    event_to_json,
    parse_audio,
    spec_from_json,
)
from xlbridge.engines.pocketsphinx.asr import DECODERS, DecoderPool, SphinxModel, SphinxStream
from xlbridge.engines.vosk.asr import VoskModel, VoskStream, shared_model
from xlbridge.engines.whisper.settings import WhisperModel

if TYPE_CHECKING:
    from xlbridge.engines.whisper.stream import WhisperStream

# -- one stream ---------------------------------------------------------------------


class Session:
    """
    One stream's recogniser, wherever it runs (this worker, or a pool thread
    for the ``thread`` backend, so both decode identically): borrows a
    decoder from ``decoders`` on first use, feeds 20 ms frames, and gives
    the decoder back when the stream finishes.

    A decoder that raises is thrown away (it is not reused); the next frames
    get a fresh one whose stream skips what the old one heard, so times stay
    seconds since the stream began.  Not thread-safe: one call at a time.

    :param skip: 20 ms frames of the stream already gone by.
    """

    def __init__(self, spec: ModelSpec, params: StreamParams, decoders: DecoderPool, max_idle: int,
                 skip: int = 0) -> None:
        self.spec = spec
        self.params = params
        self.decoders = decoders
        self.max_idle = max_idle
        #: Frames (fed or dropped) since the stream began.
        self.accounted = skip
        self.stream: Optional[Union[SphinxStream, VoskStream, "WhisperStream"]] = None
        self._resource: Any = None

    def open(self) -> None:
        """Borrow (or load: ~340 ms) a decoder now. :raises EngineRequestError: the model cannot load."""
        if self.stream is not None:
            return
        p = self.params
        if isinstance(self.spec, WhisperModel):
            from xlbridge.engines.whisper.decode import shared_decoder
            from xlbridge.engines.whisper.stream import WhisperStream

            self._resource = shared_decoder(self.spec)
            self.stream = WhisperStream(self._resource, self.spec)
        elif isinstance(self.spec, VoskModel):
            self._resource = shared_model(self.spec)
            self.stream = VoskStream(self._resource, interim_interval_s=p.interim_interval_s)
        else:
            self._resource = self.decoders.acquire(self.spec)
            self.stream = SphinxStream(self._resource, window_s=p.window_s, ratio=p.ratio, vad_mode=p.vad_mode,
                                       interim_interval_s=p.interim_interval_s, max_utterance_s=p.max_utterance_s)
        self.stream.skip(self.accounted)

    def skip(self, frames: int) -> None:
        """``frames`` 20 ms frames were dropped upstream."""
        self.accounted += frames
        if self.stream is not None:
            self.stream.skip(frames)

    def feed(self, frames: Sequence[bytes]) -> list[ASREvent]:
        """Decode 640-byte frames (opening a decoder if needed); their events, oldest first."""
        self.open()
        assert self.stream is not None
        self.accounted += len(frames)
        events: list[ASREvent] = []
        try:
            for frame in frames:
                events.extend(self.stream.feed(frame))
        except Exception:
            self.stream = self._resource = None  # a decoder that raised is not reused
            raise
        return events

    def finish(self, tail: bytes = b"") -> list[ASREvent]:
        """End of stream: flush ``tail`` (under one frame), return the decoder; the last events."""
        stream = self.stream
        if stream is None:
            return []
        try:
            return stream.finish(tail)
        finally:
            self._release()

    def abandon(self) -> None:
        """End quietly (nobody wants the results) so the decoder can be reused."""
        if self.stream is not None:
            try:
                self.finish()
            except Exception:
                self.stream = self._resource = None

    def _release(self) -> None:
        stream, resource = self.stream, self._resource
        self.stream = self._resource = None
        if isinstance(stream, SphinxStream) and stream.finished and isinstance(self.spec, SphinxModel):
            self.decoders.release(self.spec, resource, self.max_idle)


# -- the worker --------------------------------------------------------------------


def log(level: str, message: str) -> None:
    """One log line on stderr (``LEVEL message``; the parent re-logs it)."""
    sys.stderr.write(f"{level} {message}\n")
    sys.stderr.flush()


class Worker:
    """
    The worker's request handler, without I/O: :meth:`handle` takes one
    request and returns the encoded replies.  Streams are keyed by id.
    """

    def __init__(self, decoders: Optional[DecoderPool] = None) -> None:
        self.decoders = DECODERS if decoders is None else decoders
        self.sessions: dict[int, Session] = {}
        self._errors: dict[int, dict[str, Any]] = {}  # streams whose decoder could not load

    def handle(self, msg: Message) -> list[bytes]:
        """Replies to ``msg`` (none for an unknown kind, which is logged)."""
        t0 = time.perf_counter()
        if msg.kind == LOAD:
            return [encode(LOADED, msg.stream, dump(self._load(json.loads(msg.payload))))]
        if msg.kind not in (OPEN, AUDIO, FINISH):
            log("warn", f"ignoring a message of unknown kind {msg.kind}")
            return []
        reply: dict[str, Any] = {"events": [], "frames": 0}
        try:
            events = self._stream_request(msg, reply)
        except Exception as e:
            if not isinstance(e, EngineError):
                log("error", f"stream {msg.stream}: " + "".join(traceback.format_exception(e)).rstrip())
            reply["error"] = error_to_json(e)
            if msg.kind == OPEN and isinstance(e, EngineError) and not e.retryable:
                self._errors[msg.stream] = reply["error"]
        else:
            reply["events"] = [event_to_json(ev) for ev in events]
        reply["seconds"] = time.perf_counter() - t0
        return [encode(FINISHED if msg.kind == FINISH else EVENTS, msg.stream, dump(reply))]

    def _stream_request(self, msg: Message, reply: dict[str, Any]) -> list[ASREvent]:
        sid = msg.stream
        if msg.kind == OPEN:
            d = json.loads(msg.payload)
            old = self.sessions.pop(sid, None)
            if old is not None:
                old.abandon()
            self._errors.pop(sid, None)
            new = Session(spec_from_json(d["model"]), StreamParams.from_json(d.get("params", {})), self.decoders,
                          int(d.get("idle", 4)), skip=int(d.get("skip", 0)))
            self.sessions[sid] = new
            new.open()
            return []
        if msg.kind == FINISH:
            self._errors.pop(sid, None)
            ended = self.sessions.pop(sid, None)
            return [] if ended is None else ended.finish(msg.payload)
        try:
            skip, frames = parse_audio(msg.payload)
        except ValueError as e:
            raise EngineRequestError(ENGINE, str(e)) from None
        session = self.sessions.get(sid)
        if sid in self._errors:
            reply["error"] = self._errors[sid]
            return []
        if session is None:
            raise EngineRequestError(ENGINE, f"stream {sid} is not open")
        reply["frames"] = len(frames)
        session.skip(skip)
        return session.feed(frames)

    def _load(self, d: Mapping[str, Any]) -> dict[str, Any]:
        count, idle = int(d.get("count", 0)), int(d.get("idle", 4))
        loaded, errors = 0, []
        for spec in map(spec_from_json, d.get("models", ())):
            try:
                if isinstance(spec, VoskModel):
                    shared_model(spec)
                    continue
                if isinstance(spec, WhisperModel):
                    from xlbridge.engines.whisper.decode import shared_decoder

                    shared_decoder(spec)
                    loaded += 1
                    continue
                lent = [self.decoders.acquire(spec) for _ in range(max(0, min(count, idle) - self.decoders.idle(spec)))]
                loaded += len(lent)
                for decoder in lent:
                    self.decoders.release(spec, decoder, idle)
            except Exception as e:
                errors.append(f"{spec.describe()}: {e}")
        return {"loaded": loaded, "errors": errors}


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main() -> int:
    """Serve requests on stdin until CLOSE or end of input; 0 on a clean exit, 2 on bad framing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.dup(1)
    os.dup2(2, 1)  # fd 1 is stderr from now on: only `out` carries the protocol
    framer, worker = Framer(), Worker()
    log("info", f"asr worker {os.getpid()} ready")
    try:
        while True:
            data = os.read(0, 1 << 16)
            if not data:
                return 0
            try:
                messages = framer.feed(data)
            except FramingError as e:
                log("error", f"bad framing on stdin, exiting: {e}")
                return 2
            replies: list[bytes] = []
            for msg in messages:
                if msg.kind == CLOSE:
                    _write_all(out, b"".join(replies))
                    return 0
                replies.extend(worker.handle(msg))
            _write_all(out, b"".join(replies))
    except BrokenPipeError:
        return 0  # the parent is gone


if __name__ == "__main__":
    # Run the importable module, not __main__'s copy, so classes are the same objects everywhere.
    from xlbridge.engines.local_asr.worker import main as _main

    sys.exit(_main())
