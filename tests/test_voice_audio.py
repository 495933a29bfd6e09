"""Audio in: WAV/FLAC decoding, resampling any rate to 16 kHz mono, and bad input refused clearly."""

from __future__ import annotations

import shutil
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.errors import BadRequestError
from agent.voice.audio import AudioFormat, pcm16_to_float, rms_dbfs, to_float
from agent.voice.decode import decode_bytes, decode_file, decode_wav
from agent.voice.resample import Resampler, to_pipeline


def tone(rate: int, seconds: float = 0.5, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(x: np.ndarray, width: int, encoding: str = "int", channels: int = 1) -> bytes:
    x = np.repeat(x[:, None], channels, axis=1).reshape(-1)
    if encoding == "float":
        return x.astype("<f4" if width == 4 else "<f8").tobytes()
    if width == 1:
        return np.clip(x * 128 + 128, 0, 255).astype(np.uint8).tobytes()
    if width == 2:
        return (x * 32767).astype("<i2").tobytes()
    if width == 3:
        ints = (x * 8388607).astype("<i4")
        return b"".join(int(v).to_bytes(4, "little", signed=True)[:3] for v in ints)
    return (x * 2147483647).astype("<i4").tobytes()


def wav_header(
    rate: int, width: int, channels: int, tag: int, data_len: int, extensible: bool = False
) -> bytes:
    fmt = struct.pack(
        "<HHIIHH",
        0xFFFE if extensible else tag,
        channels,
        rate,
        rate * width * channels,
        width * channels,
        width * 8,
    )
    if extensible:
        fmt += (
            struct.pack("<HHI", 22, width * 8, 0)
            + struct.pack("<H", tag)
            + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        )
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_len)
    return b"RIFF" + struct.pack("<I", len(body) + data_len) + body


def peak_hz(pcm: bytes, rate: int = 16000) -> float:
    x = pcm16_to_float(pcm)
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * rate / x.size)


@pytest.mark.parametrize(
    ("width", "encoding", "channels", "extensible"),
    [
        (1, "int", 1, False),
        (2, "int", 1, False),
        (2, "int", 2, False),
        (3, "int", 1, False),
        (4, "int", 2, True),
        (4, "float", 1, False),
        (8, "float", 1, True),
    ],
)
def test_wav_formats_decode_and_convert(width: int, encoding: str, channels: int, extensible: bool) -> None:
    rate = 44100
    data = encode(tone(rate), width, encoding, channels)
    tag = 3 if encoding == "float" else 1
    decoded = decode_wav(wav_header(rate, width, channels, tag, len(data), extensible) + data)
    assert decoded.format == AudioFormat(rate, width, channels, encoding)
    assert not decoded.truncated
    x = to_float(decoded.pcm, decoded.format)
    assert x.shape == (int(rate * 0.5), channels)
    assert np.allclose(x[:, 0], tone(rate), atol=0.02)
    pcm = to_pipeline(decoded.pcm, decoded.format)
    assert abs(len(pcm) / 2 - 8000) <= 2  # 0.5 s at 16 kHz
    assert abs(peak_hz(pcm) - 440) < 5


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000, 192000])
@pytest.mark.parametrize("method", ["soxr", "linear"])
def test_any_rate_to_16k_streaming(rate: int, method: str) -> None:
    x = tone(rate, 1.0, 1000.0)
    fmt = AudioFormat(rate, 4, 1, "float")
    r = Resampler(fmt, method)  # type: ignore[arg-type]
    raw = x.tobytes()
    out = (
        b"".join(r.process(raw[i : i + 1234]) for i in range(0, len(raw), 1234)) + r.flush()
    )  # odd chunk sizes
    assert abs(len(out) / 2 - 16000) <= 4
    assert abs(peak_hz(out) - 1000) < 3
    y = pcm16_to_float(out)[200:-200]
    # no clicks at chunk boundaries: the sample-to-sample step never exceeds the tone's own slope
    assert np.max(np.abs(np.diff(y))) < 2 * np.pi * 1000 / 16000 * 0.5 * 1.2


def test_sinc_resampler_rejects_aliases_linear_does_not() -> None:
    """A 7.5 kHz tone at 48 kHz survives; a 12 kHz tone must vanish (it would fold to 4 kHz)."""
    fmt = AudioFormat(48000, 4, 1, "float")
    alias = tone(48000, 1.0, 12000.0)
    soxr_level = rms_dbfs(to_pipeline(alias.tobytes(), fmt, "soxr"))
    linear_level = rms_dbfs(to_pipeline(alias.tobytes(), fmt, "linear"))
    assert soxr_level < -60
    assert linear_level > soxr_level + 20  # why soxr is the default


