"""
A bounded thread pool as a Service, for blocking engine work.

Blocking SDK calls (the ``deepl`` client is synchronous), offline inference
and file I/O must never run on the reactor thread: one slow call would delay
every leg's next 20 ms packet.  They go through :meth:`ThreadPoolService.run`,
which returns a Deferred.  The pool is bounded (``max_threads``) and so is
its queue (``max_queued``): past that, work is refused at once with
:class:`PoolFull` and counted, rather than piling up behind a dead engine.
"""

from __future__ import annotations

from typing import Callable, ParamSpec, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from xlbridge.errors import XLBridgeError

T = TypeVar("T")
P = ParamSpec("P")


class PoolFull(XLBridgeError):
    """
    The pool's queue is at its bound; the work was not started.
    """


class ThreadPoolService(Service):
    """
    Owns a ``ThreadPool``: started with the service, joined when it stops.

    :param reactor: the reactor results are delivered on (its
        ``callFromThread``).
    :param max_threads: worker threads.
    :param max_queued: calls waiting or running at most; more are refused.

    :ivar refused: calls refused because the queue was full.
    """

    def __init__(self, reactor: IReactorFromThreads, name: str = "xlbridge-engines", max_threads: int = 4,
                 max_queued: int = 64) -> None:
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=0, maxthreads=max_threads, name=name)
        self.max_queued = max_queued
        self.pending = 0
        self.refused = 0

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        if self.pool.started:
            self.pool.stop()

    def run(self, f: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> "Deferred[T]":
        """
        Run ``f(*args, **kwargs)`` in the pool; the Deferred fires on the
        reactor thread with its result or failure.
        """
        if self.pending >= self.max_queued:
            self.refused += 1
            return fail(PoolFull(f"{self.pending} calls already queued"))
        if not self.pool.started:
            self.pool.start()
        self.pending += 1
        d: Deferred[T] = deferToThreadPool(self.reactor, self.pool, f, *args, **kwargs)

        def done(result: object) -> object:  # the result or a Failure, passed on
            self.pending -= 1
            return result

        d.addBoth(done)
        return d
