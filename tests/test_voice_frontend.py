"""The audio front end: level meter events and WebRTC noise suppression / gain, on real audio."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.voice.frontend import FRAME_BYTES, AudioCleaner, LevelMeter


def tone(amplitude: float, ms: int, freq: float = 440.0) -> bytes:
    t = np.arange(16 * ms) / 16000
    return (np.sin(2 * math.pi * freq * t) * amplitude * 32767).astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(x * x)))


def test_level_meter_measures_a_known_tone() -> None:
    meter = LevelMeter("mic", interval_ms=100, points=32)
    levels = meter.feed(tone(0.5, 250))  # 2.5 intervals: two levels now, the rest waits
    assert len(levels) == 2
    level = levels[0]
    # a sine of amplitude 0.5 is -6 dBFS at its peak and -9 dBFS RMS
    assert level.peak_dbfs == pytest.approx(-6.0, abs=0.2)
    assert level.rms_dbfs == pytest.approx(-9.0, abs=0.2)
    assert len(level.waveform) == 32 and max(level.waveform) == pytest.approx(0.5, abs=0.01)
    assert level.to_dict()["type"] == "voice.level"
    assert len(meter.feed(tone(0.5, 50))) == 1  # the buffered half interval completes one more


def test_level_meter_reports_silence_floor() -> None:
    (level,) = LevelMeter("mic", interval_ms=100).feed(bytes(3200))
    assert level.rms_dbfs == -96.0 and level.peak_dbfs == -96.0 and max(level.waveform) == 0


def test_noise_suppression_lowers_steady_noise_and_keeps_frame_alignment() -> None:
    pytest.importorskip("webrtc_noise_gain")
    rng = np.random.default_rng(1)
    noise = (rng.normal(0, 0.05, 16000 * 3) * 32767).astype("<i2").tobytes()
    cleaner = AudioCleaner(noise_suppression=4, auto_gain_dbfs=0)
    out = bytearray()
    for start in range(0, len(noise), 1234):  # odd chunk sizes: the cleaner re-frames to 10 ms
        out += cleaner.process(noise[start : start + 1234])
    assert len(out) % FRAME_BYTES == 0 and len(noise) - len(out) < FRAME_BYTES
    tail = bytes(out[len(out) // 2 :])  # after the suppressor has learned the noise
    assert rms(tail) < rms(noise) / 3


def test_missing_engine_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from agent.errors import UnavailableError

    monkeypatch.setitem(sys.modules, "webrtc_noise_gain", None)
    with pytest.raises(UnavailableError, match="pip install webrtc-noise-gain"):
        AudioCleaner(2, 0)
