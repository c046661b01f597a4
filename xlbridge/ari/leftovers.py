"""
Leftovers of an earlier run: what the name of an ExternalMedia channel
tells (where its media goes), and the cleanup after each (re)connection.

Asterisk names the channels it creates for ``POST /channels/externalMedia``
after their dial string (PROTOCOLS.md 5.2, 6):

- RTP: ``UnicastRTP/<host:port>-0x<hex>`` (``chan_rtp.c``);
- AudioSocket: ``AudioSocket/<host:port>-<uuid>``, the uuid being the
  ``data`` we passed (``chan_audiosocket.c``: ``"AudioSocket/%s-%s"`` over
  the destination and the UUID string);
- WebSocket: ``WebSocket/INCOMING/0x<hex>`` when Asterisk serves it (we
  connect), ``WebSocket/<websocket_client.conf id>/0x<hex>`` when it dials
  (PROTOCOLS.md 10.1).  Neither says whose it is, so we give these
  channels ids of our own, :func:`websocket_id_prefix` and a uuid
  (``channelId``, which chan_websocket keeps: seen on Asterisk 22).  Until
  it is connected such a channel sits in ``AppDial2``, not in Stasis, and
  Asterisk only hangs it up 30 s later.

Our bridges are named :data:`BRIDGE_PREFIX` + the caller's channel id; a
worker of ``--workers`` names them ``<its app>:<channel id>``
(:func:`bridge_name`), so that its cleanup, and the rescue of a dead
worker, touch only its own (a channel id has no colon).

After each (re)connection of the events socket, the controller
(:meth:`~xlbridge.ari.controller.ARIController.remove_leftovers`) deletes
``xlbridge-*`` bridges and the channels whose media goes to our RTP port
range or our AudioSocket listener, or WebSocket channels of ours, that no
live caller owns; the pure functions here decide which.  Then it takes back the callers an earlier run
left sitting in our Stasis app (Asterisk keeps them there, silent, when the
app goes away): their ``dialplan.app_data`` still holds their Stasis
arguments, so they are set up again and paired as before (seen on Asterisk
22).  Nothing here does I/O or knows the controller.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterable, Optional

from xlbridge.ari.rooms import parse_args

#: Our bridges' names: this prefix and the caller's channel id.
BRIDGE_PREFIX = "xlbridge-"
RTP_PREFIX = "UnicastRTP/"
AUDIOSOCKET_PREFIX = "AudioSocket/"
WEBSOCKET_PREFIX = "WebSocket/"


def websocket_id_prefix(app: str) -> str:
    """
    How the ids we give our ExternalMedia WebSocket channels start, for
    Stasis app ``app`` (the rest is a uuid4).
    """
    return f"{app}-ws-"


def websocket_peer(name: str) -> Optional[str]:
    """
    ``"WebSocket/INCOMING/0x7f..."`` -> ``"INCOMING"`` (Asterisk serves
    it), ``"WebSocket/xlbridge-ari/0x7f..."`` -> ``"xlbridge-ari"`` (the
    websocket_client.conf entry it dials); ``None`` for any other name.
    """
    if not name.startswith(WEBSOCKET_PREFIX):
        return None
    peer, sep, _ = name[len(WEBSOCKET_PREFIX):].partition("/")
    return peer if sep and peer else None


def unicast_rtp_port(name: str) -> Optional[int]:
    """
    ``"UnicastRTP/127.0.0.1:20000-0x7f..."`` -> ``20000``; ``None`` for
    any other name.
    """
    if not name.startswith(RTP_PREFIX):
        return None
    hostport = name[len(RTP_PREFIX):].rsplit("-", 1)[0]
    try:
        return int(hostport.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def audiosocket_target(name: str) -> Optional[tuple[str, str]]:
    """
    ``"AudioSocket/127.0.0.1:9092-<uuid>"`` -> ``("127.0.0.1:9092",
    "<uuid>")``; ``None`` for any other name.  The destination may itself
    hold dashes (a host name), so a trailing 36-character UUID is split off
    first; failing that, the last dash splits.
    """
    if not name.startswith(AUDIOSOCKET_PREFIX):
        return None
    rest = name[len(AUDIOSOCKET_PREFIX):]
    if len(rest) > 37 and rest[-37] == "-":
        try:
            return rest[:-37], str(uuid.UUID(rest[-36:]))
        except ValueError:
            pass
    dest, sep, tail = rest.rpartition("-")
    return (dest, tail) if sep and dest else None


def bridge_name(channel_id: str, app: str, entry_app: Optional[str] = None) -> str:
    """
    The name of caller ``channel_id``'s bridge: ``xlbridge-<id>`` in a
    single process, ``<app>:<id>`` in a worker (``entry_app`` given).
    """
    return f"{app}:{channel_id}" if entry_app else BRIDGE_PREFIX + channel_id


def named_ours(name: str, app: str, entry_app: Optional[str] = None) -> bool:
    """Is ``name`` a bridge name :func:`bridge_name` gives for ``app``?"""
    if entry_app:
        return name.startswith(app + ":")
    return name.startswith(BRIDGE_PREFIX) and ":" not in name


def stale_bridges(
    bridges: Iterable[dict[str, Any]], ours: set[Optional[str]], app: str = "xlbridge",
    entry_app: Optional[str] = None,
) -> list[dict[str, Any]]:
    """
    The bridges among ``bridges`` (ARI Bridge objects) named like ours
    (:func:`named_ours`) whose id and name are both not in ``ours``
    (the ids of our callers' bridges and the names we gave them).
    """
    out = []
    for b in bridges:
        name = str(b.get("name", ""))
        if named_ours(name, app, entry_app) and b.get("id") not in ours and name not in ours:
            out.append(b)
    return out


def unicast_rtp_host(name: str) -> Optional[str]:
    """
    ``"UnicastRTP/127.0.0.1:20000-0x7f..."`` -> ``"127.0.0.1"`` (``[::1]``
    for IPv6); ``None`` for any other name.
    """
    if unicast_rtp_port(name) is None:
        return None
    return name[len(RTP_PREFIX):].rsplit("-", 1)[0].rsplit(":", 1)[0]


def stale_media(
    channels: Iterable[dict[str, Any]],
    ours: set[str],
    rtp_ports: tuple[int, int],
    audiosocket_dest: Optional[str],
    ports_in_use: frozenset[int] | set[int] = frozenset(),
    rtp_host: Optional[str] = None,
) -> list[dict[str, Any]]:
    """
    The ExternalMedia channels among ``channels`` (ARI Channel objects)
    that send to our RTP ports (inclusive range; at ``rtp_host``, our
    ``--ari-external-host``, when given: media nodes on other addresses
    use the same port range) or to ``audiosocket_dest`` (``host:port`` of
    our AudioSocket listener) and are not ours: neither their id nor their
    AudioSocket UUID is in ``ours``, and their RTP port is not in
    ``ports_in_use`` (a leg being set up, whose channel id we do not know
    yet).
    """
    low, high = rtp_ports
    out = []
    for ch in channels:
        name = str(ch.get("name", ""))
        if ch.get("id") in ours:
            continue
        port = unicast_rtp_port(name)
        if port is not None:
            if rtp_host is not None and (unicast_rtp_host(name) or "").strip("[]") != rtp_host.strip("[]"):
                continue  # another node's
            if low <= port <= high and port not in ports_in_use:
                out.append(ch)
            continue
        target = audiosocket_target(name)
        if target is not None and audiosocket_dest is not None:
            dest, call_id = target
            if dest == audiosocket_dest and call_id not in ours:
                out.append(ch)
    return out


def stale_websocket(channels: Iterable[dict[str, Any]], ours: set[str], app: str) -> list[dict[str, Any]]:
    """
    Our ExternalMedia WebSocket channels among ``channels`` whose id is not
    in ``ours`` (live legs, including those whose channel is being
    created).  Ours: named ``WebSocket/...`` with an id we gave
    (:func:`websocket_id_prefix`), or sitting in ``Stasis(app)`` with no
    arguments, where only media channels sit (a caller has arguments; one
    without is hung up anyway).  Another app's WebSocket channels, and
    callers' own, are neither.
    """
    prefix = websocket_id_prefix(app)
    out = []
    for ch in channels:
        cid = str(ch.get("id", ""))
        if websocket_peer(str(ch.get("name", ""))) is None or cid in ours:
            continue
        plan = ch.get("dialplan") or {}
        no_args = plan.get("app_name") == "Stasis" and str(plan.get("app_data", "")).strip() == app
        if cid.startswith(prefix) or no_args:
            out.append(ch)
    return out


def orphans(
    channels: Iterable[dict[str, Any]], app: str, known: set[str], entry_app: Optional[str] = None,
    in_app: Optional[set[str]] = None,
) -> list[tuple[dict[str, Any], list[str]]]:
    """
    Callers among ``channels`` sitting in ``Stasis(app, ...)`` with
    arguments (ExternalMedia channels have none) whose id is not in
    ``known``, each with its arguments.  A ``dial=`` caller is taken back
    into its private room (``room=dial-<id>``) instead: its callee, if
    still up, is an orphan of that room too, and dialling again would ring
    a second one.

    A worker (``entry_app`` given) takes back only the channels Asterisk
    lists in its own app (``in_app``, from ``GET /applications/{app}``):
    its callers entered ``Stasis(<entry_app>, ...)`` from the dialplan
    and were moved to it, and other workers hold callers with the same
    ``app_data``.
    """
    heads = {app, entry_app} if entry_app else {app}
    out = []
    for ch in channels:
        plan = ch.get("dialplan") or {}
        if plan.get("app_name") != "Stasis" or ch.get("id") in known:
            continue
        if entry_app and (in_app is None or ch.get("id") not in in_app):
            continue
        head, _, rest = str(plan.get("app_data", "")).partition(",")
        if head.strip() not in heads or not rest.strip():
            continue
        opts = parse_args([rest])
        if "dial" in opts:
            opts.pop("dial")
            opts["room"] = f"dial-{ch.get('id')}"
        if "room" not in opts:
            continue
        out.append((ch, [",".join(f"{k}={v}" for k, v in opts.items())]))
    return out


def partnerless(found: Iterable[tuple[dict[str, Any], list[str]]]) -> set[str]:
    """
    The ids, among :func:`orphans`, of callers alone in a private dial room
    (``room=dial-...``): a dial caller whose callee is gone, or a callee
    whose caller is.  They are hung up, not taken back.
    """
    callers = list(found)
    rooms = [parse_args(args).get("room", "") for _, args in callers]
    return {
        str(ch.get("id"))
        for (ch, _), room in zip(callers, rooms)
        if room.startswith("dial-") and rooms.count(room) < 2
    }
