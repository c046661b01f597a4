"""
Deepgram live ASR: :mod:`.asr` (the clients' shared core
:class:`.asr.SpooledASR`, the Nova client :class:`.asr.DeepgramASR`, and the
factory), :mod:`.flux` (the Flux client, ``/v2/listen``), :mod:`.connection`
(the socket and its lifecycle; :mod:`.traffic`, :mod:`.lifecycle`,
:mod:`.dialect`, :mod:`.keepalive`, :mod:`.failures` and :mod:`.protocol`
beside it), :mod:`.wire`, :mod:`.flux_wire`, :mod:`.flux_turns`,
:mod:`.flux_session` (messages, turns and the replay spool, sans-I/O) and :mod:`.settings`.  Import names from the module
that defines them; this package re-exports nothing.
"""
