"""The voice pipeline's state machine: wake → VAD → ASR → dialogue → TTS, with barge-in.

States: ``idle`` (only the wake word runs: the always-on cost is two tiny
models), ``listening`` (VAD and ASR run on the utterance), ``thinking`` and
``speaking`` (the reply task runs; input keeps flowing, so the wake word — or
"stop" — interrupts it). The input loop never waits for a reply: audio is
consumed as it arrives and replies run as a task beside it.

Bounds: an utterance is cut at ``max_utterance_s`` (ten minutes of speech
without a pause cost the same memory as fifteen seconds); listening gives up
after ``listen_timeout_s`` without speech; every queue between the parts is
bounded.

One pipeline serves one audio stream (the car's microphone, one WebSocket,
one Wyoming connection); the engines (``VoiceEngines``) are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from agent.bus import Bus, Event
from agent.errors import EdgeAgentError
from agent.voice import metrics
from agent.voice.asr import AsrEngine, AsrStream, PartialTranscript, Transcript
from agent.voice.audio import BYTES_PER_MS
from agent.voice.dialogue import Dialogue, TurnResult
from agent.voice.events import PipelineStateChanged, ReplyDone, TurnTimings, VoiceError
from agent.voice.frontend import AudioCleaner, LevelMeter
from agent.voice.postprocess import PostProcessor, normalize
from agent.voice.turn import Stamps, one_piece, speak
from agent.voice.vad import Segmenter, VoiceActivity, VoiceStarted, VoiceStopped
from agent.voice.wake import Detection, WakeDetector

if TYPE_CHECKING:
    from agent.voice.sinks import AudioSink
    from agent.voice.tts import Tts
    from models.manager import ModelManager

log = logging.getLogger("edge_agent.voice")

STOP_WORDS = frozenset({"stop", "cancel", "be quiet", "quiet", "shut up", "enough", "never mind", "stop it"})
#: a stop command is short: longer speech during a reply is not one
STOP_MAX_MS = 2500


@dataclass(frozen=True)
class PipelineConfig:
    wake_words: tuple[str, ...] = ("okay_nabu",)
    wake_threshold: float = 0.0
    vad_threshold: float = 0.5
    end_of_speech_ms: int = 500
    max_utterance_s: float = 15.0
    listen_timeout_s: float = 5.0
    phrases: tuple[str, ...] = ()
    preroll_ms: int = 300
    barge_in: bool = True
    stop_words: bool = True
    duck_db: float = -15.0
    tts_speed: float | None = None
    #: where a turn starts: wait for the wake word, or listen at once (push-to-talk)
    start: Literal["wake", "listen"] = "wake"
    #: where a turn ends: the transcript, the reply text, or the spoken reply
    end: Literal["transcript", "reply", "speech"] = "speech"
    #: stop after one turn (Wyoming run-pipeline, push-to-talk requests)
    single_turn: bool = False
    #: publish voice.level (RMS, peak, waveform) every this many ms of audio; 0: off
    level_interval_ms: int = 100
    #: WebRTC noise suppression level 0 (off) to 4, and automatic gain target 0 (off) to 31 dBFS
    noise_suppression: int = 0
    auto_gain_dbfs: int = 0


@dataclass
class VoiceEngines:
    """Everything heavy, shared by all pipelines of a service."""

    manager: ModelManager
    asr: AsrEngine
    tts: Tts
    dialogue: Dialogue
    postprocess: PostProcessor
    vad_model: str = "silero-vad"


Listener = Callable[[Event], Awaitable[None] | None]


class VoicePipeline:
    def __init__(
        self,
        engines: VoiceEngines,
        config: PipelineConfig = PipelineConfig(),
        *,
        sink: AudioSink | None = None,
        stream: str = "mic",
        bus: Bus | None = None,
    ) -> None:
        self.engines = engines
        self.config = config
        self.sink = sink
        self.stream = stream
        self.bus = bus
        self.state = "idle"
        self.audio_ms = 0.0
        self.turns = 0
        self.listeners: list[Listener] = []
        self._meter = LevelMeter(stream, config.level_interval_ms) if config.level_interval_ms else None
        self._cleaner = (
            AudioCleaner(config.noise_suppression, config.auto_gain_dbfs)
            if config.noise_suppression or config.auto_gain_dbfs
            else None
        )
        self.finished = asyncio.Event()
        self.last_timings: dict[str, float] = {}
        self.max_buffered_bytes = 0
        self._wake: WakeDetector | None = None
        self._vad: VoiceActivity | None = None
        self._stop_vad: VoiceActivity | None = None
        self._asr: AsrStream | None = None
        self._utt = bytearray()
        self._preroll: deque[bytes] = deque()
        self._preroll_bytes = 0
        self._stop_audio = bytearray()
        self._listen_since_ms = 0.0
        self._speech = False
        self._stamps = Stamps()
        self._reply: asyncio.Task[None] | None = None
        self._side: set[asyncio.Task[None]] = set()
        self._protected = False  # a major/critical alert is not barged in

    # -- events ------------------------------------------------------------------------------

    async def emit(self, event: Event) -> None:
        if self.bus is not None:
            self.bus.publish_nowait(event)
        for listener in list(self.listeners):
            result = listener(event)
            if result is not None:
                await result

    async def _set_state(self, state: str, reason: str = "") -> None:
        if state != self.state:
            self.state = state
            await self.emit(
                PipelineStateChanged(source="voice", stream=self.stream, state=state, reason=reason)
            )

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> VoicePipeline:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        cfg = self.config
        manager = self.engines.manager
        if cfg.wake_words and (cfg.start == "wake" or cfg.barge_in):
            self._wake = WakeDetector(
                manager, cfg.wake_words, threshold=cfg.wake_threshold, stream=self.stream
            )
            await self._wake.open()
        self._vad = VoiceActivity(
            manager,
            Segmenter(cfg.vad_threshold, cfg.end_of_speech_ms, max_utterance_ms=cfg.max_utterance_s * 1000),
            self.stream,
            self.engines.vad_model,
        )
        self._stop_vad = VoiceActivity(
            manager,
            Segmenter(cfg.vad_threshold, 300, max_utterance_ms=STOP_MAX_MS + 500),
            self.stream,
            self.engines.vad_model,
        )
        if cfg.start == "listen":
            await self.listen("push_to_talk")

    async def close(self) -> None:
        await self.interrupt("closed")
        for task in list(self._side):
            task.cancel()
        for task in list(self._side):
            with contextlib.suppress(BaseException):
                await task
        if self._asr is not None:
            await self._asr.cancel()
            self._asr = None
        if self._wake is not None:
            await self._wake.close()
            self._wake = None

    async def run(self, audio: AsyncIterator[bytes]) -> None:
        """Consume pipeline-format audio until it ends (or one turn is done with ``single_turn``)."""
        async for pcm in audio:
            await self.feed(pcm)
            if self.finished.is_set():
                break
        await self.end_of_input()

    async def end_of_input(self) -> None:
        """The audio ended: finish the utterance in progress and let the reply complete."""
        await self.finish_utterance("end_of_stream")
        reply = self._reply
        if reply is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reply

    async def finish_utterance(self, reason: str = "client") -> None:
        """End the utterance being listened to now (the client stopped sending, or let go of the button)."""
        if self.state != "listening":
            return
        if self._speech or len(self._utt) > 300 * BYTES_PER_MS:
            self._stamps.mark("speech_end")
            await self._end_utterance(reason)
        else:
            await self._stop_listening(reason)

    # -- input -------------------------------------------------------------------------------

    async def feed(self, pcm: bytes) -> None:
        """16 kHz mono s16 audio, any chunk size."""
        if self._cleaner is not None:
            pcm = self._cleaner.process(pcm)
        if not pcm:
            return
        if self._meter is not None:
            for level in self._meter.feed(pcm):
                await self.emit(level)
        self.audio_ms += len(pcm) / BYTES_PER_MS
        self._remember(pcm)
        if self._wake is not None and (self.state == "idle" or self.config.barge_in):
            for detection in await self._wake.process(pcm):
                await self._on_wake(detection)
        if self.state == "listening":
            await self._listen(pcm)
        elif self.state in ("thinking", "speaking") and self.config.stop_words and not self._protected:
            await self._watch_for_stop(pcm)

    def _remember(self, pcm: bytes) -> None:
        self._preroll.append(pcm)
        self._preroll_bytes += len(pcm)
        limit = self.config.preroll_ms * BYTES_PER_MS
        while self._preroll and self._preroll_bytes - len(self._preroll[0]) >= limit:
            self._preroll_bytes -= len(self._preroll.popleft())

    async def _on_wake(self, detection: Detection) -> None:
        metrics.WAKE_DETECTIONS.labels(detection.name).inc()
        await self.emit(detection)
        if self.state == "listening":
            return
        if self.state in ("thinking", "speaking"):
            if self._protected:
                return
            await self.interrupt("wake")
        await self.listen("wake", after_wake=True)

    async def listen(self, reason: str = "push_to_talk", *, after_wake: bool = False) -> None:
        """Start an utterance now (the wake word fired, or push-to-talk)."""
        if self.state in ("thinking", "speaking"):
            await self.interrupt("listen")
        self._stamps = Stamps()
        self._stamps.mark("wake")
        self._utt = bytearray()
        if not after_wake:  # push-to-talk: keep the audio just before the button
            for block in self._preroll:
                self._utt += block
        assert self._vad is not None
        self._vad.reset(self.audio_ms)
        self._speech = False
        self._listen_since_ms = self.audio_ms
        try:
            self._asr = await self.engines.asr.open(self.config.phrases)
        except EdgeAgentError as exc:
            await self._fail(exc)
            return
        if self._asr.missing_words:
            log.warning(
                "phrases with words the recognizer does not know: %s", ", ".join(self._asr.missing_words)
            )
        if self._utt:
            await self._feed_asr(bytes(self._utt))
        await self._set_state("listening", reason)

    async def _feed_asr(self, pcm: bytes) -> None:
        if self._asr is None:
            return
        partial = await self._asr.feed(pcm)
        if partial:
            await self.emit(PartialTranscript(source="asr", stream=self.stream, text=partial))

    async def _listen(self, pcm: bytes) -> None:
        assert self._vad is not None
        self._utt += pcm
        self.max_buffered_bytes = max(self.max_buffered_bytes, len(self._utt))
        await self._feed_asr(pcm)
        for event in await self._vad.process(pcm):
            await self.emit(event)
            if isinstance(event, VoiceStarted):
                self._speech = True
                self._stamps.mark("speech_start")
            elif isinstance(event, VoiceStopped):
                self._stamps.mark("speech_end")
                await self._end_utterance(event.reason)
                return
        if not self._speech and self.audio_ms - self._listen_since_ms > self.config.listen_timeout_s * 1000:
            await self._stop_listening("timeout")
        elif len(self._utt) >= self.config.max_utterance_s * 1000 * BYTES_PER_MS:
            await self.emit(
                VoiceStopped(
                    source="vad", stream=self.stream, timestamp_ms=self.audio_ms, reason="max_length"
                )
            )
            self._stamps.mark("speech_end")
            await self._end_utterance("max_length")

    async def _stop_listening(self, reason: str) -> None:
        if self._asr is not None:
            await self._asr.cancel()
            self._asr = None
        self._utt = bytearray()
        metrics.UTTERANCES.labels(reason).inc()
        await self._set_state("idle", reason)
        if self.config.single_turn:
            self.finished.set()

    async def _end_utterance(self, reason: str) -> None:
        stream, self._asr = self._asr, None
        audio_ms = len(self._utt) / BYTES_PER_MS
        self._utt = bytearray()  # the ASR stream holds what it needs
        self._stamps.mark("speech_end")
        metrics.UTTERANCES.labels(reason).inc()
        await self._set_state("thinking", reason)
        if stream is None:
            await self._set_state("idle", "no recognizer")
            return
        self.turns += 1
        stamps = self._stamps
        self._reply = asyncio.create_task(
            self._respond(stream, stamps, reason, audio_ms, self.turns), name=f"voice-{self.stream}-reply"
        )

    async def _watch_for_stop(self, pcm: bytes) -> None:
        """During a reply: a short utterance that says "stop" ends it (ducking playback meanwhile)."""
        vad = self._stop_vad
        assert vad is not None
        if vad.in_speech or self._stop_audio:
            self._stop_audio += pcm
        for event in await vad.process(pcm):
            if isinstance(event, VoiceStarted):
                self._stop_audio = bytearray(b"".join(self._preroll))
                if self.sink is not None:
                    self.sink.duck(self.config.duck_db)
            elif isinstance(event, VoiceStopped):
                audio, self._stop_audio = bytes(self._stop_audio), bytearray()
                if self.sink is not None:
                    self.sink.unduck()
                if event.speech_ms <= STOP_MAX_MS:
                    task = asyncio.create_task(self._check_stop(audio), name=f"voice-{self.stream}-stop")
                    self._side.add(task)
                    task.add_done_callback(self._side.discard)

    async def _check_stop(self, audio: bytes) -> None:
        try:
            text = await self.engines.asr.transcribe(audio)
        except EdgeAgentError as exc:
            log.warning("stop-word check failed: %s", exc)
            return
        said = normalize(text)
        if said in STOP_WORDS or (said.startswith("stop") and len(said.split()) <= 2):
            await self.interrupt("stop")
            await self._set_state("idle", "stop")

    # -- replies -----------------------------------------------------------------------------

    async def interrupt(self, by: str) -> bool:
        """Cancel the reply in progress (barge-in); True when there was one."""
        reply, self._reply = self._reply, None
        if reply is None or reply.done():
            return False
        reply.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reply
        metrics.BARGE_INS.labels(by).inc()
        self._protected = False
        self._stop_audio = bytearray()
        if self._stop_vad is not None:
            self._stop_vad.reset(self.audio_ms)
        await self.emit(ReplyDone(source="voice", stream=self.stream, interrupted=True, by=by))
        return True

    async def _respond(self, stream: AsrStream, stamps: Stamps, end: str, audio_ms: float, turn: int) -> None:
        cancelled = False
        try:
            t0 = time.perf_counter()
            raw = await stream.finish()
            stamps.mark("transcript")
            text = self.engines.postprocess(raw)
            await self.emit(
                Transcript(
                    source="asr", stream=self.stream, text=text, raw_text=raw, language=self.engines.asr.language,
                    audio_ms=round(audio_ms, 1), asr_ms=round((time.perf_counter() - t0) * 1000, 1),
                )
            )  # fmt: skip
            if self.config.end != "transcript":
                await self._answer(text, stamps)
        except asyncio.CancelledError:
            cancelled = True  # interrupt() owns the state from here
            raise
        except EdgeAgentError as exc:
            await self._fail(exc)
        except Exception as exc:  # a bug must not kill the input loop: report and carry on
            log.exception("voice reply failed")
            await self._fail(EdgeAgentError(f"the reply failed: {exc}", code="voice_internal"))
        finally:
            stamps.mark("done")
            stamps.observe()
            self.last_timings = stamps.spans()
            await self.emit(
                TurnTimings(
                    source="voice", stream=self.stream, turn=turn, end=end, audio_ms=round(audio_ms, 1),
                    end_of_speech_ms=self.config.end_of_speech_ms, spans_ms=self.last_timings,
                )
            )  # fmt: skip
            if not cancelled:
                if self._reply is asyncio.current_task():
                    self._reply = None
                if self.state in ("thinking", "speaking"):
                    await self._set_state("idle", "done")
                if self.config.single_turn:
                    self.finished.set()

    async def _answer(self, text: str, stamps: Stamps) -> None:
        if not text.strip():
            metrics.TURNS.labels("none").inc()
            await self.emit(ReplyDone(source="voice", stream=self.stream, text="", answer_source="none"))
            return
        result = TurnResult()
        pieces = self.engines.dialogue.respond(text, self.stream, result)
        if self.config.end == "reply" or (self.sink is None and self.config.end != "speech"):
            parts = []
            async for piece in pieces:
                stamps.mark("first_token")
                parts.append(piece)
            stamps.mark("reply_text")
            answer = "".join(parts)
        else:
            answer, _ = await speak(
                pieces, self.engines.tts, self.sink, self.emit, self.stream, stamps,
                speed=self.config.tts_speed, on_first_audio=self._speaking,
            )  # fmt: skip
        if result.intent is not None:
            await self.emit(result.intent.event(self.stream))
        if result.stop:
            await self.interrupt("stop")
        metrics.TURNS.labels(result.source).inc()
        await self.emit(
            ReplyDone(
                source="voice", stream=self.stream, text=answer, answer_source=result.source,
                intent=result.intent.name if result.intent else "",
            )
        )  # fmt: skip

    async def _speaking(self) -> None:
        await self._set_state("speaking")

    async def _fail(self, exc: EdgeAgentError) -> None:
        log.error("voice pipeline %s: %s", self.stream, exc)
        await self.emit(VoiceError(source="voice", stream=self.stream, code=exc.code, message=str(exc)))

    # -- direct requests ---------------------------------------------------------------------

    async def say(self, text: str, *, speed: float | None = None, kind: str = "say") -> asyncio.Task[None]:
        """Speak ``text`` now (pre-empting a reply); returns the reply task."""
        return await self._start_reply(one_piece(text), kind, speed=speed)

    async def ask(self, text: str) -> asyncio.Task[None]:
        """A typed turn: the dialogue answers ``text`` as if it had been said."""
        await self.interrupt("client")
        stamps = Stamps()
        stamps.mark("speech_end")
        stamps.mark("transcript")
        self.turns += 1

        async def run() -> None:
            await self._set_state("thinking", "text")
            try:
                await self._answer(text, stamps)
            except EdgeAgentError as exc:
                await self._fail(exc)
            finally:
                if self._reply is asyncio.current_task():
                    self._reply = None
                if self.state in ("thinking", "speaking"):
                    await self._set_state("idle", "done")

        self._reply = asyncio.create_task(run(), name=f"voice-{self.stream}-ask")
        return self._reply

    async def announce(self, severity: str, message: str) -> asyncio.Task[None]:
        """Broadcast an alert: chime, then "<Severity>: <message>", slower; major/critical cannot be interrupted."""
        from agent.voice.tts import SpeechAudio, alert_text, chime

        text = alert_text(severity, message)
        rate = getattr(self.engines.tts, "rate", 22050)
        prelude = SpeechAudio(rate, chime(severity.lower(), rate), "")
        task = await self._start_reply(one_piece(text), "alert", speed=0.85, prelude=prelude)
        self._protected = severity.lower() in ("major", "critical")
        return task

    async def _start_reply(
        self, pieces: AsyncIterator[str], kind: str, *, speed: float | None, prelude=None
    ) -> asyncio.Task[None]:
        await self.interrupt(kind)
        stamps = Stamps()

        async def run() -> None:
            try:
                await self._set_state("speaking", kind)
                text, _ = await speak(
                    pieces,
                    self.engines.tts,
                    self.sink,
                    self.emit,
                    self.stream,
                    stamps,
                    speed=speed,
                    prelude=prelude,
                )
                await self.emit(ReplyDone(source="voice", stream=self.stream, text=text, answer_source=kind))
            except EdgeAgentError as exc:
                await self._fail(exc)
            finally:
                self._protected = False
                if self._reply is asyncio.current_task():
                    self._reply = None
                if self.state == "speaking":
                    await self._set_state("idle", "done")

        self._reply = asyncio.create_task(run(), name=f"voice-{self.stream}-{kind}")
        return self._reply

    def with_config(self, **changes: object) -> PipelineConfig:
        return replace(self.config, **changes)  # type: ignore[arg-type]
