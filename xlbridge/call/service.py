"""
Calls: a pair of legs, what each caller hears, their pipelines, and a
lifecycle.

A :class:`CallService` is created by a :class:`~xlbridge.room.Room` (the
one place a call starts: on first audio on either leg, or when an
AudioSocket caller announces itself) and is added to the bridge's running
calls container, so it starts at once.  It decides what each caller hears, builds one pipeline per
direction, registers its legs with the egress clock, and ends itself after
``inactivity_timeout`` seconds without inbound audio on either leg (unless
a leg's transport says its caller is still on the line: an AudioSocket
connection is the call, and Asterisk sends nothing while a caller is
silent), or when its parent stops (shutdown).  Ending releases everything
it held: legs leave the egress clock, pipelines stop, buffers empty and
transports forget their peers.

Wiring, in :meth:`CallService.startService`: the pipeline factory says
how each listener hears the other caller (:meth:`PipelineFactory.speech_output`);
the call builds one :class:`~xlbridge.call.playout.Playout` per leg from
that (the leg's relay buffer, or an ``OutputMix`` with comfort noise), gives
it to the leg for the egress clock, and hands both playouts to each
direction: direction A->B gets B's as the one it writes (``partner_hears``)
and A's as the one its echo guard watches (``source_hears``).  Besides
the playouts, the two directions see each other only through what the
factory shares on purpose (one ``DirectionSync`` with direction sync on)
and a leg's ``spoken_language``, which the direction *from* that caller
sets.

The inactivity check does not re-arm a timer per packet: audio only stamps
``last_activity``, and one ``callLater`` re-checks when the timeout could
next expire.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from xlbridge.audio.frame import Samples
from xlbridge.call.context import CallContext
from xlbridge.call.leg import Leg
from xlbridge.call.playout import Playout, SpeechOutput
from xlbridge.egress import EgressClock
from xlbridge.events import CallEnded, CallStarted, Event
from xlbridge.interfaces import IPipeline


class PipelineFactory(Protocol):
    """
    Says how each caller hears the other, and builds the pipeline of each
    direction of a call.
    """

    def speech_output(self, listener: Leg, speaker: Leg) -> Optional[SpeechOutput]:
        """
        How ``listener`` hears ``speaker``: translated speech mixed with
        these settings, or ``None`` for ``speaker``'s own voice through
        ``listener``'s relay buffer.
        """

    def __call__(
        self, source: Leg, partner: Leg, call: CallContext, partner_hears: Playout, source_hears: Playout
    ) -> IPipeline:
        """
        The pipeline that carries ``source``'s audio to ``partner``:
        it writes into ``partner_hears`` (built as :meth:`speech_output`
        said) and may watch ``source_hears``, what ``source`` is being
        played (echo guard).
        """


class CallService(Service):
    """
    One conversation between two legs.

    :param call_id: unique id (also the service name).
    :param legs: the two legs, in pair order.
    :param pipeline_factory: builds one pipeline per direction.
    :param egress: the shared egress clock.
    :param clock: time source.
    :param inactivity_timeout: seconds without inbound audio before the call
        ends by itself.
    :param emit: receives :class:`CallStarted` / :class:`CallEnded`.
    :param on_end: called with this service after it stopped.
    :param channels: the callers' Asterisk channel ids (ARI calls), carried
        by :class:`CallStarted` and :class:`CallEnded`.
    """

    log = Logger()

    def __init__(
        self,
        call_id: str,
        legs: tuple[Leg, Leg],
        pipeline_factory: PipelineFactory,
        egress: EgressClock,
        clock: IReactorTime,
        inactivity_timeout: float = 10.0,
        emit: Callable[[Event], None] = lambda e: None,
        on_end: Callable[["CallService"], None] = lambda c: None,
        channels: Optional[tuple[str, str]] = None,
    ) -> None:
        self.setName(call_id)
        self.call_id = call_id
        #: the callers' Asterisk channel ids, for calls the ARI controller made
        self.channels = channels
        self.legs = legs
        self.pipeline_factory = pipeline_factory
        self.egress = egress
        self.clock = clock
        self.inactivity_timeout = inactivity_timeout
        self.emit = emit
        self.on_end = on_end
        self.pipelines: tuple[IPipeline, ...] = ()
        #: what each leg's caller hears, in leg order (set at start)
        self.playouts: tuple[Playout, ...] = ()
        self.started_at = 0.0
        self.last_activity = 0.0
        self.end_reason = "shutdown"
        self._timer: Optional[IDelayedCall] = None
        self._ending: Optional[Deferred[None]] = None

    @property
    def extensions(self) -> tuple[str, str]:
        return (self.legs[0].extension, self.legs[1].extension)

    def startService(self) -> None:
        super().startService()
        now = self.clock.seconds()
        self.started_at = self.last_activity = now
        a, b = self.legs
        hears_a, hears_b = self._playout(a, b), self._playout(b, a)
        self.playouts = (hears_a, hears_b)
        a.playout, b.playout = hears_a, hears_b
        factory = self.pipeline_factory
        self.pipelines = (
            factory(a, b, self, partner_hears=hears_b, source_hears=hears_a),
            factory(b, a, self, partner_hears=hears_a, source_hears=hears_b),
        )
        for p in self.pipelines:
            p.start()
        for leg in self.legs:
            self.egress.add(leg)
        self._timer = self.clock.callLater(self.inactivity_timeout, self._check_inactivity)
        self.log.info(
            "call {call_id} started: {ext_a} ({lang_a}) <-> {ext_b} ({lang_b})",
            call_id=self.call_id,
            ext_a=a.extension,
            ext_b=b.extension,
            lang_a=a.language,
            lang_b=b.language,
        )
        self.emit(CallStarted(self.call_id, self.extensions, (a.language, b.language), now, self.channels))

    def _playout(self, listener: Leg, speaker: Leg) -> Playout:
        speech = self.pipeline_factory.speech_output(listener, speaker)
        if speech is None:
            # A relay: the leg's own relay playout (legs are new for each
            # call, so it is empty), rather than a second buffer per leg.
            return listener.playout if listener.playout.mix is None else Playout.relay(listener.buffer_ms)
        return Playout.speech(speech, self.clock)

    def audio_in(self, index: int, samples: Samples) -> None:
        """
        Inbound audio from leg ``index`` (0 or 1).
        """
        self.last_activity = self.clock.seconds()
        tap = self.legs[index].tap_in
        if tap is not None:
            tap(samples)
        self.pipelines[index].audio_in(samples)

    def _check_inactivity(self) -> None:
        self._timer = None
        idle = self.clock.seconds() - self.last_activity
        if idle >= self.inactivity_timeout and any(leg.line_open for leg in self.legs):
            self.last_activity = self.clock.seconds()
            idle = 0.0
        if idle >= self.inactivity_timeout:
            self.end("inactivity")
        else:
            self._timer = self.clock.callLater(
                self.inactivity_timeout - idle, self._check_inactivity
            )

    def end(self, reason: str) -> "Deferred[None]":
        """
        End the call (idempotent): detach from the parent, which stops it.
        """
        if self._ending is not None:
            return self._ending
        self.end_reason = reason
        if self.parent is not None:
            d: Deferred[Any] = maybeDeferred(self.disownServiceParent)
        else:
            d = maybeDeferred(self.stopService) if self.running else succeed(None)
        self._ending = d
        return d

    def stopService(self) -> "Deferred[None]":
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for leg in self.legs:
            self.egress.remove(leg)
        stops = []
        for p in self.pipelines:
            d = maybeDeferred(p.stop)
            d.addErrback(lambda f: self.log.failure("pipeline stop failed", f))
            stops.append(d)
        for leg in self.legs:
            leg.reset()
        now = self.clock.seconds()
        self.log.info(
            "call {call_id} ended ({reason}) after {duration:.1f} s",
            call_id=self.call_id,
            reason=self.end_reason,
            duration=now - self.started_at,
        )
        self.emit(CallEnded(
            self.call_id, self.extensions, self.end_reason, now - self.started_at, now, self.channels
        ))
        try:
            self.on_end(self)
        except Exception:
            self.log.failure("on_end failed for call {call_id}", call_id=self.call_id)
        return gatherResults(stops).addCallback(lambda _: None)

    def status(self) -> dict[str, Any]:
        """
        A JSON-ready snapshot for the monitor.
        """
        return {
            "call_id": self.call_id,
            "started_at": self.started_at,
            "last_activity": self.last_activity,
            "legs": [leg.status() for leg in self.legs],
        }
