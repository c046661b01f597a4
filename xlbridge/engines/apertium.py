# -*- test-case-name: tests.test_apertium -*-
"""
Offline machine translation with Apertium (rule-based, Debian packages
``apertium`` and ``apertium-eng-spa``).

Design notes:

- One long-lived pipeline process per direction (mode ``eng-spa``,
  ``spa-eng``...), run under Twisted's process support
  (``reactor.spawnProcess`` and a :class:`ApertiumPipe` protocol), never a
  thread.  A one-shot ``apertium`` run costs 140-200 ms per sentence (it
  loads every transducer again); a kept pipeline answers in about 1 ms once
  its first sentence (~120 ms, the lazy transducer load) is through.

- The null-flush recipe (see ``OFFLINE.md`` §2).  ``apertium -z`` through
  the wrapper script never answers: its deformatter drops the NUL and its
  ``gawk`` reads ahead.  So the raw pipeline is generated once per mode by
  ``apertium-wblank-mode -z <modes_dir>/<mode>.mode`` (asynchronously, with
  ``getProcessOutputAndValue``, on first use) and run as
  ``bash -c SCRIPT apertium-pipe -n ''``: ``$1 = -n`` makes the generator
  leave unknown words unmarked (the wrapper's ``-u``), ``$2`` is the
  tagger's extra option.  Each sentence is written as
  ``escape(text) + "\\n\\0"`` (``lt-proc -z -b`` flushes only when a blank
  precedes the NUL) and the reply is everything up to the next NUL
  (:class:`NullFramer`).  There is no reformatter stage, so the reply still
  carries the input's escapes and is un-escaped here.

- ``lrx-proc`` 3.x never answers when an escaped ``\\^`` sits in the
  blank that ends a sentence (``"a ^"`` hangs, ``"a ^ b"`` does not).  So a
  ``^`` travels as a private-use stand-in (U+E05E), which the analysers
  treat as an ordinary blank, and is turned back on output.

- Framing: one sentence in flight per direction; the rest wait in a bounded
  FIFO (``max_queue``; beyond it a request errbacks
  :class:`~xlbridge.engines.base.EngineUnavailable` at once and is counted
  in ``rejected``).  Replies are matched to requests by order.  Input is
  normalised to one line first: a newline would split the stream into two
  replies, and a NUL would end the frame early.

- Failures: the pipeline is restarted when it exits, writes to stderr (it
  writes nothing there when healthy), sends output nobody asked for, or
  does not answer within ``timeout_s`` (``first_timeout_s`` for the first
  sentence after a spawn, which pays for the transducer load).  After a
  crash the sentence in flight is retried once on the new process; a
  second failure errbacks it.  A sentence that *timed out* is not retried:
  it errbacks at once, since a sentence that hung a pipeline would likely
  hang the next one too, and a late translation is worth nothing on a
  call.  Respawns back off (``backoff_initial_s`` doubling up to
  ``backoff_max_s``), and after ``max_failures`` failures in a row the
  waiting requests errback instead of waiting for a pipeline that keeps
  dying.  Pipelines run in their own session (``setsid``) so a kill reaches
  every stage, not just the shell.

- Everything runs on the reactor thread; the reactor is injected (it spawns
  processes and times the deadlines), nothing imports the global one.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import types
from typing import Any, Callable, Mapping, Optional, Sequence

import attrs
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.engines.base import EngineError, EngineRequestError, EngineUnavailable
from xlbridge.errors import ConfigError

ENGINE = "apertium"

#: What to tell a user whose machine has no Apertium.
INSTALL_HINT = "install the Debian packages apertium apertium-eng-spa (apt-get install apertium apertium-eng-spa)"

#: Bridge language pair (``source-target``, base codes) → Apertium mode.
DEFAULT_PAIRS: Mapping[str, str] = types.MappingProxyType({"en-es": "eng-spa", "es-en": "spa-eng"})

#: Programs the pipeline needs besides the mode's own (``apertium`` package).
_PROGRAMS = ("apertium-wblank-mode", "lt-proc")

#: Characters Apertium's stream format reserves; escaped with a backslash.
SPECIAL = "\\[]^$/<>@*#{}"
_ESCAPE_RE = re.compile(r"([\\\[\]^$/<>@*#{}])")
_UNESCAPE_RE = re.compile(r"\\(.)", re.S)
#: What a ``^`` travels as (see the module notes on ``lrx-proc``).
CARET_STAND_IN = "\ue05e"
#: Control characters and any whitespace (newline, NUL, U+2028...) → one space.
_BLANKS_RE = re.compile(r"[\s\x00-\x1f\x7f]+")
#: An unknown-word mark (``*word``, ``#word``, ``@word``) left in a reply.
_MARK_RE = re.compile(r"(?<![\\\w])([*#@])(?=\w)")
_PAIR_RE = re.compile(r"^[a-z]{2,3}-[a-z]{2,3}$")
_MODE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


# -- the stream format (pure) -------------------------------------------------


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


# -- settings -----------------------------------------------------------------


def _pairs(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError("config", f"[apertium] pairs must be a table like {{en-es = \"eng-spa\"}}, not {value!r}")
    out: dict[str, str] = {}
    for key, mode in value.items():
        pair = str(key).strip().lower()
        if not _PAIR_RE.match(pair):
            raise ConfigError("config", f"[apertium.pairs] {key!r} is not a pair like en-es")
        if not isinstance(mode, str) or not _MODE_RE.match(mode):
            raise ConfigError("config", f"[apertium.pairs] {key}: {mode!r} is not a mode name like eng-spa")
        out[pair] = mode
    return types.MappingProxyType(out)


def _positive(name: str) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not value > 0:
            raise ConfigError("config", f"[apertium] {name} must be > 0, not {value!r}")

    return check


def _number(kind: type, value: Any) -> Any:
    if isinstance(value, bool):
        raise ConfigError("config", f"[apertium] {value!r} is not a number")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError("config", f"[apertium] {value!r} is not a {kind.__name__}") from None


def _float(value: Any) -> float:
    return float(_number(float, value))


def _int(value: Any) -> int:
    return int(_number(int, value))


@attrs.frozen
class ApertiumSettings:
    """
    Where Apertium's modes are, which pairs to offer, and the time limits.
    Bad values raise :class:`~xlbridge.errors.ConfigError`.

    :ivar modes_dir: directory of ``<mode>.mode`` files.
    :ivar pairs: ``"source-target"`` (base codes) → mode name; the default
        is :data:`DEFAULT_PAIRS`.
    :ivar timeout_s: seconds a sentence may take before the pipeline counts
        as hung and is restarted.
    :ivar first_timeout_s: the same for the first sentence after a spawn,
        which loads the transducers (~120 ms on an idle machine).
    :ivar max_queue: requests that may wait per direction behind the one in
        flight; more are refused at once.
    :ivar backoff_initial_s: delay before respawning after a failure; it
        doubles with each failure in a row up to ``backoff_max_s``.
    :ivar max_failures: failures in a row after which waiting requests are
        failed rather than kept waiting.
    """

    modes_dir: str = attrs.field(default="/usr/share/apertium/modes", converter=str)
    pairs: Mapping[str, str] = attrs.field(default=DEFAULT_PAIRS, converter=_pairs)
    timeout_s: float = attrs.field(default=2.0, converter=_float, validator=_positive("timeout_s"))
    first_timeout_s: float = attrs.field(
        default=5.0, converter=_float, validator=_positive("first_timeout_s")
    )
    max_queue: int = attrs.field(default=32, converter=_int, validator=_positive("max_queue"))
    backoff_initial_s: float = attrs.field(
        default=0.1, converter=_float, validator=_positive("backoff_initial_s")
    )
    backoff_max_s: float = attrs.field(default=5.0, converter=_float, validator=_positive("backoff_max_s"))
    max_failures: int = attrs.field(default=3, converter=_int, validator=_positive("max_failures"))

    @classmethod
    def from_options(cls, table: Mapping[str, Any]) -> "ApertiumSettings":
        """
        Settings from the TOML file's ``[apertium]`` table, whose keys are
        the field names.  ``pairs`` ( ``[apertium.pairs]``) adds to or
        overrides :data:`DEFAULT_PAIRS`.

        :raises ConfigError: an unknown key or a bad value.
        """
        known = {a.name for a in attrs.fields(cls)}
        values = dict(table)
        for key in values:
            if key not in known:
                raise ConfigError("config", f"[apertium] unknown setting {key!r} (known: {', '.join(sorted(known))})")
        if "pairs" in values:
            values["pairs"] = {**DEFAULT_PAIRS, **_pairs(values["pairs"])}
        return cls(**values)

    def mode_path(self, mode: str) -> str:
        """
        The mode file for ``mode``.
        """
        return os.path.join(self.modes_dir, f"{mode}.mode")


def _install_problem(settings: ApertiumSettings, modes: Sequence[str]) -> Optional[str]:
    """
    Why these modes cannot run here, or ``None``.  Cheap file checks only.
    """
    missing = [p for p in _PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"Apertium is not installed ({', '.join(missing)} not found): {INSTALL_HINT}"
    for mode in modes:
        path = settings.mode_path(mode)
        if not os.path.isfile(path):
            return f"no Apertium mode {mode} ({path} not found): {INSTALL_HINT}, or the package for {mode}"
    return None


def apertium_available(settings: ApertiumSettings) -> bool:
    """
    Whether Apertium can run every configured pair: its programs are on
    ``PATH`` and each pair's mode file exists.  For the start-up decision
    between local and no MT; only looks at files.
    """
    return _install_problem(settings, sorted(set(settings.pairs.values()))) is None


def _base(code: str) -> str:
    return str(code).strip().lower().replace("_", "-").split("-")[0]


# -- one process --------------------------------------------------------------


class ApertiumPipe(ProcessProtocol):
    """
    One running pipeline process for one direction.  It frames stdout into
    replies and reports them, and reports the first sign of trouble (exit,
    stderr output, an endless reply) once; its owner decides what to do.

    :param mode: the Apertium mode, for logs.
    :param on_reply: called with ``(pipe, reply bytes)`` per NUL-ended reply.
    :param on_failure: called once with ``(pipe, reason)``.
    """

    log = Logger()

    def __init__(
        self,
        mode: str,
        on_reply: Callable[["ApertiumPipe", bytes], None],
        on_failure: Callable[["ApertiumPipe", str], None],
    ) -> None:
        self.mode = mode
        self.framer = NullFramer()
        #: Replies received so far (0 = the transducers are not loaded yet).
        self.replies = 0
        self.ended = False
        self._on_reply = on_reply
        self._on_failure = on_failure
        self._failed = False
        self._end_waiters: list[Deferred[None]] = []

    def outReceived(self, data: bytes) -> None:
        try:
            replies = self.framer.feed(data)
        except FrameTooLong as e:
            self._fail(e.message)
            return
        for reply in replies:
            if self._failed:
                return
            self.replies += 1
            self._on_reply(self, reply)

    def errReceived(self, data: bytes) -> None:
        self._fail(f"wrote to stderr: {data[:300].decode('utf-8', 'replace')!r}")

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        waiters, self._end_waiters = self._end_waiters, []
        for d in waiters:
            d.callback(None)
        self._fail(f"exited ({reason.value})")

    def _fail(self, reason: str) -> None:
        if not self._failed:
            self._failed = True
            self._on_failure(self, reason)

    def send(self, data: bytes) -> None:
        """
        Write one encoded sentence (:func:`encode_sentence`).
        """
        assert self.transport is not None
        self.transport.write(data)

    def kill(self) -> None:
        """
        SIGKILL every stage: the whole process group when the pipeline leads
        its own (spawned through ``setsid``), else the shell.
        """
        pid = getattr(self.transport, "pid", None)
        if self.ended or pid is None:
            return
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
                return
        except OSError:
            pass
        try:
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]
        except Exception:
            pass

    def close(self, reactor: Any, grace_s: float = 1.0) -> "Deferred[None]":
        """
        End the process: close its stdin (each stage exits at end of input)
        and kill it if it has not exited within ``grace_s``.  Fires when it
        has exited.
        """
        if self.ended or self.transport is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._end_waiters.append(d)
        killer = reactor.callLater(grace_s, self.kill)

        def stop_killer(result: None) -> None:
            if killer.active():
                killer.cancel()

        d.addCallback(stop_killer)
        self.transport.closeStdin()
        return d


# -- one direction ------------------------------------------------------------


@attrs.define
class ApertiumCounters:
    """
    What the engine did, for the monitor.  Updated on the reactor thread.

    :ivar sentences: sentences translated.
    :ivar restarts: pipelines respawned after a failure.
    :ivar timeouts: sentences that got no answer in time (each restarts).
    :ivar rejected: requests refused because a direction's queue was full.
    :ivar failed: requests that errbacked for any other reason.
    :ivar last_latency_ms: milliseconds from ``translate()`` to the result
        of the last translated sentence, queueing included.
    """

    sentences: int = 0
    restarts: int = 0
    timeouts: int = 0
    rejected: int = 0
    failed: int = 0
    last_latency_ms: Optional[float] = None


@attrs.define(eq=False)
class _Request:
    text: str
    deferred: "Deferred[str]"
    submitted: float
    attempts: int = 0


class _Direction:
    """
    The queue, the process and its restarts for one mode.
    """

    log = Logger()

    def __init__(self, reactor: Any, settings: ApertiumSettings, mode: str, counters: ApertiumCounters) -> None:
        self.reactor = reactor
        self.settings = settings
        self.mode = mode
        self.counters = counters
        self.pipe: Optional[ApertiumPipe] = None
        #: Every pipe not known to have exited, failed ones included, so
        #: :meth:`close` can wait for all of them.
        self._pipes: list[ApertiumPipe] = []
        self._queue: collections.deque[_Request] = collections.deque()
        self._inflight: Optional[_Request] = None
        self._script: Optional[str] = None
        self._starting: Optional[Deferred[None]] = None
        self._timer: Any = None
        self._restart_call: Any = None
        self._not_before = 0.0
        self._failures = 0
        self._restarting = False
        self._closed = False

    def submit(self, text: str) -> "Deferred[str]":
        if self._closed:
            return self._refuse("the engine is closed")
        if len(self._queue) >= self.settings.max_queue:
            self.counters.rejected += 1
            return fail(EngineUnavailable(ENGINE, f"{self.mode}: {len(self._queue)} sentences already waiting"))
        request = _Request(text, Deferred(lambda d: self._cancel(request)), self.reactor.seconds())
        self._queue.append(request)
        self._pump()
        return request.deferred

    def _refuse(self, why: str) -> "Deferred[str]":
        self.counters.failed += 1
        return fail(EngineUnavailable(ENGINE, why))

    def _cancel(self, request: _Request) -> None:
        if request in self._queue:
            self._queue.remove(request)
        # One in flight is left to finish; its reply is dropped.

    def _pump(self) -> None:
        if self._closed or self._inflight is not None or not self._queue:
            return
        if self.pipe is None:
            self._ensure_pipe()
            return
        request = self._queue.popleft()
        self._inflight = request
        request.attempts += 1
        first = self.pipe.replies == 0
        self.pipe.send(encode_sentence(request.text))
        timeout = self.settings.first_timeout_s if first else self.settings.timeout_s
        self._timer = self.reactor.callLater(timeout, self._timed_out, self.pipe, timeout)

    # -- process lifecycle --

    def _ensure_pipe(self) -> None:
        if self._closed or self.pipe is not None or self._starting is not None or self._restart_call is not None:
            return
        wait = self._not_before - self.reactor.seconds()
        if wait > 0:
            self._restart_call = self.reactor.callLater(wait, self._restart_due)
            return
        problem = _install_problem(self.settings, [self.mode])
        if problem is not None:
            self._fail_waiting(problem)
            return
        if self._script is None:
            d = getProcessOutputAndValue(
                shutil.which("apertium-wblank-mode") or "apertium-wblank-mode",
                ["-z", self.settings.mode_path(self.mode)],
                env=dict(os.environ),
                reactor=self.reactor,
            )
            # Set before the callbacks, which clear it (even if d has fired).
            self._starting = d
            d.addCallbacks(self._got_script, self._script_failed)
            d.addErrback(lambda f: self.log.failure("Apertium start-up for {mode}", f, mode=self.mode))
            return
        self._spawn()

    def _restart_due(self) -> None:
        self._restart_call = None
        self._ensure_pipe()

    def _got_script(self, result: tuple[bytes, bytes, int]) -> None:
        self._starting = None
        out, err, code = result
        script = out.decode("utf-8", "replace").strip()
        if self._closed:
            return
        if code != 0 or err.strip() or not script or script.startswith("-z"):
            self._fail_waiting(
                f"apertium-wblank-mode could not read {self.settings.mode_path(self.mode)} "
                f"(exit {code}: {err.decode('utf-8', 'replace').strip()[:200]!r})"
            )
            return
        self._script = script
        self._spawn()

    def _script_failed(self, failure: Failure) -> None:
        self._starting = None
        self._fail_waiting(f"apertium-wblank-mode failed: {failure.value}")

    def _spawn(self) -> None:
        assert self._script is not None
        shell = shutil.which("bash") or "/bin/sh"
        argv = [shell, "-c", self._script, "apertium-pipe", "-n", ""]
        setsid = shutil.which("setsid")
        if setsid is not None:
            argv.insert(0, setsid)
        pipe = ApertiumPipe(self.mode, self._reply, self._pipe_failed)
        try:
            self.reactor.spawnProcess(pipe, argv[0], argv, env=dict(os.environ))
        except OSError as e:
            self._fail_waiting(f"cannot start the {self.mode} pipeline: {e}")
            return
        if self._restarting:
            self._restarting = False
            self.counters.restarts += 1
            self.log.info("Apertium {mode} pipeline restarted", mode=self.mode)
        self.pipe = pipe
        self._pipes = [p for p in self._pipes if not p.ended] + [pipe]
        self._pump()

    def _fail_waiting(self, why: str) -> None:
        """
        Errback everything waiting (and in flight) with ``why``.
        """
        waiting = list(self._queue)
        self._queue.clear()
        if self._inflight is not None:
            waiting.insert(0, self._inflight)
            self._inflight = None
        for request in waiting:
            self._errback(request, why)

    def _errback(self, request: _Request, why: str) -> None:
        if not request.deferred.called:
            self.counters.failed += 1
            request.deferred.errback(EngineUnavailable(ENGINE, f"{self.mode}: {why}"))

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- events from the pipe --

    def _reply(self, pipe: ApertiumPipe, reply: bytes) -> None:
        if pipe is not self.pipe:
            return
        request = self._inflight
        if request is None:
            self._pipe_failed(pipe, f"sent output nobody asked for: {reply[:100]!r}")
            return
        self._stop_timer()
        self._inflight = None
        self._failures = 0
        if not request.deferred.called:
            self.counters.sentences += 1
            self.counters.last_latency_ms = (self.reactor.seconds() - request.submitted) * 1000.0
            request.deferred.callback(decode_reply(reply, request.text))
        self._pump()

    def _timed_out(self, pipe: ApertiumPipe, timeout: float) -> None:
        self._timer = None
        if pipe is not self.pipe:
            return
        self.counters.timeouts += 1
        # Not retried (see the module notes): take it out of flight first,
        # so the restart below does not queue it again.
        request, self._inflight = self._inflight, None
        self._pipe_failed(pipe, f"no answer within {timeout:g} s")
        if request is not None:
            self._errback(request, f"no answer within {timeout:g} s; the pipeline was restarted")

    def _pipe_failed(self, pipe: ApertiumPipe, reason: str) -> None:
        if pipe is not self.pipe:
            return
        self.pipe = None
        self._stop_timer()
        pipe.kill()
        self._failures += 1
        delay = min(self.settings.backoff_initial_s * 2 ** (self._failures - 1), self.settings.backoff_max_s)
        self._not_before = self.reactor.seconds() + delay
        self._restarting = True
        self.log.warn(
            "Apertium {mode} pipeline failed: {reason}; respawning in {delay:.2f} s",
            mode=self.mode, reason=reason, delay=delay,
        )
        request, self._inflight = self._inflight, None
        if request is not None:
            if request.attempts < 2:
                self._queue.appendleft(request)
            else:
                self._errback(request, f"the pipeline failed twice on this sentence ({reason})")
        if self._failures >= self.settings.max_failures:
            self._fail_waiting(f"the pipeline failed {self._failures} times in a row ({reason})")
        self._pump()

    def close(self) -> "Deferred[None]":
        self._closed = True
        self._stop_timer()
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None
        self._fail_waiting("the engine was closed")
        self.pipe = None
        pipes, self._pipes = self._pipes, []
        ds = [p.close(self.reactor) for p in pipes if not p.ended]
        if self._starting is not None:
            # Let ``apertium-wblank-mode`` finish rather than leave it running.
            ds.append(self._starting)
        return DeferredList(ds).addCallback(lambda _: None)


# -- the engine ---------------------------------------------------------------


class ApertiumMT:
    """
    :class:`~xlbridge.engines.base.MT` on local Apertium pipelines, one per
    direction, started on first use; build one per process and share it.

    Apertium translates sentence by sentence with no memory, so the
    ``context`` argument of :meth:`translate` is ignored.

    :param reactor: provides ``IReactorProcess`` (spawns the pipelines) and
        ``IReactorTime`` (deadlines, backoff, latency).
    :param settings: modes, pairs and limits.
    """

    name = ENGINE
    log = Logger()

    def __init__(self, reactor: Any, settings: ApertiumSettings = ApertiumSettings()) -> None:
        self.reactor = reactor
        self.settings = settings
        self.counters = ApertiumCounters()
        self._directions: dict[str, _Direction] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<ApertiumMT pairs={dict(self.settings.pairs)!r}>"

    def mode_for(self, source: str, target: str) -> Optional[str]:
        """
        The Apertium mode for bridge codes ``source`` → ``target`` (regional
        variants map to their base: ``en-US`` → ``en``), or ``None``.
        """
        return self.settings.pairs.get(f"{_base(source)}-{_base(target)}")

    def supported(self, source: str, target: str) -> bool:
        """
        Whether a pair is configured (not whether it is installed; see
        :func:`apertium_available`).
        """
        return self.mode_for(source, target) is not None

    def translate(
        self, text: str, source: str, target: str, context: Sequence[str] = ()
    ) -> "Deferred[str]":
        """
        Translate ``text`` from ``source`` to ``target``; ``context`` is
        ignored (Apertium has none).  Call on the reactor thread.

        Fires with the translation (``""`` at once for blank text), or
        errbacks with :class:`~xlbridge.engines.base.EngineRequestError`
        for a pair that is not configured and
        :class:`~xlbridge.engines.base.EngineUnavailable` when Apertium is
        missing, the queue is full, the pipeline hangs or keeps crashing,
        or the engine is closed.  Cancelling drops the request.
        """
        mode = self.mode_for(source, target)
        if mode is None:
            self.counters.failed += 1
            have = ", ".join(p.replace("-", "→") for p in sorted(self.settings.pairs))
            return fail(EngineRequestError(ENGINE, f"no language pair for {source}→{target} (configured: {have})"))
        line = normalise(text)
        if not line:
            return succeed("")
        if self._closed:
            self.counters.failed += 1
            return fail(EngineUnavailable(ENGINE, "the engine is closed"))
        direction = self._directions.get(mode)
        if direction is None:
            direction = self._directions[mode] = _Direction(self.reactor, self.settings, mode, self.counters)
        return direction.submit(line)

    def warm_up(self) -> "Deferred[None]":
        """
        Start every configured pipeline and push one sentence through each,
        so the first caller does not wait for the transducer load.  Fires
        when done; failures are logged, never raised.
        """
        ds = []
        for pair in sorted(self.settings.pairs):
            source, target = pair.split("-")
            d = self.translate("OK.", source, target)
            d.addErrback(self._warm_up_failed, pair)
            ds.append(d)
        return DeferredList(ds).addCallback(lambda _: None)

    def _warm_up_failed(self, failure: Failure, pair: str) -> None:
        self.log.warn("Apertium warm-up of {pair} failed: {why}", pair=pair, why=failure.getErrorMessage())

    def pipe(self, source: str, target: str) -> Optional[ApertiumPipe]:
        """
        The running pipeline for a pair, if any (monitoring, tests).
        """
        mode = self.mode_for(source, target)
        direction = self._directions.get(mode) if mode is not None else None
        return direction.pipe if direction is not None else None

    def close(self) -> "Deferred[None]":
        """
        Fail what is waiting and stop every pipeline (end of input, then a
        kill after a second).  Fires when all have exited.
        """
        self._closed = True
        ds = [d.close() for d in self._directions.values()]
        return DeferredList(ds).addCallback(lambda _: None)


__all__ = [
    "ApertiumCounters",
    "ApertiumMT",
    "ApertiumPipe",
    "ApertiumSettings",
    "DEFAULT_PAIRS",
    "NullFramer",
    "apertium_available",
    "decode_reply",
    "encode_sentence",
    "escape",
    "normalise",
    "unescape",
]
