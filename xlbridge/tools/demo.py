"""
The demo conversation: the bridge with its default engines and two simulated
phones, playing a short call between an English and a Spanish speaker.

    python -m xlbridge.tools.demo          # or: xlbridge-demo, sh scripts/demo.sh

Phone 7777 speaks English recordings and phone 8888 Spanish ones (Debian's
``asterisk-core-sounds-en-g722`` / ``-es-g722``: real 16 kHz human speech in
raw G.722, decoded with the bridge's own codec).  Both phones send slin16 RTP
like an Asterisk ExternalMedia channel and get G.722 back, as Asterisk
would.  The demo prints a live transcript (who said what, the translation,
per-stage latency), writes what each phone heard to WAV files, prints a
summary per direction and exits 0 only if translated speech reached both
partners.

Everything runs in one process on the real reactor: the bridge is the same
``BridgeService`` that ``twistd xlbridge`` runs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

from xlbridge.audio.codecs import get_codec, make_decoder
from xlbridge.audio.frame import SAMPLE_RATE, Samples
from xlbridge.audio.wavfile import save_wav
from xlbridge.events import (
    CallEnded,
    EngineStatusEvent,
    Event,
    PlaybackStarted,
    TranscriptEvent,
    TranslationEvent,
    UtteranceDropped,
)

SOUNDS = "/usr/share/asterisk/sounds"
EN_DIR = os.path.join(SOUNDS, "en_US_f_Allison")
ES_DIR = os.path.join(SOUNDS, "es_MX_f_Allison")

#: (speaker extension, start second, recording) — a short, turn-taking call.
SCRIPT = [
    ("7777", 0.5, os.path.join(EN_DIR, "conf-onlyperson.g722")),
    ("8888", 5.5, os.path.join(ES_DIR, "conf-onlyperson.g722")),
    ("7777", 12.0, os.path.join(EN_DIR, "agent-pass.g722")),
    ("8888", 18.0, os.path.join(ES_DIR, "auth-thankyou.g722")),
    ("7777", 20.5, os.path.join(EN_DIR, "vm-goodbye.g722")),
    ("8888", 23.0, os.path.join(ES_DIR, "vm-goodbye.g722")),
]
#: Who hears whom: speaker -> listener.
PARTNER = {"7777": "8888", "8888": "7777"}
TAIL_S = 4.0


def load_g722(path: str) -> Samples:
    """
    Decode a raw G.722 file (Asterisk's ``.g722`` sounds) to 16 kHz audio.
    """
    with open(path, "rb") as f:
        data = f.read()
    return make_decoder(get_codec("g722")).decode(data)


def build_tracks(script: Sequence[tuple[str, float, str]]) -> dict[str, Samples]:
    """
    One full-length track per phone: silence with each recording placed at
    its start time.
    """
    clips = [(ext, start, load_g722(path)) for ext, start, path in script]
    end = max(start + len(clip) / SAMPLE_RATE for _, start, clip in clips) + TAIL_S
    tracks = {ext: np.zeros(int(end * SAMPLE_RATE), dtype=np.int16) for ext, _, _ in clips}
    for ext, start, clip in clips:
        at = int(start * SAMPLE_RATE)
        tracks[ext][at : at + len(clip)] = clip
    return tracks


class Transcript:
    """
    Prints the conversation as it happens and keeps what the summary needs.
    """

    def __init__(self, out: Any = sys.stdout) -> None:
        self.out = out
        self.t0 = time.time()
        self.played: list[PlaybackStarted] = []
        self.finals: list[TranscriptEvent] = []
        self.translations: list[TranslationEvent] = []
        self.warnings: list[str] = []

    def _line(self, text: str) -> None:
        print(f"[{time.time() - self.t0:6.2f}s] {text}", file=self.out, flush=True)

    def __call__(self, event: Event) -> None:
        if isinstance(event, TranscriptEvent) and event.is_final and event.text:
            self.finals.append(event)
            asr = f" (asr {event.asr_ms:.0f} ms)" if event.asr_ms is not None else ""
            self._line(f"{event.extension} ({event.language}) said: {event.text}{asr}")
        elif isinstance(event, TranslationEvent):
            self.translations.append(event)
            self._line(f"  -> {event.language}: {event.text} (mt {event.mt_ms:.0f} ms)")
        elif isinstance(event, PlaybackStarted):
            self.played.append(event)

            def ms(v: Optional[float]) -> str:
                return "-" if v is None else f"{v:.0f}"

            self._line(
                f"  {event.extension} hears: {event.text}  [end of speech -> first packet "
                f"{ms(event.total_ms)} ms: asr {ms(event.asr_ms)}, mt {ms(event.mt_ms)}, "
                f"tts {ms(event.tts_first_byte_ms)}, queue {ms(event.queue_wait_ms)}]"
            )
        elif isinstance(event, EngineStatusEvent) and event.state == "down":
            self._line(f"  {event.extension}: {event.engine} unavailable ({event.error}); partner hears {event.fallback}")
        elif isinstance(event, UtteranceDropped):
            self._line(f"  dropped for {event.extension} ({event.reason}): {event.text}")
        elif isinstance(event, CallEnded):
            self._line(f"call {event.call_id} ended ({event.reason})")


def _rms_dbfs(x: Samples) -> float:
    if not len(x):
        return -120.0
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    return 20 * np.log10(max(rms, 1e-9) / 32768)


def run(reactor: Any, args: argparse.Namespace) -> int:
    """
    Run the demo on ``reactor``; returns the exit code.
    """
    from twisted.internet import defer

    from xlbridge.bridge import BridgeService
    from xlbridge.config import load_config
    from xlbridge.engines.select import choose_engines
    from xlbridge.errors import ConfigError
    from xlbridge.pipeline.factory import translate_factory
    from xlbridge.tools.phone import Phone

    missing = [path for _, _, path in SCRIPT if not os.path.exists(path)]
    if missing:
        print(
            "xlbridge-demo: the recordings are missing; install the Debian packages "
            "asterisk-core-sounds-en-g722 and asterisk-core-sounds-es-g722 (sh scripts/setup.sh does).",
            file=sys.stderr,
        )
        return 2
    config = load_config({"ports": "7777=0,8888=0", "langs": "en,es", "engines": args.engines}, args.config)
    languages = {lang for pair in config.pairs for lang in pair.languages}
    try:
        choice = choose_engines(config.engines, reactor, os.environ, config.engine_options, languages)
    except ConfigError as e:
        print(f"xlbridge-demo: {e}", file=sys.stderr)
        return 2
    if choice.engines is None:
        print("xlbridge-demo: no translation engines (use --engines local or auto)", file=sys.stderr)
        return 2
    transcript = Transcript()
    for warning in choice.warnings:
        print(f"note: {warning}", flush=True)
    print(f"engines: {', '.join(f'{k}={v}' for k, v in choice.engines.names.items())}", flush=True)
    bridge = BridgeService(
        config, reactor, pipeline_factory=translate_factory(choice.engines, config.translation),
        observers=[transcript], services=choice.services,
    )
    monitor: Any = None
    if args.monitor.strip().lower() != "none":
        from xlbridge.monitor.service import make_monitor

        # The demo's own listen-in token (a page opened with it may listen).
        listen_token = secrets.token_urlsafe(24)
        monitor = make_monitor(bridge, reactor, args.monitor, None, False, listen_token=listen_token)
        monitor.setServiceParent(bridge)
    tracks = build_tracks(SCRIPT)
    os.makedirs(args.out, exist_ok=True)
    result: list[int] = []

    @defer.inlineCallbacks
    def main() -> Any:
        bridge.startService()
        if monitor is not None and monitor.url:
            page = monitor.url.split("?", 1)[0]
            print(f"monitor (live captions, listen-in): {page}?token={listen_token}", flush=True)
        phones = {}
        for ext, audio in tracks.items():
            listener = bridge.listeners[ext].port
            assert listener is not None
            target = ("127.0.0.1", listener.getHost().port)  # type: ignore[attr-defined]
            phone = Phone(reactor, audio, get_codec("slin16"), target, tail=TAIL_S)
            reactor.listenUDP(0, phone, interface="127.0.0.1")
            phones[ext] = phone
        print(f"playing a {len(next(iter(tracks.values()))) / SAMPLE_RATE:.0f} s conversation: "
              "7777 speaks English, 8888 Spanish", flush=True)
        reports = yield defer.gatherResults([p.play() for p in phones.values()])
        yield bridge.stopService()
        for (ext, phone), report in zip(phones.items(), reports):
            path = os.path.join(args.out, f"heard-by-{ext}.wav")
            save_wav(path, report.audio)
            save_wav(os.path.join(args.out, f"said-by-{ext}.wav"), tracks[ext])
            print(f"{ext} heard {report.seconds_recorded:.1f} s ({report.packets_received} packets, "
                  f"loss {report.lost}, jitter {report.jitter_ms:.2f} ms): {path}")
        ok = summarise(transcript, dict(zip(phones, reports)))
        result.append(0 if ok else 1)

    def done(_: Any) -> None:
        reactor.stop()

    def failed(f: Any) -> None:
        print(f"xlbridge-demo failed: {f.getErrorMessage()}", file=sys.stderr)
        f.printTraceback(file=sys.stderr)
        result.append(1)
        reactor.stop()

    reactor.callWhenRunning(lambda: main().addCallbacks(done, failed))
    reactor.run()
    return result[0] if result else 1


def summarise(transcript: Transcript, reports: dict[str, Any]) -> bool:
    """
    Print the summary, one line per direction; true only if translated
    speech reached both partners.
    """
    print()
    print("summary")
    print(f"  recognised utterances: {len(transcript.finals)}")
    print(f"  translations:          {len(transcript.translations)}")
    print(f"  translated utterances played: {len(transcript.played)}")
    reached: set[str] = set()
    for p in transcript.played:
        # The listener's recording starts at its first received packet: look
        # at the second of audio from when the translation started playing.
        report = reports[p.extension]
        if not report.packets:
            continue
        at = int((p.time - report.packets[0][0]) * SAMPLE_RATE)
        window = report.audio[max(0, at) : max(0, at) + SAMPLE_RATE]
        if _rms_dbfs(window) > -50:
            reached.add(p.extension)
    for speaker, listener in PARTNER.items():
        said = [f for f in transcript.finals if f.extension == speaker]
        played = [p for p in transcript.played if p.extension == listener]
        totals = sorted(p.total_ms for p in played if p.total_ms is not None)
        latency = (f", end of speech -> first translated packet median {totals[len(totals) // 2]:.0f} ms, "
                   f"max {totals[-1]:.0f} ms") if totals else ""
        lang = said[0].language if said else "?"
        heard = played[0].language if played else "?"
        state = "reached" if listener in reached else "NOT reached"
        print(f"  {speaker} ({lang}) -> {listener} ({heard}): {len(said)} recognised, {len(played)} played, "
              f"translated speech {state}{latency}")
    ok = reached == set(PARTNER.values())
    missing = sorted(set(PARTNER.values()) - reached)
    print("result: OK (both directions translated)" if ok
          else f"result: FAILED (no translated speech reached {', '.join(missing)})")
    return ok


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="xlbridge-demo", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--engines", default="local", choices=("auto", "local", "cloud"),
                        help="engines to translate with (default local: runs on this CPU, no keys)")
    parser.add_argument("--config", default=None, help="TOML settings file (e.g. model paths)")
    parser.add_argument("--out", default="demo-out", help="folder for the WAV files (default demo-out)")
    parser.add_argument("--monitor", default="tcp:3001:interface=127.0.0.1",
                        help="monitor endpoint (strports), or none (default tcp:3001:interface=127.0.0.1)")
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    return run(reactor, args)


if __name__ == "__main__":
    sys.exit(main())
