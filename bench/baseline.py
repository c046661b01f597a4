"""Bare Twisted relay, the yardstick for xlbridge (see BENCHMARKS.md).

Same port layout as ``twistd xlbridge --ports A-B``: port A pairs with A+1, ...
Each port latches its first source; one LoopingCall every 20 ms sends each
latched leg one packet (partner's oldest queued payload, or silence) with a
rebuilt header (PT 118, seq+1, ts+320).  No features, no checks.
"""
import argparse, collections, struct
from twisted.internet import reactor, task
from twisted.internet.protocol import DatagramProtocol

HDR, SILENCE = struct.Struct("!BBHII"), bytes(640)

class Leg(DatagramProtocol):
    def __init__(self, ssrc):
        self.remote, self.partner, self.seq, self.ts, self.ssrc = None, None, 0, 0, ssrc
        self.queue = collections.deque(maxlen=10)   # audio the partner sent us

    def datagramReceived(self, data, addr):
        if self.remote is None:
            self.remote = addr
        if addr == self.remote and len(data) > 12:
            self.partner.queue.append(data[12:])

    def tick(self):
        q = self.queue
        payload = q.popleft() if q else SILENCE
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 320) & 0xFFFFFFFF
        self.transport.write(HDR.pack(0x80, 118, self.seq, self.ts, self.ssrc) + payload, self.remote)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", default="20000-20399")
    ap.add_argument("--interface", default="127.0.0.1")
    lo, hi = map(int, ap.parse_args().ports.split("-"))
    args = ap.parse_args()
    legs = [Leg(p) for p in range(lo, hi + 1)]
    for i, leg in enumerate(legs):
        leg.partner = legs[i ^ 1]
        reactor.listenUDP(lo + i, leg, interface=args.interface)

    def tick():
        for leg in legs:
            if leg.remote is not None:
                leg.tick()

    task.LoopingCall(tick).start(0.020, now=False)
    reactor.run()

if __name__ == "__main__":
    main()
