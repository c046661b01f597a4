"""
``/api/calls``: the bridge's state as JSON, and the call records behind it.

Active calls come from the bridge (:meth:`CallService.status`, enriched with
each direction's pipeline and a leg state); transcripts and latencies come
from events, recorded by :class:`CallRecorder` (a bridge observer), because
the calls themselves forget their words.  Every list is bounded: the last
``max_recent`` ended calls, ``max_lines`` transcript lines and
``max_latency`` latency rows per call.

Response fields (times are reactor seconds, durations in ms unless named
otherwise)::

    time                    when the snapshot was taken
    egress                  ticks, late_ticks, skipped, errors, legs, max_lateness_ms
    endpoints               {name: {transport, counters, origin}} for every live endpoint:
                            origin "config" for a configured extension (named by it);
                            "ari" for an ARI caller's leg, from when its media is
                            bound until the caller leaves, named by its channel
                            (e.g. "PJSIP/7777-00000001"), the same name as its leg's
                            extension below
    calls[]                 active calls, oldest first:
      call_id, started_at, last_activity, duration_s
      legs[]                in pair order:
        extension, language (extension: the leg's name, as in endpoints)
        transport           kind, codec, reply_codec, local, remote
        buffer_ms, buffer_dropped_samples, buffer_trimmed_samples (of the
                            dropped, those cut because they stood as delay)
        counters            packets_in/out, bytes_in/out, silence_out, late_ticks,
                            skipped_ticks, lost, drops {reason: n}; WebSocket
                            legs also xoff_ms, flushed_bytes, marks_sent,
                            marks_processed
        state               "waiting" (no peer yet) | "active" | "fallback" (engine down)
        pipeline            what this caller's speech goes through: kind
                            ("relay" | "translate"); for translate also engines
                            {asr, mt, tts}, fallback, down, pending_ms, utterances,
                            dropped_backlog, dropped_echo
      transcript[]          see below
      latency[]             last utterances played: time, extension (listener),
                            speaker, utterance, text, asr_ms, mt_ms,
                            tts_first_byte_ms, queue_wait_ms, total_ms
    recent[]                ended calls, newest first: call_id, extensions,
                            languages, started_at, ended_at, duration_s, reason,
                            transcript[], latency[]

    transcript line: time, kind, extension, text and per kind:
      "said"        language (final transcripts only; interims are live-only)
      "translated"  language (target), source_language, source_text, utterance
      "dropped"     language, reason (backlog | echo | failed)
      "engine"      engine, state (down | up), fallback, error
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Optional

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from xlbridge.bridge_view import MonitorView
from xlbridge.call.service import CallService
from xlbridge.events import (
    CallEnded,
    CallStarted,
    EngineStatusEvent,
    Event,
    PlaybackStarted,
    TranscriptEvent,
    TranslationEvent,
    UtteranceDropped,
)


def _default(value: Any) -> Any:
    # numpy scalars and arrays sneak into status dicts (buffer depths).
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    return str(value)


def to_json(value: Any) -> bytes:
    """
    Serialise for the API and the WebSocket (UTF-8, compact).
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_default).encode("utf-8")


@attrs.define
class CallRecord:
    """
    What the monitor remembers of one call.
    """

    call_id: str
    extensions: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    started_at: Optional[float] = None
    ended_at: Optional[float] = None
    duration: Optional[float] = None
    reason: Optional[str] = None
    transcript: deque[dict[str, Any]] = attrs.field(factory=deque)
    latency: deque[dict[str, Any]] = attrs.field(factory=deque)

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "extensions": list(self.extensions),
            "languages": list(self.languages),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": self.duration,
            "reason": self.reason,
            "transcript": list(self.transcript),
            "latency": list(self.latency),
        }


