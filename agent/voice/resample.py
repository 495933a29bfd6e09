"""Any input format → the pipeline's 16 kHz mono signed 16-bit PCM, chunk by chunk.

Two methods. ``soxr`` (default when installed): a windowed-sinc resampler
with a proper anti-aliasing filter, streaming with its own state; the right
choice for 44.1/48 kHz microphones, where naive decimation folds energy above
8 kHz back into the speech band. ``linear``: interpolation with no filter and
no dependency beyond numpy, for boxes without soxr and for input that is
already band-limited (8 kHz telephony audio upsampled to 16 kHz).

Channels are averaged to mono before resampling. A stream keeps its state
across chunks, so chunk boundaries leave no clicks.
"""

from __future__ import annotations

from typing import Any, Literal

from agent.errors import BadRequestError, UnavailableError
from agent.voice.audio import RATE, AudioFormat, float_to_pcm16, to_float

Method = Literal["auto", "soxr", "linear"]


def soxr_available() -> bool:
    try:
        import soxr  # noqa: F401
    except ImportError:
        return False
    return True


class Resampler:
    """Converts one stream of ``fmt`` audio; feed it bytes, get pipeline PCM back."""

    def __init__(self, fmt: AudioFormat, method: Method = "auto") -> None:
        self.fmt = fmt.check()
        if method == "auto":
            method = "soxr" if soxr_available() else "linear"
        if method == "soxr" and not soxr_available():
            raise UnavailableError(
                "soxr is not installed: pip install 'edge-agent[voice]' or use method=linear"
            )
        if method not in ("soxr", "linear"):
            raise BadRequestError(f"resampling method {method!r} is unknown; use soxr or linear")
        self.method = method
        self._carry = b""  # a partial frame left from the previous chunk
        self._stream: Any = None
        self._pos = 0.0  # linear: position of the next output sample, in input samples
        self._last: Any = None  # linear: the previous chunk's last sample
        if method == "soxr" and fmt.rate != RATE:
            import soxr

            self._stream = soxr.ResampleStream(fmt.rate, RATE, 1, dtype="float32", quality="HQ")

    @property
    def passthrough(self) -> bool:
        return self.fmt.is_pipeline

    def process(self, data: bytes, last: bool = False) -> bytes:
        """Convert a chunk; ``last=True`` flushes what the filter still holds."""
        if self.passthrough:
            data = self._carry + data
            cut = len(data) - len(data) % 2
            self._carry = data[cut:]
            return data[:cut]
        import numpy as np

        data = self._carry + data
        cut = len(data) - len(data) % self.fmt.frame_bytes
        self._carry = data[cut:]
        mono = to_float(data[:cut], self.fmt).mean(axis=1).astype(np.float32)
        if self.fmt.rate == RATE:
            return float_to_pcm16(mono)
        if self._stream is not None:
            out = self._stream.resample_chunk(mono, last=last)
        else:
            out = self._linear(mono)
        return float_to_pcm16(out)

    def flush(self) -> bytes:
        return self.process(b"", last=True)

    def _linear(self, x: Any) -> Any:
        import numpy as np

        if self._last is not None:
            x = np.concatenate([[self._last], x]).astype(np.float32)
            offset = 1.0
        else:
            offset = 0.0
        if x.size < 2:
            if x.size:
                self._last = x[-1]
                self._pos -= x.size - offset
            return np.zeros(0, np.float32)
        step = self.fmt.rate / RATE
        start = self._pos + offset
        positions = np.arange(start, x.size - 1, step)
        out = np.interp(positions, np.arange(x.size), x).astype(np.float32)
        # next output position relative to the last input sample, which is carried over
        next_pos = start + positions.size * step
        self._pos = next_pos - (x.size - 1) - 1.0
        self._last = x[-1]
        return out


def to_pipeline(pcm: bytes, fmt: AudioFormat, method: Method = "auto") -> bytes:
    """Convert a whole buffer in one call."""
    r = Resampler(fmt, method)
    return r.process(pcm) + r.flush()
