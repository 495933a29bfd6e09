"""Audio formats, PCM conversions and the audio events of the bus.

The pipeline's inner format is fixed: 16 kHz, mono, signed 16-bit
little-endian PCM (what every model here was trained on). Everything else is
converted once at the edge by ``resample``. As in Wyoming, audio rides in an
event's ``payload`` and never inside its JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from agent.errors import BadRequestError
from agent.voice.events import VoiceEvent

if TYPE_CHECKING:
    import numpy as np

RATE = 16000
WIDTH = 2
CHANNELS = 1
#: bytes per millisecond of pipeline audio
BYTES_PER_MS = RATE * WIDTH * CHANNELS // 1000
MIN_RATE = 8000
MAX_RATE = 192000

Encoding = Literal["int", "float"]


@dataclass(frozen=True)
class AudioFormat:
    """Sample rate, bytes per sample, channels, and whether samples are integers or floats.

    Integer widths 1 (unsigned 8-bit), 2, 3 and 4 (signed) and float widths 4
    and 8 are understood; ``check()`` refuses anything else with the fix.
    """

    rate: int = RATE
    width: int = WIDTH
    channels: int = CHANNELS
    encoding: Encoding = "int"

    @property
    def frame_bytes(self) -> int:
        return self.width * self.channels

    @property
    def is_pipeline(self) -> bool:
        return self == PIPELINE_FORMAT

    def seconds(self, nbytes: int) -> float:
        return nbytes / (self.frame_bytes * self.rate)

    def check(self) -> AudioFormat:
        if not MIN_RATE <= self.rate <= MAX_RATE:
            raise BadRequestError(
                f"sample rate {self.rate} Hz is not supported; send {MIN_RATE}-{MAX_RATE} Hz "
                "(16000 Hz mono 16-bit is best)",
                code="audio_format",
            )
        if not 1 <= self.channels <= 8:
            raise BadRequestError(
                f"{self.channels} channels are not supported; send 1 to 8", code="audio_format"
            )
        ok = {"int": (1, 2, 3, 4), "float": (4, 8)}.get(self.encoding, ())
        if self.width not in ok:
            raise BadRequestError(
                f"{self.width * 8}-bit {self.encoding} samples are not supported; send 16-bit signed PCM "
                "(or 8/24/32-bit integer, 32/64-bit float)",
                code="audio_format",
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "width": self.width, "channels": self.channels, "encoding": self.encoding}


PIPELINE_FORMAT = AudioFormat(RATE, WIDTH, CHANNELS, "int")


def to_float(pcm: bytes, fmt: AudioFormat) -> np.ndarray:
    """Samples as float32 in [-1, 1], shape (frames, channels); a trailing partial frame is dropped."""
    import numpy as np

    usable = len(pcm) - len(pcm) % fmt.frame_bytes
    raw = memoryview(pcm)[:usable]
    if fmt.encoding == "float":
        data = np.frombuffer(raw, dtype="<f4" if fmt.width == 4 else "<f8").astype(np.float32)
        data = np.nan_to_num(np.clip(data, -1.0, 1.0))
    elif fmt.width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif fmt.width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif fmt.width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8  # sign lands in bit 31
        data = ints.astype(np.float32) / 2147483648.0
    else:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    return data.reshape(-1, fmt.channels)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    import numpy as np

    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    import numpy as np

    usable = len(pcm) - len(pcm) % 2
    return np.frombuffer(memoryview(pcm)[:usable], dtype="<i2").astype(np.float32) / 32768.0


def rms_dbfs(pcm: bytes) -> float:
    """Loudness of 16-bit PCM in dBFS (-inf for digital silence)."""
    import math

    import numpy as np

    x = pcm16_to_float(pcm)
    if not x.size:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return 20 * math.log10(rms) if rms > 0 else float("-inf")


def wav_bytes(pcm: bytes, rate: int = RATE, width: int = WIDTH, channels: int = CHANNELS) -> bytes:
    """A complete WAV file (integer PCM) around ``pcm``."""
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


# -- events --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AudioFormatEvent(VoiceEvent):
    """An event that carries its stream's PCM format (as Wyoming's AudioFormat); no ``type`` of its own."""

    rate: int = RATE
    width: int = WIDTH
    channels: int = CHANNELS


@dataclass(frozen=True, kw_only=True)
class AudioStart(AudioFormatEvent):
    """A stream of audio begins (its format; PCM follows in AudioChunk payloads)."""

    type: ClassVar[str] = "voice.audio.start"


@dataclass(frozen=True, kw_only=True)
class AudioChunk(AudioFormatEvent):
    """PCM in ``payload``; ``timestamp_ms`` is the audio time of its first sample in the stream."""

    type: ClassVar[str] = "voice.audio.chunk"
    timestamp_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class AudioStop(VoiceEvent):
    type: ClassVar[str] = "voice.audio.stop"
    timestamp_ms: float = 0.0
