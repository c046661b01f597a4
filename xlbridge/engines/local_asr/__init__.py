"""
Local speech recognition: what pocketsphinx, Vosk and Whisper share.

The recognisers themselves live in their own packages
(:mod:`xlbridge.engines.pocketsphinx`, :mod:`xlbridge.engines.vosk`,
:mod:`xlbridge.engines.whisper`); this package runs them for the bridge:

- :mod:`.settings`: the ``[local_asr]`` table and which model a language gets;
- :mod:`.factory`: one :class:`~.leg.LocalASR` per leg, sharing workers;
- :mod:`.leg`: a leg's recogniser (queueing, shedding, restarts);
- :mod:`.backends`: decoding in a thread pool or in worker processes;
- :mod:`.pool` and :mod:`.worker_link`: the parent side of the worker
  processes; :mod:`.worker`: the worker program; :mod:`.wire`: their framing;
- :mod:`.stream_clock`: stream time in 20 ms frames.
"""

#: The engine name in events, errors and metrics for every local recogniser.
ENGINE = "local-asr"
