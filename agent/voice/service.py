"""The voice assistant as a supervised service.

Start-up order: check which voice models are installed, load and pin the
wake words and the VAD (always on, never evicted) and the recognizer and the
voice (reloading them would make the next command wait a second), check the
LLM (loaded in the background, its system prompt evaluated once, and
evictable and idle-unloaded: it is the biggest model and the one a busy box
can give back). A model that fails to
load does not fail the service: the reason and the fix are logged, published
(``voice.error``), and shown by ``GET /v1/voice/status``; whatever still works
keeps working (no LLM: intents only; no piper voice: espeak-ng; no
microphone: API and Wyoming clients only). The rest of the daemon never
notices.

With ``voice.source`` set the service runs the car's own pipeline (microphone
or file → ``voice.sink``), reopening the device with a back-off when it
fails. ``open_pipeline()`` gives API and Wyoming connections their own
pipeline over the same engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from agent.errors import EdgeAgentError, UnavailableError
from agent.supervisor import Service
from agent.voice.catalog import locate, missing_hint

if TYPE_CHECKING:
    from agent.config import VoiceSettings
    from agent.context import AgentContext
    from agent.voice.pipeline import PipelineConfig, VoiceEngines, VoicePipeline
    from agent.voice.sinks import AudioSink
    from models.manager import ModelManager

log = logging.getLogger("edge_agent.voice")


def voice_enabled(settings: VoiceSettings) -> tuple[bool, str]:
    """Whether to run the service, and why (for the log)."""
    if settings.enabled == "off":
        return False, "voice.enabled is off"
    if settings.enabled == "on":
        return True, "voice.enabled is on"
    from agent.voice.factory import model_names

    names = model_names(settings)
    missing = [n for n in (names.vad, names.asr, *names.wake[:1]) if locate(n) is None]
    if missing:
        return False, "voice models are not installed (" + "; ".join(missing_hint(n) for n in missing) + ")"
    return True, "voice models are installed"


def build_voice_service(ctx: AgentContext) -> VoiceService | None:
    """The service when voice is enabled (for ``daemon.build_services``); None otherwise."""
    on, why = voice_enabled(ctx.settings.voice)
    if not on:
        log.info("voice assistant off: %s", why)
        return None
    return VoiceService(ctx)


class VoiceService(Service):
    name = "voice"
    signals_ready = True

    def __init__(
        self,
        ctx: AgentContext | None,
        settings: VoiceSettings | None = None,
        *,
        manager: ModelManager | None = None,
        sink: AudioSink | None = None,
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.settings = settings if settings is not None else ctx.settings.voice  # type: ignore[union-attr]  # ctx is None only with settings given
        self.manager = manager
        self._own_manager = False
        self.engines: VoiceEngines | None = None
        self.problems: dict[str, str] = {}  # model or part -> what is wrong and the fix
        self.loaded: dict[str, float] = {}  # model -> load seconds
        self.pipeline: VoicePipeline | None = None  # the car's own (voice.source)
        self.pipelines: dict[str, VoicePipeline] = {}
        self._sink = sink
        self._wyoming: Any = None
        self._prime: asyncio.Task[None] | None = None
        self.started_at = time.time()

    # -- status ------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.engines is None:
            return "starting" if not self.problems else "unavailable"
        return "degraded" if self.problems else "ready"

    def status(self) -> dict[str, Any]:
        from agent.voice.catalog import catalog_status

        return {
            "state": self.state,
            "problems": dict(self.problems),
            "loaded": {k: round(v, 3) for k, v in self.loaded.items()},
            "source": self.settings.source or None,
            "sink": self.settings.sink or None,
            "wake_words": list(self.settings.wake_words),
            "end_of_speech_ms": self.settings.end_of_speech_ms,
            "pipelines": {
                name: {"state": p.state, "turns": p.turns, "last_timings_ms": p.last_timings}
                for name, p in {**({"car": self.pipeline} if self.pipeline else {}), **self.pipelines}.items()
            },
            "wyoming": self.settings.wyoming_uri or None,
            "models": catalog_status(),
        }

    def require(self) -> VoiceEngines:
        if self.engines is None:
            why = "; ".join(f"{k}: {v}" for k, v in self.problems.items()) or "it is still starting"
            raise UnavailableError(f"the voice assistant is not available: {why}", code="voice_unavailable")
        return self.engines

    def require_part(self, part: str) -> VoiceEngines:
        engines = self.require()
        if part in self.problems:
            raise UnavailableError(
                f"voice {part} is not available: {self.problems[part]}", code="voice_unavailable"
            )
        return engines

    # -- start -------------------------------------------------------------------------------

    async def start_engines(self) -> None:
        """Load what the assistant needs; record what is missing instead of failing."""
        from agent.voice.factory import build_engines, model_names, voice_manager, wake_pool_sizes
        from agent.voice.tts import EspeakTts

        s = self.settings
        names = model_names(s)
        if self.manager is None:
            shared = getattr(self.ctx, "models", None) if self.ctx is not None else None
            if shared is not None and type(getattr(shared, "store", None)).__name__ == "VoiceModelStore":
                self.manager = shared
                # the models service starts the shared manager's executors: wait for it
                models_service = self.ctx.supervisor.services.get("models") if self.ctx is not None else None
                if models_service is not None:
                    await asyncio.wait_for(models_service.ready.wait(), 120)
                elif not shared.started:  # no models service runs it (a test, a tool): run it ourselves
                    await shared.start()
                    self._own_manager = True
            else:
                if shared is not None:
                    log.info(
                        "voice runs its own model manager: the daemon's cannot load the packaged voice "
                        "models (build it with agent.voice.factory.manager_parts to share one budget)"
                    )
                root = self.ctx.settings.data_path / "models" if self.ctx is not None else None
                self.manager = voice_manager(
                    root, threads=s.threads, pool_sizes=wake_pool_sizes(s.wake_words, s.max_streams + 1),
                    idle_timeout_s=600.0,
                )  # fmt: skip
                await self.manager.start()
                self._own_manager = True
        manager = self.manager
        for part, name, pin in (
            ("vad", names.vad, True),
            *(("wake:" + w, w, True) for w in names.wake),
            # recognizer and voice stay loaded too: reloading them would cost the next command a second
            ("asr", names.asr, True),
            *((("tts", names.tts, True),) if names.tts else ()),
        ):
            await self._load(part, name, pin)
        llm_ok = False
        if names.llm:
            llm_ok = await self._check_llm(names.llm)
        if "tts" in self.problems and EspeakTts.available():
            log.warning("speaking with espeak-ng instead: %s", self.problems["tts"])
            s = _replace(s, tts_voice="espeak:en-us")
            self.problems["tts"] += " (speaking with espeak-ng meanwhile)"
        if "vad" in self.problems or "asr" in self.problems:
            log.error("voice assistant cannot listen: %s", "; ".join(self.problems.values()))
        try:
            self.engines = build_engines(manager, s, llm_available=llm_ok)
        except EdgeAgentError as exc:
            self.problems["config"] = str(exc)
            log.error("voice assistant cannot start: %s", exc)
            return
        if "tts" not in self.problems or s.tts_voice.startswith("espeak:"):
            with contextlib.suppress(EdgeAgentError):
                await self.engines.tts.load()
        if llm_ok and self.engines.dialogue.llm is not None:
            self._prime = asyncio.get_running_loop().create_task(self._prime_llm(), name="voice-llm-prime")

    async def _load(self, part: str, name: str, pin: bool) -> None:
        assert self.manager is not None
        if locate(name) is None and not self.manager.store.versions(name):
            self.problems[part] = missing_hint(name)
            log.error("voice: %s", self.problems[part])
            return
        t0 = time.perf_counter()
        try:
            if pin:
                await self.manager.pin(name)
            else:
                await self.manager.load(name)
            self.loaded[name] = time.perf_counter() - t0
        except EdgeAgentError as exc:
            self.problems[part] = f"model {name} failed to load: {exc}"
            log.error("voice: %s", self.problems[part])

    async def _check_llm(self, name: str) -> bool:
        assert self.manager is not None
        if locate(name) is None and not self.manager.store.versions(name):
            self.problems["llm"] = missing_hint(name) + "; answering vehicle commands only"
            log.warning("voice: %s", self.problems["llm"])
            return False
        from agent.voice.engines.llama import LlamaRuntime

        rt = LlamaRuntime()
        if not rt.available():
            self.problems["llm"] = rt.missing_reason() + "; answering vehicle commands only"
            log.warning("voice: %s", self.problems["llm"])
            return False
        return True

    async def _prime_llm(self) -> None:
        """Load the LLM and evaluate the system prompt once, so the first question does not pay for it."""
        engines = self.engines
        if engines is None or engines.dialogue.llm is None:
            return
        llm = engines.dialogue.llm
        t0 = time.perf_counter()
        try:
            async for _ in llm.generate(llm.messages("Hello", "__prime__"), max_tokens=1):
                pass
            self.loaded[llm.model] = time.perf_counter() - t0
        except EdgeAgentError as exc:
            self.problems["llm"] = f"model {llm.model} failed to load: {exc}; answering vehicle commands only"
            engines.dialogue.llm = None
            log.error("voice: %s", self.problems["llm"])
        finally:
            llm.forget("__prime__")

    # -- pipelines ---------------------------------------------------------------------------

    def pipeline_config(self, **overrides: Any) -> PipelineConfig:
        from agent.voice.factory import pipeline_config

        return pipeline_config(self.settings, **overrides)

    @contextlib.asynccontextmanager
    async def open_pipeline(
        self, stream: str, sink: AudioSink | None, config: PipelineConfig | None = None
    ) -> AsyncIterator[VoicePipeline]:
        """A pipeline for one connection over the shared engines (closed on exit)."""
        from agent.voice.pipeline import VoicePipeline

        engines = self.require_part("vad")
        if "asr" in self.problems:
            raise UnavailableError(
                f"voice recognition is not available: {self.problems['asr']}", code="voice_unavailable"
            )
        cfg = config or self.pipeline_config()
        if any(("wake:" + w) in self.problems for w in engines_wake(cfg)):
            cfg = _replace(
                cfg, wake_words=tuple(w for w in cfg.wake_words if ("wake:" + _wake(w)) not in self.problems)
            )
        bus = self.ctx.bus if self.ctx is not None else None
        pipeline = VoicePipeline(engines, cfg, sink=sink, stream=stream, bus=bus)
        key = stream
        n = 1
        while key in self.pipelines:
            n += 1
            key = f"{stream}#{n}"
        self.pipelines[key] = pipeline
        try:
            await pipeline.open()
            yield pipeline
        finally:
            self.pipelines.pop(key, None)
            await pipeline.close()

    async def _run_car_pipeline(self) -> None:
        """voice.source → pipeline → voice.sink, reopened with a back-off when the device fails."""
        from agent.voice.pipeline import VoicePipeline
        from agent.voice.sinks import open_sink
        from agent.voice.sources import open_source

        engines = self.require_part("asr")
        delay = 1.0
        sink = self._sink or open_sink(self.settings.sink)
        while True:
            try:
                source = open_source(self.settings.source)
                bus = self.ctx.bus if self.ctx is not None else None
                self.pipeline = VoicePipeline(
                    engines, self.pipeline_config(), sink=sink, stream="car", bus=bus
                )
                async with self.pipeline:
                    started = time.monotonic()
                    await self.pipeline.run(_converted(source))
                    if time.monotonic() - started > 60:
                        delay = 1.0
                if not self.settings.source.startswith("mic"):
                    log.info("voice source %s ended", self.settings.source)
                    return
            except EdgeAgentError as exc:
                self.problems["source"] = f"{self.settings.source}: {exc}"
                log.error("voice source failed (%s); retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def run(self) -> None:
        if self.ctx is not None:
            self.ctx.voice = self  # the API finds the service here
        try:
            await self.start_engines()
            self.ready.set()
            tasks = []
            if self.settings.wyoming_uri and self.engines is not None:
                from agent.voice.wyoming_server import WyomingServer

                self._wyoming = WyomingServer(self, self.settings.wyoming_uri)
                tasks.append(asyncio.create_task(self._wyoming.serve(), name="voice-wyoming"))
            if self.settings.source and self.engines is not None and "asr" not in self.problems:
                tasks.append(asyncio.create_task(self._run_car_pipeline(), name="voice-car"))
            try:
                await asyncio.Event().wait()
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(BaseException):
                        await task
        finally:
            self.ready.set()
            await self.close()

    async def close(self) -> None:
        if self._prime is not None and not self._prime.done():
            self._prime.cancel()
            with contextlib.suppress(BaseException):
                await self._prime
        for pipeline in list(self.pipelines.values()):
            with contextlib.suppress(Exception):
                await pipeline.close()
        if self._own_manager and self.manager is not None:
            await self.manager.close()
            self.manager = None
        self.engines = None


async def _converted(source: Any) -> AsyncIterator[bytes]:
    """Pipeline-format audio from any source (a microphone settles its rate when it opens)."""
    from agent.voice.resample import Resampler

    resampler = None
    async for raw in source.chunks():
        if resampler is None:
            resampler = Resampler(source.format)
        yield resampler.process(raw)


def _replace(obj: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(obj, **changes)


def _wake(word: str) -> str:
    from agent.voice.catalog import wake_model_name

    return wake_model_name(word)


def engines_wake(cfg: PipelineConfig) -> list[str]:
    return [_wake(w) for w in cfg.wake_words]
