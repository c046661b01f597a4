"""
Tests for :mod:`xlbridge.engines.elevenlabs.http`: the client over HTTP
streaming against the fake server on loopback (the shared body of
:class:`~tests.engines.elevenlabs.harness.ClientTests`, plus what only HTTP
has: the request body and the pooled connection).
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import CancelledError, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web._newclient import TransportProxyProducer
from twisted.web.iweb import IResponse

from tests.engines.elevenlabs.harness import KEY, ClientTests, Heard
from tests.fakes.elevenlabs import RecordedRequest
from xlbridge.engines.elevenlabs.http import MAX_ERROR_BODY, _abort, _read_limited


class HTTPClientTests(ClientTests, TestCase):
    transport = "http"
    timeout = 20

    def check_shape(self, rec: RecordedRequest, text: str, language: str) -> None:
        self.assertEqual(rec.path, f"/v1/text-to-speech/{rec.voice_id}/stream")
        self.assertEqual(rec.params, {"output_format": "pcm_16000"})
        self.assertEqual(rec.headers["xi-api-key"], KEY)
        self.assertTrue(rec.headers["content-type"].startswith("application/json"))
        self.assertEqual(rec.body, {"text": text, "model_id": "eleven_flash_v2_5", "language_code": language})

    @inlineCallbacks
    def test_connection_reused(self) -> Any:
        tts = self.make()
        for _ in range(3):
            yield tts.synthesize("bye", "en", Heard())
        self.assertEqual([r.connection_id for r in self.fake.requests], [1, 1, 1])
        self.assertEqual([r.new_connection for r in self.fake.requests], [True, False, False])

    @inlineCallbacks
    def test_voice_settings_in_body(self) -> Any:
        vs = {"stability": 0.5, "similarity_boost": 0.75, "speed": 1.1}
        yield self.make(voice_settings=vs).synthesize("bye", "en", Heard())
        self.assertEqual(self.fake.requests[0].body["voice_settings"], vs)


class _Connection:
    """Stands for the TCP connection under a response body."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def abortConnection(self) -> None:
        self.calls.append("abortConnection")

    def stopProducing(self) -> None:
        self.calls.append("stopProducing")


class _ErrorResponse:
    """A response whose body never ends (the peer went silent mid-body)."""

    code = 503

    def __init__(self, connection: object) -> None:
        self.connection = connection

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(TransportProxyProducer(self.connection))
        protocol.dataReceived(b'{"detail": {"status": "system_')


class AbortTests(SynchronousTestCase):
    def test_cancelled_error_body_aborts_its_connection(self) -> None:
        """The watchdog cancelling a half-read error body aborts the socket."""
        connection = _Connection()
        d = _read_limited(cast(IResponse, _ErrorResponse(connection)), MAX_ERROR_BODY)
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(connection.calls, ["abortConnection"])

    def test_without_abort_connection_the_producer_is_stopped(self) -> None:
        stopped: list[bool] = []
        proxy = TransportProxyProducer(object())
        proxy.stopProducing = lambda: stopped.append(True)  # type: ignore[method-assign]
        _abort(proxy)
        self.assertEqual(stopped, [True])
