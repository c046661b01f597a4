"""
The twistd plugin's options and service maker: the composition root.

``twistd -n xlbridge --ports 7777,8888`` lands here.  This module (and the
tools) may fall back to the global reactor; everything else takes one.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, cast

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from xlbridge.audio.codecs import CODEC_NAMES
from xlbridge.bridge import BridgeService
from xlbridge.config import ENGINES, BridgeConfig, load_config
from xlbridge.engines.select import choose_engines, missing_keys
from xlbridge.errors import ConfigError
from xlbridge.eventlog import EventLogService
from xlbridge.events import EngineStatusEvent, Event, PlaybackStarted, TranscriptEvent, UtteranceDropped
from xlbridge.pipeline.factory import translate_factory

log = Logger()


class Options(usage.Options):
    """
    Command-line options of ``twistd xlbridge``.  Every option can also be
    set in the TOML file given with ``--config``; the command line wins.
    """

    synopsis = "[options]"
    longdesc = (
        "xlbridge: a real-time interpreter between two phone callers. "
        "Asterisk sends each extension's audio as RTP to its own UDP port, "
        "or connects to its own TCP port with AudioSocket; "
        "each caller hears the other. See README.rst."
    )

    optParameters = [
        ["ports", "p", None,
         "Extensions, paired in order (1st with 2nd, ...). EXT receives RTP on UDP port EXT; "
         "EXT=PORT maps it elsewhere; A-B is a range of consecutive extensions. "
         "[default: 7777,8888, or none when --audiosocket is given]"],
        ["audiosocket", "a", None,
         "AudioSocket extensions, paired in order like --ports, independent of the --ports pairs: "
         "EXT=PORT listens for Asterisk's AudioSocket TCP connection for EXT on PORT (same syntax "
         "as --ports). Call ids are the AudioSocket UUIDs. [default: none]"],
        ["langs", "l", None, "Language per extension in pair order, repeated per pair. [default: en,es]"],
        ["engines", "e", None,
         f"Speech engines: {'|'.join(ENGINES)}. 'relay' passes each caller's voice through "
         "untranslated. [default: auto]"],
        ["codec", "c", None, f"What Asterisk sends: {'|'.join(CODEC_NAMES)}. [default: slin16]"],
        ["reply-codec", "r", None,
         "What xlbridge sends back. [default: g722 for slin16 (Asterisk drops PT 118 it receives), "
         "else the same as --codec]"],
        ["payload-types", None, None,
         "Override RTP payload types, e.g. slin16=118,g722=9. [default: Asterisk's]"],
        ["interface", "i", None, "Address to bind the RTP and AudioSocket ports on. [default: 127.0.0.1]"],
        ["config", None, None, "TOML settings file (sample: etc/xlbridge.toml)."],
        ["latch-timeout", None, None,
         "Seconds without packets from the latched source before a new source may latch. [default: 5]"],
        ["reorder-depth", None, None, "Packets held to reorder inbound RTP. [default: 3]"],
        ["relay-buffer-ms", None, None, "Bound of each leg's outbound buffer in relay mode, ms. [default: 200]"],
        ["max-burst", None, None, "Most packets per leg sent in one tick to catch up after a stall. [default: 3]"],
        ["call-timeout", None, None, "Seconds without audio on either leg before a call ends. [default: 10]"],
        ["events", None, None, "Write every transcript, translation and playback event to PATH as JSON lines."],
        ["granularity", None, None,
         "segment: translate and speak each final ASR segment at once; utterance: wait for the "
         "end of the utterance. [default: segment]"],
        ["backlog", None, None, "Most seconds of pending translated speech per listener. [default: 10]"],
        ["echo-guard", None, None, "text|gate|both|off: keep a caller's own translated speech from "
         "being translated back. [default: text]"],
        ["fallback", None, None, "relay|silence: what the listener hears while an engine is down. "
         "[default: relay]"],
        ["comfort-noise", None, None, "Comfort noise level in dBFS between translations, or off. [default: -60]"],
        ["bed", None, None, "Level in dB of the partner's original voice under translations, or off. "
         "[default: off]"],
        ["gain", None, None, "Output gain of translated speech in dB. [default: 0]"],
        ["monitor", "m", None, "strports endpoint of the monitor (web page, /api/calls, /metrics), or none. "
         "[default: tcp:3001:interface=127.0.0.1]"],
        ["sync-directions", None, None, "yes|no: delay the faster direction so both callers hear "
         "translations with the same lag. [default: no]"],
        ["sync-max-ms", None, None, "Most delay direction sync adds, ms. [default: 1500]"],
        ["ari", None, None,
         "Asterisk ARI base URL, e.g. http://127.0.0.1:8088: xlbridge pairs callers sent to "
         "Stasis(APP,room=R,lang=L) itself. [default: off]"],
        ["ari-user", None, None, "ARI user (ari.conf)."],
        ["ari-password-file", None, None, "File holding the ARI password (never logged)."],
        ["ari-app", None, None, "Stasis application name. [default: xlbridge]"],
        ["rtp-ports", None, None, "UDP port range for ExternalMedia RTP legs. [default: 20000-29999]"],
        ["ari-external-host", None, None,
         "Address Asterisk sends ExternalMedia RTP to. [default: --interface, or 127.0.0.1]"],
        ["on-partner-hangup", None, None, "hangup|keep|prompt: what happens to a caller whose partner hung "
         "up; prompt plays --partner-hangup-sound first, then hangs up. [default: hangup]"],
        ["partner-hangup-sound", None, None, "ARI media URI played with --on-partner-hangup prompt, in the "
         "caller's language. [default: sound:vm-goodbye]"],
        ["ari-media", None, None, "rtp|audiosocket: ExternalMedia as RTP to a --rtp-ports port per caller, "
         "or AudioSocket (slin16) to one TCP port for all callers. [default: rtp]"],
        ["ari-audiosocket-port", None, None, "TCP port (on --interface) Asterisk connects to with "
         "--ari-media audiosocket. [default: 9092]"],
        ["ari-dial-timeout", None, None, "Seconds a dial= callee may ring unanswered. [default: 30]"],
    ]

    def postOptions(self) -> None:
        try:
            self.config: BridgeConfig = load_config(
                {k: v for k, v in self.items() if k != "config"}, self["config"]
            )
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        engines = self.config.engines
        if engines == "cloud":
            missing = missing_keys(os.environ, self.config.engine_options)
            if missing:
                raise usage.UsageError(
                    f"--engines cloud needs API keys: set {', '.join(missing)} "
                    "(or api_key/auth_key in the TOML file's engine sections)"
                )


def makeService(options: Options, reactor: Optional[Any] = None) -> IService:
    """
    Build the bridge from parsed options.

    :param reactor: defaults to the global reactor (only here and in tools);
        it must provide what the bridge (:class:`~xlbridge.bridge.IBridgeReactor`),
        the ARI controller (:class:`~xlbridge.ari.reactor.IARIReactor`) and the
        monitor (:class:`~xlbridge.monitor.service.IMonitorReactor`) use.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        # Typed as a few common interfaces only; the real one has them all.
        reactor = cast(Any, global_reactor)
    config: BridgeConfig = options.config
    try:
        languages = {lang for pair in config.pairs for lang in pair.languages}
        if config.ari is not None:
            languages.update(config.ari.languages)
        choice = choose_engines(config.engines, reactor, os.environ, config.engine_options, languages)
    except ConfigError as e:
        raise usage.UsageError(str(e)) from None
    for warning in choice.warnings:
        log.warn("{warning}", warning=warning)
    services: list[IService] = list(choice.services)
    observers: list[Callable[[Event], None]] = [log_event]
    if config.events:
        eventlog = EventLogService(config.events, reactor)
        services.append(eventlog)
        observers.append(eventlog)
    factory = (
        translate_factory(choice.engines, config.translation) if choice.engines is not None else None
    )
    if choice.engines is not None:
        log.info("engines: {names}", names=", ".join(f"{k}={v}" for k, v in choice.engines.names.items()))
    def speech(lang: str) -> str:
        """A leg's language with the recogniser it gets, for the log."""
        engine_for = getattr(choice.engines.asr, "engine_for", None) if choice.engines is not None else None
        return f"{lang}, asr {engine_for(lang)}" if engine_for is not None else lang

    for pair in config.pairs[:4]:
        log.info(
            "pair {a} ({ka} port {pa}, {la}) <-> {b} ({kb} port {pb}, {lb})",
            a=pair.extensions[0], b=pair.extensions[1], pa=pair.ports[0], pb=pair.ports[1],
            la=speech(pair.languages[0]), lb=speech(pair.languages[1]),
            ka=_transport_label(pair.transports[0]), kb=_transport_label(pair.transports[1]),
        )
    if len(config.pairs) > 4:
        log.info("... {n} pairs in all", n=len(config.pairs))
    log.info(
        "codec {codec} in, {reply} back, on {iface}",
        codec=config.codec, reply=config.reply_codec, iface=config.interface,
    )
    bridge = BridgeService(config, reactor, pipeline_factory=factory, observers=observers, services=services)
    if config.ari is not None:
        from xlbridge.ari.controller import ARIController

        ari = config.ari
        media = (
            f"AudioSocket on TCP port {ari.audiosocket_port}" if ari.media == "audiosocket"
            else f"RTP ports {ari.rtp_ports[0]}-{ari.rtp_ports[1]}"
        )
        log.info("ARI {url} as {user}, app {app}, {media}", url=ari.url, user=ari.user, app=ari.app, media=media)
        ARIController(bridge, ari, reactor).setServiceParent(bridge)  # stops before the calls
    if config.monitor.strip().lower() != "none":
        from xlbridge.monitor.service import make_monitor

        try:
            monitor = make_monitor(
                bridge, reactor, config.monitor, config.monitor_token, config.monitor_metrics_open
            )
        except ValueError as e:
            raise usage.UsageError(f"--monitor: {e}") from None
        monitor.setServiceParent(bridge)  # starts after the calls container, stops before it
    return bridge


