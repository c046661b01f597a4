"""
Who may watch, and who may listen: the monitor's two tokens.

The monitor shows what callers say and can play their voices, so the
WebSocket and ``/api/*`` need a token; ``/metrics`` too unless configured
open (scrapers often cannot send one, and metrics carry no speech).  The
health checks (``/readyz``, ``/livez``) need none: they carry no call data.

- The **view token** shows captions, transcripts, status, level meters and
  metrics.  It comes from configuration (``[monitor] token``), else from
  ``XLBRIDGE_MONITOR_TOKEN``, else it is generated at start-up with
  :func:`secrets.token_urlsafe` and the page URL holding it is logged once:
  there is then no other way to learn it.
- The **listen token** also opens live audio (listen-in), and everything the
  view token shows.  It comes from ``[monitor] listen_token`` or
  ``XLBRIDGE_MONITOR_LISTEN_TOKEN`` only, never from a command-line flag
  (``ps`` shows those to every local user), and it is never generated nor
  logged: without one, nobody can listen in.  Hearing a caller's voice is
  the most private thing the monitor offers, and a URL that was logged (and
  so shipped to wherever the logs go) must not be enough for it.
- Both are read once, at start-up: rotating a token means restarting.
- Browsers cannot set headers on a WebSocket, so a token is accepted as
  ``?token=`` as well as ``Authorization: Bearer <token>``.
- Comparison is constant-time (:func:`hmac.compare_digest`), and every
  candidate is compared with both tokens: a byte-by-byte ``==`` or an early
  exit would let a remote client find a token one character at a time by
  timing refusals.
- A request without a token gets 401 (with ``WWW-Authenticate``), a wrong
  one 403; a listen-in request without the listen token gets an error
  message on the WebSocket.  All are counted by reason for ``/metrics``.
  Refusals are not logged one by one: a scanner would flood the log.
"""

from __future__ import annotations

import enum
import hmac
import json
import secrets
from collections import Counter
from typing import Any, Mapping, Optional

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

#: Environment variable holding the token when the configuration has none.
ENV_VAR = "XLBRIDGE_MONITOR_TOKEN"

#: Environment variable holding the listen token when the configuration has
#: none.
LISTEN_ENV_VAR = "XLBRIDGE_MONITOR_LISTEN_TOKEN"


class TokenSource(enum.Enum):
    """
    Where the token came from (decides whether its URL may be logged).
    """

    CONFIG = "config"
    ENV = "env"
    GENERATED = "generated"


class Verdict(enum.Enum):
    """
    The outcome of checking a request's credentials.
    """

    OK = "ok"
    #: No token was sent (401).
    MISSING = "missing"
    #: A token was sent and it is not ours (403).
    WRONG = "wrong"
    #: A viewer without the listen token asked to listen in (refused on the
    #: WebSocket; the viewer stays connected).
    LISTEN = "listen"


class Role(enum.Enum):
    """
    What a valid token lets its holder do.
    """

    #: Captions, transcripts, status, level meters, metrics.
    VIEW = "view"
    #: All of that, and live audio.
    LISTEN = "listen"


def resolve_token(
    explicit: Optional[str], environ: Mapping[str, str]
) -> tuple[str, TokenSource]:
    """
    Pick the token: configuration, then environment, then a fresh random one
    (24 bytes, URL-safe base64).  Blank values count as unset: an empty
    token would let anyone in.
    """
    if explicit and explicit.strip():
        return explicit.strip(), TokenSource.CONFIG
    env = environ.get(ENV_VAR, "").strip()
    if env:
        return env, TokenSource.ENV
    return secrets.token_urlsafe(24), TokenSource.GENERATED


def resolve_listen_token(
    explicit: Optional[str], environ: Mapping[str, str]
) -> tuple[Optional[str], Optional[TokenSource]]:
    """
    Pick the listen token: configuration, then environment, else none
    (listen-in off).  Never generated: see the module docstring.
    """
    if explicit and explicit.strip():
        return explicit.strip(), TokenSource.CONFIG
    env = environ.get(LISTEN_ENV_VAR, "").strip()
    if env:
        return env, TokenSource.ENV
    return None, None


