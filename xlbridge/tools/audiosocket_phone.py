"""
A simulated Asterisk AudioSocket leg, for tests and manual checks.

It plays Asterisk's part: connects to xlbridge's TCP port, sends the 0x01
UUID message, then one audio message every 20 ms (kind 0x12 slin16 like
ExternalMedia ``format=slin16``, or 0x10 like the ``AudioSocket()`` app),
records every message that comes back, and finally hangs up (0x00, then
close).  Header lengths are big-endian, audio little-endian
(:mod:`xlbridge.transports.audiosocket_codec`).
"""

from __future__ import annotations

import uuid as _uuid
from typing import Any, Optional

import attrs
import numpy as np
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from xlbridge.audio.frame import FRAME_MS, SAMPLE_RATE, Samples
from xlbridge.audio.pcm16 import from_little_endian, little_endian_bytes
from xlbridge.audio.resample import StreamResampler
from xlbridge.transports.audiosocket_codec import (
    AUDIO_RATES,
    HANGUP,
    KIND_HANGUP,
    Frame,
    FrameDecoder,
    encode,
    uuid_frame,
)


@attrs.frozen
class AudioSocketReport:
    """
    What one AudioSocket phone sent and heard.

    :ivar audio: every audio payload received, concatenated, at the rate of
        its kind (native-order int16).
    :ivar kinds: kinds of the audio messages received.
    :ivar sizes: payload sizes of the audio messages received.
    :ivar hangup_received: the bridge sent 0x00.
    :ivar closed_by_peer: the bridge closed the connection before we hung up.
    """

    call_id: str
    frames_sent: int
    frames_received: int
    audio: Samples
    kinds: frozenset[int]
    sizes: frozenset[int]
    malformed: int
    hangup_received: bool
    closed_by_peer: bool


class AudioSocketPhone(Protocol):
    """
    One simulated AudioSocket connection; connect it with :func:`connect`.

    :param clock: time source and scheduler.
    :param audio: what to send, 16 kHz mono int16 (resampled to the rate of
        ``kind`` when that is not 0x12).
    :param call_id: the UUID to announce; random by default.
    :param kind: audio kind to send (0x10..0x18).
    :param tail: seconds to keep listening after the last frame.
    :param hangup: send 0x00 and close at the end (else just close).
    """

    def __init__(
        self,
        clock: IReactorTime,
        audio: Samples,
        call_id: Optional[str] = None,
        kind: int = 0x12,
        tail: float = 0.5,
        hangup: bool = True,
    ) -> None:
        if kind not in AUDIO_RATES:
            raise ValueError(f"0x{kind:02x} is not an AudioSocket audio kind")
        self.clock = clock
        self.kind = kind
        self.rate = AUDIO_RATES[kind]
        self.call_id = call_id or str(_uuid.uuid4())
        self.tail = tail
        self.hangup = hangup
        wire = StreamResampler(SAMPLE_RATE, self.rate).process(np.asarray(audio, dtype=np.int16))
        step = self.rate * FRAME_MS // 1000
        n = -(-len(wire) // step)
        padded = np.zeros(n * step, dtype=np.int16)
        padded[: len(wire)] = wire
        self.frames = [padded[i * step : (i + 1) * step] for i in range(n)]
        self.done: Deferred[AudioSocketReport] = Deferred()
        self._decoder = FrameDecoder()
        self._received: list[Frame] = []
        self._malformed = 0
        self._hangup_received = False
        self._closed_by_peer = False
        self._sent = 0
        self._start = 0.0
        self._loop: Optional[LoopingCall] = None
        self._tail: Optional[IDelayedCall] = None
        self._finished = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(uuid_frame(self.call_id))
        self._start = self.clock.seconds()
        loop = LoopingCall(self._tick)
        loop.clock = self.clock
        self._loop = loop
        loop.start(FRAME_MS / 1000.0, now=True)

    def _tick(self) -> None:
        # Send every frame that is due (LoopingCall skips missed intervals).
        due = int((self.clock.seconds() - self._start) / (FRAME_MS / 1000.0) + 1e-6) + 1
        while self._sent < min(due, len(self.frames)) and self.transport is not None:
            self.transport.write(encode(self.kind, little_endian_bytes(self.frames[self._sent])))
            self._sent += 1
        if self._sent >= len(self.frames) and self._loop is not None:
            self._loop.stop()
            self._loop = None
            self._tail = self.clock.callLater(self.tail, self._end)

    def _end(self) -> None:
        self._tail = None
        if self.transport is not None and not self._finished:
            if self.hangup:
                self.transport.write(HANGUP)
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        for token in self._decoder.feed(data):
            if not isinstance(token, Frame):
                self._malformed += 1
            elif token.kind == KIND_HANGUP:
                self._hangup_received = True
            elif token.rate is not None:
                self._received.append(token)
            else:
                self._malformed += 1  # Asterisk would reject any other kind

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        if self._tail is not None:
            self._closed_by_peer = True
            if self._tail.active():
                self._tail.cancel()
            self._tail = None
        elif self._sent < len(self.frames):
            self._closed_by_peer = True
        self._finished = True
        self.done.callback(self.report())

    def report(self) -> AudioSocketReport:
        """
        What was sent and heard so far.
        """
        audio = [from_little_endian(f.payload) for f in self._received]
        return AudioSocketReport(
            call_id=self.call_id,
            frames_sent=self._sent,
            frames_received=len(self._received),
            audio=np.concatenate(audio) if audio else np.zeros(0, dtype=np.int16),
            kinds=frozenset(f.kind for f in self._received),
            sizes=frozenset(len(f.payload) for f in self._received),
            malformed=self._malformed,
            hangup_received=self._hangup_received,
            closed_by_peer=self._closed_by_peer,
        )


class _OneShot(ClientFactory):
    noisy = False

    def __init__(self, phone: AudioSocketPhone) -> None:
        self.phone = phone

    def buildProtocol(self, addr: Optional[IAddress]) -> AudioSocketPhone:
        return self.phone

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.phone.done.errback(reason)


def connect(reactor: Any, host: str, port: int, phone: AudioSocketPhone) -> "Deferred[AudioSocketReport]":
    """
    Connect ``phone`` to ``host:port`` over TCP, as Asterisk does.

    :return: fires with the report when the connection ends.
    """
    reactor.connectTCP(host, port, _OneShot(phone), timeout=2)
    return phone.done
