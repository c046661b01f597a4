"""
Analyse a tcpdump capture of a bridge's outbound RTP (kernel timestamps).

Reads a classic pcap (micro- or nanosecond, either byte order; link types
Ethernet, Linux cooked v1/v2, raw IPv4, BSD loopback) with plain ``struct``,
keeps UDP/IPv4 packets whose *source* port is in the bridge's range, and
groups them by (source port, destination port) stream.

Per stream the first ``warmup`` seconds are dropped; then:

- interval error: ``|inter-arrival - 20 ms|`` for every consecutive pair,
  pooled over all streams -> p50 / p99 / p99.9 / max in ms; intervals of
  1.5 periods or more (late) and under half a period (catch-up bursts);
- loss: RTP sequence gaps (packets never seen), duplicates and reorders
  (sequence going backwards); missed intervals from the RTP timestamp (a tick
  the bridge skipped advances ts but not seq) and from the clock (stream
  duration / 20 ms + 1 - packets);
- silence fill: PT 118 payloads whose captured bytes are all zero (the bridge
  had nothing of the partner's audio to send); marker bits (talkspurt starts);
- ticks: all streams' packets in time order, cut into ticks (a tick ends when
  a stream repeats or after a 5 ms gap) -> tick start interval error, the
  tick's spread (first to last packet) and the mean gap between two packets
  of one tick, i.e. the bridge's wall-clock cost per outbound packet.

Also: :func:`udp_socket_stats` reads the per-socket ``drops`` column of
/proc/net/udp (kernel receive drops) for a port range; sample it before and
after a run.

Usage: ``python bench/analyse.py FILE.pcap --ports 20000-20399 [--warmup 1]``
prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from collections import defaultdict
from typing import Any

PERIOD_NS = 20_000_000

_LINK_OFFSETS = {1: 14, 113: 16, 276: 20, 101: 0, 228: 0, 0: 4, 12: 0}


def pct(sorted_vals: list[Any], p: float) -> Any:
    """Nearest-rank percentile of an already sorted list (nan if empty)."""
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, math.ceil(p / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def read_pcap(path: str, port_lo: int, port_hi: int) -> tuple[dict[tuple[int, int], list[tuple]], dict[str, Any]]:
    """
    :return: ``{(sport, dport): [(t_ns, seq, ts, pt, marker, silent), ...]}``
        in file order, and file info.  ``silent`` is None for PT != 118.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ValueError(f"{path}: not a pcap file (too short)")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap (magic {magic.hex()}); pcapng is not supported")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(e + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype not in _LINK_OFFSETS:
        raise ValueError(f"{path}: unsupported link type {linktype}")
    l2 = _LINK_OFFSETS[linktype]
    frac_mult = 1 if nano else 1000
    rec = struct.Struct(e + "IIII")
    hdr = struct.Struct("!BBHII")
    ports = struct.Struct("!HH")
    streams: dict[tuple[int, int], list[tuple]] = defaultdict(list)
    off = 24
    n = len(data)
    total = kept = 0
    while off + 16 <= n:
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        p = off + 16
        off = p + incl
        total += 1
        if off > n:
            break
        ip = p + l2
        if linktype == 1 and data[p + 12 : p + 14] != b"\x08\x00":
            continue
        if incl < l2 + 20 or data[ip] >> 4 != 4 or data[ip + 9] != 17:
            continue
        udp = ip + (data[ip] & 0x0F) * 4
        if udp + 8 + 12 > off:
            continue
        sport, dport = ports.unpack_from(data, udp)
        if not port_lo <= sport <= port_hi:
            continue
        rtp = udp + 8
        b0, b1, seq, ts, _ssrc = hdr.unpack_from(data, rtp)
        if b0 >> 6 != 2:
            continue
        pt = b1 & 0x7F
        silent = None
        if pt == 118:
            pl = data[rtp + 12 : off]
            silent = not any(pl) if pl else None
        streams[(sport, dport)].append((sec * 1_000_000_000 + frac * frac_mult, seq, ts, pt, b1 >> 7, silent))
        kept += 1
    info = {"linktype": linktype, "nanosecond": nano, "records": total, "kept": kept}
    return dict(streams), info


