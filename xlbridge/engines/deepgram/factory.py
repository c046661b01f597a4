"""
The Deepgram :data:`~xlbridge.engines.base.ASRFactory`: one
:class:`~xlbridge.engines.deepgram.asr.DeepgramASR` (Nova, ``/v1/listen``)
or :class:`~xlbridge.engines.deepgram.flux.FluxASR` (``api = "flux"``) per
caller.  Apart from both, since Flux's client builds on the Nova module's
:class:`~xlbridge.engines.deepgram.asr.SpooledASR`.
"""

from __future__ import annotations

from typing import Callable

from xlbridge.engines.base import ASR, ASREvent, ASRFactory
from xlbridge.engines.deepgram.asr import DeepgramASR, SpooledASR
from xlbridge.engines.deepgram.flux import FluxASR
from xlbridge.engines.deepgram.protocol import IDeepgramReactor
from xlbridge.engines.deepgram.settings import DeepgramSettings
from xlbridge.engines.options import EnvironmentSettingError

__all__ = ["deepgram_asr_factory"]


def deepgram_asr_factory(reactor: IDeepgramReactor, settings: DeepgramSettings) -> ASRFactory:
    """
    An :data:`~xlbridge.engines.base.ASRFactory` making one
    :class:`DeepgramASR` per caller, or one
    :class:`~xlbridge.engines.deepgram.flux.FluxASR` with ``api = "flux"``.

    :raises ConfigError: if ``settings`` has no API key.
    """
    if not settings.api_key:
        raise EnvironmentSettingError("DEEPGRAM_API_KEY", "no Deepgram API key: set it, or api_key in [deepgram]")

    cls: type[SpooledASR] = FluxASR if settings.api == "flux" else DeepgramASR

    def make(language: str, on_event: Callable[[ASREvent], None], call_id: str, extension: str) -> ASR:
        return cls(reactor, settings, language, on_event, call_id=call_id, extension=extension)

    return make
