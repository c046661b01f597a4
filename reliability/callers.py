"""
Simulated RTP callers for the fault runner: N translated calls (pairs of
legs ``BASE+2i`` English and ``BASE+2i+1`` Spanish) that take turns
speaking tone-word phrases the fake Deepgram understands, while recording
what each caller hears and when every packet reached it.

Why not :class:`xlbridge.tools.phone.Phone`: a phone plays one recording
and keeps all audio; the fault run lasts tens of minutes with 40+ legs, so
this keeps only what the analysis needs (per-packet kernel arrival times,
the words heard, the phrases said) and reads arrival times from the
kernel (``SO_TIMESTAMPNS``), so its own scheduling delays on a loaded
machine do not show up as egress jitter of the bridge.

Run by :mod:`reliability.faults` as ``python -m reliability.callers --calls
22 --base 20000 --duration 900 --schedule S.json --out OUT.npz``; it writes
``OUT.npz`` (arrival times per leg) and ``OUT.json`` (said / heard).
Times are Unix seconds (``time.time()`` and kernel ``CLOCK_REALTIME``).

``--dtx``: between phrases (after 600 ms of trailing silence) a leg sends
one silent packet per 500 ms instead of one per 20 ms (discontinuous
transmission, unlike Asterisk): a quarter of the ingress work for the
bridge, the fake recogniser and this process on a shared machine.  The
bridge's egress (one packet per leg per 20 ms) is unchanged.

Schedule file (JSON): ``{"silent": [[ext, from_s, to_s], ...]}``: the leg
sends nothing during that wall-clock window (so its call ends by
inactivity and a new one starts after it).
"""

from __future__ import annotations

import argparse
import array
import json
import os
import random
import socket
import struct
import sys
import time
from typing import Any, Optional

import numpy as np

from tests.fakes import tonewords

FRAME = 320  # samples per 20 ms at 16 kHz
PT_SLIN16 = 118
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS

#: English phrases (all words in the tone vocabulary, translatable by the fake DeepL).
EN_PHRASES = ["hello world", "how are you", "good morning", "thank you", "where is the hospital",
              "one two three", "how are you today", "yes", "hello today", "bye"]
#: Spanish phrases: the translations of EN_PHRASES rotated by 3, so that with
#: turns 3 s apart no caller says within 8 s what it was just played (the
#: bridge's text echo guard would drop it: checked with the guard's own
#: similarity for every phrase of a run).
ES_PHRASES = ["gracias", "donde esta el hospital", "uno dos tres", "como estas tu hoy", "si", "hola hoy",
              "adios", "hola mundo", "como estas tu", "buenos dias"]

LOUD = 0.05 * tonewords.LEVEL * 32768.0  # rms threshold of a word frame (int16 units)


