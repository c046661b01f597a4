"""
Who may watch: one shared secret token for the monitor.

The monitor shows what callers say and can play their voices, so the
WebSocket and ``/api/*`` need a token; ``/metrics`` too unless configured
open (scrapers often cannot send one, and metrics carry no speech).

- The token comes from configuration (``[monitor] token``), else from
  ``XLBRIDGE_MONITOR_TOKEN``, else it is generated at start-up with
  :func:`secrets.token_urlsafe` and the page URL holding it is logged once:
  there is then no other way to learn it.
- Browsers cannot set headers on a WebSocket, so the token is accepted as
  ``?token=`` as well as ``Authorization: Bearer <token>``.
- Comparison is constant-time (:func:`hmac.compare_digest`): a byte-by-byte
  ``==`` would let a remote client find the token one character at a time
  by timing refusals.
- A request without a token gets 401 (with ``WWW-Authenticate``), a wrong
  one 403; both are counted by reason for ``/metrics``.  Refusals are not
  logged one by one: a scanner would flood the log.
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
    Checks credentials against the token and counts refusals.

    :ivar refused: refusals by :class:`Verdict` (``MISSING``, ``WRONG``).
    """

    def __init__(self, token: str, source: TokenSource = TokenSource.CONFIG) -> None:
        if not token:
            raise ValueError("the monitor token must not be empty")
        self._token = token.encode("utf-8")
        self.source = source
        self.refused: Counter[Verdict] = Counter()

    @property
    def token(self) -> str:
        """
        The token itself (for the start-up URL; never put it in a repr).
        """
        return self._token.decode("utf-8")

    def __repr__(self) -> str:
        return f"<TokenGuard source={self.source.value} token=<redacted>>"

    def _matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode("utf-8"), self._token)

    def check(self, authorization: Optional[str], query_token: Optional[str]) -> Verdict:
        """
        Check a bearer header value and/or a query token; either may carry
        the token.  Refusals are counted.
        """
        candidates = [c for c in (bearer_token(authorization), query_token) if c]
        if not candidates:
            verdict = Verdict.MISSING
        else:
            # Check every candidate (no short-circuit on the first), so the
            # time taken does not depend on which one matched.
            matches = [self._matches(c) for c in candidates]
            verdict = Verdict.OK if any(matches) else Verdict.WRONG
        if verdict is not Verdict.OK:
            self.refused[verdict] += 1
        return verdict

    def check_request(self, request: IRequest) -> Verdict:
        """
        Check a ``twisted.web`` request (header, then ``?token=``).
        """
        header = request.getHeader(b"authorization")
        values = request.args.get(b"token") if request.args else None
        query = values[0].decode("utf-8", "replace") if values else None
        auth = header.decode("latin-1") if isinstance(header, bytes) else header
        return self.check(auth, query)

    def check_handshake(self, headers: Mapping[str, Any], params: Mapping[str, Any]) -> Verdict:
        """
        Check an Autobahn ``ConnectionRequest``'s headers (lower-case keys)
        and query parameters (lists of values).
        """
        auth = headers.get("authorization")
        values = params.get("token")
        query = values[0] if values else None
        return self.check(auth if isinstance(auth, str) else None, query)

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
