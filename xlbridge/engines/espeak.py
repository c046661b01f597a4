"""
Offline text-to-speech with espeak-ng, in process, shared by every call.

Design notes
------------

Why espeak-ng: it needs no network, no key and no apt package.  The PyPI
wheel ``espeakng-loader`` bundles ``libespeak-ng.so`` (linked to libc,
libm and libstdc++ only) and a full ``espeak-ng-data`` with the English and
Spanish dictionaries; it has no synthesis API of its own, so
:class:`ESpeakLibrary` is a small ctypes binding with every ``argtypes`` and
``restype`` declared.

Threading: libespeak-ng keeps global state (one voice, one synth callback,
one set of parameters) and is not thread-safe, and ``espeak_Synth`` blocks
until the text is spoken.  So :class:`ESpeakTTS` runs all synthesis on one
dedicated worker thread (a one-thread
:class:`~xlbridge.engines.threads.ThreadPoolService` it owns), never on the
reactor thread, and every call into the library additionally holds the
process-wide :data:`ESpeakLibrary.lock`, so that two engines in the same
process cannot interleave either.  Voice, rate and pitch are applied again
before every sentence (0.1 ms): loading a voice resets the pitch, and
another engine may have changed them.

The library is loaded and initialised once per process, lazily, on the
worker thread, by :func:`shared_library`; a failure is remembered and every
request then errbacks at once with the same clear
:class:`~xlbridge.engines.base.EngineUnavailable`.

Latency: the text is cut into sentences (:func:`split_sentences`) and each
one is synthesised, resampled and handed to ``on_audio`` on the reactor
thread before the next one starts, so the first audio comes after one short
sentence (espeak needs 1-5 ms per sentence), not after the whole text.
Requests take turns sentence by sentence (each request has at most one job
in the worker's queue), so a long text does not hold up another call's first
sentence.  A short pause (espeak's own sentence pause, 300 ms after ``.``,
150 ms after ``,``) ends every sentence but the last.

Audio: espeak produces signed 16-bit mono in native byte order at the rate
``espeak_Initialize`` reports (22050 Hz); each sentence is resampled in one
go (soxr HQ, :func:`xlbridge.audio.resample.resample`) to the internal
16 kHz int16 native format (:mod:`xlbridge.audio.frame`).

Bounds and failures: at most ``max_queue`` requests are in progress; one
more errbacks at once with :class:`EngineUnavailable` and is counted in
:attr:`ESpeakCounters.refused`.  An unknown voice name is an
:class:`EngineRequestError`.  A language with no voice of its own is spoken
with ``default_voice`` (warned once per language), or refused with
:class:`EngineRequestError` if ``default_voice`` is ``None``.
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import threading
from typing import Any, Callable, Mapping, Optional

import attrs
import numpy as np
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.audio.frame import SAMPLE_RATE, Samples
from xlbridge.audio.resample import resample
from xlbridge.engines.base import EngineError, EngineRequestError, EngineUnavailable
from xlbridge.engines.threads import PoolFull, ThreadPoolService
from xlbridge.errors import ConfigError

__all__ = [
    "DEFAULT_VOICE",
    "DEFAULT_VOICES",
    "ESpeakCounters",
    "ESpeakLibrary",
    "ESpeakSettings",
    "ESpeakTTS",
    "espeak_available",
    "shared_library",
    "split_sentences",
]

ENGINE = "espeak"

#: Voice for a language missing from :attr:`ESpeakSettings.voices`.
DEFAULT_VOICE = "en-us"

#: Language (ISO 639-1) -> espeak-ng voice name.
DEFAULT_VOICES: Mapping[str, str] = {"en": "en-us", "es": "es"}

#: espeak-ng's own bounds for the speaking rate, words per minute.
RATE_RANGE = (80, 450)

#: espeak-ng's bounds for the base pitch (50 is the voice's normal pitch).
PITCH_RANGE = (0, 100)

# -- speak_lib.h constants ---------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
#: Return an error instead of calling exit() when the data cannot be loaded.
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
#: Add the sentence pause at the end of the text.
_ENDPAUSE = 0x1000
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
_EE_NOT_FOUND = 2
_ERRORS = {-1: "EE_INTERNAL_ERROR", 1: "EE_BUFFER_FULL", 2: "EE_NOT_FOUND"}

#: ``int callback(short *wav, int numsamples, espeak_EVENT *events)``;
#: return 1 to abort synthesis.
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def _bundled_paths() -> tuple[str, str]:
    """(library, data directory) from ``espeakng-loader``."""
    import espeakng_loader  # type: ignore[import-untyped]

    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


class ESpeakLibrary:
    """
    ctypes binding to one ``libespeak-ng`` in synchronous mode.

    The library has one global state per process: callers must hold
    :attr:`lock` around :meth:`initialize`, :meth:`set_voice`,
    :meth:`set_prosody` and :meth:`synth` taken together, and should use the
    one instance from :func:`shared_library` rather than making another.

    :param library_path: the shared object; ``None`` = the one bundled with
        ``espeakng-loader``.
    :param data_path: the ``espeak-ng-data`` directory; ``None`` = the
        bundled one when the library is the bundled one, else the library's
        compiled-in default.
    :raises EngineUnavailable: if the library cannot be loaded.

    :ivar sample_rate: output rate in Hz (22050), known after
        :meth:`initialize`; ``0`` before.
    """

    #: Serialises every use of libespeak-ng in this process.
    lock = threading.RLock()

    def __init__(self, library_path: Optional[str] = None, data_path: Optional[str] = None) -> None:
        try:
            if library_path is None:
                library_path, bundled_data = _bundled_paths()
                if data_path is None:
                    data_path = bundled_data
            self._lib = ctypes.CDLL(library_path)
            self._declare(self._lib)
        except (ImportError, OSError, RuntimeError, AttributeError) as e:
            raise EngineUnavailable(
                ENGINE, f"cannot load libespeak-ng ({library_path or 'espeakng-loader'}): {e}"
            ) from e
        self.library_path: str = library_path
        self.data_path = data_path
        self.sample_rate = 0
        self._chunks: list[Samples] = []
        self._should_stop: Optional[Callable[[], bool]] = None
        # Kept on the instance: the C library holds only a raw pointer.
        self._callback = _SynthCallback(self._on_samples)

    @staticmethod
    def _declare(lib: Any) -> None:
        c = ctypes
        lib.espeak_Initialize.argtypes = [c.c_int, c.c_int, c.c_char_p, c.c_int]
        lib.espeak_Initialize.restype = c.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [c.c_char_p]
        lib.espeak_SetVoiceByName.restype = c.c_int
        lib.espeak_SetParameter.argtypes = [c.c_int, c.c_int, c.c_int]
        lib.espeak_SetParameter.restype = c.c_int
        lib.espeak_Synth.argtypes = [
            c.c_char_p,  # text
            c.c_size_t,  # size, bytes including the NUL
            c.c_uint,  # position
            c.c_int,  # position_type
            c.c_uint,  # end_position
            c.c_uint,  # flags
            c.POINTER(c.c_uint),  # unique_identifier
            c.c_void_p,  # user_data
        ]
        lib.espeak_Synth.restype = c.c_int
        lib.espeak_Info.argtypes = [c.POINTER(c.c_char_p)]
        lib.espeak_Info.restype = c.c_char_p

    def version(self) -> str:
        """The library's version string, e.g. ``"1.52.0"``."""
        return (self._lib.espeak_Info(None) or b"").decode("ascii", "replace")

    def initialize(self) -> int:
        """
        ``espeak_Initialize`` in synchronous mode and install the callback.

        :return: the output sample rate in Hz (22050).
        :raises EngineUnavailable: if the data cannot be loaded.
        """
        data = self.data_path
        if data is not None and not os.path.isfile(os.path.join(data, "phontab")):
            raise EngineUnavailable(ENGINE, f"no espeak-ng data (phontab) in {data!r}")
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0,
            None if data is None else os.fsencode(data), _INITIALIZE_DONT_EXIT,
        )
        if rate <= 0:
            raise EngineUnavailable(
                ENGINE, f"espeak_Initialize failed ({rate}) with data {data!r}"
            )
        self._lib.espeak_SetSynthCallback(self._callback)
        self.sample_rate = int(rate)
        return self.sample_rate

    def set_voice(self, name: str) -> None:
        """
        Select a voice by name (``"en-us"``, ``"es"``); resets the pitch.

        :raises EngineRequestError: if there is no such voice.
        :raises EngineUnavailable: for any other library error.
        """
        err = self._lib.espeak_SetVoiceByName(name.encode("utf-8"))
        if err == _EE_NOT_FOUND:
            raise EngineRequestError(ENGINE, f"no espeak-ng voice named {name!r}")
        self._check(err, f"espeak_SetVoiceByName({name!r})")

    def set_prosody(self, rate_wpm: int, pitch: int) -> None:
        """
        Set the speaking rate (words per minute, 80..450) and base pitch
        (0..100, 50 = normal) of the current voice.
        """
        self._check(self._lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0), "rate")
        self._check(self._lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0), "pitch")

    def synth(
        self, text: str, end_pause: bool = False, should_stop: Optional[Callable[[], bool]] = None
    ) -> Samples:
        """
        Speak ``text`` (plain UTF-8, no SSML) with the current voice; blocks
        until done (1-5 ms per sentence).

        :param end_pause: end with espeak's sentence pause (300 ms after a
            full stop) instead of cutting the audio at the last sound.
        :param should_stop: polled about every 60 ms of audio produced;
            returning true abandons the rest of the text.
        :return: int16 mono samples, native byte order, at
            :attr:`sample_rate` Hz.
        :raises EngineUnavailable: on a library error.
        """
        data = text.replace("\x00", " ").encode("utf-8")
        self._chunks = []
        self._should_stop = should_stop
        # Re-installed each time: cheap, and keeps this instance the one
        # that receives the samples.
        self._lib.espeak_SetSynthCallback(self._callback)
        flags = _CHARS_UTF8 | (_ENDPAUSE if end_pause else 0)
        try:
            err = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
            self._check(err, "espeak_Synth")
            chunks, self._chunks = self._chunks, []
        finally:
            self._should_stop = None
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks)

    def _on_samples(self, wav: Any, numsamples: int, events: Any) -> int:
        # Runs inside espeak_Synth, on the synthesising thread.
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, (numsamples,)).astype(np.int16))
        stop = self._should_stop
        return 1 if stop is not None and stop() else 0

    @staticmethod
    def _check(err: int, what: str) -> None:
        if err != _EE_OK:
            raise EngineUnavailable(ENGINE, f"{what} failed: {_ERRORS.get(err, err)}")


