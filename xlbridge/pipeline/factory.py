"""
The pipeline factory of translated calls: each direction of a call gets a
:class:`~xlbridge.pipeline.translate.TranslatePipeline`, or a relay when
both callers speak the same language; with direction sync on, the two
directions of a call share one :class:`DirectionSync`.

It tells the call how each caller hears the other
(:meth:`TranslateFactory.speech_output`): translated speech through an
``OutputMix`` set up from :class:`TranslateSettings`, or, for a
same-language pair, the partner's voice through the relay buffer.  The call
builds the playouts and hands them back to :meth:`TranslateFactory.__call__`.
"""

from __future__ import annotations

from typing import Optional

from xlbridge.call.context import CallContext
from xlbridge.call.leg import Leg
from xlbridge.call.playout import Playout, SpeechOutput
from xlbridge.engines.base import Engines
from xlbridge.interfaces import IPipeline
from xlbridge.pipeline.relay import RelayPipeline
from xlbridge.pipeline.settings import DirectionSync, TranslateSettings
from xlbridge.pipeline.translate import TranslatePipeline


def same_language(a: Leg, b: Leg) -> bool:
    """
    The two callers speak the same language (``en`` and ``en-gb`` do): the
    call relays instead of translating.
    """
    return a.language.split("-")[0] == b.language.split("-")[0]


class TranslateFactory:
    """
    A pipeline factory (see :class:`xlbridge.call.service.PipelineFactory`)
    that translates between legs of different languages and relays
    between legs of the same language.
    """

    def __init__(self, engines: Engines, settings: TranslateSettings) -> None:
        self.engines = engines
        self.settings = settings
        self._syncs: dict[str, DirectionSync] = {}

    def speech_output(self, listener: Leg, speaker: Leg) -> Optional[SpeechOutput]:
        if same_language(listener, speaker):
            return None
        s = self.settings
        return SpeechOutput(s.backlog_s, s.live_buffer_ms, s.bed_db, s.gain_db, s.comfort_noise_dbfs)

    def __call__(
        self, source: Leg, partner: Leg, call: CallContext, partner_hears: Playout, source_hears: Playout
    ) -> IPipeline:
        if partner_hears.mix is None:
            # speech_output said the partner hears the source's own voice
            return RelayPipeline(source, partner, partner_hears)
        settings = self.settings
        sync = None
        if settings.sync_directions:
            # One shared DirectionSync per call: its two pipelines are built
            # one after the other; the second one takes it out of the table.
            sync = self._syncs.pop(call.call_id, None)
            if sync is None:
                sync = self._syncs[call.call_id] = DirectionSync(settings.sync_max_ms)
        return TranslatePipeline(
            source, partner, call, self.engines, settings, partner_hears, source_hears, sync
        )


def translate_factory(engines: Engines, settings: TranslateSettings) -> TranslateFactory:
    """
    A pipeline factory that translates between legs of different languages
    and relays between legs of the same language.
    """
    return TranslateFactory(engines, settings)
