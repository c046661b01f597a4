"""
Property tests of the monitor's credential parsing (issue 15, bad input):
whatever a client sends as ``Authorization`` or ``?token=``, the check
never raises and grants access exactly when a candidate is a token.
"""

from __future__ import annotations

from typing import Optional

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.monitor.auth import Role, TokenGuard, Verdict, bearer_token

TOKEN = "view-Tok3n"
LISTEN = "listen-Tok3n"
#: Header values as a client may send them (latin-1 text, any scheme).
HEADERS = st.none() | st.text(max_size=60) | st.builds(
    lambda scheme, sp, value: f"{scheme}{sp}{value}",
    st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "", "Bearer\t"]),
    st.sampled_from([" ", "  ", "", "\t"]),
    st.sampled_from([TOKEN, LISTEN, TOKEN + " ", " " + TOKEN, TOKEN.upper(), ""]) | st.text(max_size=20),
)
QUERIES = st.none() | st.sampled_from([TOKEN, LISTEN, "", TOKEN[:-1]]) | st.text(max_size=30)


class BearerTokenProperties(SynchronousTestCase):
    @settings(max_examples=400, deadline=None)
    @given(HEADERS)
    def test_never_raises_and_only_bearer(self, header: Optional[str]) -> None:
        value = bearer_token(header)
        if value is not None:
            assert header is not None
            self.assertEqual(header.strip().partition(" ")[0].lower(), "bearer")
            self.assertEqual(value, value.strip())
            self.assertTrue(value)


class AuthorizeProperties(SynchronousTestCase):
    @settings(max_examples=400, deadline=None)
    @given(HEADERS, QUERIES, st.booleans())
    def test_ok_exactly_when_a_candidate_is_a_token(self, header: Optional[str], query: Optional[str],
                                                    listen_on: bool) -> None:
        guard = TokenGuard(TOKEN, listen_token=LISTEN if listen_on else None)
        verdict, role = guard.authorize(header, query)
        candidates = [c for c in (bearer_token(header), query) if c]
        tokens = {TOKEN} | ({LISTEN} if listen_on else set())
        if not candidates:
            self.assertEqual((verdict, role), (Verdict.MISSING, None))
        elif set(candidates) & tokens:
            self.assertEqual(verdict, Verdict.OK)
            self.assertEqual(role, Role.LISTEN if listen_on and LISTEN in candidates else Role.VIEW)
        else:
            self.assertEqual((verdict, role), (Verdict.WRONG, None))
        self.assertEqual(sum(guard.refused.values()), 0 if verdict is Verdict.OK else 1)

    @settings(max_examples=200, deadline=None)
    @given(st.text(min_size=1, max_size=40), st.text(max_size=40))
    def test_any_token_only_itself(self, token: str, other: str) -> None:
        assume(token.strip() and other != token)
        guard = TokenGuard(token)
        self.assertEqual(guard.check(None, token), Verdict.OK)
        self.assertEqual(guard.check(None, other), Verdict.WRONG if other else Verdict.MISSING)
