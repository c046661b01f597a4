"""
One-way delay per transport on the real Asterisk lab (issue 14), relay.

One ``twistd xlbridge --engines relay`` serves four pairs at once:

=========  ====================================================  =====================================
label      how the callers reach xlbridge                         xlbridge ports (a, b)
=========  ====================================================  =====================================
rtp        ExternalMedia RTP, slin16 in / G.722 back, made by     UDP 7777, 8888 (``--ports``)
           this script's own ARI app ``myapp`` (as test_delay)
as_app     the ``AudioSocket()`` dialplan application, slin       TCP 5050, 5052 (``--audiosocket``)
           8 kHz (kind 0x10): sample context
           ``xlbridge-audiosocket-app``
as_em      ExternalMedia ``encapsulation=audiosocket              TCP 5054, 5056 (``:slin16`` stated)
           format=slin16`` (kind 0x12), made by ``myapp``
ws         chan_websocket, ``Dial(WebSocket/xlbridge-700x/        TCP 8702, 8703 (``--websocket``)
           c(slin16))``: sample context ``xlbridge-websocket``
=========  ====================================================  =====================================

In each pair caller a says ``conf-onlyperson`` and caller b ``vm-goodbye``
1.5 s later, as ``exchange()`` of tests/asterisk/test_real_asterisk.py
does; every caller first plays a short ``beep`` (so Asterisk sends the
RTP legs' audio from the start and xlbridge latches them, as in
``ExternalMediaAppTests``; the same for every transport).  Each run
starts a fresh xlbridge and a packet capture on loopback, and rotates the
order the pairs are called in.

Two measurements per pair and run:

- **lab round trip** (:func:`tests.asterisk.lab.round_trip`): heard minus
  said, a->b plus b->a, from the callers' MixMonitor recordings (the
  offset between the two callers' time lines cancels).  Half of it is the
  symmetric one-way estimate.  MixMonitor's read/write alignment carries
  an offset of its own (a few tens of ms per caller, which does *not*
  cancel), so the absolute figures are only comparable between
  transports measured in the same run, as here.
- **wire, through xlbridge**: ``tcpdump -i lo`` on xlbridge's ports
  (kernel timestamps).  Each voiced quarter second of the prompt is found
  in what Asterisk sent to xlbridge for caller a and in what xlbridge sent
  towards caller b (G.722 decoded, 8 kHz upsampled, WebSocket frames
  unmasked); the delay is the median, over the piece's samples, of
  (time of the packet/message that carried the sample out) - (time of
  the one that carried it in), one value per run and direction (the
  median of its pieces), then median and p90 over those.  For WebSocket
  legs that is when xlbridge *sent* the audio into Asterisk's queue;
  ``ws modelled heard`` adds the
  queue (each 20 ms frame plays at max(its send time, the previous
  frame's play time + 20 ms); a FLUSH_MEDIA xlbridge sent drops the
  frames that had not started; Asterisk's timer phase, 0-20 ms more, is
  not modelled).

Prints a table (median and p90 over runs for the round trip, over run x
direction values for the wire) and writes ``OUT/results.json``.  Needs root
(tcpdump), the lab running (``sh scripts/asterisk-lab.sh status``) and
holds the lab's lock while it runs.

``--translate`` runs ``--engines local`` instead: in each pair caller a
says the English sentence (pairs ``--stagger`` s apart, so the engines
serve one utterance at a time) and b listens; the figure is the first
PlaybackStarted event per listener: ``total_ms`` = end of speech to the
first translated frame heard (RTP/AudioSocket: put on the wire, which
Asterisk plays at once; WebSocket: when Asterisk's MEDIA_MARK_PROCESSED
says it played), and ``queue_wait_ms`` = first TTS audio to that moment.

Usage: ``.venv/bin/python bench/transport_delay.py --runs 7`` (about 25 s a run);
``.venv/bin/python bench/transport_delay.py --translate --runs 5 --out bench/out/transport_translate``
(about a minute a run)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from codestate import code_state  # noqa: E402
os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")  # xlbridge under twistd too

import G722  # noqa: E402
import numpy as np  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.defer import inlineCallbacks  # noqa: E402

from tests.asterisk import lab  # noqa: E402
from tests.asterisk.test_real_asterisk import PROMPT_A, PROMPT_B  # noqa: E402

RATE = 16000

#: label -> (what it is, caller a's and b's lab.caller keywords, wire kind, xlbridge port of a, of b)
PAIRS: dict[str, tuple[str, dict[str, str], dict[str, str], str, int, int]] = {
    "rtp": ("RTP (ExternalMedia, slin16 in / G.722 back)",
            {"app": "myapp", "app_args": "7777"}, {"app": "myapp", "app_args": "8888"}, "rtp", 7777, 8888),
    "as_app": ("AudioSocket() application (8 kHz, 0x10)",
               {"context": "xlbridge-audiosocket-app", "extension": "7000"},
               {"context": "xlbridge-audiosocket-app", "extension": "7001"}, "as", 5050, 5052),
    "as_em": ("AudioSocket ExternalMedia (slin16, 0x12)",
              {"app": "myapp", "app_args": "7004"}, {"app": "myapp", "app_args": "7005"}, "as", 5054, 5056),
    "ws": ("WebSocket (chan_websocket, slin16)",
           {"context": "xlbridge-websocket", "extension": "7002"},
           {"context": "xlbridge-websocket", "extension": "7003"}, "ws", 8702, 8703),
}
XLBRIDGE_ARGS = [
    "--ports", "7777,8888",
    "--audiosocket", "7000=5050,7001=5052,7004=5054:slin16,7005=5056:slin16",
    "--websocket", "7002=8702,7003=8703",
]
READY = ("RTPEndpoint starting on 8888", "AudioSocketEndpoint starting on 5056", "MediaServerFactory starting on 8703")
#: ExternalMedia legs the script's own ARI app makes: caller argument -> externalMedia parameters
APP_LEGS = {
    "7777": {"external_host": "127.0.0.1:7777", "format": "slin16"},
    "8888": {"external_host": "127.0.0.1:8888", "format": "slin16"},
    "7004": {"external_host": "127.0.0.1:5054", "format": "slin16", "encapsulation": "audiosocket",
             "transport": "tcp"},
    "7005": {"external_host": "127.0.0.1:5056", "format": "slin16", "encapsulation": "audiosocket",
             "transport": "tcp"},
}




# --------------------------------------------------------------------------
# the lab side


class MyApp:
    """
    The user's own ARI application (as tests/asterisk/test_delay.py): each
    caller that enters ``myapp`` with an extension argument gets a mixing
    bridge and an ExternalMedia leg to xlbridge.
    """

    def __init__(self, reactor: Any) -> None:
        from xlbridge.ari.events import ARIEvents

        self.reactor = reactor
        self.errors: list[str] = []
        self.made: dict[str, str] = {}
        self.events = ARIEvents(reactor, lab.ARI, "myapp", *lab.auth(), self.on_event)

    @inlineCallbacks
    def start(self) -> Any:
        self.events.startService()
        while not self.events.connected:
            yield task.deferLater(self.reactor, 0.1, lambda: None)

    def stop(self) -> Any:
        return self.events.stopService()

    def on_event(self, event: dict[str, Any]) -> None:
        channel = event.get("channel") or {}
        cid = channel.get("id", "")
        arg = (event.get("args") or [""])[0]
        if event.get("type") == "StasisStart" and arg in APP_LEGS:
            self.made[cid] = arg
            self.steps(cid, arg).addErrback(lambda f: self.errors.append(f"{arg}: {f.getErrorMessage()}"))
        elif event.get("type") == "StasisEnd" and cid in self.made:
            lab.ari("DELETE", f"/channels/xlb-em-{cid}").addErrback(lambda f: None)
            lab.ari("DELETE", f"/bridges/xlb-{cid}").addErrback(lambda f: None)

    @inlineCallbacks
    def steps(self, chan: str, ext: str) -> Any:
        yield lab.ari("POST", f"/channels/{chan}/answer")
        yield lab.ari("POST", "/bridges", {"type": "mixing", "bridgeId": f"xlb-{chan}"})
        leg = f"xlb-em-{chan}"
        params = {"app": "myapp", "channelId": leg, **APP_LEGS[ext]}
        if params.get("encapsulation") == "audiosocket":
            params["data"] = str(uuid.uuid4())
        yield lab.ari("POST", "/channels/externalMedia", params)
        for _ in range(50):
            chans = yield lab.ari("GET", "/channels")
            plan = {c["id"]: c.get("dialplan", {}) for c in chans}
            if plan.get(leg, {}).get("app_name") == "Stasis":
                break
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        yield lab.ari("POST", f"/bridges/xlb-{chan}/addChannel", {"channel": f"{chan},{leg}"})


def start_tcpdump(pcap: Path) -> subprocess.Popen:
    ports = sorted({p for *_, pa, pb in PAIRS.values() for p in (pa, pb)})
    filt = " or ".join(f"port {p}" for p in ports)
    p = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-n", "-s", "0", "-B", "65536", "--time-stamp-precision=nano", "-j", "host",
         "-w", str(pcap), filt],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert p.stderr is not None
    line = p.stderr.readline()
    if "listening on" not in line:
        p.kill()
        raise RuntimeError(f"tcpdump did not start: {line.strip()}")
    return p


@inlineCallbacks
def one_run(reactor: Any, k: int, ns: argparse.Namespace, out: Path) -> Any:
    """Run ``k``: fresh xlbridge, capture, the four pairs' callers; returns the run's record."""
    lab.clean_out()
    tmp = out / f"run{k}"
    tmp.mkdir(parents=True, exist_ok=True)
    pcap = tmp / "lo.pcap"
    dump = start_tcpdump(pcap)
    # --translate: the pairs wait their turn in silence, longer than the
    # default --call-timeout (10 s); an RTP call ended for silence forgets
    # the silent listener's address (Asterisk sends it nothing to re-latch).
    engines = ["--engines", "local", "--call-timeout", "120"] if ns.translate else ["--engines", "relay"]
    bridge = lab.Bridge(tmp, XLBRIDGE_ARGS + engines)
    app = MyApp(reactor)
    rec: dict[str, Any] = {"run": k, "code": code_state(str(ROOT))}
    try:
        for text in READY:
            yield bridge.wait_for(text, timeout=180)
        yield app.start()
        labels = list(PAIRS)
        order = labels[k % len(labels):] + labels[: k % len(labels)]
        rec["order"] = order
        t0 = time.monotonic()
        if ns.translate:
            # One English sentence per pair, ns.stagger s apart (the local
            # engines serve one utterance at a time); b only listens.
            last = ns.delay + ns.stagger * (len(order) - 1)
            for i, label in enumerate(order):
                _, a, b, *_ = PAIRS[label]
                talk = ns.delay + ns.stagger * i
                yield lab.caller(f"{label}-a", PROMPT_A, delay=talk, hold=last - talk + ns.hold, first="beep", **a)
                yield lab.caller(f"{label}-b", "", delay=last + 4, hold=ns.hold, first="beep", **b)
        else:
            for label in order:
                _, a, b, *_ = PAIRS[label]
                yield lab.caller(f"{label}-a", PROMPT_A, delay=ns.delay, hold=ns.hold, first="beep", **a)
                yield lab.caller(f"{label}-b", PROMPT_B, delay=ns.delay + 1.5, hold=ns.hold, first="beep", **b)
        rec["originate_s"] = time.monotonic() - t0
        yield lab.wait_idle(60 + (ns.stagger * len(order) if ns.translate else 0))
        bridges = yield lab.ari("GET", "/bridges")
        rec["bridges_left"] = len(bridges)
        rec["app_errors"] = list(app.errors)
    finally:
        yield app.stop()
        yield bridge.stop()
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
    rec["xlbridge_tracebacks"] = bridge.log().count("Traceback")
    if ns.translate:
        rec["playback"] = playbacks(bridge.events())
        pcap.unlink()
        return rec
    rec["lab"] = {}
    for label in PAIRS:
        try:
            trip, ab = lab.round_trip(f"{label}-a", PROMPT_A, f"{label}-b", PROMPT_B)
            rec["lab"][label] = {"round_trip_s": trip, "ab_s": ab, "ba_s": trip - ab}
        except AssertionError as e:
            rec["lab"][label] = {"error": str(e)}
    rec["wire"] = wire_delays(pcap)
    if not ns.keep_pcap:
        pcap.unlink()
    return rec


# --------------------------------------------------------------------------
# the capture


def read_pcap(path: Path) -> list[tuple[float, int, int, int, int, bytes]]:
    """``(t, proto, sport, dport, tcp_seq, payload)`` of every IPv4 UDP/TCP packet with a payload."""
    data = path.read_bytes()
    magic = data[:4]
    e = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    link = struct.unpack_from(e + "I", data, 20)[0] & 0x0FFFFFFF
    l2 = {1: 14, 113: 16, 276: 20, 101: 0, 228: 0, 0: 4}[link]
    frac = 1e-9 if nano else 1e-6
    out = []
    off = 24
    rec = struct.Struct(e + "IIII")
    while off + 16 <= len(data):
        sec, sub, incl, _ = rec.unpack_from(data, off)
        pkt = data[off + 16: off + 16 + incl]
        off += 16 + incl
        ip = pkt[l2:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        proto = ip[9]
        body = ip[ihl:total]
        t = sec + sub * frac
        if proto == 17 and len(body) >= 8:
            sp, dp = struct.unpack_from("!HH", body)
            out.append((t, 17, sp, dp, 0, bytes(body[8:])))
        elif proto == 6 and len(body) >= 20:
            sp, dp, seq = struct.unpack_from("!HHI", body)
            doff = (body[12] >> 4) * 4
            if len(body) > doff:
                out.append((t, 6, sp, dp, seq, bytes(body[doff:])))
    return out


def tcp_stream(pkts: list[tuple], sport: int, dport: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """One direction's bytes in order (retransmissions dropped) and, per segment, its end offset and time."""
    segs = [(seq, t, pl) for t, proto, sp, dp, seq, pl in pkts if proto == 6 and sp == sport and dp == dport]
    if not segs:
        return b"", np.zeros(0), np.zeros(0)
    base = segs[0][0]
    seen: dict[int, tuple[float, bytes]] = {}
    for seq, t, pl in segs:
        rel = (seq - base) & 0xFFFFFFFF
        if rel not in seen:
            seen[rel] = (t, pl)
    buf = bytearray()
    ends, times = [], []
    for rel in sorted(seen):
        t, pl = seen[rel]
        if rel + len(pl) <= len(buf):
            continue
        buf += pl[len(buf) - rel:] if rel < len(buf) else pl
        ends.append(len(buf))
        times.append(t)
    return bytes(buf), np.asarray(ends), np.asarray(times)


