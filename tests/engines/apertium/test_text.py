"""
Tests for :mod:`xlbridge.engines.apertium.text`: Apertium's stream format
and the NUL framing of a pipeline's output, pure and without a reactor.
"""

from __future__ import annotations

import re

from hypothesis import given, settings as hsettings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.apertium.text import (
    CARET_STAND_IN,
    SPECIAL,
    FrameTooLong,
    NullFramer,
    decode_reply,
    encode_sentence,
    escape,
    normalise,
    unescape,
)

#: One escape pair, ``\x``.
ESCAPE_PAIR = re.compile(r"\\(.)", re.S)


class EscapeTests(SynchronousTestCase):
    """
    :func:`escape` and :func:`unescape`.
    """

    def test_every_special_character(self) -> None:
        for c in SPECIAL:
            self.assertEqual(escape(c), "\\" + c)
            self.assertEqual(unescape(escape(c)), c)
        self.assertEqual(escape("$5 [approx] <b> @x"), "\\$5 \\[approx\\] \\<b\\> \\@x")
        self.assertEqual(escape("plain text, ¿sí?"), "plain text, ¿sí?")

    def test_unescape_table(self) -> None:
        table = {"\\\\": "\\", "a\\$b": "a$b", "\\x": "x", "trailing\\": "trailing\\", "": ""}
        for escaped, plain in table.items():
            self.assertEqual(unescape(escaped), plain)

    @hsettings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.sampled_from(SPECIAL + "ab \n\\é")) | st.text())
    def test_round_trip(self, text: str) -> None:
        escaped = escape(text)
        self.assertEqual(unescape(escaped), text)
        # Nothing special is left bare once the escape pairs are removed.
        bare = ESCAPE_PAIR.sub("", escaped)
        self.assertFalse(set(bare) & set(SPECIAL), repr(escaped))


class WireTests(SynchronousTestCase):
    """
    What goes into a pipeline and what comes back.
    """

    def test_normalise_one_line(self) -> None:
        self.assertEqual(normalise("  Hello\nworld\r\n\tagain\0x\u2028y  "), "Hello world again x y")
        self.assertEqual(normalise("\n \0 "), "")

    def test_encode(self) -> None:
        self.assertEqual(encode_sentence("a $b"), b"a \\$b\n\0")
        self.assertEqual(encode_sentence("2^3"), ("2" + CARET_STAND_IN + "3\n\0").encode())
        self.assertEqual(encode_sentence("médico").count(b"\0"), 1)

    def test_decode(self) -> None:
        self.assertEqual(decode_reply(b"Puede  me oigo?\n"), "Puede me oigo?")
        self.assertEqual(decode_reply(b"\\$5 \\[approx\\] \\<b\\> \\@x\n"), "$5 [approx] <b> @x")
        self.assertEqual(decode_reply(("Un " + CARET_STAND_IN + "\n").encode()), "Un ^")
        self.assertEqual(decode_reply("Dónde es".encode()), "Dónde es")

    def test_unknown_word_marks(self) -> None:
        self.assertEqual(decode_reply(b"Tengo *xyzzy y #casa y @perro"), "Tengo xyzzy y casa y perro")
        # A mark character the source itself had stays.
        self.assertEqual(decode_reply(b"Un *b #c", "a *b #c"), "Un *b #c")
        self.assertEqual(decode_reply(b"5 * 3"), "5 * 3")


class NullFramerTests(SynchronousTestCase):
    """
    :class:`NullFramer` with reads split and merged every way.
    """

    def test_split_reads(self) -> None:
        framer = NullFramer()
        data = b"Hola.\n\0Bueno.\n\0"
        out = []
        for i in range(len(data)):
            out += framer.feed(data[i:i + 1])
        self.assertEqual(out, [b"Hola.\n", b"Bueno.\n"])
        self.assertEqual(framer.pending, 0)

    def test_merged_reads(self) -> None:
        framer = NullFramer()
        self.assertEqual(framer.feed(b"a\0b\0\0c"), [b"a", b"b", b""])
        self.assertEqual(framer.pending, 1)
        self.assertEqual(framer.feed(b"d\0"), [b"cd"])

    def test_every_split_point(self) -> None:
        data = "uno\n\0dos €\n\0tres\n\0".encode()
        for cut in range(len(data) + 1):
            framer = NullFramer()
            self.assertEqual(framer.feed(data[:cut]) + framer.feed(data[cut:]), [b"uno\n", "dos €\n".encode(), b"tres\n"])

    def test_too_long(self) -> None:
        framer = NullFramer(max_bytes=10)
        framer.feed(b"12345")
        self.assertRaises(FrameTooLong, framer.feed, b"678901")