def analyse(
    streams: dict[tuple[int, int], list[tuple]], warmup: float = 1.0, period_ns: int = PERIOD_NS
) -> dict[str, Any]:
    """Interval error, loss and tick statistics; see the module docstring."""
    warm_ns = int(warmup * 1e9)
    errors_ns: list[int] = []
    pkts = lost = dups = reorders = ts_missed = clock_missed = silent = silent_known = markers = 0
    late_intervals = 0  # intervals >= 1.5 periods (a whole tick late)
    short_intervals = 0  # intervals < 0.5 period (catch-up bursts)
    timeline: list[tuple[int, int]] = []
    for sid, (key, recs) in enumerate(sorted(streams.items())):
        if not recs:
            continue
        t_first = recs[0][0]
        recs = [r for r in recs if r[0] - t_first >= warm_ns]
        if len(recs) < 2:
            continue
        dts = [(b[2] - a[2]) & 0xFFFFFFFF for a, b in zip(recs, recs[1:21])]
        nz = sorted(d for d in dts if d)
        step = nz[len(nz) // 2] if nz else 320
        pkts += len(recs)
        for r in recs:
            timeline.append((r[0], sid))
            if r[5] is not None:
                silent_known += 1
                silent += r[5]
            markers += r[4]
        # extended (unwrapped) sequence numbers: loss = expected - unique received
        ext_prev = recs[0][1]
        highest = ext_prev
        seen = {ext_prev}
        hi_ts = recs[0][2]
        for a, r in zip(recs, recs[1:]):
            dt = r[0] - a[0]
            errors_ns.append(abs(dt - period_ns))
            if dt >= period_ns * 3 // 2:
                late_intervals += 1
            elif dt < period_ns // 2:
                short_intervals += 1
            ext = ext_prev + ((r[1] - ext_prev + 0x8000) & 0xFFFF) - 0x8000
            ext_prev = ext
            if ext in seen:
                dups += 1
                continue
            seen.add(ext)
            if ext < highest:
                reorders += 1
                continue
            d = ext - highest
            dts_ = (r[2] - hi_ts) & 0xFFFFFFFF
            if step * d < dts_ < 0x80000000:
                ts_missed += dts_ // step - d
            highest, hi_ts = ext, r[2]
        lost += (highest - recs[0][1] + 1) - len(seen)
        span = recs[-1][0] - recs[0][0]
        clock_missed += max(0, round(span / period_ns) + 1 - len(recs))

    errors_ns.sort()
    ms = 1e-6
    out: dict[str, Any] = {
        "streams": len(streams),
        "packets": pkts,
        "intervals": len(errors_ns),
        "interval_error_ms": {
            "p50": pct(errors_ns, 50) * ms,
            "p99": pct(errors_ns, 99) * ms,
            "p99.9": pct(errors_ns, 99.9) * ms,
            "max": (errors_ns[-1] if errors_ns else float("nan")) * ms,
            "mean": (sum(errors_ns) / len(errors_ns) * ms) if errors_ns else float("nan"),
        },
        "late_intervals": late_intervals,
        "short_intervals": short_intervals,
        "seq_lost": lost,
        "duplicates": dups,
        "reorders": reorders,
        "ts_missed_intervals": ts_missed,
        "clock_missed_intervals": clock_missed,
        "loss_fraction": (lost / (pkts + lost)) if pkts else float("nan"),
        "silence_packets": silent if silent_known else None,
        "silence_fraction": (silent / silent_known) if silent_known else None,
        "markers": markers,
    }
    out["ticks"] = _ticks(timeline, len([s for s in streams.values() if s]), period_ns)
    return out


def _ticks(timeline: list[tuple[int, int]], nstreams: int, period_ns: int) -> dict[str, Any]:
    timeline.sort()
    ticks: list[tuple[int, int, int]] = []  # (start, end, count)
    seen: set[int] = set()
    start = last = None
    for t, sid in timeline:
        if start is None or sid in seen or t - last > 5_000_000:
            if start is not None:
                ticks.append((start, last, len(seen)))
            seen = set()
            start = t
        seen.add(sid)
        last = t
    if start is not None:
        ticks.append((start, last, len(seen)))
    full = [tk for tk in ticks if tk[2] >= max(2, int(0.9 * nstreams))]
    if len(full) < 3:
        return {"ticks": len(ticks), "full_ticks": len(full)}
    spreads = sorted(e - s for s, e, _ in full)
    gaps = sorted((e - s) / (c - 1) for s, e, c in full)
    starts = [s for s, _, _ in full]
    start_err = sorted(abs(b - a - period_ns) for a, b in zip(starts, starts[1:]) if b - a < 2 * period_ns)
    us, ms = 1e-3, 1e-6
    return {
        "ticks": len(ticks),
        "full_ticks": len(full),
        "start_interval_error_ms": {
            "p50": pct(start_err, 50) * ms,
            "p99": pct(start_err, 99) * ms,
            "max": (start_err[-1] if start_err else float("nan")) * ms,
        },
        "spread_ms": {"p50": pct(spreads, 50) * ms, "p99": pct(spreads, 99) * ms, "max": spreads[-1] * ms},
        "us_per_packet": {"p50": pct(gaps, 50) * us, "p99": pct(gaps, 99) * us},
    }


def udp_socket_stats(port_lo: int, port_hi: int) -> dict[str, int]:
    """
    Sum of the kernel's per-socket receive ``drops`` and current rx queue
    bytes for IPv4 UDP sockets bound to a local port in the range.
    """
    drops = rxq = socks = 0
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            parts = line.split()
            port = int(parts[1].split(":")[1], 16)
            if port_lo <= port <= port_hi:
                socks += 1
                rxq += int(parts[4].split(":")[1], 16)
                drops += int(parts[-1])
    return {"sockets": socks, "drops": drops, "rx_queue_bytes": rxq}


def udp_snmp() -> dict[str, int]:
    """System-wide Udp counters from /proc/net/snmp (InErrors, RcvbufErrors, ...)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:])}


def analyse_file(path: str, port_lo: int, port_hi: int, warmup: float = 1.0) -> dict[str, Any]:
    streams, info = read_pcap(path, port_lo, port_hi)
    out = analyse(streams, warmup)
    out["pcap"] = info
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pcap")
    ap.add_argument("--ports", default="20000-20399", help="bridge port range A-B (source ports)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds dropped at each stream's start")
    ns = ap.parse_args(argv)
    lo, hi = map(int, ns.ports.split("-"))
    print(json.dumps(analyse_file(ns.pcap, lo, hi, ns.warmup), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
