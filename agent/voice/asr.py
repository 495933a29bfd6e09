"""Speech recognition behind one interface: faster-whisper and vosk, partials and a phrase list.

``AsrEngine.open()`` starts an utterance; ``AsrStream.feed(pcm)`` takes audio
as it arrives and may return a partial transcript; ``finish()`` returns the
final text. Vosk decodes as audio arrives (partials for free, finals at
once). Whisper decodes the whole utterance at the end; with
``partial_interval_s`` it also re-decodes the audio so far in the background
(skipped while one is running), which costs CPU a 2-core box may not have.

Both go through the model manager at INTERACTIVE priority, so a wake word
call (REALTIME) is never queued behind a long decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from agent.voice import metrics
from agent.voice.audio import BYTES_PER_MS, pcm16_to_float
from agent.voice.events import VoiceEvent

if TYPE_CHECKING:
    from models.manager import ModelManager


@dataclass(frozen=True, kw_only=True)
class Transcript(VoiceEvent):
    """The final text of an utterance (post-processed); ``raw_text`` is what the recognizer said."""

    type: ClassVar[str] = "voice.asr.transcript"
    text: str = ""
    raw_text: str = ""
    language: str = ""
    audio_ms: float = 0.0
    asr_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class PartialTranscript(VoiceEvent):
    type: ClassVar[str] = "voice.asr.partial"
    text: str = ""


class AsrStream(ABC):
    """One utterance. Not reusable.

    ``marks``: perf_counter times of the decode whose text ``finish`` returns
    (``decode_start``, ``decode_end``), where the engine knows them; the
    reply adds them to the turn's latency stamps.
    """

    missing_words: list[str]
    marks: dict[str, float]

    @abstractmethod
    async def feed(self, pcm: bytes) -> str | None:
        """Take 16 kHz mono s16 audio; return a new partial text, or None."""

    @abstractmethod
    async def finish(self) -> str:
        """The final text of everything fed."""

    async def cancel(self) -> None:
        """Drop the utterance without decoding it."""
        return None

    def speculate(self) -> None:
        """The speaker paused: start decoding what was fed so far, so ``finish`` may already have it.

        The pipeline calls ``drop_speculation`` if speech resumes; whatever is
        fed meanwhile is silence, which does not change the text. Engines
        that decode as they go (Vosk) need nothing here.
        """
        return None

    def drop_speculation(self) -> None:
        """Speech resumed: the early decode is of an unfinished utterance."""
        return None

    def early_decode(self) -> asyncio.Future[str] | None:
        """The decode begun by ``speculate`` (its text is what ``finish`` returns unless dropped), or None."""
        return None


@dataclass(eq=False)
class AsrEngine(ABC):
    """A recognizer on a model of the manager; each engine gives ``model`` and ``language`` its defaults."""

    name: ClassVar[str]
    manager: ModelManager
    model: str
    language: str

    @abstractmethod
    async def open(self, phrases: tuple[str, ...] | list[str] = ()) -> AsrStream: ...

    async def transcribe(self, pcm: bytes, phrases: tuple[str, ...] | list[str] = ()) -> str:
        stream = await self.open(phrases)
        await stream.feed(pcm)
        return await stream.finish()

    async def load(self) -> None:
        """Load the model now (so the first utterance does not pay for it)."""
        await self.manager.load(self.model)


# -- whisper ---------------------------------------------------------------------------------------


@dataclass
class _WhisperStream(AsrStream):
    engine: WhisperAsr
    phrases: tuple[str, ...]
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    missing_words: list[str] = field(default_factory=list)
    _partial_task: asyncio.Task[str] | None = None
    _last_partial_at: int = 0
    _last_partial: str = ""
    _early: asyncio.Task[str] | None = None
    _early_stale: bool = False
    marks: dict[str, float] = field(default_factory=dict)

    async def feed(self, pcm: bytes) -> str | None:
        self.chunks.append(pcm)
        self.size += len(pcm)
        interval = self.engine.partial_interval_s
        if interval <= 0:
            return None
        result = None
        task = self._partial_task
        if task is not None and task.done():
            self._partial_task = None
            with contextlib.suppress(Exception):
                text = task.result()
                if text and text != self._last_partial:
                    self._last_partial = result = text
        if self._partial_task is None and self.size - self._last_partial_at >= interval * 1000 * BYTES_PER_MS:
            self._last_partial_at = self.size
            audio = b"".join(self.chunks)
            self._partial_task = asyncio.create_task(self.engine._decode(audio, self.phrases, partial=True))
        return result

    async def cancel(self) -> None:
        if self._early is not None:
            self._early.cancel()
            self._early = None
        if self._partial_task is not None:
            self._partial_task.cancel()
            with contextlib.suppress(BaseException):
                await self._partial_task
            self._partial_task = None

    def speculate(self) -> None:
        # a cancelled decode that Whisper has begun still holds its session to the end: keep a
        # current one, and replace a stale one (if it has not begun, cancelling frees its place)
        if self._early is not None and not self._early.done():
            if not self._early_stale:
                return
            self._early.cancel()
        audio = b"".join(self.chunks)
        self._early = asyncio.create_task(self._timed(audio))
        self._early.add_done_callback(lambda t: t.cancelled() or t.exception())  # a stale one's error
        self._early_stale = False

    def drop_speculation(self) -> None:
        self._early_stale = True

    def early_decode(self) -> asyncio.Future[str] | None:
        return None if self._early is None or self._early_stale else self._early

    async def _timed(self, audio: bytes) -> str:
        """Decode ``audio``, noting when; the marks are the latest decode's (the one ``finish`` uses)."""
        start = time.perf_counter()
        text = await self.engine._decode(audio, self.phrases)
        self.marks = {"decode_start": start, "decode_end": time.perf_counter()}
        return text

    async def finish(self) -> str:
        early, self._early = self._early, None
        if self._partial_task is not None:
            self._partial_task.cancel()
            with contextlib.suppress(BaseException):
                await self._partial_task
            self._partial_task = None
        if early is not None and not self._early_stale:  # decoded in the trailing silence: silence came since
            return await early
        if early is not None:
            early.cancel()
        return await self._timed(b"".join(self.chunks))


