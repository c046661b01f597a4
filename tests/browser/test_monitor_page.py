"""
The monitor page end to end: a translating bridge (scripted ASR, manual MT
and TTS) on loopback UDP with two simulated phones, the monitor on an
ephemeral port, and headless Chromium driven by Playwright.

Playwright's sync API runs in a worker thread (``deferToThread``) while the
reactor serves the bridge and the monitor; the worker reaches back into the
reactor with ``blockingCallFromThread`` to script the engines.

Needs ``/usr/bin/chromium`` (Debian's ``chromium``; override with
``XLBRIDGE_CHROMIUM``) and the ``playwright`` Python package; never
``playwright install``.  Screenshots go to ``_browser_screens/`` at the top
of the checkout (override with ``XLBRIDGE_BROWSER_SCREENS``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from xlbridge.audio.codecs import get_codec
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.engines.base import Engines, Transcript
from xlbridge.monitor.service import MonitorService, make_monitor
from xlbridge.pipeline.factory import translate_factory
from xlbridge.pipeline.translate import TranslateSettings
from xlbridge.testing_engines import ManualMT, ManualTTS, ScriptedASRFactory
from xlbridge.tools.phone import Phone, noise

reactor: Any = _reactor

CHROMIUM = os.environ.get("XLBRIDGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required", "--mute-audio",
]
TOKEN = "browser-test-token"
#: Opens listen-in too; the view token (TOKEN) does not.
LISTEN_TOKEN = "browser-listen-token"
SCREENS = Path(os.environ.get("XLBRIDGE_BROWSER_SCREENS") or Path(__file__).resolve().parents[2] / "_browser_screens")
#: Legs set up at run time are named like ARI channels: with a slash.
ARI_NAMES = ("PJSIP/7777-00000001", "PJSIP/8888-00000002")
#: Playwright's wait for each step, in ms.
STEP_MS = 10_000


def _playwright() -> Any:
    if not os.access(CHROMIUM, os.X_OK):
        raise SkipTest(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        raise SkipTest("the playwright Python package is not installed (pip install playwright)")
    return sync_api


class MonitorPageTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.sync_api = _playwright()
        self.asr = ScriptedASRFactory()
        self.mt = ManualMT()
        self.tts = ManualTTS()
        engines = Engines(self.asr, self.mt, self.tts, {"asr": "scripted", "mt": "manual", "tts": "manual"})
        cfg = load_config(
            {"ports": "7777=0,8888=0", "langs": "en,es", "reply-codec": "slin16", "call-timeout": 1.0}
        )
        settings = TranslateSettings(comfort_noise_dbfs=None)
        self.bridge = BridgeService(cfg, reactor, pipeline_factory=translate_factory(engines, settings))
        self.monitor: MonitorService = make_monitor(
            self.bridge, reactor, "tcp:0:interface=127.0.0.1", token=TOKEN, environ={},
            listen_token=LISTEN_TOKEN, status_interval=0.25, levels_interval=0.1,
        )
        self.monitor.setServiceParent(self.bridge)
        self.bridge.privilegedStartService()
        self.bridge.startService()
        self.addCleanup(lambda: self.bridge.stopService() if self.bridge.running else None)
        assert self.monitor.port is not None
        address: Any = self.monitor.port.getHost()
        self.base = f"http://127.0.0.1:{address.port}"
        self.phones = [self.phone("7777", seed=1), self.phone("8888", seed=2)]

    def phone(self, ext: str, seed: int) -> Phone:
        port: Any = self.bridge.listeners[ext].port
        assert port is not None
        return self.phone_to(port.getHost().port, seed)

    def phone_to(self, port: int, seed: int) -> Phone:
        # 30 s of quiet telephone-band noise: the call stays up until stop().
        audio = noise(30.0, level=0.1, seed=seed, lowpass_hz=3400)
        p = Phone(reactor, audio, get_codec("slin16"), ("127.0.0.1", port), tail=0.2)
        listening = reactor.listenUDP(0, p, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(p.stop)
        p.play().addErrback(lambda f: None)
        return p

    # -- in the reactor thread ------------------------------------------------

    def interim(self) -> None:
        now = reactor.seconds()
        self.asr.made["7777"].emit(Transcript("hello wor", False, False, 0.0, 0.5, now))

    @inlineCallbacks
    def translate(self) -> Any:
        """7777 says "hello world"; MT answers "hola mundo"; TTS speaks it."""
        now = reactor.seconds()
        self.asr.made["7777"].emit(Transcript("hello world", True, True, 0.0, 0.8, now))
        yield self.until(lambda: self.mt.requests)
        self.mt.requests[-1][4].callback("hola mundo")
        yield self.until(lambda: self.tts.requests)
        _, _, on_audio, done = self.tts.requests[-1]
        on_audio(noise(0.4, level=0.3, seed=3))
        done.callback(None)

    def hang_up(self) -> None:
        for p in self.phones:
            p.stop()

    def ari_like_call(self) -> None:
        """
        A call between two legs set up at run time and named like ARI
        channels, the way the ARI controller does it, with a phone on each.
        """
        endpoints = []
        self.ari_ports = []
        for i, name in enumerate(ARI_NAMES):
            ep = self.bridge.rtp_endpoint(name, lambda e, s, i=i: self.ari_room.audio_in(i, s))
            port = reactor.listenUDP(0, ep, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.bridge.attach_endpoint(name, ep, origin="ari")
            endpoints.append(ep)
            self.ari_ports.append(port)
        self.ari_room = self.bridge.open_room(ARI_NAMES, ("en", "es"), (endpoints[0], endpoints[1]), call_id="ari-call")
        self.ari_room.start_call()
        self.ari_phones = [self.phone_to(port.getHost().port, seed=10 + i) for i, port in enumerate(self.ari_ports)]

    def ari_hang_up(self) -> None:
        self.bridge.close_room(self.ari_room, "hangup")
        for name, phone, port in zip(ARI_NAMES, self.ari_phones, self.ari_ports):
            phone.stop()
            port.stopListening()
            self.bridge.detach_endpoint(name, port.protocol)

    @staticmethod
    @inlineCallbacks
    def until(condition: Callable[[], Any], seconds: float = 5.0) -> Any:
        for _ in range(int(seconds / 0.02)):
            if condition():
                return
            yield deferLater(reactor, 0.02, lambda: None)
        raise AssertionError(f"timed out waiting for {condition}")

    # -- in the worker thread -------------------------------------------------

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return blockingCallFromThread(reactor, fn, *args)

    def browse(self, scenario: Callable[[Any], None]) -> None:
        sync_api = self.sync_api
        profile = tempfile.mkdtemp(prefix="xlbridge-chromium-")
        try:
            with sync_api.sync_playwright() as pw:
                context = pw.chromium.launch_persistent_context(
                    profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                    viewport={"width": 1280, "height": 1000},
                )
                context.set_default_timeout(STEP_MS)
                try:
                    scenario(context)
                finally:
                    context.close()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    def shot(self, page: Any, name: str) -> None:
        SCREENS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)

    def watched_page(self, context: Any, http_errors: bool) -> tuple[Any, list[str]]:
        """A new page and the list its script errors (and, if asked, HTTP >= 400) go to."""
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(f"{m.text} {m.location}") if m.type == "error" else None)
        if http_errors:
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        return page, errors

    def live_scenario(self, context: Any) -> None:
        expect = self.sync_api.expect
        page, errors = self.watched_page(context, http_errors=True)
        try:
            page.goto(f"{self.base}/?token={LISTEN_TOKEN}")
            expect(page.locator("#conn")).to_have_attribute("data-state", "open")
            expect(page.locator("body")).to_have_attribute("data-listen", "yes")
            expect(page.locator("#listen-right")).to_be_hidden()
            leg_a = page.locator('.leg[data-extension="7777"]')
            leg_b = page.locator('.leg[data-extension="8888"]')
            expect(leg_a).to_be_visible()
            expect(leg_b).to_be_visible()
            expect(page.locator(".call-title")).to_have_text("7777 (en) ↔ 8888 (es)")
            expect(leg_a.locator(".state")).to_have_text("active")
            expect(leg_a.locator(".transport")).to_contain_text("slin16")
            expect(leg_a.locator(".engines")).to_have_text("asr scripted · mt manual · tts manual")
            expect(leg_a.locator(".remote")).to_contain_text("127.0.0.1:")

            # Level meters move above the floor: the phones are talking.
            page.wait_for_function(
                """() => [...document.querySelectorAll('.leg .meter-says')]
                       .filter(m => parseFloat(m.dataset.db) > -80).length === 2"""
            )

            # Captions: interim (greyed), then final with its translation.
            self.call(self.interim)
            expect(leg_a.locator(".interim")).to_have_text("hello wor")
            self.call(self.translate)
            line = leg_a.locator(".lines .line-said").last
            expect(line.locator(".final")).to_have_text("hello world")
            expect(line.locator(".translation")).to_have_text("→ es: hola mundo")
            expect(leg_a.locator(".interim")).to_have_text("")
            # The latency chart gets its bar when the translation plays.
            expect(page.locator("#latency")).to_have_attribute("data-bars", "1")

            # Listen to what 7777 says: frames arrive and are counted.
            leg_a.locator('.listen-btn[data-direction="says"]').click()
            expect(leg_a.locator('.listen-btn[data-direction="says"]')).to_have_class("listen-btn on")
            page.wait_for_function("() => parseInt(document.body.dataset.audioFrames || '0') >= 25")
            frames = int(leg_a.locator(".frames").text_content() or "0")
            self.assertGreaterEqual(frames, 25)
            stats = page.evaluate(
                "() => ({...window.xlMonitor.stats, rate: window.xlMonitor.audio.sampleRate,"
                " time: window.xlMonitor.audio.currentTime, audio: window.xlMonitor.audio.state})"
            )
            if os.environ.get("XLBRIDGE_BROWSER_DEBUG"):
                print("listen-in stats:", stats)
            self.assertGreaterEqual(stats["bytes"], 25 * (4 + 640))
            self.assertEqual(stats["rate"], 16000)
            self.assertGreater(stats["played"], 0)  # scheduled into the jitter buffer
            self.shot(page, "monitor-live")

            # Stop listening; hang up: the call moves to the recent list.
            leg_a.locator('.listen-btn[data-direction="says"]').click()
            self.call(self.hang_up)
            expect(page.locator("#calls .call")).to_have_count(0)
            recent = page.locator(".recent-call").first
            expect(recent.locator("summary")).to_contain_text("7777 (en) ↔ 8888 (es)")
            recent.locator("summary").click()
            expect(recent.locator(".transcript")).to_contain_text("hello world")
            expect(recent.locator(".transcript")).to_contain_text("hola mundo")
            self.shot(page, "monitor-recent")
            self.assertEqual(errors, [])
        except BaseException:
            self.shot(page, "monitor-failure")
            raise

    def ari_leg_scenario(self, context: Any) -> None:
        expect = self.sync_api.expect
        page, errors = self.watched_page(context, http_errors=False)
        try:
            page.goto(f"{self.base}/?token={LISTEN_TOKEN}")
            expect(page.locator("#conn")).to_have_attribute("data-state", "open")
            leg = page.locator(f'.leg[data-extension="{ARI_NAMES[0]}"]')
            expect(leg).to_be_visible()
            expect(leg.locator(".state")).to_have_text("active")
            button = leg.locator('.listen-btn[data-direction="says"]')
            button.click()
            expect(button).to_have_class("listen-btn on")
            expect(button).to_have_text("Stop: says")
            page.wait_for_function("() => parseInt(document.body.dataset.audioFrames || '0') >= 25")
            self.assertGreaterEqual(int(leg.locator(".frames").text_content() or "0"), 25)
            keys = page.evaluate("() => [...window.xlMonitor.listens.keys()]")
            self.assertEqual(keys, [f"{ARI_NAMES[0]}/says"])
            self.shot(page, "monitor-ari-leg")
            # The leg goes for good: the server ends the listen, the page forgets it.
            self.call(self.ari_hang_up)
            expect(leg).to_have_count(0)
            page.wait_for_function("() => window.xlMonitor.listens.size === 0")
            self.assertEqual(errors, [])
        except BaseException:
            self.shot(page, "monitor-ari-failure")
            raise

    def view_only_scenario(self, context: Any) -> None:
        """The view token: captions and meters, but no Listen buttons."""
        expect = self.sync_api.expect
        page, errors = self.watched_page(context, http_errors=True)
        try:
            page.goto(f"{self.base}/?token={TOKEN}")
            expect(page.locator("#conn")).to_have_attribute("data-state", "open")
            expect(page.locator("body")).to_have_attribute("data-listen", "no")
            expect(page.locator("#listen-right")).to_be_visible()
            expect(page.locator("#listen-right")).to_have_text("listen-in: needs the listen token")
            leg_a = page.locator('.leg[data-extension="7777"]')
            expect(leg_a).to_be_visible()
            expect(leg_a.locator(".listen")).to_be_hidden()
            expect(leg_a.locator('.listen-btn[data-direction="says"]')).to_be_hidden()
            self.call(self.interim)
            expect(leg_a.locator(".interim")).to_have_text("hello wor")
            self.shot(page, "monitor-view-only")
            self.assertEqual(page.evaluate("() => window.xlMonitor.listens.size"), 0)
            self.assertEqual(errors, [])
        except BaseException:
            self.shot(page, "monitor-view-only-failure")
            raise

    def denied_scenario(self, context: Any) -> None:
        expect = self.sync_api.expect
        for name, query in (("wrong", "?token=wrong"), ("missing", "")):
            page = context.new_page()
            page.goto(f"{self.base}/{query}")
            expect(page.locator("#access-error")).to_be_visible()
            expect(page.locator("#access-error")).to_contain_text("Access denied: check the token in the URL")
            expect(page.locator("#conn")).to_have_attribute("data-state", "denied")
            self.assertEqual(page.locator("#calls .call").count(), 0)
            self.shot(page, f"monitor-denied-{name}")
            page.close()

    # -- tests ----------------------------------------------------------------

    @inlineCallbacks
    def test_live_call_captions_listen_and_recent(self) -> Any:
        yield self.until(lambda: self.bridge.active_calls() and "7777" in self.asr.made)
        yield deferToThread(self.browse, self.live_scenario)
        self.assertEqual(self.bridge.active_calls(), [])

    @inlineCallbacks
    def test_ari_named_leg_listen(self) -> Any:
        self.ari_like_call()
        yield self.until(lambda: len(self.bridge.active_calls()) == 2)
        yield deferToThread(self.browse, self.ari_leg_scenario)
        self.assertEqual(self.bridge.dynamic_endpoints, {})

    @inlineCallbacks
    def test_view_token_has_no_listen_buttons(self) -> Any:
        yield self.until(lambda: self.bridge.active_calls() and "7777" in self.asr.made)
        yield deferToThread(self.browse, self.view_only_scenario)
        self.assertEqual(self.monitor.guard.refused, {})

    @inlineCallbacks
    def test_wrong_or_missing_token_shows_access_error(self) -> Any:
        yield deferToThread(self.browse, self.denied_scenario)
        self.assertGreaterEqual(sum(self.monitor.guard.refused.values()), 2)
