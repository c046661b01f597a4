"""
Engine usage over the bridge's life, for cost estimates: audio seconds fed
to each recogniser, characters sent to each translator and synthesiser.

Each translating direction of a call counts what it hands its engines in an
:class:`~xlbridge.events.EngineUsage` (a few integer additions per frame or
utterance; nothing here runs per packet).  :class:`UsageMeter` sums them
per engine when ``/metrics`` is scraped: the live calls' counts as they
stand, plus those of ended calls, folded into a running total when their
``CallEnded`` is observed (the call is still listed then, and its pipelines
have stopped).  The sums therefore only grow, as Prometheus counters must.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Protocol, runtime_checkable

from xlbridge.audio.frame import SAMPLE_RATE
from xlbridge.bridge_view import MonitorView
from xlbridge.call.service import CallService
from xlbridge.events import CallEnded, EngineUsage, Event

#: The stages counted, and their units.
STAGES = ("asr", "mt", "tts")


@runtime_checkable
class MetersUsage(Protocol):
    """
    A pipeline that counts what it sends to its engines (the translating
    one; a relay sends nothing).
    """

    @property
    def usage(self) -> EngineUsage:
        """
        Its counts so far.
        """


def _amounts(usages: Iterable[EngineUsage]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for u in usages:
        out["asr", u.asr_engine or "asr"] += u.asr_samples
        out["mt", u.mt_engine or "mt"] += u.mt_chars
        out["tts", u.tts_engine or "tts"] += u.tts_chars
    return out


def _usages(call: CallService) -> list[EngineUsage]:
    return [p.usage for p in call.pipelines if isinstance(p, MetersUsage)]


class UsageMeter:
    """
    Sums :class:`~xlbridge.events.EngineUsage` over live and ended calls.

    :param bridge: its live calls are read at scrape time.
    """

    def __init__(self, bridge: MonitorView) -> None:
        self.bridge = bridge
        self._ended: Counter[tuple[str, str]] = Counter()

    def observe(self, event: Event) -> None:
        """
        Bridge observer: fold an ending call's counts into the total.
        """
        if isinstance(event, CallEnded):
            for call in self.bridge.active_calls():
                if call.call_id == event.call_id:
                    self._ended.update(_amounts(_usages(call)))

    __call__ = observe

    def totals(self) -> dict[tuple[str, str], float]:
        """
        ``(stage, engine) -> amount``: ASR in seconds of audio, MT and TTS
        in characters; engines that were never used are absent.
        """
        live = _amounts(u for call in self.bridge.active_calls() if call.running for u in _usages(call))
        raw = self._ended + live  # Counter addition drops zero entries
        return {
            (stage, engine): (n / SAMPLE_RATE if stage == "asr" else float(n))
            for (stage, engine), n in sorted(raw.items())
        }
