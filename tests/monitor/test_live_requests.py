"""
Viewer requests on the monitor's WebSocket are untrusted input (issue 15,
bad input): whatever a viewer sends, the hub answers with an error and
never raises (an exception reached ``LiveProtocol.onMessage``, which logged
a traceback per message).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.monitor.harness import FakeViewer, MonitoredBridge

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
REQUESTS = st.fixed_dictionaries(
    {}, optional={"listen": JSON | st.fixed_dictionaries({"extension": JSON, "direction": JSON}),
                  "unlisten": JSON | st.fixed_dictionaries({"extension": JSON, "direction": JSON})},
)


class ViewerRequestTests(MonitoredBridge, SynchronousTestCase):
    def setUp(self) -> None:
        self.build(status_interval=1.0, levels_interval=0.1)
        self.hub = self.monitor.hub
        self.viewer = FakeViewer(1 << 20)
        self.hub.join(self.viewer)
        self.addCleanup(self.hub.leave, self.viewer)

    def last_reply(self) -> dict[str, Any]:
        self.reactor.advance(0)
        return [m for m in self.viewer.messages() if m["type"] in ("listening", "unlistened", "error")][-1]

    def test_deeply_nested_json_is_an_error_reply(self) -> None:
        """
        ``[`` x 60000 fits the 64 KiB frame limit and made ``json.loads``
        raise RecursionError, which is not a ValueError.
        """
        self.hub.message(self.viewer, b"[" * 60000, False)
        self.assertEqual(self.last_reply(), {"type": "error", "error": "expected a JSON object"})

    @settings(max_examples=150, deadline=None)
    @given(st.binary(max_size=200), st.booleans())
    def test_any_bytes_never_raise(self, payload: bytes, is_binary: bool) -> None:
        self.hub.message(self.viewer, payload, is_binary)

    @settings(max_examples=200, deadline=None)
    @given(REQUESTS)
    def test_any_request_gets_a_reply(self, request: dict[str, Any]) -> None:
        self.hub.message(self.viewer, json.dumps(request).encode(), False)
        reply = self.last_reply()
        self.assertIn(reply["type"], ("listening", "unlistened", "error"))
