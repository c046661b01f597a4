"""
A caller's lifecycle (xlbridge.ari.caller) alone: every transition, and
inputs that arrive in a state where they mean nothing.  The machine is
driven with a recording owner whose requests return Deferreds the test
fires, so each step happens when the test says; no reactor, no sockets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.ari.caller import Caller, new_caller

SETUP_STEPS = ("answer", "create_bridge", "create_media", "wait_media", "add_to_bridge")


class RecordingOwner:
    """
    Stands in for the controller: records ``(method, args)`` and, for the
    setup steps, hands back a Deferred the test fires (unless told to
    answer at once).
    """

    def __init__(self, immediate: bool = False) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.pending: dict[str, Deferred[Any]] = {}
        self.immediate = immediate
        self.raises: dict[str, Exception] = {}

    def _record(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))

    def _request(self, method: str, caller: Caller, *args: Any) -> "Deferred[Any]":
        self._record(method, caller, *args)
        if method in self.raises:
            raise self.raises[method]
        if self.immediate:
            return succeed({"id": f"{method}-id"})
        d: Deferred[Any] = Deferred()
        self.pending[method] = d
        return d

    def answer(self, caller: Caller) -> "Deferred[Any]":
        return self._request("answer", caller)

    def create_bridge(self, caller: Caller) -> "Deferred[Any]":
        return self._request("create_bridge", caller)

    def create_media(self, caller: Caller) -> "Deferred[Any]":
        return self._request("create_media", caller)

    def wait_media(self, caller: Caller, channel: dict[str, Any]) -> "Deferred[None]":
        return self._request("wait_media", caller, channel)

    def add_to_bridge(self, caller: Caller) -> "Deferred[Any]":
        return self._request("add_to_bridge", caller)

    def set_up(self, caller: Caller) -> None:
        self._record("set_up", caller)

    def leave(self, caller: Caller, reason: str) -> None:
        self._record("leave", caller, reason)

    def release(self, caller: Caller) -> None:
        self._record("release", caller)

    def hang_up(self, caller: Caller) -> None:
        self._record("hang_up", caller)

    # -- for the tests ---------------------------------------------------

    def names(self) -> list[str]:
        return [method for method, _ in self.calls]

    def fire(self, method: str, result: Any = None) -> None:
        self.pending.pop(method).callback(result)

    def fail(self, method: str, error: Exception) -> None:
        self.pending.pop(method).errback(error)


class LifecycleTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.owner = RecordingOwner()
        self.caller = new_caller("chan-1", "PJSIP/7777-00000001", "r1", "en", self.owner)
        self.machine = self.caller.lifecycle
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def step(self, method: str) -> None:
        """
        Answer the pending ``method`` request as Asterisk would.
        """
        results: dict[str, Any] = {
            "answer": None, "create_bridge": {"id": "bridge-1"}, "create_media": {"id": "media-1"},
            "wait_media": None, "add_to_bridge": None,
        }
        self.owner.fire(method, results[method])

    def set_up(self) -> None:
        """
        Through setting-up to waiting-for-partner.
        """
        self.machine.start()
        for method in SETUP_STEPS:
            self.step(method)
        self.assertEqual(self.machine.state(), "waiting-for-partner")
        self.owner.calls.clear()

    def paired(self) -> Any:
        self.set_up()
        room = object()
        self.machine.partner_ready(room, 1)  # type: ignore[arg-type]
        return room


class SetupTests(LifecycleTestCase):
    def test_new_caller_is_setting_up_and_start_answers(self) -> None:
        self.assertEqual(self.machine.state(), "setting-up")
        self.assertEqual(self.owner.names(), [])
        self.machine.start()
        self.assertEqual(self.owner.names(), ["answer"])
        self.assertEqual(self.machine.state(), "setting-up")

    def test_each_answer_starts_the_next_step_in_order(self) -> None:
        self.machine.start()
        for done, following in zip(SETUP_STEPS, SETUP_STEPS[1:]):
            self.step(done)
            self.assertEqual(self.owner.names()[-1], following)
            self.assertEqual(self.machine.state(), "setting-up")
        self.assertEqual(self.caller.bridge_id, "bridge-1")
        self.assertEqual(self.caller.media_id, "media-1")
        self.assertEqual(self.owner.calls[3], ("wait_media", (self.caller, {"id": "media-1"})))
        self.assertFalse(self.caller.ready)
        self.step("add_to_bridge")  # media bound
        self.assertEqual(self.machine.state(), "waiting-for-partner")
        self.assertTrue(self.caller.ready)
        self.assertEqual(self.owner.names(), [*SETUP_STEPS, "set_up"])

    def test_answers_that_come_at_once_run_in_order(self) -> None:
        owner = RecordingOwner(immediate=True)
        caller = new_caller("chan-2", "PJSIP/8888-00000002", "r1", "es", owner)
        caller.lifecycle.start()
        self.assertEqual(owner.names(), [*SETUP_STEPS, "set_up"])
        self.assertEqual(caller.lifecycle.state(), "waiting-for-partner")

    def test_partner_ready_then_left(self) -> None:
        room = self.paired()
        self.assertEqual(self.machine.state(), "in-call")
        self.assertEqual((self.caller.pairing, self.caller.seat), (room, 1))
        self.machine.partner_left()
        self.assertEqual(self.machine.state(), "waiting-for-partner")
        self.assertIsNone(self.caller.pairing)
        self.assertEqual(self.owner.calls, [])  # bookkeeping only: no request


class LeavingTests(LifecycleTestCase):
    def test_hangup_while_waiting(self) -> None:
        self.set_up()
        self.machine.hangup("hangup")
        self.assertEqual(self.machine.state(), "gone")
        self.assertEqual(self.owner.calls, [("leave", (self.caller, "hangup"))])

    def test_hangup_in_call_leaves_the_room(self) -> None:
        self.paired()
        self.machine.hangup("hangup")
        self.assertEqual(self.machine.state(), "gone")
        self.assertIsNone(self.caller.pairing)
        self.assertEqual(self.owner.names(), ["leave"])

    def test_end_also_hangs_the_channel_up_after_leaving(self) -> None:
        for prepare in (self.set_up, self.paired):
            self.setUp()
            prepare()
            self.machine.end("shutdown")
            self.assertEqual(self.machine.state(), "gone")
            self.assertEqual(self.owner.calls, [("leave", (self.caller, "shutdown")), ("hang_up", (self.caller,))])

    def test_gone_is_final_and_teardown_idempotent(self) -> None:
        self.set_up()
        self.machine.hangup("hangup")
        self.owner.calls.clear()
        for again in (
            lambda: self.machine.hangup("hangup"), lambda: self.machine.end("shutdown"), self.machine.start,
            lambda: self.machine.partner_ready(object(), 0),  # type: ignore[arg-type]
            self.machine.partner_left, self.machine.media_bound, self.machine.answered,
            self.machine.media_in_stasis,
            lambda: self.machine.bridge_created({"id": "b"}), lambda: self.machine.media_created({"id": "m"}),
        ):
            again()
            self.assertEqual(self.machine.state(), "gone")
        self.assertEqual(self.owner.calls, [])
        self.assertIsNone(self.caller.pairing)


class HangupDuringSetupTests(LifecycleTestCase):
    """
    Hung up half-way through the setup: torn down at once, and whatever the
    request in flight creates is released when it lands; no further step.
    """

    def hang_up_during(self, method: str) -> None:
        self.machine.start()
        for done in SETUP_STEPS[: SETUP_STEPS.index(method)]:
            self.step(done)
        self.owner.calls.clear()
        self.machine.hangup("hangup")
        self.assertEqual(self.machine.state(), "tearing-down")
        self.assertEqual(self.owner.calls, [("leave", (self.caller, "hangup"))])
        self.owner.calls.clear()
        self.machine.hangup("hangup")  # its ChannelDestroyed, after StasisEnd
        self.machine.end("shutdown")
        self.assertEqual(self.owner.calls, [])

    def test_during_answer_nothing_to_release(self) -> None:
        self.hang_up_during("answer")
        self.step("answer")
        self.assertEqual(self.machine.state(), "gone")
        self.assertEqual(self.owner.calls, [])

    def test_bridge_created_after_hangup_is_released(self) -> None:
        self.hang_up_during("create_bridge")
        self.step("create_bridge")
        self.assertEqual(self.machine.state(), "gone")
        self.assertEqual(self.owner.calls, [("release", (self.caller,))])
        self.assertEqual(self.caller.bridge_id, "bridge-1")  # what release finds

    def test_media_created_after_hangup_is_released(self) -> None:
        self.hang_up_during("create_media")
        self.step("create_media")
        self.assertEqual(self.machine.state(), "gone")
        self.assertEqual(self.owner.calls, [("release", (self.caller,))])
        self.assertEqual(self.caller.media_id, "media-1")

    def test_stasis_wait_and_bridge_add_after_hangup_release(self) -> None:
        for method in ("wait_media", "add_to_bridge"):
            self.setUp()
            self.hang_up_during(method)
            self.step(method)
            self.assertEqual(self.machine.state(), "gone")
            self.assertEqual(self.owner.calls, [("release", (self.caller,))])
            self.assertFalse(self.caller.ready)

    def test_end_during_setup_hangs_up_too(self) -> None:
        self.machine.start()
        self.machine.end("callee did not answer")
        self.assertEqual(self.machine.state(), "tearing-down")
        self.assertEqual(self.owner.names(), ["answer", "leave", "hang_up"])

    def test_failure_after_hangup_is_only_logged(self) -> None:
        self.hang_up_during("create_bridge")
        self.owner.fail("create_bridge", RuntimeError("404 channel gone"))
        self.assertEqual(self.machine.state(), "gone")
        self.assertEqual(self.owner.calls, [])
        self.assertEqual([e["log_format"] for e in self.logged], ["{name}: setup failed: {err}"])


class SetupFailureTests(LifecycleTestCase):
    def test_failed_request_tears_down_and_hangs_up(self) -> None:
        self.machine.start()
        self.step("answer")
        self.step("create_bridge")
        self.owner.fail("create_media", RuntimeError("500"))
        self.assertEqual(self.machine.state(), "gone")
        self.assertEqual(
            self.owner.calls[-2:], [("leave", (self.caller, "setup failed")), ("hang_up", (self.caller,))]
        )
        (event,) = [e for e in self.logged if e.get("name") == self.caller.name]
        self.assertEqual((event["log_level"].name, str(event["err"])), ("error", "500"))

    def test_failure_raised_by_the_owner_at_once(self) -> None:
        self.owner.raises["create_media"] = CannotListenError("127.0.0.1", 0, "no bindable port in --rtp-ports")
        self.machine.start()
        self.step("answer")
        self.step("create_bridge")
        self.assertEqual(self.machine.state(), "gone")
        self.assertEqual(self.owner.names()[-2:], ["leave", "hang_up"])

    def test_stasis_timeout_is_a_setup_failure(self) -> None:
        self.machine.start()
        for method in SETUP_STEPS[:3]:
            self.step(method)
        self.owner.fail("wait_media", TimeoutError("did not enter Stasis"))
        self.assertEqual(self.machine.state(), "gone")
        self.assertEqual(self.owner.names()[-2:], ["leave", "hang_up"])

    def test_failure_once_set_up_tears_down(self) -> None:
        # E.g. starting the call failed in the controller's set_up.
        self.set_up()
        self.machine.setup_failed(Failure(RuntimeError("pipeline factory broke")))
        self.assertEqual(self.machine.state(), "gone")
        self.assertEqual(self.owner.names(), ["leave", "hang_up"])

    def test_failure_in_the_last_step_output(self) -> None:
        self.machine.start()
        for method in SETUP_STEPS[:-1]:
            self.step(method)
        def broken(caller: Caller) -> None:
            raise RuntimeError("boom")

        self.owner.set_up = broken  # type: ignore[method-assign]
        self.step("add_to_bridge")
        self.assertEqual(self.machine.state(), "gone")
        self.assertEqual(self.owner.names()[-2:], ["leave", "hang_up"])


class WrongStateTests(LifecycleTestCase):
    def test_pairing_inputs_during_setup_are_ignored(self) -> None:
        self.machine.start()
        self.machine.partner_ready(object(), 0)  # type: ignore[arg-type]
        self.machine.partner_left()
        self.assertEqual(self.machine.state(), "setting-up")
        self.assertIsNone(self.caller.pairing)
        self.assertEqual(self.owner.names(), ["answer"])

    def test_setup_inputs_once_set_up_are_ignored(self) -> None:
        self.set_up()
        for late in (self.machine.start, self.machine.answered, self.machine.media_in_stasis, self.machine.media_bound):
            late()
        self.assertEqual(self.machine.state(), "waiting-for-partner")
        self.machine.partner_left()  # not in a call: nothing
        self.assertEqual(self.machine.state(), "waiting-for-partner")
        self.assertEqual(self.owner.calls, [])

    def test_second_partner_ready_in_call_is_ignored(self) -> None:
        room = self.paired()
        self.machine.partner_ready(object(), 0)  # type: ignore[arg-type]
        self.assertEqual((self.machine.state(), self.caller.pairing, self.caller.seat), ("in-call", room, 1))
        self.machine.start()
        self.assertEqual(self.owner.calls, [])
