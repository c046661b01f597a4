"""
Timing probes for ``bench/pipeline_latency.py``: wrap a few xlbridge methods
in the benchmark process (nothing in xlbridge is edited) and record
``time.perf_counter`` stamps.

What is wrapped, and why:

* ``RTPEndpoint.datagramReceived``: entry time of every inbound RTP packet
  (also the reactor time, for "end of speech" by RTP sequence number).
* ``DeepgramClientProtocol.sendMessage``: the WebSocket write of an audio
  message.  With the socket open it happens synchronously inside
  ``datagramReceived`` (packet -> decode -> pipeline -> ASR.feed -> spool ->
  sendMessage), so the write is attributed to the packet being handled.
* the Deepgram connection's TCP transport (``write`` / ``writeSomeData``,
  per instance): Twisted buffers ``write`` and calls ``send()`` later, from
  the reactor's write-readiness loop; byte counting attributes each kernel
  hand-off to the audio message it completes ("ingress -> kernel send").
* ``SpeechQueue.add``: which queue an :class:`Utterance` belongs to.
* ``Utterance.add``: a TTS chunk reaches the pipeline (``on_audio``).
* ``SpeechQueue.read_frame`` + ``RTPEndpoint.send_frame``: which samples of
  which utterance each egress frame carried, and when that RTP packet was
  written (UDP ``sendto`` is synchronous in Twisted).
* ``EgressClock._tick``: lateness of every egress tick.
"""

from __future__ import annotations

import collections
import gc
import fcntl
import struct
from time import perf_counter
from typing import Any, Optional

from xlbridge.audio.frame import FRAME_SAMPLES
from xlbridge.audio.mix import SpeechQueue, Utterance
from xlbridge.egress import EgressClock
from xlbridge.engines.deepgram.connection import DeepgramConnection
from xlbridge.engines.deepgram.protocol import DeepgramClientProtocol
from xlbridge.transports.rtp import RTPEndpoint

# Ingress record fields (a list per packet, filled in place).
EXT, SEQ, T_IN, R_IN, T_WS0, T_WS1, NMSG, T_EXIT, T_KERNEL, NOTSENT = range(10)

#: Linux ioctl: bytes in a TCP socket's send queue not yet sent (held by
#: Nagle, cwnd or the peer's window); read right after each ``send()``.
SIOCOUTQNSD = 0x894B
# Egress frame record fields.
F_UTT, F_C0, F_C1, F_T_READ, F_T_SENT, F_R_SENT, F_EXT = range(7)


class _TCPAccount:
    """Bytes handed to one TCP transport vs bytes the kernel accepted."""

    def __init__(self, transport: Any) -> None:
        pending = (len(transport.dataBuffer) - transport.offset) + transport._tempDataLen
        self.enqueued = pending
        self.flushed = 0
        self.waiting: collections.deque[tuple[int, list[Any]]] = collections.deque()



def _timed(call: Any, windows: list[list[Optional[float]]]) -> Any:
    """``call`` (returning a Deferred), recording ``[start, end]`` of each request in ``windows``."""

    def timed(*a: Any, **kw: Any) -> Any:
        w: list[Optional[float]] = [perf_counter(), None]
        windows.append(w)

        def end(r: Any) -> Any:
            w[1] = perf_counter()
            return r

        return call(*a, **kw).addBoth(end)

    return timed

