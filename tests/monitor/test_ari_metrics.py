"""
``/metrics`` with an ARI events socket in the bridge's service tree (as
the ARI controller puts it there): events received by type, malformed
messages dropped by reason, liveness pings and drops, all read from the
socket's counters at scrape time; none of it without ARI.  The socket runs
on a ``task.Clock`` with Autobahn's real client protocol over a memory
transport (:mod:`tests.ari.test_events`).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.test_events import _answer, _Endpoint
from tests.ari.test_events_liveness import TEXT, server_frame
from tests.monitor.harness import MonitoredBridge, Samples, bearer, parse_metrics
from xlbridge.ari.event_checks import ACTED_ON, OTHER, REASONS
from xlbridge.ari.events import LIVENESS_IDLE_S, LIVENESS_TIMEOUT_S, ARIEvents
from xlbridge.ari.events_lifecycle import State

BINARY = 0x2

FAMILIES = (
    "xlbridge_ari_events_total",
    "xlbridge_ari_events_dropped_total",
    "xlbridge_ari_pings_total",
    "xlbridge_ari_liveness_drops_total",
)


def event(kind: str, channel: str = "1.1") -> bytes:
    return f'{{"type": "{kind}", "channel": {{"id": "{channel}"}}}}'.encode()


class ARIMetricsTests(MonitoredBridge, SynchronousTestCase):
    def setUp(self) -> None:
        self.build()

    def scrape(self) -> Samples:
        code, _, body = self.get("/metrics", bearer())
        self.assertEqual(code, 200)
        self.text = body.decode()
        return parse_metrics(self.text)

    def ari(self) -> tuple[ARIEvents, Any]:
        """An events socket under the bridge, connected; its protocol."""
        self.clock = Clock()
        endpoint = _Endpoint(self.clock)
        reactor: Any = MemoryReactorClock()
        events = ARIEvents(
            reactor, "http://asterisk.example:8088", "xlbridge", "xlbridge", "secret", lambda e: None,
            clock=self.clock, endpoint=endpoint, random=lambda: 0.0,  # type: ignore[arg-type]
        )
        controller = MultiService()  # where the ARI controller keeps it
        controller.setName("ari")
        events.setServiceParent(controller)
        controller.setServiceParent(self.bridge)  # started: the bridge runs

        def stop() -> None:
            d = controller.disownServiceParent()
            self.clock.advance(0)
            self.successResultOf(d)

        self.addCleanup(stop)
        proto, transport = endpoint.tcp()
        _answer(proto, transport)
        self.assertEqual(events.state, State.UP)
        return events, proto

    def test_absent_without_ari(self) -> None:
        """No ARI controller configured: no ``xlbridge_ari_*`` family at all."""
        m = self.scrape()
        self.assertIn(("xlbridge_active_calls", ()), m)
        self.assertNotIn("xlbridge_ari_", self.text)

    def test_every_label_from_the_start(self) -> None:
        self.ari()
        m = self.scrape()
        for kind in (*ACTED_ON, OTHER):
            self.assertEqual(m[("xlbridge_ari_events_total", (("type", kind),))], 0, kind)
        for reason in REASONS:
            self.assertEqual(m[("xlbridge_ari_events_dropped_total", (("reason", reason),))], 0, reason)
        self.assertEqual(m[("xlbridge_ari_pings_total", ())], 0)
        self.assertEqual(m[("xlbridge_ari_liveness_drops_total", ())], 0)
        for name in FAMILIES:
            self.assertIn(f"# TYPE {name} counter", self.text)

    def test_events_drops_and_a_liveness_drop(self) -> None:
        """
        Good events by type (a type the controller ignores as ``other``,
        never as a label of its own), malformed messages by reason, then a
        ping that goes unanswered: one ping, one liveness drop.
        """
        events, proto = self.ari()
        for payload in (
            event("StasisStart"), event("StasisStart", "1.2"), event("StasisEnd"), event("ChannelVarset"),
            b'{"type": "PlaybackFinished", "playback": {"id": "p"}}',
            b"not json", b"[1, 2]", b'{"type": "StasisStart"}', b'{"type": "StasisEnd"}', b'{"no": "type"}',
        ):
            proto.dataReceived(server_frame(TEXT, payload))
        proto.dataReceived(server_frame(BINARY, b"\x00\x01"))
        m = self.scrape()
        received = {k[1][0][1]: v for k, v in m.items() if k[0] == "xlbridge_ari_events_total"}
        self.assertEqual(received, {
            "StasisStart": 2, "StasisEnd": 1, "ChannelDestroyed": 0, "PlaybackFinished": 1, "other": 1,
        })
        dropped = {k[1][0][1]: v for k, v in m.items() if k[0] == "xlbridge_ari_events_dropped_total"}
        self.assertEqual(dropped, {
            "binary": 1, "not_utf8": 0, "not_json": 1, "too_deep": 0, "not_object": 1, "no_type": 1,
            "bad_field": 0, "missing_field": 2,
        })
        self.assertEqual(m[("xlbridge_ari_pings_total", ())], 0)
        self.assertEqual(m[("xlbridge_ari_liveness_drops_total", ())], 0)
        self.assertNotIn("ChannelVarset", self.text)

        # Half-open: the events stop, the ping goes unanswered.
        self.clock.advance(LIVENESS_IDLE_S)
        self.assertEqual(self.scrape()[("xlbridge_ari_pings_total", ())], 1)
        self.clock.advance(LIVENESS_TIMEOUT_S)
        self.assertEqual(events.state, State.BACKOFF)
        m = self.scrape()
        self.assertEqual(m[("xlbridge_ari_pings_total", ())], 1)
        self.assertEqual(m[("xlbridge_ari_liveness_drops_total", ())], 1)
        # Counters: the drop and the reconnect reset nothing.
        self.assertEqual(m[("xlbridge_ari_events_total", (("type", "StasisStart"),))], 2)
        self.assertEqual(m[("xlbridge_ari_events_dropped_total", (("reason", "missing_field"),))], 2)
        labels = {k for _, ls in m for k, _ in ls}
        self.assertEqual(labels - {"transport", "reason", "stage", "engine", "le", "type"}, set())
        self.assertNotIn("secret", self.text)
