"""One reply: transcript → dialogue → sentences → TTS → sink, with latency stamps.

Three concurrent parts per reply, joined by small queues: the dialogue
streams text pieces, cut into sentences; a synthesiser turns each sentence
into audio while the previous one plays; the player writes to the sink.
Cancelling the reply task (barge-in) cancels all three: the LLM stops at its
next token, synthesis stops, and the sink fades out within one block.

``Stamps`` records perf_counter times for wake, speech start/end, the
decode whose text was used (``decode_start``/``decode_end``: begun in the
trailing silence, before ``speech_end``, when the early decode held),
transcript, first token, the first chunk's synthesis (``tts_start``/
``tts_ready``: before ``speech_end`` when it was prepared early,
``foresight.py``) and first audio; ``spans()`` turns them into the latency
spans the metrics and the bench report, ``relative()`` into times from the
end-of-speech decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.bus import Event
from agent.voice import metrics
from agent.voice.events import ReplyToken, SpeechStarted, SpeechStopped
from agent.voice.tts import SentenceSplitter, SpeechAudio

if TYPE_CHECKING:
    from agent.voice.sinks import AudioSink
    from agent.voice.tts import Tts

Emit = Callable[[Event], Awaitable[None]]

SPANS = (
    ("wake_to_speech_end", "wake", "speech_end"),
    ("speech_end_to_transcript", "speech_end", "transcript"),
    ("transcript_to_first_token", "transcript", "first_token"),
    ("first_token_to_first_audio", "first_token", "first_audio"),
    ("speech_end_to_first_audio", "speech_end", "first_audio"),
    ("speech_end_to_reply_text", "speech_end", "reply_text"),
    ("decode", "decode_start", "decode_end"),
    ("tts_first_chunk", "tts_start", "tts_ready"),
    ("tts_ready_to_first_audio", "tts_ready", "first_audio"),
)


@dataclass
class Stamps:
    times: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, at: float | None = None) -> None:
        self.times.setdefault(name, time.perf_counter() if at is None else at)

    def spans(self) -> dict[str, float]:
        out = {}
        for name, a, b in SPANS:
            if a in self.times and b in self.times:
                out[name] = round((self.times[b] - self.times[a]) * 1000, 1)
        return out

    def relative(self, origin: str = "speech_end") -> dict[str, float]:
        """Every mark in ms from ``origin`` (negative: before it); empty without ``origin``."""
        if origin not in self.times:
            return {}
        t0 = self.times[origin]
        return {name: round((t - t0) * 1000, 1) for name, t in self.times.items()}

    def observe(self) -> None:
        for name, ms in self.spans().items():
            metrics.LATENCY.labels(name).observe(ms / 1000)


async def speak(
    pieces: AsyncIterator[str],
    tts: Tts,
    sink: AudioSink | None,
    emit: Emit,
    stream: str,
    stamps: Stamps,
    *,
    speed: float | None = None,
    prelude: SpeechAudio | None = None,
    on_first_audio: Callable[[], Awaitable[None]] | None = None,
) -> tuple[str, float]:
    """Stream text pieces to speech; returns (the whole text, seconds played)."""
    sentences: asyncio.Queue[str | None] = asyncio.Queue(maxsize=16)
    audio: asyncio.Queue[SpeechAudio | None] = asyncio.Queue(maxsize=2)
    text_parts: list[str] = []

    async def read_text() -> None:
        splitter = SentenceSplitter()
        try:
            async for piece in pieces:
                stamps.mark("first_token")
                text_parts.append(piece)
                await emit(ReplyToken(source="voice", stream=stream, text=piece))
                for s in splitter.feed(piece):
                    await sentences.put(s)
            for s in splitter.flush():
                await sentences.put(s)
            stamps.mark("reply_text")
        except BaseException:
            _end(sentences)  # never wait on a full queue while being cancelled
            raise
        await sentences.put(None)

    async def synthesize() -> None:
        try:
            if prelude is not None:
                await audio.put(prelude)
            while (s := await sentences.get()) is not None:
                chunk = await tts.synthesize_sentence(s, speed=speed)
                if chunk.made_at:
                    stamps.mark("tts_start", chunk.started_at)
                    stamps.mark("tts_ready", chunk.made_at)
                await audio.put(chunk)
        except BaseException:
            _end(audio)
            raise
        await audio.put(None)

    async def play() -> float:
        started = False
        played = 0.0
        while (chunk := await audio.get()) is not None:
            if sink is None:
                stamps.mark("first_audio")
                continue
            if not started:
                await sink.start(chunk.rate)
                started = True
                await emit(SpeechStarted(source="voice", stream=stream, rate=chunk.rate, text=chunk.text))
            ok = await sink.write(chunk.pcm)
            if sink.first_write_at is not None:
                if "first_audio" not in stamps.times and on_first_audio is not None:
                    stamps.mark("first_audio", sink.first_write_at)
                    await on_first_audio()
                stamps.mark("first_audio", sink.first_write_at)
            if not ok:
                break
        if started and sink is not None:
            await sink.finish()
            played = sink.played_s
            await emit(SpeechStopped(source="voice", stream=stream, played_s=round(played, 3), reason="done"))
        return played

    tasks = [
        asyncio.create_task(read_text(), name=f"voice-{stream}-text"),
        asyncio.create_task(synthesize(), name=f"voice-{stream}-tts"),
    ]
    try:
        played = await play()
        for t in tasks:
            await t
    except BaseException:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        if sink is not None and sink.active:
            played = sink.played_s
            await sink.abort()
            await emit(
                SpeechStopped(source="voice", stream=stream, played_s=round(played, 3), reason="barge_in")
            )
        raise
    return "".join(text_parts).strip(), played


def _end(queue: asyncio.Queue) -> None:
    """Mark the end of a queue without waiting: drop the oldest item when it is full."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(None)


async def one_piece(text: str) -> AsyncIterator[str]:
    if text:
        yield text
