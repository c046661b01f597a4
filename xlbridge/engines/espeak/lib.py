"""
The ctypes binding to libespeak-ng (:class:`ESpeakLibrary`), the process's
one initialised instance (:func:`shared_library`) and the cheap
availability check, for :mod:`xlbridge.engines.espeak.tts`.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any, Callable, Mapping, Optional

import attrs
import numpy as np

from xlbridge.audio.frame import Samples
from xlbridge.engines.base import EngineRequestError, EngineUnavailable

ENGINE = "espeak"

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


@attrs.frozen
class VoiceList:
    """
    The voices of an espeak-ng data directory (its ``lang/`` and ``voices/``
    trees), read from the files: nothing is loaded.

    :ivar names: lower-case names a voice can be selected by: each voice
        file's name (``en-us``, ``es``) and its ``name`` line.
    :ivar languages: primary language subtag (``fr``) -> the voice files
        that speak it (``fr``, ``fr-be``, ``fr-ch``), sorted.
    """

    names: frozenset[str]
    languages: Mapping[str, tuple[str, ...]]

    def has(self, voice: str) -> bool:
        """Whether ``voice`` (``en-us``, ``en-us+f3``: a variant after ``+``) names a voice here."""
        return voice.split("+", 1)[0].strip().lower() in self.names


def read_voices(data_path: str) -> Optional[VoiceList]:
    """
    The voices of the espeak-ng data directory ``data_path``, or ``None``
    if it has no voices (not a data directory).  Blocks on a few hundred
    small files: call at start-up.
    """
    names: set[str] = set()
    languages: dict[str, set[str]] = {}
    for tree in ("lang", "voices"):
        for folder, _, files in os.walk(os.path.join(data_path, tree)):
            for file in files:
                voice = file.lower()
                names.add(voice)
                try:
                    with open(os.path.join(folder, file), encoding="utf-8", errors="replace") as f:
                        lines = f.read(4096).splitlines()
                except OSError:
                    continue
                for line in lines:
                    words = line.split()
                    if len(words) >= 2 and words[0] == "name":
                        names.add(" ".join(words[1:]).lower())
                    elif len(words) >= 2 and words[0] == "language" and tree == "lang":
                        languages.setdefault(words[1].lower().split("-")[0], set()).add(voice)
    if not names:
        return None
    return VoiceList(frozenset(names), {lang: tuple(sorted(v)) for lang, v in sorted(languages.items())})


def installed_voices(library_path: Optional[str] = None, data_path: Optional[str] = None) -> Optional[VoiceList]:
    """
    The voices the engine can use: those of ``data_path``, else of the
    bundled data (when the library is the bundled one too); ``None`` when
    that is not known (another library with its default data) or
    unreadable.
    """
    if data_path is None:
        if library_path is not None:
            return None
        try:
            data_path = _bundled_paths()[1]
        except Exception:
            return None
    return read_voices(data_path)
