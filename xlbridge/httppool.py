"""
An HTTP connection pool that does not log every connection it opens.

Twisted's ``HTTPConnectionPool`` makes one factory per new connection, and
a factory is "noisy" by default: ``Starting factory ...`` and ``Stopping
factory ...`` at info level for each.  Under a burst of REST calls to
Asterisk (a fuzzed ARI run logged 593 pairs in 7 minutes) or of speech
requests that is most of the log, and says nothing an operator can use:
failures are logged where the request is made.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.web.client import HTTPConnectionPool
from twisted.web.client import _HTTP11ClientFactory as _TwistedFactory

__all__ = ["quiet_pool"]


class _QuietFactory(_TwistedFactory):
    noisy = False


def quiet_pool(reactor: IReactorTime, persistent: bool = True) -> HTTPConnectionPool:
    """
    ``HTTPConnectionPool(reactor, persistent)`` whose connections start and
    stop without a log line.  (``_factory`` is the pool's documented hook
    for the factory class; the class itself is private to Twisted, hence the
    subclass here rather than a copy.)
    """
    pool = HTTPConnectionPool(reactor, persistent=persistent)
    pool._factory = _QuietFactory  # type: ignore[misc]
    return pool
