"""
Settings: parsing, validation, and the TOML file / command line merge.

Every setting has one name used both on the command line (``--reply-codec``)
and in the TOML file (``reply_codec`` in its section, see etc/xlbridge.toml),
except the keys in :data:`FILE_ONLY` and the engine sections, which exist in
the file only.

Precedence: built-in default < TOML file < environment < command line.  The
environment holds secrets only: ``XLBRIDGE_MONITOR_TOKEN`` overrides
``[monitor] token`` and ``XLBRIDGE_MONITOR_LISTEN_TOKEN`` ``[monitor]
listen_token`` (environment over file, as twelve-factor services do);
secrets have no command-line flag, since every local user sees a process's
arguments in ``ps``.  The ARI password comes from a file readable by its
owner only (``--ari-password-file``, mode 600).  The engine sections go to
the engines whole; their API keys and base URLs may come from environment
variables too, but there a value in the file wins (engines/select.py).

Every bad value raises :class:`ConfigError` naming the option, which the
twistd plugin turns into a usage error; unknown TOML keys are errors too,
so typos do not pass silently.  Options that only mean something with
another (the ARI options without ``--ari``) are errors rather than ignored.

The ``[ari]`` section's table entries, checks and :class:`ARISettings`
live in :mod:`xlbridge.ari.settings`, the parsers of single values in
:mod:`xlbridge.config_values`; their public names are importable from
here too.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any, Callable, Mapping, Optional

import attrs

from xlbridge.ari.settings import (
    ARI_MEDIA,
    ARI_ONLY,
    ARI_SETTINGS,
    ARI_WEBSOCKET_CONNECTIONS,
    MEDIA_SCHEMES,
    ON_PARTNER_HANGUP,
    ARISettings,
    ari_settings,
)
from xlbridge.audio.codecs import CODEC_NAMES, Codec, get_codec
from xlbridge.config_values import (
    AUDIOSOCKET_FORMATS,
    choice_parser,
    duplicates,
    is_none,
    level_or_off_parser,
    number_parser,
    parse_bool,
    parse_ip_address,
    parse_langs,
    parse_listen_endpoint,
    parse_output_file,
    parse_payload_types,
    parse_ports,
    parse_text,
    split_audiosocket_formats,
)
from xlbridge.errors import ConfigError
from xlbridge.monitor.auth import ENV_VAR as MONITOR_TOKEN_ENV
from xlbridge.monitor.auth import LISTEN_ENV_VAR as MONITOR_LISTEN_TOKEN_ENV
from xlbridge.pipeline.settings import ECHO_GUARDS, FALLBACKS, GRANULARITIES, TranslateSettings
from xlbridge.transports.admission import LOOPBACK, Network, default_allow, parse_allow

__all__ = [
    "ARI_MEDIA", "ARI_ONLY", "ARI_WEBSOCKET_CONNECTIONS", "AUDIOSOCKET_FORMATS", "DEFAULT_PORTS", "ENGINES",
    "ENGINE_SECTIONS", "FILE_ONLY", "MEDIA_SCHEMES", "ON_PARTNER_HANGUP", "SECTIONS", "SETTINGS", "ARISettings",
    "BridgeConfig", "PairConfig", "load_config", "read_toml", "split_audiosocket_formats",
]

ENGINES = ("auto", "cloud", "local", "relay")


@attrs.frozen
class PairConfig:
    """
    Two extensions that talk to each other.

    :ivar extensions: e.g. ``("7777", "8888")``.
    :ivar ports: UDP (RTP) or TCP (AudioSocket) port per extension.
    :ivar languages: language per extension, e.g. ``("en", "es")``.
    :ivar transports: ``"rtp"``, ``"audiosocket"`` or ``"websocket"`` per
        extension.  The command line makes RTP pairs (``--ports``),
        AudioSocket pairs (``--audiosocket``) and WebSocket pairs
        (``--websocket``); an embedder may mix them within a pair.
    :ivar rates: per extension, the sample rate in Hz its AudioSocket audio
        has when the configuration says so (``7000=5050:slin16``), so
        replies are in the leg's own kind from the first frame; ``None``:
        not said (replies start in 8 kHz slin, then follow what arrives).
    """

    extensions: tuple[str, str]
    ports: tuple[int, int]
    languages: tuple[str, str]
    transports: tuple[str, str] = ("rtp", "rtp")
    rates: tuple[Optional[int], Optional[int]] = (None, None)


@attrs.frozen
class BridgeConfig:
    """
    Validated settings of a bridge.  Build it with :func:`load_config`.
    """

    pairs: tuple[PairConfig, ...]
    interface: str = "127.0.0.1"
    engines: str = "auto"
    codec: str = "slin16"
    reply_codec: str = "g722"
    payload_types: Mapping[str, int] = attrs.field(factory=dict)
    latch_timeout: float = 5.0
    reorder_depth: int = 3
    call_timeout: float = 10.0
    relay_buffer_ms: int = 200
    #: Most translated speech or relayed voice queued ahead in Asterisk on
    #: a WebSocket leg, in ms (Asterisk plays it out at its own pace).
    websocket_lookahead_ms: int = 200
    #: networks that may connect to AudioSocket and WebSocket listeners
    #: (``None``: any address)
    media_allow: Optional[tuple[Network, ...]] = LOOPBACK
    #: new calls a second per TCP media transport (0: no bound)
    max_new_calls: float = 20.0
    max_burst: int = 3
    events: str | None = None
    #: ``False``: the ``--events`` file gets text lengths, not the text.
    events_text: bool = True
    monitor: str = "tcp:3001:interface=127.0.0.1"
    #: ``[monitor] token`` of the file; ``None`` when unset, or when
    #: ``XLBRIDGE_MONITOR_TOKEN`` is set (the environment wins, and the
    #: monitor reads it from there).
    monitor_token: str | None = attrs.field(default=None, repr=lambda v: "<redacted>" if v else "None")
    #: ``[monitor] listen_token`` of the file, the same way
    #: (``XLBRIDGE_MONITOR_LISTEN_TOKEN`` wins); unset: listen-in is off.
    monitor_listen_token: str | None = attrs.field(default=None, repr=lambda v: "<redacted>" if v else "None")
    monitor_metrics_open: bool = False
    translation: TranslateSettings = TranslateSettings()
    #: Raw ``[deepgram]``, ``[deepl]``, ``[elevenlabs]`` tables of the TOML
    #: file; each engine validates its own.
    engine_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    ari: ARISettings | None = None

    def codec_in(self) -> Codec:
        """
        What Asterisk sends us.
        """
        return get_codec(self.codec, self.payload_types.get(self.codec))

    def codec_out(self) -> Codec:
        """
        What we send back.
        """
        return get_codec(self.reply_codec, self.payload_types.get(self.reply_codec))

    def port_of(self, extension: str) -> int:
        """
        UDP (RTP) or TCP (AudioSocket) port of ``extension``.
        """
        for p in self.pairs:
            for ext, port in zip(p.extensions, p.ports):
                if ext == extension:
                    return port
        raise KeyError(extension)

    def rate_of(self, extension: str) -> Optional[int]:
        """
        The sample rate ``extension``'s AudioSocket audio was configured
        with, in Hz, or ``None``.
        """
        for p in self.pairs:
            for ext, rate in zip(p.extensions, p.rates):
                if ext == extension:
                    return rate
        raise KeyError(extension)

    def transport_of(self, extension: str) -> str:
        """
        ``"rtp"``, ``"audiosocket"`` or ``"websocket"``: how ``extension``
        reaches us.
        """
        for p in self.pairs:
            for ext, kind in zip(p.extensions, p.transports):
                if ext == extension:
                    return kind
        raise KeyError(extension)


#: option name -> (TOML section, TOML key, parser); the ``[ari]`` ones are
#: :data:`xlbridge.ari.settings.ARI_SETTINGS`.
SETTINGS: dict[str, tuple[str, str, Callable[[str, Any], Any]]] = {
    "ports": ("bridge", "ports", lambda o, v: v),
    "audiosocket": ("bridge", "audiosocket", lambda o, v: v),
    "websocket": ("bridge", "websocket", lambda o, v: v),
    "websocket-lookahead-ms": ("media", "websocket_lookahead_ms", number_parser(int, 20, 10000)),
    "media-allow": ("media", "allow", lambda o, v: _allow_list(o, v)),
    "max-new-calls": ("calls", "max_new_per_s", number_parser(float, 0, 10000)),
    "langs": ("bridge", "langs", lambda o, v: v),
    "engines": ("bridge", "engines", choice_parser(ENGINES)),
    "interface": ("bridge", "interface", parse_ip_address),
    "codec": ("media", "codec", choice_parser(CODEC_NAMES)),
    "reply-codec": ("media", "reply_codec", choice_parser(CODEC_NAMES)),
    "payload-types": ("media", "payload_types", lambda o, v: v),
    "latch-timeout": ("media", "latch_timeout", number_parser(float, 0.1, 3600)),
    "reorder-depth": ("media", "reorder_depth", number_parser(int, 0, 50)),
    "relay-buffer-ms": ("media", "relay_buffer_ms", number_parser(int, 20, 10000)),
    "max-burst": ("media", "max_burst", number_parser(int, 1, 50)),
    "call-timeout": ("calls", "inactivity_timeout", number_parser(float, 0.1, 86400)),
    "events": ("bridge", "events", parse_output_file),
    "events-text": ("bridge", "events_text", parse_bool),
    "granularity": ("translation", "granularity", choice_parser(GRANULARITIES)),
    "backlog": ("translation", "backlog_s", number_parser(float, 1, 600)),
    "echo-guard": ("translation", "echo_guard", choice_parser(ECHO_GUARDS)),
    "fallback": ("translation", "fallback", choice_parser(FALLBACKS)),
    "comfort-noise": ("translation", "comfort_noise_dbfs", level_or_off_parser(-120, -20)),
    "bed": ("translation", "bed_db", level_or_off_parser(-60, 0)),
    "gain": ("translation", "gain_db", number_parser(float, -40, 20)),
    "monitor": ("monitor", "endpoint", parse_listen_endpoint),
    "monitor-metrics-open": ("monitor", "metrics_open", parse_bool),
    "monitor-token": ("monitor", "token", parse_text),
    "monitor-listen-token": ("monitor", "listen_token", parse_text),
    "sync-directions": ("translation", "sync_directions", parse_bool),
    "sync-max-ms": ("translation", "sync_max_ms", number_parser(float, 0, 10000)),
    "early-play-ms": ("translation", "early_play_ms", level_or_off_parser(0, 5000)),
    **ARI_SETTINGS,
}

#: Settings of the file only (no command-line flag), and why.
FILE_ONLY: dict[str, str] = {
    "monitor-token": "a secret: a flag would show it to every local user in ps "
                     "(use XLBRIDGE_MONITOR_TOKEN, which wins over the file)",
    "monitor-listen-token": "a secret: a flag would show it to every local user in ps "
                            "(use XLBRIDGE_MONITOR_LISTEN_TOKEN, which wins over the file)",
}

#: ``--ports`` when neither ``--audiosocket`` nor ``--ari`` is given.
DEFAULT_PORTS = "7777,8888"


def _allow_list(option: str, value: Any) -> Optional[tuple[Network, ...]]:
    """
    ``--media-allow``: addresses and networks (a comma list, or a TOML
    list), or ``any``.
    """
    if not isinstance(value, (str, list, tuple)):
        raise ConfigError(option, f"expected addresses like 10.0.0.5,10.0.0.0/24 or 'any', got {value!r}")
    try:
        return parse_allow(value if isinstance(value, str) else [str(v) for v in value])
    except ValueError as e:
        raise ConfigError(option, str(e)) from None


#: Engine sections: passed whole to the engine's settings class.
ENGINE_SECTIONS = ("deepgram", "deepl", "elevenlabs", "local_asr", "apertium", "espeak")

#: TOML sections this version knows.
SECTIONS = ("bridge", "media", "calls", "translation", "monitor", "ari") + ENGINE_SECTIONS


def read_toml(path: str) -> dict[str, Any]:
    """
    Read a TOML settings file into ``{option: value}`` (option names as on
    the command line).  Raises :class:`ConfigError` for a missing file,
    bad TOML, or unknown sections or keys.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError("config", f"cannot read {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config", f"{path} is not valid TOML: {e}") from None
    by_key = {(sec, key): opt for opt, (sec, key, _) in SETTINGS.items()}
    out: dict[str, Any] = {}
    for section, table in data.items():
        if section not in SECTIONS or not isinstance(table, dict):
            raise ConfigError("config", f"{path}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
        if section in ENGINE_SECTIONS:
            out.setdefault("_engines", {})[section] = dict(table)
            continue
        for key, value in table.items():
            opt = by_key.get((section, key))
            if opt is None:
                raise ConfigError("config", f"{path}: unknown setting {key!r} in [{section}]")
            out[opt] = value
    return out


def load_config(
    cli: Mapping[str, Any], path: str | None = None, environ: Optional[Mapping[str, str]] = None
) -> BridgeConfig:
    """
    Merge defaults, the TOML file at ``path``, the environment and
    command-line values (``None`` means "not given") into a validated
    :class:`BridgeConfig`.

    :param environ: where ``XLBRIDGE_MONITOR_TOKEN`` and
        ``XLBRIDGE_MONITOR_LISTEN_TOKEN`` are looked up (``os.environ`` by
        default).
    """
    merged: dict[str, Any] = read_toml(path) if path else {}
    engine_options = merged.pop("_engines", {})
    merged.update({k: v for k, v in cli.items() if v is not None and k in SETTINGS})
    values: dict[str, Any] = {}
    for opt, value in merged.items():
        values[opt] = SETTINGS[opt][2](opt, value)
    translation_keys = {
        "granularity": "granularity", "backlog": "backlog_s", "echo-guard": "echo_guard",
        "fallback": "fallback", "comfort-noise": "comfort_noise_dbfs", "bed": "bed_db", "gain": "gain_db",
        "sync-directions": "sync_directions", "sync-max-ms": "sync_max_ms", "early-play-ms": "early_play_ms",
    }
    translation = TranslateSettings(**{field: values[opt] for opt, field in translation_keys.items() if opt in values})

    # --ports defaults to 7777,8888 only when none of --audiosocket,
    # --websocket and --ari is given: such a bridge opens no fixed UDP
    # ports.  "none" (or "") says so explicitly, e.g. over a file that sets
    # ports.
    as_spec = values.get("audiosocket")
    ws_spec = values.get("websocket")
    ari = ari_settings(values)
    ports_spec = values.get("ports", None if as_spec or ws_spec or ari else DEFAULT_PORTS)
    if ports_spec is not None and is_none(ports_spec):
        ports_spec = None
        if as_spec is None and ws_spec is None and ari is None:
            raise ConfigError(
                "ports",
                "none leaves no source of calls: give extensions here, or --audiosocket, --websocket or --ari",
            )
    exts: list[tuple[str, int, str]] = []
    rates: dict[str, int] = {}
    sources = (("ports", ports_spec, "rtp"), ("audiosocket", as_spec, "audiosocket"), ("websocket", ws_spec, "websocket"))
    for option, spec, kind in sources:
        if spec is None:
            continue
        if isinstance(spec, list):
            spec = ",".join(str(p) for p in spec)
        spec = str(spec)
        if kind == "audiosocket":
            spec, stated = split_audiosocket_formats(spec)
            rates.update(stated)
        exts.extend((e, p, kind) for e, p in parse_ports(spec, option))
    names = [e for e, _, _ in exts]
    if len(set(names)) != len(names):
        dup = sorted(duplicates(names))[0]
        options = [f"--{opt}" for opt, _, kind in sources if dup in {e for e, _, k in exts if k == kind}]
        raise ConfigError(options[-1][2:], f"extension {dup} is in both {' and '.join(options)}")
    tcp = [str(p) for _, p, kind in exts if kind != "rtp" and p]
    if len(set(tcp)) != len(tcp):
        port = sorted(duplicates(tcp), key=int)[0]
        raise ConfigError("websocket", f"TCP port {port} is both an --audiosocket and a --websocket extension's port")
    langs = parse_langs(values.get("langs", "en,es"))
    if exts and (len(langs) % 2 or len(exts) % len(langs)):
        # A list that does not tile the extensions would wrap across pairs
        # (en,es,fr over two pairs: the second pair would be fr,en).
        raise ConfigError(
            "langs",
            f"{len(langs)} language{'s' if len(langs) != 1 else ''} for {len(exts)} extensions: give one per extension "
            f"({len(exts)}), or one pair (2) used for every pair",
        )
    pairs = []
    for i in range(0, len(exts), 2):
        (ea, pa, ka), (eb, pb, kb) = exts[i], exts[i + 1]
        pairs.append(
            PairConfig(
                (ea, eb), (pa, pb), (langs[i % len(langs)], langs[(i + 1) % len(langs)]), (ka, kb),
                (rates.get(ea), rates.get(eb)),
            )
        )

    codec = values.get("codec", "slin16")
    # Asterisk drops RTP sent back with PT 118 (PROTOCOLS.md T2): a slin16 leg
    # replies in G.722, the only wideband codec it accepts back.
    reply = values.get("reply-codec") or ("g722" if codec == "slin16" else codec)
    payload_types = parse_payload_types(values.get("payload-types", {}))
    interface = values.get("interface", "127.0.0.1")
    env_token = (os.environ if environ is None else environ).get(MONITOR_TOKEN_ENV, "").strip()
    env_listen = (os.environ if environ is None else environ).get(MONITOR_LISTEN_TOKEN_ENV, "").strip()
    return BridgeConfig(
        pairs=tuple(pairs),
        interface=interface,
        engines=values.get("engines", "auto"),
        codec=codec,
        reply_codec=reply,
        payload_types=payload_types,
        latch_timeout=values.get("latch-timeout", 5.0),
        reorder_depth=values.get("reorder-depth", 3),
        call_timeout=values.get("call-timeout", 10.0),
        relay_buffer_ms=values.get("relay-buffer-ms", 200),
        websocket_lookahead_ms=values.get("websocket-lookahead-ms", 200),
        media_allow=values["media-allow"] if "media-allow" in values else default_allow(ari.url if ari else None),
        max_new_calls=values.get("max-new-calls", 20.0),
        max_burst=values.get("max-burst", 3),
        events=values.get("events") or None,
        events_text=values.get("events-text", True),
        monitor=values.get("monitor", "tcp:3001:interface=127.0.0.1"),
        monitor_token=None if env_token else values.get("monitor-token") or None,
        monitor_listen_token=None if env_listen else values.get("monitor-listen-token") or None,
        monitor_metrics_open=values.get("monitor-metrics-open", False),
        translation=translation,
        engine_options=engine_options,
        ari=ari,
    )
