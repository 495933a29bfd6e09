"""The Wyoming server, driven by the ``wyoming`` package's own client over real TCP on a free port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.tts import Synthesize
from wyoming.wake import Detect, Detection, NotDetected

from agent.voice.audio import AudioFormat
from agent.voice.postprocess import word_errors
from agent.voice.resample import to_pipeline
from agent.voice.wyoming_server import WyomingServer
from tests import speech
from tests.voice_fixtures import VoiceStack, make_service, voice_stack_fixture  # noqa: F401

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def server(voice_stack: VoiceStack) -> AsyncIterator[WyomingServer]:
    service = await make_service(voice_stack)
    srv = WyomingServer(service, "tcp://127.0.0.1:0")
    task = asyncio.create_task(srv.serve())
    await asyncio.wait_for(srv.ready.wait(), 5)
    yield srv
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def read(client: AsyncTcpClient, until: str, timeout: float = 30.0) -> list[Event]:
    """Events up to and including the first of type ``until``; every read is bounded."""
    out = []
    while True:
        event = await asyncio.wait_for(client.read_event(), timeout)
        assert event is not None, f"server closed before {until}"
        out.append(event)
        if event.type == until:
            return out


async def send_audio(
    client: AsyncTcpClient, pcm: bytes, rate: int = 16000, channels: int = 1, ms: int = 50
) -> None:
    step = rate * channels * 2 * ms // 1000
    await client.write_event(AudioStart(rate=rate, width=2, channels=channels).event())
    for i in range(0, len(pcm), step):
        await client.write_event(
            AudioChunk(rate=rate, width=2, channels=channels, audio=pcm[i : i + step]).event()
        )
    await client.write_event(AudioStop().event())


def resample_to(pcm: bytes, rate: int) -> bytes:
    import numpy as np
    import soxr

    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    return (soxr.resample(x, 16000, rate) * 32767).astype("<i2").tobytes()


async def test_describe(server: WyomingServer) -> None:
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Describe().event())
        info = Info.from_event((await read(client, "info"))[-1])
    assert info.asr[0].models[0].name == "whisper-tiny-en"
    assert [m.name for m in info.wake[0].models] == ["okay_nabu", "hey_jarvis"]
    assert info.wake[0].models[0].phrase == "Okay Nabu"
    assert info.tts[0].voices[0].name == "piper-joe-medium"
    assert info.handle and info.handle[0].installed


async def test_transcribe_48k_audio(server: WyomingServer) -> None:
    said = "Set the temperature to twenty one degrees."
    pcm = resample_to(speech.speak(said) + speech.silence(200), 48000)
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Transcribe(language="en").event())
        await send_audio(client, pcm, rate=48000)
        transcript = Transcript.from_event((await read(client, "transcript"))[-1])
    assert word_errors(said, transcript.text)[0] <= 1, transcript.text


async def test_synthesize(server: WyomingServer, voice_stack: VoiceStack) -> None:
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Synthesize(text="The route is cleared. Have a safe trip home.").event())
        events = await read(client, "audio-stop")
    start = AudioStart.from_event(events[0])
    pcm = b"".join(AudioChunk.from_event(e).audio for e in events if e.type == "audio-chunk")
    assert start.rate == 22050 and len(pcm) / 2 / 22050 > 1.0
    heard = await voice_stack.engines.asr.transcribe(to_pipeline(pcm, AudioFormat(22050, 2, 1)))
    errors, words = word_errors("the route is cleared have a safe trip home", heard)
    assert errors / words <= 0.35, heard  # piper's voice varies run to run; Whisper tiny is not perfect


async def test_detect_hit_and_miss(server: WyomingServer) -> None:
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Detect(names=["okay_nabu"]).event())
        await send_audio(client, speech.silence(300) + speech.speak("Okay Nabu") + speech.silence(500))
        hit = Detection.from_event((await read(client, "detection"))[-1])
        assert hit.name == "okay_nabu" and hit.timestamp and hit.timestamp > 300
        await client.write_event(Detect(names=["okay_nabu"]).event())
        await send_audio(client, speech.speak("Open the window please.") + speech.silence(300))
        assert NotDetected.is_type((await read(client, "not-detected"))[-1].type)


async def test_run_pipeline_from_wake_to_speech(server: WyomingServer) -> None:
    audio = (
        speech.silence(300)
        + speech.speak("Okay Nabu")
        + speech.silence(300)
        + speech.speak("Turn the volume up.")
        + speech.silence(1500)
    )
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(
            RunPipeline(start_stage=PipelineStage.WAKE, end_stage=PipelineStage.TTS).event()
        )
        sender = asyncio.create_task(send_audio(client, resample_to(audio, 22050), rate=22050, ms=20))
        events = await read(client, "audio-stop", timeout=60)
        await sender
    kinds = [e.type for e in events]
    for k in ("detection", "voice-started", "voice-stopped", "transcript", "audio-start", "audio-chunk"):
        assert k in kinds
    assert kinds.index("detection") < kinds.index("transcript") < kinds.index("audio-start")
    transcript = Transcript.from_event(next(e for e in events if e.type == "transcript"))
    assert word_errors("turn the volume up", transcript.text)[0] <= 1, transcript.text


async def test_run_pipeline_asr_to_handle_gives_the_answer_text(server: WyomingServer) -> None:
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(
            RunPipeline(start_stage=PipelineStage.ASR, end_stage=PipelineStage.HANDLE).event()
        )
        await send_audio(client, speech.speak("Close all the windows.") + speech.silence(1200))
        events = await read(client, "handled", timeout=60)
    handled = events[-1]
    assert handled.data["text"] == "Closing all windows."
    assert "audio-start" not in [e.type for e in events]  # ended at handle: no speech


async def test_client_disconnecting_mid_stream_ends_only_its_work(server: WyomingServer) -> None:
    pcm = (
        speech.speak("Okay Nabu") + speech.silence(300) + speech.speak("Tell me a long story about the sea.")
    )
    client = AsyncTcpClient("127.0.0.1", server.port)
    await client.connect()
    await client.write_event(RunPipeline(start_stage=PipelineStage.WAKE, end_stage=PipelineStage.TTS).event())
    await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
    for chunk in list(speech.chunks(pcm, 50))[: len(pcm) // 3200 // 2]:  # half of it, then gone
        await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=chunk).event())
    await client.disconnect()
    await asyncio.sleep(0.3)
    assert server.service.pipelines == {}  # its pipeline was closed
    # the server still serves others
    async with AsyncTcpClient("127.0.0.1", server.port) as other:
        await other.write_event(Describe().event())
        assert (await read(other, "info"))[-1].type == "info"
