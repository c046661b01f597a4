"""
ARI REST calls over treq, with HTTP Basic auth.

Only the handful of resources the controller needs (PROTOCOLS.md 5.1-5.2).
Errors become :class:`ARIError` carrying the status; 401 becomes
:class:`ARIAuthError` whose message names the user but never the password.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool

from xlbridge.ari.reactor import IHTTPReactor


class ARIError(Exception):
    """
    Asterisk answered a request with an error status.
    """

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"ARI {method} {path} failed: HTTP {status} {body[:200]}")
        self.status = status


class ARIAuthError(ARIError):
    """
    Asterisk rejected the credentials (401).
    """

    def __init__(self, method: str, path: str, user: str) -> None:
        Exception.__init__(
            self,
            f"ARI rejected user {user!r} (HTTP 401 on {method} {path}): check the user and "
            "password in Asterisk's ari.conf and --ari-user / --ari-password-file",
        )
        self.status = 401


class ARIClient:
    """
    REST side of ARI.

    :param url: base, e.g. ``http://127.0.0.1:8088`` (``/ari`` is appended).
    :param reactor: for the connections (:class:`~xlbridge.ari.reactor.IHTTPReactor`).
    :param http: a treq ``HTTPClient`` (default: one over our own pool).
    """

    log = Logger()

    def __init__(
        self, url: str, user: str, password: str, reactor: IHTTPReactor, http: Optional[HTTPClient] = None
    ) -> None:
        self.base = url.rstrip("/") + "/ari"
        self.user = user
        self._auth = (user, password)
        # Our own pool, so stopping closes our keep-alive connections.
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self.http = http or HTTPClient(Agent(reactor, pool=self._pool))

    def close(self) -> "Deferred[Any]":
        """
        Close the kept-alive connections (on shutdown).
        """
        return self._pool.closeCachedConnections()

    def __repr__(self) -> str:
        return f"<ARIClient {self.base} user={self.user!r}>"

    @inlineCallbacks
    def request(
        self, method: str, path: str, params: Optional[Mapping[str, str]] = None, body: Any = None
    ) -> Any:
        """
        ``method`` ``/ari`` + ``path``; the decoded JSON answer (or ``None``).
        """
        kwargs: dict[str, Any] = {"auth": self._auth}
        if params:
            kwargs["params"] = dict(params)
        if body is not None:
            kwargs["data"] = json.dumps(body).encode()
            kwargs["headers"] = {b"Content-Type": [b"application/json"]}
        response = yield self.http.request(method, self.base + path, **kwargs)
        text = yield response.text("utf-8")
        if response.code == 401:
            raise ARIAuthError(method, path, self.user)
        if response.code >= 300:
            raise ARIError(method, path, response.code, text)
        return json.loads(text) if text.strip() else None

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
