"""
The echo guard of one direction: what the caller's microphone picks up of
the translation the caller is being played is not new speech.

Two ways, chosen by ``TranslateSettings.echo_guard``:

- *gate* (``"gate"``/``"both"``): while the caller is being played the other
  direction's translated speech, and for ``gate_tail_ms`` after, the
  recogniser is fed silence instead of the microphone;
- *text* (``"text"``/``"both"``): a final transcript whose words match
  (``echo_similarity``) something the caller was played within
  ``echo_window_s`` seconds is dropped.

The guard is given what its caller hears (the caller's
:class:`~xlbridge.call.playout.Playout`, which the *other* direction writes):
it only reads it.
"""

from __future__ import annotations

from xlbridge.call.playout import Playout
from xlbridge.pipeline.settings import TranslateSettings, similarity


class EchoGuard:
    """
    :param played: what the caller whose speech is recognised is being
        played (their playout).
    """

    def __init__(self, played: Playout, settings: TranslateSettings) -> None:
        self.played = played
        self.settings = settings
        self._gate_until = 0.0

    @property
    def gates(self) -> bool:
        return self.settings.echo_guard in ("gate", "both")

    def gate_closed(self, now: float) -> bool:
        """
        The caller is being played translated speech (or was, within the
        tail): what the microphone hears now may be that.
        """
        if self.played.playing_speech:
            self._gate_until = now + self.settings.gate_tail_ms / 1000
            return True
        return now < self._gate_until

    def is_echo(self, text: str, now: float) -> bool:
        """
        ``text`` (a final transcript at ``now``) repeats what the caller was
        played recently.
        """
        if self.settings.echo_guard not in ("text", "both"):
            return False
        window = self.settings.echo_window_s
        for t, played in self.played.heard:
            if now - t <= window and similarity(text, played) >= self.settings.echo_similarity:
                return True
        return False
