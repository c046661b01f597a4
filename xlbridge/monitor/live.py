"""
``/ws``: live data for monitor pages over one WebSocket per viewer.

This module is the hub, :class:`LiveHub`: what every viewer is sent and
what it may ask for.  Each viewer's socket (the Autobahn protocol and
factory, auth, flow control) is in :mod:`xlbridge.monitor.viewer`.

Design notes:

- **Auth** happens in the viewer's socket before the upgrade
  (:mod:`xlbridge.monitor.viewer`), which keeps the token's role for the
  connection: only a viewer who came with the listen token may listen in
  (:mod:`xlbridge.monitor.auth`); the others get an ``error`` answer to
  ``listen``, and ``hello`` tells each viewer which it is (``"listen":
  true|false``) so the page can hide its Listen buttons.
- **Server to client**, JSON text messages, each with a ``type``:
  ``hello`` (protocol version, audio format, whether this viewer may
  listen in, a status snapshot), ``status``
  (``/api/calls`` without ``recent`` and without transcripts, every
  ``status_interval``; history is one ``/api/calls`` away), ``event`` (every bridge event: interim and final
  captions, translations, playback, engine status), ``call_ended`` (the
  finished call's record with its transcript), ``levels``
  (``{extension: {"says": dBFS, "hears": dBFS}}``, every
  ``levels_interval``), ``listening`` / ``unlistened`` / ``error`` (answers).
  Binary messages carry listen-in audio (:mod:`xlbridge.monitor.taps`).
- **Client to server**: ``{"listen": {"extension": "7777", "direction":
  "says"|"hears"}}`` and the same with ``unlisten``.  ``extension`` is a
  leg's name as ``/api/calls`` shows it: a configured extension, or for a
  leg set up at run time its endpoint's name (an ARI caller's channel name,
  such as ``PJSIP/7777-00000001``).  Answers carry ``extension`` and
  ``direction``, errors about a listen too.  When such a leg is gone for
  good, its listeners get ``unlistened`` with ``"reason": "gone"``.
- **Many viewers never slow the media path.**  Taps and observers only queue
  references; one ``callLater(0)`` after the current reactor turn
  serialises, frames each message once for all viewers
  (``prepareMessage``) and puts it on every viewer's
  :class:`~xlbridge.monitor.outbox.Outbox`.  An outbox holds at most
  ``max_client_bytes``; it is drained into the transport only while the
  transport has not paused us (the viewer's socket is its push producer).
  A slow browser therefore loses its own oldest messages, counted, and
  nobody else notices.
- Timers run on the injected clock and only while someone is connected.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

from autobahn.twisted.resource import WebSocketResource
from autobahn.websocket.protocol import PreparedMessage
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from xlbridge.audio.frame import Samples
from xlbridge.bridge_view import MonitorView
from xlbridge.event_json import event_to_dict
from xlbridge.events import CallEnded, CallStarted, Event
from xlbridge.monitor.api import CallRecorder, snapshot, to_json
from xlbridge.monitor.auth import TokenGuard
from xlbridge.monitor.taps import AUDIO_FORMAT, DIRECTIONS, LegTap, TapKey, Taps, encode_frame
from xlbridge.monitor.viewer import LiveClient, LiveFactory

#: Version of the message protocol in ``hello``.
PROTOCOL_VERSION = 1


def listenable(bridge: MonitorView) -> set[str]:
    """
    Names a viewer may listen to: every endpoint, configured or attached at
    run time, and every leg of a live call.
    """
    names = {name for name, _, _ in bridge.all_endpoints()}
    names.update(leg.extension for call in bridge.active_calls() for leg in call.legs)
    return names


class LiveHub:
    """
    Fans bridge events, status, levels and listen-in audio out to viewers.

    :param bridge: what the monitor sees of the bridge.
    :param reactor: clock for timers and reactor for the WebSocket factory.
    :param guard: checks WebSocket handshakes.
    :param recorder: call records for snapshots and ``call_ended``.
    :param max_client_bytes: bound of each viewer's outbox.
    :param max_listens: listen-in streams one viewer may have.

    :ivar dropped: messages dropped for slow viewers, over all viewers.
    """

    log = Logger()

    def __init__(
        self, bridge: MonitorView, reactor: IReactorTime, guard: TokenGuard, recorder: CallRecorder, *,
        status_interval: float = 1.0, levels_interval: float = 0.1,
        max_client_bytes: int = 1024 * 1024, max_listens: int = 4,
    ) -> None:
        self.bridge = bridge
        self.clock: IReactorTime = reactor
        self.guard = guard
        self.recorder = recorder
        self.max_client_bytes = max_client_bytes
        self.max_listens = max_listens
        self.clients: set[LiveClient] = set()
        self.listeners: dict[TapKey, set[LiveClient]] = {}
        self.taps = Taps(self._tapped)
        self.factory = LiveFactory(self, reactor)
        self.dropped = 0
        self._events: list[Event] = []
        self._frames: list[tuple[LegTap, bytes]] = []
        self._flush_call: Optional[IDelayedCall] = None
        self._loops: list[LoopingCall] = []
        for interval, fn in ((status_interval, self._send_status), (levels_interval, self._send_levels)):
            loop = LoopingCall(self._guarded, fn)
            loop.clock = reactor
            self._loops.append(loop)
        self._intervals = (status_interval, levels_interval)

    def resource(self) -> WebSocketResource:
        """
        The ``/ws`` resource.
        """
        return WebSocketResource(self.factory)

    # -- viewers -----------------------------------------------------------

    def join(self, client: LiveClient) -> None:
        """
        A viewer connected: greet it with a status snapshot; the first
        viewer turns on taps and timers.
        """
        first = not self.clients
        self.clients.add(client)
        if first:
            self.taps.install(self.bridge.active_calls())
            for loop, interval in zip(self._loops, self._intervals):
                loop.start(interval, now=False)
        hello = {
            "type": "hello", "version": PROTOCOL_VERSION, "audio": AUDIO_FORMAT, "directions": list(DIRECTIONS),
            "listen": client.may_listen,
            "snapshot": snapshot(self.bridge, self.recorder, self.clock.seconds(), full=False),
        }
        self._send_json(client, hello)

    def leave(self, client: LiveClient) -> None:
        """
        A viewer went away; the last one turns taps and timers off.
        """
        if client not in self.clients:
            return
        self.clients.discard(client)
        for key in list(client.listens):
            self._unlisten(client, key)
        client.outbox.clear()
        if not self.clients:
            self.taps.uninstall(self.bridge.active_calls())
            self.taps.prune(listenable(self.bridge))
            for loop in self._loops:
                if loop.running:
                    loop.stop()

    def close(self) -> None:
        """
        Stop everything and say goodbye to viewers (the monitor is stopping).
        """
        for client in list(self.clients):
            self.leave(client)
            goodbye = getattr(client, "sendClose", None)
            if callable(goodbye):
                goodbye(code=1001, reason="monitor stopping")
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._events.clear()
        self._frames.clear()

    def message(self, client: LiveClient, payload: bytes, is_binary: bool) -> None:
        """
        A viewer's request: ``listen`` or ``unlisten``.
        """
        try:
            request = json.loads(payload.decode("utf-8")) if not is_binary else None
        except (ValueError, RecursionError):
            # RecursionError: JSON nested deeper than the parser recurses
            # ("[" * 60000 fits the 64 KiB frame limit); not a ValueError.
            request = None
        if not isinstance(request, dict):
            return self._reply(client, {"type": "error", "error": "expected a JSON object"})
        for verb in ("listen", "unlisten"):
            target = request.get(verb)
            if target is None:
                continue
            ext = str(target.get("extension", "")) if isinstance(target, dict) else ""
            direction = target.get("direction") if isinstance(target, dict) else None
            about = {"extension": ext, "direction": direction}
            # A viewer may always drop what it listens to, even a leg gone since.
            if direction not in DIRECTIONS or not (
                (ext, direction) in client.listens or ext in listenable(self.bridge)
            ):
                return self._reply(
                    client, {"type": "error", "error": f"{verb}: unknown extension or direction", **about}
                )
            key = (ext, direction)
            if verb == "unlisten":
                self._unlisten(client, key)
                return self._reply(client, {"type": "unlistened", **about})
            if not client.may_listen:
                self.guard.refuse_listen()
                denied = "listen-in needs the listen token" if self.guard.listen_enabled else "listen-in is off"
                return self._reply(client, {"type": "error", "error": denied, **about})
            if key not in client.listens and len(client.listens) >= self.max_listens:
                too_many = f"at most {self.max_listens} listens"
                return self._reply(client, {"type": "error", "error": too_many, **about})
            client.listens.add(key)
            self.listeners.setdefault(key, set()).add(client)
            tap = self.taps.get(*key)
            tap.listening = True
            return self._reply(
                client, {"type": "listening", "extension": ext, "direction": direction, "stream": tap.stream_id}
            )
        return self._reply(client, {"type": "error", "error": "unknown request"})

    def _prune(self) -> None:
        # Legs set up at run time (ARI callers) never come back under the
        # same name: forget their taps, and end listens to them (the viewer
        # gets "unlistened", reason "gone") so they stop counting against
        # max_listens.
        names = listenable(self.bridge)
        for key in [k for k in self.listeners if k[0] not in names]:
            for client in list(self.listeners[key]):
                self._unlisten(client, key)
                self._send_json(
                    client, {"type": "unlistened", "extension": key[0], "direction": key[1], "reason": "gone"}
                )
        self.taps.prune(names)

    def _unlisten(self, client: LiveClient, key: TapKey) -> None:
        client.listens.discard(key)
        listeners = self.listeners.get(key)
        if listeners is not None:
            listeners.discard(client)
            if not listeners:
                del self.listeners[key]
                self.taps.get(*key).listening = False

    def _reply(self, client: LiveClient, message: dict[str, Any]) -> None:
        self._send_json(client, message)

    # -- inputs from the bridge (media path: queue only) -------------------

    def observe(self, event: Event) -> None:
        """
        Bridge observer.
        """
        if not self.clients:
            return
        if isinstance(event, CallStarted):
            self.taps.install(c for c in self.bridge.active_calls() if c.call_id == event.call_id)
        self._events.append(event)
        self._schedule()

    __call__ = observe

    def _tapped(self, tap: LegTap, samples: Optional[Samples]) -> None:
        # Copy now (well under a microsecond): the leg may reuse the array.
        self._frames.append((tap, encode_frame(tap.stream_id, tap.seq, samples)))
        self._schedule()

    # -- output ------------------------------------------------------------

    def _schedule(self) -> None:
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        events, self._events = self._events, []
        frames, self._frames = self._frames, []
        try:
            for event in events:
                self._broadcast({"type": "event", "event": event_to_dict(event)})
                if isinstance(event, CallEnded):
                    record = next((r for r in self.recorder.recent if r.call_id == event.call_id), None)
                    if record is not None:
                        self._broadcast({"type": "call_ended", "call": record.to_dict()})
            for tap, data in frames:
                listeners = self.listeners.get((tap.extension, tap.direction))
                if listeners:
                    prepared = self.factory.prepareMessage(data, isBinary=True)
                    for client in listeners:
                        self._put(client, prepared, len(data))
        except Exception:
            self.log.failure("monitor flush failed")
        for client in list(self.clients):
            self.drain(client)

    def drain(self, client: LiveClient) -> None:
        """
        Write ``client``'s queued messages while its transport takes them.
        """
        try:
            client.outbox.drain(client.send_prepared)
        except Exception:
            self.log.failure("monitor send failed")

    def _broadcast(self, message: dict[str, Any]) -> None:
        if not self.clients:
            return
        data = to_json(message)
        prepared = self.factory.prepareMessage(data, isBinary=False)
        for client in self.clients:
            self._put(client, prepared, len(data))

    def _send_json(self, client: LiveClient, message: dict[str, Any]) -> None:
        data = to_json(message)
        self._put(client, self.factory.prepareMessage(data, isBinary=False), len(data))
        self._schedule()

    def _put(self, client: LiveClient, prepared: PreparedMessage, size: int) -> None:
        self.dropped += client.outbox.put(prepared, size)

    def _guarded(self, fn: Callable[[], None]) -> None:
        # An exception would stop the LoopingCall for good.
        try:
            fn()
        except Exception:
            self.log.failure("monitor timer failed")

    def _send_status(self) -> None:
        self._prune()
        self._broadcast(
            {"type": "status", "status": snapshot(self.bridge, self.recorder, self.clock.seconds(), full=False)}
        )
        self._schedule()

    def _send_levels(self) -> None:
        levels = self.taps.levels(self.bridge.active_calls())
        if levels:
            self._broadcast({"type": "levels", "time": self.clock.seconds(), "levels": levels})
            self._schedule()
