"""Text to speech: piper through the model manager, espeak-ng as the fallback, sentence by sentence.

Piper's voice is an ONNX model, so it runs on the manager's onnxruntime
session like any other model; piper-tts contributes only its phonemizer
(espeak-ng phonemes → ids). espeak-ng (the program) is the fallback when no
piper voice is installed, and the voice for ``espeak:<name>``; it is robotic
but tiny and speaks dozens of languages.

Streaming: ``SentenceSplitter`` cuts LLM tokens into sentences as they come,
and each sentence is synthesised and played while the next is generated, so
the first audio leaves after the first sentence, not the whole answer.

Broadcast mode (``alert_text`` + ``chime``): structured alerts are spoken as
"Critical: pump 3 pressure high" after a two-tone chime, slower than
conversation, and they pre-empt whatever is playing.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.errors import BadRequestError, UnavailableError
from agent.voice import metrics
from agent.voice.decode import decode_wav

if TYPE_CHECKING:
    from models.manager import ModelManager

MAX_TEXT_CHARS = 4000
_SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+|\n+")
_SOFT_BREAK = re.compile(r"(?<=[,])\s+")
#: a clause longer than this is spoken without waiting for its full stop
SOFT_BREAK_CHARS = 80
#: the first chunk of a streamed reply is spoken after this many words (0: whole sentences)
FIRST_CHUNK_WORDS = 6
#: sentences up to this long are phonemized on the loop (espeak-ng: ~0.3 ms for 30 characters)
INLINE_PHONEMIZE_CHARS = 200
SEVERITIES = ("info", "warning", "minor", "major", "critical")


@dataclass(frozen=True)
class SpeechAudio:
    """One synthesised sentence: 16-bit mono PCM at ``rate``; when its synthesis began and ended (perf_counter)."""

    rate: int
    pcm: bytes
    text: str
    started_at: float = 0.0
    made_at: float = 0.0

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (2 * self.rate)


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


class SentenceSplitter:
    """Tokens in, complete sentences out; ``flush()`` returns the rest.

    The first chunk is cut early, at a comma or else after ``first_words``
    words: what the user waits for is the first audio, and a small model
    writes long first sentences at ~30 tokens/s. Later chunks are whole
    sentences (they are synthesised while the first one plays).
    """

    def __init__(self, first_words: int = FIRST_CHUNK_WORDS) -> None:
        self._buf = ""
        self._first_words = first_words
        self._emitted = False

    def feed(self, piece: str) -> list[str]:
        done = self._feed(piece)
        if done:
            self._emitted = True
        elif not self._emitted and self._first_words:
            early = self._early()
            if early:
                self._emitted = True
                done = [early]
        return done

    def _early(self) -> str:
        words = self._buf.split(" ")
        if len(words) <= self._first_words:  # the last "word" may still be growing
            return ""
        comma = re.search(r"^(.{12,}?[,;:])\s", self._buf)
        cut = comma.group(1) if comma else " ".join(words[: self._first_words])
        self._buf = self._buf[len(cut) :].lstrip()
        return cut.strip()

    def _feed(self, piece: str) -> list[str]:
        self._buf += piece
        parts = _SENTENCE_END.split(self._buf)
        done = [p.strip() for p in parts[:-1] if p.strip()]
        self._buf = parts[-1]
        if not done and len(self._buf) > SOFT_BREAK_CHARS:
            soft = _SOFT_BREAK.split(self._buf)
            if len(soft) > 1:
                done = [p.strip() for p in soft[:-1] if p.strip()]
                self._buf = soft[-1]
        return done

    def flush(self) -> list[str]:
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []


def alert_text(severity: str, message: str) -> str:
    """The spoken form of a structured alert: "Critical: pump 3 pressure high"."""
    sev = severity.strip().lower()
    if sev not in SEVERITIES:
        raise BadRequestError(f"alert severity {severity!r} is not one of {list(SEVERITIES)}")
    message = message.strip().rstrip(".")
    if not message:
        raise BadRequestError("the alert has no message")
    return f"{sev.capitalize()}: {message}."


def chime(severity: str, rate: int = 22050) -> bytes:
    """A short attention tone before an alert: two rising tones, three for major/critical."""
    import numpy as np

    tones = [660.0, 880.0] + ([1100.0] if severity in ("major", "critical") else [])
    out = []
    for f in tones:
        t = np.arange(int(0.14 * rate)) / rate
        env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)
        out.append(0.4 * np.sin(2 * np.pi * f * t) * env)
        out.append(np.zeros(int(0.04 * rate)))
    return (np.concatenate(out) * 32767).astype("<i2").tobytes()


def _check_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise BadRequestError("there is no text to speak")
    if len(text) > MAX_TEXT_CHARS:
        raise BadRequestError(f"the text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}: split it")
    return text


class Tts(ABC):
    name: str = "tts"
    voice: str = ""
    rate: int = 22050

    @abstractmethod
    async def synthesize_sentence(self, sentence: str, *, speed: float | None = None) -> SpeechAudio: ...

    async def synthesize(self, text: str, *, speed: float | None = None) -> AsyncIterator[SpeechAudio]:
        """Sentence by sentence, so playback can start after the first."""
        for sentence in split_sentences(_check_text(text)):
            yield await self.synthesize_sentence(sentence, speed=speed)

    async def load(self) -> None:
        """Load the voice now (so the first answer does not pay for it)."""
        return None


class PiperTts(Tts):
    """A piper voice (ONNX) on the manager; ``speed`` 1.2 talks 20% faster."""

    name = "piper"

    def __init__(self, manager: ModelManager, model: str = "piper-joe-medium", speed: float = 1.0) -> None:
        self.manager = manager
        self.model = model
        self.voice = model
        self.speed = speed
        self._voice: Any = None
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        await self._phonemizer()
        await self.manager.load(self.model)

    async def _phonemizer(self) -> Any:
        async with self._lock:
            if self._voice is None:
                self._voice = await asyncio.get_running_loop().run_in_executor(None, self._make_phonemizer)
        return self._voice

    def _make_phonemizer(self) -> Any:
        try:
            from piper.config import PiperConfig
            from piper.voice import PiperVoice
        except ImportError:
            raise UnavailableError(
                "piper-tts is not installed: pip install 'edge-agent[voice]' (or use tts_voice = espeak:en-us)",
                code="runtime_missing",
            ) from None
        installed = self.manager.store.get(self.model)
        config_name = installed.manifest.extra.get("config") or installed.manifest.files[0].path + ".json"
        try:
            config = json.loads((installed.path / config_name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UnavailableError(f"the piper voice's config {config_name} is unreadable ({exc})") from None
        voice = PiperVoice(session=None, config=PiperConfig.from_dict(config))  # phonemizer only
        self.rate = voice.config.sample_rate
        return voice

    async def synthesize_sentence(self, sentence: str, *, speed: float | None = None) -> SpeechAudio:
        import numpy as np

        from models.scheduling import Priority

        voice = await self._phonemizer()
        t0 = time.perf_counter()
        if len(sentence) <= INLINE_PHONEMIZE_CHARS:  # well under a millisecond: less than a hand-off
            sentences = voice.phonemize(sentence)
        else:
            sentences = await asyncio.get_running_loop().run_in_executor(None, voice.phonemize, sentence)
        cfg = voice.config
        length = cfg.length_scale / max(0.25, speed or self.speed)
        pieces = []
        for phonemes in sentences:
            if not phonemes:
                continue
            ids = voice.phonemes_to_ids(phonemes)
            feed = {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array([cfg.noise_scale, length, cfg.noise_w_scale], dtype=np.float32),
            }
            if cfg.num_speakers > 1:
                feed["sid"] = np.array([cfg.default_speaker_id], dtype=np.int64)
            out = await self.manager.infer(self.model, feed, Priority.INTERACTIVE)
            audio = np.asarray(next(iter(out.values())), dtype=np.float32).reshape(-1)
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            if peak > 1e-6:
                audio = audio * (0.9 / peak)
            pieces.append(audio)
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        result = SpeechAudio(cfg.sample_rate, pcm, sentence, t0, time.perf_counter())
        if result.seconds > 0:
            metrics.STAGE_RTF.labels("tts").observe((time.perf_counter() - t0) / result.seconds)
        return result


class EspeakTts(Tts):
    """espeak-ng, the program: ``voice`` as espeak names it (en-us, de, ko...)."""

    name = "espeak"

    def __init__(self, voice: str = "en-us", speed: float = 1.0, pitch: int = 50) -> None:
        self.voice = voice
        self.speed = speed
        self.pitch = pitch
        self.rate = 22050

    @staticmethod
    def available() -> bool:
        return shutil.which("espeak-ng") is not None

    async def synthesize_sentence(self, sentence: str, *, speed: float | None = None) -> SpeechAudio:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise UnavailableError(
                "espeak-ng is not installed: apt-get install espeak-ng", code="runtime_missing"
            )
        wpm = max(80, min(450, round(175 * (speed or self.speed))))
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            exe, "--stdout", "-v", self.voice, "-s", str(wpm), "-p", str(self.pitch), "--stdin",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(sentence.encode("utf-8")), timeout=30)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if proc.returncode != 0 or not out:
            raise UnavailableError(
                f"espeak-ng failed ({proc.returncode}): {err.decode(errors='replace').strip()[:200]}; "
                f"is the voice {self.voice!r} installed? (espeak-ng --voices)"
            )
        audio = decode_wav(out)
        self.rate = audio.format.rate
        result = SpeechAudio(audio.format.rate, audio.pcm, sentence, t0, time.perf_counter())
        if result.seconds > 0:
            metrics.STAGE_RTF.labels("tts").observe((time.perf_counter() - t0) / result.seconds)
        return result


def make_tts(manager: ModelManager, voice: str, speed: float = 1.0, pitch: int = 50) -> Tts:
    """``espeak:<voice>`` → espeak-ng; otherwise a piper model name."""
    if voice.startswith("espeak:"):
        return EspeakTts(voice.split(":", 1)[1] or "en-us", speed, pitch)
    return PiperTts(manager, voice or "piper-joe-medium", speed)
