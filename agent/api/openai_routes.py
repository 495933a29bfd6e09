"""OpenAI-compatible endpoints over the local models: chat, transcription, speech.

So that existing tools (the ``openai`` client, chat front-ends, scripts)
talk to the box unchanged: ``POST /v1/chat/completions`` (``stream: true``
answers as server-sent events, one token per event, ``data: [DONE]`` last),
``POST /v1/audio/transcriptions`` (multipart upload: WAV, FLAC, Ogg, MP3;
``response_format`` json, text or verbose_json) and ``POST /v1/audio/speech``
(``response_format`` wav or pcm: 24 kHz 16-bit mono as OpenAI specifies).

Fields this box cannot honour are named in the error (``n`` > 1, tools,
mp3 output); fields that only tune a hosted service (``user``,
``presence_penalty``...) are accepted and ignored. The ``model`` field is
echoed; the box answers with the model it runs.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from agent.api.routes import Route
from agent.api.voice_routes import voice_service
from agent.core.jsonbody import read_json
from agent.errors import BadRequestError, UnavailableError

_IGNORED = {
    "user",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "top_p",
    "seed",
    "stop",
    "store",
    "metadata",
}
_CHAT_KEYS = {
    "model",
    "messages",
    "stream",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "n",
    "stream_options",
    "tools",
    "tool_choice",
} | _IGNORED
_ROLES = {"system", "user", "assistant"}
MAX_TOKENS_LIMIT = 1024
#: the transcription form's text fields (OpenAI's); only prompt and response_format change anything here
_FORM_FIELDS = frozenset({"model", "language", "prompt", "response_format", "temperature"})


def _llm(request: web.Request) -> Any:
    service = voice_service(request)
    engines = service.require()
    llm = engines.dialogue.llm
    if llm is None:
        why = service.problems.get("llm", "voice.llm is off")
        raise UnavailableError(f"no LLM runs on this box: {why}", code="llm_unavailable")
    return llm


def _messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise BadRequestError("messages must be a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise BadRequestError(f"messages[{i}]: role must be one of {sorted(_ROLES)}")
        content = m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(
                p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        if not isinstance(content, str):
            raise BadRequestError(f"messages[{i}]: content must be a string")
        out.append({"role": m["role"], "content": content})
    return out


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    unknown = sorted(set(body) - _CHAT_KEYS)
    if unknown:
        raise BadRequestError(f"unsupported field(s) {unknown}")
    if body.get("n", 1) != 1:
        raise BadRequestError("n must be 1: this box generates one answer at a time")
    if body.get("tools"):
        raise BadRequestError(
            "tools are not supported here; the voice assistant maps its own tool calls to vehicle intents"
        )
    llm = _llm(request)
    messages = _messages(body.get("messages"))
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or llm.max_tokens
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise BadRequestError(f"max_tokens must be an integer between 1 and {MAX_TOKENS_LIMIT}")
    temperature = body.get("temperature", llm.temperature)
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise BadRequestError("temperature must be a number between 0 and 2")
    model = str(body.get("model") or llm.model)
    cid = "chatcmpl-" + uuid.uuid4().hex[:24]
    created = int(time.time())
    from agent.voice.llm import LlmTurn

    turn = LlmTurn()
    gen = llm.generate(messages, max_tokens=max_tokens, temperature=float(temperature), turn=turn)
    if not body.get("stream"):
        text = "".join([piece async for piece in gen])
        return web.json_response(
            {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": _finish(turn)}],
                "usage": {"prompt_tokens": 0, "completion_tokens": turn.tokens, "total_tokens": turn.tokens},
            }
        )  # fmt: skip
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }  # fmt: skip
        return f"data: {json.dumps(data)}\n\n".encode()

    try:
        await resp.write(chunk({"role": "assistant", "content": ""}))
        async for piece in gen:
            await resp.write(chunk({"content": piece}))
        await resp.write(chunk({}, _finish(turn)))
        await resp.write(b"data: [DONE]\n\n")
    except ConnectionResetError:  # the client left: generation stops at its next token
        await gen.aclose()
        return resp
    await resp.write_eof()
    return resp


def _finish(turn: Any) -> str:
    return "length" if turn.finish_reason == "length" else "stop"


async def transcriptions(request: web.Request) -> web.Response:
    from agent.voice.decode import decode_bytes
    from agent.voice.resample import to_pipeline

    if not request.content_type.startswith("multipart/"):
        raise BadRequestError("send multipart/form-data with a 'file' field (as the OpenAI API does)")
    form, audio, filename = await _read_form(request)
    service = voice_service(request)
    engines = service.require_part("asr")
    if not audio:
        raise BadRequestError("the 'file' field is missing or empty")
    fmt = form.get("response_format", "json")
    if fmt not in ("json", "text", "verbose_json"):
        raise BadRequestError(f"response_format {fmt!r} is not supported: json, text or verbose_json")
    decoded = decode_bytes(audio, filename)
    pcm = to_pipeline(decoded.pcm, decoded.format)
    phrases = [p.strip() for p in form.get("prompt", "").split(",") if p.strip()] or list(
        service.settings.phrases
    )
    t0 = time.perf_counter()
    text = engines.postprocess(await engines.asr.transcribe(pcm, phrases))
    if fmt == "text":
        return web.Response(text=text + "\n", content_type="text/plain")
    out: dict[str, Any] = {"text": text}
    if fmt == "verbose_json":
        out.update(
            task="transcribe", language=engines.asr.language, duration=round(decoded.seconds, 3),
            processing_s=round(time.perf_counter() - t0, 3), truncated=decoded.truncated,
        )  # fmt: skip
    return web.json_response(out)


async def _read_form(request: web.Request) -> tuple[dict[str, str], bytes | None, str]:
    """The upload's text fields, its 'file' bytes and file name; a malformed body is a 400, not a 500."""
    form: dict[str, str] = {}
    audio: bytes | None = None
    filename = ""
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise BadRequestError("nested multipart bodies are not supported: send flat form fields")
            if part.name == "file":
                filename = part.filename or ""
                audio = bytes(await part.read())
            elif part.name in _FORM_FIELDS:
                form[part.name] = await part.text()
            else:
                raise BadRequestError(
                    f"unknown form field {str(part.name)[:40]!r}; send 'file' and any of {sorted(_FORM_FIELDS)}"
                )
    except web.HTTPException:
        raise  # 413 and friends keep their status
    except (ValueError, AssertionError, LookupError, HttpProcessingError) as exc:
        # aiohttp's multipart reader says "malformed" with these (missing boundary, bad headers, bad charset)
        raise BadRequestError(
            f"the multipart/form-data body is malformed ({exc or type(exc).__name__}); "
            "send a 'file' field and optional text fields, as the OpenAI API does"
        ) from None
    return form, audio, filename


