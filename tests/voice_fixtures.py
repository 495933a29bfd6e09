"""The voice stack the voice tests share: one model manager with the packaged models, loaded once.

Loading Whisper, piper, SmolLM2, the VAD and two wake words takes seconds,
so every voice test module runs in the session's event loop and reuses one
stack (``voice_stack``); it is closed when the last module using it ends.
Models come from the installed packages only (nothing downloads).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agent.config import VoiceSettings
from agent.voice.catalog import locate

REQUIRED = (
    "silero-vad",
    "wake-okay-nabu",
    "wake-hey-jarvis",
    "whisper-tiny-en",
    "piper-joe-medium",
    "smollm2-135m",
)


def require_models(*names: str) -> None:
    missing = [n for n in names or REQUIRED if locate(n) is None]
    if missing:
        pytest.skip(f"voice models not installed: {missing} (pip install 'edge-agent[voice,llm]')")


@dataclass
class VoiceStack:
    manager: Any
    settings: VoiceSettings
    engines: Any
    loop: asyncio.AbstractEventLoop
    refs: int = 0
    events: list[Any] = field(default_factory=list)

    def pipeline(self, sink: Any = None, stream: str = "test", **overrides: Any) -> Any:
        from agent.voice.factory import pipeline_config
        from agent.voice.pipeline import VoicePipeline

        return VoicePipeline(
            self.engines, pipeline_config(self.settings, **overrides), sink=sink, stream=stream
        )

    def with_settings(self, **changes: Any) -> Any:
        from agent.voice.factory import build_engines

        return build_engines(self.manager, replace(self.settings, **changes))


_SHARED: dict[str, VoiceStack] = {}


async def _create() -> VoiceStack:
    from agent.voice.factory import build_engines, voice_manager, wake_pool_sizes

    settings = VoiceSettings(wake_words=("okay_nabu", "hey_jarvis"), threads=2)
    manager = voice_manager(
        None, threads=2, pool_sizes=wake_pool_sizes(settings.wake_words, 4), idle_timeout_s=None
    )
    await manager.start()
    for name in ("silero-vad", "wake-okay-nabu", "wake-hey-jarvis"):
        await manager.pin(name)
    engines = build_engines(manager, settings)
    await engines.asr.load()
    await engines.tts.load()
    await manager.load("smollm2-135m")
    return VoiceStack(manager, settings, engines, asyncio.get_running_loop())


@pytest_asyncio.fixture(scope="session", loop_scope="session", name="voice_stack")
async def voice_stack_fixture() -> AsyncIterator[VoiceStack]:
    """Import this into a test module (``# noqa: F401``); tests ask for ``voice_stack``."""
    require_models()
    loop = asyncio.get_running_loop()
    stack = _SHARED.get("stack")
    if stack is None or stack.loop is not loop:
        stack = _SHARED["stack"] = await _create()
    stack.refs += 1
    try:
        yield stack
    finally:
        stack.refs -= 1
        if stack.refs == 0:
            _SHARED.pop("stack", None)
            await stack.manager.close()


async def run_audio(pipeline: Any, pcm: bytes, chunk_ms: int = 20, realtime: bool = False) -> None:
    """Feed ``pcm`` through ``pipeline`` (opened by the caller) and finish the input."""
    step = 32 * chunk_ms
    t0 = asyncio.get_running_loop().time()
    for i in range(0, len(pcm), step):
        if realtime:
            due = t0 + i / 32000
            delay = due - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)
        await pipeline.feed(pcm[i : i + step])
    await pipeline.end_of_input()


def transcribe_wav(path: Path) -> bytes:
    """The PCM of a WAV the sink wrote, as 16 kHz mono (for re-recognising the reply)."""
    from agent.voice.decode import decode_file
    from agent.voice.resample import to_pipeline

    decoded = decode_file(path)
    return to_pipeline(decoded.pcm, decoded.format)


async def make_service(stack: VoiceStack, **changes: Any) -> Any:
    """A VoiceService over the shared stack's manager (models already loaded), started."""
    from agent.voice.service import VoiceService

    service = VoiceService(None, replace(stack.settings, enabled="on", **changes), manager=stack.manager)
    await service.start_engines()
    return service
