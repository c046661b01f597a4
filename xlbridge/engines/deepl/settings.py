"""
DeepL settings and the bridge's language codes in DeepL's terms:
:class:`DeepLSettings`, :func:`deepl_target_lang`, :func:`deepl_source_lang`
and :func:`build_context`.

Nothing here touches the reactor, the thread pool or the network; it is
kept apart from :mod:`xlbridge.engines.deepl.mt` so that module holds only
the adapter: requests, retries and deadlines.

Languages: the bridge speaks short codes (``en``, ``es-419``, ``pt``);
DeepL wants upper-case base codes as source (regional variants are
target-only) and a regional variant as target for English and Portuguese
(bare ``EN``/``PT`` targets are deprecated and refused by the library).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence
from urllib.parse import urlsplit

import attrs
import deepl

from xlbridge.engines.base import redact
from xlbridge.engines.options import (
    EnvironmentSettingError,
    as_float,
    as_int,
    build_with_environment,
    check_keys,
    of_kind,
    setting_error,
)

ENGINE = "deepl"

#: Values DeepL accepts for ``formality``.
FORMALITIES = ("default", "more", "less", "prefer_more", "prefer_less")
#: Values DeepL accepts for ``model_type``.
MODEL_TYPES = ("latency_optimized", "quality_optimized", "prefer_quality_optimized")
ENGLISH_VARIANTS = ("EN-US", "EN-GB")
PORTUGUESE_VARIANTS = ("PT-BR", "PT-PT")


# -- settings -----------------------------------------------------------------


def _strip(value: str) -> str:
    return str(value).strip()


def _upper(value: str) -> str:
    return str(value).strip().upper()


def _lower(value: str) -> str:
    return str(value).strip().lower()


def _server_url(value: Optional[str]) -> Optional[str]:
    """
    ``None``/empty stays ``None`` (the library picks the host from the key).
    A base URL with a path gets a trailing ``/``, since the library joins
    ``v2/translate`` to it with ``urljoin`` and would drop the last segment.
    """
    if value is None or not str(value).strip():
        return None
    value = str(value).strip()
    path = urlsplit(value).path
    if path and not path.endswith("/"):
        value += "/"
    return value


def _one_of(allowed: Sequence[str]) -> Callable[[Any, "attrs.Attribute[Any]", Any], None]:
    def check(instance: Any, attribute: "attrs.Attribute[Any]", value: Any) -> None:
        if value not in allowed:
            raise setting_error(f"{ENGINE}.{attribute.name}", f"{value!r} is not one of {', '.join(allowed)}")

    return check


def _check_key(instance: Any, attribute: Any, value: str) -> None:
    if not value:
        raise EnvironmentSettingError("DEEPL_AUTH_KEY", "no DeepL key: set it, or auth_key in [deepl]")


def _check_url(instance: Any, attribute: Any, value: Optional[str]) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise setting_error(f"{ENGINE}.server_url", f"{value!r} is not a base URL like https://api.deepl.com")


def _positive(instance: Any, attribute: "attrs.Attribute[Any]", value: Any) -> None:
    if not value > 0:
        raise setting_error(f"{ENGINE}.{attribute.name}", f"must be > 0, not {value!r}")


def _not_negative(instance: Any, attribute: "attrs.Attribute[Any]", value: Any) -> None:
    if value < 0:
        raise setting_error(f"{ENGINE}.{attribute.name}", f"must be >= 0, not {value!r}")


@attrs.frozen
class DeepLSettings:
    """
    How to reach DeepL and what to ask of it.  Bad values raise
    :class:`~xlbridge.errors.ConfigError` naming the option.

    :ivar auth_key: the API key; a key ending in ``:fx`` is a Free account
        (the library then uses ``api-free.deepl.com``).  Never shown.
    :ivar server_url: base URL replacing the host the library picks from the
        key, e.g. ``https://api.deepl.com`` or ``http://127.0.0.1:8802`` (the
        library's ``server_url``); ``None`` = pick from the key.
    :ivar english_variant: DeepL target for a bare ``en``: ``EN-US`` or ``EN-GB``.
    :ivar portuguese_variant: DeepL target for a bare ``pt``: ``PT-BR`` or ``PT-PT``.
    :ivar formality: one of :data:`FORMALITIES`; ``prefer_*`` fall back
        quietly for targets without formality, ``more``/``less`` are refused.
    :ivar model_type: one of :data:`MODEL_TYPES`.
    :ivar deadline_s: seconds from
        :meth:`~xlbridge.engines.deepl.mt.DeepLMT.translate` until it gives
        up, retries included.  A late translation is worse than none.
    :ivar context_sentences: how many earlier sentences of the speaker go
        along as ``context`` (0 = none).
    :ivar context_max_chars: bound of the joined ``context``, in characters
        (the most recent text is kept).
    :ivar backoff_initial_s: seconds before the first retry; later waits
        grow ×1.6 with ±23 % jitter, and stop when the deadline is near.
    """

    auth_key: str = attrs.field(repr=redact, converter=_strip, validator=_check_key)
    server_url: Optional[str] = attrs.field(default=None, converter=_server_url, validator=_check_url)
    english_variant: str = attrs.field(
        default="EN-US", converter=_upper, validator=_one_of(ENGLISH_VARIANTS)
    )
    portuguese_variant: str = attrs.field(
        default="PT-BR", converter=_upper, validator=_one_of(PORTUGUESE_VARIANTS)
    )
    formality: str = attrs.field(
        default="default", converter=_lower, validator=_one_of(FORMALITIES)
    )
    model_type: str = attrs.field(
        default="latency_optimized", converter=_lower, validator=_one_of(MODEL_TYPES)
    )
    deadline_s: float = attrs.field(default=4.0, converter=as_float, validator=[of_kind(ENGINE, float), _positive])
    context_sentences: int = attrs.field(
        default=3, converter=as_int, validator=[of_kind(ENGINE, int), _not_negative]
    )
    context_max_chars: int = attrs.field(
        default=1000, converter=as_int, validator=[of_kind(ENGINE, int), _not_negative]
    )
    backoff_initial_s: float = attrs.field(
        default=0.25, converter=as_float, validator=[of_kind(ENGINE, float), _positive]
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> "DeepLSettings":
        """
        Settings from the environment: the key from ``DEEPL_AUTH_KEY`` (or
        ``DEEPL_API_KEY``), the base URL from ``XLBRIDGE_DEEPL_URL``.

        :param environ: usually ``os.environ``.
        :param overrides: field values that win over the environment; a
            ``None`` value means "not given" and is ignored, so unset
            command-line options can be passed straight through.
        :raises ConfigError: no key, an unknown key or a bad value, naming
            ``deepl.<key>`` (or the environment variable it came from).
        """
        check_keys(ENGINE, overrides, [f.name for f in attrs.fields(cls)])
        environment: dict[str, tuple[str, Any]] = {}
        for variable in ("DEEPL_AUTH_KEY", "DEEPL_API_KEY"):
            if environ.get(variable):
                environment["auth_key"] = (variable, environ[variable])
                break
        url = environ.get("XLBRIDGE_DEEPL_URL")
        if url:
            environment["server_url"] = ("XLBRIDGE_DEEPL_URL", url)
        given = {k: v for k, v in overrides.items() if v is not None}
        for key in ("auth_key", "server_url"):
            if key in given and not isinstance(given[key], str):
                raise setting_error(f"{ENGINE}.{key}", f"expected a string, got {given[key]!r}")

        def build(values: dict[str, Any]) -> "DeepLSettings":
            values.setdefault("auth_key", "")
            return cls(**values)

        return build_with_environment(ENGINE, build, environment, given)


# -- languages ----------------------------------------------------------------

#: Old or alternative ISO 639 codes → the code DeepL uses.
_ALIASES = {"no": "nb", "nn": "nb", "iw": "he", "in": "id", "ji": "yi", "fil": "tl"}

#: Base codes the installed library knows (``deepl.Language`` constants).
_KNOWN = frozenset(
    value.split("-")[0].lower()
    for name, value in vars(deepl.Language).items()
    if name.isupper() and isinstance(value, str)
)

#: The languages DeepL translates, as base codes (each both a source and a
#: target; regional variants are targets only and map to these).
LANGUAGES = _KNOWN


def deepl_knows(code: str) -> bool:
    """Whether DeepL translates from and into ``code`` (``es``, ``es-mx``, ``no``...)."""
    try:
        _split(code)
    except ValueError:
        return False
    return True


#: English regions that follow British spelling.
_BRITISH = frozenset({"gb", "uk", "ie", "au", "nz", "za", "in"})
#: Spanish regions served by Latin American Spanish (``ES-419``).
_LATAM = frozenset(
    {"419", "mx", "ar", "bo", "cl", "co", "cr", "cu", "do", "ec", "gt", "hn",
     "ni", "pa", "pe", "pr", "py", "sv", "us", "uy", "ve"}
)
#: Portuguese regions that follow the European norm.
_EUROPEAN_PT = frozenset({"pt", "ao", "mz", "cv", "gw", "st", "tl", "mo"})
_TRADITIONAL_ZH = frozenset({"hant", "tw", "hk", "mo"})
_SIMPLIFIED_ZH = frozenset({"hans", "cn", "sg"})


def _split(code: str) -> tuple[str, list[str]]:
    """
    ``"es_419"`` → ``("es", ["419"])``, after aliases; raises ``ValueError``
    for a language DeepL does not know.
    """
    parts = str(code).strip().lower().replace("_", "-").split("-")
    base = _ALIASES.get(parts[0], parts[0])
    if base not in _KNOWN:
        raise ValueError(f"DeepL has no language for {code!r}")
    return base, [p for p in parts[1:] if p]


def deepl_target_lang(code: str, settings: DeepLSettings) -> str:
    """
    The DeepL ``target_lang`` for a bridge language code.

    ``en`` → ``settings.english_variant`` (``en-gb``, ``en-au``... →
    ``EN-GB``, ``en-us`` → ``EN-US``); ``pt`` →
    ``settings.portuguese_variant`` (``pt-br`` → ``PT-BR``, ``pt-pt`` →
    ``PT-PT``); ``es-419`` and Latin American regions → ``ES-419``, other
    Spanish → ``ES``; ``zh`` → ``ZH-HANS`` (``zh-tw``/``zh-hant`` →
    ``ZH-HANT``); anything else → its upper-case base code (``de-at`` →
    ``DE``).

    :raises ValueError: a language DeepL does not know.
    """
    base, rest = _split(code)
    if base == "en":
        if any(r in _BRITISH for r in rest):
            return "EN-GB"
        if "us" in rest:
            return "EN-US"
        return settings.english_variant
    if base == "pt":
        if "br" in rest:
            return "PT-BR"
        if any(r in _EUROPEAN_PT for r in rest):
            return "PT-PT"
        return settings.portuguese_variant
    if base == "es":
        return "ES-419" if any(r in _LATAM for r in rest) else "ES"
    if base == "zh":
        if any(r in _TRADITIONAL_ZH for r in rest):
            return "ZH-HANT"
        return "ZH-HANS"
    return base.upper()


def deepl_source_lang(code: str) -> str:
    """
    The DeepL ``source_lang`` for a bridge language code: the upper-case
    base code (``en-gb`` → ``EN``, ``es-419`` → ``ES``), since DeepL accepts
    regional variants only as targets.

    :raises ValueError: a language DeepL does not know.
    """
    base, _ = _split(code)
    return base.upper()


def build_context(sentences: Sequence[str], settings: DeepLSettings) -> Optional[str]:
    """
    The ``context`` to send: the last ``context_sentences`` non-empty
    sentences, oldest first, joined by spaces and cut to the most recent
    ``context_max_chars`` characters (at a word boundary when there is one).
    ``None`` when there is nothing to send.
    """
    if settings.context_sentences == 0 or settings.context_max_chars == 0:
        return None
    kept = [s.strip() for s in sentences if s and s.strip()][-settings.context_sentences:]
    joined = " ".join(kept)
    if len(joined) > settings.context_max_chars:
        joined = joined[-settings.context_max_chars:]
        space = joined.find(" ")
        if 0 <= space < len(joined) - 1:
            joined = joined[space + 1:]
    return joined or None
