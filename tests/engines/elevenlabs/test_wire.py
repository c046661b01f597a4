"""
Tests for :mod:`xlbridge.engines.elevenlabs.wire`: requests and messages
built, server bodies and messages read, failures mapped.  No reactor, no
socket.  PCM reassembly is tested in :mod:`tests.engines.elevenlabs.test_pcm`.
"""

from __future__ import annotations

import base64
import json

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.base import (
    EngineAuthError,
    EngineQuotaError,
    EngineRequestError,
    EngineUnavailable,
)
from xlbridge.engines.elevenlabs.wire import (
    END_OF_INPUT,
    KEEPALIVE,
    OUTPUT_FORMAT,
    STREAM_QUERY,
    ServerMessage,
    close_error,
    error_for_response,
    error_for_status,
    gather,
    init_message,
    language_code,
    parse_error_body,
    parse_server_message,
    scrub,
    stream_body,
    stream_input_url,
    stream_url,
    text_message,
    upgrade_status,
)

KEY = "sk_live_0123456789abcdef0123456789abcdef"
REDACTED = f"<redacted {len(KEY)} chars>"


class ErrorMappingTests(SynchronousTestCase):
    def body(self, status: str) -> bytes:
        return json.dumps({"detail": {"status": status, "message": f"m {KEY}"}}).encode()

    def test_table(self) -> None:
        for code, status, cls in [
            (401, "invalid_api_key", EngineAuthError),
            (401, "quota_exceeded", EngineQuotaError),
            (400, "quota_exceeded", EngineQuotaError),
            (429, "too_many_concurrent_requests", EngineUnavailable),
            (429, "system_busy", EngineUnavailable),
            (500, "", EngineUnavailable),
            (503, "", EngineUnavailable),
            (400, "voice_not_found", EngineRequestError),
            (404, "", EngineRequestError),
        ]:
            e = error_for_response(code, self.body(status), KEY)
            self.assertIs(type(e), cls, (code, status))
            self.assertNotIn(KEY, str(e))

    def test_422_and_garbage(self) -> None:
        e = error_for_response(422, b'{"detail":[{"loc":["body","text"],"msg":"Field required"}]}', KEY)
        self.assertIsInstance(e, EngineRequestError)
        self.assertIn("Field required", str(e))
        self.assertIsInstance(error_for_response(502, b"<html>bad gateway</html>", KEY), EngineUnavailable)

    def test_without_http_status(self) -> None:
        """In-band WebSocket errors have no HTTP status: the error code decides."""
        for status, cls in [
            ("invalid_api_key", EngineAuthError),
            ("quota_exceeded", EngineQuotaError),
            ("max_active_conversations", EngineUnavailable),
            ("max_character_limit_exceeded", EngineRequestError),
            ("", EngineUnavailable),
            ("something_new", EngineUnavailable),
        ]:
            self.assertIs(type(error_for_status(None, status, "m", KEY)), cls, status)

    def test_message(self) -> None:
        e = error_for_status(403, "", f"bad key {KEY}", KEY)
        self.assertIsInstance(e, EngineAuthError)
        self.assertEqual(e.engine, "elevenlabs")
        self.assertEqual(e.message, f"HTTP 403 bad key {REDACTED}")
        self.assertEqual(error_for_status(None, "", "", KEY).message, "error")
        self.assertEqual(len(error_for_status(500, "", "x" * 1000, KEY).message), 300)


class ParseErrorBodyTests(SynchronousTestCase):
    def test_shapes(self) -> None:
        for body, expected in [
            (b'{"detail": {"status": "voice_not_found", "message": "no voice"}}', ("voice_not_found", "no voice")),
            (b'{"detail": {"message": "no status"}}', ("", "no status")),
            (b'{"detail": [{"msg": "a"}, {"msg": "b"}, "c"]}', ("validation_error", "a; b; c")),
            (b'{"detail": "plain"}', ("", "plain")),
            (b"{}", ("", "")),
            (b"[1, 2]", ("", "[1, 2]")),
            (b"  <html>bad gateway</html>\n", ("", "<html>bad gateway</html>")),
            (b"\xff\xfe", ("", "\ufffd\ufffd")),
        ]:
            self.assertEqual(parse_error_body(body), expected, body)

    def test_garbage_is_cut_to_200_bytes(self) -> None:
        self.assertEqual(parse_error_body(b"x" * 1000), ("", "x" * 200))


