"""
The pipeline factory of translated calls: each direction of a call gets a
:class:`~xlbridge.pipeline.translate.TranslatePipeline`, or a relay when
both callers speak the same language; with direction sync on, the two
directions of a call share one :class:`DirectionSync`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xlbridge.call.leg import Leg
from xlbridge.interfaces import IPipeline
from xlbridge.pipeline.relay import RelayPipeline
from xlbridge.pipeline.settings import DirectionSync, Engines, TranslateSettings
from xlbridge.pipeline.translate import TranslatePipeline

if TYPE_CHECKING:
    from xlbridge.call.service import PipelineFactory


def translate_factory(engines: Engines, settings: TranslateSettings) -> "PipelineFactory":
    """
    A pipeline factory that translates between legs of different languages
    and relays between legs of the same language.
    """
    syncs: dict[str, DirectionSync] = {}

    def factory(source: Leg, partner: Leg, call: Any) -> IPipeline:
        if source.language.split("-")[0] == partner.language.split("-")[0]:
            return RelayPipeline(source, partner)
        sync = None
        if settings.sync_directions:
            # One shared DirectionSync per call: its two pipelines are built
            # one after the other; the second one takes it out of the table.
            sync = syncs.pop(call.call_id, None)
            if sync is None:
                sync = syncs[call.call_id] = DirectionSync(settings.sync_max_ms)
        return TranslatePipeline(source, partner, call, engines, settings, sync)

    return factory
