"""
What twistd's log tells the operator watching it: once at start-up, the
bridge's plan (engines, pairs, codecs, media transports, who may connect);
then, per event, final transcripts, translations with their latency,
engine trouble and dropped speech.

It is apart from :mod:`xlbridge.tap` (which composes the services) because
it is wording, not wiring: it decides nothing and builds nothing.  Its
lines keep the ``xlbridge.tap`` log namespace they always had, so
operators' log filters and saved logs (``[xlbridge.tap#info] 7777 said:
...``) still match.
"""

from __future__ import annotations

from typing import Optional

from twisted.logger import Logger

from xlbridge.config import BridgeConfig
from xlbridge.engines.base import Engines
from xlbridge.events import EngineStatusEvent, Event, PlaybackStarted, TranscriptEvent, UtteranceDropped

__all__ = ["log_bridge_plan", "log_event"]

log = Logger(namespace="xlbridge.tap")


def log_bridge_plan(config: BridgeConfig, engines: Optional[Engines]) -> None:
    """
    Log the engines, the first four pairs (with each leg's transport, port,
    language and recogniser), what the media transports carry and which
    addresses may connect to the TCP media ports.

    :param engines: the chosen engines, or ``None`` when relaying.
    """
    if engines is not None:
        log.info("engines: {names}", names=", ".join(f"{k}={v}" for k, v in engines.names.items()))

    def speech(lang: str) -> str:
        """A leg's language with the recogniser it gets, for the log."""
        engine_for = getattr(engines.asr, "engine_for", None) if engines is not None else None
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
    transports = {kind for pair in config.pairs for kind in pair.transports}
    if "rtp" in transports or (config.ari is not None and config.ari.media == "rtp"):
        log.info(
            "codec {codec} in, {reply} back, on {iface}",
            codec=config.codec, reply=config.reply_codec, iface=config.interface,
        )
    if "audiosocket" in transports:
        # transports/audiosocket.py: replies go in the kind and rate of the
        # latest audio received (8 kHz before any).
        log.info(
            "AudioSocket: signed linear, little-endian, both ways, at the rate Asterisk sends "
            "(8 kHz from AudioSocket(), 16 kHz with slin16), on {iface}",
            iface=config.interface,
        )
    if "websocket" in transports:
        log.info(
            "WebSocket media: Asterisk dials us (chan_websocket), in the format it announces "
            "(slin16: little-endian), and plays out what we send ahead, up to {ms} ms; on {iface}",
            ms=config.websocket_lookahead_ms, iface=config.interface,
        )
    if transports & {"audiosocket", "websocket"} or (config.ari is not None and config.ari.media != "rtp"):
        allow = "any address" if config.media_allow is None else ", ".join(str(n) for n in config.media_allow)
        bound = f"at most {config.max_new_calls:g} new calls a second per transport" if config.max_new_calls else (
            "no bound on new calls")
        log.info("media connections (AudioSocket, WebSocket) accepted from {allow}; {bound}", allow=allow, bound=bound)


def log_event(event: Event, text: bool = True) -> None:
    """
    Log what an operator watching the console wants to see: final
    transcripts, translations with latency, engine trouble, dropped speech.

    :param text: log what callers said; ``False`` (``events_text = false``)
        logs each text's length instead, as the ``--events`` file does.
    """

    def words(said: str) -> str:
        return said if text else f"<{len(said)} characters>"

    if isinstance(event, TranscriptEvent):
        if event.is_final and event.text:
            log.info("{ext} said: {text}", ext=event.extension, text=words(event.text), call_id=event.call_id)
    elif isinstance(event, PlaybackStarted):
        log.info(
            "{ext} hears ({lang}): {text} [total {total} ms: asr {asr}, mt {mt}, tts {tts}, queue {queue}]",
            ext=event.extension, lang=event.language, text=words(event.text), call_id=event.call_id,
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
            "{ext}: dropped ({reason}): {text}", ext=event.extension, reason=event.reason, text=words(event.text),
            call_id=event.call_id,
        )


def _transport_label(kind: str) -> str:
    return {"audiosocket": "AudioSocket TCP", "websocket": "WebSocket TCP"}.get(kind, "RTP UDP")


def _ms(value: Optional[float]) -> str:
    """A latency in whole ms for the log, or ``-`` when not measured."""
    return "-" if value is None else f"{value:.0f}"
