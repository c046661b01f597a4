"""
What the connection must do differently for Deepgram's two streaming APIs,
``/v1/listen`` (Nova: results, endpointing) and ``/v2/listen`` (Flux:
turns, eager end of turn), as one small value, :class:`Dialect`, that a
:class:`~xlbridge.engines.deepgram.connection.DeepgramConnection` is built
with.  Everything else (connect, backoff, liveness pings, replay) is shared.

Why a value and not a subclass: the differences are three facts about the
wire, not behaviour, and a value keeps them side by side where they can be
compared with their sources (``PROTOCOLS.md`` 2 for ``/v1``, 11.4 and 11.5
for Flux; ``docs/deepgram-flux.rst``):

* **Idle.**  ``/v1`` closes a stream after ~10 s without data unless a
  ``KeepAlive`` text frame arrives (trap T4).  ``/v2`` has no such message:
  sending one *kills* the stream (11.4, [OBS] deepgram-python-sdk#618,
  livekit/agents#3648); an idle Flux stream is kept open by WebSocket pings,
  which the connection's liveness check already sends.
* **The end.**  ``/v1``: ``Finalize`` flushes the last results, then
  ``CloseStream``; the server sends ``Metadata`` and closes with 1000.
  ``/v2``: ``CloseStream`` does not end the open turn (no ``EndOfTurn``), so
  ``ForceEndTurn`` goes first; the server closes with *no status code*
  (Autobahn reports ``None``; other clients show 1005) and sends no
  ``Metadata`` (11.4 CLOSE, [OBS] pipecat#3463).
* **Which closes are normal** after ``CloseStream``: 1000 on ``/v1``;
  1000, 1005 or none on ``/v2``.
"""

from __future__ import annotations

from typing import Optional

import attrs

from xlbridge.engines.deepgram import flux_wire, wire

__all__ = ["FLUX", "NOVA", "Dialect"]


@attrs.frozen
class Dialect:
    """
    The per-API facts the connection acts on.

    :ivar name: ``nova`` (``/v1/listen``) or ``flux`` (``/v2/listen``), for logs.
    :ivar keepalive: the text frame sent after ``keepalive_s`` without
        sending anything, or ``None``: no keepalive message at all (the
        liveness pings alone keep the stream open).
    :ivar end_messages: text frames :meth:`end_stream` sends, in order.
    :ivar normal_closes: close codes that end the stream normally once
        ``CloseStream`` went out (``None``: a close frame without a status).
    """

    name: str
    keepalive: Optional[str]
    end_messages: tuple[str, ...]
    normal_closes: frozenset[Optional[int]]


#: ``/v1/listen``: KeepAlive; Finalize then CloseStream; the server closes with 1000.
NOVA = Dialect("nova", wire.KEEPALIVE, (wire.FINALIZE, wire.CLOSE_STREAM), frozenset({1000}))

#: ``/v2/listen``: no KeepAlive (pings only); ForceEndTurn then CloseStream;
#: the server closes without a status code (1005).
FLUX = Dialect("flux", None, (flux_wire.FORCE_END_TURN, flux_wire.CLOSE_STREAM), frozenset({1000, 1005, None}))
