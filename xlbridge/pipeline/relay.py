"""
The relay pipeline: the partner hears the caller's own voice.

It is the simplest :class:`~xlbridge.interfaces.IPipeline` and the baseline
every other pipeline is compared with: decoded caller audio goes straight
into the partner leg's outbound buffer.  With equal inbound and reply codecs
the relay is bit-exact.  Translation pipelines reuse it as their fallback
while an engine is down, and for same-language pairs.
"""

from __future__ import annotations

from zope.interface import implementer

from typing import Any

from xlbridge.audio.frame import Samples
from xlbridge.call.leg import Leg
from xlbridge.interfaces import IPipeline


@implementer(IPipeline)
class RelayPipeline:
    """
    Copy ``source``'s audio to ``partner``'s outbound buffer.
    """

    def __init__(self, source: Leg, partner: Leg) -> None:
        self.source = source
        self.partner = partner

    def start(self) -> None:
        pass

    def audio_in(self, samples: Samples) -> None:
        self.partner.play(samples)

    def stop(self) -> None:
        pass


def relay_factory(source: Leg, partner: Leg, call: Any) -> IPipeline:
    """
    A pipeline factory (see :class:`xlbridge.call.service.PipelineFactory`)
    that relays.
    """
    return RelayPipeline(source, partner)
