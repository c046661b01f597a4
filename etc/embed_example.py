"""
Embedding xlbridge in an existing Twisted application, without twistd.

    .venv/bin/python etc/embed_example.py              # relay 7777 <-> 8888 until Ctrl-C
    .venv/bin/python etc/embed_example.py --self-test  # prove it relays, then exit

The bridge is an ordinary ``MultiService``: give it a config and a reactor,
attach it to your own service tree (or start it by hand), and stop it to end
every call cleanly.

The code between the two "README" marker lines is the snippet in README.rst
("Embedding"), character for character; tests/test_etc_samples.py checks it.
"""

from __future__ import annotations

import socket
import struct
import sys

# README snippet begins
from twisted.application.service import MultiService
from twisted.internet import reactor

from xlbridge.bridge import BridgeService
from xlbridge.config import load_config


def build(options: dict[str, str]) -> tuple[MultiService, BridgeService]:
    app = MultiService()  # your application's own service tree
    config = load_config({"engines": "relay", **options})  # keys: the command-line options
    bridge = BridgeService(config, reactor, observers=[print])  # events: CallStarted, CallEnded, ...
    bridge.setServiceParent(app)
    return app, bridge


def main() -> None:
    app, _ = build({"ports": "7777,8888"})
    app.startService()
    reactor.addSystemEventTrigger("before", "shutdown", app.stopService)
    reactor.run()
# README snippet ends


def self_test() -> None:
    """
    Relay slin16 from a phone on 7777 to one on 8888 (ports picked by the
    system) for half a second; exit 0 if the packets arrived unchanged.
    """
    from twisted.internet import task

    app, bridge = build({"ports": "7777=0,8888=0", "reply-codec": "slin16"})
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


if __name__ == "__main__":
    if "--self-test" in sys.argv:
        self_test()
    else:
        main()
