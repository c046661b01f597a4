"""
``--ari-media websocket`` against the real Asterisk 22 of the lab
(``scripts/asterisk-lab.sh``): each caller's ExternalMedia channel is a
chan_websocket channel, slin16 little-endian both ways.

- Server mode (the default): xlbridge connects to each channel's
  ``ws://127.0.0.1:8088/media/<id>`` on Asterisk's own HTTP server.
- Client mode: Asterisk dials xlbridge's one port (9093) through the
  ``[xlbridge-ari]`` entry of etc/asterisk/websocket_client.conf, which the
  lab installs; xlbridge tells the callers apart by MEDIA_START's
  ``channel_id``.

Each test checks what the Local callers recorded (the partner's prompt,
whole, both ways) and that Asterisk is left with no channels or bridges.
Skipped, with the reason, when the lab is not running (it needs root).
"""

from __future__ import annotations

import signal
import uuid
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest

from tests.asterisk import lab
from tests.asterisk.test_real_asterisk import PROMPT_A, WS_SPLICED, RealAsteriskTestCase


class WebSocketMediaTests(RealAsteriskTestCase):
    def ws_args(self, *more: str) -> list[str]:
        return self.ari_args("--engines", "relay", "--ari-media", "websocket", *more)

    def client_args(self) -> list[str]:
        conf = lab.ROOT / "etc" / "asterisk" / "websocket_client.conf"
        if "\n[xlbridge-ari]" not in conf.read_text():
            raise SkipTest("the lab's websocket_client.conf has no [xlbridge-ari]: sh scripts/asterisk-lab.sh start")
        return self.ws_args("--ari-websocket-connection", "client", "--ari-websocket-client", "xlbridge-ari")

    @inlineCallbacks
    def test_room_in_server_mode(self) -> Any:
        """
        xlbridge connects to ``/media/<id>``; both callers hear each other's
        prompt whole; our channel ids are on the channels.
        """
        bridge = yield self.start(*self.ws_args(), ready="ARI events connected")
        self.assertIn("xlbridge connects to ws://127.0.0.1:8088/media/<id>", bridge.log())
        # Caller a talks 2 s in (not 1): in server mode each leg needs one
        # more round trip (our connection to /media/<id>) before it can play,
        # and a loaded CI machine has taken over a second for it.
        yield self.exchange(
            {"app": "xlbridge", "app_args": "room=w1,lang=en", "delay": 2},
            {"app": "xlbridge", "app_args": "room=w1,lang=es"}, spliced=WS_SPLICED,
        )
        log = bridge.log()
        self.assertNotIn("setup failed", log)
        self.assertEqual(log.count("WebSocket channel WebSocket/INCOMING/0x"), 2)

    @inlineCallbacks
    def test_room_in_client_mode(self) -> Any:
        """
        Asterisk dials 9093 through ``[xlbridge-ari]``; the router hands
        each connection to its caller's leg by channel id.
        """
        bridge = yield self.start(*self.client_args(), ready="ARI events connected")
        yield self.exchange(
            {"app": "xlbridge", "app_args": "room=w2,lang=en"}, {"app": "xlbridge", "app_args": "room=w2,lang=es"},
            spliced=WS_SPLICED,
        )
        log = bridge.log()
        self.assertNotIn("setup failed", log)
        self.assertNotIn("refused WebSocket media connection", log)
        self.assertEqual(log.count("WebSocket channel WebSocket/xlbridge-ari/0x"), 2)

    @inlineCallbacks
    def test_room_mixing_rtp_and_websocket(self) -> Any:
        """
        ``--ari-media rtp`` (the default) and one caller asking for
        ``media=websocket``: an RTP leg and a WebSocket leg in one room,
        each caller hearing the other's prompt whole.
        """
        bridge = yield self.start(*self.ari_args("--engines", "relay"), ready="ARI events connected")
        yield self.exchange(
            {"app": "xlbridge", "app_args": "room=w5,lang=en,media=websocket"},
            {"app": "xlbridge", "app_args": "room=w5,lang=es"}, spliced=WS_SPLICED,
        )
        log = bridge.log()
        self.assertNotIn("setup failed", log)
        self.assertEqual(log.count("WebSocket channel WebSocket/INCOMING/0x"), 1)

    @inlineCallbacks
    def test_hangup_from_either_side(self) -> Any:
        """
        The first caller of a room hangs up: the other is hung up at once;
        then in a second room the second caller hangs up first.  Nothing
        is left either time.
        """
        bridge = yield self.start(*self.ws_args(), ready="ARI events connected")
        yield lab.caller("a", "", hold=3, app="xlbridge", app_args="room=w3,lang=en")
        yield lab.caller("b", "", hold=40, app="xlbridge", app_args="room=w3,lang=es")
        waited = yield lab.wait_idle(30)
        self.assertLess(waited, 12)
        yield self.assert_nothing_left()
        yield lab.caller("c", "", hold=40, app="xlbridge", app_args="room=w4,lang=en")
        yield lab.caller("d", "", hold=3, app="xlbridge", app_args="room=w4,lang=es")
        waited = yield lab.wait_idle(30)
        self.assertLess(waited, 12)
        yield self.assert_nothing_left()
        self.assertEqual(bridge.log().count(" started: "), 2)
        self.assertNotIn("setup failed", bridge.log())

    @inlineCallbacks
    def test_stop_hangs_everything_up(self) -> Any:
        """
        SIGTERM mid-call: xlbridge hangs up its callers and closes their
        media; Asterisk is left with nothing.
        """
        bridge = yield self.start(*self.ws_args(), ready="ARI events connected")
        yield lab.caller("a", "", hold=40, app="xlbridge", app_args="room=w5,lang=en")
        yield lab.caller("b", "", hold=40, app="xlbridge", app_args="room=w5,lang=es")
        yield bridge.wait_for(" started: ")
        yield bridge.stop(signal.SIGTERM)  # twistd then exits by the same signal
        self.assertEqual(bridge.log().count("left room w5 (shutdown)"), 2)
        self.assertIn("Server Shut Down.", bridge.log())
        waited = yield lab.wait_idle(10)
        self.assertLess(waited, 5)
        yield self.assert_nothing_left()

    @inlineCallbacks
    def test_restart_takes_callers_back_and_removes_old_channels(self) -> Any:
        """
        xlbridge killed mid-call: Asterisk hangs up the WebSocket channels
        with their sockets, but the bridges stay and the callers sit in
        silent Stasis; a WebSocket channel of ours that was never connected
        (killed between creating and connecting) stays too, for 30 s.  The
        next start removes the bridges and that channel, takes the callers
        back, and they hear each other again.
        """
        first = yield self.start(*self.ws_args(), ready="ARI events connected")
        yield lab.caller("a", "", hold=18, app="xlbridge", app_args="room=w6,lang=en")
        yield lab.caller("b", PROMPT_A, delay=9, hold=6, app="xlbridge", app_args="room=w6,lang=es")
        yield first.wait_for(" started: ")
        yield first.stop(signal.SIGKILL)
        stale = yield lab.ari("POST", "/channels/externalMedia", {
            "app": "xlbridge", "channelId": f"xlbridge-ws-{uuid.uuid4()}", "transport": "websocket",
            "encapsulation": "none", "format": "slin16", "connection_type": "server",
        })
        bridges = yield lab.ari("GET", "/bridges")
        self.assertEqual(len(bridges), 2)
        (self.tmp / "second").mkdir()
        second = lab.Bridge(self.tmp / "second", self.ws_args())
        self.addCleanup(second.stop)
        yield second.wait_for(" started: ")
        log = second.log()
        self.assertEqual(log.count("removing stale bridge"), 2)
        self.assertIn(f"removing stale channel {stale['name']}", log)
        self.assertEqual(log.count("taking back"), 2)
        channels = yield lab.ari("GET", "/channels")
        self.assertNotIn(stale["id"], [c["id"] for c in channels])
        yield self.assert_nothing_left()
        self.assert_heard("a", PROMPT_A)
        self.assertNotIn("setup failed", second.log())


class WebSocketTranslationTests(RealAsteriskTestCase):
    """
    A room over WebSocket media with the local engines: both callers
    hear the other translated (Whisper, Apertium, espeak-ng), and each
    playback ends when Asterisk's mark says it was heard.
    """

    timeout = 240

    @inlineCallbacks
    def test_both_directions_translated(self) -> Any:
        events = yield self.both_directions("--ari-media", "websocket")
        ended = [e for e in events if e["event"] == "PlaybackEnded"]
        self.assertEqual(len({e["extension"] for e in ended}), 2, ended)
