"""
The start-up requests of the ARI events socket
(:class:`~xlbridge.ari.events_startup.StartupRequests`) on their own, on a
``task.Clock``: success, failures that may heal retried on the owner's
schedule, a bug not retried, a refusal always reported, and nothing else
reported once the socket they ran for is gone; then as
:class:`~xlbridge.ari.events.ARIEvents` drives them (:mod:`tests.ari.test_events`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.test_events import EventsOnClock
from xlbridge.ari.client import ARIAuthError, ARIError
from xlbridge.ari.events_lifecycle import State
from xlbridge.ari.events_startup import StartupRequests


def http_503() -> ARIError:
    return ARIError("GET", "/ari/asterisk/info", 503, "")


class StartupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.runs: list[Deferred[Any]] = []
        self.outcomes: list[Any] = []
        self.startup = StartupRequests(
            self.request, self.clock, lambda n: 2.0 ** n, lambda ok: self.outcomes.append(("up", ok)),
            lambda why: self.outcomes.append(("retrying", why)),
            lambda f: self.outcomes.append(("refused", f.value)), Logger(),
        )
        self.cancelled = 0

    def request(self) -> "Optional[Deferred[Any]]":
        def cancel(d: Deferred[Any]) -> None:
            self.cancelled += 1

        d: Deferred[Any] = Deferred(cancel)
        self.runs.append(d)
        return d

    def test_success(self) -> None:
        self.startup.start("socket 1")
        self.assertEqual(len(self.runs), 1)
        self.runs[0].callback(None)
        self.assertEqual(self.outcomes, [("up", True)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failures_that_may_heal_are_retried_on_the_schedule(self) -> None:
        self.startup.start("socket 1")
        self.runs[0].errback(http_503())
        self.assertEqual(self.startup.failures, 1)
        self.assertEqual(self.outcomes, [("retrying", http_503().answer)])
        self.clock.advance(2.0 - 0.01)
        self.assertEqual(len(self.runs), 1)
        self.clock.advance(0.01)
        self.assertEqual(len(self.runs), 2)
        self.runs[1].errback(http_503())
        self.assertEqual(self.startup.failures, 2)
        self.clock.advance(4.0)
        self.runs[2].callback(None)
        self.assertEqual(self.outcomes[-1], ("up", True))
        self.assertEqual(len(self.outcomes), 3)
        self.assertEqual(self.startup.failures, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failures_in_a_row_count_across_sockets(self) -> None:
        """Only success resets the backoff: a socket that keeps being replaced still backs off."""
        self.startup.start("socket 1")
        self.runs[0].errback(http_503())
        self.startup.start("socket 2")  # the old socket closed, a new one opened
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.runs[1].errback(http_503())
        self.assertEqual(self.startup.failures, 2)
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), 4.0)

    def test_a_bug_is_logged_once_and_not_retried(self) -> None:
        self.startup.start("socket 1")
        self.runs[0].errback(KeyError("oops"))
        self.assertEqual(self.outcomes, [("up", False)])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.startup.failures, 0)

    def test_a_refusal_is_reported_even_after_stop(self) -> None:
        self.startup.start("socket 1")
        self.startup.stop()
        error = ARIAuthError("GET", "/ari/asterisk/info", "xlbridge", 401)
        self.runs[0].errback(error)
        self.assertEqual(self.outcomes, [("refused", error)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nothing_else_after_stop(self) -> None:
        self.startup.start("socket 1")
        self.startup.stop()
        self.runs[0].callback(None)
        self.startup.start("socket 2")
        self.startup.stop()
        self.runs[1].errback(http_503())
        self.assertEqual(self.outcomes, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_cancels_a_scheduled_run(self) -> None:
        self.startup.start("socket 1")
        self.runs[0].errback(http_503())
        self.startup.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertEqual(len(self.runs), 1)

    def test_an_older_socket_s_run_changes_nothing(self) -> None:
        self.startup.start("socket 1")
        self.startup.start("socket 2")
        self.runs[0].callback(None)
        self.assertEqual(self.outcomes, [])
        self.runs[1].callback(None)
        self.assertEqual(self.outcomes, [("up", True)])

    def test_cancel_cancels_the_run_under_way(self) -> None:
        self.startup.start("socket 1")
        self.startup.stop()
        self.assertEqual(self.cancelled, 0)  # stop lets it finish (a refusal still counts)
        self.startup.cancel()
        self.assertEqual(self.cancelled, 1)
        self.assertEqual(self.outcomes, [])  # its CancelledError is no failure to report
        self.startup.cancel()  # nothing under way: nothing to cancel
        self.assertEqual(self.cancelled, 1)

    def test_a_plain_return_is_success(self) -> None:
        """``run`` need not return a Deferred."""
        ups: list[bool] = []
        startup = StartupRequests(
            lambda: None, self.clock, lambda n: 1.0, ups.append, lambda why: None, lambda f: None, Logger(),
        )
        startup.start("socket")
        self.assertEqual(ups, [True])


class EventsStartupTests(EventsOnClock):
    """
    How :class:`~xlbridge.ari.events.ARIEvents` drives them: stopped with
    the socket, by a refusal and by ``stopService``; its ``last_error`` and
    refusal log follow their outcome.
    """

    def test_retry_dropped_with_the_socket(self) -> None:
        self.on_connect = lambda: fail(http_503())
        ari = self.make()
        proto, transport = self.up()
        proto.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(ari.state, State.BACKOFF)
        self.clock.advance(1.5)  # past both the requests' retry and the reconnect
        self.assertEqual(self.connects, 1)
        self.assertEqual(ari.state, State.CONNECTING)

    def test_a_late_answer_for_a_closed_socket_changes_nothing(self) -> None:
        pending: Deferred[Any] = Deferred()
        self.on_connect = lambda: pending
        ari = self.make()
        proto, transport = self.up()
        self.assertEqual(ari.state, State.PREPARING)
        proto.connectionLost(Failure(ConnectionLost()))
        pending.callback(None)
        self.assertEqual(ari.state, State.BACKOFF)
        self.assertIsNotNone(ari.last_error)

    def test_a_late_answer_after_a_refusal_changes_nothing(self) -> None:
        pending: Deferred[Any] = Deferred()
        self.on_connect = lambda: pending
        ari = self.make()
        self.up()
        ari.refused(ARIAuthError("POST", "/channels/1/answer", "xlbridge", 401))
        pending.callback(None)  # before the socket has finished closing
        self.clock.advance(0)
        self.assertEqual(ari.state, State.REFUSED)
        self.assertNotIn("ARI accepts user 'xlbridge' again", self.logged.lines(LogLevel.info))

    def test_stop_cancels_the_requests_under_way(self) -> None:
        cancelled: list[Deferred[Any]] = []
        self.on_connect = lambda: Deferred(cancelled.append)
        ari = self.make()
        self.up()
        d = ari.stopService()
        self.assertEqual(len(cancelled), 1)
        self.clock.advance(0)
        self.successResultOf(d)

    def test_last_error_follows_the_requests(self) -> None:
        answers = [fail(http_503()), succeed(None)]
        self.on_connect = lambda: answers.pop(0)
        ari = self.make()
        self.up()
        self.assertEqual(ari.status()["last_error"], http_503().answer)
        self.clock.advance(1)
        self.assertEqual(ari.state, State.UP)
        self.assertIsNone(ari.status()["last_error"])

    def test_accepted_again_then_refused_again_is_an_error_again(self) -> None:
        """Once the user is accepted again, the same refusal later is news: logged in full."""
        refusal = ARIAuthError("DELETE", "/bridges/x", "xlbridge", 403, '{"message": "Write access denied"}')
        answers = [fail(refusal), succeed(None)]
        self.on_connect = lambda: answers.pop(0)
        ari = self.make()
        self.up()
        self.clock.advance(0)
        self.assertEqual(ari.state, State.REFUSED)
        self.clock.advance(60)
        self.up()
        self.assertEqual(ari.state, State.UP)
        self.assertIn("ARI accepts user 'xlbridge' again", self.logged.lines(LogLevel.info))
        ari.refused(refusal)
        self.clock.advance(0)
        self.assertEqual(len(self.logged.lines(LogLevel.error)), 2)
        self.assertEqual(self.logged.lines(LogLevel.warn), [])

    def test_a_bug_after_a_refusal_does_not_claim_the_user_accepted(self) -> None:
        def broken() -> Deferred[Any]:
            raise KeyError("id")

        answers: list[Callable[[], Deferred[Any]]] = [
            lambda: fail(ARIAuthError("GET", "/bridges", "xlbridge", 401)), broken,
        ]
        self.on_connect = lambda: answers.pop(0)()
        ari = self.make()
        self.up()
        self.clock.advance(0)
        self.assertEqual(ari.state, State.REFUSED)
        self.clock.advance(60)
        self.up()
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(ari.state, State.UP)  # events are handled
        self.assertNotIn("ARI accepts user 'xlbridge' again", self.logged.lines(LogLevel.info))