class HelperTests(SynchronousTestCase):
    def test_language_code(self) -> None:
        for language, code in [("es", "es"), ("es-MX", "es"), (" PT_br ", "pt"), ("EN", "en"), ("", "")]:
            self.assertEqual(language_code(language), code, language)

    def test_scrub(self) -> None:
        self.assertEqual(scrub(f"key={KEY}, again {KEY}", KEY), f"key={REDACTED}, again {REDACTED}")
        self.assertEqual(scrub("nothing to hide", ""), "nothing to hide")

    def test_gather_waits_for_all_and_swallows_failures(self) -> None:
        first: Deferred[None] = Deferred()
        d = gather([first, fail(ValueError("ignored")), succeed(1)])
        self.assertNoResult(d)
        first.callback(None)
        self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(self.successResultOf(gather([])))


class StreamRequestTests(SynchronousTestCase):
    def test_url_and_query(self) -> None:
        self.assertEqual(
            stream_url("https://api.elevenlabs.io", "JBFqnCBsd6RMkjVDRZzb"),
            "https://api.elevenlabs.io/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream",
        )
        self.assertEqual(stream_url("http://h:1/p", "a/b c"), "http://h:1/p/v1/text-to-speech/a%2Fb%20c/stream")
        self.assertEqual(dict(STREAM_QUERY), {"output_format": "pcm_16000"})
        self.assertEqual(OUTPUT_FORMAT, "pcm_16000")

    def test_body(self) -> None:
        self.assertEqual(
            stream_body("hola", "eleven_multilingual_v2", None, None),
            {"text": "hola", "model_id": "eleven_multilingual_v2"},
        )
        vs = {"stability": 0.5}
        body = stream_body("hola", "eleven_flash_v2_5", "es", vs)
        self.assertEqual(
            body, {"text": "hola", "model_id": "eleven_flash_v2_5", "language_code": "es", "voice_settings": vs}
        )
        self.assertIsNot(body["voice_settings"], vs)


class StreamInputTests(SynchronousTestCase):
    def test_url(self) -> None:
        self.assertEqual(
            stream_input_url("wss://api.elevenlabs.io", "v/1", "eleven_flash_v2_5", 20, "es"),
            "wss://api.elevenlabs.io/v1/text-to-speech/v%2F1/stream-input"
            "?model_id=eleven_flash_v2_5&output_format=pcm_16000&inactivity_timeout=20&language_code=es",
        )
        self.assertEqual(
            stream_input_url("ws://127.0.0.1:8803", "v", "eleven_multilingual_v2", 180, None),
            "ws://127.0.0.1:8803/v1/text-to-speech/v/stream-input"
            "?model_id=eleven_multilingual_v2&output_format=pcm_16000&inactivity_timeout=180",
        )

    def test_client_messages(self) -> None:
        self.assertEqual(json.loads(init_message(None)), {"text": " "})
        self.assertEqual(
            json.loads(init_message({"stability": 0.5})), {"text": " ", "voice_settings": {"stability": 0.5}}
        )
        self.assertEqual(json.loads(text_message("hola")), {"text": "hola ", "flush": True})
        self.assertEqual(json.loads(text_message("hola ")), {"text": "hola ", "flush": True})
        self.assertEqual(json.loads(END_OF_INPUT), {"text": ""})
        self.assertEqual(json.loads(KEEPALIVE), {"text": " "})
        self.assertEqual(text_message("¿sí?"), '{"text": "\\u00bfs\\u00ed? ", "flush": true}'.encode())


