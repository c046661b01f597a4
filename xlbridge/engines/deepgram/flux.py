"""
Deepgram Flux (``/v2/listen``) live ASR: :class:`FluxASR`, one turn-based
stream per caller, chosen with ``[deepgram] api = "flux"`` (the factory is
:func:`~xlbridge.engines.deepgram.factory.deepgram_asr_factory`).

Why Flux: it reports an *eager* end of turn (``EagerEndOfTurn``) about
100 ms before it commits to the end (``EndOfTurn``), and guarantees that
the end's transcript equals the eager one unless it first says
``TurnResumed`` (PROTOCOLS.md 11.3).  The pipeline can start translating
and synthesising on :class:`~xlbridge.engines.base.EagerEnd` and play it on
the final :class:`~xlbridge.engines.base.Transcript`, or drop it on
:class:`~xlbridge.engines.base.TurnResumed`.

What it shares with Nova's :class:`~xlbridge.engines.deepgram.asr.DeepgramASR`
(:class:`~xlbridge.engines.deepgram.asr.SpooledASR`): the connection
(connect, backoff, liveness pings, reconnect), the bounded spool and the
replay from the end of the last committed turn, ``finish()`` and the
``EngineDown``/``EngineUp`` events.  What differs (``docs/deepgram-flux.rst``):

* the URL (:func:`flux_url`) and the messages (:mod:`~.flux_session`);
* the connection's :data:`~xlbridge.engines.deepgram.dialect.FLUX` dialect:
  no ``KeepAlive`` ever (it kills a Flux stream); ``finish()`` sends
  ``ForceEndTurn`` then ``CloseStream`` (``CloseStream`` alone would lose the
  open turn), and the close without status code that follows is the end;
* after ``CloseStream``, the ``EndOfTurn`` that ``ForceEndTurn`` asked for
  (``trigger: "manual"``) is the last message that matters, so a drop after
  it is the end, not an outage (Nova's ``Metadata`` plays that part);
* a connection that ends with a speculation open withdraws it
  (``TurnResumed``) before its ``EngineDown``: the turn is heard again on
  the next connection from the replayed audio.

Audio goes out in ``chunk_ms`` messages like Nova's; Flux recommends 80 ms
(PROTOCOLS.md 11.1), which costs up to 60 ms of latency per message over
the default 20, so it is left to ``chunk_ms``.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlencode

from xlbridge.audio.frame import SAMPLE_RATE
from xlbridge.engines.deepgram.asr import SpooledASR
from xlbridge.engines.deepgram.dialect import FLUX, Dialect
from xlbridge.engines.deepgram.flux_session import FluxSession
from xlbridge.engines.deepgram.flux_wire import MULTILINGUAL_MODELS, flux_query
from xlbridge.engines.deepgram.settings import FLUX_MULTI_LANGUAGES, DeepgramSettings
from xlbridge.engines.languages import primary

__all__ = ["ENGINE_NAME", "FluxASR", "flux_url"]

#: :attr:`FluxASR.engine_name`: status pages and usage tell it from Nova.
ENGINE_NAME = "deepgram-flux"


def flux_url(settings: DeepgramSettings, language: str) -> str:
    """
    The ``/v2/listen`` WebSocket URL for one stream.

    :param language: the leg's BCP-47 code; on ``flux-general-multi`` its
        primary subtag goes as ``language_hint`` when Flux knows it.
    :return: ``<base_url>/v2/listen?model=...`` (a ``base_url`` ending in
        ``/v1/listen`` or ``/v2/listen`` is taken as the service root); the
        API key is never part of it.
    :raises ValueError: for values Flux rejects (the settings checked them).
    """
    lang = primary(language)
    hints = [lang] if settings.flux_model in MULTILINGUAL_MODELS and lang in FLUX_MULTI_LANGUAGES else []
    params = flux_query(settings.flux_model, sample_rate=SAMPLE_RATE, eot_threshold=settings.eot_threshold,
                        eager_eot_threshold=settings.eager_eot_threshold, eot_timeout_ms=settings.eot_timeout_ms,
                        language_hints=hints)
    params += [(str(k), str(v)) for k, v in settings.extra_params]
    base = settings.base_url.rstrip("/")
    for path in ("/v1/listen", "/v2/listen"):
        if base.endswith(path):
            base = base[: -len(path)]
    return f"{base}/v2/listen?{urlencode(params)}"


class FluxASR(SpooledASR):
    """
    One Flux stream for one caller, implementing
    :class:`~xlbridge.engines.base.ASR` and
    :class:`~xlbridge.engines.base.NamedASR`.  Parameters and counters as
    :class:`~xlbridge.engines.deepgram.asr.SpooledASR` (``keepalives`` is
    always 0); events as :mod:`~xlbridge.engines.deepgram.flux_session`
    maps them.

    Speculations (for metrics: each wasted one cost a translation and a
    synthesis): :attr:`speculations_started`, :attr:`speculations_used`
    (the turn ended with the eager transcript), :attr:`speculations_wasted`
    (withdrawn: resumed, changed, or the connection ended), over every
    connection of the stream.
    """

    dialect: ClassVar[Dialect] = FLUX
    session: FluxSession

    def _make_session(self) -> FluxSession:
        return FluxSession()

    def _make_url(self, language: str) -> str:
        return flux_url(self.settings, language)

    @property
    def engine_name(self) -> str:
        """``deepgram-flux``."""
        return ENGINE_NAME

    @property
    def speculations_started(self) -> int:
        """``EagerEnd`` events emitted."""
        return self.session.tracker.started

    @property
    def speculations_used(self) -> int:
        """Speculations the turn's end confirmed (same transcript)."""
        return self.session.tracker.used

    @property
    def speculations_wasted(self) -> int:
        """Speculations withdrawn (``TurnResumed`` emitted)."""
        return self.session.tracker.wasted

    def _judge_close(self) -> None:
        if self.connection.close_sent and self.session.last_trigger == "manual" and not self.session.in_turn:
            # The EndOfTurn ForceEndTurn asked for: nothing after it matters.
            self.connection.last_message_received()

    def _connection_lost(self) -> None:
        """A speculation open on the ended connection is withdrawn first."""
        for ev in self.session.connection_lost(self.reactor.seconds()):
            self._emit(ev, force=True)