def bearer_token(authorization: Optional[str]) -> Optional[str]:
    """
    The credentials of an ``Authorization: Bearer <token>`` header value, or
    ``None`` for any other scheme or no header.
    """
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class TokenGuard:
    """
    Checks credentials against the view and listen tokens and counts
    refusals.

    :param listen_token: opens listen-in; ``None``: nobody may listen in.
        The same value as ``token`` gives every viewer listen-in.
    :ivar refused: refusals by :class:`Verdict` (``MISSING``, ``WRONG``,
        ``LISTEN``).
    """

    def __init__(
        self, token: str, source: TokenSource = TokenSource.CONFIG,
        listen_token: Optional[str] = None, listen_source: Optional[TokenSource] = None,
    ) -> None:
        if not token:
            raise ValueError("the monitor token must not be empty")
        self._token = token.encode("utf-8")
        self._listen = listen_token.encode("utf-8") if listen_token else None
        self.source = source
        self.listen_source = (listen_source or TokenSource.CONFIG) if listen_token else None
        self.refused: Counter[Verdict] = Counter()

    @property
    def listen_enabled(self) -> bool:
        """
        Whether a listen token is configured (else listen-in is off).
        """
        return self._listen is not None

    @property
    def listen_is_view(self) -> bool:
        """
        The listen token is the view token: every viewer may listen in.
        """
        return self._listen is not None and hmac.compare_digest(self._listen, self._token)

    @property
    def token(self) -> str:
        """
        The token itself (for the start-up URL; never put it in a repr).
        """
        return self._token.decode("utf-8")

    def __repr__(self) -> str:
        listen = "off" if self.listen_source is None else self.listen_source.value
        return f"<TokenGuard source={self.source.value} token=<redacted> listen={listen}>"

    def authorize(self, authorization: Optional[str], query_token: Optional[str]) -> tuple[Verdict, Optional[Role]]:
        """
        Check a bearer header value and/or a query token; either may carry
        a token.  Refusals are counted.

        :return: the verdict, and for :attr:`Verdict.OK` the role granted
            (the listen token's if any candidate is it), else ``None``.
        """
        candidates = [c.encode("utf-8") for c in (bearer_token(authorization), query_token) if c]
        if not candidates:
            self.refused[Verdict.MISSING] += 1
            return Verdict.MISSING, None
        # Compare every candidate with both tokens (no short-circuit), so the
        # time taken does not depend on which one matched, or whether.
        listen = self._listen if self._listen is not None else b"\0" * len(self._token)
        views = [hmac.compare_digest(c, self._token) for c in candidates]
        listens = [hmac.compare_digest(c, listen) for c in candidates]
        if self._listen is not None and any(listens):
            return Verdict.OK, Role.LISTEN
        if any(views):
            return Verdict.OK, Role.VIEW
        self.refused[Verdict.WRONG] += 1
        return Verdict.WRONG, None

    def check(self, authorization: Optional[str], query_token: Optional[str]) -> Verdict:
        """
        :meth:`authorize` without the role: either token lets its holder
        view.
        """
        return self.authorize(authorization, query_token)[0]

    def check_request(self, request: IRequest) -> Verdict:
        """
        Check a ``twisted.web`` request (header, then ``?token=``).
        """
        header = request.getHeader(b"authorization")
        values = request.args.get(b"token") if request.args else None
        query = values[0].decode("utf-8", "replace") if values else None
        auth = header.decode("latin-1") if isinstance(header, bytes) else header
        return self.check(auth, query)

    def authorize_handshake(
        self, headers: Mapping[str, Any], params: Mapping[str, Any]
    ) -> tuple[Verdict, Optional[Role]]:
        """
        :meth:`authorize` an Autobahn ``ConnectionRequest``'s headers
        (lower-case keys) and query parameters (lists of values).
        """
        auth = headers.get("authorization")
        values = params.get("token")
        query = values[0] if values else None
        return self.authorize(auth if isinstance(auth, str) else None, query)

    def check_handshake(self, headers: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
        """
        :meth:`authorize_handshake` without the role.
        """
        return self.authorize_handshake(headers, params)[0]

    def refuse_listen(self) -> None:
        """
        Count a listen-in request refused for want of the listen token.
        """
        self.refused[Verdict.LISTEN] += 1

    def refuse(self, request: IRequest, verdict: Verdict) -> bytes:
        """
        Turn ``request`` into a refusal (401 or 403, JSON body) and return
        the body to render.
        """
        if verdict is Verdict.MISSING:
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", b'Bearer realm="xlbridge monitor"')
            body = {"error": "token required"}
        else:
            request.setResponseCode(403)
            body = {"error": "invalid token"}
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(body).encode("utf-8")


class _Refusal(Resource):
    isLeaf = True

    def __init__(self, guard: TokenGuard, verdict: Verdict) -> None:
        super().__init__()
        self.guard = guard
        self.verdict = verdict

    def render(self, request: IRequest) -> bytes:
        return self.guard.refuse(request, self.verdict)


class GuardedResource(Resource):
    """
    Put ``inner`` (and everything under it) behind the token: traversal
    checks credentials once, at this node.
    """

    def __init__(self, inner: IResource, guard: TokenGuard) -> None:
        super().__init__()
        self.inner = inner
        self.guard = guard

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        verdict = self.guard.check_request(request)
        if verdict is not Verdict.OK:
            return _Refusal(self.guard, verdict)
        if getattr(self.inner, "isLeaf", False):
            return self.inner
        return self.inner.getChildWithDefault(path, request)

    def render(self, request: IRequest) -> bytes:
        verdict = self.guard.check_request(request)
        if verdict is not Verdict.OK:
            return self.guard.refuse(request, verdict)
        result: bytes = self.inner.render(request)
        return result
