"""
What the DeepL tests on loopback share: a fake DeepL
(:mod:`tests.fakes.deepl`) on 127.0.0.1, a real pool, the real reactor,
and cleanup in the right order.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from xlbridge.engines.deepl.mt import DeepLMT
from xlbridge.engines.deepl.settings import DeepLSettings
from xlbridge.engines.threads import ThreadPoolService

from tests.fakes.deepl import start_fake_deepl

KEY = "test-key:fx"


class Loopback(TestCase):
    """
    A fake DeepL on loopback, a real pool, cleanup in the right order (the
    fake first, so threads blocked on it are released; the pool last).
    """

    def start_fake(self, auth_key: str = KEY, **options: Any) -> Any:
        fake = start_fake_deepl(reactor, auth_key=auth_key, **options)
        self.addCleanup(fake.stop)
        return fake

    def start_pool(self, max_threads: int = 2, max_queued: int = 16) -> ThreadPoolService:
        pool = ThreadPoolService(reactor, name="test-deepl", max_threads=max_threads, max_queued=max_queued)
        pool.startService()
        self.addCleanup(pool.stopService)
        return pool

    def make_mt(self, fake: Any = None, pool: Optional[ThreadPoolService] = None, **settings: Any) -> DeepLMT:
        if pool is None:
            pool = self.start_pool()
        settings.setdefault("auth_key", fake.auth_key if fake is not None else KEY)
        if fake is not None:
            settings.setdefault("server_url", fake.url)
        settings.setdefault("backoff_initial_s", 0.05)
        mt = DeepLMT(reactor, pool, DeepLSettings(**settings), random=lambda: 0.5)
        self.addCleanup(mt.close)
        return mt

    def now(self) -> float:
        return reactor.seconds()
