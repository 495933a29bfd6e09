"""Voice activity detection: Silero VAD through the model manager, and an end-of-speech segmenter.

The model is stateless in the session (its recurrent state is an input and an
output), so one pinned session serves every stream; each ``VadStream`` keeps
its own state tensor and 64-sample context. Frames are 512 samples (32 ms).

``Segmenter`` is the decision logic alone (no model): speech starts after
``min_speech_ms`` above the threshold and ends after ``end_of_speech_ms``
below ``threshold - 0.15`` (hysteresis, so a soft syllable does not end the
utterance), or when the utterance reaches ``max_utterance_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from agent.bus import Event
from agent.voice.audio import BYTES_PER_MS
from agent.voice.events import VoiceEvent

if TYPE_CHECKING:
    from models.manager import ModelManager

MODEL = "silero-vad"
FRAME_SAMPLES = 512
FRAME_MS = 32
CONTEXT_SAMPLES = 64
_FRAME_BYTES = FRAME_SAMPLES * 2


@dataclass(frozen=True, kw_only=True)
class VoiceStarted(VoiceEvent):
    type: ClassVar[str] = "voice.vad.started"
    timestamp_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class VoiceStopped(VoiceEvent):
    """Speech ended: ``reason`` is silence, max_length or end_of_stream."""

    type: ClassVar[str] = "voice.vad.stopped"
    timestamp_ms: float = 0.0
    speech_ms: float = 0.0
    reason: str = "silence"


class Segmenter:
    """Frame probabilities → ("start" | "stop", reason) decisions."""

    def __init__(
        self,
        threshold: float = 0.5,
        end_of_speech_ms: int = 500,
        min_speech_ms: int = 96,
        max_utterance_ms: float = 15000,
    ) -> None:
        self.threshold = threshold
        self.low = max(0.01, threshold - 0.15)
        self.end_frames = max(1, round(end_of_speech_ms / FRAME_MS))
        self.start_frames = max(1, round(min_speech_ms / FRAME_MS))
        self.max_frames = max(1, round(max_utterance_ms / FRAME_MS))
        self.reset()

    def reset(self) -> None:
        self.in_speech = False
        self._above = 0
        self._below = 0
        self.speech_frames = 0
        #: frames of this utterance at or above the threshold: voice, not a breath or a click that only
        #: interrupts a pause (between ``low`` and ``threshold``)
        self.voiced_frames = 0

    @property
    def pause_ms(self) -> float:
        """How long the speaker has been quiet inside an utterance (0 while speaking or outside one)."""
        return self._below * FRAME_MS if self.in_speech else 0.0

    def update(self, prob: float) -> str | None:
        """One frame; returns "start", "stop:silence", "stop:max_length" or None."""
        if not self.in_speech:
            self._above = self._above + 1 if prob >= self.threshold else 0
            if self._above >= self.start_frames:
                self.in_speech = True
                self.speech_frames = self.voiced_frames = self._above
                self._below = 0
                return "start"
            return None
        self.speech_frames += 1
        if prob >= self.threshold:
            self.voiced_frames += 1
        self._below = self._below + 1 if prob < self.low else 0
        if self._below >= self.end_frames:
            self.reset()
            return "stop:silence"
        if self.speech_frames >= self.max_frames:
            self.reset()
            return "stop:max_length"
        return None


class VadStream:
    """One audio stream's Silero state; ``probabilities(pcm)`` returns one value per complete frame."""

    def __init__(self, manager: ModelManager, model: str = MODEL) -> None:
        import numpy as np

        self.manager = manager
        self.model = model
        self._np = np
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, np.float32)
        self._pending = b""
        self.frames = 0
        self.busy_s = 0.0

    def reset(self) -> None:
        self._state[:] = 0
        self._context[:] = 0
        self._pending = b""

    async def probabilities(self, pcm: bytes) -> list[float]:
        import time

        from models.scheduling import Priority

        np = self._np
        data = self._pending + pcm
        n = len(data) // _FRAME_BYTES
        self._pending = data[n * _FRAME_BYTES :]
        out: list[float] = []
        t0 = time.perf_counter()
        for i in range(n):
            frame = np.frombuffer(data, dtype="<i2", count=FRAME_SAMPLES, offset=i * _FRAME_BYTES)
            x = frame.astype(np.float32) / 32768.0
            feed = {"input": np.concatenate([self._context, x])[None, :], "state": self._state}
            result = await self.manager.infer(self.model, feed, Priority.REALTIME)
            self._state = result["stateN"]
            self._context = x[-CONTEXT_SAMPLES:]
            out.append(float(result["output"].reshape(-1)[0]))
        self.frames += n
        self.busy_s += time.perf_counter() - t0
        return out


class VoiceActivity:
    """VadStream + Segmenter for one stream: ``process(pcm)`` → events with audio timestamps."""

    def __init__(
        self, manager: ModelManager, segmenter: Segmenter, stream: str = "", model: str = MODEL
    ) -> None:
        self.vad = VadStream(manager, model)
        self.segmenter = segmenter
        self.stream = stream
        self.audio_ms = 0.0  # audio time of the next frame's end
        self._speech_start_ms = 0.0

    def reset(self, audio_ms: float) -> None:
        """Start afresh at ``audio_ms`` (when listening begins)."""
        self.vad.reset()
        self.segmenter.reset()
        self.audio_ms = audio_ms

    async def process(self, pcm: bytes) -> list[Event]:
        events: list[Event] = []
        for prob in await self.vad.probabilities(pcm):
            self.audio_ms += FRAME_MS
            decision = self.segmenter.update(prob)
            if decision == "start":
                self._speech_start_ms = self.audio_ms - self.segmenter.speech_frames * FRAME_MS
                events.append(
                    VoiceStarted(source="vad", stream=self.stream, timestamp_ms=self._speech_start_ms)
                )
            elif decision is not None:
                events.append(
                    VoiceStopped(
                        source="vad",
                        stream=self.stream,
                        timestamp_ms=self.audio_ms,
                        speech_ms=self.audio_ms - self._speech_start_ms,
                        reason=decision.split(":", 1)[1],
                    )
                )
        return events

    @property
    def in_speech(self) -> bool:
        return self.segmenter.in_speech

    def info(self) -> dict[str, Any]:
        return {"frames": self.vad.frames, "busy_s": self.vad.busy_s, "pending_bytes": len(self.vad._pending)}


def silence(ms: int) -> bytes:
    return bytes(int(ms * BYTES_PER_MS))
