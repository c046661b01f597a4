"""
The monitor's HTTP site: no access log, an idle timeout, a per-request
deadline, and no query string in a request's ``repr``.

Kept apart from the service (:mod:`.service`) because these are defences
against the network rather than monitor features, and the machine
monitor's site (:mod:`.machine`) uses the same ones.  Why each exists:

- no access log: the monitor token travels in query strings
  (``?token=``), and an access log would write it to disk with every
  page load;
- no query string in a request's ``repr``: Twisted logs that ``repr``
  itself (a HEAD request answered with a body), see
  :class:`_RedactedRequest`;
- a deadline per request (:data:`REQUEST_DEADLINE`, seconds) besides the
  idle timeout (:data:`IDLE_TIMEOUT`, seconds): Twisted only times out
  idle connections, not slow ones.
"""

from __future__ import annotations

import weakref
from typing import Any

from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import Request as ServerRequest
from twisted.web.server import Site

#: Seconds a monitor connection has to complete each request (head and
#: body).  Twisted only times out *idle* connections, so a client that
#: drips one header byte every few seconds ("slowloris") held its
#: connection, and a file descriptor, for as long as it liked: 1,000 of
#: them held 1,000 fds (reliability/fuzz_monitor.py).  Checked every this
#: many seconds: a connection that completed no request since the last
#: check is closed, so one is cut off after 10 to 20 s.  Upgraded
#: WebSockets (viewers) are not HTTP any more and are left alone.
REQUEST_DEADLINE = 10.0

#: Seconds an idle keep-alive connection may stay open (Twisted's default:
#: 12 hours).
IDLE_TIMEOUT = 60.0


class _RedactedRequest(ServerRequest):
    """
    A request whose ``repr`` leaves out the query string.  Twisted puts the
    repr in its own log lines (for a HEAD request: "Warning: HEAD request
    <Request ... uri=/api/calls?token=...> ... I think I'll eat it."), and
    the monitor token travels in ``?token=``: found in the fuzz run's log.
    """

    def __repr__(self) -> str:
        path = (self.uri or b"").split(b"?", 1)[0].decode("ascii", "replace")
        query = "?..." if b"?" in (self.uri or b"") else ""
        method = (self.method or b"").decode("ascii", "replace")
        proto = (self.clientproto or b"").decode("ascii", "replace")
        return f"<Request at 0x{id(self):x} method={method} uri={path}{query} clientproto={proto}>"


class QuietSite(Site):
    """
    A site with no access log (see the module docstring), an idle timeout
    of :data:`IDLE_TIMEOUT` and a per-request deadline of
    :data:`REQUEST_DEADLINE` (see there).

    :ivar cut_off: connections closed for missing the deadline.
    """

    noisy = False

    def __init__(self, resource: Resource, reactor: Any, request_deadline: float = REQUEST_DEADLINE,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        super().__init__(resource, requestFactory=_RedactedRequest, reactor=reactor, timeout=idle_timeout)
        self.request_deadline = request_deadline
        self.cut_off = 0
        #: transport -> a request was handed to a resource since the last check
        self._served: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()
        self._checks: set[Any] = set()

    def log(self, request: Request) -> None:
        pass

    def buildProtocol(self, addr: Any) -> Any:
        proto = super().buildProtocol(addr)
        if proto is not None and self.request_deadline > 0:
            self._arm(proto)
        return proto

    def getResourceFor(self, request: Any) -> Any:
        if request.transport is not None:
            self._served[request.transport] = True
        return super().getResourceFor(request)

    def _arm(self, proto: Any) -> None:
        call = self.reactor.callLater(self.request_deadline, self._check, proto)
        self._checks.add(call)

    def _check(self, proto: Any) -> None:
        self._checks = {c for c in self._checks if c.active()}
        # Twisted wraps its HTTPChannel (for HTTP/2 negotiation); the
        # channel's transport is None once a WebSocket took the connection.
        transport = getattr(proto, "transport", None) or getattr(getattr(proto, "_channel", None), "transport", None)
        if transport is None or getattr(transport, "disconnected", False) or getattr(transport, "disconnecting", False):
            return
        if getattr(transport, "protocol", proto) is not proto:
            return  # taken over by a WebSocket (a viewer): not HTTP any more
        if not self._served.pop(transport, False):
            self.cut_off += 1
            transport.abortConnection()
            return
        self._arm(proto)

    def stop_checks(self) -> None:
        """Cancel the pending deadline checks (at stop, so no timer outlives the monitor)."""
        for call in self._checks:
            if call.active():
                call.cancel()
        self._checks.clear()
