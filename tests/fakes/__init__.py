"""
Protocol-faithful fake cloud engines (Deepgram, DeepL, ElevenLabs) for tests
and for running the bridge by hand (``python -m tests.fakes --help``).

They check what they receive (headers, parameters, audio byte order and
rate) and offer latency and failure injection.  Words travel as tones
(:mod:`tests.fakes.tonewords`) so a fake can "recognise" and "speak" them
deterministically.
"""