_loaded: dict[Optional[str], "ESpeakLibrary | EngineUnavailable"] = {}


def shared_library(library_path: Optional[str] = None, data_path: Optional[str] = None) -> ESpeakLibrary:
    """
    The process's one initialised :class:`ESpeakLibrary` for
    ``library_path``, loading and initialising it on first use.

    Blocking (a few ms the first time): call it from the worker thread.  A
    failure is remembered and raised again on every later call.

    :raises EngineUnavailable: if the library or its data cannot be loaded.
    :raises EngineRequestError: if it was already initialised with another
        data directory (the library holds one per process).
    """
    with ESpeakLibrary.lock:
        # Keyed by the real file, so that "bundled" and the bundled path
        # spelled out do not initialise the same library twice.
        key: Optional[str] = None
        try:
            key = os.path.realpath(library_path or _bundled_paths()[0])
        except (ImportError, RuntimeError):
            pass
        found = _loaded.get(key)
        if found is None:
            try:
                found = ESpeakLibrary(library_path, data_path)
                found.initialize()
            except EngineUnavailable as e:
                found = e
            _loaded[key] = found
        if isinstance(found, EngineUnavailable):
            raise EngineUnavailable(ENGINE, found.message)
        if data_path is not None and data_path != found.data_path:
            raise EngineRequestError(
                ENGINE, f"libespeak-ng already uses data {found.data_path!r}, not {data_path!r}"
            )
        return found


