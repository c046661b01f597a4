"""
What the controller does on each (re)connection of the events socket, one
answer at a time (a :class:`~tests.ari.harness.RecordingClient`): the
write-access check first, then the cleanup, which must not take callers
who enter while its lists are on the way for leftovers.
"""

from __future__ import annotations

from tests.ari.test_controller import MemoryController
from xlbridge.ari.client import ARIAuthError, ARIError


class OnConnectTests(MemoryController):
    def test_access_checked_before_the_cleanup(self) -> None:
        d = self.ari.on_connect()
        self.assertEqual(self.client.log(), [("check_access",)])
        self.client.reply("check_access")
        self.assertEqual(self.client.log()[-1], ("bridges",))
        self.client.reply("bridges", [])
        self.client.reply("channels", [])
        self.assertIsNone(self.successResultOf(d))

    def test_refused_user_no_cleanup(self) -> None:
        d = self.ari.on_connect()
        (sent,) = self.client.pending("check_access")
        sent.deferred.errback(ARIAuthError("DELETE", "/bridges/xlbridge-access-check", "u", 403, ""))
        self.failureResultOf(d, ARIAuthError)
        self.assertEqual(self.client.log(), [("check_access",)])

    def test_failed_list_fails_on_connect(self) -> None:
        # So that the events socket retries it (ari/events.py).
        d = self.ari.on_connect()
        self.client.reply("check_access")
        self.client.refuse("bridges", 503)
        self.failureResultOf(d, ARIError)

    def test_callers_entering_meanwhile_are_not_leftovers(self) -> None:
        """
        A caller who enters while the bridge list is on the way keeps the
        bridge it made meanwhile; one who enters while the channel list is
        on the way is not in it, and is not "gone while disconnected".
        """
        d = self.ari.on_connect()
        self.client.reply("check_access")
        self.enter("c1")
        self.client.reply("answer")
        self.client.reply("create_bridge", {"id": "b-c1", "name": "xlbridge-c1"})
        self.client.reply("bridges", [{"id": "b-c1", "name": "xlbridge-c1", "channels": []},
                                      {"id": "b-old", "name": "xlbridge-1724.1", "channels": []}])
        self.assertEqual([s.args for s in self.client.pending("destroy_bridge")], [("b-old",)])
        self.client.reply("destroy_bridge")
        self.enter("c2", room="r2")
        self.client.reply("channels", [{"id": "c1", "name": "PJSIP/c1"}])
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(sorted(self.ari.callers), ["c1", "c2"])
        self.assertEqual(self.client.pending("hangup"), [])

    def test_caller_gone_while_away_is_ended(self) -> None:
        self.set_up("c1")
        d = self.ari.on_connect()
        self.client.reply("check_access")
        self.client.reply("bridges", [])
        self.client.reply("channels", [])  # c1 hung up while we were away
        self.assertIsNone(self.successResultOf(d))
        self.assertNotIn("c1", self.ari.callers)
