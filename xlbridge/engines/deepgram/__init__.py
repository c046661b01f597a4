"""
Deepgram live ASR: :mod:`.asr` (the client, :class:`.asr.DeepgramASR`, and
its factory), :mod:`.connection` (the socket and its lifecycle),
:mod:`.wire` (messages and the replay spool, sans-I/O) and :mod:`.settings`.
Import names from the module that defines them; this package re-exports
nothing.
"""
