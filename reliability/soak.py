"""
Soak test of xlbridge (issue 15): one long run of churning calls against one
xlbridge process, with its memory, file descriptors, egress clock, latency
and call accounting sampled over time.

Why: benchmarks run for seconds; leaks (RSS, fds), a drifting egress clock,
latency creeping up, or calls that start without ending only show over an
hour of callers coming and going.

What runs (all on 127.0.0.1):

- ``twistd -n xlbridge --ports LO-HI`` (``--engines relay`` or ``cloud``),
  pinned with ``taskset`` to ``--bridge-cpu``, its monitor on
  ``--monitor-port``, events to ``OUT/events.jsonl``, log to
  ``OUT/xlbridge.log``, ``--call-timeout`` 5 s and ``--latch-timeout`` 2 s so
  a pair frees up quickly after its caller stops sending.
- ``--mode translated``: the three cloud fakes (``python -m tests.fakes NAME
  --port 0``, pinned to ``--gen-cpu``) with the delays of
  bench/pipeline_latency.py (DeepL 150 ms, ElevenLabs first byte 100 ms).
- the caller generator (this file with ``--gen``, pinned to ``--gen-cpu``):
  one process, one epoll loop, absolute 20 ms deadlines (legs spread over 10
  slots of 2 ms, like bench/loadgen.py).  ``--calls`` calls are kept up at once on
  ``--pairs`` port pairs (default calls * 1.2 + 2): a call uses a free pair
  (two fresh UDP sockets, so two new sources), lasts a uniform random
  ``--min-call``..``--max-call`` seconds (default 60..300), then stops
  sending; its pair rests ``--cooldown`` seconds (call timeout + latch
  timeout + margin) before reuse.  A new call starts at most every
  ``--spawn-gap`` seconds whenever fewer than ``--calls`` are up.  Pair 0 is
  the *probe* call: it lasts the whole run, so the egress packet clock can be
  compared with the wall clock over the hour.
- each caller talks about half the time: the two callers take turns of 3-8 s,
  each turn phrases of tone-words (tests/fakes/tonewords.py, the phrases of
  bench/pipeline_latency.py; the Spanish caller says their translation) with
  0.8-1.5 s pauses; RTP flows continuously (near-silence between phrases),
  like Asterisk.
- relay mode: replies are slin16 (``--reply-codec slin16``), so the payload
  comes back byte for byte; the first 6 bytes of every sent payload carry a
  marker (magic + send tick), and the generator measures the one-way latency
  (its own send time to its own receive time, same monotonic clock, after
  epoll: includes the generator's loop delays) of every packet.
  translated mode: the end of speech -> first translated packet latency is
  ``total_ms`` of the bridge's ``PlaybackStarted`` events.

Samples (every ``--sample-s`` seconds, by the parent, which mostly sleeps):
RSS (kB) and open fds of the xlbridge process from /proc, its CPU seconds,
and the parsed ``/metrics``.  The generator writes one line a minute: calls
up / started / stopped, packets, a latency histogram (0.1 ms bins) and the
probe's clock residual (receive time minus RTP timestamp / its clock rate, minimum
over the minute, ms: its change over the run is the egress clock's drift
against CLOCK_MONOTONIC).

Outputs in ``--out``: ``run.json`` (command lines, machine, start/end),
``samples.jsonl``, ``gen.jsonl``, ``calls.jsonl`` (every generated call),
``events.jsonl``, ``xlbridge.log``, fake logs, and, at the end,
``summary.json`` + ``soak.png`` from reliability/soak_plot.py.

Usage::

    python reliability/soak.py --mode relay --calls 150 --minutes 60 \\
        --base 21000 --monitor-port 3101 --bridge-cpu 1 --gen-cpu 0 \\
        --out reliability/results/soak/relay
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import loadgen  # noqa: E402  (bench/loadgen.py: RTP constants and tone)

PERIOD = loadgen.PERIOD  # 20 ms
PT = loadgen.PT  # 118, slin16
TS_STEP = loadgen.TS_STEP  # 320 samples
PAYLOAD_BYTES = loadgen.PAYLOAD_BYTES  # 640
MAGIC = 0x5A17
MARK = struct.Struct("!HI")  # magic, sender tick (first 6 payload bytes)
HIST_BIN_MS = 0.1
CATCH_UP_MS = 100.0  # the generator skips overdue ticks when this late
HIST_BINS = 20000  # 0..2000 ms; larger values go in the last bin
TOKEN = "soak-token"


# -- speech ------------------------------------------------------------------------


def phrase_frames() -> tuple[list[list[bytes]], list[list[bytes]]]:
    """English phrases and their Spanish translations as 640-byte big-endian frames."""
    import numpy as np

    from pipeline_latency import PHRASES
    from tests.fakes.deepl import translate_words
    from tests.fakes.tonewords import encode_words

    def frames(text: str) -> list[bytes]:
        a = encode_words(text)
        n = -(-len(a) // 320) * 320
        a = np.concatenate([a, np.zeros(n - len(a), dtype=np.int16)]).astype(">i2").tobytes()
        return [a[i : i + PAYLOAD_BYTES] for i in range(0, len(a), PAYLOAD_BYTES)]

    en = [frames(p) for p in PHRASES]
    es = [frames(translate_words(p, "EN", "ES")) for p in PHRASES]
    return en, es


def silence_frame() -> bytes:
    """Near-silence (+-1), never all-zero."""
    return struct.pack(f">{PAYLOAD_BYTES // 2}h", *((1, -1) * (PAYLOAD_BYTES // 4)))


def talk_schedule(rng: random.Random, frames_total: int, lens: tuple[list[int], list[int]], first: int) -> tuple[list, list]:
    """
    Two callers taking turns (3-8 s each, ``first`` starts), each turn
    phrases separated by 0.8-1.5 s.  Returns, per caller, a sorted list of
    (start frame, phrase index).
    """
    out: tuple[list, list] = ([], [])
    nphrases = lens[0]
    f = rng.randint(10, 50)
    who = first
    while f < frames_total:
        turn_end = f + rng.randint(150, 400)
        while f < turn_end and f < frames_total:
            # each caller says every other phrase (disjoint sets), so a caller
            # never repeats what they just heard translated (the echo guard
            # would rightly drop it)
            p = 2 * rng.randrange(len(nphrases) // 2) + who
            out[who].append((f, p))
            f += lens[who][p] + rng.randint(40, 75)
        who ^= 1
        f += rng.randint(10, 40)
    return out


# -- the generator (child process) -------------------------------------------------


def probe_clock_hz(mode: str) -> float:
    """
    RTP clock rate of xlbridge's replies: slin16 (16 kHz) in relay mode
    (``--reply-codec slin16``), G.722 (8 kHz RTP clock, RFC 3551) in
    translated mode (the default reply codec).
    """
    return 16000.0 if mode == "relay" else 8000.0


class Leg:
    __slots__ = ("sock", "fd", "index", "seq", "ts", "buf", "sched", "sp", "cur", "curf", "sent_at",
                 "rx", "last_ts", "ts_hi", "lang", "last_rx")

    def __init__(self, index: int, host: str, port: int, lang: int) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        s.bind((host, 0))
        s.connect((host, port))
        s.setblocking(False)
        self.sock = s
        self.fd = s.fileno()
        self.index = index
        self.lang = lang
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.buf = bytearray(struct.pack("!BBHII", 0x80, PT, 0, 0, random.getrandbits(32))) + bytearray(PAYLOAD_BYTES)
        self.sched: list = []
        self.sp = 0
        self.cur: Optional[list[bytes]] = None
        self.curf = 0
        self.sent_at = [0.0] * 256
        self.rx = 0
        self.last_ts: Optional[int] = None
        self.ts_hi = 0
        self.last_rx = 0.0


class Call:
    __slots__ = ("pair", "legs", "start", "end", "frame", "id", "probe", "start_tick")

    def __init__(self, cid: int, pair: int, legs: list[Leg], start: float, end: float, probe: bool) -> None:
        self.id = cid
        self.pair = pair
        self.legs = legs
        self.start = start
        self.end = end
        self.frame = 0
        self.probe = probe
        self.start_tick = 0


def hist_add(hist: list[int], ms: float) -> None:
    i = int(ms / HIST_BIN_MS)
    hist[i if 0 <= i < HIST_BINS else (HIST_BINS - 1 if i >= HIST_BINS else 0)] += 1


def run_generator(ns: argparse.Namespace) -> int:
    out = Path(ns.out)
    rng = random.Random(ns.seed)
    translated = ns.mode == "translated"
    probe_hz = probe_clock_hz(ns.mode)
    en, es = phrase_frames()
    nph = [len(p) for p in en]
    nph_es = [len(p) for p in es]
    sil = silence_frame()
    pairs = ns.pairs
    free_at = [0.0] * pairs
    busy = [False] * pairs
    calls: list[Call] = []
    ep = select.epoll()
    by_fd: dict[int, Leg] = {}
    partner: dict[int, Leg] = {}
    genf = open(out / "gen.jsonl", "a", buffering=1)
    callf = open(out / "calls.jsonl", "a", buffering=1)
    mono = time.monotonic
    rbuf = bytearray(2048)
    unpack_mark = MARK.unpack_from
    pack_into = struct.Struct("!HI").pack_into
    nslots = 10
    slot_dt = PERIOD / nslots
    slot_legs: list[list[tuple[Call, Leg]]] = [[] for _ in range(nslots)]

    t0 = mono() + 0.1
    wall0 = time.time() + 0.1
    run_end = t0 + ns.minutes * 60
    print(f"generator started {wall0:.3f}", flush=True)

    # minute accumulators
    minute = 0
    acc: dict[str, Any] = {}
    acc_last: dict[str, float] = {"resid": 0.0}
    hist = [0] * HIST_BINS

    def reset_acc() -> None:
        nonlocal hist
        acc.clear()
        acc.update(sent=0, send_errors=0, received=0, unmarked=0, started=0, stopped=0,
                   probe_resid_min=None, probe_rx=0, probe_rebases=0, gen_skipped_ticks=0, late_max_ms=0.0, late_over_5ms=0)
        hist = [0] * HIST_BINS

    reset_acc()
    cid_next = 0
    next_spawn = t0

    def start_call(now: float, pair: int, probe: bool) -> None:
        nonlocal cid_next
        base = ns.base + 2 * pair
        a = Leg(2 * pair, "127.0.0.1", base, 0)
        b = Leg(2 * pair + 1, "127.0.0.1", base + 1, 1)
        dur = (ns.minutes * 60 + 10) if probe else rng.uniform(ns.min_call, ns.max_call)
        frames_total = int(dur / PERIOD)
        sa, sb = talk_schedule(rng, frames_total, (nph, nph_es if translated else nph), rng.randint(0, 1))
        a.sched, b.sched = sa, sb
        c = Call(cid_next, pair, [a, b], now, now + dur, probe)
        c.start_tick = tick_no
        cid_next += 1
        for leg in c.legs:
            slot_legs[leg.index % nslots].append((c, leg))
        for leg in c.legs:
            ep.register(leg.fd, select.EPOLLIN)
            by_fd[leg.fd] = leg
        partner[a.fd] = b
        partner[b.fd] = a
        busy[pair] = True
        calls.append(c)
        acc["started"] += 1
        callf.write(json.dumps({"call": c.id, "pair": pair, "ports": [base, base + 1], "start": time.time(),
                                "planned_s": round(dur, 3), "probe": probe}) + "\n")

    def stop_call(now: float, c: Call) -> None:
        for leg in c.legs:
            slot_legs[leg.index % nslots].remove((c, leg))
            try:
                ep.unregister(leg.fd)
            except OSError:
                pass
            by_fd.pop(leg.fd, None)
            partner.pop(leg.fd, None)
            leg.sock.close()
        busy[c.pair] = False
        free_at[c.pair] = now + ns.cooldown
        acc["stopped"] += 1
        callf.write(json.dumps({"call": c.id, "pair": c.pair, "stop": time.time(),
                                "rx": [c.legs[0].rx, c.legs[1].rx]}) + "\n")

    def drain(timeout: float) -> None:
        for fd, _ev in ep.poll(timeout):
            leg = by_fd.get(fd)
            if leg is None:
                continue
            while True:
                try:
                    n = leg.sock.recv_into(rbuf)
                except (BlockingIOError, ConnectionRefusedError, OSError):
                    break
                now = mono()
                acc["received"] += 1
                leg.rx += 1
                if n < 18:
                    continue
                if leg.index == 0:
                    # probe: egress packet clock (RTP ts of xlbridge's packets) against ours
                    ts = int.from_bytes(rbuf[4:8], "big")
                    if leg.last_ts is not None and ts < leg.last_ts and leg.last_ts - ts > 1 << 31:
                        leg.ts_hi += 1 << 32
                    if leg.last_ts is not None and ts > leg.last_ts and ts - leg.last_ts > 1 << 31:
                        leg.ts_hi -= 1 << 32  # reordered across the wrap
                    if leg.last_ts is None:
                        leg.ts_hi = -ts
                    elif abs((((ts - leg.last_ts + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)) - (now - leg.last_rx) * probe_hz) > 2 * probe_hz:
                        # the bridge restarted the probe's stream (a new call after a
                        # stall): re-base so the residual continues; counted
                        leg.ts_hi = int(round((now - t0) * probe_hz - acc_last["resid"] * probe_hz)) - ts
                        acc["probe_rebases"] += 1
                    leg.last_ts = ts
                    leg.last_rx = now
                    resid = (now - t0) - (leg.ts_hi + ts) / probe_hz
                    acc_last["resid"] = resid
                    m = acc["probe_resid_min"]
                    if m is None or resid < m:
                        acc["probe_resid_min"] = resid
                    acc["probe_rx"] += 1
                if not translated:
                    magic, k = unpack_mark(rbuf, 12)
                    if magic != MAGIC:
                        acc["unmarked"] += 1
                        continue
                    other = partner.get(fd)
                    if other is None:
                        continue
                    sent = other.sent_at[k & 255]
                    if sent <= 0 or k > tick_no or tick_no - k > 200:
                        acc["unmarked"] += 1
                        continue
                    hist_add(hist, (now - sent) * 1000.0)

    def flush_minute(now: float) -> None:
        nonlocal minute
        rec = {"minute": minute, "wall": time.time(), "t": round(now - t0, 3), "calls_up": len(calls),
               **{k: v for k, v in acc.items()}}
        if rec["probe_resid_min"] is not None:
            rec["probe_resid_min_ms"] = round(rec.pop("probe_resid_min") * 1000.0, 4)
        else:
            rec.pop("probe_resid_min")
        nz = {i: c for i, c in enumerate(hist) if c}
        rec["lat_hist"] = {"bin_ms": HIST_BIN_MS, "bins": {str(i): c for i, c in nz.items()}}
        genf.write(json.dumps(rec) + "\n")
        minute += 1
        reset_acc()

    stopping = False
    stop_flag = {"v": False}
    signal.signal(signal.SIGTERM, lambda *_: stop_flag.__setitem__("v", True))
    k_slot = 0
    tick_no = 0
    next_minute = t0 + 60
    while True:
        deadline = t0 + k_slot * slot_dt
        while True:
            rem = deadline - mono()
            if rem <= 0:
                break
            if rem > 0.0012:
                drain(rem - 0.001)
            else:
                time.sleep(rem)
        now = mono()
        late = (now - deadline) * 1000.0
        if late > acc["late_max_ms"]:
            acc["late_max_ms"] = late
        if late > 5:
            acc["late_over_5ms"] += 1
        if late > CATCH_UP_MS:
            # This process was descheduled for a while: like a phone whose
            # packets were lost, skip what is overdue instead of flooding the
            # bridge with a burst (seq and ts jump as over lost packets).
            cur_tick = k_slot // nslots
            new_tick = int((now - t0) / PERIOD) + 1
            jump = new_tick - cur_tick
            for lst in slot_legs:
                for _c, leg in lst:
                    leg.seq = (leg.seq + jump) & 0xFFFF
                    leg.ts = (leg.ts + jump * TS_STEP) & 0xFFFFFFFF
            acc["gen_skipped_ticks"] += jump
            k_slot = new_tick * nslots
            continue
        slot = k_slot % nslots
        if slot == 0:
            tick_no = k_slot // nslots
            # call management once per tick
            if now >= run_end or stop_flag["v"]:
                stopping = True
            if stopping:
                for c in list(calls):
                    stop_call(now, c)
                calls.clear()
                break
            for c in [c for c in calls if now >= c.end]:
                calls.remove(c)
                stop_call(now, c)
            if not any(c.probe for c in calls) and tick_no == 0:
                start_call(now, 0, True)
            elif len(calls) < ns.calls and now >= next_spawn:
                free = [p for p in range(1, pairs) if not busy[p] and now >= free_at[p]]
                if free:
                    start_call(now, rng.choice(free), False)
                    next_spawn = now + ns.spawn_gap
            if now >= next_minute:
                flush_minute(now)
                next_minute += 60
        for c, leg in slot_legs[slot]:
            if True:
                f = tick_no - c.start_tick
                # speech
                payload = sil
                if leg.cur is None and leg.sp < len(leg.sched) and leg.sched[leg.sp][0] <= f:
                    p = leg.sched[leg.sp][1]
                    leg.cur = (es if (translated and leg.lang == 1) else en)[p]
                    leg.curf = 0
                    leg.sp += 1
                if leg.cur is not None:
                    payload = leg.cur[leg.curf]
                    leg.curf += 1
                    if leg.curf >= len(leg.cur):
                        leg.cur = None
                buf = leg.buf
                buf[12:] = payload
                struct.pack_into("!HI", buf, 2, leg.seq, leg.ts)
                if not translated:
                    pack_into(buf, 12, MAGIC, tick_no & 0xFFFFFFFF)
                    leg.sent_at[tick_no & 255] = mono()
                try:
                    leg.sock.send(buf)
                    acc["sent"] += 1
                except OSError:
                    acc["send_errors"] += 1
                leg.seq = (leg.seq + 1) & 0xFFFF
                leg.ts = (leg.ts + TS_STEP) & 0xFFFFFFFF
        drain(0)
        k_slot += 1
    # keep reading replies a little, then the last minute
    end_wait = mono() + 0.5
    while mono() < end_wait:
        drain(0.05)
    flush_minute(mono())
    print(f"generator stopped {time.time():.3f}", flush=True)
    return 0


# -- the parent: processes and sampling -------------------------------------------


def machine() -> dict[str, Any]:
    import platform

    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "nproc": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "host": platform.node()}


def proc_sample(pid: int) -> dict[str, Any]:
    """RSS/HWM (kB), open fds, CPU seconds and threads of ``pid``."""
    out: dict[str, Any] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:", "Threads:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value}, without comments."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            key, val = line.rsplit(" ", 1)
            out[key] = float(val)
        except ValueError:
            continue
    return out


def http_get(url: str, timeout: float = 5.0) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def start_fake(name: str, argv: list[str], cpu: Optional[str], log: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    cmd = [sys.executable, "-m", "tests.fakes", name, "--port", "0", *argv]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    logf = open(log, "w")
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=logf, text=True, start_new_session=True)
    env: dict[str, str] = {}
    assert p.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        logf.write(line)
        if line.startswith("export "):
            for kv in line.split()[1:]:
                k, v = kv.split("=", 1)
                env[k] = v
            break
    if not env:
        p.kill()
        raise RuntimeError(f"fake {name} did not start")
    # keep draining its stdout into the log
    threading.Thread(target=lambda: [logf.write(x) for x in p.stdout], daemon=True).start()  # type: ignore[union-attr]
    return p, env


def stop_proc(p: subprocess.Popen, timeout: float = 20.0) -> Optional[int]:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    return p.returncode


def run_parent(ns: argparse.Namespace) -> int:
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("samples.jsonl", "gen.jsonl", "calls.jsonl", "events.jsonl"):
        (out / name).unlink(missing_ok=True)
    translated = ns.mode == "translated"
    hi = ns.base + 2 * ns.pairs - 1
    monitor = f"http://127.0.0.1:{ns.monitor_port}"
    env = dict(os.environ, XLBRIDGE_MONITOR_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen] = []
    names: dict[int, str] = {}
    run: dict[str, Any] = {"argv": [sys.executable, *sys.argv], "mode": ns.mode, "calls": ns.calls,
                           "probe_clock_hz": probe_clock_hz(ns.mode),
                           "pairs": ns.pairs, "minutes": ns.minutes, "machine": machine(),
                           "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           "commands": {}}
    try:
        if translated:
            fakes = [("deepgram", ["--latency", "0"]), ("deepl", ["--latency", "0.15"]),
                     ("elevenlabs", ["--first-byte-ms", "100", "--chunk-interval-ms", "10"])]
            for name, argv in fakes:
                p, fenv = start_fake(name, argv, ns.fake_cpu, out / f"fake-{name}.log")
                procs.append(p)
                names[p.pid] = f"fake-{name}"
                env.update(fenv)
                run["commands"][f"fake-{name}"] = p.args
            run["fake_env"] = {k: v for k, v in env.items() if k.startswith("XLBRIDGE_")}
        twistd = str(Path(sys.executable).parent / "twistd")
        profile = ["--profile", ns.profile, "--profiler", "cprofile", "--savestats"] if ns.profile else []
        cmd = [twistd, "-n", "--pidfile=", *profile, "xlbridge", "--ports", f"{ns.base}-{hi}",
               "--engines", "cloud" if translated else "relay",
               "--call-timeout", str(ns.call_timeout), "--latch-timeout", str(ns.latch_timeout),
               "--monitor", f"tcp:{ns.monitor_port}:interface=127.0.0.1",
               "--events", str(out / "events.jsonl")]
        if not translated:
            cmd += ["--reply-codec", "slin16"]
        cmd += ns.bridge_arg
        if ns.bridge_cpu is not None:
            cmd = ["taskset", "-c", ns.bridge_cpu, *cmd]
        run["commands"]["xlbridge"] = cmd
        log = open(out / "xlbridge.log", "w")
        bridge = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        procs.append(bridge)
        names[bridge.pid] = "xlbridge"
        deadline = time.monotonic() + 60
        while True:
            if bridge.poll() is not None:
                raise RuntimeError(f"xlbridge exited with {bridge.returncode}; see {out / 'xlbridge.log'}")
            try:
                urllib.request.urlopen(f"{monitor}/readyz", timeout=2).read()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError("xlbridge not ready within 60 s")
                time.sleep(0.5)
        run["bridge_pid"] = bridge.pid
        gcmd = [sys.executable, str(Path(__file__).resolve()), "--gen", "--mode", ns.mode, "--calls", str(ns.calls),
                "--pairs", str(ns.pairs), "--minutes", str(ns.minutes), "--base", str(ns.base), "--out", str(out),
                "--min-call", str(ns.min_call), "--max-call", str(ns.max_call), "--cooldown", str(ns.cooldown),
                "--spawn-gap", str(ns.spawn_gap), "--seed", str(ns.seed)]
        if ns.gen_cpu is not None:
            gcmd = ["taskset", "-c", ns.gen_cpu, *gcmd]
        run["commands"]["generator"] = gcmd
        (out / "run.json").write_text(json.dumps(run, indent=1))
        genlog = open(out / "generator.log", "w")
        gen = subprocess.Popen(gcmd, cwd=ROOT, stdout=genlog, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(gen)
        names[gen.pid] = "generator"
        t_start = time.time()
        samples = open(out / "samples.jsonl", "a", buffering=1)
        next_t = time.monotonic()
        while gen.poll() is None:
            if bridge.poll() is not None:
                run["bridge_died"] = bridge.returncode
                break
            s: dict[str, Any] = {"wall": time.time()}
            s["t"] = round(s["wall"] - t_start, 3)
            try:
                s["proc"] = proc_sample(bridge.pid)
            except OSError as e:
                s["proc_error"] = str(e)
            try:
                a = time.time()
                text = http_get(f"{monitor}/metrics").decode()
                b = time.time()
                s["metrics_rtt_ms"] = round((b - a) * 1000, 3)
                s["metrics_wall"] = (a + b) / 2
                m = parse_metrics(text)
                keep = ("xlbridge_egress", "xlbridge_active", "xlbridge_calls", "xlbridge_packets",
                        "xlbridge_speech_to_playback", "xlbridge_engine", "xlbridge_ready",
                        "xlbridge_directions", "xlbridge_utterances", "xlbridge_translations",
                        "xlbridge_outbound_samples")
                s["metrics"] = {k: v for k, v in m.items() if k.startswith(keep)}
            except Exception as e:  # noqa: BLE001  (a sample is lost, not the run)
                s["metrics_error"] = repr(e)
            samples.write(json.dumps(s) + "\n")
            next_t += ns.sample_s
            time.sleep(max(0.0, next_t - time.monotonic()))
        gen.wait()
        # calls end by inactivity: wait for the call timeout, then a last sample
        time.sleep(ns.call_timeout + 3)
        s = {"wall": time.time(), "final": True}
        s["t"] = round(s["wall"] - t_start, 3)
        try:
            s["proc"] = proc_sample(bridge.pid)
            s["metrics"] = {k: v for k, v in parse_metrics(http_get(f"{monitor}/metrics").decode()).items()
                            if k.startswith("xlbridge_")}
            s["api"] = json.loads(http_get(f"{monitor}/api/calls"))
        except Exception as e:  # noqa: BLE001
            s["metrics_error"] = repr(e)
        samples.write(json.dumps(s) + "\n")
        samples.close()
    finally:
        for p in reversed(procs):
            rc = stop_proc(p)
            # twistd exits -15 after a clean SIGTERM shutdown (it re-raises the signal)
            run.setdefault("exit", {})[names.get(p.pid, str(p.pid))] = rc
        run["ended_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        (out / "run.json").write_text(json.dumps(run, indent=1))
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import soak_plot

        soak_plot.main([str(out)])
    except Exception as e:  # noqa: BLE001
        print(f"analysis failed: {e!r}", file=sys.stderr)
    return 0


def watch_load(out: Path, pids: dict[str, int], period_s: float, seconds: float) -> int:
    """
    Machine contention while soaks run (they share the machine with other
    work): every ``period_s`` seconds one JSON line with the load average,
    the machine's busy fraction per CPU since the last line, and per watched
    process its CPU seconds and run-queue wait seconds (/proc/PID/schedstat:
    time runnable but not running, i.e. starved).
    """

    def cpus() -> dict[str, list[int]]:
        res = {}
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu"):
                f = line.split()
                res[f[0]] = [int(x) for x in f[1:]]
        return res

    prev = cpus()
    end = time.monotonic() + seconds
    with open(out, "a", buffering=1) as f:
        while time.monotonic() < end:
            time.sleep(period_s)
            cur = cpus()
            busy = {}
            for k, v in cur.items():
                d = [a - b for a, b in zip(v, prev.get(k, v))]
                tot = sum(d[:8]) or 1
                busy[k] = round(1 - (d[3] + d[4]) / tot, 3)
            prev = cur
            rec: dict[str, Any] = {"wall": time.time(), "loadavg": Path("/proc/loadavg").read_text().split()[:4],
                                   "busy": busy, "procs": {}}
            for name, pid in pids.items():
                try:
                    run_s, wait_s, _ = (int(x) for x in Path(f"/proc/{pid}/schedstat").read_text().split())
                    rec["procs"][name] = {"run_s": run_s / 1e9, "wait_s": wait_s / 1e9}
                except (OSError, ValueError):
                    pass
            f.write(json.dumps(rec) + "\n")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("relay", "translated"), required=True)
    ap.add_argument("--calls", type=int, required=True, help="calls up at once")
    ap.add_argument("--pairs", type=int, default=None, help="port pairs (default calls * 1.2 + 2)")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--base", type=int, default=21000, help="first xlbridge RTP port")
    ap.add_argument("--monitor-port", type=int, default=3101)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--min-call", type=float, default=60.0, help="shortest call, s")
    ap.add_argument("--max-call", type=float, default=300.0, help="longest call, s")
    ap.add_argument("--call-timeout", type=float, default=5.0, help="xlbridge --call-timeout, s")
    ap.add_argument("--latch-timeout", type=float, default=2.0, help="xlbridge --latch-timeout, s")
    ap.add_argument("--cooldown", type=float, default=12.0, help="rest of a pair between calls, s")
    ap.add_argument("--spawn-gap", type=float, default=0.5, help="least time between two new calls, s")
    ap.add_argument("--sample-s", type=float, default=10.0, help="parent sampling period, s")
    ap.add_argument("--bridge-cpu", default=None, help="taskset CPU list for xlbridge")
    ap.add_argument("--gen-cpu", default=None, help="taskset CPU list for the generator")
    ap.add_argument("--fake-cpu", default=None, help="taskset CPU list for the fakes")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--bridge-arg", action="append", default=[],
                    help="one more xlbridge argument (repeat), e.g. --bridge-arg=--config=FILE")
    ap.add_argument("--profile", default=None,
                    help="run xlbridge under cProfile (twistd --profile), stats saved to this file at exit")
    ap.add_argument("--gen", action="store_true", help=argparse.SUPPRESS)
    if argv is None and sys.argv[1:2] == ["--watch"]:
        # python reliability/soak.py --watch OUT.jsonl SECONDS NAME=PID ...
        out, secs, *named = sys.argv[2:]
        return watch_load(Path(out), {n: int(p) for n, p in (x.split("=") for x in named)}, 30.0, float(secs))
    ns = ap.parse_args(argv)
    if ns.pairs is None:
        ns.pairs = int(ns.calls * 1.2) + 2
    if ns.pairs < ns.calls + 1:
        ap.error("need more pairs than calls (pair 0 is the probe)")
    if ns.gen:
        return run_generator(ns)
    return run_parent(ns)


if __name__ == "__main__":
    sys.exit(main())
