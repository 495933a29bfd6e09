"""Read audio files and uploads: WAV by our own parser, FLAC/Ogg/MP3 through PyAV.

Why our own WAV parser: the standard ``wave`` module refuses float WAVs and
WAVE_FORMAT_EXTENSIBLE, which ordinary recorders write. Every failure is a
BadRequestError that says what was wrong and how to convert the file
(``sox in.xxx -r 16000 -c 1 -b 16 out.wav``), never a struct or codec trace.

A file cut short (a recording killed mid-write) keeps the whole frames it
has and is flagged ``truncated``: the audio is still useful, and the caller
decides whether to warn or refuse.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from agent.errors import BadRequestError
from agent.voice.audio import AudioFormat

_CONVERT = "convert it with: sox INPUT -r 16000 -c 1 -b 16 OUTPUT.wav"
_FORMAT_NAMES = {
    0x0002: "MS ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0055: "MP3",
}
_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
#: the largest upload decoded in memory (10 minutes of 48 kHz stereo float is ~230 MB)
MAX_DECODED_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class DecodedAudio:
    format: AudioFormat
    pcm: bytes
    truncated: bool = False

    @property
    def seconds(self) -> float:
        return self.format.seconds(len(self.pcm))


def _bad(message: str) -> BadRequestError:
    return BadRequestError(message, code="audio_invalid")


def decode_wav(data: bytes) -> DecodedAudio:
    """Parse a RIFF/WAVE file: integer PCM (8-32 bit) or IEEE float, plain or extensible."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise _bad(f"not a WAV file (no RIFF/WAVE header); {_CONVERT}")
    pos = 12
    fmt: AudioFormat | None = None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            fmt = _parse_fmt(data[body : body + size])
        elif cid == b"data":
            if fmt is None:
                raise _bad("the WAV file has its data before its format chunk; " + _CONVERT)
            if size == 0xFFFFFFFF or size == 0:  # streamed WAV: size unknown, read to the end
                size = len(data) - body
            available = data[body : body + size]
            truncated = len(available) < size
            usable = len(available) - len(available) % fmt.frame_bytes
            if not usable and size:
                raise _bad("the WAV file is truncated: its data chunk holds no complete sample")
            return DecodedAudio(fmt, bytes(available[:usable]), truncated or usable < len(available))
        pos = body + size + (size & 1)
    if fmt is None:
        raise _bad("the WAV file is truncated or corrupt: no format chunk")
    raise _bad("the WAV file is truncated or corrupt: no data chunk")


def _parse_fmt(chunk: bytes) -> AudioFormat:
    if len(chunk) < 16:
        raise _bad("the WAV format chunk is truncated")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", chunk)
    if tag == _EXTENSIBLE and len(chunk) >= 26:
        tag = struct.unpack_from("<H", chunk, 24)[0]  # first two bytes of the SubFormat GUID
    if tag not in (_PCM, _FLOAT):
        name = _FORMAT_NAMES.get(tag, f"format tag 0x{tag:04x}")
        raise BadRequestError(
            f"WAV files in {name} are not supported (only integer PCM and float); {_CONVERT}",
            code="audio_format",
        )
    if not channels or not bits or bits % 8:
        raise _bad(f"the WAV header is corrupt ({channels} channels, {bits} bits per sample)")
    width = bits // 8
    if block_align and block_align != width * channels:
        width = block_align // channels  # e.g. 20-bit samples stored in 3 bytes
    return AudioFormat(rate, width, channels, "float" if tag == _FLOAT else "int").check()


def decode_bytes(data: bytes, filename: str = "") -> DecodedAudio:
    """WAV directly; anything else (FLAC, Ogg, MP3, M4A) through PyAV, to 16-bit PCM."""
    if not data:
        raise _bad("the audio is empty")
    if data[:4] in (b"RIFF", b"RF64"):
        return decode_wav(data)
    return _decode_av(data, filename)


def decode_file(path: str | Path) -> DecodedAudio:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_DECODED_BYTES:
            raise _bad(f"{path} is {size >> 20} MiB; split it (the limit is {MAX_DECODED_BYTES >> 20} MiB)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadRequestError(f"audio file {path} does not exist", code="not_found") from None
    except IsADirectoryError:
        raise _bad(f"{path} is a directory, not an audio file") from None
    return decode_bytes(data, path.name)


def _decode_av(data: bytes, filename: str) -> DecodedAudio:
    import io

    try:
        import av
    except ImportError:
        raise BadRequestError(
            f"{filename or 'the audio'} is not WAV and PyAV is not installed to decode it: "
            f"pip install 'edge-agent[voice]', or {_CONVERT}",
            code="audio_format",
        ) from None
    chunks: list[bytes] = []
    total = 0
    rate = channels = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise _bad(f"{filename or 'the file'} holds no audio stream")
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                if not rate:
                    rate = frame.sample_rate
                    channels = len(frame.layout.channels)
                    resampler = av.AudioResampler(format="s16", layout=frame.layout.name, rate=rate)
                for out in resampler.resample(frame):
                    buf = bytes(out.planes[0])[: out.samples * 2 * channels]
                    total += len(buf)
                    if total > MAX_DECODED_BYTES:
                        raise _bad("the decoded audio is too long; split the file")
                    chunks.append(buf)
    except BadRequestError:
        raise
    except Exception as exc:  # av.error.* and friends: a corrupt or unknown container
        if chunks:  # a damaged tail: keep what decoded
            return DecodedAudio(AudioFormat(rate, 2, channels).check(), b"".join(chunks), True)
        raise _bad(
            f"{filename or 'the audio'} cannot be decoded ({type(exc).__name__}: {exc}); {_CONVERT}"
        ) from None
    if not rate:
        raise _bad(f"{filename or 'the audio'} decodes to no audio")
    return DecodedAudio(AudioFormat(rate, 2, channels).check(), b"".join(chunks))
