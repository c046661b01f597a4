"""
Caller language codes as the engines see them: what counts as a language
code at all (:func:`code_problem`), its primary subtag (:func:`primary`),
and the directions a set of caller pairs needs (:func:`directions`).

Which engine serves which language is kept with each engine's settings
(``MODEL_LANGUAGES`` of Deepgram and ElevenLabs, DeepL's ``LANGUAGES``,
Whisper's ``LANGUAGES``, Apertium's pairs, espeak-ng's voices);
:mod:`xlbridge.engines.coverage` puts them together.
"""

from __future__ import annotations

from typing import AbstractSet, Iterable, Optional

__all__ = ["AUTO", "ISO_639_1", "code_problem", "directions", "primary"]

#: The leg language that lets Whisper identify what the caller speaks.
AUTO = "auto"

#: ISO 639-1 (two-letter) codes, with the withdrawn ones engines still use
#: (``iw``, ``in``, ``ji``, ``jw``, ``mo``).
ISO_639_1 = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el
en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu
ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na
nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so
sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
iw in ji jw mo
""".split())


def primary(code: str) -> str:
    """The primary subtag, lower case: ``es-MX`` and ``es_mx`` -> ``es``."""
    return code.strip().lower().replace("_", "-").split("-")[0]


def code_problem(code: str, known: AbstractSet[str] = frozenset()) -> Optional[str]:
    """
    Why ``code`` is not a language code, or ``None``: its primary subtag
    must be ISO 639-1 or one of ``known`` (three-letter codes an engine
    takes, such as ``yue`` or ``fil``); ``auto`` is one too.
    """
    if code.strip().lower() == AUTO:
        return None
    base = primary(code)
    if base in ISO_639_1 or base in known:
        return None
    return (f"{code!r} is not a language code: use ISO 639-1 codes like en, es or fr "
            "(twistd xlbridge --list-languages lists what each engine supports)")


def directions(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """
    Every (source, target) a call between the callers of ``pairs`` needs:
    both ways of each pair of different languages, sorted, once each
    (a same-language pair, ``en`` and ``en-gb`` too, is relayed, not
    translated).
    """
    out: set[tuple[str, str]] = set()
    for a, b in pairs:
        if primary(a) != primary(b):
            out.update({(a, b), (b, a)})
    return sorted(out)