def _time_of(ends: np.ndarray, times: np.ndarray, end_offset: int) -> float:
    """Time of the segment that carried byte ``end_offset - 1``."""
    return float(times[min(len(times) - 1, int(np.searchsorted(ends, end_offset, side="left")))])


AS_RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000, 0x15: 44100, 0x16: 48000,
            0x17: 96000, 0x18: 192000}


def audiosocket_chunks(pkts: list[tuple], sport: int, dport: int) -> list[tuple[float, int, np.ndarray]]:
    data, ends, times = tcp_stream(pkts, sport, dport)
    out, i = [], 0
    while i + 3 <= len(data):
        kind, n = data[i], struct.unpack_from("!H", data, i + 1)[0]
        if i + 3 + n > len(data):
            break
        if kind in AS_RATES:
            out.append((_time_of(ends, times, i + 3 + n), AS_RATES[kind], np.frombuffer(data[i + 3:i + 3 + n], "<i2")))
        i += 3 + n
    return out


def websocket_chunks(pkts: list[tuple], sport: int, dport: int,
                     texts: Optional[list[tuple[float, str]]] = None) -> list[tuple[float, int, np.ndarray]]:
    """
    BINARY messages of one direction (after the HTTP upgrade), unmasked, as
    slin16 little-endian; TEXT messages go to ``texts`` as ``(time, text)``.
    """
    data, ends, times = tcp_stream(pkts, sport, dport)
    i = data.find(b"\r\n\r\n")
    if i < 0:
        return []
    i += 4
    out: list[tuple[float, int, np.ndarray]] = []
    parts: list[bytes] = []
    opcode0 = 0
    while i + 2 <= len(data):
        b0, b1 = data[i], data[i + 1]
        fin, opcode, masked, n = b0 >> 7, b0 & 15, b1 >> 7, b1 & 127
        j = i + 2
        if n == 126:
            n = struct.unpack_from("!H", data, j)[0]
            j += 2
        elif n == 127:
            n = struct.unpack_from("!Q", data, j)[0]
            j += 8
        key = data[j:j + 4] if masked else b""
        j += 4 if masked else 0
        if j + n > len(data):
            break
        payload = data[j:j + n]
        if masked:
            m = np.frombuffer((key * (n // 4 + 1))[:n], np.uint8)
            payload = (np.frombuffer(payload, np.uint8) ^ m).tobytes()
        if opcode in (1, 2):
            opcode0, parts = opcode, [payload]
        elif opcode == 0:
            parts.append(payload)
        if fin and opcode in (0, 1, 2) and opcode0 == 2:
            pcm = b"".join(parts)
            out.append((_time_of(ends, times, j + n), RATE, np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2")))
        elif fin and opcode in (0, 1) and opcode0 == 1 and texts is not None:
            texts.append((_time_of(ends, times, j + n), b"".join(parts).decode("utf-8", "replace")))
        i = j + n
    return out


def rtp_chunks(pkts: list[tuple], sport: int, dport: int) -> list[tuple[float, int, np.ndarray]]:
    """slin16 (PT 118, big-endian) or G.722 (PT 9, decoded in order) payloads of one UDP direction."""
    out = []
    dec = None
    for t, proto, sp, dp, _, pl in pkts:
        if proto != 17 or (sport and sp != sport) or (dport and dp != dport) or len(pl) < 12 or pl[0] >> 6 != 2:
            continue
        cc, ext, pt = pl[0] & 15, pl[0] & 16, pl[1] & 127
        j = 12 + 4 * cc
        if ext:
            j += 4 + 4 * struct.unpack_from("!H", pl, j + 2)[0]
        body = pl[j:]
        if pt == 118:
            out.append((t, RATE, np.frombuffer(body, ">i2").astype(np.int16)))
        elif pt == 9:
            dec = dec or G722.G722(RATE, 64000)
            out.append((t, RATE, np.asarray(dec.decode(body), dtype=np.int16)))
    return out


def _upsample(x: np.ndarray, factor: int) -> np.ndarray:
    """Integer-factor upsampling: zero-stuff and a windowed-sinc low-pass."""
    if factor == 1:
        return x.astype(np.float64)
    up = np.zeros(len(x) * factor)
    up[::factor] = x
    taps = np.arange(-16 * factor, 16 * factor + 1)
    h = np.sinc(taps / factor) * np.hamming(len(taps))
    return np.convolve(up, h, "same")


def timeline(chunks: list[tuple[float, int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One continuous 16 kHz signal and, per sample, the time of the packet that carried it."""
    sig, tt = [], []
    for t, rate, pcm in chunks:
        factor = RATE // rate if rate in (8000, 16000) else 0
        if not factor:
            continue
        sig.append(_upsample(pcm.astype(np.float64), factor))
        tt.append(np.full(len(pcm) * factor, t))
    if not sig:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(sig), np.concatenate(tt)


def modelled_playout(chunks: list[tuple[float, int, np.ndarray]], flushes: list[float] = [],
                     frame: int = 320) -> list[tuple[float, int, np.ndarray]]:
    """
    Each 20 ms frame sent to Asterisk's chan_websocket queue, re-dated to
    when it plays (one per 20 ms); a FLUSH_MEDIA at time tf drops the frames
    that would have started after tf (never heard).
    """
    out: list[tuple[float, int, np.ndarray]] = []
    play = -1.0
    pending = sorted(flushes)
    for t, rate, pcm in chunks:
        while pending and pending[0] <= t:
            tf = pending.pop(0)
            while out and out[-1][0] > tf:
                out.pop()
            play = out[-1][0] if out else -1.0
        for i in range(0, len(pcm), frame):
            play = max(t, play + frame / rate)
            out.append((play, rate, pcm[i:i + frame]))
    return out


def _find(x: np.ndarray, piece: np.ndarray) -> tuple[float, int]:
    """Best normalised correlation of ``piece`` in ``x`` and where."""
    n = len(piece)
    if len(x) < n:
        return 0.0, 0
    corr = lab._correlate(x, piece)
    power = np.concatenate(([0.0], np.cumsum(x ** 2)))
    win = power[n:] - power[:-n]
    nc = np.where(win > n * 100.0, corr / np.sqrt(np.maximum(win, 1.0) * np.sum(piece ** 2)), 0.0)
    at = int(np.argmax(nc))
    return float(nc[at]), at


def through(inp: tuple[np.ndarray, np.ndarray], outp: tuple[np.ndarray, np.ndarray], prompt: str,
            threshold: float = 0.7) -> list[float]:
    """Per voiced quarter second of ``prompt``: out time - in time of its samples (median), seconds."""
    ref = lab.sound(prompt)
    (xi, ti), (xo, to) = inp, outp
    n = RATE // 4
    found = []
    for start in range(0, len(ref) - n + 1, n):
        piece = ref[start:start + n]
        if np.sqrt(np.mean(piece ** 2)) < 300:
            continue
        ci, i = _find(xi, piece)
        co, j = _find(xo, piece)
        if ci > threshold and co > threshold:
            found.append(float(np.median(to[j:j + n] - ti[i:i + n])))
    return found


def wire_delays(pcap: Path) -> dict[str, Any]:
    pkts = read_pcap(pcap)
    out: dict[str, Any] = {}
    for label, (_, _, _, kind, pa, pb) in PAIRS.items():
        if kind == "rtp":
            a_in, b_out = rtp_chunks(pkts, 0, pa), rtp_chunks(pkts, pb, 0)
            b_in, a_out = rtp_chunks(pkts, 0, pb), rtp_chunks(pkts, pa, 0)
        else:
            get = audiosocket_chunks if kind == "as" else websocket_chunks
            # Asterisk -> xlbridge is (its ephemeral port -> ours): find it.
            peer = {p: next((sp for _, pr, sp, dp, _, _ in pkts if pr == 6 and dp == p), 0) for p in (pa, pb)}
            a_in, b_in = get(pkts, peer[pa], pa), get(pkts, peer[pb], pb)
            if kind == "ws":
                b_texts: list[tuple[float, str]] = []
                a_texts: list[tuple[float, str]] = []
                b_out, a_out = websocket_chunks(pkts, pb, peer[pb], b_texts), websocket_chunks(pkts, pa, peer[pa], a_texts)
            else:
                b_out, a_out = get(pkts, pb, peer[pb]), get(pkts, pa, peer[pa])
        res = {
            "ab": through(timeline(a_in), timeline(b_out), PROMPT_A),
            "ba": through(timeline(b_in), timeline(a_out), PROMPT_B),
            "frames": {"a_in": len(a_in), "b_out": len(b_out), "b_in": len(b_in), "a_out": len(a_out)},
        }
        if kind == "ws":
            b_flush = [t for t, x in b_texts if x.startswith("FLUSH_MEDIA") or '"FLUSH_MEDIA"' in x]
            a_flush = [t for t, x in a_texts if x.startswith("FLUSH_MEDIA") or '"FLUSH_MEDIA"' in x]
            res["heard_ab"] = through(timeline(a_in), timeline(modelled_playout(b_out, b_flush)), PROMPT_A)
            res["heard_ba"] = through(timeline(b_in), timeline(modelled_playout(a_out, a_flush)), PROMPT_B)
            res["flushes"] = {"to_b": len(b_flush), "to_a": len(a_flush)}
            res["commands"] = sorted({x.split()[0] if not x.startswith("{") else x[:40] for _, x in a_texts + b_texts})
        out[label] = res
    return out


# --------------------------------------------------------------------------
# translated speech (--translate)


def playbacks(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per pair, the first utterance played to b (caller a's English sentence, in Spanish)."""
    out: dict[str, Any] = {}
    listeners = {"rtp": "8888", "as_app": "7001", "as_em": "7005", "ws": "7003"}
    for label, ext in listeners.items():
        started = [e for e in events if e.get("event") == "PlaybackStarted" and e.get("extension") == ext]
        if started:
            e = started[0]
            out[label] = {k: e.get(k) for k in ("total_ms", "asr_ms", "mt_ms", "tts_first_byte_ms", "queue_wait_ms",
                                                "text", "utterance")}
            out[label]["utterances"] = len(started)
    return out


def summarise_translate(runs: list[dict[str, Any]]) -> str:
    lines = ["| transport | runs | end of speech -> first heard, median ms | p90 ms | queue wait (first audio -> "
             "heard) median ms | p90 ms | ASR median ms | TTS first byte median ms |",
             "|---|---|---|---|---|---|---|---|"]
    for label, (what, *_r) in PAIRS.items():
        ps = [r["playback"][label] for r in runs if label in r.get("playback", {})]
        def col(k: str) -> list[float]:
            return [p[k] for p in ps if p.get(k) is not None]
        lines.append(f"| {what} | {len(ps)}/{len(runs)} | {pctl(col('total_ms'), 50):.0f} | {pctl(col('total_ms'), 90):.0f} "
                     f"| {pctl(col('queue_wait_ms'), 50):.0f} | {pctl(col('queue_wait_ms'), 90):.0f} | "
                     f"{pctl(col('asr_ms'), 50):.0f} | {pctl(col('tts_first_byte_ms'), 50):.0f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# summary


def pctl(vals: list[float], p: float) -> float:
    return float(np.percentile(vals, p)) if vals else float("nan")


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for label, (what, *_rest) in PAIRS.items():
        trips = [r["lab"][label]["round_trip_s"] * 1000 for r in runs if "round_trip_s" in r["lab"].get(label, {})]
        # one value per run and direction: the median of its pieces
        wire = [1000 * float(np.median(v)) for r in runs for key in ("ab", "ba")
                if (v := r["wire"].get(label, {}).get(key))]
        heard = [1000 * float(np.median(v)) for r in runs for key in ("heard_ab", "heard_ba")
                 if (v := r["wire"].get(label, {}).get(key))]
        rows.append({
            "label": label, "what": what, "runs": len(trips), "failed": len(runs) - len(trips),
            "round_trip_ms": {"median": pctl(trips, 50), "p90": pctl(trips, 90), "all": [round(x, 1) for x in trips]},
            "one_way_ms": {"median": pctl(trips, 50) / 2, "p90": pctl(trips, 90) / 2},
            "wire_ms": {"median": pctl(wire, 50), "p90": pctl(wire, 90), "n": len(wire),
                        "all": [round(x, 1) for x in wire]},
            "wire_heard_ms": {"median": pctl(heard, 50), "p90": pctl(heard, 90), "n": len(heard),
                              "all": [round(x, 1) for x in heard]} if heard else None,
        })
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| transport | runs ok | round trip median ms | round trip p90 ms | one way (half) median | "
             "one way p90 | wire through xlbridge median ms | wire p90 ms | run x direction values |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['runs']}/{r['runs'] + r['failed']} | {r['round_trip_ms']['median']:.1f} | "
            f"{r['round_trip_ms']['p90']:.1f} | {r['one_way_ms']['median']:.1f} | {r['one_way_ms']['p90']:.1f} | "
            f"{r['wire_ms']['median']:.1f} | {r['wire_ms']['p90']:.1f} | {r['wire_ms']['n']} |")
        if r["wire_heard_ms"]:
            h = r["wire_heard_ms"]
            lines.append(f"| ... ws modelled heard (sent + Asterisk queue) | | | | | | {h['median']:.1f} | "
                         f"{h['p90']:.1f} | {h['n']} |")
    return "\n".join(lines)


def main(reactor: Any, argv: list[str]) -> Any:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="runs (fresh xlbridge each) [7]")
    ap.add_argument("--delay", type=float, default=3.0,
                    help="s after the beep before caller a speaks; b speaks 1.5 s later [3]")
    ap.add_argument("--hold", type=float, default=6.0, help="s each caller stays after speaking [6]")
    ap.add_argument("--out", default=str(HERE / "out" / "transport_delay"), help="output folder")
    ap.add_argument("--keep-pcap", action="store_true", help="keep each run's capture (OUT/runK/lo.pcap)")
    ap.add_argument("--reanalyse", action="store_true", help="only re-read the kept captures in OUT")
    ap.add_argument("--translate", action="store_true",
                    help="--engines local instead of relay: end of speech to first translated frame heard, "
                         "from the events' PlaybackStarted (on WebSocket dated by Asterisk's marks)")
    ap.add_argument("--stagger", type=float, default=8.0,
                    help="with --translate: s between the pairs' sentences [8]")
    ns = ap.parse_args(argv)
    out = Path(ns.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    if ns.reanalyse:
        runs = json.loads((out / "results.json").read_text())["runs"]
        for r in runs:
            pcap = out / f"run{r['run']}" / "lo.pcap"
            if pcap.exists():
                r["wire"] = wire_delays(pcap)
        return _finish(ns, out, runs, json.loads((out / "results.json").read_text())["machine"])
    why = lab.unavailable()
    if why:
        raise SystemExit(why)
    if os.geteuid() != 0:
        raise SystemExit("needs root (tcpdump)")
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(), "argv": sys.argv, "code": code_state(str(ROOT))}
    return _run(reactor, ns, out, info)


@inlineCallbacks
def _run(reactor: Any, ns: argparse.Namespace, out: Path, info: dict[str, Any]) -> Any:
    release = lab.hold_lab()
    pool = lab.new_pool()
    runs = []
    try:
        for k in range(ns.runs):
            rec = yield one_run(reactor, k, ns, out)
            runs.append(rec)
            brief = {l: round(v.get("round_trip_s", float("nan")) * 1000, 1) for l, v in rec.get("lab", {}).items()}
            if ns.translate:
                brief = {l: v.get("total_ms") for l, v in rec["playback"].items()}
            print(f"run {k}: {'playback total' if ns.translate else 'round trips'} ms {brief}", flush=True)
    finally:
        yield pool.closeCachedConnections()
        release()
    _finish(ns, out, runs, info)


def _finish(ns: argparse.Namespace, out: Path, runs: list[dict[str, Any]], info: dict[str, Any]) -> None:
    if ns.translate:
        text = summarise_translate(runs)
        (out / "results.json").write_text(json.dumps({"machine": info, "runs": runs}, indent=1))
        print(text)
        print(f"wrote {out / 'results.json'}")
        return
    rows = summarise(runs)
    (out / "results.json").write_text(json.dumps({"machine": info, "rows": rows, "runs": runs}, indent=1))
    print(table(rows))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    task.react(lambda reactor: defer.maybeDeferred(main, reactor, sys.argv[1:]))
