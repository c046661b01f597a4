"""
Shared by the ARI tests: the controller against the fake ARI
(tests/fakes/ari.py) over real loopback sockets (:class:`ARIHarness`), and
a recording REST client for the controller and its callers on a memory
reactor (:class:`RecordingClient`).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Optional

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.fakes.ari import FakeARI
from xlbridge.ari.client import ARIError
from xlbridge.ari.controller import ARIController
from xlbridge.bridge import BridgeService
from xlbridge.call.service import CallService
from xlbridge.config import load_config

PASSWORD = "s3cret-pw"


def password_file(testcase: SynchronousTestCase, text: str = PASSWORD) -> str:
    fd, path = tempfile.mkstemp()
    os.write(fd, text.encode() + b"\n")
    os.close(fd)
    testcase.addCleanup(os.unlink, path)
    return path


async def wait_until(pred: Callable[[], Any], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if pred():
            return
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("condition not met in time")


class ARIHarness(TestCase):
    settings: dict[str, Any] = {}

    def setUp(self) -> Any:
        self.fake = FakeARI(reactor, user="xlbridge", password=PASSWORD)
        self.fake.listen()
        self.addCleanup(self.fake.stop)
        self.logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            self.logged.append(str(formatEvent(event)) + repr(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def start(self, password: str = PASSWORD, **kwargs: Any) -> ARIController:
        cfg = load_config({
            "ari": self.fake.url, "ari-user": "xlbridge", "ari-password-file": password_file(self, password),
            "rtp-ports": "47100-47199", "engines": "relay", "monitor": "none", **self.settings,
        })
        assert cfg.ari is not None
        self.bridge = BridgeService(cfg, reactor)
        self.ari = ARIController(self.bridge, cfg.ari, reactor, **kwargs)
        self.ari.setServiceParent(self.bridge)
        self.bridge.startService()
        self.addCleanup(self.bridge.stopService)
        return self.ari

    async def connected(self, *args: Any, **kwargs: Any) -> ARIController:
        """
        :meth:`start`, then wait for the events socket.
        """
        ari = self.start(*args, **kwargs)
        await wait_until(lambda: ari.events.connected)
        return ari

    async def pair(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """
        Start (``kwargs`` to :meth:`start`), then two callers enter room r1
        (their Stasis args in both forms) and are paired.
        """
        await self.connected(**kwargs)
        a = self.fake.new_channel("PJSIP/7777-00000001", "7777")
        b = self.fake.new_channel("PJSIP/8888-00000002", "8888")
        self.fake.enter(a, ["room=r1,lang=en"])
        self.fake.enter(b, ["room=r1", "lang=es"])
        await wait_until(lambda: a["id"] in self.calls())
        return a, b

    def calls(self) -> dict[str, CallService]:
        """
        The bridge's live calls by id (with ``--ari`` every call is one the
        controller set up).
        """
        return {call.call_id: call for call in self.bridge.active_calls()}

    def requests(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.fake.requests]

    def assert_password_never_logged(self) -> None:
        self.assertTrue(self.logged)
        for line in self.logged:
            self.assertNotIn(PASSWORD, line)


@attrs.define
class Sent:
    """
    One request the controller made, and the Deferred the test fires.
    """

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    deferred: "Deferred[Any]"


class RecordingClient:
    """
    Stands in for :class:`~xlbridge.ari.client.ARIClient`: records each
    request in :attr:`sent` and returns a Deferred the test fires (with
    :meth:`reply` or :meth:`refuse`), so every step of a setup happens when
    the test says.  (Its own methods must not share a name with a client
    request.)
    """

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.ids = 0

    def _request(self, method: str, *args: Any, **kwargs: Any) -> "Deferred[Any]":
        d: Deferred[Any] = Deferred()
        self.sent.append(Sent(method, args, kwargs, d))
        return d

    def __getattr__(self, method: str) -> Callable[..., "Deferred[Any]"]:
        # answer, hangup, create_bridge, external_media, add_channels, ...
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self._request(method, *args, **kwargs)

    def close(self) -> "Deferred[None]":
        return succeed(None)

    # -- what the test sees and does -------------------------------------

    def log(self) -> list[tuple[Any, ...]]:
        """
        Every request so far: ``(method, *args, *"key=value")``.
        """
        return [(s.method, *s.args, *(f"{k}={v}" for k, v in s.kwargs.items())) for s in self.sent]

    def pending(self, method: Optional[str] = None) -> list[Sent]:
        return [s for s in self.sent if not s.deferred.called and (method is None or s.method == method)]

    def reply(self, method: str, result: Any = None) -> Sent:
        """
        Fire the oldest unanswered ``method`` request with ``result`` (a
        fresh ARI object with an ``id`` for ``create_bridge`` and
        ``external_media`` unless given).
        """
        (sent, *_) = self.pending(method)
        if result is None and method in ("create_bridge", "external_media"):
            self.ids += 1
            result = {"id": f"{method}-{self.ids}"}
        sent.deferred.callback(result)
        return sent

    def refuse(self, method: str, status: int = 500) -> Sent:
        (sent, *_) = self.pending(method)
        sent.deferred.errback(ARIError("POST", f"/{method}", status, "test says no"))
        return sent

