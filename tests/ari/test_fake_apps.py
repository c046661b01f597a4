"""
Tests for several Stasis apps in the fake ARI (tests/fakes/ari_apps.py):
each channel's events reach only its app's sockets, ``/applications``
lists the apps Asterisk would, and ``POST /channels/{id}/move`` moves a
channel (or says ``ApplicationMoveFailed``) as res_stasis.c does.  Real
loopback HTTP (our :class:`ARIClient`) and bare Autobahn events sockets.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.ari.harness import wait_until
from tests.fakes.ari import FakeARI
from xlbridge.ari.client import ARIClient, ARIError

reactor: Any = _reactor
PASSWORD = "s3cret"


class Socket(WebSocketClientProtocol):  # type: ignore[misc]
    """An events socket: records each event."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self.closed: Deferred[None] = Deferred()
        self.factory: Any

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.events.append(json.loads(payload))

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(reason))
        if not self.closed.called:
            self.closed.callback(None)

    def seen(self, kind: Optional[str] = None) -> list[tuple[str, str, str]]:
        """(type, application, channel id) of each event (of ``kind``)."""
        return [(e["type"], e["application"], e.get("channel", {}).get("id", ""))
                for e in self.events if kind is None or e["type"] == kind]


class FakeAppsTests(TestCase):
    def setUp(self) -> None:
        self.fake = FakeARI(reactor, password=PASSWORD)
        self.fake.listen()
        self.addCleanup(self.fake.stop)
        self.client = ARIClient(self.fake.url, "xlbridge", PASSWORD, reactor, timeout=5)
        self.addCleanup(self.client.close)

    async def connect(self, apps: str) -> Socket:
        """An events socket subscribed to ``apps`` (a comma list), open."""
        port = self.fake.port.getHost().port
        factory = WebSocketClientFactory(
            f"ws://127.0.0.1:{port}/ari/events?app={apps}&api_key=xlbridge:{PASSWORD}", reactor=reactor)
        factory.protocol = Socket
        factory.opened = Deferred()  # type: ignore[attr-defined]
        factory.setProtocolOptions(autoPingInterval=0)
        reactor.connectTCP("127.0.0.1", port, factory)
        socket: Socket = await factory.opened  # type: ignore[attr-defined]
        self.addCleanup(self.close, socket)
        return socket

    async def close(self, socket: Socket) -> None:
        """Close ``socket`` and wait until the fake has seen it go."""
        if socket.closed.called:
            return
        left = len(self.fake.sockets) - 1
        socket.sendClose()
        await socket.closed
        await wait_until(lambda: len(self.fake.sockets) == left)

    async def status(self, method: str, path: str, **params: str) -> int:
        """The error status of a request (it must fail)."""
        try:
            await self.client.request(method, path, params)
        except ARIError as e:
            return e.status
        raise AssertionError(f"{method} {path} succeeded")

    def caller(self, app: str, *args: str) -> dict[str, Any]:
        ch = self.fake.new_channel("PJSIP/7777-00000001")
        self.fake.enter(ch, list(args), app)
        return ch

    # -- 1: events go to the channel's app -------------------------------------

    async def test_each_socket_gets_only_its_apps_channels(self) -> None:
        a, b, both = await self.connect("A"), await self.connect("B"), await self.connect("A,B")
        self.assertEqual(self.fake.active_apps(), {"A", "B"})
        one, two = self.caller("A", "room=r1"), self.caller("B", "room=r2", "lang=es")
        self.assertEqual((one["dialplan"]["app_data"], two["dialplan"]["app_data"]),
                         ("A,room=r1", "B,room=r2,lang=es"))
        self.assertEqual((self.fake.app_of(one["id"]), self.fake.app_of(two["id"])), ("A", "B"))
        self.fake.hangup(one["id"])
        self.fake.hangup(two["id"])
        await wait_until(lambda: len(both.events) == 6 and len(a.events) == 3 and len(b.events) == 3)
        kinds = ["StasisStart", "StasisEnd", "ChannelDestroyed"]
        self.assertEqual(a.seen(), [(k, "A", one["id"]) for k in kinds])
        self.assertEqual(b.seen(), [(k, "B", two["id"]) for k in kinds])
        self.assertEqual(a.events[0]["args"], ["room=r1"])
        self.assertEqual(b.events[0]["args"], ["room=r2", "lang=es"])
        self.assertEqual(sorted(both.seen()), sorted(a.seen() + b.seen()))
        self.assertIsNone(self.fake.app_of(one["id"]))

    async def test_default_app_and_events_about_no_channel(self) -> None:
        ours, other = await self.connect("xlbridge"), await self.connect("A")
        ch = self.fake.new_channel("PJSIP/7777-00000001")
        self.fake.enter(ch, ["room=r1"])
        self.fake.emit({"type": "DeviceStateChanged"})  # about no channel: everyone, as before
        await wait_until(lambda: len(ours.events) == 2 and other.events)
        self.assertEqual(ours.seen(), [("StasisStart", "xlbridge", ch["id"]), ("DeviceStateChanged", "xlbridge", "")])
        self.assertEqual(other.seen(), [("DeviceStateChanged", "xlbridge", "")])
        self.assertEqual((self.fake.app_of(ch["id"]), ch["dialplan"]["app_data"]), ("xlbridge", "xlbridge,room=r1"))

    async def test_originated_and_media_channels_enter_the_app_requested(self) -> None:
        a, b = await self.connect("A"), await self.connect("B")
        callee = await self.client.request("POST", "/channels", {"endpoint": "PJSIP/8888", "app": "B",
                                                                  "appArgs": "room=r1,lang=es"})
        media = await self.client.request("POST", "/channels/externalMedia", {
            "app": "B", "external_host": "127.0.0.1:9", "format": "slin16", "data": "m1"})
        await wait_until(lambda: len(b.events) == 2)
        self.assertEqual(sorted(b.seen()), sorted([("StasisStart", "B", callee["id"]), ("StasisStart", "B", media["id"])]))
        started = {e["channel"]["id"]: e["args"] for e in b.events}
        self.assertEqual(started, {callee["id"]: ["room=r1", "lang=es"], media["id"]: ["m1"]})
        self.assertEqual(a.events, [])
        self.assertEqual((self.fake.app_of(callee["id"]), self.fake.app_of(media["id"])), ("B", "B"))

    async def test_playback_events_go_to_the_channels_app(self) -> None:
        a, b = await self.connect("A"), await self.connect("B")
        self.fake.playback_seconds = 0.01
        ch = self.caller("B")
        await self.client.request("POST", f"/channels/{ch['id']}/play", {"media": "sound:hello"})
        await wait_until(lambda: len(b.events) == 3)
        self.assertEqual([(e["type"], e["application"]) for e in b.events],
                         [("StasisStart", "B"), ("PlaybackStarted", "B"), ("PlaybackFinished", "B")])
        self.assertEqual(a.events, [])

    # -- 2: /applications ------------------------------------------------------

    async def test_applications_lists_active_apps_and_inactive_ones_with_channels(self) -> None:
        a = await self.connect("A")
        await self.connect("B")
        ch = self.caller("A")
        self.fake.bridges["br1"] = {"id": "br1", "channels": [ch["id"]]}
        apps = await self.client.request("GET", "/applications")
        self.assertEqual(apps, [
            {"name": "A", "channel_ids": [ch["id"]], "bridge_ids": ["br1"], "endpoint_ids": [],
             "device_names": [], "events_allowed": [], "events_disallowed": []},
            {"name": "B", "channel_ids": [], "bridge_ids": [], "endpoint_ids": [],
             "device_names": [], "events_allowed": [], "events_disallowed": []},
        ])
        await self.close(a)
        self.assertEqual(self.fake.active_apps(), {"B"})
        # Inactive, but Asterisk keeps it while a channel is in it.
        one = await self.client.request("GET", "/applications/A")
        self.assertEqual((one["name"], one["channel_ids"]), ("A", [ch["id"]]))
        self.fake.hangup(ch["id"])
        apps = await self.client.request("GET", "/applications")
        self.assertEqual([app["name"] for app in apps], ["B"])
        self.assertEqual(await self.status("GET", "/applications/A"), 404)
        self.assertEqual(await self.status("GET", "/applications/nobody"), 404)

    # -- 3: move -----------------------------------------------------------------

    async def test_move_to_an_active_app(self) -> None:
        a, b, both = await self.connect("A"), await self.connect("B"), await self.connect("A,B")
        ch = self.caller("A", "room=r1")
        self.fake.bridges["br1"] = {"id": "br1", "channels": [ch["id"]]}
        await wait_until(lambda: a.events and both.events)
        answer = await self.client.request("POST", f"/channels/{ch['id']}/move",
                                           {"app": "B", "appArgs": "room=r1,,lang=en"})
        self.assertIsNone(answer)
        self.assertEqual(self.fake.app_of(ch["id"]), "A")  # not yet: the channel's thread moves it
        await wait_until(lambda: len(both.events) == 3 and len(a.events) == 2 and len(b.events) == 1)
        self.assertEqual(both.seen(), [("StasisStart", "A", ch["id"]), ("StasisEnd", "A", ch["id"]),
                                       ("StasisStart", "B", ch["id"])])
        self.assertEqual(a.seen(), both.seen()[:2])
        self.assertEqual(b.seen(), both.seen()[2:])
        self.assertEqual(b.events[0]["args"], ["room=r1", "lang=en"])
        self.assertEqual(self.fake.app_of(ch["id"]), "B")
        self.assertEqual(self.fake.bridges["br1"]["channels"], [ch["id"]])
        self.assertEqual(ch["dialplan"]["app_data"], "A,room=r1")
        self.fake.hangup(ch["id"])
        await wait_until(lambda: len(b.events) == 3)
        self.assertEqual(b.seen()[1:], [("StasisEnd", "B", ch["id"]), ("ChannelDestroyed", "B", ch["id"])])
        self.assertEqual(len(a.events), 2)

    async def test_move_without_args(self) -> None:
        await self.connect("A")
        b = await self.connect("B")
        ch = self.caller("A", "room=r1")
        await self.client.request("POST", f"/channels/{ch['id']}/move", {"app": "B"})
        await wait_until(lambda: b.events)
        self.assertEqual(b.events[0]["args"], [])

    async def test_move_to_an_inactive_app_fails(self) -> None:
        a = await self.connect("A")
        ch = self.caller("A", "room=r1")
        for target in ("gone", "A-pbx1-0"):
            await self.client.request("POST", f"/channels/{ch['id']}/move", {"app": target, "appArgs": "room=r1"})
        await wait_until(lambda: len(a.events) == 3)
        self.assertEqual(a.seen(), [("StasisStart", "A", ch["id"])] + [("ApplicationMoveFailed", "A", ch["id"])] * 2)
        self.assertEqual([(e["destination"], e["args"]) for e in a.events[1:]],
                         [("gone", ["room=r1"]), ("A-pbx1-0", ["room=r1"])])
        self.assertEqual(self.fake.app_of(ch["id"]), "A")
        self.assertIn(ch["id"], self.fake.in_stasis)

    async def test_move_refusals(self) -> None:
        await self.connect("A")
        ch = self.caller("A")
        dialling = self.fake.new_channel("PJSIP/8888-00000002")  # not in Stasis
        self.assertEqual(await self.status("POST", "/channels/1724500000.999/move", app="A"), 404)
        self.assertEqual(await self.status("POST", f"/channels/{dialling['id']}/move", app="A"), 409)
        self.assertEqual(await self.status("POST", f"/channels/{ch['id']}/move"), 400)

    async def test_moved_channel_hung_up_before_the_move(self) -> None:
        a, b = await self.connect("A"), await self.connect("B")
        ch = self.caller("A")
        await self.client.request("POST", f"/channels/{ch['id']}/move", {"app": "B"})
        self.fake.hangup(ch["id"])
        await wait_until(lambda: len(a.events) == 3)
        await self.client.request("GET", "/channels")  # time for a wrong StasisStart to come
        self.assertEqual([e["type"] for e in a.events], ["StasisStart", "StasisEnd", "ChannelDestroyed"])
        self.assertEqual(b.events, [])

    # -- 4 and 5: an app whose last socket closed --------------------------------

    async def test_inactive_app_keeps_its_channels_silently_until_it_connects_again(self) -> None:
        a = await self.connect("A")
        b = await self.connect("B")
        kept, gone = self.caller("A", "room=r1"), self.caller("A", "room=r2")
        await wait_until(lambda: len(a.events) == 2)
        await self.close(a)
        self.assertEqual(self.fake.active_apps(), {"B"})
        self.fake.hangup(gone["id"])  # still removed; nobody hears of it
        self.assertNotIn(gone["id"], self.fake.channels)
        self.assertEqual([(e["type"], e["application"]) for e in self.fake.apps.missed],
                         [("StasisEnd", "A"), ("ChannelDestroyed", "A")])
        self.assertEqual(self.fake.app_of(kept["id"]), "A")
        again = await self.connect("A")
        self.assertEqual(self.fake.active_apps(), {"A", "B"})
        self.fake.hangup(kept["id"])
        await wait_until(lambda: len(again.events) == 2)
        self.assertEqual(again.seen(), [("StasisEnd", "A", kept["id"]), ("ChannelDestroyed", "A", kept["id"])])
        self.assertEqual(b.events, [])

    async def test_move_out_of_an_inactive_app(self) -> None:
        a, b = await self.connect("A"), await self.connect("B")
        ch = self.caller("A", "room=r1")
        await self.close(a)
        await self.client.request("POST", f"/channels/{ch['id']}/move", {"app": "B", "appArgs": "room=r1"})
        await wait_until(lambda: b.events)
        self.assertEqual(b.seen(), [("StasisStart", "B", ch["id"])])
        self.assertEqual([e["type"] for e in self.fake.apps.missed], ["StasisEnd"])
