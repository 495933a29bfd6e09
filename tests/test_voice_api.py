"""The voice API on a real aiohttp server: the full-duplex WebSocket, and the OpenAI endpoints
driven by the ``openai`` package's own async client."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from agent.api.app import ROUTE_MODULES, create_app
from agent.config import Settings
from agent.daemon import build_context
from agent.voice.audio import AudioFormat, wav_bytes
from agent.voice.postprocess import word_errors
from agent.voice.resample import to_pipeline
from tests import speech
from tests.conftest import free_port
from tests.voice_fixtures import VoiceStack, make_service, voice_stack_fixture  # noqa: F401

pytestmark = pytest.mark.asyncio(loop_scope="session")
MODULES = (*ROUTE_MODULES, "agent.api.voice_routes", "agent.api.openai_routes")


@dataclasses.dataclass
class Server:
    url: str
    ctx: Any
    service: Any


@pytest_asyncio.fixture(loop_scope="session")
async def server(voice_stack: VoiceStack, settings: Settings) -> AsyncIterator[Server]:
    settings = dataclasses.replace(settings, api=dataclasses.replace(settings.api, max_body_bytes=8 << 20))
    ctx = build_context(settings)
    service = await make_service(voice_stack)
    ctx.voice = service  # type: ignore[attr-defined]
    runner = web.AppRunner(create_app(ctx, MODULES), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Server(f"http://127.0.0.1:{port}", ctx, service)
    finally:
        await runner.cleanup()
        ctx.store.close()


async def ws_events(
    ws: aiohttp.ClientWebSocketResponse, until: Any, timeout: float = 60.0
) -> tuple[list[dict], bytes]:
    """JSON events and binary audio until ``until(event)`` is true; every receive is bounded."""
    events: list[dict] = []
    audio = bytearray()
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        if msg.type == aiohttp.WSMsgType.BINARY:
            audio += msg.data
            continue
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        event = json.loads(msg.data)
        events.append(event)
        if until(event):
            return events, bytes(audio)


async def test_websocket_full_duplex_round_trip(server: Server, voice_stack: VoiceStack) -> None:
    pcm = (
        speech.silence(300)
        + speech.speak("Okay Nabu")
        + speech.silence(300)
        + speech.speak("Set the temperature to twenty degrees.")
        + speech.silence(1200)
    )
    pcm48 = _resample(pcm, 48000)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.url + "/v1/voice/ws?rate=48000&pace=0") as ws,
    ):
        hello = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
        assert hello["type"] == "voice.hello" and hello["format"]["rate"] == 48000

        async def send() -> None:
            for i in range(0, len(pcm48), 3840):  # 40 ms blocks
                await ws.send_bytes(pcm48[i : i + 3840])
                await asyncio.sleep(0)

        sender = asyncio.create_task(send())
        events, audio = await ws_events(ws, lambda e: e["type"] == "audio-stop")
        await sender
        events += (await ws_events(ws, lambda e: e["type"] == "voice.timings"))[0]
    kinds = [e["type"] for e in events]
    assert (
        kinds.index("voice.wake.detected") < kinds.index("voice.asr.transcript") < kinds.index("audio-start")
    )
    intent = next(e for e in events if e["type"] == "voice.intent")
    assert intent["name"] == "climate.set_temperature" and intent["slots"] == {"temperature": 20}
    start = next(e for e in events if e["type"] == "audio-start")
    heard = await voice_stack.engines.asr.transcribe(to_pipeline(audio, AudioFormat(start["rate"], 2, 1)))
    assert word_errors("setting the temperature to 20 degrees", heard)[0] <= 1, heard
    assert "payload" not in json.dumps(events)  # audio never rides in JSON


async def test_websocket_text_turn_and_client_barge_in(server: Server) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.url + "/v1/voice/ws?mode=listen") as ws,
    ):
        await ws.receive()  # hello
        await ws.send_str(json.dumps({"type": "text", "text": "take me home"}))
        events, _ = await ws_events(ws, lambda e: e["type"] == "voice.reply")
        assert events[-1]["text"] == "Starting navigation home." and not events[-1]["interrupted"]
        await ws.send_str(
            json.dumps({"type": "say", "text": " ".join(["A long message that will be cut short."] * 8)})
        )
        await ws_events(ws, lambda e: e["type"] == "audio-start")
        await asyncio.sleep(0.5)
        await ws.send_str(json.dumps({"type": "stop"}))
        events, _ = await ws_events(ws, lambda e: e["type"] == "voice.reply")
        assert events[-1]["interrupted"] and events[-1]["by"] == "client"
        assert any(e["type"] == "audio-stop" and e["aborted"] for e in events)
        # and the pipeline is idle again (it once stayed "speaking" after a client's stop)
        idle, _ = await ws_events(ws, lambda e: e["type"] == "voice.state" and e["state"] == "idle")
        assert idle[-1]["reason"] == "client"
        await ws.send_str("not json")
        err, _ = await ws_events(ws, lambda e: e["type"] == "error")
        assert "JSON" in err[-1]["message"]


async def test_websocket_client_disconnecting_mid_utterance(server: Server) -> None:
    pcm = speech.speak("Okay Nabu") + speech.silence(300) + speech.speak("Navigate to the airport please.")
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.url + "/v1/voice/ws?pace=0")
        await ws.receive()
        for i in range(0, len(pcm) * 2 // 3, 1280):
            await ws.send_bytes(pcm[i : i + 1280])
        await ws_events(ws, lambda e: e["type"] == "voice.state" and e["state"] == "listening")
        await ws.close()
    for _ in range(100):
        if not server.service.pipelines:
            break
        await asyncio.sleep(0.05)
    assert server.service.pipelines == {}
    async with aiohttp.ClientSession() as http, http.get(server.url + "/v1/voice/status") as resp:
        assert resp.status == 200 and (await resp.json())["state"] == "ready"


async def test_websocket_refuses_unsupported_formats(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/v1/voice/ws?rate=4000") as resp:
            body = await resp.json()
            assert resp.status == 400 and "8000-192000 Hz" in body["error"]["message"]
        async with http.ws_connect(server.url + "/v1/voice/ws") as ws:
            await ws.receive()
            await ws.send_str(json.dumps({"type": "audio-start", "rate": 16000, "width": 5}))
            err, _ = await ws_events(ws, lambda e: e["type"] == "error")
            assert err[-1]["code"] == "audio_format"


def _openai(server: Server) -> Any:
    """The openai client with a real operator token of this daemon as its API key."""
    from agent.security.tokens import TokenStore

    openai = pytest.importorskip("openai")
    token, _ = TokenStore(server.ctx.store).create("openai-client", "operator")
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=60)


async def test_openai_chat_completion_streams_and_answers(server: Server) -> None:
    client = _openai(server)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    stream = await client.chat.completions.create(
        model="smollm2-135m", messages=messages, stream=True, max_tokens=24
    )
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2
    whole = await client.chat.completions.create(model="smollm2-135m", messages=messages, max_tokens=24)
    assert whole.choices[0].message.content.strip()
    assert whole.choices[0].finish_reason in ("stop", "length")
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        await client.chat.completions.create(model="x", messages=messages, n=2)
    await client.close()


async def test_openai_transcription_and_speech(server: Server, voice_stack: VoiceStack) -> None:
    client = _openai(server)
    said = "Find the nearest charging station."
    wav = wav_bytes(_resample(speech.speak(said), 44100), 44100)
    result = await client.audio.transcriptions.create(
        model="whisper-1", file=("q.wav", io.BytesIO(wav), "audio/wav")
    )
    assert word_errors(said, result.text)[0] <= 1, result.text
    speech_resp = await client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input="The doors are locked and the battery is full.",
        response_format="wav",
    )
    data = await speech_resp.aread()
    assert data[:4] == b"RIFF"
    from agent.voice.decode import decode_bytes

    decoded = decode_bytes(data)
    heard = await voice_stack.engines.asr.transcribe(to_pipeline(decoded.pcm, decoded.format))
    assert word_errors("the doors are locked and the battery is full", heard)[0] <= 2, heard
    pcm = await (
        await client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.", response_format="pcm")
    ).aread()
    assert len(pcm) > 24000 * 2 * 0.3  # 24 kHz s16, as OpenAI specifies
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError, match="cannot be decoded|not a WAV|cannot"):
        await client.audio.transcriptions.create(
            model="whisper-1", file=("broken.wav", io.BytesIO(b"RIFF" + bytes(100)), "audio/wav")
        )
    with pytest.raises(openai.BadRequestError, match="use wav or pcm"):
        await client.audio.speech.create(model="tts-1", voice="alloy", input="Hi", response_format="mp3")
    await client.close()


def _resample(pcm: bytes, rate: int) -> bytes:
    import numpy as np
    import soxr

    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    return (soxr.resample(x, 16000, rate) * 32767).astype("<i2").tobytes()


async def test_openapi_lists_the_voice_routes(server: Server) -> None:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/openapi.json") as resp:
        paths = (await resp.json())["paths"]
    for path in (
        "/v1/voice/ws",
        "/v1/voice/status",
        "/v1/voice/say",
        "/v1/chat/completions",
        "/v1/audio/transcriptions",
        "/v1/audio/speech",
    ):
        assert path in paths
    with contextlib.suppress(Exception):
        pass
