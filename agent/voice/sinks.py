"""Where speech goes: the speaker (pyaudio), a WAV file, a WebSocket — with fades and ducking.

Every sink takes 16-bit mono PCM at the rate the voice speaks (``start(rate)``)
and writes it in short blocks, so ``abort()`` (barge-in) takes effect within
one block: the rest of the reply is dropped and the 20 ms that would have
played next go out faded to silence, instead of a click. Playback starts with
a 10 ms fade-in. ``duck(db)``
lowers the playback level smoothly (while the user speaks over a reply) and
``unduck()`` restores it.

``realtime=True`` on a file or WebSocket sink paces writes at playback speed,
as a speaker would: a reply then takes as long to "play" as to hear, which is
what barge-in and latency measurements need.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.errors import BadRequestError, UnavailableError

BLOCK_MS = 40
FADE_IN_MS = 10
FADE_OUT_MS = 20
DUCK_RAMP_MS = 50


class AudioSink(ABC):
    """Base: gain envelope (fade, duck) and pacing; subclasses implement ``_emit``."""

    def __init__(self, *, realtime: bool = False) -> None:
        self.realtime = realtime
        self.rate = 22050
        self.gain = 1.0
        self._target_gain = 1.0
        self._aborted = False
        self._fresh = True
        self.played_s = 0.0  # audio written since start()
        self.first_write_at: float | None = None
        self._t0 = 0.0
        self.active = False
        self._next = b""  # the audio after the block in flight: what abort() fades out
        self._last = 0.0  # the last sample written, where the fade starts when nothing follows

    async def start(self, rate: int) -> None:
        if not 8000 <= rate <= 192000:
            raise BadRequestError(f"cannot play audio at {rate} Hz")
        self.rate = rate
        self._aborted = False
        self._fresh = True
        self.played_s = 0.0
        self.first_write_at = None
        self._t0 = time.perf_counter()
        self._next, self._last = b"", 0.0
        self.active = True
        await self._open(rate)

    async def write(self, pcm: bytes) -> bool:
        """Play ``pcm``; False once aborted (the caller stops sending)."""
        import numpy as np

        block = int(self.rate * BLOCK_MS / 1000) * 2
        for i in range(0, len(pcm), block):
            if self._aborted:
                return False
            x = np.frombuffer(pcm[i : i + block], dtype="<i2").astype(np.float32)
            x = self._envelope(x)
            self._next = pcm[i + block : i + block + int(self.rate * FADE_OUT_MS / 1000) * 2]
            self._last = float(x[-1]) if x.size else self._last
            if self.first_write_at is None:
                self.first_write_at = time.perf_counter()
            await self._emit(np.clip(x, -32768, 32767).astype("<i2").tobytes())
            self.played_s += x.size / self.rate
            if self.realtime:
                ahead = self.played_s - (time.perf_counter() - self._t0) - BLOCK_MS / 1000
                if ahead > 0:
                    await asyncio.sleep(ahead)
        return not self._aborted

    def _envelope(self, x: Any) -> Any:
        import numpy as np

        n = x.size
        if not n:
            return x
        ramp_n = max(1, int(self.rate * DUCK_RAMP_MS / 1000))
        gains = np.full(n, self._target_gain, np.float32)
        if self.gain != self._target_gain:
            k = min(n, ramp_n)
            gains[:k] = np.linspace(self.gain, self._target_gain, k, dtype=np.float32)
        self.gain = self._target_gain
        if self._fresh:
            k = min(n, int(self.rate * FADE_IN_MS / 1000))
            gains[:k] *= np.linspace(0.0, 1.0, k, dtype=np.float32)
            self._fresh = False
        return x * gains

    async def finish(self) -> None:
        """The reply is complete: let it play out, then close the stream."""
        if self.realtime and not self._aborted:
            left = self.played_s - (time.perf_counter() - self._t0)
            if left > 0:
                await asyncio.sleep(left)
        self.active = False
        await self._close()

    async def abort(self) -> None:
        """Barge-in: the next 20 ms of the reply go out faded to silence, the rest is dropped."""
        if not self.active:
            return
        self._aborted = True
        self.active = False
        if self.played_s > 0:
            await self._emit(self._fade_out())
        self._next = b""
        await self._close()

    def _fade_out(self) -> bytes:
        """FADE_OUT_MS of what would have played next, ramped from the current gain to 0."""
        import numpy as np

        n = int(self.rate * FADE_OUT_MS / 1000)
        buf = self._next[: n * 2]
        nxt = np.frombuffer(buf[: len(buf) // 2 * 2], dtype="<i2").astype(np.float32) * self.gain
        x = np.full(n, nxt[-1] if nxt.size else self._last, np.float32)  # hold the level if nothing follows
        x[: nxt.size] = nxt
        x *= np.linspace(1.0, 0.0, n, dtype=np.float32)
        return np.clip(x, -32768, 32767).astype("<i2").tobytes()

    def duck(self, db: float = -15.0) -> None:
        self._target_gain = 10 ** (db / 20)

    def unduck(self) -> None:
        self._target_gain = 1.0

    async def _open(self, rate: int) -> None:
        """Open the device/file for a stream at ``rate``."""
        return None

    @abstractmethod
    async def _emit(self, pcm: bytes) -> None: ...

    async def _close(self) -> None:
        """Close the stream (the sink itself stays usable)."""
        return None

    async def aclose(self) -> None:
        await self._close()


class NullSink(AudioSink):
    """Discards audio (a box with no speaker); still paced when ``realtime``."""

    async def _emit(self, pcm: bytes) -> None:
        return None


class WavSink(AudioSink):
    """Each reply to ``path``, as a complete WAV file (the next reply overwrites it)."""

    def __init__(self, path: str | Path, *, realtime: bool = False) -> None:
        super().__init__(realtime=realtime)
        self.path = Path(path)
        self._wav: wave.Wave_write | None = None
        self.replies = 0

    async def _open(self, rate: int) -> None:
        await self._close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wav = wave.open(str(self.path), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        self.replies += 1

    async def _emit(self, pcm: bytes) -> None:
        if self._wav is not None:
            self._wav.writeframes(pcm)

    async def _close(self) -> None:
        wav, self._wav = self._wav, None
        if wav is not None:
            wav.close()


class CallbackSink(AudioSink):
    """Hands each block to an async callback (a WebSocket, a Wyoming connection)."""

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        *,
        on_start: Callable[[int], Awaitable[None]] | None = None,
        on_stop: Callable[[bool], Awaitable[None]] | None = None,
        realtime: bool = False,
    ) -> None:
        super().__init__(realtime=realtime)
        self._send = send
        self._on_start = on_start
        self._on_stop = on_stop
        self._open_stream = False

    async def _open(self, rate: int) -> None:
        self._open_stream = True
        if self._on_start is not None:
            await self._on_start(rate)

    async def _emit(self, pcm: bytes) -> None:
        await self._send(pcm)

    async def _close(self) -> None:
        if self._open_stream:
            self._open_stream = False
            if self._on_stop is not None:
                await self._on_stop(self._aborted)


class SpeakerSink(AudioSink):
    """The sound card through pyaudio; ``device`` is an output device index or part of its name."""

    def __init__(self, device: str | int | None = None) -> None:
        super().__init__(realtime=False)  # the device itself paces writes
        self.device = device
        self._pa: Any = None
        self._stream: Any = None

    async def _open(self, rate: int) -> None:
        from agent.voice.sources import find_device, native_noise_silenced, open_portaudio, pyaudio_module

        pyaudio = pyaudio_module()
        loop = asyncio.get_running_loop()

        def open_stream() -> None:
            if self._pa is None:
                self._pa = open_portaudio(pyaudio)
            index = find_device(self._pa, self.device, output=True)
            try:
                with native_noise_silenced():
                    self._stream = self._pa.open(
                        format=pyaudio.paInt16, channels=1, rate=rate, output=True, output_device_index=index
                    )
            except OSError as exc:
                raise UnavailableError(
                    f"cannot open the speaker ({exc}); see 'edge-agent audio devices'"
                ) from None

        await loop.run_in_executor(None, open_stream)

    async def _emit(self, pcm: bytes) -> None:
        if self._stream is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._stream.write, pcm)

    async def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(OSError):
                await asyncio.get_running_loop().run_in_executor(None, stream.close)

    async def aclose(self) -> None:
        await self._close()
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None


def open_sink(spec: str, *, realtime: bool = True) -> AudioSink:
    """``''`` → none, ``speaker[:<name or index>]``, or a WAV path."""
    if not spec:
        return NullSink(realtime=realtime)
    if spec == "speaker" or spec.startswith("speaker:"):
        dev = spec.partition(":")[2] or None
        return SpeakerSink(int(dev) if dev and dev.isdigit() else dev)
    return WavSink(spec, realtime=realtime)
