"""
The Deepgram WebSocket factory's logger: the key is scrubbed from what is
logged, and a level txaio has switched off costs nothing per frame.
"""

from __future__ import annotations

from typing import Any, Optional

import txaio
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.deepgram.protocol import DeepgramClientFactory

KEY = "dg-secret-0123456789abcdef"


class _Owner:
    log = Logger()

    def __init__(self) -> None:
        self.built: list[Any] = []

    def ws_built(self, attempt: int, proto: Any) -> None:
        self.built.append(proto)

    def ws_connect_failed(self, attempt: int, reason: Any) -> None:
        pass

    def ws_connect(self, proto: Any, response: Any) -> None:
        pass

    def ws_open(self, proto: Any) -> None:
        pass

    def ws_message(self, proto: Any, payload: bytes, is_binary: bool) -> None:
        pass

    def ws_close(self, proto: Any, was_clean: bool, code: Optional[int], reason: Optional[str]) -> None:
        pass

    def ws_pong(self, proto: Any) -> None:
        pass


class ScrubbingLogTests(SynchronousTestCase):
    def _protocol(self) -> Any:
        owner = _Owner()
        factory = DeepgramClientFactory(owner, 1, "ws://127.0.0.1:9/v1/listen", KEY, Clock())  # type: ignore[arg-type]
        proto = factory.buildProtocol(None)
        self.assertEqual(owner.built, [proto])
        return proto

    def test_key_scrubbed_from_strings_and_bytes(self) -> None:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        proto = self._protocol()
        proto.log.error("upgrade refused: {k} {raw}", k=f"Token {KEY}", raw=KEY.encode())
        mine = [e for e in events if "upgrade refused" in str(e.get("log_format", ""))]
        self.assertEqual(len(mine), 1)
        text = formatEvent(mine[0])
        self.assertIn("upgrade refused: Token ", text)
        self.assertNotIn(KEY, text)
        self.assertNotIn(KEY, repr(mine[0]))

    def test_disabled_level_is_txaio_no_op(self) -> None:
        """
        Autobahn logs at debug on every frame it sends (20 ms of audio);
        with debug off the wrapper hands back txaio's no-op itself, so a
        frame pays no closure and no scrub.
        """
        old = txaio.get_global_log_level()
        txaio.set_global_log_level("info")
        self.addCleanup(txaio.set_global_log_level, old)
        proto = self._protocol()
        debug = proto.log.debug
        self.assertEqual((debug.__module__, debug.__name__), ("txaio.tx", "_no_op"))
        # An enabled level is still wrapped (and so scrubbed).
        self.assertNotEqual(getattr(proto.log.info, "__module__", None), "txaio.tx")
