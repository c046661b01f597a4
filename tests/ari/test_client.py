"""
The ARI REST client against the fake ARI: a refused password is a clear
error that never shows the password.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred

from tests.ari.harness import ARIHarness
from xlbridge.ari.client import ARIAuthError, ARIClient


class AuthTests(ARIHarness):
    def test_rest_auth_failure_is_clear(self) -> Any:
        async def run() -> None:
            client = ARIClient(self.fake.url, "xlbridge", "wrong-pw", reactor)
            self.addCleanup(client.close)
            try:
                await client.channels()
            except ARIAuthError as e:
                self.assertIn("401", str(e))
                self.assertIn("xlbridge", str(e))
                self.assertIn("ari.conf", str(e))
                self.assertNotIn("wrong-pw", str(e))
                self.assertNotIn("wrong-pw", repr(client))
            else:
                self.fail("no ARIAuthError")

        return ensureDeferred(run())
