"""
The twistd plugin's options and service maker: the composition root.

``twistd -n xlbridge --ports 7777,8888`` lands here.  This module (and the
tools) may fall back to the global reactor; everything else takes one.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from xlbridge.audio.codecs import CODEC_NAMES
from xlbridge.bridge import BridgeService
from xlbridge.config import ENGINES, BridgeConfig, load_config
from xlbridge.errors import ConfigError

log = Logger()


class Options(usage.Options):
    """
    Command-line options of ``twistd xlbridge``.  Every option can also be
    set in the TOML file given with ``--config``; the command line wins.
    """

    synopsis = "[options]"
    longdesc = (
        "xlbridge: a real-time interpreter between two phone callers. "
        "Asterisk sends each extension's audio as RTP to its own UDP port; "
        "each caller hears the other. See README.rst."
    )

    optParameters = [
        ["ports", "p", None,
         "Extensions, paired in order (1st with 2nd, ...). EXT receives RTP on UDP port EXT; "
         "EXT=PORT maps it elsewhere; A-B is a range of consecutive extensions. "
         "[default: 7777,8888]"],
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
        ["interface", "i", None, "Address to bind the RTP ports on. [default: 127.0.0.1]"],
        ["config", None, None, "TOML settings file (sample: etc/xlbridge.toml)."],
        ["latch-timeout", None, None,
         "Seconds without packets from the latched source before a new source may latch. [default: 5]"],
        ["reorder-depth", None, None, "Packets held to reorder inbound RTP. [default: 3]"],
        ["relay-buffer-ms", None, None, "Bound of each leg's outbound buffer in relay mode, ms. [default: 200]"],
        ["max-burst", None, None, "Most packets per leg sent in one tick to catch up after a stall. [default: 3]"],
        ["call-timeout", None, None, "Seconds without audio on either leg before a call ends. [default: 10]"],
    ]

    def postOptions(self) -> None:
        try:
            self.config: BridgeConfig = load_config(
                {k: v for k, v in self.items() if k != "config"}, self["config"]
            )
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if self.config.engines in ("cloud", "local"):
            raise usage.UsageError(
                f"--engines: {self.config.engines!r} engines are not available in this version yet; "
                "use --engines relay (each caller hears the other's own voice)"
            )


def makeService(options: Options, reactor: Optional[Any] = None) -> IService:
    """
    Build the bridge from parsed options.

    :param reactor: defaults to the global reactor (only here and in tools).
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    config: BridgeConfig = options.config
    if config.engines == "auto":
        log.warn(
            "--engines auto: no translation engines are available in this version; "
            "relaying each caller's voice untranslated"
        )
    for pair in config.pairs[:4]:
        log.info(
            "pair {a} (port {pa}, {la}) <-> {b} (port {pb}, {lb})",
            a=pair.extensions[0], b=pair.extensions[1], pa=pair.ports[0], pb=pair.ports[1],
            la=pair.languages[0], lb=pair.languages[1],
        )
    if len(config.pairs) > 4:
        log.info("... {n} pairs in all", n=len(config.pairs))
    log.info(
        "codec {codec} in, {reply} back, on {iface}",
        codec=config.codec, reply=config.reply_codec, iface=config.interface,
    )
    return BridgeService(config, reactor)
