"""
Tests for :mod:`xlbridge.engines.languages`: what is a language code, and
which directions a set of caller pairs needs.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.languages import AUTO, code_problem, directions, primary


class CodesTests(SynchronousTestCase):
    def test_language_codes(self) -> None:
        for code in ("en", "es", "ES", "es-mx", "pt_BR", "zh-hant", "he", "iw", AUTO):
            self.assertIsNone(code_problem(code), code)

    def test_not_a_language(self) -> None:
        problem = code_problem("xx")
        assert problem is not None
        self.assertTrue(problem.startswith("'xx' is not a language code: use ISO 639-1 codes like en, es or fr"))
        self.assertIn("--list-languages", problem)
        self.assertIsNotNone(code_problem("yy-zz"))
        self.assertIsNotNone(code_problem("eng"))

    def test_three_letter_codes_an_engine_takes(self) -> None:
        self.assertIsNotNone(code_problem("yue"))
        self.assertIsNone(code_problem("yue", frozenset({"yue", "fil"})))

    def test_primary(self) -> None:
        self.assertEqual([primary(c) for c in ("es-MX", "es_mx", " EN ")], ["es", "es", "en"])


class DirectionsTests(SynchronousTestCase):
    def test_both_ways_once(self) -> None:
        self.assertEqual(directions([("en", "es"), ("es", "en"), ("fr", "de")]),
                         [("de", "fr"), ("en", "es"), ("es", "en"), ("fr", "de")])

    def test_same_language_is_relayed(self) -> None:
        self.assertEqual(directions([("en", "en"), ("en", "en-gb")]), [])
