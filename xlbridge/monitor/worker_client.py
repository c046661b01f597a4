"""
Bounded HTTP fetches from the workers' own monitors, for the machine
monitor (:mod:`.machine`, :mod:`.machine_metrics`).

Kept apart from the merge of the workers' metrics because it is the part
that talks to the network, with its own rules: :class:`WorkerClient`
fetches one path of one worker's monitor over loopback HTTP with a
deadline (:data:`FETCH_TIMEOUT`, seconds, connection included) and a size
limit (:data:`MAX_BODY`, bytes), never raises (a failure is a
:class:`Fetched` with an ``error``, worded without the token), and keeps at
most one fetch in flight per worker and path: a second ``/metrics`` scrape
while one runs waits for the same answer instead of asking again.  The
shared view token goes in an ``authorization`` header, never in a URL.
"""

from __future__ import annotations

from typing import Optional

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

#: Seconds one fetch from a worker's monitor may take, connection included.
#: Workers are on the same machine: an answer slower than this is a worker
#: too busy to count on for this scrape.
FETCH_TIMEOUT = 2.0

#: Largest body read from a worker's monitor, in bytes; a larger one is a
#: failed fetch (a worker's ``/metrics`` is tens of kilobytes).
MAX_BODY = 8 * 1024 * 1024


@attrs.frozen
class Fetched:
    """
    One answer from a worker's monitor: ``code`` and ``body``, or ``error``
    (then ``code`` is 0) for no answer, a timeout or a body over the limit.
    """

    code: int = 0
    body: bytes = b""
    error: Optional[str] = None
    #: which fetch this is (per client, increasing): waiters that shared a
    #: fetch get the same serial, so its failure is counted once
    serial: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.code == 200


class BodyTooLarge(Exception):
    """
    A worker's answer was larger than the limit.
    """


class _BoundedBody(Protocol):
    """
    Collects a response body up to ``limit`` bytes into ``finished``; past
    that, or on cancellation, it stops the transfer (which closes the
    connection).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.chunks: list[bytes] = []
        self.finished: Deferred[bytes] = Deferred(lambda d: self._stop())

    def _stop(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.chunks.clear()
            self.finished.errback(BodyTooLarge(f"over {self.limit} bytes"))
            self._stop()
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)


def _describe(failure: Failure) -> str:
    # Short and free of the token: the exception's type, and its message
    # for the few that explain themselves.
    error = failure.value
    if isinstance(error, BodyTooLarge):
        return f"answer too large ({error})"
    name = type(error).__name__
    return "no answer in time" if name in ("TimeoutError", "CancelledError") else name


class WorkerClient:
    """
    Fetches paths of the workers' monitors.

    :param reactor: for the deadline (and the default agent's connections).
    :param token: the view token the workers share (sent as a bearer
        header: it must not appear in URLs, which errors may log).
    :param agent: an ``IAgent``; by default one with its own persistent
        connection pool, closed by :meth:`close`.
    :param timeout: seconds per fetch, see :data:`FETCH_TIMEOUT`.
    :param max_body: bytes per answer, see :data:`MAX_BODY`.
    """

    def __init__(
        self, reactor: IReactorTime, token: str, agent: Optional[IAgent] = None,
        timeout: float = FETCH_TIMEOUT, max_body: int = MAX_BODY,
    ) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.max_body = max_body
        self._headers = {b"authorization": [b"Bearer " + token.encode("utf-8")]}
        self._pool: Optional[HTTPConnectionPool] = None
        if agent is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = 1
            agent = Agent(reactor, pool=self._pool)
        self.agent = agent
        #: (url, path) -> waiters of the fetch in flight
        self._flying: dict[tuple[str, str], list[Deferred[Fetched]]] = {}
        self._running: dict[tuple[str, str], Deferred[Fetched]] = {}
        self._serial = 0

    def get(self, base_url: str, path: str) -> Deferred[Fetched]:
        """
        ``GET <base_url><path>``: fires with a :class:`Fetched`, never
        fails.  Joins the fetch of the same URL already in flight, if any.
        """
        key = (base_url, path)
        mine: Deferred[Fetched] = Deferred()
        waiters = self._flying.get(key)
        if waiters is not None:
            waiters.append(mine)
            return mine
        self._flying[key] = [mine]
        d = self._fetch(base_url.rstrip("/") + "/" + path.lstrip("/"))
        self._running[key] = d
        d.addCallback(self._landed, key)
        return mine

    def _landed(self, result: Fetched, key: tuple[str, str]) -> None:
        self._serial += 1
        result = attrs.evolve(result, serial=self._serial)
        self._running.pop(key, None)
        for waiter in self._flying.pop(key, []):
            if not waiter.called:
                waiter.callback(result)

    def _fetch(self, url: str) -> Deferred[Fetched]:
        def read(response: IResponse) -> Deferred[Fetched]:
            body = _BoundedBody(self.max_body)
            response.deliverBody(body)
            length = response.length
            if isinstance(length, int) and length > self.max_body:
                # Announced too large: do not read a byte of it.
                body.finished.errback(BodyTooLarge(f"over {self.max_body} bytes"))
                body._stop()
            return body.finished.addCallback(lambda data: Fetched(response.code, data))

        asked = self.agent.request(b"GET", url.encode("utf-8"), Headers(self._headers))
        d: Deferred[Fetched] = asked.addCallback(read)
        d.addTimeout(self.timeout, self.reactor)
        return d.addErrback(lambda f: Fetched(error=_describe(f)))

    def close(self) -> Deferred[None]:
        """
        Cancel the fetches in flight (their waiters get an error answer) and
        close the pooled connections.
        """
        for d in list(self._running.values()):
            d.cancel()
        if self._pool is not None:
            return self._pool.closeCachedConnections()
        return succeed(None)
