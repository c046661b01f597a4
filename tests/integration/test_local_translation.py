"""
End to end with the local engines (the embedded default): real recordings
through the real bridge over loopback UDP reach the partner translated, in
both directions with Whisper (English -> Spanish and Spanish -> English),
and English -> Spanish with pocketsphinx.

Needs Debian's apertium, apertium-eng-spa and asterisk-core-sounds-en-g722
(scripts/setup.sh and .ci/run install them); skipped with a reason if they
are missing.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, TestCase

from xlbridge.audio.codecs import get_codec
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.engines.select import choose_engines
from xlbridge.events import Event, PlaybackStarted, TranscriptEvent, TranslationEvent
from xlbridge.pipeline.factory import translate_factory
from xlbridge.pipeline.translate import TranslateSettings
from xlbridge.tools.demo import EN_DIR, ES_DIR, load_g722
from xlbridge.tools.phone import Phone

from tests.engines.whisper.folders import NO_MODEL_REASON, real_model

RECORDING = os.path.join(EN_DIR, "conf-onlyperson.g722")  # "you are currently the only person in this conference"
#: "Por favor ingrese la clave de entrada para la conferencia" / "Por el momento, usted es la única persona en la conferencia"
ES_RECORDINGS = [os.path.join(ES_DIR, "conf-getpin.g722"), os.path.join(ES_DIR, "conf-onlyperson.g722")]


def level_after(report: Any, at_time: float, seconds: float = 1.0) -> float:
    """Level (dBFS) of what a phone heard in the ``seconds`` from reactor time ``at_time``."""
    heard = report.audio.astype(np.float64)
    at = int((at_time - report.packets[0][0]) * 16000)
    window = heard[max(0, at): max(0, at) + int(seconds * 16000)]
    return float(20 * np.log10(np.sqrt(np.mean(window**2)) / 32768 + 1e-12))


class LocalTranslationTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        if not os.path.exists(RECORDING):
            raise SkipTest("asterisk-core-sounds-en-g722 is not installed")
        if not os.path.exists("/usr/share/apertium/modes/eng-spa.mode"):
            raise SkipTest("apertium-eng-spa is not installed")

    def start_bridge(self, options: dict[str, Any], events: list[Event]) -> BridgeService:
        choice = choose_engines("local", reactor, {}, options, {"en", "es"})
        assert choice.engines is not None
        config = load_config({"ports": "7777=0,8888=0", "langs": "en,es"})  # default G.722 replies
        bridge = BridgeService(
            config, reactor,
            pipeline_factory=translate_factory(choice.engines, TranslateSettings(comfort_noise_dbfs=None)),
            observers=[events.append], services=choice.services,
        )
        bridge.privilegedStartService()
        bridge.startService()
        self.addCleanup(bridge.stopService)
        return bridge

    def phones(self, bridge: BridgeService, tracks: dict[str, Any]) -> list[Phone]:
        out = []
        for ext, audio in tracks.items():
            port = bridge.listeners[ext].port
            assert port is not None
            phone = Phone(reactor, audio, get_codec("slin16"), ("127.0.0.1", port.getHost().port), tail=1.0)
            listening = reactor.listenUDP(0, phone, interface="127.0.0.1")
            self.addCleanup(listening.stopListening)
            out.append(phone)
        return out

    @defer.inlineCallbacks
    def test_both_directions_translated_with_whisper(self) -> Any:
        """English into 7777 and Spanish into 8888, taking turns: each partner hears the other translated."""
        if real_model() is None:
            raise SkipTest(NO_MODEL_REASON)
        if not os.path.exists("/usr/share/apertium/modes/spa-eng.mode"):
            raise SkipTest("apertium-eng-spa is not installed")
        if not all(os.path.exists(p) for p in ES_RECORDINGS):
            raise SkipTest("asterisk-core-sounds-es-g722 is not installed")
        events: list[Event] = []
        bridge = self.start_bridge({}, events)
        gap = np.zeros(16000, np.int16)
        en = load_g722(RECORDING)
        es = [load_g722(p) for p in ES_RECORDINGS]
        # 7777 speaks, then 8888 twice, never at once; each track is silent while the other speaks.
        segments = [("7777", en), ("8888", es[0]), ("8888", es[1])]
        tracks = {"7777": [gap], "8888": [gap]}
        for who, clip in segments:
            for ext in tracks:
                tracks[ext].append(clip if ext == who else np.zeros_like(clip))
                tracks[ext].append(gap)
        full = {ext: np.concatenate(parts + [gap, gap]) for ext, parts in tracks.items()}
        reports = yield defer.gatherResults([p.play() for p in self.phones(bridge, full)])

        def finals(ext: str) -> list[str]:
            return [e.text.lower() for e in events if isinstance(e, TranscriptEvent) and e.is_final and e.extension == ext]

        def translations(ext: str) -> list[TranslationEvent]:
            return [e for e in events if isinstance(e, TranslationEvent) and e.extension == ext]

        self.assertTrue(any("only person" in t and "conference" in t for t in finals("7777")), finals("7777"))
        self.assertTrue(any("única persona" in t for t in finals("8888")), finals("8888"))
        self.assertTrue(any("conferencia" in t for t in finals("8888")), finals("8888"))
        to_es = [t.text.lower() for t in translations("7777")]
        to_en = [t.text.lower() for t in translations("8888")]
        self.assertTrue(any("persona" in t and "conferencia" in t for t in to_es), to_es)
        self.assertTrue(any("only person" in t for t in to_en), to_en)
        self.assertTrue(any("conference" in t for t in to_en), to_en)
        self.assertEqual({(t.source_language, t.language) for t in translations("8888")}, {("es", "en")})
        played = [e for e in events if isinstance(e, PlaybackStarted)]
        by_listener = {e.extension: e for e in played}
        self.assertEqual({(e.extension, e.language) for e in played}, {("8888", "es"), ("7777", "en")})
        for listener, report in (("7777", reports[0]), ("8888", reports[1])):
            start = by_listener[listener]
            self.assertIsNotNone(start.total_ms)
            self.assertGreater(level_after(report, start.time), -40, f"{listener} heard no speech")

    @defer.inlineCallbacks
    def test_english_recording_reaches_the_partner_as_spanish_speech(self) -> Any:
        """The same with pocketsphinx, the English fallback when no Whisper model is installed."""
        events: list[Event] = []
        bridge = self.start_bridge({"local_asr": {"engine": "pocketsphinx"}}, events)
        lead, tail = np.zeros(8000, np.int16), np.zeros(32000, np.int16)
        speech = np.concatenate([lead, load_g722(RECORDING), tail])
        phones = self.phones(bridge, {"7777": speech, "8888": np.zeros_like(speech)})
        reports = yield defer.gatherResults([p.play() for p in phones])

        finals = [e.text for e in events if isinstance(e, TranscriptEvent) and e.is_final and e.extension == "7777"]
        self.assertTrue(any("only person" in t and "conference" in t for t in finals), finals)
        translations = [e.text.lower() for e in events if isinstance(e, TranslationEvent)]
        self.assertTrue(any("persona" in t and "conferencia" in t for t in translations), translations)
        (played,) = [e for e in events if isinstance(e, PlaybackStarted)]
        self.assertEqual((played.extension, played.language), ("8888", "es"))
        self.assertIsNotNone(played.total_ms)
        # 8888 heard speech (G.722 back, decoded by the phone) after the
        # translation started: well above silence.
        self.assertGreater(level_after(reports[1], played.time), -40)
