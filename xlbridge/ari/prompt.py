"""
``on_partner_hangup = "prompt"``: tell the caller left alone, then hang up.

ARI (Asterisk's ``rest-api/api-docs/channels.json`` and ``playbacks.json``,
``res/res_stasis_playback.c``):

- ``POST /channels/{id}/play?media=sound:vm-goodbye&lang=es`` answers a
  Playback object (``id``, ``media_uri``, ``target_uri`` =
  ``channel:<id>``, ``language``, ``state`` = ``queued``); a channel in a
  bridge gets it through the bridge.
- ``PlaybackStarted`` (state ``playing``) then ``PlaybackFinished`` (state
  ``done``; ``failed`` on newer builds when the file is missing) arrive on
  the events socket, each with the Playback as ``playback``.
- Some failures (an unsupported URI scheme) end the playback with no
  ``PlaybackFinished`` at all, hence the guard timer.

So: play, hang up on ``PlaybackFinished`` for that channel, or when the
guard timer fires, or at once if the play request fails.  If the caller
hangs up first, :meth:`PartnerPrompt.cancel` stops the timer.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.ari.client import ARIClient


@attrs.define
class _Prompt:
    timer: IDelayedCall
    #: from the play answer; ``None`` until it came
    playback_id: Optional[str] = None


class PartnerPrompt:
    """
    Prompts in progress, by channel id.

    :param media: the media URI to play (``sound:vm-goodbye``).
    :param timeout: seconds to wait for ``PlaybackFinished`` before hanging
        up anyway.
    :param hangup: hangs up a channel by id (the controller's, which logs
        and tolerates 404).
    :param track: called with each request's Deferred (after our own
        errback), so the controller can wait for it on shutdown.
    """

    log = Logger()

    def __init__(
        self,
        client: ARIClient,
        clock: IReactorTime,
        media: str,
        timeout: float,
        hangup: Callable[[str], object],
        track: Callable[["Deferred[Any]"], object] = lambda d: d,
    ) -> None:
        self.client = client
        self.clock = clock
        self.media = media
        self.timeout = timeout
        self.hangup = hangup
        self.track = track
        self.active: dict[str, _Prompt] = {}

    def start(self, channel_id: str, lang: str) -> None:
        """
        Play the prompt to ``channel_id`` in ``lang``, then hang it up.
        """
        if channel_id in self.active:
            return
        timer = self.clock.callLater(self.timeout, self._expired, channel_id)
        self.active[channel_id] = _Prompt(timer)
        d = self.client.play(channel_id, self.media, lang)
        d.addCallbacks(self._playing, self._failed, callbackArgs=(channel_id,), errbackArgs=(channel_id,))
        self.track(d)

    def _playing(self, playback: Any, channel_id: str) -> None:
        prompt = self.active.get(channel_id)
        if prompt is None or not isinstance(playback, dict):
            return
        prompt.playback_id = str(playback.get("id", "")) or None
        if playback.get("state") in ("done", "failed"):
            self._finish(channel_id, f"playback {playback.get('state')}")

    def _failed(self, failure: Failure, channel_id: str) -> None:
        if channel_id in self.active:
            self.log.warn(
                "playing {media} to {channel} failed ({err}); hanging up",
                media=self.media, channel=channel_id, err=failure.value,
            )
            self._finish(channel_id, "play failed")

    def playback_finished(self, playback: dict[str, Any]) -> None:
        """
        A ``PlaybackFinished`` event's ``playback``: if it played to a
        channel we prompt (and is our playback, when we know its id yet),
        hang that channel up.
        """
        target = str(playback.get("target_uri", ""))
        kind, _, channel_id = target.partition(":")
        prompt = self.active.get(channel_id) if kind == "channel" else None
        if prompt is None:
            return
        if prompt.playback_id is not None and playback.get("id") != prompt.playback_id:
            return
        self._finish(channel_id, "prompt played")

    def _expired(self, channel_id: str) -> None:
        prompt = self.active.get(channel_id)
        if prompt is not None:
            self.log.warn(
                "no PlaybackFinished for {channel} within {timeout:g} s; hanging up",
                channel=channel_id, timeout=self.timeout,
            )
            self._finish(channel_id, "prompt timed out")

    def _finish(self, channel_id: str, why: str) -> None:
        self.cancel(channel_id)
        self.log.info("{channel}: {why}; hanging up", channel=channel_id, why=why)
        self.hangup(channel_id)

    def cancel(self, channel_id: str) -> None:
        """
        Forget the prompt of ``channel_id`` (it hung up by itself, or we are
        stopping); idempotent.
        """
        prompt = self.active.pop(channel_id, None)
        if prompt is not None and prompt.timer.active():
            prompt.timer.cancel()

    def cancel_all(self) -> None:
        for channel_id in list(self.active):
            self.cancel(channel_id)

