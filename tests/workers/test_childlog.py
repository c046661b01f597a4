"""
Tests for :mod:`xlbridge.workers.childlog`: the worker's one-line-per-event
observer, the supervisor's parser, and the bounded line splitter.
"""

from __future__ import annotations

import io
import sys

from twisted.logger import Logger, LogLevel
from twisted.python import log as legacy_log
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.workers import childlog
from xlbridge.workers.childlog import ChildLine, LineObserver, LineSplitter, format_event, observer, parse_line


def logged(emit: str, fmt: str, **kw: object) -> bytes:
    """What the observer writes for one event logged with ``Logger.<emit>``."""
    out = io.BytesIO()
    log = Logger(namespace="xlbridge.test", observer=LineObserver(out))
    getattr(log, emit)(fmt, **kw)
    return out.getvalue()


class ObserverTests(SynchronousTestCase):

    def test_one_line_per_event(self) -> None:
        self.assertEqual(logged("info", "hello {who}", who="you"), b"info [xlbridge.test] hello you\n")
        self.assertEqual(logged("warn", "slow"), b"warn [xlbridge.test] slow\n")
        self.assertEqual(logged("critical", "down"), b"critical [xlbridge.test] down\n")

    def test_utf8(self) -> None:
        self.assertEqual(logged("info", "{t}", t="¿qué tal? 你好"), "info [xlbridge.test] ¿qué tal? 你好\n".encode())

    def test_failure_adds_tab_led_traceback(self) -> None:
        out = io.BytesIO()
        log = Logger(namespace="ns", observer=LineObserver(out))
        try:
            raise ValueError("bad value")
        except ValueError:
            log.failure("it broke")
        first, *rest = out.getvalue().decode().rstrip("\n").split("\n")
        self.assertEqual(first, "critical [ns] it broke")
        self.assertTrue(rest and all(line.startswith("\t") for line in rest))
        self.assertEqual(rest[-1], "\tbuiltins.ValueError: bad value")

    def test_multiline_message(self) -> None:
        self.assertEqual(logged("error", "a\nb"), b"error [xlbridge.test] a\n\tb\n")

    def test_empty_event_skipped(self) -> None:
        out = io.BytesIO()
        LineObserver(out)({"log_level": LogLevel.info, "log_namespace": "x"})
        self.assertEqual(out.getvalue(), b"")

    def test_legacy_event_uses_system(self) -> None:
        event = {"message": ("legacy hi",), "isError": 0, "system": "HTTPChannel,0,1.2.3.4",
                 "time": 0.0, "log_namespace": "log_legacy", "log_system": "HTTPChannel,0,1.2.3.4",
                 "log_level": LogLevel.info, "log_format": "{log_text}", "log_text": "legacy hi"}
        self.assertEqual(format_event(event), "info [HTTPChannel,0,1.2.3.4] legacy hi")

    def test_legacy_log_msg(self) -> None:
        """A twisted.python.log.msg call, as old code in a worker makes it."""
        out = io.BytesIO()
        obs = LineObserver(out)
        from twisted.logger._legacy import publishToNewObserver  # what log.msg does with a new observer
        publishToNewObserver(obs, {"message": ("old", "style"), "isError": 0, "system": "-", "time": 0.0},
                             legacy_log.textFromEventDict)
        self.assertEqual(out.getvalue(), b"info [log_legacy] old style\n")

    def test_broken_pipe_swallowed(self) -> None:
        class Broken(io.BytesIO):
            def write(self, data: object) -> int:
                raise BrokenPipeError()

        LineObserver(Broken())({"log_level": LogLevel.info, "log_format": "x", "log_namespace": "n"})

    def test_factory_takes_stdout_now(self) -> None:
        """observer() binds to sys.stdout as it is when called (before twistd redirects it)."""
        buf = io.BytesIO()
        self.patch(sys, "stdout", io.TextIOWrapper(buf))
        obs = observer()
        self.patch(sys, "stdout", io.StringIO())
        obs({"log_level": LogLevel.warn, "log_format": "late", "log_namespace": "n"})
        self.assertEqual(buf.getvalue(), b"warn [n] late\n")

    def test_usable_as_twistd_logger(self) -> None:
        """twistd's --logger resolves a dotted name to a no-argument factory of an ILogObserver."""
        from twisted.logger import ILogObserver
        from twisted.python.reflect import namedAny
        factory = namedAny("xlbridge.workers.childlog.observer")
        self.assertIs(factory, childlog.observer)
        self.assertTrue(ILogObserver.providedBy(factory(io.BytesIO())))


class ParseTests(SynchronousTestCase):

    def test_round_trip(self) -> None:
        for level in LogLevel.iterconstants():
            line = format_event({"log_level": level, "log_namespace": "a.b", "log_format": "x [y] z"})
            self.assertEqual(parse_line(line), ChildLine(level, "a.b", "x [y] z"))

    def test_continuation(self) -> None:
        self.assertEqual(parse_line("\t  File x"), ChildLine(None, None, "  File x", continuation=True))

    def test_raw(self) -> None:
        for raw in ["Traceback (most recent call last):", "fatal [x] y", "info[x] y", "info x", ""]:
            self.assertEqual(parse_line(raw), ChildLine(None, None, raw))

    def test_empty_message(self) -> None:
        self.assertEqual(parse_line("info [ns] "), ChildLine(LogLevel.info, "ns", ""))
        self.assertEqual(parse_line("info [ns]"), ChildLine(LogLevel.info, "ns", ""))


class SplitterTests(SynchronousTestCase):

    def test_lines_across_chunks(self) -> None:
        s = LineSplitter()
        self.assertEqual(s.feed(b"ab"), [])
        self.assertEqual(s.feed(b"c\r\nd\n\ne"), ["abc", "d", ""])
        self.assertEqual(s.flush(), ["e"])
        self.assertEqual(s.flush(), [])

    def test_long_line_cut(self) -> None:
        s = LineSplitter(max_line=4)
        self.assertEqual(s.feed(b"abc"), [])
        self.assertEqual(s.feed(b"defgh"), ["abcd [cut]"])
        self.assertEqual(s.feed(b"ijk"), [])  # still the tail of the cut line: dropped
        self.assertEqual(s.feed(b"lm\nok\n"), ["ok"])
        self.assertEqual(s.cut, 1)

    def test_long_complete_line_cut(self) -> None:
        s = LineSplitter(max_line=4)
        self.assertEqual(s.feed(b"abcdefg\nhi\n"), ["abcd [cut]", "hi"])
        self.assertEqual(s.cut, 1)

    def test_memory_bounded(self) -> None:
        s = LineSplitter(max_line=1024)
        for _ in range(1000):
            s.feed(b"x" * 4096)
        self.assertLessEqual(len(s._buf), 1024)
        self.assertEqual(s.cut, 1)

    def test_bad_utf8(self) -> None:
        self.assertEqual(LineSplitter().feed(b"\xff ok\n"), ["\ufffd ok"])
