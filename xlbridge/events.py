"""
Typed values that travel between xlbridge's parts: drop reasons, counters
and call lifecycle events.

Drop reasons are an :class:`enum.Enum` so counters are keyed by a closed set
(the monitor turns them into Prometheus labels without cardinality surprises).
Events are frozen attrs classes named for what they carry; they are
serialised in one place (:func:`xlbridge.event_json.event_to_dict`) for
logs and transcripts.
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import Any, Optional, Union

import attrs


class DropReason(enum.Enum):
    """
    Why an inbound packet or outbound audio was discarded.
    """

    #: Datagram shorter than the 12-byte RTP header.
    SHORT = "short"
    #: RTP version field is not 2.
    VERSION = "version"
    #: Padding count is zero or runs past the start of the payload.
    PADDING = "padding"
    #: CSRC list runs past the end of the datagram.
    CSRC = "csrc"
    #: Header extension runs past the end of the datagram.
    EXTENSION = "extension"
    #: Payload type is not the one this leg receives.
    PAYLOAD_TYPE = "payload_type"
    #: Payload could not be decoded (odd length for L16, empty).
    PAYLOAD = "payload"
    #: Datagram longer than any RTP frame a phone or Asterisk sends (over
    #: :data:`xlbridge.transports.rtp.MAX_DATAGRAM` bytes); dropped whole.
    OVERSIZE = "oversize"
    #: Sent from an address other than the latched source.
    FOREIGN_SOURCE = "foreign_source"
    #: Sequence number already received.
    DUPLICATE = "duplicate"
    #: Arrived after its slot was given up by the reorder buffer.
    LATE = "late"
    #: Outbound audio discarded because the leg's buffer was full.
    BUFFER_FULL = "buffer_full"
    #: Arrived while no call could take it (shutting down).
    NO_CALL = "no_call"
    #: An unexpected error while handling the packet, or a failed send
    #: (logged, throttled).
    ERROR = "error"
    #: The packet was received and decoded, but the pipeline it was handed
    #: to (``on_audio``) raised: a bug above the transport, not bad input
    #: (logged, throttled).  The packet also counts in ``packets_in``.
    PIPELINE_ERROR = "pipeline_error"
    #: AudioSocket message of a kind we do not accept (skipped whole).
    AUDIOSOCKET_KIND = "audiosocket_kind"
    #: AudioSocket message too long for its kind, empty or odd-sized audio.
    AUDIOSOCKET_LENGTH = "audiosocket_length"
    #: AudioSocket audio before the 0x01 UUID message.
    AUDIOSOCKET_NO_UUID = "audiosocket_no_uuid"
    #: AudioSocket connection closed in the middle of a message.
    AUDIOSOCKET_TRUNCATED = "audiosocket_truncated"
    #: A second AudioSocket connection to a busy extension (refused).
    AUDIOSOCKET_BUSY = "audiosocket_busy"
    #: An AudioSocket connection to the ARI listener announced a UUID that
    #: belongs to no leg (refused).
    AUDIOSOCKET_UNKNOWN_UUID = "audiosocket_unknown_uuid"
    #: Outbound audio not written because more than a frame or two already
    #: waited unsent on the TCP connection (the peer reads too slowly): it
    #: would only be heard late (:mod:`xlbridge.transports.backlog`).
    SEND_BACKLOG = "send_backlog"
    #: A chan_websocket TEXT (control) message that could not be parsed.
    WEBSOCKET_MALFORMED = "websocket_malformed"
    #: chan_websocket BINARY audio that cannot be decoded: before
    #: MEDIA_START, in a format the bridge does not carry, or not whole
    #: samples.
    WEBSOCKET_FORMAT = "websocket_format"
    #: Outbound frames not sent because Asterisk's queue had no room (more
    #: than the transport asked for, or past its full level).
    WEBSOCKET_FULL = "websocket_full"
    #: A second WebSocket connection to a busy extension (refused).
    WEBSOCKET_BUSY = "websocket_busy"
    #: A WebSocket connection to the ARI controller's port whose first
    #: message was not MEDIA_START, or that sent none in time (closed).
    WEBSOCKET_NO_START = "websocket_no_start"
    #: A WebSocket connection to the ARI controller's port whose
    #: MEDIA_START named a channel that is no leg of ours (closed).
    WEBSOCKET_UNKNOWN_CHANNEL = "websocket_unknown_channel"
    #: A new call refused because calls started faster than
    #: ``--max-new-calls`` a second on its transport (AudioSocket UUID or
    #: WebSocket MEDIA_START; the connection is closed).  Counted once per
    #: refused call, on the leg it asked for.
    CALL_RATE = "call_rate"


@attrs.define(slots=True)
class LegCounters:
    """
    Running counters of one leg, readable by the monitor.

    Byte counts are RTP/AudioSocket/WebSocket payload bytes, not IP
    datagram sizes.  A WebSocket leg counts 20 ms frames in ``packets_*``
    (one message may carry several).  The last four are kept by transports
    whose peer owns the playout clock (chan_websocket) and stay 0 for the
    others.

    :ivar xoff_ms: time the peer said its queue was full (MEDIA_XOFF until
        MEDIA_XON), in ms.
    :ivar flushed_bytes: audio sent ahead and then dropped from the peer's
        queue by a flush (an utterance cut), estimated, in payload bytes.
    :ivar marks_sent: playout marks sent (MARK_MEDIA).
    :ivar marks_processed: marks the peer reported played.
    """

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    silence_out: int = 0
    late_ticks: int = 0
    skipped_ticks: int = 0
    lost: int = 0
    drops: Counter[DropReason] = attrs.field(factory=Counter)
    xoff_ms: int = 0
    flushed_bytes: int = 0
    marks_sent: int = 0
    marks_processed: int = 0

    def drop(self, reason: DropReason, n: int = 1) -> None:
        """
        Count ``n`` drops for ``reason``.
        """
        self.drops[reason] += n

    def add(self, other: "LegCounters") -> None:
        """
        Add ``other``'s counts to these (folding a retired endpoint's
        counters into a total that must never go down).
        """
        self.packets_in += other.packets_in
        self.bytes_in += other.bytes_in
        self.packets_out += other.packets_out
        self.bytes_out += other.bytes_out
        self.silence_out += other.silence_out
        self.late_ticks += other.late_ticks
        self.skipped_ticks += other.skipped_ticks
        self.lost += other.lost
        self.drops.update(other.drops)
        self.xoff_ms += other.xoff_ms
        self.flushed_bytes += other.flushed_bytes
        self.marks_sent += other.marks_sent
        self.marks_processed += other.marks_processed

    def snapshot(self) -> dict[str, Any]:
        """
        A JSON-ready copy: plain ints, drop reasons by their string value.
        """
        return {
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "packets_out": self.packets_out,
            "bytes_out": self.bytes_out,
            "silence_out": self.silence_out,
            "late_ticks": self.late_ticks,
            "skipped_ticks": self.skipped_ticks,
            "lost": self.lost,
            "drops": {r.value: n for r, n in sorted(self.drops.items(), key=lambda i: i[0].value)},
            "xoff_ms": self.xoff_ms,
            "flushed_bytes": self.flushed_bytes,
            "marks_sent": self.marks_sent,
            "marks_processed": self.marks_processed,
        }


@attrs.define(slots=True)
class EngineUsage:
    """
    What one direction of a call handed to its engines, for cost estimates
    (the monitor sums it into ``/metrics`` per engine).

    :ivar asr_engine: the recogniser's name (``deepgram``, ``whisper``...).
    :ivar asr_samples: 16 kHz samples fed to the recogniser, silence the
        pipeline fills in included (a streaming recogniser is sent them all).
    :ivar mt_chars: characters of text sent to translation (not the context
        sent along with it).
    :ivar tts_chars: characters of text sent to speech synthesis.
    """

    asr_engine: str = ""
    mt_engine: str = ""
    tts_engine: str = ""
    asr_samples: int = 0
    mt_chars: int = 0
    tts_chars: int = 0


@attrs.frozen
class CallStarted:
    """
    A call began: audio first arrived on one of a pair's legs, an
    AudioSocket caller came on the line, or the ARI controller paired two
    callers.

    :ivar channels: for an ARI call, the two callers' Asterisk channel ids
        (``extensions`` are their channel names); otherwise ``None``.
    """

    call_id: str
    extensions: tuple[str, str]
    languages: tuple[str, str]
    time: float
    channels: Optional[tuple[str, str]] = None


@attrs.frozen
class CallEnded:
    """
    A call ended (inactivity, hangup or shutdown).

    :ivar reason: ``"inactivity"``, ``"hangup"`` or ``"shutdown"``.
    :ivar duration: seconds from start to end.
    :ivar channels: as in :class:`CallStarted`.
    """

    call_id: str
    extensions: tuple[str, str]
    reason: str
    duration: float
    time: float
    channels: Optional[tuple[str, str]] = None


@attrs.frozen
class TranscriptEvent:
    """
    Recognised speech of a caller: interim (a caption that will change) or
    final.

    :ivar extension: the speaker.
    :ivar asr_ms: for finals, end of speech to the final result, in ms.
    """

    call_id: str
    extension: str
    language: str
    text: str
    is_final: bool
    time: float
    speech_final: bool = False
    asr_ms: Optional[float] = None


@attrs.frozen
class TranslationEvent:
    """
    A final transcript translated for the partner.

    :ivar extension: the speaker; ``language`` is the target language.
    :ivar utterance: per-direction sequence number of the utterance.
    """

    call_id: str
    extension: str
    language: str
    text: str
    source_text: str
    source_language: str
    utterance: int
    mt_ms: float
    time: float


@attrs.frozen
class PlaybackStarted:
    """
    The first packet of a translated utterance went on the wire.

    :ivar extension: the listener; ``speaker`` said it.
    :ivar asr_ms: end of speech to final transcript.
    :ivar mt_ms: translation time.
    :ivar tts_first_byte_ms: TTS request to its first audio.
    :ivar queue_wait_ms: first audio to first packet (waiting for earlier
        utterances and the next tick).
    :ivar total_ms: end of speech to first translated packet on the wire.
    """

    call_id: str
    extension: str
    speaker: str
    language: str
    text: str
    utterance: int
    time: float
    asr_ms: Optional[float]
    mt_ms: Optional[float]
    tts_first_byte_ms: Optional[float]
    queue_wait_ms: Optional[float]
    total_ms: Optional[float]


@attrs.frozen
class PlaybackEnded:
    """
    The last packet of a translated utterance went on the wire.
    """

    call_id: str
    extension: str
    speaker: str
    language: str
    text: str
    utterance: int
    time: float
    duration_ms: float


@attrs.frozen
class UtteranceDropped:
    """
    A translated utterance was not (fully) played.

    :ivar reason: ``"backlog"`` (too much pending speech), ``"echo"`` (it was
        the listener's own translated speech coming back), ``"failed"``.
    """

    call_id: str
    extension: str
    language: str
    text: str
    reason: str
    time: float


@attrs.frozen
class EngineStatusEvent:
    """
    An engine failed or recovered for one direction of a call.

    :ivar state: ``"down"`` or ``"up"``.
    :ivar fallback: what the listener hears meanwhile: ``"relay"``,
        ``"silence"``, or ``"none"`` when back up.
    """

    call_id: str
    extension: str
    engine: str
    state: str
    fallback: str
    error: str
    retryable: bool
    time: float


@attrs.frozen
class SpeculationEvent:
    """
    What became of a speculation: a translation and synthesis started on an
    eager end of turn (Deepgram Flux ``EagerEndOfTurn``) before the turn
    really ended (:mod:`xlbridge.pipeline.speculate`).

    :ivar extension: the listener; ``source_extension``: the speaker.
    :ivar outcome: ``"started"``; ``"used"`` (the turn ended with the same
        words: it is played); ``"wasted"`` (withdrawn: its MT and TTS calls
        were paid for nothing).
    :ivar reason: for ``"wasted"``: ``"resumed"`` (the speaker went on),
        ``"changed"`` (the turn ended with other words), ``"replaced"`` (a
        newer eager end), ``"echo"``, ``"stopped"``, ``"timeout"`` (neither
        confirmed nor withdrawn within 5 s); else ``""``.
    :ivar early: for ``"used"``: it had started playing before the turn
        ended (``early_play_ms``).
    """

    call_id: str
    extension: str
    source_extension: str
    language: str
    text: str
    outcome: str
    reason: str
    time: float
    early: bool = False


#: Every event type the bridge emits.
Event = Union[
    CallStarted,
    CallEnded,
    TranscriptEvent,
    TranslationEvent,
    PlaybackStarted,
    PlaybackEnded,
    UtteranceDropped,
    EngineStatusEvent,
    SpeculationEvent,
]
