"""The voice service under the supervisor: it starts, says what is missing, and never takes the daemon down.

The broken model is a real signed bundle installed in the real model store:
a Whisper directory whose weights are garbage, so CTranslate2 itself refuses
it. The missing one is a name no package provides.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from agent.config import Settings, VoiceSettings
from agent.daemon import build_context
from agent.errors import UnavailableError
from agent.supervisor import FunctionService
from agent.voice.service import VoiceService, voice_enabled
from models.bundle import make_manifest, write_signed
from models.manifest import Variant
from models.signing import generate_keypair
from models.store import ModelStore
from tests import speech
from tests.voice_fixtures import require_models

pytestmark = pytest.mark.asyncio(loop_scope="session")


def install_broken_whisper(root: Path, tmp: Path) -> None:
    bundle = tmp / "bundle"
    bundle.mkdir()
    (bundle / "model.bin").write_bytes(b"\x00garbage, not CTranslate2 weights" * 1000)
    (bundle / "config.json").write_text("{}")
    key = generate_keypair()
    manifest = make_manifest(
        bundle, name="whisper-broken", version="1.0.0", task="asr",
        variants=[Variant("ctranslate2", "int8", ("model.bin", "config.json"))],
        memory_bytes=1 << 20, inputs=(), outputs=(),
    )  # fmt: skip
    write_signed(bundle, manifest, key.private_hex)
    ModelStore(root).install(bundle, [key.public_hex])


async def test_broken_and_missing_models_are_reported_and_the_daemon_keeps_running(
    settings: Settings, tmp_path: Path
) -> None:
    require_models("silero-vad", "wake-okay-nabu")
    install_broken_whisper(settings.data_path / "models", tmp_path)
    voice = VoiceSettings(
        enabled="on",
        asr_model="whisper-broken",
        tts_voice="piper-not-a-voice",
        llm_model="llm-nowhere",
        threads=1,
    )
    settings = dataclasses.replace(settings, voice=voice)
    ctx = build_context(settings)
    sub = ctx.bus.subscribe("test", ["service.state"])
    heartbeat = asyncio.Event()

    async def other_work() -> None:
        while True:
            heartbeat.set()
            await asyncio.sleep(0.05)

    service = VoiceService(ctx)
    ctx.supervisor.add(FunctionService("other", other_work))
    ctx.supervisor.add(service)
    ctx.supervisor.start()
    try:
        assert await ctx.supervisor.wait_ready(30) == []
        problems = service.problems
        assert "failed to load" in problems["asr"] and "whisper-broken" in problems["asr"]
        assert "reinstall" in problems["asr"]  # the engine's refusal, translated into what to do
        assert "piper-not-a-voice" in problems["tts"] and "espeak-ng" in problems["tts"]
        assert "llm-nowhere" in problems["llm"] and "commands only" in problems["llm"]
        status = service.status()
        assert status["state"] == "degraded"
        assert "silero-vad" in status["loaded"] and "wake-okay-nabu" in status["loaded"]
        with pytest.raises(UnavailableError, match="whisper-broken"):
            async with service.open_pipeline("x", None):
                pass
        # what still works keeps working: the voice fell back to espeak-ng, intents need no model
        engines = service.require()
        audio = [a async for a in engines.tts.synthesize("Still here.")]
        assert audio and audio[0].seconds > 0.3
        # the rest of the daemon never noticed
        heartbeat.clear()
        await asyncio.wait_for(heartbeat.wait(), 2)
        assert {n: s.state for n, s in ctx.supervisor.status.items()} == {
            "other": "running",
            "voice": "running",
        }
        assert ctx.supervisor.status["voice"].restarts == 0
    finally:
        sub.close()
        await ctx.supervisor.stop()
        ctx.store.close()


async def test_voice_is_on_by_default_only_where_its_models_are_installed() -> None:
    require_models("silero-vad", "wake-okay-nabu", "whisper-tiny-en")
    assert voice_enabled(VoiceSettings()) == (True, "voice models are installed")
    on, why = voice_enabled(VoiceSettings(asr_model="whisper-large-nowhere"))
    assert not on and "whisper-large-nowhere" in why and "not installed" in why
    assert voice_enabled(VoiceSettings(enabled="off"))[0] is False
    assert voice_enabled(VoiceSettings(enabled="on", asr_model="nowhere"))[0] is True


async def test_the_car_pipeline_runs_from_a_file_source_to_a_wav_sink(
    settings: Settings, tmp_path: Path
) -> None:
    """voice.source = a WAV file at 44.1 kHz stereo, voice.sink = a WAV file: the service's own loop."""
    require_models()
    import numpy as np

    pcm16k = (
        speech.silence(300)
        + speech.speak("Okay Nabu")
        + speech.silence(300)
        + speech.speak("Turn on the AC.")
        + speech.silence(1500)
    )
    import soxr

    x = np.frombuffer(pcm16k, dtype="<i2").astype(np.float32) / 32768
    y = soxr.resample(x, 16000, 44100)
    stereo = (np.repeat(y[:, None], 2, axis=1) * 32767).astype("<i2").tobytes()
    source = speech.wav_file(stereo, tmp_path / "in.wav", rate=44100, channels=2)
    out = tmp_path / "out.wav"
    voice = VoiceSettings(enabled="on", source=str(source), sink=str(out), llm=False, threads=2)
    settings = dataclasses.replace(settings, voice=voice)
    ctx = build_context(settings)
    sub = ctx.bus.subscribe("test", ["voice.reply", "voice.intent"])
    service = VoiceService(ctx)
    ctx.supervisor.add(service)
    ctx.supervisor.start()
    try:
        event = await asyncio.wait_for(sub.get(), 60)
        while event.type != "voice.reply":
            event = await asyncio.wait_for(sub.get(), 60)
        assert event.text == "Air conditioning on." and event.answer_source == "intent"
        assert out.exists() and out.stat().st_size > 10_000
    finally:
        sub.close()
        await ctx.supervisor.stop()
        ctx.store.close()


async def test_the_daemons_shared_manager_is_used_when_it_can_load_voice_models(settings: Settings) -> None:
    """Built with manager_parts (as the daemon should), one budget serves voice and everything else."""
    require_models("silero-vad", "wake-okay-nabu", "whisper-tiny-en")
    from agent.models_service import ModelsService
    from agent.voice.factory import manager_parts, wake_pool_sizes
    from models.manager import ManagerSettings, ModelManager

    voice = VoiceSettings(enabled="on", llm=False, tts_voice="espeak:en-us", threads=1)
    settings = dataclasses.replace(settings, voice=voice)
    ctx = build_context(settings)
    store, runtimes = manager_parts(settings.data_path / "models")
    ctx.models = ModelManager(
        store, ManagerSettings(threads=1, pool_sizes=wake_pool_sizes(voice.wake_words, 2)), runtimes=runtimes
    )
    service = VoiceService(ctx)
    ctx.supervisor.add(ModelsService(ctx.models))
    ctx.supervisor.add(service)
    ctx.supervisor.start()
    try:
        assert await ctx.supervisor.wait_ready(60) == []
        assert service.manager is ctx.models and service.problems == {}
        status = ctx.models.status()
        pinned = {m["name"] for m in status["models"] if m["pinned"]}
        assert {"silero-vad", "wake-okay-nabu", "whisper-tiny-en"} <= pinned
        assert ctx.voice is service  # type: ignore[attr-defined]  # where the API finds it
    finally:
        await ctx.supervisor.stop()
        ctx.store.close()