async def speech(request: web.Request) -> web.Response:
    from agent.voice.audio import wav_bytes
    from agent.voice.tts import make_tts

    body = await read_json(request)  # a bad body is a 4xx whether or not voice runs
    if not isinstance(body.get("input"), str):
        raise BadRequestError('send {"model": ..., "input": "text", "voice": ...}')
    service = voice_service(request)
    engines = service.require()
    fmt = body.get("response_format", "wav")
    if fmt not in ("wav", "pcm"):
        raise BadRequestError(f"response_format {fmt!r} is not supported here: use wav or pcm")
    speed = body.get("speed", 1.0)
    if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
        raise BadRequestError("speed must be between 0.25 and 4.0")
    voice = str(body.get("voice") or "")
    tts = engines.tts
    if voice.startswith("espeak:") or voice.startswith("piper-"):
        tts = make_tts(engines.manager, voice, float(speed))
    chunks = []
    rate = 22050
    async for audio in tts.synthesize(body["input"], speed=float(speed)):
        rate = audio.rate
        chunks.append(audio.pcm)
    pcm = b"".join(chunks)
    if fmt == "pcm":  # OpenAI's pcm is 24 kHz, 16-bit, mono
        pcm = _to_24k(pcm, rate)
        return web.Response(body=pcm, content_type="audio/pcm")
    return web.Response(body=wav_bytes(pcm, rate), content_type="audio/wav")


def _to_24k(pcm: bytes, rate: int) -> bytes:
    import numpy as np

    from agent.voice.audio import float_to_pcm16, pcm16_to_float

    x = pcm16_to_float(pcm)
    try:
        import soxr

        y = soxr.resample(x, rate, 24000)
    except ImportError:
        y = np.interp(np.arange(0, x.size, rate / 24000), np.arange(x.size), x)
    return float_to_pcm16(np.asarray(y, dtype=np.float32))


_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": sorted(_ROLES)},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
    },
}
_CHAT_BODY = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
        "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_LIMIT},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_LIMIT},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "n": {"type": "integer", "enum": [1]},
        "tools": {"type": "array", "maxItems": 0, "description": "not supported: tool calls map to intents"},
        **{key: {} for key in sorted(_IGNORED | {"stream_options", "tool_choice"})},
    },
    "additionalProperties": False,
}
_TRANSCRIBE_BODY = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "WAV, FLAC, Ogg or MP3"},
        "model": {"type": "string"},
        "response_format": {"type": "string", "enum": ["json", "text", "verbose_json"]},
        "prompt": {"type": "string", "description": "comma-separated phrases to favour"},
        "language": {"type": "string"},
        "temperature": {"type": "string"},
    },
    "additionalProperties": False,
}
_SPEECH_BODY = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "model": {"type": "string"},
        "input": {"type": "string"},
        "voice": {"type": "string"},
        "response_format": {"type": "string", "enum": ["wav", "pcm"]},
        "speed": {"type": "number"},
    },
}

ROUTES = [
    Route(
        "POST", "/v1/chat/completions", chat_completions, "OpenAI-compatible chat completion (SSE when stream=true).",
        tag="openai", body=_CHAT_BODY, extra_responses={503: "no LLM"},
    ),
    Route(
        "POST", "/v1/audio/transcriptions", transcriptions, "OpenAI-compatible speech to text (multipart upload).",
        tag="openai", body=_TRANSCRIBE_BODY, body_type="multipart/form-data", extra_responses={503: "no recognizer"},
    ),
    Route(
        "POST", "/v1/audio/speech", speech, "OpenAI-compatible text to speech (wav or 24 kHz pcm).",
        tag="openai", body=_SPEECH_BODY, content_type="audio/wav", extra_responses={503: "no voice"},
    ),
]  # fmt: skip
