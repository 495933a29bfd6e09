"""Where audio comes from: a microphone (pyaudio), a WAV/FLAC file, or a network stream.

A source yields raw bytes in its own format (``source.format``); the pipeline
converts them with ``resample.Resampler``. A stream source (WebSocket,
Wyoming) is a bounded queue fed by the connection's handler; when the
consumer falls behind, ``put`` waits (back-pressure to the client) rather
than dropping speech. The microphone cannot wait, so its callback drops the
oldest block when the queue is full and counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from agent.errors import BadRequestError, UnavailableError
from agent.voice import metrics
from agent.voice.audio import AudioFormat
from agent.voice.decode import decode_file


class AudioSource(ABC):
    format: AudioFormat
    name: str = "source"

    @abstractmethod
    def chunks(self) -> AsyncIterator[bytes]:
        """Raw audio in ``self.format`` until the source ends."""

    async def close(self) -> None:
        """Release the device/connection."""
        return None


class FileSource(AudioSource):
    """A WAV/FLAC/Ogg file, in ``chunk_ms`` blocks; ``realtime`` plays it at its own speed."""

    def __init__(self, path: str | Path, *, chunk_ms: int = 20, realtime: bool = False) -> None:
        self.path = Path(path)
        decoded = decode_file(self.path)
        self.format = decoded.format
        self.truncated = decoded.truncated
        self._pcm = decoded.pcm
        self.chunk_ms = chunk_ms
        self.realtime = realtime
        self.name = f"file:{self.path.name}"

    async def chunks(self) -> AsyncIterator[bytes]:
        import time

        step = max(1, int(self.format.rate * self.chunk_ms / 1000)) * self.format.frame_bytes
        t0 = time.perf_counter()
        for i in range(0, len(self._pcm), step):
            if self.realtime:
                due = t0 + self.format.seconds(i)
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            yield self._pcm[i : i + step]


class StreamSource(AudioSource):
    """Audio pushed by a connection handler: ``await put(data)``, then ``end()``."""

    def __init__(self, fmt: AudioFormat, *, maxsize: int = 64, name: str = "stream") -> None:
        self.format = fmt.check()
        self.name = name
        # audio (bytes), control messages kept in order with it, and None at the end
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=maxsize)
        self.ended = False

    async def put(self, data: bytes) -> None:
        if self.ended:
            raise BadRequestError("the audio stream has already ended")
        if data:
            await self._queue.put(data)

    async def put_control(self, item: object) -> None:
        """A control message kept in order with the audio (push-to-talk, end of utterance...)."""
        if not self.ended:
            await self._queue.put(item)

    def end(self) -> None:
        """No more audio (the client said stop, or disconnected)."""
        if not self.ended:
            self.ended = True
            try:
                self._queue.put_nowait(None)
            except asyncio.QueueFull:  # drop the oldest block: the end must get through
                self._queue.get_nowait()
                self._queue.put_nowait(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Audio only; control items are skipped (``items()`` yields them too)."""
        async for item in self.items():
            if isinstance(item, bytes):
                yield item

    async def items(self) -> AsyncIterator[object]:
        while True:
            data = await self._queue.get()
            if data is None:
                return
            yield data


def pyaudio_module() -> Any:
    try:
        import pyaudio
    except ImportError:
        raise UnavailableError(
            "pyaudio is not installed: apt-get install portaudio19-dev && pip install 'edge-agent[mic]'",
            code="runtime_missing",
        ) from None
    return pyaudio


#: set by the CLI: a person at a terminal gets the clear error, not ~60 lines of ALSA/JACK probing noise
_QUIET = False


def quiet_audio_noise(on: bool = True) -> None:
    """Silence what ALSA and JACK print on stderr while PortAudio looks for devices.

    Only for short-lived CLI processes: the silencing redirects file
    descriptor 2, which in the daemon would also swallow its own log lines.
    """
    global _QUIET
    _QUIET = on
    os.environ.setdefault("JACK_NO_START_SERVER", "1")  # do not try to start jackd on a headless box


