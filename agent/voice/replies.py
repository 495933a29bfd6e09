"""The pipeline's replies: one task at a time, started by a turn, a typed question, ``say`` or an alert.

Every reply runs through ``_run``, which owns what all of them share: an
engine error is reported as a ``voice.error`` event, a bug is logged and
reported without killing the input loop, and one end-of-reply cleanup puts
the pipeline back to idle. A reply cancelled by barge-in skips that cleanup:
``interrupt()`` owns the state from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agent.errors import EdgeAgentError
from agent.voice import metrics
from agent.voice.asr import AsrStream, Transcript
from agent.voice.dialogue import TurnResult
from agent.voice.events import PipelineState, ReplyDone, TurnTimings
from agent.voice.turn import Stamps, one_piece, speak

if TYPE_CHECKING:
    from agent.voice.foresight import PreparedSpeech
    from agent.voice.pipeline import VoicePipeline
    from agent.voice.tts import Tts

log = logging.getLogger("edge_agent.voice")

_BUSY = (PipelineState.THINKING, PipelineState.SPEAKING)


class Replies:
    """The reply task of one pipeline."""

    def __init__(self, pipeline: VoicePipeline) -> None:
        self.p = pipeline
        self.task: asyncio.Task[None] | None = None
        self.protected = False  # a major/critical alert is not barged in

    # -- starting and ending -----------------------------------------------------------------

    def _start(
        self, body: Callable[[], Awaitable[None]], name: str, *, turn: bool = False, after: Any = None
    ) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self._run(body, turn=turn, after=after), name=name)
        return self.task

    async def _run(
        self,
        body: Callable[[], Awaitable[None]],
        *,
        turn: bool,
        after: Callable[[], Awaitable[None]] | None,
    ) -> None:
        cancelled = False
        try:
            await body()
        except asyncio.CancelledError:
            cancelled = True  # interrupt() owns the state from here
            raise
        except EdgeAgentError as exc:
            await self.p.fail(exc)
        except Exception as exc:  # a bug must not kill the input loop: report and carry on
            log.exception("voice reply failed")
            await self.p.fail(EdgeAgentError(f"the reply failed: {exc}", code="voice_internal"))
        finally:
            if after is not None:
                await after()
            if not cancelled:
                await self._ended(turn)

    async def _ended(self, turn: bool) -> None:
        """The one end-of-reply cleanup, for every kind of reply."""
        p = self.p
        if self.task is asyncio.current_task():
            self.task = None
            self.protected = False
        if p.state in _BUSY:
            await p.set_state(PipelineState.IDLE, "done")
        if turn and p.config.single_turn:
            p.finished.set()

    async def interrupt(self, by: str) -> bool:
        """Cancel the reply in progress (barge-in); True when there was one."""
        reply, self.task = self.task, None
        if reply is None or reply.done():
            return False
        reply.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reply
        metrics.BARGE_INS.labels(by).inc()
        self.protected = False
        p = self.p
        if p.stop_words is not None:
            p.stop_words.reset(p.audio_ms)
        await p.emit(ReplyDone(source="voice", stream=p.stream, interrupted=True, by=by))
        return True

    async def wait(self) -> None:
        reply = self.task
        if reply is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reply

    # -- a spoken turn -----------------------------------------------------------------------

    def respond(
        self,
        stream: AsrStream,
        stamps: Stamps,
        end: str,
        audio_ms: float,
        turn: int,
        prepared: PreparedSpeech | None = None,
    ) -> None:
        """The utterance ended: transcribe it, then answer (unless the turn ends at the transcript).

        ``prepared``: the answer's first audio, made in the trailing silence (foresight.py).
        """
        p = self.p

        async def body() -> None:
            try:
                t0 = time.perf_counter()
                raw = await stream.finish()
                stamps.mark("transcript")
                for name, at in stream.marks.items():
                    stamps.mark(name, at)
                text = p.engines.postprocess(raw)
                await p.emit(
                    Transcript(
                        source="asr", stream=p.stream, text=text, raw_text=raw,
                        language=p.engines.asr.language, audio_ms=round(audio_ms, 1),
                        asr_ms=round((time.perf_counter() - t0) * 1000, 1),
                    )
                )  # fmt: skip
                if p.config.end != "transcript":
                    await self.answer(text, stamps, prepared)
            finally:
                if prepared is not None:
                    prepared.close()

        async def timings() -> None:
            stamps.mark("done")
            stamps.observe()
            p.last_timings = stamps.spans()
            p.last_marks = stamps.relative()
            await p.emit(
                TurnTimings(
                    source="voice", stream=p.stream, turn=turn, end=end, audio_ms=round(audio_ms, 1),
                    end_of_speech_ms=p.config.end_of_speech_ms, spans_ms=p.last_timings,
                )
            )  # fmt: skip

        self._start(body, f"voice-{p.stream}-reply", turn=True, after=timings)

    async def answer(self, text: str, stamps: Stamps, tts: Tts | None = None) -> None:
        p = self.p
        if not text.strip():
            metrics.TURNS.labels("none").inc()
            await p.emit(ReplyDone(source="voice", stream=p.stream, text="", answer_source="none"))
            return
        result = TurnResult()
        pieces = p.engines.dialogue.respond(text, p.stream, result)
        if p.config.end == "reply" or (p.sink is None and p.config.end != "speech"):
            parts = []
            async for piece in pieces:
                stamps.mark("first_token")
                parts.append(piece)
            stamps.mark("reply_text")
            answer = "".join(parts)
        else:
            answer, _ = await speak(
                pieces, tts or p.engines.tts, p.sink, p.emit, p.stream, stamps,
                speed=p.config.tts_speed, on_first_audio=self._speaking,
            )  # fmt: skip
        if result.intent is not None:
            await p.emit(result.intent.event(p.stream))
        if result.stop:
            await self.interrupt("stop")
        metrics.TURNS.labels(result.source).inc()
        await p.emit(
            ReplyDone(
                source="voice", stream=p.stream, text=answer, answer_source=result.source,
                intent=result.intent.name if result.intent else "",
            )
        )  # fmt: skip

    async def _speaking(self) -> None:
        await self.p.set_state(PipelineState.SPEAKING)

    # -- direct requests ---------------------------------------------------------------------

    async def ask(self, text: str) -> asyncio.Task[None]:
        """A typed turn: the dialogue answers ``text`` as if it had been said."""
        await self.interrupt("client")
        stamps = Stamps()
        stamps.mark("speech_end")
        stamps.mark("transcript")
        self.p.turns += 1

        async def body() -> None:
            await self.p.set_state(PipelineState.THINKING, "text")
            await self.answer(text, stamps)

        return self._start(body, f"voice-{self.p.stream}-ask")

    async def say(
        self, pieces: AsyncIterator[str], kind: str, *, speed: float | None, prelude: Any = None
    ) -> asyncio.Task[None]:
        """Speak ``pieces`` now, pre-empting a reply in progress."""
        await self.interrupt(kind)
        stamps = Stamps()
        p = self.p

        async def body() -> None:
            await p.set_state(PipelineState.SPEAKING, kind)
            text, _ = await speak(
                pieces, p.engines.tts, p.sink, p.emit, p.stream, stamps, speed=speed, prelude=prelude
            )
            await p.emit(ReplyDone(source="voice", stream=p.stream, text=text, answer_source=kind))

        return self._start(body, f"voice-{p.stream}-{kind}")

    async def announce(self, severity: str, message: str) -> asyncio.Task[None]:
        """An alert: chime, then "<Severity>: <message>", slower; major/critical cannot be interrupted."""
        from agent.voice.tts import SpeechAudio, alert_text, chime

        text = alert_text(severity, message)
        rate = getattr(self.p.engines.tts, "rate", 22050)
        prelude = SpeechAudio(rate, chime(severity.lower(), rate), "")
        task = await self.say(one_piece(text), "alert", speed=0.85, prelude=prelude)
        self.protected = severity.lower() in ("major", "critical")
        return task
