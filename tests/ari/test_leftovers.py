"""
Leftovers of an earlier run: the channel-name rules and the pure choices
of what is stale (in memory), and the cleanup after each (re)connection
through the controller against the fake ARI: stale bridges and
ExternalMedia channels removed, callers left in Stasis taken back.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.harness import ARIHarness, wait_until
from xlbridge.ari.leftovers import (
    BRIDGE_PREFIX,
    audiosocket_target,
    orphans,
    partnerless,
    stale_bridges,
    stale_media,
    stale_websocket,
    unicast_rtp_port,
    websocket_peer,
)


class MediaNameTests(SynchronousTestCase):
    def test_names(self) -> None:
        u = "0f3c6c46-5a7e-4b55-9c1c-2e5b6f0a9d11"
        self.assertEqual(unicast_rtp_port("UnicastRTP/127.0.0.1:20000-0x7f0001"), 20000)
        self.assertIsNone(unicast_rtp_port("PJSIP/7777-00000001"))
        self.assertEqual(audiosocket_target(f"AudioSocket/127.0.0.1:9092-{u}"), ("127.0.0.1:9092", u))
        self.assertEqual(audiosocket_target(f"AudioSocket/my-host:9092-{u}"), ("my-host:9092", u))
        self.assertEqual(audiosocket_target("AudioSocket/127.0.0.1:9092-7f00ab"), ("127.0.0.1:9092", "7f00ab"))
        self.assertIsNone(audiosocket_target("UnicastRTP/127.0.0.1:9092-0x1"))

    def test_stale_media(self) -> None:
        mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
        chans = [
            {"id": "1", "name": "UnicastRTP/127.0.0.1:20005-0x1"},   # stale
            {"id": "2", "name": "UnicastRTP/127.0.0.1:20006-0x2"},   # ours by id
            {"id": "3", "name": "UnicastRTP/127.0.0.1:20007-0x3"},   # port being set up
            {"id": "4", "name": "UnicastRTP/127.0.0.1:9000-0x4"},    # not our range
            {"id": "5", "name": f"AudioSocket/127.0.0.1:9092-{theirs}"},  # stale
            {"id": "6", "name": f"AudioSocket/127.0.0.1:9092-{mine}"},    # ours by UUID
            {"id": "7", "name": f"AudioSocket/127.0.0.1:9093-{theirs}"},  # another listener
            {"id": "8", "name": "PJSIP/7777-00000001"},
        ]
        stale = stale_media(chans, {"2", mine}, (20000, 20009), "127.0.0.1:9092", {20007})
        self.assertEqual([c["id"] for c in stale], ["1", "5"])

    def test_websocket_names(self) -> None:
        self.assertEqual(websocket_peer("WebSocket/INCOMING/0x7fb79c00f280"), "INCOMING")
        self.assertEqual(websocket_peer("WebSocket/xlbridge-ari/0x7f01"), "xlbridge-ari")
        self.assertIsNone(websocket_peer("WebSocket/INCOMING"))
        self.assertIsNone(websocket_peer("PJSIP/7777-00000001"))

    def test_stale_websocket(self) -> None:
        def ch(cid: str, name: str, app: str = "AppDial2", data: str = "(Outgoing Line)") -> dict[str, Any]:
            return {"id": cid, "name": name, "dialplan": {"app_name": app, "app_data": data}}

        chans = [
            ch("xlbridge-ws-1", "WebSocket/INCOMING/0x1"),                        # ours, never connected
            ch("xlbridge-ws-2", "WebSocket/INCOMING/0x2"),                        # a live leg's
            ch("1796.3", "WebSocket/xlbridge-ari/0x3", "Stasis", "xlbridge"),     # in our app, no args
            ch("1796.4", "WebSocket/INCOMING/0x4"),                               # another app's, connecting
            ch("1796.5", "WebSocket/INCOMING/0x5", "Stasis", "otherapp"),         # another app's
            ch("1796.6", "WebSocket/media1/0x6", "Stasis", "xlbridge,room=r1"),   # a caller, over WebSocket
            ch("xlbridge-ws-7", "PJSIP/7777-00000007", "Stasis", "xlbridge"),      # not a WebSocket channel
            ch("otherapp-ws-8", "WebSocket/INCOMING/0x8"),                        # another xlbridge's
        ]
        stale = stale_websocket(chans, {"xlbridge-ws-2"}, "xlbridge")
        self.assertEqual([c["id"] for c in stale], ["xlbridge-ws-1", "1796.3"])


class RestartCleanupTests(ARIHarness):
    def test_leftovers_removed_on_connect(self) -> Any:
        async def run() -> None:
            self.fake.bridges["old"] = {"id": "old", "name": "xlbridge-1724.1", "channels": []}
            self.fake.bridges["other"] = {"id": "other", "name": "conference", "channels": []}
            stale = self.fake.new_channel("UnicastRTP/127.0.0.1:47150-0x7f0001", state="Up")
            foreign = self.fake.new_channel("UnicastRTP/127.0.0.1:9000-0x7f0002", state="Up")
            ari = self.start()
            await wait_until(lambda: "old" not in self.fake.bridges and stale["id"] not in self.fake.channels)
            self.assertIn("other", self.fake.bridges)
            self.assertIn(foreign["id"], self.fake.channels)
            self.assertTrue(ari.events.connected)

        return ensureDeferred(run())

    def orphan(self, name: str, args: str) -> dict[str, Any]:
        # A caller an earlier run left in Stasis (no event: it is old news).
        ch = self.fake.new_channel(name, state="Up")
        self.fake.in_stasis.add(ch["id"])
        ch["dialplan"]["app_data"] = f"xlbridge,{args}"
        return ch

    def test_callers_left_in_stasis_are_taken_back(self) -> Any:
        """
        After a restart, callers still in our app are set up again from
        their Stasis arguments and paired as before; a dial caller whose
        callee is gone is hung up.
        """
        async def run() -> None:
            a = self.orphan("PJSIP/7777-00000001", "room=r7,lang=en")
            b = self.orphan("PJSIP/8888-00000002", "room=r7,lang=es")
            lonely = self.orphan("PJSIP/7000-00000003", "dial=PJSIP/9999,lang=en,peer_lang=es")
            self.start()
            await wait_until(lambda: a["id"] in self.calls())
            call = self.calls()[a["id"]]
            self.assertEqual(call.extensions, (a["name"], b["name"]))
            self.assertEqual([leg.language for leg in call.legs], ["en", "es"])
            await wait_until(lambda: lonely["id"] not in self.fake.channels)
            self.assertFalse([r for r in self.fake.requests if r.method == "POST" and r.path == "/channels"])

        return ensureDeferred(run())

    def test_caller_taken_back_and_announced_is_one_caller(self) -> Any:
        """
        A caller entering Stasis just as xlbridge starts is both in the
        cleanup's channel list and announced by StasisStart: it is set up
        once, and its partner still finds room.
        """
        async def run() -> None:
            a = self.orphan("PJSIP/7777-00000001", "room=r9,lang=en")
            ari = await self.connected()
            await wait_until(lambda: a["id"] in ari.callers)
            self.fake.enter(a, ["room=r9,lang=en"])  # its StasisStart, late
            b = self.fake.new_channel("PJSIP/8888-00000002")
            self.fake.enter(b, ["room=r9,lang=es"])
            await wait_until(lambda: a["id"] in self.calls())
            self.assertEqual([c.channel_id for c in ari.rooms["r9"].callers], [a["id"], b["id"]])
            self.assertIn(b["id"], self.fake.channels)
            answers = [p for m, p in self.requests() if p == f"/channels/{a['id']}/answer"]
            self.assertEqual(len(answers), 1)

        return ensureDeferred(run())

    def test_dial_pair_left_in_stasis_is_paired_again(self) -> Any:
        async def run() -> None:
            caller = self.orphan("PJSIP/7000-00000001", "dial=PJSIP/9999,lang=en,peer_lang=es")
            callee = self.orphan("PJSIP/9999-00000002", f"room=dial-{caller['id']},lang=es")
            self.start()
            await wait_until(lambda: caller["id"] in self.calls() or callee["id"] in self.calls())
            self.assertFalse([r for r in self.fake.requests if r.method == "POST" and r.path == "/channels"])

        return ensureDeferred(run())


class ChoiceTests(SynchronousTestCase):
    """
    What the cleanup chooses to remove or take back (pure).
    """

    def test_stale_bridges_are_ours_by_name_and_unowned(self) -> None:
        bridges = [
            {"id": "b1", "name": "xlbridge-1724.1"},   # stale
            {"id": "b2", "name": "xlbridge-1724.2"},   # ours by id
            {"id": "b3", "name": "xlbridge-1724.3"},   # ours by name (created, id not known yet)
            {"id": "b4", "name": "conference"},        # not ours
        ]
        stale = stale_bridges(bridges, {"b2", f"{BRIDGE_PREFIX}1724.3", None})
        self.assertEqual([b["id"] for b in stale], ["b1"])

    def orphan(self, cid: str, app_data: str, app: str = "Stasis") -> dict[str, Any]:
        return {"id": cid, "name": f"PJSIP/{cid}", "dialplan": {"app_name": app, "app_data": app_data}}

    def test_orphans_with_their_arguments(self) -> None:
        channels = [
            self.orphan("1", "xlbridge,room=r7,lang=en"),
            self.orphan("2", "xlbridge,dial=PJSIP/9999,lang=en,peer_lang=es"),  # back into its private room
            self.orphan("3", "xlbridge"),                       # ExternalMedia: no arguments
            self.orphan("4", "other,room=r7"),                  # another app
            self.orphan("5", "xlbridge,room=r8", app="Dial"),   # not in Stasis
            self.orphan("6", "xlbridge,room=r9"),               # known
            self.orphan("7", "xlbridge,lang=en"),               # no room
        ]
        found = orphans(channels, "xlbridge", {"6"})
        self.assertEqual([(ch["id"], args) for ch, args in found], [
            ("1", ["room=r7,lang=en"]), ("2", ["lang=en,peer_lang=es,room=dial-2"]),
        ])

    def test_partnerless_dial_callers(self) -> None:
        found = orphans([
            self.orphan("1", "xlbridge,dial=PJSIP/9999,lang=en"),   # its callee is gone
            self.orphan("2", "xlbridge,dial=PJSIP/9999,lang=en"),   # its callee is still there:
            self.orphan("3", "xlbridge,room=dial-2,lang=es"),
            self.orphan("4", "xlbridge,room=dial-0,lang=es"),       # a callee whose caller is gone
            self.orphan("5", "xlbridge,room=r1,lang=es"),           # a plain room: taken back alone
        ], "xlbridge", set())
        self.assertEqual(partnerless(found), {"1", "4"})


class WorkerScopeTests(SynchronousTestCase):
    """
    A worker of ``--workers`` removes and takes back only what is its own:
    other workers share the Asterisk, the bridge name family and the
    callers' ``app_data``.
    """

    def test_bridge_names(self) -> None:
        from xlbridge.ari.leftovers import bridge_name, named_ours

        self.assertEqual(bridge_name("17.5", "xlbridge"), "xlbridge-17.5")
        self.assertEqual(bridge_name("17.5", "xlbridge-pbx1-0", "xlbridge"), "xlbridge-pbx1-0:17.5")
        self.assertTrue(named_ours("xlbridge-17.5", "xlbridge"))
        self.assertFalse(named_ours("xlbridge-pbx1-0:17.5", "xlbridge"))  # a worker's: not a single process's
        self.assertTrue(named_ours("xlbridge-pbx1-0:17.5", "xlbridge-pbx1-0", "xlbridge"))
        self.assertFalse(named_ours("xlbridge-pbx1-1:17.5", "xlbridge-pbx1-0", "xlbridge"))
        self.assertFalse(named_ours("xlbridge-pbx1-10:17.5", "xlbridge-pbx1-1", "xlbridge"))
        self.assertFalse(named_ours("xlbridge-17.5", "xlbridge-pbx1-0", "xlbridge"))

    def test_stale_bridges_of_a_worker(self) -> None:
        bridges = [{"id": "b1", "name": "xlbridge-pbx1-0:1"}, {"id": "b2", "name": "xlbridge-pbx1-1:2"},
                   {"id": "b3", "name": "xlbridge-3"}, {"id": "b4", "name": "xlbridge-pbx1-0:4"}]
        got = stale_bridges(bridges, {"xlbridge-pbx1-0:4"}, "xlbridge-pbx1-0", "xlbridge")
        self.assertEqual([b["id"] for b in got], ["b1"])
        self.assertEqual([b["id"] for b in stale_bridges(bridges, set())], ["b3"])

    def test_orphans_of_a_worker(self) -> None:
        def ch(cid: str, data: str) -> dict[str, Any]:
            return {"id": cid, "name": f"PJSIP/{cid}", "dialplan": {"app_name": "Stasis", "app_data": data}}

        channels = [ch("1", "xlbridge,room=5,lang=en"), ch("2", "xlbridge,room=5,lang=es"),
                    ch("3", "xlbridge-pbx1-0,room=dial-9,lang=es"), ch("4", "xlbridge-pbx1-0")]
        found = orphans(channels, "xlbridge-pbx1-0", set(), "xlbridge", {"1", "3", "4"})
        self.assertEqual([(c["id"], args) for c, args in found],
                         [("1", ["room=5,lang=en"]), ("3", ["room=dial-9,lang=es"])])
        # without the app's channel list a worker takes back nothing
        self.assertEqual(orphans(channels, "xlbridge-pbx1-0", set(), "xlbridge", None), [])


class MediaNodeScopeTests(SynchronousTestCase):
    """
    Media nodes on other addresses use the same RTP port range: a node's
    cleanup leaves the others' ExternalMedia channels alone.
    """

    def test_other_hosts_left_alone(self) -> None:
        channels = [{"id": "1", "name": "UnicastRTP/127.0.0.2:20000-0x1"},
                    {"id": "2", "name": "UnicastRTP/127.0.0.3:20000-0x2"},
                    {"id": "3", "name": "UnicastRTP/[::1]:20002-0x3"}]
        got = stale_media(channels, set(), (20000, 20999), None, rtp_host="127.0.0.2")
        self.assertEqual([c["id"] for c in got], ["1"])
        self.assertEqual([c["id"] for c in stale_media(channels, set(), (20000, 20999), None, rtp_host="::1")], ["3"])
        self.assertEqual(len(stale_media(channels, set(), (20000, 20999), None)), 3)
