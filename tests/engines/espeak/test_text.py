"""
Tests for :mod:`xlbridge.engines.espeak.text`: cutting text into the
sentences espeak-ng speaks one by one.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.espeak.text import split_sentences

ENGLISH = "Hello world, how are you today?"


class SplitSentencesTests(SynchronousTestCase):
    def check(self, text: str, expected: list[str]) -> None:
        self.assertEqual(split_sentences(text), expected)

    def test_terminators(self) -> None:
        self.check("Hello world. How are you? Fine! Yes; no", ["Hello world.", "How are you?", "Fine!", "Yes;", "no"])

    def test_spanish_marks_stay_with_their_sentence(self) -> None:
        self.check("¿Cómo estás? ¡Muy bien! Gracias.", ["¿Cómo estás?", "¡Muy bien!", "Gracias."])

    def test_blank(self) -> None:
        self.check("", [])
        self.check("  \n\t ", [])
        self.check("...", [])

    def test_whitespace_collapsed(self) -> None:
        self.check("  one\n two.\n\nthree  ", ["one two.", "three"])

    def test_no_split_inside_numbers_and_abbreviations(self) -> None:
        self.check("Pi is 3.14 exactly.", ["Pi is 3.14 exactly."])
        self.check("Dr. Smith met Sra. López in the U.S. today.", ["Dr. Smith met Sra. López in the U.S. today."])
        self.check("J. Smith wrote it. The end", ["J. Smith wrote it.", "The end"])

    def test_closing_quotes_and_ellipsis(self) -> None:
        self.check('Wait... what?! "Really." Yes', ["Wait...", "what?!", '"Really."', "Yes"])
        self.check("Hi. ... ok", ["Hi. ...", "ok"])

    def test_long_sentence_cut_at_commas(self) -> None:
        text = (
            "When the meeting finished, everybody went home, although the rain "
            "was heavy, and the trains were late as usual today."
        )
        pieces = split_sentences(text)
        self.assertEqual(" ".join(pieces), text)
        self.assertGreater(len(pieces), 1)
        self.assertTrue(all(p.endswith((",", ".")) for p in pieces))
        self.assertTrue(all(len(p) >= 25 for p in pieces))

    def test_short_sentence_keeps_commas(self) -> None:
        self.check(ENGLISH, [ENGLISH])
