"""
Embedding xlbridge in an existing Twisted application, without twistd.

    python etc/embed_example.py              # relay 7777 <-> 8888 until Ctrl-C
    python etc/embed_example.py --self-test  # prove it relays, then exit

The bridge is an ordinary ``MultiService``: give it a config and a reactor,
attach it to your own service tree (or start it by hand), and stop it to end
every call cleanly.
"""

from __future__ import annotations

import socket
import struct
import sys

from twisted.application.service import MultiService
from twisted.internet import reactor, task

from xlbridge.bridge import BridgeService
from xlbridge.config import load_config


def build(ports: str) -> tuple[MultiService, BridgeService]:
    app = MultiService()  # your application's own service tree
    config = load_config({"ports": ports, "engines": "relay", "reply-codec": "slin16"})
    bridge = BridgeService(config, reactor)
    bridge.setServiceParent(app)
    return app, bridge


def self_test() -> None:
    app, bridge = build("7777=0,8888=0")
    app.startService()
    port_a = bridge.listeners["7777"].port.getHost().port  # type: ignore[union-attr]
    port_b = bridge.listeners["8888"].port.getHost().port  # type: ignore[union-attr]
    phone_a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (phone_a, phone_b):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    payload = struct.pack(">320h", *range(1, 321))  # slin16 is big-endian
    got: list[bytes] = []
    result: list[int] = []

    def send(i: int) -> None:
        header = struct.pack("!BBHII", 0x80, 118, i, i * 320, 1234)
        phone_a.sendto(header + payload, ("127.0.0.1", port_a))
        phone_b.sendto(header + bytes(640), ("127.0.0.1", port_b))
        try:
            while True:
                got.append(phone_b.recv(2048)[12:])
        except BlockingIOError:
            pass

    loop = task.LoopingCall.withCount(lambda n: send(len(got) + n))
    loop.start(0.02)

    def finish() -> None:
        loop.stop()
        relayed = sum(1 for p in got if p == payload)
        print(f"relayed {relayed} packets from 7777 to 8888")
        result.append(relayed)
        d = app.stopService()
        d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callLater(0.5, finish)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    sys.exit(0 if result and result[0] > 0 else 1)


def main() -> None:
    if "--self-test" in sys.argv:
        self_test()
        return
    app, _ = build("7777,8888")
    app.startService()
    reactor.addSystemEventTrigger("before", "shutdown", app.stopService)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
