"""The Wyoming protocol: wake, ASR, TTS and the whole pipeline, for Home Assistant and satellites.

One connection is one ``ConnectionHandler`` (the ``wyoming`` package's
event framing: a JSON header line, audio as a binary payload). It answers

- ``describe`` with ``info`` (the wake words, the recognizer, the voice, the dialogue);
- ``transcribe`` + audio → ``transcript`` (audio alone, without ``transcribe``, too);
- ``detect`` + audio → ``detection`` for every hit, ``not-detected`` at the end when none;
- ``synthesize`` (or the streaming ``synthesize-start/-chunk/-stop``) → audio;
- ``run-pipeline`` (start: wake, asr, handle or tts; end: asr, handle or tts) + audio →
  the pipeline's events in Wyoming form, the reply as audio, ``handled`` with its text;
- ``ping`` → ``pong``.

Incoming audio may be any rate/width/channels Wyoming allows; it is resampled
at the edge. A client that disconnects mid-stream ends only its own work.
The server binds its own socket (and never installs signal handlers: the
daemon owns SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent.errors import EdgeAgentError
from agent.voice.audio import AudioFormat
from agent.voice.resample import Resampler

if TYPE_CHECKING:
    from agent.voice.pipeline import VoicePipeline
    from agent.voice.service import VoiceService

log = logging.getLogger("edge_agent.voice.wyoming")
_ATTRIBUTION = ("edge-agent", "https://github.com/")


class WyomingServer:
    def __init__(self, service: VoiceService, uri: str) -> None:
        self.service = service
        self.uri = uri
        self.port: int | None = None
        self.ready = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        parts = urlsplit(self.uri)
        if parts.scheme == "tcp":
            server = await asyncio.start_server(
                self._connected, parts.hostname or "127.0.0.1", parts.port or 10700
            )
            self.port = server.sockets[0].getsockname()[1]
        elif parts.scheme == "unix":
            server = await asyncio.start_unix_server(self._connected, parts.path)
        else:
            raise EdgeAgentError(
                f"voice.wyoming_uri {self.uri!r}: use tcp://host:port or unix:///path", code="config"
            )
        log.info(
            "Wyoming server on %s", self.uri if self.port is None else f"tcp://{parts.hostname}:{self.port}"
        )
        self.ready.set()
        try:
            async with server:
                await server.serve_forever()
        finally:
            for task in list(self._connections):
                task.cancel()
            for task in list(self._connections):
                with contextlib.suppress(BaseException):
                    await task

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        handler = ConnectionHandler(self.service, reader, writer)
        try:
            await handler.run()
        except asyncio.CancelledError:
            # the server is stopping; this task is asyncio's own connection task, whose
            # cancellation would only be logged as an error by the streams machinery
            return
        finally:
            self._connections.discard(task)


class ConnectionHandler:
    """One client: mode follows the last request (transcribe, detect, run-pipeline)."""

    def __init__(
        self, service: VoiceService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.service = service
        self.reader = reader
        self.writer = writer
        self.mode = "asr"
        self.language: str | None = None
        self.wake_names: list[str] | None = None
        self._resampler: Resampler | None = None
        self._asr: Any = None
        self._wake: Any = None
        self._detected = False
        self._pipeline: VoicePipeline | None = None
        self._pipeline_cm: Any = None
        self._pipeline_task: asyncio.Task[None] | None = None
        self._pipeline_audio: asyncio.Queue[bytes | None] | None = None
        self._stream_text: list[str] = []
        self._write_lock = asyncio.Lock()

    async def write(self, eventable: Any) -> None:
        from wyoming.event import async_write_event

        event = eventable.event() if hasattr(eventable, "event") else eventable
        async with self._write_lock:
            await async_write_event(event, self.writer)

    async def run(self) -> None:
        from wyoming.event import async_read_event

        try:
            while True:
                event = await async_read_event(self.reader)
                if event is None:
                    break
                try:
                    await self.handle(event)
                except EdgeAgentError as exc:
                    from wyoming.error import Error

                    await self.write(Error(text=str(exc), code=exc.code))
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("Wyoming client went away mid-stream")
        finally:
            await self.cleanup()
            with contextlib.suppress(Exception):
                self.writer.close()

    async def cleanup(self) -> None:
        if self._asr is not None:
            with contextlib.suppress(Exception):
                await self._asr.cancel()
            self._asr = None
        if self._wake is not None:
            await self._wake.close()
            self._wake = None
        await self._end_pipeline()

    async def handle(self, event: Any) -> None:
        from wyoming.asr import Transcribe, Transcript
        from wyoming.audio import AudioChunk, AudioStart, AudioStop
        from wyoming.info import Describe
        from wyoming.ping import Ping, Pong
        from wyoming.pipeline import RunPipeline
        from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop
        from wyoming.wake import Detect

        if Describe.is_type(event.type):
            await self.write(self.info())
        elif Ping.is_type(event.type):
            await self.write(Pong(text=Ping.from_event(event).text))
        elif Transcribe.is_type(event.type):
            await self.cleanup()
            req = Transcribe.from_event(event)
            self.mode, self.language = "asr", req.language
        elif Detect.is_type(event.type):
            await self.cleanup()
            self.mode = "wake"
            self.wake_names = Detect.from_event(event).names
        elif RunPipeline.is_type(event.type):
            await self.cleanup()
            await self.start_pipeline(RunPipeline.from_event(event))
        elif AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            self._resampler = Resampler(AudioFormat(start.rate, start.width, start.channels))
            await self.audio_start()
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            if self._resampler is None:  # a chunk without a start: take its own format
                self._resampler = Resampler(AudioFormat(chunk.rate, chunk.width, chunk.channels))
                await self.audio_start()
            await self.audio(self._resampler.process(chunk.audio))
        elif AudioStop.is_type(event.type):
            tail = self._resampler.flush() if self._resampler is not None else b""
            self._resampler = None
            if tail:
                await self.audio(tail)
            await self.audio_stop()
        elif Synthesize.is_type(event.type):
            if self._stream_text is not None and self.mode == "tts-stream":
                return  # the streaming form already carries this text
            await self.synthesize(Synthesize.from_event(event).text)
        elif SynthesizeStart.is_type(event.type):
            self.mode, self._stream_text = "tts-stream", []
        elif SynthesizeChunk.is_type(event.type):
            self._stream_text.append(SynthesizeChunk.from_event(event).text)
        elif SynthesizeStop.is_type(event.type):
            from wyoming.tts import SynthesizeStopped

            text, self._stream_text = "".join(self._stream_text), []
            await self.synthesize(text)
            self.mode = "asr"
            await self.write(SynthesizeStopped())
        elif Transcript.is_type(event.type) and self._pipeline is not None:
            await self._pipeline.ask(Transcript.from_event(event).text)

    # -- audio by mode -----------------------------------------------------------------------

    async def audio_start(self) -> None:
        if self.mode == "asr":
            engines = self.service.require_part("asr")
            self._asr = await engines.asr.open(self.service.settings.phrases)
        elif self.mode == "wake":
            from agent.voice.wake import WakeDetector

            engines = self.service.require()
            names = self.wake_names or list(self.service.settings.wake_words)
            self._wake = WakeDetector(
                engines.manager, names, threshold=self.service.settings.wake_threshold, stream="wyoming"
            )
            self._detected = False
            await self._wake.open()

    async def audio(self, pcm: bytes) -> None:
        if not pcm:
            return
        if self.mode == "asr" and self._asr is not None:
            await self._asr.feed(pcm)
        elif self.mode == "wake" and self._wake is not None:
            from wyoming.wake import Detection

            for hit in await self._wake.process(pcm):
                self._detected = True
                await self.write(
                    Detection(
                        name=hit.name.removeprefix("wake-").replace("-", "_"), timestamp=int(hit.timestamp_ms)
                    )
                )
        elif self.mode == "pipeline" and self._pipeline_audio is not None:
            await self._pipeline_audio.put(pcm)

    async def audio_stop(self) -> None:
        if self.mode == "asr" and self._asr is not None:
            from wyoming.asr import Transcript

            stream, self._asr = self._asr, None
            engines = self.service.require_part("asr")
            text = engines.postprocess(await stream.finish())
            await self.write(Transcript(text=text, language=engines.asr.language))
        elif self.mode == "wake" and self._wake is not None:
            from wyoming.wake import NotDetected

            if not self._detected:
                await self.write(NotDetected())
            await self._wake.close()
            self._wake = None
        elif self.mode == "pipeline" and self._pipeline_audio is not None:
            await self._pipeline_audio.put(None)

    async def synthesize(self, text: str) -> None:
        from wyoming.audio import AudioChunk, AudioStart, AudioStop

        engines = (
            self.service.require_part("tts")
            if "tts" in self.service.problems and not self.service.engines
            else self.service.require()
        )
        started = False
        rate = 22050
        async for audio in engines.tts.synthesize(text):
            rate = audio.rate
            if not started:
                await self.write(AudioStart(rate=rate, width=2, channels=1))
                started = True
            step = rate // 10 * 2  # 100 ms per chunk
            for i in range(0, len(audio.pcm), step):
                await self.write(AudioChunk(rate=rate, width=2, channels=1, audio=audio.pcm[i : i + step]))
        if not started:
            await self.write(AudioStart(rate=rate, width=2, channels=1))
        await self.write(AudioStop())

    # -- run-pipeline ------------------------------------------------------------------------

    async def start_pipeline(self, req: Any) -> None:
        from wyoming.pipeline import PipelineStage

        from agent.voice.sinks import CallbackSink

        start = {PipelineStage.WAKE: "wake"}.get(req.start_stage, "listen")
        end = {
            PipelineStage.ASR: "transcript",
            PipelineStage.INTENT: "reply",
            PipelineStage.HANDLE: "reply",
        }.get(req.end_stage, "speech")
        overrides: dict[str, Any] = {"start": start, "end": end, "single_turn": not req.restart_on_end}
        names = req.wake_word_names or ([req.wake_word_name] if req.wake_word_name else None)
        if names:
            overrides["wake_words"] = tuple(names)
        cfg = self.service.pipeline_config(**overrides)
        if req.start_stage in (PipelineStage.INTENT, PipelineStage.HANDLE, PipelineStage.TTS):
            cfg = self.service.pipeline_config(**{**overrides, "start": "wake", "wake_words": ()})
        sink = CallbackSink(self._send_audio, on_start=self._audio_started, on_stop=self._audio_stopped)
        self._pipeline_cm = self.service.open_pipeline("wyoming", sink, cfg)
        self._pipeline = await self._pipeline_cm.__aenter__()
        self._pipeline.listeners.append(self._forward)
        self.mode = "pipeline"
        self._pipeline_audio = asyncio.Queue(maxsize=64)
        self._pipeline_task = asyncio.create_task(self._run_pipeline(), name="wyoming-pipeline")
        if req.start_stage == PipelineStage.TTS and req.announce_text:
            await self._pipeline.say(req.announce_text)

    async def _run_pipeline(self) -> None:
        assert self._pipeline is not None and self._pipeline_audio is not None
        queue = self._pipeline_audio

        async def audio():
            while (pcm := await queue.get()) is not None:
                yield pcm

        await self._pipeline.run(audio())
        # with a text/tts start there is no audio: wait for the reply
        await self._pipeline.end_of_input()

    async def _end_pipeline(self) -> None:
        task, self._pipeline_task = self._pipeline_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        cm, self._pipeline_cm = self._pipeline_cm, None
        self._pipeline = None
        self._pipeline_audio = None
        if cm is not None:
            await cm.__aexit__(None, None, None)

    async def _audio_started(self, rate: int) -> None:
        from wyoming.audio import AudioStart

        await self.write(AudioStart(rate=rate, width=2, channels=1))

    async def _send_audio(self, pcm: bytes) -> None:
        from wyoming.audio import AudioChunk

        await self.write(
            AudioChunk(
                rate=self._pipeline.sink.rate if self._pipeline and self._pipeline.sink else 22050,
                width=2,
                channels=1,
                audio=pcm,
            )
        )

    async def _audio_stopped(self, aborted: bool) -> None:
        from wyoming.audio import AudioStop

        await self.write(AudioStop())

    async def _forward(self, event: Any) -> None:
        """Pipeline events → their Wyoming form."""
        from wyoming.asr import Transcript
        from wyoming.error import Error
        from wyoming.handle import Handled, NotHandled
        from wyoming.vad import VoiceStarted, VoiceStopped
        from wyoming.wake import Detection

        kind = event.type
        if kind == "voice.wake.detected":
            await self.write(
                Detection(
                    name=event.name.removeprefix("wake-").replace("-", "_"), timestamp=int(event.timestamp_ms)
                )
            )
        elif kind == "voice.vad.started":
            await self.write(VoiceStarted(timestamp=int(event.timestamp_ms)))
        elif kind == "voice.vad.stopped":
            await self.write(VoiceStopped(timestamp=int(event.timestamp_ms)))
        elif kind == "voice.asr.transcript":
            await self.write(Transcript(text=event.text, language=event.language or None))
        elif kind == "voice.reply" and not event.interrupted:
            if event.text:
                await self.write(
                    Handled(text=event.text, context={"source": event.answer_source, "intent": event.intent})
                )
            else:
                await self.write(NotHandled(text=""))
        elif kind == "voice.error":
            await self.write(Error(text=event.message, code=event.code))

    # -- describe ----------------------------------------------------------------------------

    def info(self) -> Any:
        from wyoming.info import (
            AsrModel,
            AsrProgram,
            Attribution,
            HandleModel,
            HandleProgram,
            Info,
            TtsProgram,
            TtsVoice,
            WakeModel,
            WakeProgram,
        )

        from agent.voice.catalog import locate, wake_model_name

        attribution = Attribution(*_ATTRIBUTION)
        svc = self.service
        engines = svc.engines
        lang = svc.settings.language
        wake_models = []
        for word in svc.settings.wake_words:
            found = locate(wake_model_name(word))
            phrase = found.model.details.get("phrase") if found else word
            wake_models.append(
                WakeModel(
                    name=word, attribution=attribution, installed=("wake:" + wake_model_name(word)) not in svc.problems,
                    description=str(phrase), version=found.version if found else None, languages=["en"], phrase=str(phrase),
                )
            )  # fmt: skip
        asr_name = engines.asr.model if engines else ""
        voice = engines.tts.voice if engines else ""
        return Info(
            asr=[
                AsrProgram(
                    name="edge-agent-asr", attribution=attribution, installed=engines is not None and "asr" not in svc.problems,
                    description=f"{engines.asr.name if engines else ''} speech recognition", version=None,
                    models=[AsrModel(name=asr_name, attribution=attribution, installed=True, description=asr_name, version=None, languages=[engines.asr.language if engines else lang])],
                    supports_transcript_streaming=False,
                )
            ],
            tts=[
                TtsProgram(
                    name="edge-agent-tts", attribution=attribution, installed=engines is not None,
                    description="text to speech", version=None,
                    voices=[TtsVoice(name=voice, attribution=attribution, installed=True, description=voice, version=None, languages=[lang])],
                )
            ],
            wake=[WakeProgram(name="edge-agent-wake", attribution=attribution, installed=bool(wake_models), description="microWakeWord", version=None, models=wake_models)],
            handle=[
                HandleProgram(
                    name="edge-agent-dialogue", attribution=attribution, installed=engines is not None,
                    description="vehicle intents, then the local LLM", version=None,
                    models=[HandleModel(name="vehicle", attribution=attribution, installed=True, description="vehicle intents", version=None, languages=[lang])],
                )
            ],
        )  # fmt: skip
