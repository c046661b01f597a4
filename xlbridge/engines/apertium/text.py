"""
Apertium's stream format, pure and sans I/O: escaping, one-line
normalisation, the bytes written per sentence, the reply decoding and the
NUL framing of a pipeline's output (see the notes in
:mod:`xlbridge.engines.apertium.mt`).
"""

from __future__ import annotations

import re

from xlbridge.engines.base import EngineError

ENGINE = "apertium"

#: Characters Apertium's stream format reserves; escaped with a backslash.
SPECIAL = "\\[]^$/<>@*#{}"
_ESCAPE_RE = re.compile(r"([\\\[\]^$/<>@*#{}])")
_UNESCAPE_RE = re.compile(r"\\(.)", re.S)
#: What a ``^`` travels as (see the notes on ``lrx-proc`` in :mod:`xlbridge.engines.apertium.mt`).
CARET_STAND_IN = "\ue05e"
#: Control characters and any whitespace (newline, NUL, U+2028...) → one space.
_BLANKS_RE = re.compile(r"[\s\x00-\x1f\x7f]+")
#: An unknown-word mark (``*word``, ``#word``, ``@word``) left in a reply.
_MARK_RE = re.compile(r"(?<![\\\w])([*#@])(?=\w)")


def escape(text: str) -> str:
    """
    ``text`` with each of Apertium's reserved characters (:data:`SPECIAL`)
    behind a backslash, so the stream parsers read it as plain text.
    """
    return _ESCAPE_RE.sub(r"\\\1", text)


def unescape(text: str) -> str:
    """
    The inverse of :func:`escape`: every ``\\x`` becomes ``x`` (a lone
    trailing backslash stays).  ``unescape(escape(t)) == t`` for every ``t``.
    """
    return _UNESCAPE_RE.sub(r"\1", text)


def normalise(text: str) -> str:
    """
    ``text`` on one line: runs of whitespace and control characters
    (newlines would split the stream, a NUL would end the frame) become one
    space; the ``^`` stand-in is dropped; ends are stripped.
    """
    return _BLANKS_RE.sub(" ", text.replace(CARET_STAND_IN, "")).strip()


def encode_sentence(text: str) -> bytes:
    """
    The bytes written to a pipeline for one already :func:`normalise`\\ d
    sentence: escaped, ``^`` swapped for its stand-in, then ``"\\n\\0"``.
    """
    return (escape(text.replace("^", CARET_STAND_IN)) + "\n\0").encode("utf-8")


def decode_reply(reply: bytes, sent: str = "") -> str:
    """
    The translation in one reply (the bytes before its NUL).

    Unknown-word marks are stripped if any remain (``-n`` should leave
    none), except mark characters that ``sent`` (the source sentence)
    itself contains: Apertium passes an input ``*`` or ``#`` through
    un-escaped, so it cannot be told from a mark.  Then the reply is
    un-escaped, the ``^`` stand-in restored and runs of spaces (the
    generator leaves double spaces where it drops a word) collapsed.
    """
    text = reply.decode("utf-8", errors="replace")
    text = _MARK_RE.sub(lambda m: m.group(0) if m.group(1) in sent else "", text)
    text = unescape(text).replace(CARET_STAND_IN, "^")
    return re.sub(r"[ \t\r\n]+", " ", text).strip()


class FrameTooLong(EngineError):
    """
    A pipeline sent more than :attr:`NullFramer.max_bytes` without a NUL.
    """


class NullFramer:
    """
    Splits a pipeline's stdout into replies: feed it the bytes as they come
    (in any split), get back every reply completed by a NUL, in order.
    Sans I/O.

    :param max_bytes: the most bytes an unfinished reply may hold; more
        means the pipeline is confused, so :meth:`feed` raises
        :class:`FrameTooLong`.
    """

    def __init__(self, max_bytes: int = 1 << 20) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """
        Bytes received after the last NUL.
        """
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """
        Add ``data``; return the replies it completed (without their NULs).
        """
        self._buffer += data
        if b"\0" not in data:
            if len(self._buffer) > self.max_bytes:
                raise FrameTooLong(ENGINE, f"no NUL in {len(self._buffer)} bytes of output")
            return []
        *replies, rest = bytes(self._buffer).split(b"\0")
        self._buffer = bytearray(rest)
        return replies
