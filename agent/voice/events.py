"""Pipeline-level events (the per-stage events live with their stage: vad, wake, asr, intents).

``TurnTimings`` carries one utterance's latency stamps, in milliseconds
relative to the end of speech (the VAD's decision), so a dashboard or a test
reads "transcript after 310 ms, first audio after 840 ms" directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from agent.bus import Event


class PipelineState(str, Enum):
    """Where a pipeline is in a turn; a ``str`` so it compares and serialises as its name."""

    IDLE = "idle"  # only the wake word runs
    LISTENING = "listening"  # VAD and ASR run on the utterance
    THINKING = "thinking"  # the reply task transcribes and asks the dialogue
    SPEAKING = "speaking"  # the reply plays; the wake word or "stop" interrupts it

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, kw_only=True)
class PipelineStateChanged(Event):
    """idle (waiting for the wake word) · listening · thinking · speaking."""

    type: ClassVar[str] = "voice.state"
    stream: str = ""
    state: str = "idle"
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ReplyToken(Event):
    type: ClassVar[str] = "voice.reply.token"
    stream: str = ""
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class ReplyDone(Event):
    """The whole answer text; ``interrupted`` when barge-in cut it (``by``: wake, stop, alert, client)."""

    type: ClassVar[str] = "voice.reply"
    stream: str = ""
    text: str = ""
    answer_source: str = ""  # intent | llm | none | say | alert
    intent: str = ""
    interrupted: bool = False
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class SpeechStarted(Event):
    type: ClassVar[str] = "voice.tts.started"
    stream: str = ""
    rate: int = 22050
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class SpeechStopped(Event):
    type: ClassVar[str] = "voice.tts.stopped"
    stream: str = ""
    played_s: float = 0.0
    reason: str = "done"  # done | barge_in


@dataclass(frozen=True, kw_only=True)
class TurnTimings(Event):
    type: ClassVar[str] = "voice.timings"
    stream: str = ""
    turn: int = 0
    end: str = ""  # how the utterance ended: silence, max_length, end_of_stream, text
    audio_ms: float = 0.0
    end_of_speech_ms: int = 0  # the silence setting in force
    spans_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class VoiceError(Event):
    """Something in the voice pipeline failed; ``message`` says what and what to do."""

    type: ClassVar[str] = "voice.error"
    stream: str = ""
    code: str = ""
    message: str = ""
