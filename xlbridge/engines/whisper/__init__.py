"""
Whisper on CTranslate2: multilingual offline speech recognition for the
local engines.

- :mod:`~xlbridge.engines.whisper.settings`: the ``[local_asr.whisper]``
  table and :class:`~xlbridge.engines.whisper.settings.WhisperModel`.
- :mod:`~xlbridge.engines.whisper.model`: finding, checking and assembling
  the model folder (never downloaded).
- :mod:`~xlbridge.engines.whisper.decode`: one utterance through the model,
  with the guards against Whisper's speed and hallucination traps.
- :mod:`~xlbridge.engines.whisper.stream`: voice activity segmentation and
  one caller's stream, run in the ASR worker processes.
- :mod:`~xlbridge.engines.whisper.install`: the ``xlbridge-models`` command.
"""