@dataclass(eq=False)
class WhisperAsr(AsrEngine):
    name: ClassVar[str] = "whisper"
    model: str = "whisper-tiny-en"
    language: str = "en"
    partial_interval_s: float = 0.0

    async def open(self, phrases: tuple[str, ...] | list[str] = ()) -> AsrStream:
        return _WhisperStream(self, tuple(phrases))

    async def transcribe_words(
        self, pcm: bytes, phrases: tuple[str, ...] | list[str] = ()
    ) -> tuple[str, list[dict[str, Any]]]:
        """The text and its words with start/end seconds (relative to ``pcm``) and probability."""
        from models.scheduling import Priority

        if len(pcm) < 100 * BYTES_PER_MS:
            return "", []
        feed: dict[str, Any] = {
            "audio": pcm16_to_float(pcm),
            "language": self.language.split("-")[0],
            "word_timestamps": True,
        }
        if phrases:
            feed["hotwords"] = ", ".join(phrases)
        out = await self.manager.infer(self.model, feed, Priority.INTERACTIVE)
        return str(out["text"]), list(out.get("words") or [])

    async def _decode(self, pcm: bytes, phrases: tuple[str, ...], partial: bool = False) -> str:
        from models.scheduling import Priority

        if len(pcm) < 100 * BYTES_PER_MS:  # under 0.1 s: nothing Whisper could read
            return ""
        feed: dict[str, Any] = {"audio": pcm16_to_float(pcm), "language": self.language.split("-")[0]}
        if phrases:
            feed["hotwords"] = ", ".join(phrases)
        t0 = time.perf_counter()
        out = await self.manager.infer(self.model, feed, Priority.BATCH if partial else Priority.INTERACTIVE)
        if not partial:
            metrics.STAGE_RTF.labels("asr").observe((time.perf_counter() - t0) / max(out["duration"], 1e-3))
        return str(out["text"])


# -- vosk ------------------------------------------------------------------------------------------


class _VoskStream(AsrStream):
    def __init__(self, engine: VoskAsr, state: Any, missing: list[str]) -> None:
        self.engine = engine
        self.state = state
        self.missing_words = missing
        self.marks: dict[str, float] = {}
        self._last = ""
        self.audio_bytes = 0
        self.busy_s = 0.0

    async def feed(self, pcm: bytes) -> str | None:
        from models.scheduling import Priority

        self.audio_bytes += len(pcm)
        t0 = time.perf_counter()
        out = await self.engine.manager.infer(
            self.engine.model, {"op": "feed", "stream": self.state, "audio": pcm}, Priority.INTERACTIVE
        )
        self.busy_s += time.perf_counter() - t0
        partial = str(out.get("partial", ""))
        if partial and partial != self._last:
            self._last = partial
            return partial
        return None

    async def finish(self) -> str:
        from models.scheduling import Priority

        t0 = time.perf_counter()
        out = await self.engine.manager.infer(
            self.engine.model, {"op": "finish", "stream": self.state}, Priority.INTERACTIVE
        )
        self.busy_s += time.perf_counter() - t0
        if self.audio_bytes:
            metrics.STAGE_RTF.labels("asr").observe(self.busy_s / (self.audio_bytes / (1000 * BYTES_PER_MS)))
        return str(out.get("text", ""))


@dataclass(eq=False)
class VoskAsr(AsrEngine):
    name: ClassVar[str] = "vosk"
    model: str = "vosk-ko"
    language: str = "ko"

    async def open(self, phrases: tuple[str, ...] | list[str] = ()) -> AsrStream:
        from models.scheduling import Priority

        out = await self.manager.infer(
            self.model, {"op": "open", "phrases": list(phrases)}, Priority.INTERACTIVE
        )
        return _VoskStream(self, out["stream"], list(out.get("missing_words", [])))

    async def transcribe_words(
        self, pcm: bytes, phrases: tuple[str, ...] | list[str] = ()
    ) -> tuple[str, list[dict[str, Any]]]:
        """The text and its words with start/end seconds (relative to ``pcm``) and confidence."""
        from models.scheduling import Priority

        stream = await self.open(phrases)
        assert isinstance(stream, _VoskStream)
        await stream.feed(pcm)
        out = await self.manager.infer(
            self.model, {"op": "finish", "stream": stream.state}, Priority.INTERACTIVE
        )
        return str(out.get("text", "")), list(out.get("words") or [])


def make_asr(manager: ModelManager, engine: str, model: str = "", language: str = "en") -> AsrEngine:
    if engine == "vosk":
        return VoskAsr(manager, model or "vosk-ko", language if language != "en" else "ko")
    return WhisperAsr(manager, model or "whisper-tiny-en", language)
