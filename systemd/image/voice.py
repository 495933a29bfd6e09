"""A WAV transcribed by the daemon under the hardened unit: the voice stack as install.sh put it on the tree.

The WAV is made on the host by the tests' own speaker (``tests/speech.py``: piper
with the packaged joe voice, or espeak-ng), never by the code under test. Inside
the tree the daemon's voice service runs on the models the installer brought
as packages (Whisper tiny.en in CTranslate2 format, Silero VAD, the wake words):
no model is downloaded at run time. The upload goes to the daemon's
OpenAI-style ``/v1/audio/transcriptions``; the words must come back.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
import wave
from typing import Any

from helpers import CHECK_DIR
from nspawn import ImageError

SENTENCE = "please turn on the light in the kitchen and open the window"


def write_wav(checks: Any) -> str:
    """The spoken sentence as a 16 kHz mono WAV in the tree (host side, tests/speech.py)."""
    from tests.speech import RATE, silence, speak

    try:
        pcm = speak(SENTENCE, engine="piper")
        engine = "piper (joe)"
    except ImportError:
        pcm = speak(SENTENCE, engine="espeak", voice="en-us")
        engine = "espeak-ng"
    path = checks.tree / CHECK_DIR.lstrip("/") / "kitchen.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(silence(300) + pcm + silence(300))
    return engine


def transcribe(checks: Any) -> str:
    engine = write_wav(checks)
    audio = (checks.tree / CHECK_DIR.lstrip("/") / "kitchen.wav").read_bytes()
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="response_format"\r\n\r\nverbose_json\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="kitchen.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + audio
        + f"\r\n--{boundary}--\r\n".encode()
    )
    url = f"http://127.0.0.1:{checks.port}/v1/audio/transcriptions"
    deadline = time.monotonic() + (600 if checks.emulated else 120)
    while True:  # the voice service loads its models after READY: 503 until the recognizer is in
        req = urllib.request.Request(url, data=body, method="POST")
        req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:
                out = json.loads(resp.read())
            break
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:400]
            if exc.code != 503 or time.monotonic() > deadline:
                raise ImageError(f"{url}: {exc.code} {detail}") from None
        time.sleep(3)
    took = time.monotonic() - t0
    heard = re.findall(r"[a-z']+", str(out.get("text", "")).lower())
    words = SENTENCE.split()
    missed = [w for w in words if w not in heard]
    checks.figures["transcribe"] = {
        "seconds": round(took, 2),
        "audio_s": out.get("duration"),
        "text": out.get("text"),
    }
    if len(missed) > len(words) // 4:
        raise ImageError(f"heard {out.get('text')!r}; missed {missed}")
    return (
        f"{engine} WAV ({out.get('duration')} s) -> {out.get('text')!r} in {took:.1f} s "
        f"(daemon, {out.get('language')}); {len(words) - len(missed)}/{len(words)} words"
    )
