"""
Tests for :mod:`xlbridge.engines.threads`: the bounded thread pool as a
service.  Work runs on real pool threads; results come back through a
reactor played by the test (its ``callFromThread`` queues them until the
test delivers them), so no global reactor is involved.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.threads import PoolFull, ThreadPoolService


class ThreadResults:
    """The reactor side of ``deferToThreadPool``: results wait here for :meth:`deliver`."""

    def __init__(self) -> None:
        self.waiting: "queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]" = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.waiting.put((f, args, kwargs))

    def deliver(self, n: int = 1) -> None:
        """Run the next ``n`` results on this (the "reactor") thread, waiting for each."""
        for _ in range(n):
            f, args, kwargs = self.waiting.get(timeout=10)
            f(*args, **kwargs)


class ThreadPoolServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.results = ThreadResults()
        self.service = ThreadPoolService(self.results, name="test-threads", max_threads=2, max_queued=2)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def test_result_on_the_reactor_thread(self) -> None:
        here = threading.get_ident()
        d = self.service.run(lambda a, b=0: (threading.get_ident(), a + b), 1, b=2)
        self.results.deliver()
        worker, total = self.successResultOf(d)
        self.assertNotEqual(worker, here)
        self.assertEqual((total, self.service.pending), (3, 0))

    def test_failure(self) -> None:
        d = self.service.run(lambda: 1 / 0)
        self.results.deliver()
        self.failureResultOf(d, ZeroDivisionError)
        self.assertEqual(self.service.pending, 0)

    def test_queue_bound(self) -> None:
        """Past ``max_queued`` calls waiting or running, work is refused at once and counted."""
        gate = threading.Event()
        first, second = self.service.run(gate.wait, 10), self.service.run(gate.wait, 10)
        refused = self.service.run(lambda: None)
        self.assertIsInstance(self.failureResultOf(refused, PoolFull).value, PoolFull)
        self.assertEqual((self.service.pending, self.service.refused), (2, 1))
        gate.set()
        self.results.deliver(2)
        self.assertEqual([self.successResultOf(first), self.successResultOf(second)], [True, True])
        self.assertEqual(self.service.pending, 0)
        ok = self.service.run(lambda: "again")
        self.results.deliver()
        self.assertEqual(self.successResultOf(ok), "again")

    def test_lifetime(self) -> None:
        """The pool starts with the service and is joined when it stops; work before starting starts it."""
        self.assertTrue(self.service.pool.started)
        self.service.stopService()
        self.assertFalse(self.service.pool.started)
        self.service.stopService()  # again: nothing to join
        lazy = ThreadPoolService(self.results, name="test-lazy", max_threads=1)
        self.addCleanup(lazy.stopService)
        d = lazy.run(lambda: 5)
        self.assertTrue(lazy.pool.started)
        self.results.deliver()
        self.assertEqual(self.successResultOf(d), 5)
