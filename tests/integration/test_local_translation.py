"""
End to end with the local engines (the embedded default): a real English
recording through the real bridge reaches the partner as Spanish speech.

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
from xlbridge.tools.demo import EN_DIR, load_g722
from xlbridge.tools.phone import Phone

RECORDING = os.path.join(EN_DIR, "conf-onlyperson.g722")  # "you are currently the only person in this conference"


class LocalTranslationTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        if not os.path.exists(RECORDING):
            raise SkipTest("asterisk-core-sounds-en-g722 is not installed")
        if not os.path.exists("/usr/share/apertium/modes/eng-spa.mode"):
            raise SkipTest("apertium-eng-spa is not installed")

    @defer.inlineCallbacks
    def test_english_recording_reaches_the_partner_as_spanish_speech(self) -> Any:
        events: list[Event] = []
        choice = choose_engines("local", reactor, {}, {}, {"en", "es"})
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

        lead, tail = np.zeros(8000, np.int16), np.zeros(32000, np.int16)
        speech = np.concatenate([lead, load_g722(RECORDING), tail])
        phones = []
        for ext, audio in (("7777", speech), ("8888", np.zeros_like(speech))):
            port = bridge.listeners[ext].port
            assert port is not None
            phone = Phone(reactor, audio, get_codec("slin16"), ("127.0.0.1", port.getHost().port), tail=1.0)
            listening = reactor.listenUDP(0, phone, interface="127.0.0.1")
            self.addCleanup(listening.stopListening)
            phones.append(phone)
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
        heard = reports[1].audio.astype(np.float64)
        first_arrival = reports[1].packets[0][0]
        at = int((played.time - first_arrival) * 16000)
        window = heard[at : at + 16000]
        level_db = 20 * np.log10(np.sqrt(np.mean(window**2)) / 32768 + 1e-12)
        self.assertGreater(level_db, -40)