class Leg:
    """One simulated caller: sends RTP to the bridge, records what comes back."""

    def __init__(self, ext: int, lang: str, bridge: tuple[str, int], offset_s: float, period_s: float,
                 silent: list[tuple[float, float]]) -> None:
        self.ext = ext
        self.lang = lang
        self.bridge = bridge
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.seq = random.randrange(1 << 16)
        self.ts = random.randrange(1 << 32)
        self.ssrc = random.randrange(1 << 32)
        self.offset_s = offset_s
        self.period_s = period_s
        self.silent = silent
        self.phrases = EN_PHRASES if lang == "en" else ES_PHRASES
        self.n_phrase = 0
        self.next_phrase_at: Optional[float] = None
        self.speech: Optional[np.ndarray] = None  # big-endian int16 of the phrase being said
        self.pos = 0
        self.said: list[list[Any]] = []  # [start, end, text]
        self.arrivals = array.array("d")
        self.heard: list[list[Any]] = []  # [time, word]
        self._run: list[np.ndarray] = []
        self._run_t = 0.0
        self.sent = 0
        self.received = 0
        self.dtx = False
        self.quiet_n = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return f"leg-{self.ext}"

    def connectionLost(self, reason: Any) -> None:
        pass

    def quiet(self, now: float) -> bool:
        return any(a <= now < b for a, b in self.silent)

    def frame(self, now: float) -> Optional[bytes]:
        """The payload of the next packet (big-endian slin16), or None to send nothing."""
        if self.quiet(now):
            self.speech = None
            return None
        if self.next_phrase_at is None:
            self.next_phrase_at = now + self.offset_s
        if self.speech is None and now >= self.next_phrase_at:
            text = self.phrases[self.n_phrase % len(self.phrases)]
            self.n_phrase += 1
            # the phrase, then 600 ms of silence so the recogniser's endpointing sees its end
            self.speech = np.concatenate([tonewords.encode_words(text),
                                          np.zeros(16000 * 6 // 10, dtype=np.int16)]).astype(">i2")
            self.pos = 0
            self.said.append([now, now + (len(self.speech) - 16000 * 6 // 10) / 16000.0, text])
            self.next_phrase_at += self.period_s
            while self.next_phrase_at < now:
                self.next_phrase_at += self.period_s
        if self.speech is not None:
            if self.pos >= len(self.speech):  # the phrase's trailing silence is over
                self.speech = None
                self.quiet_n = 0
                return SILENCE
            chunk = self.speech[self.pos:self.pos + FRAME]
            self.pos += FRAME
            if len(chunk) < FRAME:
                chunk = np.concatenate([chunk, np.zeros(FRAME - len(chunk), dtype=">i2")])
            return chunk.tobytes()
        if self.dtx:
            # discontinuous transmission between phrases: one packet per
            # 500 ms keeps the call (and the latch) alive at a quarter of the cost
            self.quiet_n += 1
            return SILENCE if self.quiet_n % 25 == 1 else None
        return SILENCE

    def send(self, now: float) -> None:
        payload = self.frame(now)
        # The RTP clock runs on in silence, as Asterisk's does.
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + FRAME) & 0xFFFFFFFF
        if payload is None:
            return
        header = struct.pack("!BBHII", 0x80, PT_SLIN16, self.seq, self.ts, self.ssrc)
        try:
            self.sock.sendto(header + payload, self.bridge)
            self.sent += 1
        except OSError:
            pass

    def doRead(self) -> None:
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(2048, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            t = time.time()
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    t = sec + nsec * 1e-9
            self.received += 1
            self.arrivals.append(t)
            if len(data) < 12:
                continue
            cc = data[0] & 0x0F
            off = 12 + 4 * cc
            if data[0] & 0x10 and len(data) >= off + 4:
                off += 4 + 4 * struct.unpack("!H", data[off + 2:off + 4])[0]
            samples = np.frombuffer(data[off:off + 2 * FRAME], dtype=">i2").astype(np.int16)
            self._hear(t, samples)

    def _hear(self, t: float, samples: np.ndarray) -> None:
        rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
        if rms > LOUD and len(self._run) < 150:
            if not self._run:
                self._run_t = t
            self._run.append(samples)
            return
        if self._run:
            run, self._run = self._run, []
            if len(run) >= 5:
                pad = np.zeros(FRAME, dtype=np.int16)
                for w in tonewords.decode_words(np.concatenate([pad, *run, pad])):
                    self.heard.append([round(self._run_t, 4), w])


SILENCE = bytes(2 * FRAME)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reliability.callers", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=22)
    p.add_argument("--base", type=int, default=20000, help="first extension (= UDP port of the bridge)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--period", type=float, default=6.0, help="seconds between a caller's phrases")
    p.add_argument("--duration", type=float, required=True, help="seconds to run")
    p.add_argument("--schedule", default=None, help="JSON schedule (silent windows)")
    p.add_argument("--out", required=True, help="output path without extension")
    p.add_argument("--dtx", action="store_true",
                   help="between phrases send one silent packet per 500 ms instead of one per 20 ms "
                        "(saves CPU on a shared machine; the bridge's egress is unaffected)")
    args = p.parse_args(argv)
    from twisted.internet import reactor, task

    silent: dict[int, list[tuple[float, float]]] = {}
    if args.schedule:
        for ext, a, b in json.load(open(args.schedule)).get("silent", []):
            silent.setdefault(int(ext), []).append((float(a), float(b)))
    legs = []
    for i in range(args.calls):
        base_off = i * args.period / args.calls  # spread the calls' speech over the period
        for j, lang in enumerate(("en", "es")):
            ext = args.base + 2 * i + j
            off = base_off + j * args.period / 2  # the two callers take turns
            legs.append(Leg(ext, lang, (args.host, ext), off, args.period, silent.get(ext, [])))
    for leg in legs:
        leg.dtx = args.dtx
        reactor.addReader(leg)  # type: ignore[attr-defined]
    start = time.time()
    state = {"next": start}

    def tick() -> None:
        now = time.time()
        n = 0
        # Keep a 20 ms cadence by wall clock; catch up at most 3 packets.
        while state["next"] <= now and n < 3:
            for leg in legs:
                leg.send(state["next"])
            state["next"] += 0.020
            n += 1
        if state["next"] <= now:
            state["next"] = now + 0.020
        if now - start >= args.duration:
            finish()

    loop = task.LoopingCall(tick)

    def finish() -> None:
        if loop.running:
            loop.stop()
        for leg in legs:
            reactor.removeReader(leg)  # type: ignore[attr-defined]
        np.savez_compressed(args.out + ".npz",
                            **{str(leg.ext): np.frombuffer(leg.arrivals, dtype=np.float64) for leg in legs})
        out = {"start": start, "end": time.time(), "calls": args.calls, "base": args.base,
               "period": args.period,
               "legs": {str(leg.ext): {"lang": leg.lang, "said": leg.said, "heard": leg.heard,
                                       "sent": leg.sent, "received": leg.received} for leg in legs}}
        tmp = args.out + ".json.tmp"
        with open(tmp, "w") as f:
            json.dump(out, f)
        os.replace(tmp, args.out + ".json")
        reactor.stop()  # type: ignore[attr-defined]

    loop.start(0.005)
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
