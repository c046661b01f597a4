"""
``/readyz`` and ``/livez``: may this bridge take calls, and is it alive?

For load balancers, orchestrators and watchdogs, on the monitor's port.

- **Ready** (``/readyz``, 200 or 503): the bridge runs; every service under
  it runs (endpoint listeners, the egress clock, the calls container, the
  engines' pools, the ARI controller); every RTP/AudioSocket listener holds
  its port; the egress clock ticked within :data:`STALL_S` and ran no
  more than :data:`MAX_LATENESS_S` late over the last
  :data:`WINDOW_S`; with ``--ari``, the ARI events WebSocket is
  connected.  Not ready means "send new calls elsewhere": an Asterisk that
  is down or a machine too loaded to keep the 20 ms pace.
- **Live** (``/livez``, 200 or 503): the reactor answers (or there would be
  no answer at all) and the egress clock ticks.  Not live means "restart
  me".  Asterisk being away is not a reason to restart xlbridge, so ARI
  and lateness count for readiness only.

Both answer JSON: ``{"status": "ready"}`` (or ``"live"``) with the figures
behind the verdict, or ``"not ready"`` / ``"not live"`` with ``reasons``.
Neither needs a token: the answer names no call, caller or text, only the
bridge's own parts (a listener such as ``rtp-7777``, the egress clock, the
ARI socket), and the checkers that need it (HAProxy, a systemd timer with
``curl``) are the ones that cannot keep a secret.

The egress figures come from :class:`EgressWatch`, fed by the egress
clock's per-tick hook (one clock read per tick); everything else is read
when a check is asked for.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Optional

import attrs
from twisted.application.service import IService, IServiceCollection
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from xlbridge.ari.events import ARIEvents
from xlbridge.audio.frame import FRAME_MS
from xlbridge.listeners import ListenerService
from xlbridge.bridge_view import MonitorView
from xlbridge.call.service import CallService

#: The egress clock is stalled when it has not ticked for this long (50
#: ticks); a blocked reactor would not answer the check at all, so this
#: catches a clock that stopped.
STALL_S = 1.0

#: Largest tick lateness still "on time": beyond the catch-up burst (3
#: ticks, 60 ms) callers lose audio.
MAX_LATENESS_S = 0.1

#: How far back lateness counts against readiness, in seconds.
WINDOW_S = 10.0


class EgressWatch:
    """
    When the egress clock last ticked, and how late it ran recently.

    :meth:`tick` is the clock's per-tick hook (through the monitor): one
    clock read and a few comparisons, 50 times a second.  A tick's delay is
    the larger of the lateness the clock reports (against the latest
    deadline it serves) and how much longer than one interval it came after
    the previous tick: after a 500 ms stall the clock serves the missed
    intervals in one late tick whose own lateness is small, but the gap
    shows the stall.  The worst delay is kept per half-window, so a stall
    counts for between ``window / 2`` and ``window`` seconds after it.

    :param clock: the bridge's clock.
    :param interval: the egress tick, in seconds.
    :param window: seconds a late tick counts against readiness.
    """

    def __init__(self, clock: IReactorTime, interval: float = FRAME_MS / 1000, window: float = WINDOW_S) -> None:
        self.clock = clock
        self.interval = interval
        self.window = window
        self.started = clock.seconds()
        #: reactor time of the last tick seen, or ``None``
        self.last_tick: Optional[float] = None
        self._half_start = self.started
        self._current = 0.0
        self._previous = 0.0

    def reset(self) -> None:
        """
        Start watching afresh (the monitor started).
        """
        self.started = self._half_start = self.clock.seconds()
        self.last_tick = None
        self._current = self._previous = 0.0

    def tick(self, lateness: float) -> None:
        """
        One tick ran ``lateness`` seconds after its deadline.
        """
        now = self.clock.seconds()
        delay = lateness
        if self.last_tick is not None and now - self.last_tick - self.interval > delay:
            delay = now - self.last_tick - self.interval
        self.last_tick = now
        self._roll(now)
        if delay > self._current:
            self._current = delay

    def _roll(self, now: float) -> None:
        elapsed = now - self._half_start
        if elapsed >= self.window / 2:
            self._previous = self._current if elapsed < self.window else 0.0
            self._current = 0.0
            self._half_start = now

    def silent_for(self) -> float:
        """
        Seconds since the last tick (since :meth:`reset` before the first).
        """
        since = self.last_tick if self.last_tick is not None else self.started
        return max(0.0, self.clock.seconds() - since)

    def worst_lateness(self) -> float:
        """
        The largest tick delay over the last ``window / 2`` to ``window``
        seconds.
        """
        self._roll(self.clock.seconds())
        return max(self._current, self._previous)


@attrs.frozen
class Health:
    """
    One answer of :class:`HealthCheck`.

    :ivar reasons: why the bridge is not ready (empty: ready).
    :ivar live_reasons: why it is not live (a subset of ``reasons``).
    :ivar details: the figures behind the verdict, JSON-ready.
    """

    reasons: tuple[str, ...]
    live_reasons: tuple[str, ...]
    details: dict[str, Any] = attrs.field(eq=False)

    @property
    def ready(self) -> bool:
        return not self.reasons

    @property
    def live(self) -> bool:
        return not self.live_reasons


def _services(collection: IServiceCollection) -> Iterator[IService]:
    """
    Every service under ``collection``, depth first, but not the calls
    themselves: they come and go, and one ending is no fault of the bridge.
    """
    for service in collection:
        if isinstance(service, CallService):
            continue
        yield service
        children = IServiceCollection(service, None)
        if children is not None:
            yield from _services(children)


def _name(service: IService) -> str:
    return service.name or type(service).__name__


def ari_sockets(bridge: MonitorView) -> list[ARIEvents]:
    """
    The ARI events sockets in the bridge's service tree: the ARI
    controller's (``controller.events``) with ``--ari``, none without.
    """
    tree = IServiceCollection(bridge, None)
    if tree is None:
        return []
    return [service for service in _services(tree) if isinstance(service, ARIEvents)]


class HealthCheck:
    """
    Judges the bridge's health from its service tree and the egress watch.

    :param bridge: the bridge; its service tree is walked when it is a
        ``MultiService`` (as :class:`~xlbridge.bridge.BridgeService` is).
    :param watch: fed by the egress clock's tick hook.
    :param stall_s: see :data:`STALL_S`.
    :param max_lateness_s: see :data:`MAX_LATENESS_S`.
    """

    def __init__(
        self, bridge: MonitorView, watch: EgressWatch, *, stall_s: float = STALL_S,
        max_lateness_s: float = MAX_LATENESS_S,
    ) -> None:
        self.bridge = bridge
        self.watch = watch
        self.stall_s = stall_s
        self.max_lateness_s = max_lateness_s

    def check(self) -> Health:
        """
        Look at everything now.
        """
        reasons: list[str] = []
        live: list[str] = []
        details: dict[str, Any] = {}
        root = IService(self.bridge, None)
        if root is not None and not root.running:
            reasons.append("the bridge is not running (starting or stopping)")
        egress = self.bridge.egress
        listeners = bound = 0
        ari: Optional[str] = None
        tree = IServiceCollection(self.bridge, None)
        for service in _services(tree) if tree is not None else iter(()):
            if isinstance(service, ListenerService):
                listeners += 1
                bound += service.port is not None
            if isinstance(service, ARIEvents):
                ari = "connected" if service.connected else str(service.state)
            if service is egress:
                continue  # judged below, with its ticks
            if not service.running:
                reasons.append(f"{_name(service)} is not running")
            elif isinstance(service, ListenerService) and service.port is None:
                reasons.append(f"{_name(service)} is not listening")
            elif isinstance(service, ARIEvents) and not service.connected:
                # The state only: why it failed (addresses, Asterisk's
                # answer) is in the log, not on an open endpoint.
                reasons.append(f"the ARI events WebSocket is not connected to Asterisk ({ari})")
        details["listeners"] = {"bound": bound, "total": listeners}
        details["ari"] = ari or "off"

        silent = self.watch.silent_for()
        worst = self.watch.worst_lateness()
        details["egress"] = {
            "last_tick_ago_ms": round(silent * 1000, 1),
            "worst_lateness_ms": round(worst * 1000, 1),
            "window_s": self.watch.window,
        }
        if not egress.running:
            live.append("the egress clock is not running")
        elif silent > self.stall_s:
            live.append(f"the egress clock has not ticked for {silent:.1f} s")
        reasons.extend(live)
        if worst > self.max_lateness_s:
            reasons.append(
                f"the egress clock ran {worst * 1000:.0f} ms late within the last {self.watch.window:.0f} s "
                f"(limit {self.max_lateness_s * 1000:.0f} ms)"
            )
        return Health(tuple(reasons), tuple(live), details)


class HealthResource(Resource):
    """
    ``/readyz`` (``live=False``) or ``/livez`` (``live=True``): 200 or 503,
    JSON, no token, never cached.
    """

    isLeaf = True

    def __init__(self, health: HealthCheck, live: bool = False) -> None:
        super().__init__()
        self.health = health
        self.live = live

    def render_GET(self, request: IRequest) -> bytes:
        health = self.health.check()
        if self.live:
            ok, reasons, word = health.live, health.live_reasons, "live"
        else:
            ok, reasons, word = health.ready, health.reasons, "ready"
        body: dict[str, Any] = {"status": word if ok else f"not {word}"}
        if not ok:
            body["reasons"] = list(reasons)
        body.update(health.details)
        request.setResponseCode(200 if ok else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return json.dumps(body).encode("utf-8") + b"\n"

    render_HEAD = render_GET