class Probe:
    def __init__(self, reactor: Any, nodelay: str = "keep") -> None:
        self.reactor = reactor
        #: experiment: ``keep`` TCP_NODELAY on the Deepgram socket as xlbridge
        #: set it, or force it ``on`` / ``off`` when the socket opens
        #: (``off`` reproduces xlbridge before de84f88, see BENCHMARKS.md)
        self.nodelay = nodelay
        #: TCP_NODELAY as found on each Deepgram socket when it opened
        self.nodelay_seen: list[bool] = []
        self.cur: Optional[list[Any]] = None
        self.ingress: list[list[Any]] = []
        self.accounts: dict[int, _TCPAccount] = {}
        self.queue_of: dict[int, SpeechQueue] = {}
        # chunk: (utterance, t_add, r_add, first_sample, n, buffered_before, ahead_other, at_head)
        self.chunks: list[tuple[Any, ...]] = []
        self.frames: list[list[Any]] = []
        self.consumed: dict[int, int] = {}
        self.pending_send: Optional[list[Any]] = None
        self.tick_lateness: list[float] = []
        #: perf_counter of each tick (same order as tick_lateness)
        self.tick_times: list[float] = []
        #: ticks after this are not recorded (the phones' reports are built
        #: on the reactor thread at the end of a run and stall it)
        self.ticks_closed = False
        #: (start, end, generation) of every garbage collection
        self.gc_pauses: list[tuple[float, float, int]] = []
        self._gc_start = 0.0
        #: (start, end) of MT and TTS requests in flight (pool threads / sockets)
        self.mt_windows: list[list[Optional[float]]] = []
        self.tts_windows: list[list[Optional[float]]] = []
        self._orig: list[tuple[Any, str, Any]] = []

    # -- install / uninstall --------------------------------------------------

    def _patch(self, cls: Any, name: str, new: Any) -> Any:
        orig = cls.__dict__.get(name)
        found = getattr(cls, name)
        self._orig.append((cls, name, orig))
        setattr(cls, name, new)
        return found

    def install(self) -> None:
        probe = self
        clock = self.reactor

        orig_dr = self._patch(RTPEndpoint, "datagramReceived", None)

        def datagramReceived(ep: RTPEndpoint, data: bytes, addr: Any) -> None:
            t = perf_counter()
            seq = ((data[2] << 8) | data[3]) if len(data) >= 4 else -1
            rec = [ep.extension, seq, t, clock.seconds(), None, None, 0, 0.0, None, None]
            probe.cur = rec
            try:
                orig_dr(ep, data, addr)
            finally:
                rec[T_EXIT] = perf_counter()
                probe.cur = None
                probe.ingress.append(rec)

        setattr(RTPEndpoint, "datagramReceived", datagramReceived)

        orig_sm = self._patch(DeepgramClientProtocol, "sendMessage", None)

        def sendMessage(proto: Any, payload: bytes, isBinary: bool = False, *a: Any, **kw: Any) -> Any:
            cur = probe.cur
            if cur is None or not isBinary:
                return orig_sm(proto, payload, isBinary, *a, **kw)
            t0 = perf_counter()
            r = orig_sm(proto, payload, isBinary, *a, **kw)
            t1 = perf_counter()
            if cur[T_WS0] is None:
                cur[T_WS0] = t0
            cur[T_WS1] = t1
            cur[NMSG] += 1
            acct = probe.accounts.get(id(proto.transport))
            if acct is not None:
                acct.waiting.append((acct.enqueued, cur))
            return r

        setattr(DeepgramClientProtocol, "sendMessage", sendMessage)

        orig_open = self._patch(DeepgramConnection, "ws_open", None)

        def ws_open(conn: DeepgramConnection, proto: Any) -> None:
            t = proto.transport
            try:
                probe.nodelay_seen.append(bool(t.getTcpNoDelay()))
                if probe.nodelay != "keep":
                    t.setTcpNoDelay(probe.nodelay == "on")
            except Exception:
                pass
            probe._account(t)
            orig_open(conn, proto)

        setattr(DeepgramConnection, "ws_open", ws_open)

        orig_qadd = self._patch(SpeechQueue, "add", None)

        def queue_add(q: SpeechQueue, u: Utterance) -> Utterance:
            probe.queue_of[id(u)] = q
            return orig_qadd(q, u)

        setattr(SpeechQueue, "add", queue_add)

        orig_uadd = self._patch(Utterance, "add", None)

        def utt_add(u: Utterance, samples: Any) -> None:
            t = perf_counter()
            r = clock.seconds()
            first = u.received_samples
            buffered = len(u)
            q = probe.queue_of.get(id(u))
            ahead = 0
            at_head = True
            if q is not None:
                for i, x in enumerate(q):
                    if x is u:
                        at_head = i == 0
                        break
                    ahead += len(x)
            orig_uadd(u, samples)
            probe.chunks.append((u, t, r, first, u.received_samples - first, buffered, ahead, at_head))

        setattr(Utterance, "add", utt_add)

        orig_read = self._patch(SpeechQueue, "read_frame", None)

        def read_frame(q: SpeechQueue, now: float, n: int = FRAME_SAMPLES) -> Any:
            snap = [(x, len(x)) for x in q._queue]
            t = perf_counter()
            frame = orig_read(q, now, n)
            if frame is not None:
                for x, before in snap:
                    took = before - len(x)
                    if took > 0:
                        c0 = probe.consumed.get(id(x), 0)
                        probe.consumed[id(x)] = c0 + took
                        rec = [x, c0, c0 + took, t, None, None, None]
                        probe.frames.append(rec)
                        probe.pending_send = rec
                        break
            return frame

        setattr(SpeechQueue, "read_frame", read_frame)

        orig_send = self._patch(RTPEndpoint, "send_frame", None)

        def send_frame(ep: RTPEndpoint, samples: Any, speech: Optional[bool] = None) -> None:
            r = orig_send(ep, samples, speech)
            rec = probe.pending_send
            if rec is not None:
                probe.pending_send = None
                rec[F_T_SENT] = perf_counter()
                rec[F_R_SENT] = clock.seconds()
                rec[F_EXT] = ep.extension
            return r

        setattr(RTPEndpoint, "send_frame", send_frame)

        orig_tick = self._patch(EgressClock, "_tick", None)

        def _tick(eg: EgressClock, count: int) -> None:
            orig_tick(eg, count)
            if not probe.ticks_closed:
                probe.tick_lateness.append(eg.last_lateness)
                probe.tick_times.append(perf_counter())

        setattr(EgressClock, "_tick", _tick)

        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = perf_counter()
        else:
            self.gc_pauses.append((self._gc_start, perf_counter(), int(info.get("generation", -1))))

    def wrap_engines(self, engines: Any) -> None:
        """Record when MT and TTS requests are in flight (instance wrappers)."""
        mt, tts = engines.mt, engines.tts
        mt.translate = _timed(mt.translate, self.mt_windows)
        tts.synthesize = _timed(tts.synthesize, self.tts_windows)

    def uninstall(self) -> None:
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)
        for cls, name, orig in reversed(self._orig):
            if orig is None:
                delattr(cls, name)
            else:
                setattr(cls, name, orig)
        self._orig = []

    # -- TCP byte accounting ---------------------------------------------------

    def _account(self, transport: Any) -> None:
        if transport is None or id(transport) in self.accounts:
            return
        acct = _TCPAccount(transport)
        self.accounts[id(transport)] = acct
        orig_write = transport.write
        orig_seq = transport.writeSequence
        orig_some = transport.writeSomeData
        try:
            fd = transport.socket.fileno()
        except Exception:
            fd = None

        def notsent() -> Optional[int]:
            if fd is None:
                return None
            try:
                return struct.unpack("i", fcntl.ioctl(fd, SIOCOUTQNSD, b"\0\0\0\0"))[0]
            except OSError:
                return None

        def write(data: bytes) -> None:
            acct.enqueued += len(data)
            orig_write(data)

        def writeSequence(seq: Any) -> None:
            seq = list(seq)
            acct.enqueued += sum(len(s) for s in seq)
            orig_seq(seq)

        def writeSomeData(data: Any) -> Any:
            n = orig_some(data)
            if isinstance(n, int) and n > 0:
                acct.flushed += n
                t = perf_counter()
                held = None
                w = acct.waiting
                while w and w[0][0] <= acct.flushed:
                    rec = w.popleft()[1]
                    if rec[T_KERNEL] is None:
                        rec[T_KERNEL] = t
                        if held is None:
                            held = notsent()
                        rec[NOTSENT] = held
            return n

        transport.write = write
        transport.writeSequence = writeSequence
        transport.writeSomeData = writeSomeData
