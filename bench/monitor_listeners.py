"""
Monitor listeners and the egress clock: does listen-in by many (and slow)
WebSocket viewers slow the media path?

Three configurations, side by side, ``--repeats`` times (order rotated):

- ``none``: no monitor client connected;
- ``listen20``: 20 WebSocket clients, client i listens to extension
  ``lo + i // 2`` in direction ``says`` (even i) or ``hears`` (odd i), i.e.
  10 legs x 2 directions, and every client reads its socket promptly;
- ``listen20-slow``: the same 20 clients and listens, but ``--slow`` of them
  misbehave: half never read their socket after the handshake (receive
  buffer shrunk to 4 KiB), half read only ``--trickle-bytes`` every 100 ms.
  To hit their outbox bound within the run the slow clients also listen to
  ``--slow-extra`` more streams each (the hub allows 4 per client).  Before
  the hub drops anything, the kernel's send buffer (tcp_wmem autotuning, about
  2-3 MB on loopback), Twisted's 64 KiB write buffer and the 1 MiB outbox
  fill: about 11 s for a stalled client with 4 listens, hence ``--prefill``.

Per point: the bridge (``twistd -n --pidfile= xlbridge --ports A-B --engines
relay --monitor tcp:PORT:interface=127.0.0.1``, token in
``XLBRIDGE_MONITOR_TOKEN``) pinned to core 1; the WebSocket clients (one
process, raw-socket RFC 6455 client below), bench/loadgen.py and tcpdump on
core 0.  Clients connect and confirm their listens before the load starts.
The load runs ``--prefill`` + 1 + ``--seconds`` s; the first ``--prefill`` +
1 s of every stream are discarded (lets slow clients fill their queues, so
the measured window contains steady-state dropping), the rest is analysed by
bench/analyse.py (kernel timestamps, |interval - 20 ms|).  Bridge CPU
(utime+stime from /proc) over the same window; ``/metrics``
(``xlbridge_monitor_messages_dropped_total``, ``xlbridge_monitor_clients``)
fetched with the Bearer token just before the window and after the load;
clients report frames received and per-stream sequence gaps themselves.

Usage: ``python bench/monitor_listeners.py [--pairs 50] [--seconds 20] [--repeats 2]``
Writes ``bench/out/monitor_listeners.json`` and (unless ``--no-publish``)
``bench/results/monitor_listeners.json``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import selectors
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import shutil
import time
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from run import fmt  # noqa: E402  (bench/run.py: the table cell format)

CONFIGS = ("none", "listen20", "listen20-slow")


# --------------------------------------------------------------------------
# minimal WebSocket client (runs in its own process: --client)


class WSClient:
    """One viewer: raw socket, RFC 6455 framing, no library."""

    def __init__(self, idx: int, mode: str, port: int, token: str, listens: list[tuple[str, str]],
                 trickle: int) -> None:
        self.idx, self.mode, self.listens, self.trickle = idx, mode, listens, trickle
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if mode == "stalled":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError(f"client {idx}: connection closed during handshake")
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"client {idx}: handshake failed: {head[:80]!r}")
        s.setblocking(False)
        self.sock = s
        self.buf = bytearray(rest)
        self.bytes = len(rest)
        self.binary = 0
        self.text: dict[str, int] = {}
        self.text_bytes: dict[str, int] = {}
        self.confirmed = 0
        self.errors: list[str] = []
        self.streams: dict[int, list[int]] = {}  # stream id -> [last seq, frames, gaps (missing frames)]
        self.closed = False
        self.reading = True
        for ext, direction in listens:
            self.send_text(json.dumps({"listen": {"extension": ext, "direction": direction}}).encode())

    def send_text(self, data: bytes) -> None:
        mask = os.urandom(4)
        n = len(data)
        hdr = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + struct.pack("!H", n)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
        self.sock.setblocking(True)
        self.sock.sendall(hdr + mask + masked)
        self.sock.setblocking(False)

    def on_readable(self) -> None:
        try:
            chunk = self.sock.recv(self.trickle if self.mode == "trickle" and self.confirmed >= len(self.listens)
                                   else 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
            return
        self.bytes += len(chunk)
        self.buf += chunk
        self.parse()

    def parse(self) -> None:
        buf = self.buf
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            ln = b1 & 0x7F
            p = pos + 2
            if ln == 126:
                if n - p < 2:
                    break
                ln = (buf[p] << 8) | buf[p + 1]
                p += 2
            elif ln == 127:
                if n - p < 8:
                    break
                ln = struct.unpack_from("!Q", buf, p)[0]
                p += 8
            if n - p < ln:
                break
            op = b0 & 0x0F
            if op == 2:
                self.binary += 1
                sid, seq = struct.unpack_from("!HH", buf, p)
                st = self.streams.get(sid)
                if st is None:
                    self.streams[sid] = [seq, 1, 0]
                else:
                    st[2] += (seq - st[0] - 1) & 0xFFFF
                    st[0] = seq
                    st[1] += 1
            elif op == 1:
                m = re.search(rb'"type":\s*"(\w+)"', bytes(buf[p:p + 64]))
                t = m.group(1).decode() if m else "?"
                self.text[t] = self.text.get(t, 0) + 1
                self.text_bytes[t] = self.text_bytes.get(t, 0) + ln
                if t == "listening":
                    self.confirmed += 1
                elif t == "error":
                    self.errors.append(bytes(buf[p:p + ln]).decode(errors="replace"))
            elif op == 8:
                self.closed = True
            pos = p + ln
        del buf[:pos]

    def report(self) -> dict[str, Any]:
        return {
            "idx": self.idx, "mode": self.mode, "listens": len(self.listens), "confirmed": self.confirmed,
            "bytes": self.bytes, "binary_frames": self.binary, "text": self.text, "text_bytes": self.text_bytes, "errors": self.errors[:3],
            "seq_gaps": sum(s[2] for s in self.streams.values()), "closed": self.closed,
        }


def client_main(ns: argparse.Namespace) -> int:
    spec = json.loads(ns.client)
    clients = [WSClient(i, c["mode"], ns.monitor_port, ns.token, [tuple(x) for x in c["listens"]],
                        ns.trickle_bytes) for i, c in enumerate(spec)]
    sel = selectors.DefaultSelector()
    for c in clients:
        sel.register(c.sock, selectors.EVENT_READ, c)
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    ready_sent = False
    t_ready = time.monotonic()
    deadline = time.monotonic() + 15
    next_trickle = 0.0
    while True:
        now = time.monotonic()
        if not ready_sent and (all(c.confirmed >= len(c.listens) for c in clients) or now > deadline):
            print("ready " + json.dumps([c.confirmed for c in clients]), flush=True)
            ready_sent = True
            t_ready = now
            for c in clients:
                if c.mode != "prompt":
                    c.reading = False
                    sel.unregister(c.sock)  # stalled: never again; trickle: polled below
        if ready_sent and now >= next_trickle:
            next_trickle = now + 0.1
            for c in clients:
                if c.mode == "trickle" and not c.closed:
                    c.on_readable()
        stop = False
        for key, _ in sel.select(0.1 if ready_sent else 0.05):
            if key.data is None:
                stop = True
            else:
                key.data.on_readable()
                if key.data.closed:
                    sel.unregister(key.fileobj)
        if stop:
            break
    elapsed = time.monotonic() - t_ready
    print(json.dumps([dict(c.report(), seconds=elapsed) for c in clients]), flush=True)
    return 0


# --------------------------------------------------------------------------
# orchestration


def free_tcp_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_tcp(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"monitor port {port} not listening")


def fetch_metrics(port: int, token: str) -> dict[str, float]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(("xlbridge_monitor_", "xlbridge_egress", "xlbridge_active_")) and " " in line:
            k, v = line.rsplit(" ", 1)
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def client_spec(config: str, lo: int, nslow: int, extra: int) -> list[dict[str, Any]]:
    if config == "none":
        return []
    spec = []
    for i in range(20):
        listens = [[str(lo + i // 2), "says" if i % 2 == 0 else "hears"]]
        mode = "prompt"
        if config == "listen20-slow" and i >= 20 - nslow:
            j = i - (20 - nslow)
            mode = "stalled" if j % 2 == 0 else "trickle"
            # extra streams on legs nobody else listens to (not extension lo..lo+9)
            for k in range(extra):
                leg = lo + 10 + (j * extra + k) // 2
                listens.append([str(leg), "says" if (j * extra + k) % 2 == 0 else "hears"])
        spec.append({"mode": mode, "listens": listens})
    return spec


def run_point(config: str, ns: argparse.Namespace, procs: Any, tmp: str, tag: str) -> dict[str, Any]:
    import analyse
    import run as runmod

    lo, hi = ns.port_lo, ns.port_hi
    runmod.wait_ports_free(lo, hi)
    port = free_tcp_port()
    token = base64.urlsafe_b64encode(os.urandom(18)).decode()
    env = dict(os.environ, XLBRIDGE_MONITOR_TOKEN=token)
    log = open(os.path.join(ns.out, f"monitor_listeners-{tag}.log"), "w")
    pcap = os.path.join(tmp, f"{tag}.pcap")
    warm = ns.prefill + 1.0
    total = warm + ns.seconds
    res: dict[str, Any] = {"config": config, "pairs": ns.pairs, "tag": tag, "monitor_port": port}
    spec = client_spec(config, lo, ns.slow, ns.slow_extra)
    res["clients"] = len(spec)
    res["client_modes"] = {m: sum(1 for c in spec if c["mode"] == m) for m in ("prompt", "stalled", "trickle")}
    try:
        argv = [runmod.twistd(), "-n", "--pidfile=", "xlbridge", "--ports", f"{lo}-{hi}", "--engines", "relay",
                "--monitor", f"tcp:{port}:interface=127.0.0.1"]
        res["bridge_argv"] = f"taskset -c {runmod.TARGET_CORE} twistd " + " ".join(argv[1:])
        tgt = procs.start(["taskset", "-c", runmod.TARGET_CORE] + argv, stdout=log, stderr=subprocess.STDOUT,
                          cwd=ROOT, env=env)
        runmod.wait_bound(tgt, lo, hi)
        wait_tcp(port)
        time.sleep(0.3)
        cl = None
        if spec:
            cl = procs.start(["taskset", "-c", runmod.GEN_CORE, sys.executable, os.path.abspath(__file__),
                              "--client", json.dumps(spec), "--monitor-port", str(port), "--token", token,
                              "--trickle-bytes", str(ns.trickle_bytes)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
            line = runmod.read_line(cl, 20.0)
            if not line.startswith("ready "):
                raise RuntimeError(f"clients: unexpected output {line!r}")
            res["confirmed"] = json.loads(line.split(" ", 1)[1])
        tcpd, tcpd_err = runmod.start_tcpdump(procs, pcap, lo, hi)
        socks_before = analyse.udp_socket_stats(lo, hi)
        lg = procs.start(["taskset", "-c", runmod.GEN_CORE, sys.executable, os.path.join(HERE, "loadgen.py"),
                          "--pairs", str(ns.pairs), "--seconds", str(total), "--base", str(lo)],
                         stdout=subprocess.PIPE, text=True, cwd=ROOT)
        first = runmod.read_line(lg, 30.0)
        if not first.startswith("started "):
            raise RuntimeError(f"loadgen: unexpected output {first!r}")
        t0 = float(first.split()[1])
        time.sleep(max(0.0, t0 + warm - 0.6 - time.monotonic()))
        res["metrics_before"] = fetch_metrics(port, token)
        time.sleep(max(0.0, t0 + warm - time.monotonic()))
        c0, w0 = runmod.proc_cpu(tgt.pid), time.monotonic()
        s0 = runmod.proc_schedstat(tgt.pid)
        time.sleep(max(0.0, t0 + total - 0.3 - time.monotonic()))
        c1, w1 = runmod.proc_cpu(tgt.pid), time.monotonic()
        s1 = runmod.proc_schedstat(tgt.pid)
        st = runmod.proc_status(tgt.pid)
        out, _ = lg.communicate(timeout=total + 30)
        res["loadgen"] = json.loads(out.strip().splitlines()[-1])
        res["metrics_after"] = fetch_metrics(port, token)
        time.sleep(0.05)
        socks_after = analyse.udp_socket_stats(lo, hi)
        if cl is not None:
            cout, _ = cl.communicate("stop\n", timeout=20)
            res["client_reports"] = json.loads(cout.strip().splitlines()[-1])
        runmod.Procs.stop(tcpd, signal.SIGINT)
        tcpd_err.join(5)
        res["tcpdump"] = runmod.tcpdump_counts(tcpd_err.lines)
        res["target_rc"] = runmod.Procs.stop(tgt, signal.SIGTERM)
    finally:
        procs.stop_all()
        log.close()
    window = w1 - w0
    res.update({
        "window_s": window,
        "cpu_s": c1 - c0,
        "cpu_core": (c1 - c0) / window,
        "run_delay_ms_per_s": (s1[1] - s0[1]) * 1000 / window,
        "rss_mb": st.get("VmRSS", 0) / 1024,
        "rx_drops": socks_after["drops"] - socks_before["drops"],
    })
    mb, ma = res["metrics_before"], res["metrics_after"]
    key = "xlbridge_monitor_messages_dropped_total"
    res["monitor_dropped_before"] = mb.get(key)
    res["monitor_dropped_after"] = ma.get(key)
    res["monitor_dropped_in_window"] = (ma.get(key, 0) - mb.get(key, 0)) if key in ma else None
    res["monitor_clients"] = mb.get("xlbridge_monitor_clients")
    res["analysis"] = analyse.analyse_file(pcap, lo, hi, warm)
    if ns.keep_pcap:
        shutil.copy(pcap, os.path.join(ns.out, os.path.basename(pcap)))
    os.unlink(pcap)
    return res


def client_summary(reports: list[dict[str, Any]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("prompt", "stalled", "trickle"):
        rs = [r for r in reports or [] if r["mode"] == mode]
        if rs:
            out[mode] = {
                "clients": len(rs),
                "frames_per_listen_min": min(r["binary_frames"] / r["listens"] for r in rs),
                "frames_per_listen_max": max(r["binary_frames"] / r["listens"] for r in rs),
                "seq_gaps_total": sum(r["seq_gaps"] for r in rs),
                "closed": sum(r["closed"] for r in rs),
                "mb_read": sum(r["bytes"] for r in rs) / 1e6,
                "kb_per_s_per_client": sum(r["bytes"] / r["seconds"] for r in rs) / len(rs) / 1e3,
            }
    return out


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for config in CONFIGS:
        rs = [r for r in runs if r["config"] == config]
        if not rs:
            continue
        a = [r["analysis"] for r in rs]
        med = lambda xs: statistics.median(xs)  # noqa: E731
        rows.append({
            "config": config,
            "repeats": len(rs),
            "p50_ms": med([x["interval_error_ms"]["p50"] for x in a]),
            "p50_ms_all": [x["interval_error_ms"]["p50"] for x in a],
            "p99_ms": med([x["interval_error_ms"]["p99"] for x in a]),
            "p99_ms_all": [x["interval_error_ms"]["p99"] for x in a],
            "p999_ms": med([x["interval_error_ms"]["p99.9"] for x in a]),
            "max_ms": med([x["interval_error_ms"]["max"] for x in a]),
            "max_ms_worst": max(x["interval_error_ms"]["max"] for x in a),
            "late_intervals": max(x["late_intervals"] for x in a),
            "seq_lost": max(x["seq_lost"] for x in a),
            "missed_intervals": max(max(x["clock_missed_intervals"], x["ts_missed_intervals"]) for x in a),
            "rx_drops": max(r["rx_drops"] for r in rs),
            "cpu_core": med([r["cpu_core"] for r in rs]),
            "cpu_core_all": [r["cpu_core"] for r in rs],
            "run_delay_ms_per_s": med([r["run_delay_ms_per_s"] for r in rs]),
            "rss_mb": med([r["rss_mb"] for r in rs]),
            "monitor_dropped_in_window": [r["monitor_dropped_in_window"] for r in rs],
            "monitor_dropped_total": [r["monitor_dropped_after"] for r in rs],
            "clients": [client_summary(r.get("client_reports")) for r in rs],
        })
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| configuration | p50 ms (runs) | p99 ms (runs) | p99.9 ms | max ms (worst) | late / lost / rx drops | "
            "bridge CPU core (runs) | monitor drops in window (total) | prompt clients: seq gaps | "
            "slow clients: frames per stream |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cs = r["clients"]
        gaps = "/".join(str(c["prompt"]["seq_gaps_total"]) for c in cs if "prompt" in c) or "-"
        slow = []
        for c in cs:
            parts = [f"{m} {c[m]['frames_per_listen_min']:.0f}-{c[m]['frames_per_listen_max']:.0f} "
                     f"(gaps {c[m]['seq_gaps_total']})" for m in ("stalled", "trickle") if m in c]
            if parts:
                slow.append(", ".join(parts))
        lines.append(
            f"| {r['config']} | {fmt(r['p50_ms'], '.3f')} ({', '.join(fmt(x, '.3f') for x in r['p50_ms_all'])}) | "
            f"{fmt(r['p99_ms'])} ({', '.join(fmt(x) for x in r['p99_ms_all'])}) | {fmt(r['p999_ms'])} | "
            f"{fmt(r['max_ms'], '.1f')} ({fmt(r['max_ms_worst'], '.1f')}) | "
            f"{r['late_intervals']} / {r['seq_lost']} / {r['rx_drops']} | "
            f"{fmt(r['cpu_core'], '.3f')} ({', '.join(fmt(x, '.3f') for x in r['cpu_core_all'])}) | "
            f"{', '.join(fmt(x, '.0f') for x in r['monitor_dropped_in_window'])} "
            f"({', '.join(fmt(x, '.0f') for x in r['monitor_dropped_total'])}) | {gaps} | "
            f"{'; '.join(slow) or '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=50, help="call pairs N (2N legs)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured window per point")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--ports", default="20000-20099", help="bridge port range (2N ports needed)")
    ap.add_argument("--prefill", type=float, default=14.0,
                    help="seconds of load before the window (discarded; slow clients fill up)")
    ap.add_argument("--slow", type=int, default=10, help="slow clients among the 20 in listen20-slow")
    ap.add_argument("--slow-extra", type=int, default=3, help="extra listens per slow client")
    ap.add_argument("--trickle-bytes", type=int, default=1024, help="bytes a trickle client reads per 100 ms")
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--no-publish", action="store_true")
    ap.add_argument("--keep-pcap", action="store_true")
    # client mode (internal)
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--monitor-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--token", help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.client:
        return client_main(ns)

    import run as runmod

    ns.port_lo, ns.port_hi = map(int, ns.ports.split("-"))
    if 2 * ns.pairs > ns.port_hi - ns.port_lo + 1:
        ap.error("--ports range too small for --pairs")
    if 2 * ns.pairs < 10 + (ns.slow * ns.slow_extra + 1) // 2:
        ap.error("too few pairs for the listen layout")
    configs = [c for c in ns.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"unknown config {c}")
    os.makedirs(ns.out, exist_ok=True)
    os.sched_setaffinity(0, {int(runmod.GEN_CORE)})

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    info = runmod.machine()
    info["command"] = " ".join(["python", "bench/monitor_listeners.py"] + (argv if argv is not None else sys.argv[1:]))
    try:
        import autobahn
        info["autobahn"] = autobahn.__version__
    except Exception:
        pass
    busy = subprocess.run(["pgrep", "-af", "bench/pipeline_latency.py|bench/local_bench.py|bench/run.py"],
                          capture_output=True, text=True).stdout.strip()
    info["other_benchmarks_running_at_start"] = busy.splitlines()
    procs = runmod.Procs()
    runs: list[dict[str, Any]] = []
    tmp = tempfile.mkdtemp(prefix="xlmon-")
    t_all = time.monotonic()
    try:
        total = ns.repeats * len(configs)
        i = 0
        for rep in range(ns.repeats):
            order = configs[rep % len(configs):] + configs[: rep % len(configs)]
            for config in order:
                i += 1
                tag = f"{config}-n{ns.pairs}-r{rep}"
                r = run_point(config, ns, procs, tmp, tag)
                r["repeat"] = rep
                runs.append(r)
                a = r["analysis"]
                cs = client_summary(r.get("client_reports"))
                print(f"[{i}/{total}] {tag}: p50 {a['interval_error_ms']['p50']:.3f} ms, "
                      f"p99 {a['interval_error_ms']['p99']:.3f} ms, max {a['interval_error_ms']['max']:.2f} ms, "
                      f"cpu {r['cpu_core']:.3f} core, lost {a['seq_lost']}, late {a['late_intervals']}, "
                      f"monitor dropped {r['monitor_dropped_in_window']} (total {r['monitor_dropped_after']}), "
                      f"clients {json.dumps(cs)}, t {time.monotonic() - t_all:.0f} s", flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = aggregate(runs)
    info["wall_s"] = time.monotonic() - t_all
    result = {"machine": info, "config": {k: v for k, v in vars(ns).items() if k not in ("client", "token")},
              "summary": rows, "runs": runs}
    path = os.path.join(ns.out, "monitor_listeners.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print()
    print(table(rows))
    print(f"wrote {path}; wall {info['wall_s']:.0f} s")
    if not ns.no_publish:
        dest = os.path.join(HERE, "results")
        os.makedirs(dest, exist_ok=True)
        shutil.copy(path, os.path.join(dest, "monitor_listeners.json"))
        print(f"published to {dest}/monitor_listeners.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
