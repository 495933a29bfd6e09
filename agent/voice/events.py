"""The base of the voice events, and the pipeline-level events (the per-stage events live with
their stage: audio, vad, wake, asr, intents).

``TurnTimings`` carries one utterance's latency stamps, in milliseconds
relative to the end of speech (the VAD's decision), so a dashboard or a test
reads "transcript after 310 ms, first audio after 840 ms" directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from agent.bus import Event


@dataclass(frozen=True, kw_only=True)
class VoiceEvent(Event):
    """Base of every voice event: ``stream`` names the pipeline (or client) it belongs to.

    No ``type`` of its own: only its subclasses go on the wire.
    """

    stream: str = ""


class PipelineState(str, Enum):
    """Where a pipeline is in a turn; a ``str`` so it compares and serialises as its name."""

    IDLE = "idle"  # only the wake word runs
    LISTENING = "listening"  # VAD and ASR run on the utterance
    THINKING = "thinking"  # the reply task transcribes and asks the dialogue
    SPEAKING = "speaking"  # the reply plays; the wake word or "stop" interrupts it

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, kw_only=True)
class PipelineStateChanged(VoiceEvent):
    """idle (waiting for the wake word) · listening · thinking · speaking."""

    type: ClassVar[str] = "voice.state"
    state: str = "idle"
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ReplyToken(VoiceEvent):
    type: ClassVar[str] = "voice.reply.token"
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class ReplyDone(VoiceEvent):
    """The whole answer text; ``interrupted`` when barge-in cut it (``by``: wake, stop, alert, client)."""

    type: ClassVar[str] = "voice.reply"
    text: str = ""
    answer_source: str = ""  # intent | llm | none | say | alert
    intent: str = ""
    interrupted: bool = False
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class SpeechStarted(VoiceEvent):
    type: ClassVar[str] = "voice.tts.started"
    rate: int = 22050
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class SpeechStopped(VoiceEvent):
    type: ClassVar[str] = "voice.tts.stopped"
    played_s: float = 0.0
    reason: str = "done"  # done | barge_in


@dataclass(frozen=True, kw_only=True)
class TurnTimings(VoiceEvent):
    type: ClassVar[str] = "voice.timings"
    turn: int = 0
    end: str = ""  # how the utterance ended: silence, max_length, end_of_stream, text
    audio_ms: float = 0.0
    end_of_speech_ms: int = 0  # the silence setting in force
    spans_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class VoiceError(VoiceEvent):
    """Something in the voice pipeline failed; ``message`` says what and what to do."""

    type: ClassVar[str] = "voice.error"
    code: str = ""
    message: str = ""
