"""
Tests for xlbridge.transports.websocket_codec: chan_websocket control
events in both formats (as Asterisk writes them, PROTOCOLS.md 10.3),
commands, limits and formats; the parser never raises.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.events import DropReason
from xlbridge.transports.websocket_codec import (
    MAX_COMMAND,
    QUEUE_FULL,
    XOFF_LEVEL,
    XON_LEVEL,
    BufferingCompleted,
    ControlFormat,
    DtmfEnd,
    Error,
    Malformed,
    MarkProcessed,
    MediaStart,
    QueueDrained,
    Status,
    Unknown,
    XOff,
    XOn,
    command,
    parse_event,
)
from xlbridge.transports.websocket_media import MAX_MESSAGE, media_format

# Messages as a real Asterisk (master f0c1c1a) wrote them.
PLAIN_START = (
    "MEDIA_START connection_id:662e514b-1b2c-4d5e-8f90-0123456789ab channel:WebSocket/INCOMING/0x7fb79c00f280 "
    "channel_id:1796623357.1 format:slin16 optimal_frame_size:640 ptime:20"
)
JSON_START = json.dumps(
    {
        "event": "MEDIA_START",
        "connection_id": "c007",
        "channel": "WebSocket/INCOMING/0x7f",
        "channel_id": "1796623373.4",
        "format": "slin16",
        "optimal_frame_size": 640,
        "ptime": 20,
        "channel_variables": {"MEDIA_WEBSOCKET_CONNECTION_ID": "c007", "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": "640"},
    },
    separators=(",", ":"),
)


class ParseEventTests(SynchronousTestCase):
    def test_media_start_plain(self) -> None:
        self.assertEqual(
            parse_event(PLAIN_START),
            MediaStart(
                connection_id="662e514b-1b2c-4d5e-8f90-0123456789ab",
                channel="WebSocket/INCOMING/0x7fb79c00f280",
                format="slin16",
                optimal_frame_size=640,
                ptime=20,
                channel_id="1796623357.1",
                control=ControlFormat.PLAIN,
            ),
        )

    def test_media_start_json_with_variables(self) -> None:
        ev = parse_event(JSON_START.encode())
        assert isinstance(ev, MediaStart)
        self.assertEqual((ev.connection_id, ev.optimal_frame_size, ev.ptime), ("c007", 640, 20))
        self.assertEqual(ev.control, ControlFormat.JSON)
        self.assertEqual(ev.channel_variables["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"], "640")

    def test_media_start_before_channel_id_existed(self) -> None:
        # 20.16/21.x/22.6 wrote no channel_id.
        ev = parse_event("MEDIA_START connection_id:media1 channel:WebSocket/media1/0x1 format:ulaw "
                         "optimal_frame_size:160 ptime:20")
        assert isinstance(ev, MediaStart)
        self.assertIsNone(ev.channel_id)
        self.assertEqual(ev.format, "ulaw")

    def test_status_both_formats(self) -> None:
        want = Status(99, 800, 900, False, True, False)
        plain = ("STATUS channel_id:1.1 queue_length:99 xon_level:800 xoff_level:900 queue_full:false "
                 "bulk_media:true media_paused:false")
        js = ('{"event":"STATUS","channel_id":"1.1","queue_length":99,"xon_level":800,"xoff_level":900,'
              '"queue_full":false,"bulk_media":true,"media_paused":false}')
        self.assertEqual(parse_event(plain), want)
        self.assertEqual(parse_event(js), want)

    def test_ids_bare_and_absent(self) -> None:
        self.assertEqual(parse_event("MEDIA_MARK_PROCESSED m1"), MarkProcessed("m1"))
        self.assertEqual(parse_event("MEDIA_MARK_PROCESSED"), MarkProcessed(""))
        self.assertEqual(parse_event("MEDIA_BUFFERING_COMPLETED b1"), BufferingCompleted("b1"))
        self.assertEqual(
            parse_event('{"event":"MEDIA_MARK_PROCESSED","channel_id":"1.1","correlation_id":"j1"}'),
            MarkProcessed("j1"),
        )
        self.assertEqual(
            parse_event('{"event":"MEDIA_BUFFERING_COMPLETED","channel_id":"1.1","correlation_id":""}'),
            BufferingCompleted(""),
        )

    def test_bare_events(self) -> None:
        for name, want in (("QUEUE_DRAINED", QueueDrained()), ("MEDIA_XOFF", XOff()), ("MEDIA_XON", XOn())):
            self.assertEqual(parse_event(name), want)
            self.assertEqual(parse_event(json.dumps({"event": name, "channel_id": "1.1"})), want)

    def test_dtmf(self) -> None:
        self.assertEqual(parse_event("DTMF_END digit:5 channel_id:1.1"), DtmfEnd("5"))
        self.assertEqual(parse_event('{"event":"DTMF_END","channel_id":"1.1","digit":"#"}'), DtmfEnd("#"))
        bad = parse_event("DTMF_END digit:55 channel_id:1.1")
        self.assertIsInstance(bad, Malformed)

    def test_error_text_keeps_spaces_and_loses_trailing_newline(self) -> None:
        self.assertEqual(
            parse_event("ERROR channel_id:1.1 error_text:SET_MEDIA_DIRECTION only supports JSON format.\n"),
            Error("SET_MEDIA_DIRECTION only supports JSON format."),
        )
        self.assertEqual(
            parse_event('{"event":"ERROR","channel_id":"1","error_text":"MARK_MEDIA not supported\\n"}'),
            Error("MARK_MEDIA not supported"),
        )

    def test_unknown_events_are_named(self) -> None:
        self.assertEqual(parse_event("MEDIA_SOMETHING_NEW a b c"), Unknown("MEDIA_SOMETHING_NEW"))
        self.assertEqual(parse_event('{"event":"NEW_THING","x":[1]}'), Unknown("NEW_THING"))

    def test_malformed_are_tokens(self) -> None:
        for text in (
            "",
            "   ",
            b"\xff\xfe",
            "{not json",
            "[1,2]",
            '{"event":5}',
            '{"no_event":1}',
            "MEDIA_START connection_id:x",  # fields missing
            "MEDIA_START connection_id:x channel:c format:slin16 optimal_frame_size:big ptime:20",
            "STATUS queue_length:1 xon_level:800 xoff_level:900 queue_full:maybe bulk_media:false media_paused:false",
            '{"event":"MEDIA_START","connection_id":"c","channel":"c","format":"slin16",'
            '"optimal_frame_size":true,"ptime":20}',
            "DTMF_END nocolon",
            "{}",
            "bad!name x",
        ):
            token = parse_event(text)
            self.assertIsInstance(token, Malformed, text)
            assert isinstance(token, Malformed)
            self.assertEqual(token.reason, DropReason.WEBSOCKET_MALFORMED)

    @given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
    def test_never_raises(self, text: str | bytes) -> None:
        parse_event(text)

    @given(st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=10,
    ), st.sampled_from(["MEDIA_START", "STATUS", "DTMF_END", "ERROR", "MEDIA_MARK_PROCESSED", "X"]))
    def test_any_json_shape_never_raises(self, value: object, name: str) -> None:
        parse_event(json.dumps({"event": name, "connection_id": value, "queue_length": value, "digit": value,
                                "error_text": value, "correlation_id": value, "channel_variables": value}))

    @given(st.sampled_from(["MEDIA_START", "STATUS", "DTMF_END", "ERROR", "MEDIA_MARK_PROCESSED"]),
           st.lists(st.text(st.characters(blacklist_categories=["Zs", "Cc"]), max_size=12), max_size=8))
    def test_any_plain_fields_never_raise(self, name: str, words: list[str]) -> None:
        parse_event(" ".join([name, *words]))


class CommandTests(SynchronousTestCase):
    def test_plain_and_json(self) -> None:
        self.assertEqual(command("FLUSH_MEDIA"), "FLUSH_MEDIA")
        self.assertEqual(command("MARK_MEDIA", "u12"), "MARK_MEDIA u12")
        self.assertEqual(command("MARK_MEDIA", "u12", ControlFormat.JSON),
                         '{"command":"MARK_MEDIA","correlation_id":"u12"}')
        self.assertEqual(json.loads(command("GET_STATUS", control=ControlFormat.JSON)), {"command": "GET_STATUS"})

    def test_refuses_what_asterisk_would_ignore(self) -> None:
        self.assertRaises(ValueError, command, "MARK_MEDIA", "x" * 200)
        self.assertRaises(ValueError, command, "MARK_MEDIA", "x" * (MAX_COMMAND - 30), ControlFormat.JSON)
        self.assertRaises(ValueError, command, "mark_media")  # names are case-sensitive
        self.assertRaises(ValueError, command, "MARK_MEDIA", "two words")
        self.assertEqual(len(command("MARK_MEDIA", "x" * (MAX_COMMAND - 11))), MAX_COMMAND)


class ConstantsTests(SynchronousTestCase):
    def test_limits(self) -> None:
        self.assertEqual((MAX_MESSAGE, XOFF_LEVEL, XON_LEVEL, QUEUE_FULL), (65527, 900, 800, 1000))

    def test_formats(self) -> None:
        self.assertEqual([(media_format(n).rate, media_format(n).frame_bytes) for n in ("slin16", "slin", "ulaw", "alaw")],
                         [(16000, 640), (8000, 320), (8000, 160), (8000, 160)])
        with self.assertRaises(ValueError) as e:
            media_format("opus")
        self.assertIn("slin16", str(e.exception))