def log_event(event: Event) -> None:
    """
    Log what an operator watching the console wants to see: final
    transcripts, translations with latency, engine trouble, dropped speech.
    """
    if isinstance(event, TranscriptEvent):
        if event.is_final and event.text:
            log.info("{ext} said: {text}", ext=event.extension, text=event.text, call_id=event.call_id)
    elif isinstance(event, PlaybackStarted):
        log.info(
            "{ext} hears ({lang}): {text} [total {total} ms: asr {asr}, mt {mt}, tts {tts}, queue {queue}]",
            ext=event.extension, lang=event.language, text=event.text, call_id=event.call_id,
            total=_ms(event.total_ms), asr=_ms(event.asr_ms), mt=_ms(event.mt_ms),
            tts=_ms(event.tts_first_byte_ms), queue=_ms(event.queue_wait_ms),
        )
    elif isinstance(event, EngineStatusEvent):
        if event.state == "down":
            log.warn(
                "{ext}: {engine} down ({error}); listener hears: {fallback}",
                ext=event.extension, engine=event.engine, error=event.error, fallback=event.fallback,
                call_id=event.call_id,
            )
        else:
            log.info("{ext}: {engine} back", ext=event.extension, engine=event.engine, call_id=event.call_id)
    elif isinstance(event, UtteranceDropped):
        log.info(
            "{ext}: dropped ({reason}): {text}", ext=event.extension, reason=event.reason, text=event.text,
            call_id=event.call_id,
        )


def _transport_label(kind: str) -> str:
    return "AudioSocket TCP" if kind == "audiosocket" else "RTP UDP"


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.0f}"
