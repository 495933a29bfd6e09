"""The audio front end: optional noise suppression and automatic gain, and a live level meter.

Both sit before wake word and VAD, on 16 kHz mono s16. Noise suppression and
AGC use WebRTC's audio processing (the ``webrtc-noise-gain`` package, extra
``voice``), which works on 10 ms frames: the cleaner buffers the remainder
of odd-sized chunks, so it adds at most 10 ms of delay. It is off by
default: in a quiet cabin it only costs CPU, and microWakeWord was trained
on unprocessed audio.

The level meter publishes ``voice.level`` about ten times a second: RMS and
peak in dBFS plus a downsampled waveform (the peak of each of ``points``
buckets), so a dashboard on ``/v1/events`` can draw a live meter without
receiving audio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from agent.errors import UnavailableError
from agent.voice.events import VoiceEvent

RATE = 16000
FRAME_BYTES = RATE // 100 * 2  # 10 ms of s16 mono
SILENCE_DBFS = -96.0


@dataclass(frozen=True, kw_only=True)
class AudioLevel(VoiceEvent):
    """Input level of one stream over the last interval; ``waveform`` is 0..1 peaks."""

    type: ClassVar[str] = "voice.level"
    rms_dbfs: float = SILENCE_DBFS
    peak_dbfs: float = SILENCE_DBFS
    waveform: tuple[float, ...] = field(default_factory=tuple)


def dbfs(value: float) -> float:
    return SILENCE_DBFS if value <= 0 else max(SILENCE_DBFS, 20 * math.log10(value / 32768))


class LevelMeter:
    """Accumulates samples and yields an AudioLevel every ``interval_ms`` of audio."""

    def __init__(self, stream: str, interval_ms: int = 100, points: int = 32) -> None:
        self.stream = stream
        self.interval_bytes = max(1, interval_ms) * RATE // 1000 * 2
        self.points = points
        self._buffer = bytearray()

    def feed(self, pcm: bytes) -> list[AudioLevel]:
        self._buffer += pcm
        levels: list[AudioLevel] = []
        while len(self._buffer) >= self.interval_bytes:
            window = bytes(self._buffer[: self.interval_bytes])
            del self._buffer[: self.interval_bytes]
            levels.append(self._measure(window))
        return levels

    def _measure(self, window: bytes) -> AudioLevel:
        import numpy as np

        samples = np.frombuffer(window, dtype="<i2").astype(np.float32)
        magnitude = np.abs(samples)
        usable = len(samples) // self.points * self.points
        waveform = magnitude[:usable].reshape(self.points, -1).max(axis=1) / 32768 if usable else magnitude
        return AudioLevel(
            source="voice",
            stream=self.stream,
            rms_dbfs=round(dbfs(float(np.sqrt(np.mean(samples * samples)))), 1),
            peak_dbfs=round(dbfs(float(magnitude.max(initial=0.0))), 1),
            waveform=tuple(round(float(v), 3) for v in waveform),
        )


class AudioCleaner:
    """WebRTC noise suppression (level 1-4) and automatic gain (target dBFS 1-31) on 10 ms frames."""

    def __init__(self, noise_suppression: int = 2, auto_gain_dbfs: int = 0) -> None:
        try:
            from webrtc_noise_gain import AudioProcessor
        except ImportError:
            raise UnavailableError(
                "noise suppression and automatic gain need webrtc-noise-gain: "
                "pip install webrtc-noise-gain (extra 'voice'), or set voice.noise_suppression = 0 "
                "and voice.auto_gain_dbfs = 0",
                code="voice_frontend_missing",
            ) from None
        self._processor = AudioProcessor(auto_gain_dbfs, noise_suppression)
        self._pending = bytearray()

    def process(self, pcm: bytes) -> bytes:
        """Cleaned audio for every whole 10 ms frame so far; the remainder waits for the next chunk."""
        self._pending += pcm
        whole = len(self._pending) // FRAME_BYTES * FRAME_BYTES
        out = bytearray()
        for start in range(0, whole, FRAME_BYTES):
            result = self._processor.Process10ms(bytes(self._pending[start : start + FRAME_BYTES]))
            out += result.audio
        del self._pending[:whole]
        return bytes(out)
