"""
Monitor surface (``--monitor``, HTTP + WebSocket, token protected).

* ``http``: requests on every path without a token, with wrong ones (and a
  few right ones), every method, path traversal on ``/static``
  (plain, ``%2e%2e``, double-encoded, NUL, backslashes), oversized request
  lines, headers and bodies, broken framing (bad Content-Length, chunked
  garbage); keep-alive connections, so each request is one input.  What
  must never happen, and is counted in notes: a 200 from ``/api`` or
  ``/metrics`` without the right token, a traversal that serves anything
  but the three static files, a 5xx.
* ``slowloris``: 1,000 connections that each send a request line and then
  one header byte every few seconds; while they are open, how long a
  normal ``/readyz`` takes.
* ``ws``: ``/ws`` upgrades without/with wrong tokens, frames over the
  64 KiB limit, protocol violations; and ``viewers`` that connect with the
  token and never read (their receive buffers stay full).
"""

from __future__ import annotations

import random
import socket
import threading
import time
from typing import Callable, Optional

from reliability.fuzz_common import Tally
from reliability.fuzz_wsraw import OP_BINARY, OP_TEXT, frame, handshake

PATHS = ["/", "/static/app.js", "/static/style.css", "/static/index.html", "/api", "/api/", "/api/calls",
         "/api/calls/", "/api/calls/1", "/api/calls/../../etc/passwd", "/metrics", "/metrics/", "/readyz",
         "/livez", "/ws", "/favicon.ico", "/nope", "//", "/api//calls", "/METRICS", "/api/calls?x=1"]
TRAVERSALS = ["/static/../service.py", "/static/..%2fservice.py", "/static/%2e%2e/service.py",
              "/static/%2e%2e%2f%2e%2e%2fconfig.py", "/static/..%252fservice.py", "/static/....//service.py",
              "/static/..\\service.py", "/static/%00app.js", "/static/app.js%00.html", "/static//etc/passwd",
              "/static/%2fetc%2fpasswd", "/static/.%2e/.%2e/.%2e/etc/passwd", "/static/../../../../etc/passwd",
              "/static/app.js/..", "/static/.hidden.js", "/static/__init__.py", "/static/../__init__.py",
              "/static/%c0%ae%c0%ae/service.py", "/static/" + "a" * 5000 + ".js", "/../../etc/passwd",
              "/static/\u00e9.js", "/static/index.html/../../service.py", "/static/./app.js"]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "CONNECT", "G\x00T", "get", "X" * 40]