def espeak_available() -> bool:
    """
    Whether the bundled libespeak-ng and its data can be found and loaded.

    Cheap (an import and a ``dlopen``, no initialisation) and safe on the
    reactor thread; it does not prove that every voice works.
    """
    try:
        library, data = _bundled_paths()
        if not os.path.isfile(os.path.join(data, "phontab")):
            return False
        return hasattr(ctypes.CDLL(library), "espeak_Synth")
    except Exception:
        return False


# -- sentence splitting --------------------------------------------------------

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


# -- settings ------------------------------------------------------------------


def _option(key: str) -> str:
    return f"espeak-{key.replace('_', '-')}"


def _int_in(low: int, high: int) -> Callable[[Any, "attrs.Attribute[Any]", Any], None]:
    def check(instance: Any, attribute: "attrs.Attribute[Any]", value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(_option(attribute.name), f"[espeak] {attribute.name} = {value!r} is not a whole number")
        if not low <= value <= high:
            raise ConfigError(_option(attribute.name), f"[espeak] {attribute.name} = {value} is outside {low}..{high}")

    return check


def _voice_name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or not re.fullmatch(r"[\w+.-]+", value.strip()):
        raise ConfigError(_option(key), f"{value!r} is not an espeak-ng voice name like en-us or es")
    return value.strip()


def _voices(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError("espeak-voices", f"[espeak] voices must be a table of language = voice, not {value!r}")
    out: dict[str, str] = {}
    for lang, voice in value.items():
        if not isinstance(lang, str) or not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*", lang):
            raise ConfigError("espeak-voices", f"{lang!r} is not a language code like en or es-MX")
        out[lang.lower()] = _voice_name("voices", voice)
    return out


def _default_voice(value: Any) -> Optional[str]:
    if value is None or value is False or value == "":
        return None
    return _voice_name("default_voice", value)


@attrs.frozen
class ESpeakSettings:
    """
    What the espeak-ng engine speaks with.  Bad values raise
    :class:`~xlbridge.errors.ConfigError` naming the option
    (``espeak-rate-wpm`` for the TOML key ``rate_wpm``).

    :ivar voices: language (ISO 639-1 ``"es"``, or with a region
        ``"es-mx"``; matched without case) -> espeak-ng voice name.
    :ivar default_voice: voice for a language missing from ``voices``
        (warned once per language); ``None`` refuses such a language with
        :class:`~xlbridge.engines.base.EngineRequestError`.
    :ivar rate_wpm: speaking rate, words per minute (80..450; espeak's
        normal is 175).
    :ivar pitch: base pitch, 0..100 (50 = the voice's own).
    :ivar max_queue: requests in progress at most; more are refused with
        :class:`~xlbridge.engines.base.EngineUnavailable`.
    :ivar library_path: a libespeak-ng to use instead of the bundled one
        (e.g. Debian's ``libespeak-ng.so.1``); ``None`` = bundled.
    :ivar data_path: its ``espeak-ng-data`` directory; ``None`` = the
        bundled data (or the library's default for another library).
    """

    voices: Mapping[str, str] = attrs.field(
        factory=lambda: dict(DEFAULT_VOICES), converter=_voices, hash=False
    )
    default_voice: Optional[str] = attrs.field(default=DEFAULT_VOICE, converter=_default_voice)
    rate_wpm: int = attrs.field(default=175, validator=_int_in(*RATE_RANGE))
    pitch: int = attrs.field(default=50, validator=_int_in(*PITCH_RANGE))
    max_queue: int = attrs.field(default=16, validator=_int_in(1, 1024))
    library_path: Optional[str] = None
    data_path: Optional[str] = None

    @classmethod
    def from_options(cls, table: Mapping[str, Any]) -> "ESpeakSettings":
        """
        Settings from the ``[espeak]`` table of the TOML file.  Keys are the
        attribute names; ``voices`` is a sub-table and is merged over
        :data:`DEFAULT_VOICES`.

        :raises ConfigError: for an unknown key or a bad value, naming it.
        """
        known = [a.name for a in attrs.fields(cls)]
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(
                    _option(str(key)), f"unknown key {key!r} in [espeak] (known: {', '.join(known)})"
                )
            if key in ("library_path", "data_path") and value is not None:
                if not isinstance(value, str) or not value:
                    raise ConfigError(_option(key), f"[espeak] {key} must be a path, not {value!r}")
            values[key] = value
        if "voices" in values:
            values["voices"] = {**DEFAULT_VOICES, **_voices(values["voices"])}
        return cls(**values)

    def voice_for(self, language: str) -> Optional[str]:
        """
        The voice configured for ``language`` (``"es-MX"`` falls back to
        ``"es"``), or ``None`` if it has none of its own.
        """
        lang = language.strip().lower().replace("_", "-")
        if lang in self.voices:
            return self.voices[lang]
        return self.voices.get(lang.split("-", 1)[0])


# -- the engine ----------------------------------------------------------------


@attrs.define
class ESpeakCounters:
    """
    Counters for the status page; all cumulative since start.

    :ivar requests: :meth:`ESpeakTTS.synthesize` calls accepted.
    :ivar sentences: sentences synthesised.
    :ivar completed: requests spoken to the end.
    :ivar cancelled: requests cancelled by the caller.
    :ivar refused: requests refused because ``max_queue`` were in progress.
    :ivar errors: requests that failed (unknown voice or language, library
        failure).
    :ivar first_audio_ms: time from :meth:`ESpeakTTS.synthesize` to the first
        ``on_audio`` call of the latest request, in milliseconds.
    :ivar first_audio_history: the last 32 such values, oldest first.
    """

    requests: int = 0
    sentences: int = 0
    completed: int = 0
    cancelled: int = 0
    refused: int = 0
    errors: int = 0
    first_audio_ms: Optional[float] = None
    first_audio_history: "collections.deque[float]" = attrs.field(
        factory=lambda: collections.deque(maxlen=32)
    )

    def first_audio(self, ms: float) -> None:
        self.first_audio_ms = ms
        self.first_audio_history.append(ms)


class _Request:
    """
    One :meth:`ESpeakTTS.synthesize` call in progress.

    ``cancelled`` is written on the reactor thread and read by the worker
    (a plain attribute: reading a bool is atomic under the GIL).
    """

    def __init__(
        self,
        sentences: list[str],
        voice: str,
        on_audio: Callable[[Samples], None],
        started: float,
        canceller: Callable[["_Request"], None],
    ) -> None:
        self.sentences = sentences
        self.voice = voice
        self.on_audio = on_audio
        self.started = started
        self.index = 0
        self.delivered = 0
        self.cancelled = False
        self.deferred: Deferred[None] = Deferred(lambda d: canceller(self))


class ESpeakTTS:
    """
    The :class:`~xlbridge.engines.base.TTS` protocol over espeak-ng.

    :param reactor: provides ``IReactorTime`` and ``IReactorThreads``;
        results are delivered on its thread.
    :param settings: see :class:`ESpeakSettings`.

    :ivar counters: :class:`ESpeakCounters`.
    """

    name = "espeak"
    log = Logger()

    def __init__(self, reactor: Any, settings: ESpeakSettings = ESpeakSettings()) -> None:
        self.reactor = reactor
        self.settings = settings
        self.counters = ESpeakCounters()
        # One worker thread: the library must never run on two at once.
        # Each live request has at most one job queued; room is left for the
        # job of a cancelled request that has not come back yet.
        self._pool = ThreadPoolService(
            reactor, name="xlbridge-espeak", max_threads=1, max_queued=2 * settings.max_queue
        )
        self._live: set[_Request] = set()
        self._warned: set[str] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"<ESpeakTTS {self.settings!r}>"

    def synthesize(
        self, text: str, language: str, on_audio: Callable[[Samples], None]
    ) -> "Deferred[None]":
        """
        Speak ``text`` in ``language`` (ISO 639-1, ``"es"``), sentence by
        sentence.

        :param on_audio: called on the reactor thread once per sentence, in
            order, with that sentence's 16 kHz mono int16 native-order
            audio, as soon as it is synthesised.
        :return: fires after the last ``on_audio`` call; errbacks with an
            :class:`~xlbridge.engines.base.EngineError` (at once with
            :class:`EngineUnavailable` when ``max_queue`` requests are in
            progress); cancelling it stops before the next sentence and no
            further ``on_audio`` call happens.
        """
        if self._closed:
            return fail(EngineUnavailable(ENGINE, "engine closed"))
        try:
            voice = self._voice(language)
        except EngineRequestError as e:
            self.counters.errors += 1
            return fail(e)
        if len(self._live) >= self.settings.max_queue:
            self.counters.refused += 1
            return fail(EngineUnavailable(
                ENGINE, f"queue full: {len(self._live)} requests in progress"
            ))
        self.counters.requests += 1
        sentences = split_sentences(text)
        if not sentences:
            self.counters.completed += 1
            return succeed(None)
        request = _Request(sentences, voice, on_audio, self.reactor.seconds(), self._cancel)
        self._live.add(request)
        self._next(request)
        return request.deferred

    def close(self) -> "Deferred[None]":
        """
        Cancel every request in progress and stop the worker thread.

        The join happens here, on the caller's thread; it is short because
        cancelled jobs return without synthesising.  The library itself
        stays loaded for the life of the process.
        """
        self._closed = True
        for request in list(self._live):
            request.deferred.cancel()
        self._pool.stopService()
        return succeed(None)

    # -- internals -------------------------------------------------------------

    def _voice(self, language: str) -> str:
        voice = self.settings.voice_for(language)
        if voice is not None:
            return voice
        default = self.settings.default_voice
        if default is None:
            raise EngineRequestError(
                ENGINE, f"no voice for language {language!r} and no default voice"
            )
        if language not in self._warned:
            self._warned.add(language)
            self.log.warn(
                "espeak: no voice for language {language!r}; speaking it with {voice!r}",
                language=language, voice=default,
            )
        return default

    def _next(self, request: _Request) -> None:
        if request.index == len(request.sentences):
            self._live.discard(request)
            self.counters.completed += 1
            request.deferred.callback(None)
            return
        last = request.index == len(request.sentences) - 1
        d = self._pool.run(self._work, request, request.sentences[request.index], not last)
        d.addCallbacks(self._got, self._failed, callbackArgs=(request,), errbackArgs=(request,))

    def _work(self, request: _Request, sentence: str, end_pause: bool) -> Optional[Samples]:
        # Worker thread.
        if request.cancelled:
            return None
        s = self.settings
        lib = shared_library(s.library_path, s.data_path)
        with lib.lock:
            lib.set_voice(request.voice)
            lib.set_prosody(s.rate_wpm, s.pitch)
            raw = lib.synth(sentence, end_pause, lambda: request.cancelled)
        if request.cancelled:
            return None
        return resample(raw, lib.sample_rate, SAMPLE_RATE)

    def _got(self, audio: Optional[Samples], request: _Request) -> None:
        if request.cancelled:
            return
        request.index += 1
        self.counters.sentences += 1
        if audio is not None and len(audio):
            if not request.delivered:
                self.counters.first_audio((self.reactor.seconds() - request.started) * 1000.0)
            request.delivered += 1
            try:
                request.on_audio(audio)
            except BaseException:
                # The consumer's own bug: hand it back on its Deferred.
                self._live.discard(request)
                request.cancelled = True
                request.deferred.errback(Failure())
                return
            if request.cancelled:  # on_audio cancelled the request
                return
        self._next(request)

    def _failed(self, failure: Failure, request: _Request) -> None:
        if request.cancelled:
            return
        self._live.discard(request)
        request.cancelled = True
        self.counters.errors += 1
        if failure.check(EngineError):
            request.deferred.errback(failure)
        elif failure.check(PoolFull):
            request.deferred.errback(EngineUnavailable(ENGINE, "worker queue full"))
        else:
            self.log.failure("espeak: synthesis failed", failure)
            request.deferred.errback(
                EngineUnavailable(ENGINE, f"synthesis failed: {failure.getErrorMessage()}")
            )

    def _cancel(self, request: _Request) -> None:
        request.cancelled = True
        if request in self._live:
            self._live.discard(request)
            self.counters.cancelled += 1