class CallRecorder:
    """
    Builds per-call transcripts and latency rows from bridge events.

    :param max_recent: ended calls kept.
    :param max_lines: transcript lines kept per call (oldest go first).
    :param max_latency: latency rows kept per call.
    :param max_active: records of calls not yet ended; a safety bound in case
        a ``CallEnded`` never comes.
    """

    def __init__(
        self, max_recent: int = 50, max_lines: int = 200, max_latency: int = 10, max_active: int = 1000
    ) -> None:
        self.max_lines = max_lines
        self.max_latency = max_latency
        self.max_active = max_active
        self.active: dict[str, CallRecord] = {}
        self.recent: deque[CallRecord] = deque(maxlen=max_recent)

    def _record(self, call_id: str) -> CallRecord:
        record = self.active.get(call_id)
        if record is None:
            if len(self.active) >= self.max_active:
                self.active.pop(next(iter(self.active)))
            record = CallRecord(
                call_id, transcript=deque(maxlen=self.max_lines), latency=deque(maxlen=self.max_latency)
            )
            self.active[call_id] = record
        return record

    def observe(self, event: Event) -> None:
        """
        Bridge observer.
        """
        if isinstance(event, CallStarted):
            r = self._record(event.call_id)
            r.extensions, r.languages, r.started_at = event.extensions, event.languages, event.time
            return
        if isinstance(event, CallEnded):
            found = self.active.pop(event.call_id, None)
            r = found if found is not None else CallRecord(event.call_id)
            r.extensions = r.extensions or event.extensions
            r.ended_at, r.duration, r.reason = event.time, event.duration, event.reason
            if r.started_at is None:
                r.started_at = event.time - event.duration
            self.recent.appendleft(r)
            return
        line = self._line(event)
        if line is not None:
            self._record(event.call_id).transcript.append(line)
        elif isinstance(event, PlaybackStarted):
            self._record(event.call_id).latency.append(
                {
                    "time": event.time, "extension": event.extension, "speaker": event.speaker,
                    "utterance": event.utterance, "text": event.text, "asr_ms": event.asr_ms,
                    "mt_ms": event.mt_ms, "tts_first_byte_ms": event.tts_first_byte_ms,
                    "queue_wait_ms": event.queue_wait_ms, "total_ms": event.total_ms,
                }
            )

    __call__ = observe

    @staticmethod
    def _line(event: Event) -> Optional[dict[str, Any]]:
        if isinstance(event, TranscriptEvent):
            if not (event.is_final and event.text):
                return None
            return {"time": event.time, "kind": "said", "extension": event.extension,
                    "language": event.language, "text": event.text}
        if isinstance(event, TranslationEvent):
            return {"time": event.time, "kind": "translated", "extension": event.extension,
                    "language": event.language, "text": event.text, "source_language": event.source_language,
                    "source_text": event.source_text, "utterance": event.utterance}
        if isinstance(event, UtteranceDropped):
            return {"time": event.time, "kind": "dropped", "extension": event.extension,
                    "language": event.language, "text": event.text, "reason": event.reason}
        if isinstance(event, EngineStatusEvent):
            return {"time": event.time, "kind": "engine", "extension": event.extension, "text": event.error,
                    "engine": event.engine, "state": event.state, "fallback": event.fallback,
                    "error": event.error}
        return None


def call_status(call: CallService, record: Optional[CallRecord], now: float) -> dict[str, Any]:
    """
    One active call: ``call.status()`` plus per-leg pipeline and state, and
    its transcript so far.
    """
    status: dict[str, Any] = call.status()
    status["duration_s"] = now - call.started_at
    pipelines = call.pipelines
    for i, leg_status in enumerate(status.get("legs", [])):
        pipeline = pipelines[i] if i < len(pipelines) else None
        describe = getattr(pipeline, "status", None)
        info: dict[str, Any] = {"kind": "translate", **describe()} if callable(describe) else {"kind": "relay"}
        leg_status["pipeline"] = info
        leg = call.legs[i]
        if not leg.transport.ready:
            leg_status["state"] = "waiting"
        elif getattr(pipeline, "in_fallback", False):
            leg_status["state"] = "fallback"
        else:
            leg_status["state"] = "active"
    status["transcript"] = list(record.transcript) if record is not None else []
    status["latency"] = list(record.latency) if record is not None else []
    return status


def snapshot(bridge: MonitorView, recorder: CallRecorder, now: float, full: bool = True) -> dict[str, Any]:
    """
    The whole ``/api/calls`` document (see the module docstring).

    :param full: include ``recent`` and the active calls' ``transcript``;
        the WebSocket's status messages leave them out (captions arrive as
        events, history is one ``/api/calls`` away), which keeps a
        once-a-second message small however long the calls run.
    """
    base = bridge.status()
    calls = []
    for call in bridge.active_calls():
        status = call_status(call, recorder.active.get(call.call_id), now)
        if not full:
            del status["transcript"]
        calls.append(status)
    doc: dict[str, Any] = {
        "time": now,
        "egress": base.get("egress", {}),
        "endpoints": base.get("endpoints", {}),
        "calls": calls,
    }
    if full:
        doc["recent"] = [r.to_dict() for r in recorder.recent]
    return doc


class CallsResource(Resource):
    """
    ``GET /api/calls``: :func:`snapshot` as JSON (put it behind the token).
    """

    isLeaf = True

    def __init__(self, bridge: MonitorView, recorder: CallRecorder, clock: IReactorTime) -> None:
        super().__init__()
        self.bridge = bridge
        self.recorder = recorder
        self.clock = clock

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return to_json(snapshot(self.bridge, self.recorder, self.clock.seconds()))