@contextlib.contextmanager
def native_noise_silenced() -> Iterator[None]:
    """Point fd 2 at /dev/null around a PortAudio call (when the CLI asked for quiet)."""
    if not _QUIET:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def open_portaudio(pyaudio: Any) -> Any:
    """``pyaudio.PyAudio()``, with the audio libraries' probing noise kept off the terminal."""
    with native_noise_silenced():
        return pyaudio.PyAudio()


def list_devices() -> list[dict[str, Any]]:
    """Audio devices as PortAudio sees them (index, name, inputs, outputs, default rate)."""
    pyaudio = pyaudio_module()
    pa = open_portaudio(pyaudio)
    try:
        out = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            out.append(
                {
                    "index": i,
                    "name": info.get("name"),
                    "inputs": int(info.get("maxInputChannels", 0)),
                    "outputs": int(info.get("maxOutputChannels", 0)),
                    "default_rate": int(info.get("defaultSampleRate", 0)),
                }
            )
        return out
    finally:
        pa.terminate()


def find_device(pa: Any, device: str | int | None, *, output: bool) -> int | None:
    """A device index from an index or part of a name; None for the default device."""
    if device is None or device == "":
        return None
    key = "maxOutputChannels" if output else "maxInputChannels"
    names = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if int(info.get(key, 0)) <= 0:
            continue
        names.append(f"{i}: {info.get('name')}")
        if (isinstance(device, int) and i == device) or (
            isinstance(device, str) and device.lower() in str(info.get("name", "")).lower()
        ):
            return i
    kind = "output" if output else "input"
    raise UnavailableError(
        f"no audio {kind} device matches {device!r}; {kind}s: {', '.join(names) or 'none'}"
    )


class MicSource(AudioSource):
    """A microphone through PortAudio, 16 kHz mono when the device allows it, else its default rate."""

    def __init__(
        self, device: str | int | None = None, *, rate: int = 16000, chunk_ms: int = 20, maxsize: int = 50
    ) -> None:
        self.device = device
        self.chunk_ms = chunk_ms
        self.format = AudioFormat(rate, 2, 1)
        self.name = f"mic:{device}" if device is not None else "mic"
        self._maxsize = maxsize
        self._pa: Any = None
        self._stream: Any = None

    async def chunks(self) -> AsyncIterator[bytes]:
        pyaudio = pyaudio_module()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=self._maxsize)

        def push(data: bytes) -> None:
            if queue.full():
                queue.get_nowait()
                metrics.DROPPED_AUDIO.labels(self.name).inc(len(data))
            queue.put_nowait(data)

        def callback(data: bytes, frames: int, info: Any, status: int) -> tuple[None, int]:
            loop.call_soon_threadsafe(push, data)
            return None, pyaudio.paContinue

        def open_stream() -> None:
            self._pa = open_portaudio(pyaudio)
            index = find_device(self._pa, self.device, output=False)
            rate = self.format.rate
            try:
                self._pa.is_format_supported(
                    rate, input_device=index, input_channels=1, input_format=pyaudio.paInt16
                )
            except ValueError:
                info = (
                    self._pa.get_device_info_by_index(index)
                    if index is not None
                    else self._pa.get_default_input_device_info()
                )
                rate = int(info["defaultSampleRate"])
            self.format = AudioFormat(rate, 2, 1)
            with native_noise_silenced():
                self._stream = self._pa.open(
                    format=pyaudio.paInt16, channels=1, rate=rate, input=True, input_device_index=index,
                    frames_per_buffer=int(rate * self.chunk_ms / 1000), stream_callback=callback,
                )  # fmt: skip

        try:
            await loop.run_in_executor(None, open_stream)
        except OSError as exc:
            await self.close()
            raise UnavailableError(
                f"cannot open the microphone ({exc}); see 'edge-agent audio devices'"
            ) from None
        try:
            while True:
                yield await queue.get()
        finally:
            await self.close()

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop_stream()
            stream.close()
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None


def open_source(spec: str, *, realtime: bool = True) -> AudioSource:
    """``mic``, ``mic:<name or index>``, or a file path."""
    if spec == "mic" or spec.startswith("mic:"):
        dev = spec.partition(":")[2] or None
        return MicSource(int(dev) if dev and dev.isdigit() else dev)
    return FileSource(spec, realtime=realtime)
