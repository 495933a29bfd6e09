"""``/v1/voice``: the full-duplex voice WebSocket, status, speaking and alert broadcasts.

``GET /v1/voice/ws`` (WebSocket) is a whole voice session over one socket:

- client → server, binary: PCM in the format of the query (``rate``, default
  16000; ``width`` 2; ``channels`` 1) or of the last ``audio-start`` message;
- client → server, JSON text: ``{"type": "audio-start", "rate", "width", "channels"}``,
  ``{"type": "audio-stop"}`` (end of audio: the utterance in progress is finished),
  ``{"type": "listen"}`` (push-to-talk), ``{"type": "text", "text"}`` (a typed turn),
  ``{"type": "say", "text"}``, ``{"type": "stop"}`` (barge-in);
- server → client, JSON text: every pipeline event (``voice.state``,
  ``voice.wake.detected``, ``voice.vad.*``, ``voice.asr.*``, ``voice.reply.token``,
  ``voice.reply``, ``voice.timings``, ``voice.error``) and ``audio-start``/``audio-stop``
  around the reply audio, which comes as binary frames (16-bit mono PCM).

``?mode=wake`` (default) waits for the wake word; ``mode=listen`` listens at
once for one utterance per ``listen`` message. Reply audio is paced at playback
speed (``pace=0`` sends it as fast as it is made). A client that disconnects
mid-stream ends only its own pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from agent.api.app import CTX, open_websocket
from agent.api.routes import Route
from agent.core.jsonbody import JsonBodyError, parse_json, read_json
from agent.errors import BadRequestError, EdgeAgentError, UnavailableError

log = logging.getLogger("edge_agent.api.voice")
_SAY_KEYS = {"text", "speed"}


def voice_service(request: web.Request) -> Any:
    service = getattr(request.app[CTX], "voice", None)
    if service is None:
        raise UnavailableError(
            "the voice assistant is not running on this daemon (voice.enabled, or the voice models "
            "are not installed: pip install 'edge-agent[voice]')",
            code="voice_disabled",
        )
    return service


async def _json_body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    body: dict[str, Any] = await read_json(request, allowed=allowed)
    return body


def _int(query: Any, key: str, default: int) -> int:
    try:
        return int(query.get(key, default))
    except ValueError:
        raise BadRequestError(f"{key} must be an integer") from None


async def status(request: web.Request) -> web.Response:
    return web.json_response(voice_service(request).status())


async def say(request: web.Request) -> web.Response:
    """Speak through the car's own output (voice.sink)."""
    body = await _json_body(request, _SAY_KEYS)  # a bad body is a 4xx whether or not voice runs
    service = voice_service(request)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequestError('send {"text": "what to say"}')
    pipeline = service.pipeline
    if pipeline is None:
        raise UnavailableError(
            "no audio output runs on this box (voice.source and voice.sink)", code="voice_no_output"
        )
    await pipeline.say(text, speed=body.get("speed"))
    return web.json_response({"speaking": True, "text": text}, status=202)


async def ask(request: web.Request) -> web.Response:
    """One dialogue turn on text, as ``edge-agent ask`` runs it: an intent, else the LLM.

    ``conversation`` keeps the LLM's history between calls (``edge-agent chat``
    sends one id per session), so a follow-up question knows what came before.
    """
    from agent.voice.dialogue import TurnResult

    service = voice_service(request)
    body = await _json_body(request, {"text", "conversation"})
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequestError('send {"text": "the question or command"}')
    conversation = body.get("conversation", "api")
    if not isinstance(conversation, str) or not 0 < len(conversation) <= 64:
        raise BadRequestError("conversation must be a string of 1 to 64 characters")
    engines = service.require()
    result = TurnResult()
    parts = [piece async for piece in engines.dialogue.respond(text.strip(), f"ask:{conversation}", result)]
    out: dict[str, Any] = {
        "answer": "".join(parts).strip(),
        "source": result.source,
        "conversation": conversation,
    }
    if result.intent is not None:
        out["intent"] = {"name": result.intent.name, "slots": result.intent.slots}
    return web.json_response(out)


async def announce(request: web.Request) -> web.Response:
    """Broadcast a structured alert through the car's output: chime, then "Critical: ..."."""
    from agent.voice.tts import alert_text

    body = await _json_body(request, {"severity", "message"})
    service = voice_service(request)
    text = alert_text(str(body.get("severity", "")), str(body.get("message", "")))
    pipeline = service.pipeline
    if pipeline is None:
        raise UnavailableError(
            "no audio output runs on this box (voice.source and voice.sink)", code="voice_no_output"
        )
    await pipeline.announce(str(body["severity"]), str(body["message"]))
    return web.json_response({"announcing": True, "text": text}, status=202)


