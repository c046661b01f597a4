"""
The ``[ari]`` settings (``--ari`` and the options that need it): their
table entries, their checks, and :class:`ARISettings`, what the ARI
controller is built from.

:mod:`xlbridge.config` merges :data:`ARI_SETTINGS` into its option table
and calls :func:`ari_settings` with every parsed value, so the ARI options
share the file / command-line merge and its errors; the names here stay
importable from :mod:`xlbridge.config`.  Every bad value raises
:class:`~xlbridge.errors.ConfigError` naming the option.  An ARI option
without ``--ari`` is an error, not ignored.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import attrs

from xlbridge.config_values import (
    choice_parser,
    is_none,
    number_parser,
    parse_langs,
    parse_port_range,
    parse_ports,
    parse_text,
    read_secret_file,
    split_audiosocket_formats,
)
from xlbridge.errors import ConfigError

ON_PARTNER_HANGUP = ("hangup", "keep", "prompt")
ARI_MEDIA = ("rtp", "audiosocket", "websocket")
#: Who opens an ARI WebSocket media connection (``--ari-websocket-connection``).
ARI_WEBSOCKET_CONNECTIONS = ("server", "client")
#: Media URI schemes Asterisk's ``/channels/{id}/play`` understands.
MEDIA_SCHEMES = ("sound:", "recording:", "number:", "digits:", "characters:", "tone:")


@attrs.frozen
class ARISettings:
    """
    How to reach Asterisk's ARI (``--ari``).

    :ivar password: read from ``--ari-password-file``; never in ``repr``.
    :ivar rtp_ports: inclusive UDP range for ExternalMedia RTP legs.
    :ivar external_host: address Asterisk sends RTP to (our bind address,
        or 127.0.0.1 when binding all interfaces).
    :ivar languages: languages callers may ask for (engines preload them).
    :ivar media: how ExternalMedia reaches us: ``"rtp"`` (UDP, a port of
        ``rtp_ports`` per caller), ``"audiosocket"`` (TCP, every caller on
        ``audiosocket_port``; slin16 both ways) or ``"websocket"``
        (chan_websocket, slin16 both ways: see ``websocket_connection``).
    :ivar audiosocket_port: TCP port of the AudioSocket listener (0: any
        free port, for tests).
    :ivar websocket_connection: with ``media = "websocket"``, who connects:
        ``"server"`` (Asterisk serves ``/media/<id>`` on its HTTP server,
        the one of ``url``, and xlbridge connects) or ``"client"``
        (Asterisk dials ``websocket_port`` through the websocket_client.conf
        entry ``websocket_client``).
    :ivar websocket_client: the websocket_client.conf entry (client mode).
    :ivar websocket_port: TCP port of the WebSocket listener in client mode
        (0: any free port, for tests).
    :ivar on_partner_hangup: ``"hangup"``, ``"keep"``, or ``"prompt"``: play
        ``partner_hangup_sound`` to the remaining caller, then hang up (at
        the latest ``prompt_timeout`` seconds later).
    :ivar entry_app: ``None`` in a single process; in a worker of
        ``--workers`` (whose :attr:`app` is ``<entry>-<node>-<k>``), the app
        callers enter from the dialplan (``xlbridge``), where the dispatcher
        moves them from (:mod:`xlbridge.ari.dispatch`).
    :ivar dial_timeout: seconds a ``dial=`` callee may ring unanswered
        (passed to Asterisk; we give up ourselves 5 s after that).
    """

    url: str
    user: str
    password: str = attrs.field(repr=lambda v: "<redacted>")
    app: str = "xlbridge"
    rtp_ports: tuple[int, int] = (20000, 29999)
    external_host: str = "127.0.0.1"
    on_partner_hangup: str = "hangup"
    port_quarantine: float = 10.0
    languages: tuple[str, ...] = ("en", "es")
    media: str = "rtp"
    audiosocket_port: int = 9092
    websocket_connection: str = "server"
    websocket_client: Optional[str] = None
    websocket_port: int = 9093
    partner_hangup_sound: str = "sound:vm-goodbye"
    prompt_timeout: float = 15.0
    dial_timeout: int = 30
    entry_app: Optional[str] = None


def _media_uri(option: str, value: Any) -> str:
    """
    ``sound:vm-goodbye`` (or a comma list of media URIs) for ARI ``play``.
    """
    text = str(value).strip()
    items = [i.strip() for i in text.split(",")]
    for item in items:
        if not item.startswith(MEDIA_SCHEMES) or len(item) <= item.index(":") + 1:
            raise ConfigError(
                option, f"{item!r} is not a media URI like sound:vm-goodbye (schemes: {', '.join(MEDIA_SCHEMES)})"
            )
    return ",".join(items)


#: The ``[ari]`` part of :data:`xlbridge.config.SETTINGS`: option name ->
#: (TOML section, TOML key, parser), in the order ``--help`` lists them.
ARI_SETTINGS: dict[str, tuple[str, str, Callable[[str, Any], Any]]] = {
    "ari": ("ari", "url", parse_text),
    "ari-user": ("ari", "user", parse_text),
    "ari-password-file": ("ari", "password_file", parse_text),
    "ari-app": ("ari", "app", parse_text),
    "rtp-ports": ("ari", "rtp_ports", parse_text),
    "ari-external-host": ("ari", "external_host", parse_text),
    "on-partner-hangup": ("ari", "on_partner_hangup", choice_parser(ON_PARTNER_HANGUP)),
    "partner-hangup-sound": ("ari", "partner_hangup_sound", lambda o, v: _media_uri(o, v)),
    "ari-media": ("ari", "media", choice_parser(ARI_MEDIA)),
    "ari-audiosocket-port": ("ari", "audiosocket_port", number_parser(int, 0, 65535)),
    "ari-websocket-connection": ("ari", "websocket_connection", choice_parser(ARI_WEBSOCKET_CONNECTIONS)),
    "ari-websocket-client": ("ari", "websocket_client", parse_text),
    "ari-websocket-port": ("ari", "websocket_port", number_parser(int, 0, 65535)),
    "ari-dial-timeout": ("ari", "dial_timeout", number_parser(int, 1, 3600)),
}

#: Options that only mean something with ``--ari``.
ARI_ONLY: tuple[str, ...] = tuple(opt for opt, (sec, _, _) in ARI_SETTINGS.items() if sec == "ari" and opt != "ari")


def ari_settings(values: Mapping[str, Any]) -> ARISettings | None:
    """
    The :class:`ARISettings` of the parsed option ``values`` (every
    section's, by command-line name: ``--interface``, ``--langs`` and the
    fixed extension lists count too), or ``None`` without ``--ari``.
    """
    url = values.get("ari")
    if not url:
        stray = [opt for opt in ARI_ONLY if opt in values]
        if stray:
            message = "needs --ari (Asterisk's ARI URL), which is not set"
            if len(stray) > 1:
                message += f"; so do {', '.join('--' + o for o in stray[1:])}"
            raise ConfigError(stray[0], message)
        return None
    if not url.startswith(("http://", "https://")):
        raise ConfigError("ari", f"{url!r} is not an http:// or https:// URL like http://127.0.0.1:8088")
    user = values.get("ari-user")
    if not user:
        raise ConfigError("ari-user", "--ari needs --ari-user")
    path = values.get("ari-password-file")
    if not path:
        raise ConfigError("ari-password-file", "--ari needs --ari-password-file")
    password = read_secret_file("ari-password-file", path)
    interface = values.get("interface", "127.0.0.1")
    default_host = "127.0.0.1" if interface in ("0.0.0.0", "", "::") else interface
    media = values.get("ari-media", "rtp")
    as_port = values.get("ari-audiosocket-port", 9092)
    if media == "audiosocket" and as_port:
        static = values.get("audiosocket")
        if static is not None:
            spec = ",".join(str(p) for p in static) if isinstance(static, list) else str(static)
            if as_port in {p for _, p in parse_ports(spec, "audiosocket")}:
                raise ConfigError(
                    "ari-audiosocket-port", f"TCP port {as_port} is also an --audiosocket extension's port"
                )
    ws_connection, ws_client, ws_port = _ari_websocket(values, media)
    return ARISettings(
        url=url.rstrip("/"),
        user=user,
        password=password,
        app=values.get("ari-app") or "xlbridge",
        rtp_ports=parse_port_range("rtp-ports", values.get("rtp-ports", "20000-29999")),
        external_host=values.get("ari-external-host") or default_host,
        on_partner_hangup=values.get("on-partner-hangup", "hangup"),
        languages=tuple(parse_langs(values.get("langs", "en,es"))),
        media=media,
        audiosocket_port=as_port,
        websocket_connection=ws_connection,
        websocket_client=ws_client,
        websocket_port=ws_port,
        partner_hangup_sound=values.get("partner-hangup-sound", "sound:vm-goodbye"),
        dial_timeout=values.get("ari-dial-timeout", 30),
    )


def _ari_websocket(values: Mapping[str, Any], media: str) -> tuple[str, Optional[str], int]:
    """
    ``(connection, client id, port)`` of ``--ari-media websocket``.  Client
    mode needs the websocket_client.conf entry Asterisk dials us with (a
    section name: no spaces, slashes or commas, which Asterisk would read as
    dial-string syntax), and its port must not be a fixed extension's.
    """
    connection = values.get("ari-websocket-connection", "server")
    client = values.get("ari-websocket-client") or None
    port = values.get("ari-websocket-port", 9093)
    if client is not None and (any(c.isspace() for c in client) or set(client) & set("/,()[]")):
        raise ConfigError(
            "ari-websocket-client", f"{client!r} is not a websocket_client.conf entry name (like xlbridge-ari)"
        )
    if media != "websocket" or connection != "client":
        return connection, client, port
    if client is None:
        raise ConfigError(
            "ari-websocket-client",
            "--ari-websocket-connection client needs the websocket_client.conf entry Asterisk dials "
            "xlbridge with (e.g. --ari-websocket-client xlbridge-ari)",
        )
    if port:
        for option in ("websocket", "audiosocket"):
            static = values.get(option)
            if static is None or is_none(static):
                continue
            spec = ",".join(str(p) for p in static) if isinstance(static, list) else str(static)
            if option == "audiosocket":
                spec = split_audiosocket_formats(spec)[0]
            if port in {p for _, p in parse_ports(spec, option)}:
                raise ConfigError("ari-websocket-port", f"TCP port {port} is also a --{option} extension's port")
    return connection, client, port
