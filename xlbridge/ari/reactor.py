"""
What the ARI side uses of its reactor, as zope interfaces for type hints
(the way treq's ``_types.py`` combines them): name them once here instead
of taking ``Any``.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorPluggableNameResolver, IReactorTCP, IReactorTime, IReactorUDP


class IHTTPReactor(IReactorTCP, IReactorTime, IReactorPluggableNameResolver):
    """
    The REST client and the events socket: outgoing TCP connections to a
    host name (``HostnameEndpoint``, which also needs time and a resolver),
    and the timers of the events socket's reconnection.
    """


class IARIReactor(IHTTPReactor, IReactorUDP):
    """
    The controller: everything the REST client and the events socket need,
    plus UDP ports for ExternalMedia RTP legs (and TCP for the AudioSocket
    listener, already in :class:`IHTTPReactor`).
    """