async def voice_socket(request: web.Request) -> web.StreamResponse:
    from agent.voice.audio import AudioFormat
    from agent.voice.resample import Resampler
    from agent.voice.sinks import CallbackSink
    from agent.voice.sources import StreamSource

    service = voice_service(request)
    q = request.query
    fmt = AudioFormat(_int(q, "rate", 16000), _int(q, "width", 2), _int(q, "channels", 1)).check()
    mode = q.get("mode", "wake")
    if mode not in ("wake", "listen"):
        raise BadRequestError("mode must be wake or listen")
    pace = q.get("pace", "1") not in ("0", "false")
    ws = await open_websocket(request, heartbeat=30, max_msg_size=1 << 20)
    send_lock = asyncio.Lock()

    async def send_json(data: dict[str, Any]) -> None:
        if ws.closed:
            return
        async with send_lock:
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await ws.send_str(json.dumps(data, default=str))

    async def send_audio(pcm: bytes) -> None:
        if ws.closed:
            return
        async with send_lock:
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await ws.send_bytes(pcm)

    async def on_start(rate: int) -> None:
        await send_json({"type": "audio-start", "rate": rate, "width": 2, "channels": 1})

    async def on_stop(aborted: bool) -> None:
        await send_json({"type": "audio-stop", "aborted": aborted})

    sink = CallbackSink(send_audio, on_start=on_start, on_stop=on_stop, realtime=pace)
    cfg = service.pipeline_config(start="wake" if mode == "wake" else "listen")
    stream_name = f"ws:{request.remote or '?'}"
    try:
        async with service.open_pipeline(stream_name, sink, cfg) as pipeline:

            async def forward(event: Any) -> None:
                await send_json(event.to_dict())

            pipeline.listeners.append(forward)
            await send_json(
                {"type": "voice.hello", "format": fmt.to_dict(), "mode": mode, "stream": pipeline.stream}
            )
            source = StreamSource(fmt, name=stream_name)
            runner = asyncio.create_task(_run(pipeline, source), name=f"voice-ws-{stream_name}")
            resampler = Resampler(fmt)
            try:
                async for msg in ws:
                    if runner.done():
                        break
                    if msg.type == WSMsgType.BINARY:
                        await source.put(resampler.process(msg.data))
                    elif msg.type == WSMsgType.TEXT:
                        resampler = await _command(msg.data, pipeline, source, resampler, send_json)
                    elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                        break
            finally:
                source.end()
                if not runner.done():
                    runner.cancel()
                with contextlib.suppress(BaseException):
                    await runner
    except EdgeAgentError as exc:
        await send_json({"type": "error", "code": exc.code, "message": str(exc)})
    finally:
        await ws.close()
    return ws


async def _run(pipeline: Any, source: Any) -> None:
    """Audio and control messages, in the order the client sent them."""
    async for item in source.items():
        if isinstance(item, bytes):
            await pipeline.feed(item)
        else:
            await _control(pipeline, item)
        if pipeline.finished.is_set():
            break
    await pipeline.end_of_input()


async def _control(pipeline: Any, msg: dict[str, Any]) -> None:
    kind = msg["type"]
    try:
        if kind == "audio-stop":
            await pipeline.finish_utterance("client")
        elif kind == "listen":
            await pipeline.listen("push_to_talk")
        elif kind == "text":
            await pipeline.ask(str(msg.get("text", "")))
        elif kind == "say":
            await pipeline.say(str(msg.get("text", "")))
        elif kind == "stop":
            await pipeline.stop("client")
    except EdgeAgentError as exc:
        from agent.voice.events import VoiceError

        await pipeline.emit(VoiceError(source="api", stream=pipeline.stream, code=exc.code, message=str(exc)))


async def _command(raw: str, pipeline: Any, source: Any, resampler: Any, send_json: Any) -> Any:
    """One JSON control message; returns the resampler to use from now on."""
    from agent.voice.audio import AudioFormat
    from agent.voice.resample import Resampler

    try:  # the same limits as a request body: a deep or huge-number message is an error, not a crash
        msg = parse_json(raw)
        kind = msg["type"]
    except (JsonBodyError, KeyError, TypeError):
        await send_json({"type": "error", "code": "bad_request", "message": 'send JSON {"type": ...}'})
        return resampler
    try:
        if kind == "audio-start":
            fmt = AudioFormat(
                int(msg.get("rate", 16000)), int(msg.get("width", 2)), int(msg.get("channels", 1))
            )
            await source.put(resampler.flush())
            return Resampler(fmt.check())
        if kind == "audio-stop":
            await source.put(resampler.flush())
            await source.put_control(msg)
        elif kind in ("listen", "text", "say", "stop"):
            await source.put_control(msg)
        else:
            raise BadRequestError(
                f"unknown message type {kind!r}: audio-start, audio-stop, listen, text, say, stop"
            )
    except (EdgeAgentError, ValueError) as exc:
        code = getattr(exc, "code", "bad_request")
        await send_json({"type": "error", "code": code, "message": str(exc)})
    return resampler


_SAY_BODY = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string", "pattern": "\\S"}, "speed": {"type": "number"}},
    "additionalProperties": False,
}
_ASK_BODY = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "pattern": "\\S"},
        "conversation": {"type": "string", "minLength": 1, "maxLength": 64},
    },
    "additionalProperties": False,
}
_ANNOUNCE_BODY = {
    "type": "object",
    "required": ["severity", "message"],
    "properties": {
        "severity": {"type": "string", "enum": ["info", "warning", "minor", "major", "critical"]},
        "message": {"type": "string"},
    },
    "additionalProperties": False,
}

ROUTES = [
    Route(
        "GET", "/v1/voice/status", status, "Voice assistant state, loaded models, problems and their fixes.",
        tag="voice", extra_responses={503: "voice not running"},
    ),
    Route(
        "GET", "/v1/voice/ws", voice_socket, "Full-duplex voice session: PCM in, events and reply audio out.",
        tag="voice", websocket=True, role="operator", extra_responses={503: "voice not running", 429: "too many sessions"},
    ),
    Route(
        "POST", "/v1/voice/say", say, "Speak text through the car's audio output.", tag="voice",
        body=_SAY_BODY, role="operator", status=202, extra_responses={503: "no audio output"},
    ),
    Route(
        "POST", "/v1/voice/ask", ask, "One dialogue turn on text: an intent, else the LLM (with history).",
        tag="voice", body=_ASK_BODY, role="operator", extra_responses={503: "voice not running"},
    ),
    Route(
        "POST", "/v1/voice/announce", announce, "Broadcast an alert: chime, then '<Severity>: <message>'.",
        tag="voice", body=_ANNOUNCE_BODY, role="operator", status=202, extra_responses={503: "no audio output"},
    ),
]  # fmt: skip
