"""
The states of a Deepgram connection and what it reports to its owner: the
small contract between
:class:`~xlbridge.engines.deepgram.connection.DeepgramConnection` (the
socket's lifecycle) and the ASR that owns it
(:class:`~xlbridge.engines.deepgram.asr.DeepgramASR` for ``/v1/listen``,
:class:`~xlbridge.engines.deepgram.flux.FluxASR` for ``/v2/listen``).

Kept apart so that each ASR and each test's recording owner depend on this
contract, not on the connection's internals; the connection module
re-exports both names.  The lifecycle diagram is in the connection's
docstring.
"""

from __future__ import annotations

import enum
from typing import Optional, Protocol

from xlbridge.engines.base import EngineError

__all__ = ["DeepgramConnectionOwner", "State"]


class State(enum.StrEnum):
    """
    State of a :class:`~xlbridge.engines.deepgram.connection.DeepgramConnection`
    (and so of its client), for the monitor.
    """

    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    BACKOFF = "backoff"
    FAILED = "failed"
    CLOSED = "closed"


class DeepgramConnectionOwner(Protocol):
    """
    What a :class:`~xlbridge.engines.deepgram.connection.DeepgramConnection`
    reports to the object that owns it.

    Every call comes on the reactor thread, from inside the connection's
    own handling of a reactor event; the owner may call back into the
    connection (send, :meth:`~xlbridge.engines.deepgram.connection.DeepgramConnection.end_stream`,
    :meth:`~xlbridge.engines.deepgram.connection.DeepgramConnection.close`) but must not raise.
    """

    def connection_opened(self, request_id: Optional[str]) -> None:
        """
        A connection is open (the upgrade succeeded): the owner may send now.

        :param request_id: the ``dg-request-id`` upgrade header, if any.
        """

    def message_received(self, payload: bytes, is_binary: bool) -> None:
        """One message from the server on the open connection, unparsed."""

    def connection_down(self, error: EngineError, retrying: bool) -> None:
        """
        A connection attempt failed or the open connection dropped.

        :param retrying: a new attempt is scheduled (``backoff``); if
            false, ``error`` will not heal by retrying and the connection
            gave up for good (``failed``).
        """

    def connection_closed(self) -> None:
        """
        The connection ended for good without an error: Deepgram closed the
        stream after :meth:`~xlbridge.engines.deepgram.connection.DeepgramConnection.end_stream`, or
        :meth:`~xlbridge.engines.deepgram.connection.DeepgramConnection.close` was called.
        """