def _request(rng: random.Random, token: str) -> tuple[str, bytes, str]:
    """One request: ``(case, bytes, path)``."""
    r = rng.random()
    path = rng.choice(PATHS) if r < 0.55 else rng.choice(TRAVERSALS)
    case = "path" if r < 0.55 else "traversal"
    t = rng.random()
    headers = ["Host: 127.0.0.1"]
    if t < 0.35:
        auth = "none"
    elif t < 0.55:
        auth = "wrong_bearer"
        headers.append("Authorization: Bearer " + rng.choice(["x", token[:-1], token + "x", "", "a" * 3000]))
    elif t < 0.7:
        auth = "wrong_query"
        path += ("&" if "?" in path else "?") + "token=" + rng.choice(["", "x", token[::-1], "%00", "%ff%fe"])
    elif t < 0.8:
        auth = "wrong_scheme"
        headers.append("Authorization: " + rng.choice(["Basic eDp5", "Token " + token, "Bearer", token]))
    elif t < 0.9:
        auth = "right"
        headers.append("Authorization: Bearer " + token)
    else:
        auth = "right_query"
        path += ("&" if "?" in path else "?") + "token=" + token
    method = rng.choice(METHODS) if rng.random() < 0.3 else "GET"
    body = b""
    b = rng.random()
    if b < 0.08:
        headers.append("X-Big: " + "b" * rng.choice([8000, 17000, 70000]))
        case += "_big_header"
    elif b < 0.12:
        headers.extend(f"X-H{i}: v" for i in range(rng.choice([200, 600])))
        case += "_many_headers"
    elif b < 0.2 and method != "GET":
        body = rng.randbytes(rng.choice([10, 1000, 100000]))
        headers.append(f"Content-Length: {len(body)}")
        case += "_body"
    elif b < 0.23:
        headers.append("Content-Length: " + rng.choice(["-1", "abc", "99999999999999999999", "1, 2", " 5"]))
        case += "_bad_length"
    elif b < 0.26:
        headers.append("Transfer-Encoding: chunked")
        body = rng.choice([b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhel", b"ffffffffffff\r\n", b"0\r\n\r\n"])
        case += "_chunked"
    line = f"{method} {path} HTTP/1.1"
    if rng.random() < 0.03:
        line = rng.choice(["GET / HTTP/9.9", "GET /", "GET " + "/a" * 40000 + " HTTP/1.1", "\x16\x03\x01", "GET / FTP/1.0"])
        case = "bad_request_line"
    data = (line + "\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode("utf-8", "replace") + body
    return f"{case}:{auth}", data, path


def _read_response(s: socket.socket, method_head: bool = False) -> tuple[int, bytes]:
    """Read one response (status, body) from a keep-alive connection; status 0 if it closed."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return 0, b""
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return -1, b""
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip() or 0)
        if k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if method_head:
        return status, b""
    if chunked:
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest


STATIC_BODIES: dict[str, bytes] = {}


def http(tally: Tally, count: int, port: int, token: str, seed: int, workers: int = 4, rate: float = 800.0) -> None:
    """``count`` requests on keep-alive connections (a new one whenever the server closes)."""
    lock = threading.Lock()
    import importlib.resources as _r  # the shipped static files, to recognise them

    for name in ("app.js", "style.css", "index.html"):
        STATIC_BODIES[name] = (_r.files("xlbridge.monitor") / "static" / name).read_bytes()
    allowed = set(STATIC_BODIES.values())

    def worker(w: int) -> None:
        rng = random.Random(seed + w)
        local = Tally("tmp")
        s: Optional[socket.socket] = None
        n_mine = count // workers
        pause = workers / rate
        for _ in range(n_mine):
            case, data, path = _request(rng, token)
            try:
                if s is None:
                    s = socket.create_connection(("127.0.0.1", port), timeout=2.0)
                    local.connections += 1
                s.sendall(data)
                local.add(case.split(":")[0])
                if "_bad_length" in case or "_chunked" in case:
                    # the body may never be complete: do not wait for an answer
                    s.close()
                    s = None
                    time.sleep(pause)
                    continue
                status, body = _read_response(s, data.startswith(b"HEAD "))
            except OSError as e:
                local.error(e)
                local.add(case.split(":")[0])
                status, body = 0, b""
            local.note(f"status_{status}")
            auth = case.split(":")[1]
            if status == 500:  # 501 (unknown method) and 503 (/readyz: not ready) are answers, not failures
                local.note(f"500 {path[:80]}")
            if status == 200 and auth not in ("right", "right_query"):
                if path.startswith(("/api", "/metrics")) and not path.startswith("/metrics/"):
                    local.note(f"UNAUTHORISED_200 {path[:80]}")
            if status == 200 and "/static" in path and body and body not in allowed:
                local.note(f"TRAVERSAL_SERVED {path[:80]}")
            if status in (0, -1) or b"connection: close" in data.lower():
                if s is not None:
                    s.close()
                s = None
            elif status >= 400 and status not in (401, 403, 404, 405) and s is not None:
                s.close()  # after an error the server may not keep the framing
                s = None
            time.sleep(pause)
        if s is not None:
            s.close()
        with lock:
            tally.merge(local)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def timed_get(port: int, path: str = "/readyz", timeout: float = 10.0) -> float:
    """Seconds for one ``GET path`` (or -1 on failure)."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            s.settimeout(timeout)
            status, _ = _read_response(s)
            if status <= 0:
                return -1.0
    except OSError:
        return -1.0
    return time.monotonic() - t0


def slowloris(tally: Tally, port: int, n: int = 1000, seconds: float = 40.0, interval: float = 5.0,
              sample: Callable[[str], None] = lambda label: None) -> None:
    """
    ``n`` connections that send a request line, then one header byte every
    ``interval`` s, for ``seconds``.  Notes: how many the server closed,
    and ``/readyz`` latency while they are open.
    """
    socks: list[socket.socket] = []
    for i in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5.0)
            s.setblocking(False)
            s.send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
            tally.connections += 1
            tally.add("slowloris_open")
        except OSError as e:
            tally.error(e)
    sample("slowloris_open")
    t_end = time.monotonic() + seconds
    lat: list[float] = []
    closed = 0
    while time.monotonic() < t_end:
        alive = []
        for s in socks:
            try:
                s.send(b"X")
                tally.add("slowloris_byte")
                alive.append(s)
            except OSError:
                closed += 1
                s.close()
        socks = alive
        lat.append(timed_get(port))
        time.sleep(interval)
    sample("slowloris_peak")
    tally.notes["slowloris_closed_by_server"] = closed
    tally.notes["slowloris_still_open_at_end"] = len(socks)
    tally.notes["readyz_seconds_during_slowloris"] = [round(x, 4) for x in lat]
    for s in socks:
        s.close()


def ws(tally: Tally, count: int, port: int, token: str, seed: int) -> None:
    """``/ws`` upgrades with and without tokens, then oversized frames and violations."""
    rng = random.Random(seed)
    for i in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        except OSError as e:
            tally.error(e)
            continue
        tally.connections += 1
        try:
            kind = rng.choice(["none", "wrong", "right", "right", "right"])
            path = "/ws" + {"none": "", "wrong": "?token=nope", "right": f"?token={token}"}[kind]
            status, _ = handshake(s, "127.0.0.1", path=path, timeout=3.0)
            tally.add("ws_upgrade_" + kind)
            tally.note(f"ws_upgrade_{kind}_status_{status}")
            if status == 101 and kind != "right":
                tally.note("WS_UNAUTHORISED_101")
            if status == 101:
                r = rng.random()
                if r < 0.3:
                    n = rng.choice([65537, 70000, 200000, 1 << 20])
                    s.sendall(frame(OP_TEXT, b"{" + b" " * (n - 2) + b"}", rng=rng))
                    tally.add("ws_over_limit")
                elif r < 0.6:
                    s.sendall(frame(OP_TEXT, rng.choice([b"{\"listen\":{\"extension\":[],\"direction\":{}}}",
                                                          b"{\"listen\":\"x\"}", b"[" * 60000, b"nope",
                                                          b"{\"unlisten\":{\"extension\":\"31000\",\"direction\":\"says\"}}",
                                                          b"{\"listen\":{\"extension\":\"31000\",\"direction\":\"hears\"}}"]),
                                    rng=rng))
                    tally.add("ws_request_odd")
                elif r < 0.8:
                    s.sendall(frame(OP_BINARY, rng.randbytes(100), rsv=3, rng=rng))
                    tally.add("ws_violation")
                else:
                    s.sendall(frame(OP_TEXT, b"\xff\xfe", rng=rng))
                    tally.add("ws_invalid_utf8")
                s.settimeout(1.0)
                try:
                    s.recv(65536)
                except OSError:
                    pass
        except OSError as e:
            tally.error(e)
        finally:
            s.close()


def viewers(tally: Tally, port: int, token: str, n: int = 200, seconds: float = 30.0,
            sample: Callable[[str], None] = lambda label: None) -> None:
    """``n`` viewers with tiny receive buffers that never read, for ``seconds``."""
    socks = []
    for i in range(n):
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            status, _ = handshake(s, "127.0.0.1", path=f"/ws?token={token}", timeout=3.0)
            tally.add("viewer_never_reads")
            tally.note(f"viewer_status_{status}")
            if status == 101 and i % 4 == 0:  # ask to listen in (refused: no listen token)
                s.sendall(frame(OP_TEXT, b"{\"listen\":{\"extension\":\"31000\",\"direction\":\"says\"}}"))
            socks.append(s)
            tally.connections += 1
        except OSError as e:
            tally.error(e)
    sample("viewers_open")
    time.sleep(seconds / 2)
    sample("viewers_mid")
    time.sleep(seconds / 2)
    sample("viewers_end")
    # how many did the server give up on (closed)?
    closed = 0
    for s in socks:
        try:
            s.setblocking(False)
            while True:
                d = s.recv(1 << 20)
                if not d:
                    closed += 1
                    break
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    tally.notes["viewers_closed_by_server"] = closed
