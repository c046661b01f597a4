"""
Sentence splitting for :mod:`xlbridge.engines.espeak.tts`: text is cut into
sentences (and long sentences into clauses) so the first audio comes early.
"""

from __future__ import annotations

import re

#: A sentence ends after these, then optional closing quotes or brackets,
#: then whitespace.
_END = re.compile(r"""[.?!;…]+["'”’»)\]]*(?=\s)""")

#: Words that end in a full stop without ending the sentence (en and es).
_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof st jr sr sra srta dra ud uds vs etc eg ie no núm pág
    approx apt av avda fig lic ing""".split()
)

#: A sentence longer than this (characters) is also cut at commas ...
LONG_SENTENCE = 80
#: ... into clauses of at least this many characters.
MIN_CLAUSE = 25


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the ``.`` at ``text[dot]`` ends an abbreviation or initial."""
    word = re.search(r"[\w.]*$", text[:dot])
    token = word.group(0) if word else ""
    if not token:
        return False
    if len(token) == 1 and token.isalpha() and token.isupper():
        return True  # an initial: "J. Smith"
    if "." in token and re.fullmatch(r"(?:\w\.)+\w", token):
        return True  # "e.g", "U.S"
    return token.lower() in _ABBREVIATIONS


def _split_commas(sentence: str) -> list[str]:
    if len(sentence) <= LONG_SENTENCE:
        return [sentence]
    pieces: list[str] = []
    start = 0
    for m in re.finditer(r",\s+", sentence):
        cut = m.start() + 1
        if cut - start >= MIN_CLAUSE and len(sentence) - m.end() >= MIN_CLAUSE:
            pieces.append(sentence[start:cut].strip())
            start = m.end()
    pieces.append(sentence[start:].strip())
    return pieces


def split_sentences(text: str) -> list[str]:
    """
    Cut ``text`` into the pieces synthesised one at a time.

    A piece ends after ``.``, ``?``, ``!``, ``;`` or ``…`` (with any closing
    quotes) followed by whitespace, except after abbreviations such as
    ``Dr.`` and initials; a sentence longer than :data:`LONG_SENTENCE`
    characters is also cut after commas into clauses of at least
    :data:`MIN_CLAUSE` characters.  Whitespace is collapsed; pieces with no
    letter or digit are joined to the piece before (or dropped if
    there is none).  Spanish ``¿``/``¡``
    stay with their sentence.

    :return: the pieces, in order, without surrounding whitespace; empty for
        blank text.
    """
    text = " ".join(text.split())
    sentences: list[str] = []
    start = 0
    for m in _END.finditer(text):
        if text[m.start()] == "." and m.end() - m.start() == 1 and _is_abbreviation(text, m.start()):
            continue
        sentences.append(text[start:m.end()].strip())
        start = m.end()
    sentences.append(text[start:].strip())
    pieces: list[str] = []
    for sentence in sentences:
        if not sentence:
            continue
        if not any(ch.isalnum() for ch in sentence):
            if pieces:
                pieces[-1] = f"{pieces[-1]} {sentence}"
            continue
        pieces.extend(_split_commas(sentence))
    return pieces
