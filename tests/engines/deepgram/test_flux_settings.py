"""
Tests for the Flux side of :mod:`xlbridge.engines.deepgram.settings`
(``api``, ``flux_model``, thresholds, languages), the ``/v2/listen`` URL
(:func:`xlbridge.engines.deepgram.flux.flux_url`) and the factory's choice.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.engines.deepgram.fixtures import KEY
from xlbridge.engines.coverage import check_directions, read_engine_settings
from xlbridge.engines.deepgram.asr import DeepgramASR
from xlbridge.engines.deepgram.factory import deepgram_asr_factory
from xlbridge.engines.deepgram.flux import FluxASR, flux_url
from xlbridge.engines.deepgram.settings import DeepgramSettings, language_problem
from xlbridge.errors import ConfigError


def error(**table: Any) -> str:
    """The message of the ConfigError the ``[deepgram]`` table raises."""
    try:
        DeepgramSettings.from_env({}, **table)
    except ConfigError as e:
        return str(e)
    raise AssertionError(f"no ConfigError for {table}")


class FluxSettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        s = DeepgramSettings()
        self.assertEqual((s.api, s.flux_model, s.eot_threshold, s.eager_eot_threshold, s.eot_timeout_ms),
                         ("nova", "flux-general-en", 0.7, None, 5000))
        self.assertEqual(s.asr_model, "nova-3")
        self.assertEqual(DeepgramSettings(api="flux").asr_model, "flux-general-en")

    def test_errors_name_the_setting(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            (dict(api="v2"), 'deepgram.api: must be "nova" (/v1/listen) or "flux" (/v2/listen)'),
            (dict(api=True), "deepgram.api: expected a string"),
            (dict(flux_model="nova-3"), "deepgram.flux_model: must be a Flux model (flux-general-en, "
                                        "flux-general-multi), got 'nova-3'"),
            (dict(eot_threshold=0.4), "deepgram.eot_threshold: must be 0.5..1.0, got 0.4"),
            (dict(eot_threshold="high"), "deepgram.eot_threshold: expected a number"),
            (dict(eager_eot_threshold=0.2), "deepgram.eager_eot_threshold: must be 0.3..0.9, got 0.2"),
            (dict(eager_eot_threshold=0.8), "deepgram.eager_eot_threshold: must not be above eot_threshold (0.7)"),
            (dict(eager_eot_threshold=True), "deepgram.eager_eot_threshold: expected a number"),
            (dict(eot_timeout_ms=100), "deepgram.eot_timeout_ms: must be 500..60000 ms, got 100"),
            (dict(eot_timeout_ms=1.5), "deepgram.eot_timeout_ms: expected a whole number"),
            (dict(api="flux", extra_params={"endpointing": "300", "keyterm": "x"}),
             "deepgram.extra_params: endpointing: /v1/listen parameters that Flux"),
            (dict(flux_modle="flux-general-en"), "deepgram.flux_modle: unknown setting; did you mean flux_model?"),
        ]
        for table, text in cases:
            self.assertIn(text, error(**table), table)

    def test_valid(self) -> None:
        s = DeepgramSettings.from_env({}, api="flux", flux_model="flux-general-multi", eot_threshold=0.8,
                                      eager_eot_threshold=0.4, eot_timeout_ms=3000)
        self.assertEqual((s.eot_threshold, s.eager_eot_threshold), (0.8, 0.4))
        # The same thresholds at the edges; Nova's extra_params are fine with api = "nova".
        DeepgramSettings(eot_threshold=1.0, eager_eot_threshold=0.9, eot_timeout_ms=60000)
        DeepgramSettings(extra_params={"endpointing": "300"})

    def test_spanish_leg_on_flux_general_en(self) -> None:
        """A Spanish leg on flux-general-en is a config error that says to use flux-general-multi."""
        s = DeepgramSettings(api="flux")
        problem = language_problem(s, "es-MX")
        assert problem is not None
        self.assertIn("deepgram (flux_model flux-general-en) cannot recognise 'es-MX'; it recognises en", problem)
        self.assertIn('set flux_model = "flux-general-multi" in [deepgram]', problem)
        self.assertIsNone(language_problem(s, "en-GB"))
        multi = DeepgramSettings(api="flux", flux_model="flux-general-multi")
        self.assertIsNone(language_problem(multi, "es"))
        self.assertIn('no Flux model does', language_problem(multi, "ko") or "")
        self.assertIsNone(language_problem(DeepgramSettings(), "ko"))  # nova-3 knows Korean

    def test_check_directions_refuses_it_at_start(self) -> None:
        engines = read_engine_settings({}, {"deepgram": {"api": "flux"}})
        kinds = {"asr": "cloud", "mt": "cloud", "tts": "cloud"}
        e = self.assertRaises(ConfigError, check_directions, kinds, engines, [("en", "es")])
        self.assertIn("flux-general-multi", str(e))
        engines = read_engine_settings({}, {"deepgram": {"api": "flux", "flux_model": "flux-general-multi"}})
        check_directions(kinds, engines, [("en", "es")])


class FluxURLTests(SynchronousTestCase):
    def query(self, url: str) -> dict[str, list[str]]:
        return parse_qs(urlsplit(url).query)

    def test_english(self) -> None:
        url = flux_url(DeepgramSettings(api="flux", base_url="ws://dg.test:1/v1/listen"), "en")
        self.assertTrue(url.startswith("ws://dg.test:1/v2/listen?"), url)
        q = self.query(url)
        self.assertEqual(q, {"model": ["flux-general-en"], "encoding": ["linear16"], "sample_rate": ["16000"],
                             "eot_threshold": ["0.7"], "eot_timeout_ms": ["5000"]})
        self.assertNotIn(KEY, flux_url(DeepgramSettings(api="flux", api_key=KEY), "en"))

    def test_eager_and_multi_hint(self) -> None:
        s = DeepgramSettings(api="flux", flux_model="flux-general-multi", eager_eot_threshold=0.5,
                             extra_params={"keyterm": "xlbridge"})
        q = self.query(flux_url(s, "es-MX"))
        self.assertEqual((q["eager_eot_threshold"], q["language_hint"], q["keyterm"]), (["0.5"], ["es"], ["xlbridge"]))
        self.assertEqual(urlsplit(flux_url(s, "es")).netloc, "api.deepgram.com")
        self.assertNotIn("language_hint", self.query(flux_url(s, "ko")))  # not a Flux language: no hint


class FactoryTests(SynchronousTestCase):
    def test_api_chooses_the_client(self) -> None:
        clock = MemoryReactorClock()
        nova = deepgram_asr_factory(clock, DeepgramSettings(api_key=KEY))("en", lambda e: None, "c", "1")
        flux = deepgram_asr_factory(clock, DeepgramSettings(api_key=KEY, api="flux"))("en", lambda e: None, "c", "1")
        self.assertIs(type(nova), DeepgramASR)
        assert isinstance(flux, FluxASR)
        self.assertEqual(flux.engine_name, "deepgram-flux")
        self.assertIn("/v2/listen?model=flux-general-en", flux.connection.url)
        self.assertNotIn(KEY, repr(flux))
