"""
The monitor page and its static files: ``/`` and ``/static/<name>``.

Kept apart from the service (:mod:`.service`) because serving files is its
own small attack surface: only plain file names of known types in
:data:`STATIC_DIR` are ever opened (no ``..``, no sub-paths, no NUL), and
every answer carries the same strict headers (:func:`secure_headers`, also
used by the machine monitor's page).  The files hold no data, so they are
served without the token; the page reads the token from its own
``?token=`` and must not leak it in a ``Referer`` (hence
``referrer-policy: no-referrer``).  Bodies are the files' bytes as shipped.
"""

from __future__ import annotations

import os
from typing import Optional

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

#: The page and its assets: shipped inside the package (package-data glob
#: ``monitor/static/*``) so the wheel serves them offline, with no CDN.
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

#: Content type by file extension; files of other types are never served.
_CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
}

#: The page needs nothing but its own scripts and styles, the WebSocket and
#: ``/api``: everything else (inline script, other origins, frames, plugins,
#: forms) is refused.
CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self' ws: wss:; media-src 'self' blob:; object-src 'none'; "
    b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def secure_headers(request: IRequest, content_type: bytes) -> None:
    """
    Set ``content_type`` and the headers every monitor page answer carries:
    no referrer, :data:`CONTENT_SECURITY_POLICY`, no sniffing, no framing,
    no caching.
    """
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"cache-control", b"no-store")


def _read_static(name: str) -> Optional[bytes]:
    """
    The bytes of ``static/<name>``, or ``None`` unless ``name`` is a plain
    file name of a known type in that directory (no ``..``, no sub-paths).
    """
    # A NUL (``/static/%00app.js``) made open() raise ValueError: a 500
    # with a traceback in the log per request.
    if not name or "\x00" in name or name != os.path.basename(name) or name.startswith("."):
        return None
    if os.path.splitext(name)[1] not in _CONTENT_TYPES:
        return None
    path = os.path.join(STATIC_DIR, name)
    try:
        with open(path, "rb") as f:
            return f.read()
    except (OSError, ValueError):
        return None


class IndexResource(Resource):
    """
    ``/``: the page.  It holds no data (that comes over ``/ws`` and
    ``/api``), so it is served without a token; it reads the token from its
    own ``?token=`` and must not leak it in a ``Referer``.
    """

    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes:
        body = _read_static("index.html")
        if body is None:
            request.setResponseCode(500)
            secure_headers(request, b"text/plain; charset=utf-8")
            return b"monitor page missing from the installation\n"
        secure_headers(request, _CONTENT_TYPES[".html"])
        return body


class StaticResource(Resource):
    """
    ``/static/<name>``: the page's scripts and styles, without a token (they
    hold no data).  Only plain files of known types in :data:`STATIC_DIR`.
    """

    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes:
        parts = [p for p in request.postpath if p]
        name = parts[0].decode("utf-8", "replace") if len(parts) == 1 else ""
        body = _read_static(name)
        if body is None:
            request.setResponseCode(404)
            secure_headers(request, b"text/plain; charset=utf-8")
            return b"not found\n"
        secure_headers(request, _CONTENT_TYPES[os.path.splitext(name)[1]])
        return body
