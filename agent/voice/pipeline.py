"""The voice pipeline's input state machine: wake → VAD → ASR, then a reply, with barge-in.

States (``PipelineState``): ``idle`` (only the wake word runs: the always-on
cost is two tiny models), ``listening`` (VAD and ASR run on the utterance),
``thinking`` and ``speaking`` (the reply task runs, ``replies.py``; input
keeps flowing, so the wake word — or "stop", ``stopword.py`` — interrupts it).
The input loop never waits for a reply: audio is consumed as it arrives and
replies run as a task beside it.

Bounds: an utterance is cut at ``max_utterance_s`` (ten minutes of speech
without a pause cost the same memory as fifteen seconds); listening gives up
after ``listen_timeout_s`` without speech; every queue between the parts is
bounded.

One pipeline serves one audio stream (the car's microphone, one WebSocket,
one Wyoming connection); the engines (``VoiceEngines``) are shared.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from agent.bus import Bus, Event
from agent.errors import EdgeAgentError
from agent.voice import metrics
from agent.voice.asr import AsrEngine, AsrStream, PartialTranscript
from agent.voice.audio import BYTES_PER_MS
from agent.voice.dialogue import Dialogue
from agent.voice.events import PipelineState, PipelineStateChanged, VoiceError
from agent.voice.foresight import Foresight
from agent.voice.frontend import AudioCleaner, LevelMeter
from agent.voice.postprocess import PostProcessor
from agent.voice.replies import Replies
from agent.voice.stopword import STOP_MAX_MS, STOP_WORDS, StopWordWatcher
from agent.voice.turn import Stamps, one_piece
from agent.voice.vad import Segmenter, VoiceActivity, VoiceStarted, VoiceStopped
from agent.voice.wake import Detection, WakeDetector

if TYPE_CHECKING:
    from agent.voice.sinks import AudioSink
    from agent.voice.tts import Tts
    from models.manager import ModelManager

log = logging.getLogger("edge_agent.voice")

__all__ = ["STOP_MAX_MS", "STOP_WORDS", "PipelineConfig", "PipelineState", "VoiceEngines", "VoicePipeline"]


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
    #: decode in the trailing silence and prepare a rules answer's first audio there (foresight.py);
    #: off, everything starts at the end-of-speech decision
    early_decode: bool = True


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
#: a pause this long inside an utterance starts decoding it (end_of_speech_ms decides it is over)
SPECULATE_AFTER_MS = 240


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
        self.state = PipelineState.IDLE
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
        #: the last turn's marks in ms from its end-of-speech decision (Stamps.relative)
        self.last_marks: dict[str, float] = {}
        self.max_buffered_bytes = 0
        self.replies = Replies(self)
        self.stop_words: StopWordWatcher | None = None
        self._wake: WakeDetector | None = None
        self._vad: VoiceActivity | None = None
        self._asr: AsrStream | None = None
        self._utt = bytearray()
        self._preroll: deque[bytes] = deque()
        self._preroll_bytes = 0
        self._listen_since_ms = 0.0
        self._speech = False
        #: the VAD's count of voiced frames when the early decode began (``_speculate``), or None
        self._speculating: int | None = None
        self._foresight = Foresight(engines, config.tts_speed)
        self._stamps = Stamps()

    # -- events ------------------------------------------------------------------------------

    async def emit(self, event: Event) -> None:
        if self.bus is not None:
            self.bus.publish_nowait(event)
        for listener in list(self.listeners):
            result = listener(event)
            if result is not None:
                await result

    async def set_state(self, state: PipelineState, reason: str = "") -> None:
        if state != self.state:
            self.state = state
            await self.emit(
                PipelineStateChanged(source="voice", stream=self.stream, state=state.value, reason=reason)
            )

    async def fail(self, exc: EdgeAgentError) -> None:
        log.error("voice pipeline %s: %s", self.stream, exc)
        await self.emit(VoiceError(source="voice", stream=self.stream, code=exc.code, message=str(exc)))

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
        self.stop_words = StopWordWatcher(
            manager,
            self.engines.asr,
            stream=self.stream,
            vad_model=self.engines.vad_model,
            vad_threshold=cfg.vad_threshold,
            duck_db=cfg.duck_db,
            on_stop=self._stop_said,
        )
        if cfg.start == "listen":
            await self.listen("push_to_talk")

    async def close(self) -> None:
        self._foresight.drop()
        await self.interrupt("closed")
        if self.stop_words is not None:
            await self.stop_words.close()
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
        await self.replies.wait()

    async def finish_utterance(self, reason: str = "client") -> None:
        """End the utterance being listened to now (the client stopped sending, or let go of the button)."""
        if self.state != PipelineState.LISTENING:
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
        state = self.state
        if self._wake is not None and (state == PipelineState.IDLE or self.config.barge_in):
            for detection in await self._wake.process(pcm):
                await self._on_wake(detection)
            state = self.state
        if state == PipelineState.LISTENING:
            await self._listen(pcm)
        elif state in _BUSY and self.config.stop_words and not self.replies.protected:
            assert self.stop_words is not None
            await self.stop_words.watch(pcm, self._preroll, self.sink)

    def _remember(self, pcm: bytes) -> None:
        self._preroll.append(pcm)
        self._preroll_bytes += len(pcm)
        limit = self.config.preroll_ms * BYTES_PER_MS
        while self._preroll and self._preroll_bytes - len(self._preroll[0]) >= limit:
            self._preroll_bytes -= len(self._preroll.popleft())

    async def _on_wake(self, detection: Detection) -> None:
        metrics.WAKE_DETECTIONS.labels(detection.name).inc()
        await self.emit(detection)
        if self.state == PipelineState.LISTENING:
            return
        if self.state in _BUSY:
            if self.replies.protected:
                return
            await self.interrupt("wake")
        await self.listen("wake", after_wake=True)

    async def listen(self, reason: str = "push_to_talk", *, after_wake: bool = False) -> None:
        """Start an utterance now (the wake word fired, or push-to-talk)."""
        if self.state in _BUSY:
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
        self._speculating = None
        self._foresight.drop()
        self._listen_since_ms = self.audio_ms
        try:
            self._asr = await self.engines.asr.open(self.config.phrases)
        except EdgeAgentError as exc:
            await self.fail(exc)
            return
        if self._asr.missing_words:
            log.warning(
                "phrases with words the recognizer does not know: %s", ", ".join(self._asr.missing_words)
            )
        if self._utt:
            await self._feed_asr(bytes(self._utt))
        await self.set_state(PipelineState.LISTENING, reason)

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
        self._speculate()
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

    def _speculate(self) -> None:
        """Decode during the trailing silence: by the end-of-speech decision the text is (nearly) there.

        Started once the speaker has paused ``SPECULATE_AFTER_MS``; dropped if
        they go on: if the VAD hears voice again (a frame at or above its
        threshold). What is fed after the start is silence, which Whisper
        does not turn into words, so the early text is the utterance's text.
        A breath or a click in the silence (above the VAD's lower, hysteresis
        level, below its threshold) postpones the end-of-speech decision but
        keeps the early text: nothing new was said.
        """
        if self._vad is None or self._asr is None or not self.config.early_decode:
            return
        segmenter = self._vad.segmenter
        if self._speculating is not None and segmenter.voiced_frames != self._speculating:
            self._asr.drop_speculation()  # the speaker went on (perhaps pausing again since)
            self._foresight.drop()
            self._speculating = None
        if segmenter.pause_ms >= SPECULATE_AFTER_MS and self._speculating is None:
            self._asr.speculate()
            self._speculating = segmenter.voiced_frames
            if self.config.end == "speech":
                self._foresight.begin(self._asr)

    async def _stop_listening(self, reason: str) -> None:
        self._foresight.drop()
        if self._asr is not None:
            await self._asr.cancel()
            self._asr = None
        self._utt = bytearray()
        metrics.UTTERANCES.labels(reason).inc()
        await self.set_state(PipelineState.IDLE, reason)
        if self.config.single_turn:
            self.finished.set()

    async def _end_utterance(self, reason: str) -> None:
        stream, self._asr = self._asr, None
        audio_ms = len(self._utt) / BYTES_PER_MS
        self._utt = bytearray()  # the ASR stream holds what it needs
        self._stamps.mark("speech_end")
        metrics.UTTERANCES.labels(reason).inc()
        await self.set_state(PipelineState.THINKING, reason)
        if stream is None:
            await self.set_state(PipelineState.IDLE, "no recognizer")
            return
        self.turns += 1
        self.replies.respond(stream, self._stamps, reason, audio_ms, self.turns, self._foresight.take())

    async def _stop_said(self) -> None:
        await self.interrupt("stop")
        await self.set_state(PipelineState.IDLE, "stop")

    # -- replies (replies.py) ----------------------------------------------------------------

    async def interrupt(self, by: str) -> bool:
        """Cancel the reply in progress (barge-in); True when there was one."""
        return await self.replies.interrupt(by)

    async def stop(self, by: str = "client") -> bool:
        """A client's "stop": cancel the reply in progress and go back to idle (as the stop word does)."""
        stopped = await self.interrupt(by)
        if stopped or self.state in _BUSY:
            await self.set_state(PipelineState.IDLE, by)
        return stopped

    async def say(self, text: str, *, speed: float | None = None, kind: str = "say") -> asyncio.Task[None]:
        """Speak ``text`` now (pre-empting a reply); returns the reply task."""
        return await self.replies.say(one_piece(text), kind, speed=speed)

    async def ask(self, text: str) -> asyncio.Task[None]:
        """A typed turn: the dialogue answers ``text`` as if it had been said."""
        return await self.replies.ask(text)

    async def announce(self, severity: str, message: str) -> asyncio.Task[None]:
        """Broadcast an alert: chime, then "<Severity>: <message>", slower; major/critical cannot be interrupted."""
        return await self.replies.announce(severity, message)

    def with_config(self, **changes: Any) -> PipelineConfig:
        return replace(self.config, **changes)


_BUSY = (PipelineState.THINKING, PipelineState.SPEAKING)
