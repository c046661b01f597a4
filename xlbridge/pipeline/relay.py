"""
The relay pipeline: the partner hears the caller's own voice.

It is the simplest :class:`~xlbridge.interfaces.IPipeline` and the baseline
every other pipeline is compared with: decoded caller audio goes straight
into the buffer the partner hears (the partner's relay
:class:`~xlbridge.call.playout.Playout`).  With equal inbound and reply
codecs the relay is bit-exact.  Translation factories use it for
same-language pairs.
"""

from __future__ import annotations

from typing import Optional

from zope.interface import implementer

from xlbridge.audio.frame import Samples
from xlbridge.call.context import CallContext
from xlbridge.call.leg import Leg
from xlbridge.call.playout import Playout, SpeechOutput
from xlbridge.events import DropReason
from xlbridge.interfaces import IPipeline


@implementer(IPipeline)
class RelayPipeline:
    """
    Copy ``source``'s audio into ``partner_hears``, what ``partner`` hears.

    Audio the bounded output drops (the oldest) is counted on the
    partner's counters as :attr:`DropReason.BUFFER_FULL`, in samples.
    """

    def __init__(self, source: Leg, partner: Leg, partner_hears: Playout) -> None:
        self.source = source
        self.partner = partner
        self.partner_hears = partner_hears

    def start(self) -> None:
        pass

    def audio_in(self, samples: Samples) -> None:
        dropped = self.partner_hears.output.write(samples)
        if dropped:
            self.partner.counters.drop(DropReason.BUFFER_FULL, dropped)

    def stop(self) -> None:
        pass


class RelayFactory:
    """
    A pipeline factory (see :class:`xlbridge.call.service.PipelineFactory`)
    that relays both ways: each caller hears the other's own voice.
    """

    def speech_output(self, listener: Leg, speaker: Leg) -> Optional[SpeechOutput]:
        return None

    def __call__(
        self, source: Leg, partner: Leg, call: CallContext, partner_hears: Playout, source_hears: Playout
    ) -> IPipeline:
        return RelayPipeline(source, partner, partner_hears)


#: The bridge's default pipeline factory.
relay_factory = RelayFactory()