class ServerMessageTests(SynchronousTestCase):
    def test_audio(self) -> None:
        payload = json.dumps({
            "audio": base64.b64encode(b"\x01\x02\x03").decode(), "isFinal": None,
            "normalizedAlignment": {"chars": ["a"], "charStartTimesMs": [0], "charDurationsMs": [10]},
        }).encode()
        msg = parse_server_message(payload)
        self.assertEqual(msg, ServerMessage(audio=b"\x01\x02\x03"))
        self.assertTrue(msg.has_audio)

    def test_final(self) -> None:
        for payload in (b'{"isFinal":true}', b'{"audio": null, "isFinal": true}', b'{"audio": "", "isFinal": 1}'):
            msg = parse_server_message(payload)
            self.assertEqual(msg, ServerMessage(is_final=True), payload)
            self.assertFalse(msg.has_audio)

    def test_audio_that_is_not_base64(self) -> None:
        for audio in ("not base64!", 12, ["AAA="]):
            msg = parse_server_message(json.dumps({"audio": audio}).encode())
            self.assertEqual(msg, ServerMessage(bad_audio=True), audio)
            self.assertTrue(msg.has_audio)

    def test_in_band_error(self) -> None:
        """As the service (and the fake) send them before closing 1008."""
        msg = parse_server_message(
            b'{"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}'
        )
        self.assertEqual(msg.error, ("invalid_api_key", "Invalid API key"))
        self.assertEqual(parse_server_message(b'{"error": "quota_exceeded"}').error, ("quota_exceeded", "quota_exceeded"))
        self.assertEqual(parse_server_message(b'{"message": "odd"}').error, ("", "odd"))
        self.assertEqual(parse_server_message(b'{"message": null}').error, ("", "None"))
        self.assertIsNone(parse_server_message(b'{"isFinal": false}').error)

    def test_json_that_is_not_an_object_reads_as_nothing(self) -> None:
        for payload in (b"[]", b"1", b'"audio"', b"null"):
            self.assertEqual(parse_server_message(payload), ServerMessage(), payload)

    def test_not_json(self) -> None:
        for payload in (b"", b"{", b"\xff\xfe", b"audio"):
            self.assertRaises(ValueError, parse_server_message, payload)


class UpgradeStatusTests(SynchronousTestCase):
    def test_status_line(self) -> None:
        for line, status in [
            ("HTTP/1.1 401 Unauthorized", 401),
            ("HTTP/1.1 101 Switching Protocols", 101),
            ("HTTP/1.1 abc", None),
            ("HTTP/1.1", None),
            ("", None),
            (None, None),
        ]:
            self.assertEqual(upgrade_status(line), status, line)


class CloseErrorTests(SynchronousTestCase):
    def test_refused_upgrade_is_mapped_by_its_status(self) -> None:
        e = close_error("connecting", 1006, "", 401, None, 0, KEY)
        self.assertIsInstance(e, EngineAuthError)
        self.assertEqual(e.message, "HTTP 401 WebSocket upgrade refused")
        self.assertIsInstance(close_error("connecting", 1006, "", 429, None, 0, KEY), EngineUnavailable)
        self.assertIsInstance(close_error("connecting", 1006, "", 404, None, 0, KEY), EngineRequestError)

    def test_upgrade_status_counts_only_while_connecting(self) -> None:
        e = close_error("speaking", 1006, "", 401, None, 0, KEY)
        self.assertEqual(e.message, "WebSocket closed while speaking (code 1006: )")
        e = close_error("connecting", 1006, "", 101, None, 0, KEY)
        self.assertEqual(e.message, "WebSocket closed while connecting (code 1006: )")

    def test_in_band_error_wins_over_the_reason(self) -> None:
        in_band = EngineQuotaError("elevenlabs", "quota")
        self.assertIs(close_error("speaking", 1008, "invalid_api_key", None, in_band, 0, KEY), in_band)

    def test_known_code_in_the_reason(self) -> None:
        e = close_error("speaking", 1008, f"quota_exceeded for {KEY}", None, None, 0, KEY)
        self.assertIsInstance(e, EngineQuotaError)
        self.assertNotIn(KEY, e.message)

    def test_otherwise_unavailable_saying_how_far_it_got(self) -> None:
        e = close_error("speaking", 1011, "x" * 300 + KEY, None, None, 4096, KEY)
        self.assertIsInstance(e, EngineUnavailable)
        self.assertEqual(e.message, f"WebSocket closed after 4096 bytes (code 1011: {'x' * 200})")
        e = close_error("ready", None, f"bye {KEY}", None, None, 0, KEY)
        self.assertEqual(e.message, f"WebSocket closed while ready (code None: bye {REDACTED})")
