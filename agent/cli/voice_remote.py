"""``ask`` and ``chat`` through the running daemon, whose models are already loaded.

Loading Whisper, piper and the LLM into a short-lived CLI process costs
seconds per question; the daemon has them warm. These helpers return None
when no daemon answers (or it runs without voice), and the command then
loads the models itself, saying so on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from agent.cli.apiclient import DaemonClient, DaemonUnreachable
from agent.config import Settings
from agent.core.cliutil import api_error
from agent.errors import EdgeAgentError

#: error codes that mean "this daemon cannot do voice": fall back to local models
NO_VOICE = {"voice_disabled", "voice_unavailable", "llm_unavailable"}


def daemon_voice(settings: Settings, token: str | None, timeout: float = 120.0) -> DaemonClient | None:
    """A client for a running daemon that serves the voice assistant, else None (with the reason)."""
    client = DaemonClient(settings, token, timeout=2.0)
    try:
        status, body = client.request("GET", "/v1/voice/status")
    except DaemonUnreachable:
        note("no daemon answers; loading the voice models in this process (slower)")
        return None
    if status == 401:
        raise EdgeAgentError(
            "the daemon needs a token: pass --token or set EDGE_AGENT_TOKEN "
            "(make one with `edge-agent tokens create NAME --role operator`)",
            code="unauthorized",
        )
    if status != 200 or not body.get("available", body.get("running", True)):
        why = (body.get("error") or {}).get("message") if isinstance(body, dict) else ""
        note(f"the daemon runs without voice ({why or 'HTTP ' + str(status)}); loading the models here")
        return None
    note(f"using the running daemon at {client.base_url}")
    client.timeout = timeout
    return client


def note(text: str) -> None:
    print(f"edge-agent: {text}", file=sys.stderr)


def _raise_for(status: int, data: Any) -> None:
    if status >= 400:
        hint = " (pass --token with an operator token, or --local to load the models here)"
        raise api_error(status, data, hint=hint, hint_for=(401, 403))


def ask_remote(client: DaemonClient, text: str, conversation: str = "cli") -> dict[str, Any]:
    status, data = client.request("POST", "/v1/voice/ask", {"text": text, "conversation": conversation})
    _raise_for(status, data)
    return data


def transcribe_remote(client: DaemonClient, path: Path) -> str:
    """The file's text from the daemon's OpenAI-style transcription route (multipart upload)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'.encode(),
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    status, raw = client.request_bytes(
        "POST", "/v1/audio/transcriptions", b"".join(parts), f"multipart/form-data; boundary={boundary}"
    )
    data = json.loads(raw or b"{}") if raw.strip().startswith(b"{") else {}
    _raise_for(status, data)
    return str(data.get("text", "")).strip()


def speak_remote(client: DaemonClient, text: str, out: Path) -> None:
    """The daemon's voice into a WAV file (24 kHz, as OpenAI's speech route gives it)."""
    status, raw = client.request_bytes(
        "POST",
        "/v1/audio/speech",
        json.dumps({"model": "tts-1", "input": text, "voice": "default", "response_format": "wav"}).encode(),
        "application/json",
    )
    if status >= 400:
        _raise_for(status, json.loads(raw or b"{}") if raw.strip().startswith(b"{") else {})
    out.write_bytes(raw)


def chat_remote(client: DaemonClient, read_line: Any) -> None:
    """A chat session with the daemon's assistant; it keeps the history under one conversation id."""
    conversation = pid_conversation()
    while True:
        if sys.stdin.isatty():
            print("> ", end="", flush=True, file=sys.stderr)
        line = read_line()
        if not line.strip():
            return
        print(ask_remote(client, line.strip(), conversation)["answer"], flush=True)


def pid_conversation() -> str:
    return f"cli-{os.getpid()}"
