"""
ARI REST calls over treq, with HTTP Basic auth.

Only the handful of resources the controller needs (PROTOCOLS.md 5.1-5.2).
An error answer becomes :class:`ARIError` carrying the status and what
Asterisk said; 401 (user or password wrong) and 403 (a ``read_only`` user
asking for a change) become :class:`ARIAuthError`, whose message names the
user and the options to check but never the password, and which is also
handed to :attr:`ARIClient.on_refused` (the events socket then stops and
retries slowly: :mod:`xlbridge.ari.events`).  A request unanswered after
:attr:`ARIClient.timeout` seconds fails with :class:`ARITimeout`.

:func:`describe_failure` turns any of these, and the connection errors
under them (refused, DNS, timeouts), into the short reason a log line
gives.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from typing import Any, Callable, Mapping, Optional, Union
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet import error as _error
from twisted.internet.defer import Deferred, TimeoutError as _DeferredTimeout, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import RequestTransmissionFailed, ResponseFailed, ResponseNeverReceived
from twisted.web.client import Agent

from xlbridge.ari.reactor import IHTTPReactor
from xlbridge.httppool import quiet_pool

#: The bridge id :meth:`ARIClient.check_access` asks Asterisk to delete: no
#: such bridge exists, so a user allowed to make changes gets 404.
ACCESS_CHECK_BRIDGE = "xlbridge-access-check"


def http_answer(status: int, body: str = "", phrase: str = "") -> str:
    """
    What Asterisk answered, short: ``HTTP 401 Unauthorized: Authentication
    required`` (the ``message`` of its JSON error body, or the first 200
    characters of any other body).
    """
    if not phrase:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
    text = f"HTTP {status} {phrase}".rstrip()
    said = body.strip()
    try:
        decoded = json.loads(said)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("message"), str):
        said = decoded["message"]
    elif "<" in said and ">" in said:
        # An HTML error page (Asterisk's HTTP server while ARI is not
        # loaded): its first paragraph, or its text.
        para = re.search(r"<p>(.*?)</p>", said, re.IGNORECASE | re.DOTALL)
        said = re.sub(r"<[^>]*>", " ", para.group(1) if para else said)
    said = " ".join(said.split())[:200]
    return f"{text}: {said}" if said else text


def refusal_advice(status: int, user: str) -> str:
    """
    What to check when Asterisk refuses ``user`` with ``status`` (401 or 403).
    """
    if status == 403:
        return (
            f"ARI user {user!r} (--ari-user) may not make changes: set read_only = no for it "
            "in Asterisk's ari.conf"
        )
    return (
        f"Asterisk does not accept user {user!r} with the password from --ari-password-file: "
        "check --ari-user and --ari-password-file against the user and password in Asterisk's ari.conf"
    )


class ARIError(Exception):
    """
    Asterisk answered a request with an error status.

    :ivar answer: what it said, as :func:`http_answer` puts it.
    """

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.method, self.path, self.status = method, path, status
        self.answer = http_answer(status, body)
        super().__init__(f"ARI {method} {path} failed: {self.answer}")


class ARIAuthError(ARIError):
    """
    Asterisk refused the user: 401 (wrong user or password) or 403 (the
    user is ``read_only`` and the request would change something).
    """

    def __init__(self, method: str, path: str, user: str, status: int = 401, body: str = "") -> None:
        ARIError.__init__(self, method, path, status, body)
        self.user = user
        self.advice = refusal_advice(status, user)
        Exception.__init__(self, f"ARI refused {method} {path} ({self.answer}): {self.advice}")


class ARITimeout(Exception):
    """
    Asterisk did not answer a request in time.
    """

    def __init__(self, method: str, path: str, seconds: float) -> None:
        super().__init__(f"ARI {method} {path}: no answer within {seconds:g} s (timed out)")
        self.method, self.path, self.seconds = method, path, seconds


#: Failures that say the network or Asterisk is in trouble (worth another
#: try later), as opposed to a bug of ours.
RETRYABLE: tuple[type[BaseException], ...] = (
    ARIError,
    ARITimeout,
    _error.ConnectError,
    _error.DNSLookupError,
    _error.ConnectingCancelledError,
    _error.ConnectionLost,
    _error.ConnectionDone,
    ResponseNeverReceived,
    ResponseFailed,
    RequestTransmissionFailed,
)


def _sentence(text: str) -> str:
    return text.strip().rstrip(".")


def describe_failure(failure: Union[Failure, BaseException]) -> str:
    """
    Why a request or connection attempt failed, for a log line: ``connection
    refused (...)``, ``DNS lookup failed: ...``, ``timed out ...``, ``HTTP
    503 Service Unavailable: ...``, ``connection lost before Asterisk
    answered (...)``, or the exception's type and text.
    """
    e = failure.value if isinstance(failure, Failure) else failure
    if isinstance(e, ARIError):
        return e.answer
    if isinstance(e, ARITimeout):
        return f"timed out: no answer within {e.seconds:g} s"
    if isinstance(e, _error.ConnectionRefusedError):
        return f"connection refused ({_sentence(str(e))})"
    if isinstance(e, _error.DNSLookupError):
        return _sentence(str(e))
    if isinstance(e, (_error.TimeoutError, _error.TCPTimedOutError, _DeferredTimeout)):
        return f"timed out ({_sentence(str(e))})"
    if isinstance(e, (ResponseNeverReceived, ResponseFailed, RequestTransmissionFailed)):
        reasons = "; ".join(_sentence(r.getErrorMessage()) for r in getattr(e, "reasons", []) or [])
        return f"connection lost before Asterisk answered ({reasons or type(e).__name__})"
    if isinstance(e, (_error.ConnectError, _error.ConnectionLost, _error.ConnectionDone)):
        return _sentence(str(e)) or type(e).__name__
    return f"{type(e).__name__}: {e}"


class ARIClient:
    """
    REST side of ARI.

    :param url: base, e.g. ``http://127.0.0.1:8088`` (``/ari`` is appended).
    :param reactor: for the connections (:class:`~xlbridge.ari.reactor.IHTTPReactor`).
    :param http: a treq ``HTTPClient`` (default: one over our own pool).
    :param timeout: seconds a request may wait for its answer.
    :param clock: times the requests (default: ``reactor``).

    :ivar on_refused: called with each :class:`ARIAuthError` before it is
        raised (the controller hands it to the events socket).
    """

    log = Logger()

    def __init__(
        self, url: str, user: str, password: str, reactor: IHTTPReactor, http: Optional[HTTPClient] = None,
        timeout: float = 30.0, clock: Optional[IReactorTime] = None,
    ) -> None:
        self.base = url.rstrip("/") + "/ari"
        self.user = user
        self._auth = (user, password)
        # Our own pool, so stopping closes our keep-alive connections.
        self._pool = quiet_pool(reactor, persistent=True)
        self.http = http or HTTPClient(Agent(reactor, pool=self._pool))
        self.timeout = timeout
        self.clock: IReactorTime = clock or reactor
        self.on_refused: Optional[Callable[[ARIAuthError], None]] = None

    def close(self) -> "Deferred[Any]":
        """
        Close the kept-alive connections (on shutdown).
        """
        return self._pool.closeCachedConnections()

    def __repr__(self) -> str:
        return f"<ARIClient {self.base} user={self.user!r}>"

    def request(
        self, method: str, path: str, params: Optional[Mapping[str, str]] = None, body: Any = None
    ) -> "Deferred[Any]":
        """
        ``method`` ``/ari`` + ``path``; the decoded JSON answer (or ``None``).

        Fails with :class:`ARIAuthError` (401/403), :class:`ARIError`
        (another error status), :class:`ARITimeout`, or the connection's
        own error (refused, DNS...).
        """
        d = self._request(method, path, params, body)
        if self.timeout <= 0:
            return d
        timer = self.clock.callLater(self.timeout, d.cancel)

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
                return result
            # Cancelled by the timer: whatever the cancellation raised
            # (CancelledError, ResponseNeverReceived...), it timed out.
            return Failure(ARITimeout(method, path, self.timeout)) if isinstance(result, Failure) else result

        return d.addBoth(done)

    @inlineCallbacks
    def _request(
        self, method: str, path: str, params: Optional[Mapping[str, str]], body: Any
    ) -> Any:
        kwargs: dict[str, Any] = {"auth": self._auth}
        if params:
            kwargs["params"] = dict(params)
        if body is not None:
            kwargs["data"] = json.dumps(body).encode()
            kwargs["headers"] = {b"Content-Type": [b"application/json"]}
        response = yield self.http.request(method, self.base + path, **kwargs)
        text = yield response.text("utf-8")
        if response.code in (401, 403):
            refused = ARIAuthError(method, path, self.user, response.code, text)
            if self.on_refused is not None:
                try:
                    self.on_refused(refused)
                except Exception:
                    self.log.failure("ARI on_refused failed")
            raise refused
        if response.code >= 300:
            raise ARIError(method, path, response.code, text)
        return json.loads(text) if text.strip() else None

    def check_access(self) -> "Deferred[None]":
        """
        Check, changing nothing, that our user may make changes: ask to
        delete a bridge that does not exist (:data:`ACCESS_CHECK_BRIDGE`).
        Asterisk checks the user (401) and its ``read_only`` flag (403)
        before it looks for the bridge, so a user that may write gets 404,
        which is success here.  Fails like :meth:`request` otherwise.
        """
        d = self.request("DELETE", f"/bridges/{ACCESS_CHECK_BRIDGE}")

        def absent(f: Failure) -> None:
            if f.check(ARIError) and not f.check(ARIAuthError) and getattr(f.value, "status", None) == 404:
                return None
            f.raiseException()

        return d.addCallbacks(lambda _: None, absent)

    # -- resources -------------------------------------------------------

    def answer(self, channel_id: str) -> "Deferred[Any]":
        return self.request("POST", f"/channels/{quote(channel_id, safe='')}/answer")

    def hangup(self, channel_id: str) -> "Deferred[Any]":
        return self.request("DELETE", f"/channels/{quote(channel_id, safe='')}")

    def channels(self) -> "Deferred[Any]":
        return self.request("GET", "/channels")

    def bridges(self) -> "Deferred[Any]":
        return self.request("GET", "/bridges")

    def create_bridge(self, name: str) -> "Deferred[Any]":
        return self.request("POST", "/bridges", {"type": "mixing", "name": name})

    def destroy_bridge(self, bridge_id: str) -> "Deferred[Any]":
        return self.request("DELETE", f"/bridges/{quote(bridge_id, safe='')}")

    def add_channels(self, bridge_id: str, *channel_ids: str) -> "Deferred[Any]":
        return self.request(
            "POST", f"/bridges/{quote(bridge_id, safe='')}/addChannel", {"channel": ",".join(channel_ids)}
        )

    def external_media(
        self, app: str, host: str, port: int, fmt: str, audiosocket_id: Optional[str] = None
    ) -> "Deferred[Any]":
        """
        Create an ExternalMedia channel sending to ``host:port``: RTP over
        UDP, or AudioSocket over TCP when ``audiosocket_id`` (a UUID string,
        which Asterisk requires as ``data`` and sends back in the 0x01
        message) is given.
        """
        params = {"app": app, "external_host": f"{host}:{port}", "format": fmt}
        if audiosocket_id is not None:
            params.update(encapsulation="audiosocket", transport="tcp", data=audiosocket_id)
        return self.request("POST", "/channels/externalMedia", params)

    def websocket_media(self, app: str, channel_id: str, client: Optional[str] = None) -> "Deferred[Any]":
        """
        Create an ExternalMedia chan_websocket channel with id
        ``channel_id``, slin16 (PROTOCOLS.md 10.1).  Without ``client``
        Asterisk serves it (``connection_type=server``; no
        ``external_host``, which would be a 500): connect to
        ``/media/<channelvars.MEDIA_WEBSOCKET_CONNECTION_ID>``.  With
        ``client`` (a websocket_client.conf entry) Asterisk dials it.
        """
        params = {
            "app": app, "channelId": channel_id, "transport": "websocket", "encapsulation": "none",
            "format": "slin16", "connection_type": "server" if client is None else "client",
        }
        if client is not None:
            params["external_host"] = client
        return self.request("POST", "/channels/externalMedia", params)

    def originate(
        self, endpoint: str, app: str, app_args: str, timeout: Optional[int] = None
    ) -> "Deferred[Any]":
        """
        Call ``endpoint`` into Stasis ``app``; ``timeout``: seconds it may
        ring unanswered before Asterisk gives up (Asterisk's default is 30).
        """
        params = {"endpoint": endpoint, "app": app, "appArgs": app_args}
        if timeout is not None:
            params["timeout"] = str(int(timeout))
        return self.request("POST", "/channels", params)

    def applications(self) -> "Deferred[Any]":
        """
        ``GET /applications``: every registered Stasis app with the ids of
        its channels (an app whose WebSocket is gone stays while channels
        are in it).
        """
        return self.request("GET", "/applications")

    def application(self, name: str) -> "Deferred[Any]":
        """``GET /applications/{name}`` (404: no such app)."""
        return self.request("GET", f"/applications/{quote(name, safe='')}")

    def move(self, channel_id: str, app: str, app_args: str = "") -> "Deferred[Any]":
        """
        ``POST /channels/{id}/move`` (ARI since Asterisk 13.26/16.3): the
        channel leaves its Stasis app for ``app`` with ``app_args`` (split
        at commas).  Asterisk answers 204 at once and moves it
        asynchronously; if ``app`` is not active an
        ``ApplicationMoveFailed`` event goes to the channel's current app.
        """
        params = {"app": app}
        if app_args:
            params["appArgs"] = app_args
        return self.request("POST", f"/channels/{quote(channel_id, safe='')}/move", params)

    def play(self, channel_id: str, media: str, lang: Optional[str] = None) -> "Deferred[Any]":
        """
        Play ``media`` (``sound:vm-goodbye``...) to a channel; the answer is
        a Playback (``id``, ``state`` ``queued``) and ``PlaybackFinished``
        follows on the events socket.
        """
        params = {"media": media}
        if lang:
            params["lang"] = lang
        return self.request("POST", f"/channels/{quote(channel_id, safe='')}/play", params)
