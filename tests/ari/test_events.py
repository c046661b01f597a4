"""
The ARI events socket against the fake ARI: a refused password is logged
clearly, never the password itself.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred

from tests.ari.harness import ARIHarness, wait_until


class AuthTests(ARIHarness):
    def test_events_auth_failure_logged_not_password(self) -> Any:
        async def run() -> None:
            ari = self.start(password="wrong-pw")
            await wait_until(lambda: self.fake.ws_rejected >= 1)
            await wait_until(lambda: any("refused" in line for line in self.logged))
            self.assertFalse(ari.events.connected)
            for line in self.logged:
                self.assertNotIn("wrong-pw", line)

        return ensureDeferred(run())