@pytest.mark.parametrize("rate", [4000, 7999, 192001, 384000])
def test_unsupported_rates_are_refused_with_the_fix(rate: int) -> None:
    with pytest.raises(BadRequestError, match="8000-192000 Hz"):
        Resampler(AudioFormat(rate, 2, 1))


def test_unsupported_sample_formats_are_refused() -> None:
    with pytest.raises(BadRequestError, match="not supported"):
        Resampler(AudioFormat(16000, 5, 1))
    with pytest.raises(BadRequestError, match="16-bit float samples are not supported"):
        AudioFormat(16000, 2, 1, "float").check()
    mulaw = wav_header(8000, 1, 1, 7, 100) + bytes(100)
    with pytest.raises(BadRequestError, match="mu-law are not supported.*sox"):
        decode_wav(mulaw)
    adpcm = wav_header(8000, 1, 1, 2, 100) + bytes(100)
    with pytest.raises(BadRequestError, match="ADPCM"):
        decode_wav(adpcm)


def test_truncated_wav_keeps_whole_frames_and_says_so() -> None:
    data = encode(tone(16000), 2, channels=2)
    full = wav_header(16000, 2, 2, 1, len(data)) + data
    cut = full[: len(full) - 1001]  # mid-frame
    decoded = decode_wav(cut)
    assert decoded.truncated
    assert len(decoded.pcm) % 4 == 0 and len(decoded.pcm) == (len(data) - 1001) // 4 * 4
    with pytest.raises(BadRequestError, match="truncated"):
        decode_wav(full[:30])  # inside the format chunk
    with pytest.raises(BadRequestError, match="no data chunk"):
        decode_wav(full[:36])  # the format chunk but no data chunk
    with pytest.raises(BadRequestError, match="no complete sample"):
        decode_wav(full[:44])


@pytest.mark.parametrize("junk", [b"", b"RIFF", b"hello world, not audio at all" * 10, bytes(range(256)) * 4])
def test_corrupt_audio_is_a_bad_request(junk: bytes) -> None:
    with pytest.raises(BadRequestError):
        decode_bytes(junk, "upload.bin")


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_flac_decodes_through_pyav_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("av")
    wav = tmp_path / "t.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(encode(tone(48000, 1.0, 700.0), 2, channels=2))
    flac = tmp_path / "t.flac"
    subprocess.run(["sox", str(wav), str(flac)], check=True, timeout=30)
    decoded = decode_file(flac)
    assert decoded.format.rate == 48000 and decoded.format.channels == 2
    assert abs(decoded.seconds - 1.0) < 0.01
    assert abs(peak_hz(to_pipeline(decoded.pcm, decoded.format)) - 700) < 3
    data = flac.read_bytes()
    broken = tmp_path / "broken.flac"
    broken.write_bytes(data[:4] + bytes(len(data) - 4))
    with pytest.raises(BadRequestError, match="cannot be decoded|no audio"):
        decode_file(broken)
    with pytest.raises(BadRequestError, match="does not exist"):
        decode_file(tmp_path / "missing.wav")


def test_silence_is_digital_silence() -> None:
    assert rms_dbfs(bytes(3200)) == float("-inf")
    assert -10 < rms_dbfs(encode(tone(16000, amp=0.5), 2)) < -8


async def test_barge_in_fades_the_reply_out_instead_of_clicking() -> None:
    """abort() sends the next 20 ms of the reply ramped down to silence, then nothing more."""
    from agent.voice.sinks import FADE_OUT_MS, CallbackSink

    sent: list[np.ndarray] = []

    async def send(pcm: bytes) -> None:
        sent.append(np.frombuffer(pcm, dtype="<i2"))
        if len(sent) == 2:  # the user speaks over the second block
            await sink.abort()

    sink = CallbackSink(send)
    await sink.start(16000)
    tone = np.full(16000, 8000, np.int16)  # 1 s at a steady level: a cut would be a step of 8000
    assert await sink.write(tone.tobytes()) is False
    fade = sent[-1]
    assert len(sent) == 3 and fade.size == 16000 * FADE_OUT_MS // 1000
    assert fade[0] > 7500 and fade[-1] == 0
    assert np.all(np.diff(fade.astype(np.int32)) <= 0)  # a ramp down, never back up
