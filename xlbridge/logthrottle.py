"""
Throttled logging for failures that can repeat at packet rate.

A failure on the media path (a pipeline bug hit by every packet, a send
that keeps failing, an egress tick that keeps raising) would otherwise log
a line, often with a traceback, up to 50 times a second per leg.  A
:class:`LogThrottle` stands for one such failure site: it logs the first
occurrence at once, holds back the following ones for ``interval`` seconds,
and the first one logged after that says how many were held back ("12 more
in the last 10 s").  The leg's counters stay the exact record; the log only
has to say that it happens and show one traceback.

Design notes:

- Time comes from the injected clock (``IReactorTime``), read only when a
  failure happens; nothing runs while all is well, and nothing is
  scheduled, so a throttle never leaves a timer behind in a test.  The
  count held back since the last line is reported by the next line logged,
  or by :meth:`LogThrottle.flush`, which owners call when the leg stops or
  its call ends.
- Without a clock (an owner that has none yet), the window never ends:
  the first occurrence is logged and the rest wait for :meth:`flush`,
  which reports their number without a duration.
- A held-back occurrence costs a counter increment and a clock read: no
  :class:`~twisted.python.failure.Failure` is built for it.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

#: Seconds between two lines of one throttle.
DEFAULT_INTERVAL = 10.0

_SUFFIX = " ({throttled_count} more in the last {throttled_seconds:.0f} s)"


class LogThrottle:
    """
    One repeatable log message, logged at most once per ``interval``.

    Use :meth:`failure` (inside an ``except`` block, like
    ``Logger.failure``) or :meth:`warn` exactly as the ``Logger`` methods;
    lines that follow held-back occurrences carry the fields
    ``throttled_count`` (occurrences not logged since the previous line)
    and ``throttled_seconds`` (time since that line).

    :param log: where lines go (a class's ``Logger`` bound to its instance).
    :param clock: time source; ``None`` holds everything after the first
        occurrence until :meth:`flush`.
    :param interval: seconds from one logged line to the next.

    :ivar held: occurrences not logged since the last line.
    :ivar logged: lines written so far (summaries included).
    """

    def __init__(self, log: Logger, clock: Optional[IReactorTime], interval: float = DEFAULT_INTERVAL) -> None:
        if interval < 0:
            raise ValueError("interval must not be negative")
        self.log = log
        self.clock = clock
        self.interval = interval
        self.held = 0
        self.logged = 0
        self._since: Optional[float] = None  # when the last line was logged
        self._format = ""
        self._fields: dict[str, object] = {}

    def _now(self) -> float:
        return self.clock.seconds() if self.clock is not None else 0.0

    def _admit(self, format: str, fields: dict[str, object]) -> Optional[str]:
        """
        The format to log this occurrence with, or ``None`` to hold it back.
        """
        now = self._now()
        since = self._since
        if since is not None and now - since < self.interval:
            self.held += 1
            self._format, self._fields = format, fields
            return None
        self._since = now
        self.logged += 1
        if since is None or not self.held:
            self.held = 0
            return format
        fields["throttled_count"] = self.held
        fields["throttled_seconds"] = now - since
        self.held = 0
        return format + _SUFFIX

    def failure(self, format: str, failure: Optional[Failure] = None, **fields: object) -> None:
        """
        ``Logger.failure`` (the exception being handled if ``failure`` is
        not given), unless held back.
        """
        fmt = self._admit(format, fields)
        if fmt is not None:
            self.log.failure(fmt, failure, LogLevel.critical, **fields)

    def warn(self, format: str, **fields: object) -> None:
        """
        ``Logger.warn``, unless held back.
        """
        fmt = self._admit(format, fields)
        if fmt is not None:
            self.log.warn(fmt, **fields)

    def flush(self) -> None:
        """
        Report what was held back (one warning with the count and the last
        held occurrence's fields) and start afresh: the next occurrence is
        logged at once.
        """
        if self.held:
            now = self._now()
            fields = dict(self._fields)
            fields["throttled_count"] = self.held
            self.logged += 1
            if self.clock is None:
                self.log.warn("{throttled_count} more: " + self._format, **fields)
            else:
                fields["throttled_seconds"] = now - (self._since if self._since is not None else now)
                self.log.warn("{throttled_count} more in the last {throttled_seconds:.0f} s: " + self._format, **fields)
        self.held = 0
        self._since = None
        self._format, self._fields = "", {}


class OncePerKey:
    """
    A warning logged once per key (a peer's address and a reason), for
    refusals a hostile or broken peer can repeat at any rate: the first
    refusal of each key says who and why, the rest are only counted by the
    owner.  At most ``max_keys`` keys are remembered; past them, one
    summary line per ``summary_s`` says how many were not logged.

    :ivar unlogged: occurrences since the last summary that were not logged.
    """

    def __init__(self, log: Logger, clock: IReactorTime, max_keys: int = 256, summary_s: float = 60.0) -> None:
        self.log = log
        self.clock = clock
        self.max_keys = max_keys
        self.summary_s = summary_s
        self.unlogged = 0
        self._keys: set[object] = set()
        self._summary_at: Optional[float] = None

    def warn(self, key: object, format: str, summary: str, **fields: object) -> bool:
        """
        Log ``format`` if ``key`` is new (true then); else hold it back.
        ``summary`` (with ``{count}``) is the line logged for keys past
        ``max_keys``, at most once per ``summary_s``.
        """
        if key in self._keys:
            return False
        if len(self._keys) < self.max_keys:
            self._keys.add(key)
            self.log.warn(format, **fields)
            return True
        self.unlogged += 1
        now = self.clock.seconds()
        if self._summary_at is None or now - self._summary_at >= self.summary_s:
            self._summary_at = now
            self.log.warn(summary, count=self.unlogged)
            self.unlogged = 0
        return False
