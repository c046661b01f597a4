"""
The rescue of a dead worker's callers.

When a worker's process ends, Asterisk keeps its callers in Stasis under
the worker's app, silent, in the worker's bridges, with the worker's
ExternalMedia channels still sending to ports nobody reads.  Whoever sees
the process end (its supervisor: the dispatching node's, or a media
node's with ``--ari-dispatch no``) removes the worker's bridges (named
``<app>:<channel>``, :func:`xlbridge.ari.leftovers.bridge_name`) and
ExternalMedia channels and moves its callers back to the entry app with
their Stasis arguments.  There they arrive as new callers and the
dispatcher places them, both callers of a room together, on a live
worker.

Each step's requests go out together (a worker with 50 callers is not
rescued one request at a time); a request that fails is the ``quietly``
callable's to report, and the rest go on.
"""

from __future__ import annotations

from typing import Any, Callable, Generator

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.logger import Logger

from xlbridge.ari.client import ARIClient, ARIError
from xlbridge.ari.dispatch import caller_args

__all__ = ["rescue"]

log = Logger()


@inlineCallbacks
def rescue(
    client: ARIClient, app: str, entry: str, quietly: Callable[["Deferred[Any]"], "Deferred[Any]"],
) -> Generator["Deferred[Any]", Any, int]:
    """
    Rescue dead worker ``app``'s callers to ``entry``; the number of
    callers moved.

    :param quietly: handles a cleanup request's failure (a 404 is fine).
    """
    try:
        info = yield client.application(app)
    except ARIError as e:
        if e.status == 404:
            return 0  # Asterisk dropped the app: nothing was left in it
        raise
    ids = {str(i) for i in (info or {}).get("channel_ids") or []}
    if not ids:
        return 0
    bridges, channels = yield gatherResults([client.bridges(), client.channels()], consumeErrors=True)
    mine = [str(b["id"]) for b in bridges or [] if str(b.get("name", "")).startswith(app + ":") and "id" in b]
    yield gatherResults([quietly(client.destroy_bridge(b)) for b in mine], consumeErrors=True)
    callers: list[tuple[str, list[str]]] = []
    media: list[str] = []
    for ch in channels or []:
        cid = str(ch.get("id", ""))
        if cid not in ids:
            continue
        args = caller_args(ch, [entry, app])
        if args is None:
            media.append(cid)
        else:
            callers.append((cid, args))
    yield gatherResults(
        [quietly(client.move(cid, entry, ",".join(args))) for cid, args in callers]
        + [quietly(client.hangup(cid)) for cid in media],
        consumeErrors=True,
    )
    log.info("{app} is gone: {n} caller(s) moved back to {entry} for another worker ({b} bridge(s), {m} media "
             "channel(s) removed)", app=app, n=len(callers), entry=entry, b=len(mine), m=len(media))
    return len(callers)
