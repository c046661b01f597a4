"""
The twistd plugin's options and service maker: the composition root.

``twistd -n xlbridge --ports 7777,8888`` lands here.  This module (and the
tools) may fall back to the global reactor; everything else takes one.
Start-up failures reported as one line (:class:`StartupFailed`,
:class:`TwistdBridge`, :func:`start_failure`) are in
:mod:`xlbridge.tap_failures`, and importable from here.  What the log
tells the operator (the bridge's plan at start-up, then each event worth a
line) is in :mod:`xlbridge.operator_log`.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
from typing import Any, Callable, Optional, Sequence, cast

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from xlbridge.audio.codecs import CODEC_NAMES
from xlbridge.config import ENGINES, BridgeConfig, load_config
from xlbridge.engines.select import choose_engines, language_table, missing_keys
from xlbridge.errors import ConfigError
from xlbridge.eventlog import EventLogService
from xlbridge.events import Event
from xlbridge.operator_log import log_bridge_plan, log_event
from xlbridge.pipeline.factory import translate_factory
from xlbridge.secretfile import config_file_warning
from xlbridge.tap_failures import ServiceUsageError, StartupFailed, TwistdBridge, start_failure
from xlbridge.workers.options import PROCESS_OPTIONS, ProcessPlan, pin_worker, process_plan

__all__ = [
    "Options", "ServiceUsageError", "StartupFailed", "TwistdBridge", "build_service", "freeze_startup_heap",
    "makeService", "start_failure",
]

log = Logger()


class Options(usage.Options):
    """
    Command-line options of ``twistd xlbridge``.  Every option can also be
    set in the TOML file given with ``--config``; the command line wins.
    Secrets have no option (``ps`` shows arguments to every local user):
    see :mod:`xlbridge.config`.
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
         "EXT=PORT maps it elsewhere; A-B is a range of consecutive extensions; none: no fixed "
         "RTP ports (then --audiosocket or --ari must bring the calls). "
         "[default: 7777,8888, or none when --audiosocket or --ari is given]"],
        ["audiosocket", "a", None,
         "AudioSocket extensions, paired in order like --ports, independent of the --ports pairs: "
         "EXT=PORT listens for Asterisk's AudioSocket TCP connection for EXT on PORT (same syntax "
         "as --ports). EXT=PORT:slin16 says the leg's format (slin, slin16, ... as in Asterisk's "
         "c() or ExternalMedia format=), so replies use it from the first frame; without it they "
         "start as 8 kHz slin and follow what Asterisk sends. Call ids are the AudioSocket UUIDs. "
         "[default: none]"],
        ["websocket", None, None,
         "WebSocket media extensions (Asterisk's chan_websocket dials us: Dial(WebSocket/<id>/c(slin16)) "
         "with a websocket_client.conf entry whose uri is ws://<here>:PORT/), paired in order like "
         "--ports: EXT=PORT listens for EXT's WebSocket on TCP PORT. [default: none]"],
        ["websocket-lookahead-ms", None, None,
         "Most audio queued ahead in Asterisk on a WebSocket leg (it plays it out itself), in ms. "
         "[default: 200]"],
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
        ["interface", "i", None,
         "IP address to bind the RTP and AudioSocket ports on (0.0.0.0 or :: for all). [default: 127.0.0.1]"],
        ["config", None, None, "TOML settings file (sample: etc/xlbridge.toml)."],
        ["latch-timeout", None, None,
         "Seconds without packets from the latched source before a new source may latch. [default: 5]"],
        ["reorder-depth", None, None, "Packets held to reorder inbound RTP. [default: 3]"],
        ["relay-buffer-ms", None, None, "Bound of each leg's outbound buffer in relay mode, ms. [default: 200]"],
        ["max-burst", None, None, "Most packets per leg sent in one tick to catch up after a stall. [default: 3]"],
        ["call-timeout", None, None, "Seconds without audio on either leg before a call ends. [default: 10]"],
        ["max-new-calls", None, None,
         "New calls a second per TCP media transport (AudioSocket, WebSocket); past it a new call is refused "
         "and counted. 0: no bound. [default: 20]"],
        ["media-allow", None, None,
         "Addresses or networks (comma list) that may connect to AudioSocket and WebSocket media ports, or "
         "'any'. [default: loopback and the --ari host]"],
        ["events", None, None, "Write every transcript, translation and playback event to PATH as JSON lines."],
        ["events-text", None, None, "yes|no: write what callers said in --events; no writes each text's "
         "length instead (privacy). [default: yes]"],
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
         "Its token comes from XLBRIDGE_MONITOR_TOKEN or [monitor] token, never a flag. "
         "[default: tcp:3001:interface=127.0.0.1]"],
        ["monitor-metrics-open", None, None, "yes|no: serve /metrics without the monitor token (for a "
         "Prometheus that cannot send one). [default: no]"],
        ["sync-directions", None, None, "yes|no: delay the faster direction so both callers hear "
         "translations with the same lag. [default: no]"],
        ["sync-max-ms", None, None, "Most delay direction sync adds, ms. [default: 1500]"],
        ["early-play-ms", None, None, "With eager end-of-turn ASR (Deepgram Flux): let a translation "
         "started on an eager end of turn play this many ms after it if the speaker has not resumed, "
         "before the turn is confirmed over; off: only once it is. [default: off]"],
        ["ari", None, None,
         "Asterisk ARI base URL, e.g. http://127.0.0.1:8088: xlbridge pairs callers sent to "
         "Stasis(APP,room=R,lang=L) itself. [default: off]"],
        ["ari-user", None, None, "ARI user (ari.conf). Needs --ari, like every --ari-* option and --rtp-ports."],
        ["ari-password-file", None, None,
         "File holding the ARI password, readable by its owner only (chmod 600); never logged."],
        ["ari-app", None, None, "Stasis application name. [default: xlbridge]"],
        ["rtp-ports", None, None, "UDP port range for ExternalMedia RTP legs. [default: 20000-29999]"],
        ["ari-external-host", None, None,
         "Address Asterisk sends ExternalMedia RTP to. [default: --interface, or 127.0.0.1]"],
        ["on-partner-hangup", None, None, "hangup|keep|prompt: what happens to a caller whose partner hung "
         "up; prompt plays --partner-hangup-sound first, then hangs up. [default: hangup]"],
        ["partner-hangup-sound", None, None, "ARI media URI played with --on-partner-hangup prompt, in the "
         "caller's language. [default: sound:vm-goodbye]"],
        ["ari-media", None, None, "rtp|audiosocket|websocket: ExternalMedia as RTP to a --rtp-ports port per "
         "caller, AudioSocket (slin16) to one TCP port for all callers, or chan_websocket (slin16; see "
         "--ari-websocket-connection). [default: rtp]"],
        ["ari-audiosocket-port", None, None, "TCP port (on --interface) Asterisk connects to with "
         "--ari-media audiosocket. [default: 9092]"],
        ["ari-websocket-connection", None, None, "server|client, with --ari-media websocket: server: Asterisk "
         "serves each channel's /media/<id> on its HTTP server (the --ari one) and xlbridge connects; client: "
         "Asterisk dials --ari-websocket-port through --ari-websocket-client. [default: server]"],
        ["ari-websocket-client", None, None, "The websocket_client.conf entry Asterisk dials xlbridge with "
         "(--ari-websocket-connection client), e.g. xlbridge-ari. [default: none]"],
        ["ari-websocket-port", None, None, "TCP port (on --interface) Asterisk dials with "
         "--ari-websocket-connection client. [default: 9093]"],
        ["ari-dial-timeout", None, None, "Seconds a dial= callee may ring unanswered. [default: 30]"],
        ["workers", None, None,
         "Worker processes, or auto (one per CPU this process may use). Given (even 1), this process "
         "supervises them (restarts one that dies), fixed pairs are spread over them, and with --ari each "
         "registers its own Stasis app <app>-<node>-<k> to which callers are dispatched. "
         "[default: none: one process, no supervisor]"],
        ["node", None, None, "This machine's name in the workers' app names. [default: the short host name]"],
        ["ari-dispatch", None, None,
         "yes|no, with --workers and --ari: also dispatch the callers of --ari-app to the workers (no: a media "
         "node whose workers another node dispatches to). [default: yes]"],
        ["worker", None, None, "Internal: K/N, set by the supervisor for worker K of N."],
    ]

    optFlags = [
        ["list-languages", None, "Print the languages and language pairs each engine supports with this "
         "configuration (--config, installed models and Apertium modes), and exit."],
    ]

    def parseOptions(self, options: Optional[Sequence[str]] = None) -> None:
        # Kept for the supervisor, which starts each worker with them.
        self.argv: list[str] = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def postOptions(self) -> None:
        try:
            self.config: BridgeConfig = load_config(
                {k: v for k, v in self.items() if k not in ("config", *PROCESS_OPTIONS)}, self["config"]
            )
            self.processes: ProcessPlan = process_plan(self, self.config)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if self["list-languages"]:
            try:
                print(language_table(os.environ, self.config.engine_options))
            except ConfigError as e:
                raise usage.UsageError(str(e)) from None
            raise SystemExit(0)
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
    Build the bridge from parsed options (twistd calls this; see
    :func:`build_service`).

    twistd reports a usage error from ``postOptions`` as one line, but lets
    anything raised here escape as a traceback: a usage error found here
    (an engine setting, a caller language) is raised as a
    :class:`ServiceUsageError`, still a ``UsageError`` to callers, and one
    line with exit status 1 under twistd.
    """
    try:
        return build_service(options, reactor)
    except ServiceUsageError:
        raise
    except usage.UsageError as e:
        raise ServiceUsageError(str(e)) from None


def freeze_startup_heap() -> int:
    """
    Move every object alive now (modules, classes, the engines' tables:
    about 84,000 after start-up) out of the garbage collector's reach; the
    number moved.

    A full (generation 2) collection scans every tracked object, and with
    the start-up heap in it one took 90-234 ms under load in the fuzz run
    (about 230 ms on the same loaded machine when measured alone, against
    0.01 ms after this): longer than the egress clock can catch up
    (``--max-burst`` 3 = 60 ms), so every call lost audio.  Objects made
    later (calls, buffers) are collected as before.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def build_service(options: Options, reactor: Optional[Any] = None) -> IService:
    """
    Build the bridge from parsed options.

    :param reactor: defaults to the global reactor (only here and in tools);
        it must provide what the bridge (:class:`~xlbridge.bridge.IBridgeReactor`),
        the ARI controller (:class:`~xlbridge.ari.reactor.IARIReactor`) and the
        monitor (:class:`~xlbridge.monitor.service.IMonitorReactor`) use.
    """
    under_twistd = reactor is None
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        # Under twistd only: tests pass their own reactor and keep their heap.
        global_reactor.callWhenRunning(
            lambda: log.info("{n} start-up objects frozen out of full garbage collections", n=freeze_startup_heap())
        )

        # Typed as a few common interfaces only; the real one has them all.
        reactor = cast(Any, global_reactor)
    plan: ProcessPlan = getattr(options, "processes", ProcessPlan())
    if plan.supervises:
        from xlbridge.workers.machine import build_machine

        return build_machine(options, plan, reactor)
    if plan.worker is not None and under_twistd:
        cores = pin_worker(*plan.worker)
        log.info("worker {k} of {n}: CPUs {cores}", k=plan.worker[0], n=plan.worker[1],
                 cores=",".join(map(str, cores)) or "any")
    config: BridgeConfig = plan.config if plan.config is not None else options.config
    try:
        languages = {lang for pair in config.pairs for lang in pair.languages}
        pairs = [pair.languages for pair in config.pairs]
        if config.ari is not None:
            languages.update(config.ari.languages)
            pairs += [(a, b) for a in config.ari.languages for b in config.ari.languages]  # rooms pair any two
        choice = choose_engines(config.engines, reactor, os.environ, config.engine_options, languages, pairs)
    except ConfigError as e:
        raise usage.UsageError(str(e)) from None
    for warning in choice.warnings:
        log.warn("{problem}", problem=warning)  # not "warning=": trial reads that key as a Python warning
    if options["config"]:
        exposed = config_file_warning(options["config"])
        if exposed is not None:
            log.warn("{problem}", problem=exposed)
    services: list[IService] = list(choice.services)
    observers: list[Callable[[Event], None]] = [
        log_event if config.events_text else functools.partial(log_event, text=False)
    ]
    if config.events:
        eventlog = EventLogService(config.events, reactor, text=config.events_text)
        services.append(eventlog)
        observers.append(eventlog)
    factory = (
        translate_factory(choice.engines, config.translation) if choice.engines is not None else None
    )
    log_bridge_plan(config, choice.engines)
    if plan.worker is not None and under_twistd:
        from xlbridge.workers.parentwatch import ParentWatch

        services.append(ParentWatch(reactor))  # stdin closes when the supervisor is gone
    bridge = TwistdBridge(config, reactor, pipeline_factory=factory, observers=observers, services=services)
    if config.ari is not None:
        from xlbridge.ari.controller import ARIController

        ari = config.ari
        controller = ARIController(bridge, ari, reactor)
        if ari.media == "websocket":
            media = controller.websocket.describe()
        elif ari.media == "audiosocket":
            media = f"AudioSocket (slin16, little-endian, both ways) on TCP port {ari.audiosocket_port}"
        else:
            media = f"RTP ports {ari.rtp_ports[0]}-{ari.rtp_ports[1]}"
        log.info("ARI {url} as {user}, app {app}, {media}", url=ari.url, user=ari.user, app=ari.app, media=media)
        controller.setServiceParent(bridge)  # stops before the calls
    if config.monitor.strip().lower() != "none":
        from xlbridge.monitor.service import make_monitor

        try:
            monitor = make_monitor(
                bridge, reactor, config.monitor, config.monitor_token, config.monitor_metrics_open,
                listen_token=config.monitor_listen_token,
            )
        except ValueError as e:
            raise usage.UsageError(f"--monitor: {e}") from None
        monitor.setServiceParent(bridge)  # starts after the calls container, stops before it
    return bridge
