"""Wake word detection: microWakeWord streaming models on LiteRT, through the model manager.

A microWakeWord "streaming" model keeps its ring buffers inside the
interpreter (resource variables), so a session cannot be shared between two
audio streams. A ``WakeDetector`` therefore leases one session per wake word
for its whole life (``manager.use``) and flushes the previous stream's state
out of it first; the model's pool size bounds how many streams listen at once
(voice.max_streams).
The wake models are pinned: never evicted, never idle-unloaded.

Features are the 40-channel micro frontend (pymicro-features, 10 ms stride,
the same front end the models were trained with); the model sees ``stride``
(3) feature frames per call and a detection is the mean of the last
``window`` probabilities above the model's tuned cutoff (from its JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from agent.errors import ResourceExhaustedError, UnavailableError
from agent.voice.catalog import wake_model_name
from agent.voice.events import VoiceEvent

if TYPE_CHECKING:
    from models.manager import ModelManager

#: after a detection, ignore the same word for this long (one utterance of it triggers once)
REFRACTORY_MS = 1500
#: silence fed to a leased session before use; longer than the models' receptive field (~1 s)
FLUSH_MS = 2000


def _quantize(word: Any, features: Any) -> Any:
    """Float features → the model's int8/uint8 input, with its scale and zero point."""
    import numpy as np

    info = np.iinfo(word.in_dtype)
    q = np.round(features / word.in_scale + word.in_zero)
    return np.clip(q, info.min, info.max).astype(word.in_dtype)


@dataclass(frozen=True, kw_only=True)
class Detection(VoiceEvent):
    type: ClassVar[str] = "voice.wake.detected"
    name: str = ""  # model name, e.g. wake-okay-nabu
    phrase: str = ""
    timestamp_ms: float = 0.0
    probability: float = 0.0


@dataclass
class _Word:
    name: str
    phrase: str
    cutoff: float
    window: int
    lease: Any
    input_name: str
    output_name: str
    in_scale: float
    in_zero: int
    in_dtype: Any
    out_scale: float
    out_zero: int
    stride: int
    probs: deque[float]
    features: list[Any]
    quiet_until_ms: float = 0.0
    best: float = 0.0


class WakeDetector:
    """One stream's wake word detection over one or more models. Use ``async with``."""

    def __init__(
        self,
        manager: ModelManager,
        wake_words: tuple[str, ...] | list[str],
        *,
        threshold: float = 0.0,
        stream: str = "",
        lease_timeout_s: float = 5.0,
    ) -> None:
        self.manager = manager
        self.lease_timeout_s = lease_timeout_s
        self.names = [wake_model_name(w) for w in wake_words]
        self.threshold = threshold
        self.stream = stream
        self._words: list[_Word] = []
        self._stack: contextlib.AsyncExitStack | None = None
        self._frontend: Any = None
        self._pending = b""
        self.audio_ms = 0.0
        self.busy_s = 0.0
        self.invocations = 0

    async def __aenter__(self) -> WakeDetector:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        try:
            from pymicro_features import MicroFrontend
        except ImportError:
            raise UnavailableError(
                "wake word features need pymicro-features: pip install pymicro-wakeword (extra 'voice')",
                code="runtime_missing",
            ) from None
        from models.scheduling import Priority

        self._frontend = MicroFrontend()
        stack = contextlib.AsyncExitStack()
        try:
            for name in self.names:
                try:
                    lease = await asyncio.wait_for(
                        stack.enter_async_context(self.manager.use(name, Priority.REALTIME)),
                        self.lease_timeout_s,
                    )
                except asyncio.TimeoutError:
                    raise ResourceExhaustedError(
                        f"every {name} session is listening to another stream; raise voice.max_streams",
                        code="wake_streams",
                    ) from None
                self._words.append(self._prepare(name, lease))
        except BaseException:
            await stack.aclose()
            self._words.clear()
            raise
        self._stack = stack
        await self._flush()

    async def _flush(self) -> None:
        """Clear what a previous stream left in the model's ring buffers.

        LiteRT's ``reset_all_variables`` does not reach these models' stream
        buffers (pymicro-wakeword reloads the model instead), so the session
        is fed ``FLUSH_MS`` of the features of silence: afterwards it is in
        the state of a model that has just heard silence, whoever used it last.
        """
        import numpy as np
        from pymicro_features import MicroFrontend

        fe = MicroFrontend()
        frames: list[Any] = []
        silence = bytes(320)
        while len(frames) < FLUSH_MS // 10:
            result = fe.process_samples(silence)
            if result.features:
                frames.append(np.asarray(result.features, dtype=np.float32))
        for w in self._words:
            for i in range(0, len(frames) - w.stride + 1, w.stride):
                stacked = np.stack(frames[i : i + w.stride])[None, :, :]
                await w.lease.infer({w.input_name: _quantize(w, stacked)})
            w.probs.clear()

    def _prepare(self, name: str, lease: Any) -> _Word:
        import numpy as np

        interp = lease.session.engine
        if interp is None or not hasattr(interp, "get_input_details"):
            raise UnavailableError(f"{name}: the wake word needs the LiteRT runtime", code="no_runtime")
        installed = self.manager.store.get(name)
        config_file = (
            installed.manifest.extra.get("config") or f"{installed.manifest.extra.get('id', name)}.json"
        )
        try:
            cfg = json.loads((installed.path / config_file).read_text())
        except (OSError, ValueError) as exc:
            raise UnavailableError(f"{name}: its settings file {config_file} is unreadable ({exc})") from None
        micro = cfg.get("micro", {})
        inp = interp.get_input_details()[0]
        out = interp.get_output_details()[0]
        in_scale, in_zero = inp["quantization"]
        out_scale, out_zero = out["quantization"]
        return _Word(
            name=name,
            phrase=str(cfg.get("wake_word", name)),
            cutoff=self.threshold or float(micro.get("probability_cutoff", 0.9)),
            window=int(micro.get("sliding_window_size", 5)),
            lease=lease,
            input_name=lease.session.inputs[0].name,
            output_name=lease.session.outputs[0].name,
            in_scale=float(in_scale),
            in_zero=int(in_zero),
            in_dtype=np.dtype(inp["dtype"]),
            out_scale=float(out_scale),
            out_zero=int(out_zero),
            stride=int(inp["shape"][1]),
            probs=deque(maxlen=int(micro.get("sliding_window_size", 5))),
            features=[],
        )

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        self._words.clear()
        if stack is not None:
            await stack.aclose()

    @property
    def phrases(self) -> list[str]:
        return [w.phrase for w in self._words]

    def reset(self) -> None:
        """Forget partial evidence (after a detection is acted on)."""
        for w in self._words:
            w.probs.clear()
            w.features.clear()

    async def process(self, pcm: bytes) -> list[Detection]:
        """Feed 16 kHz mono s16 PCM; returns detections (usually none)."""
        import numpy as np

        if self._stack is None:
            raise UnavailableError("the wake word detector is not open")
        t0 = time.perf_counter()
        data = self._pending + pcm
        found: list[Detection] = []
        idx = 0
        step = 320  # 10 ms
        while idx + step <= len(data):
            result = self._frontend.process_samples(data[idx : idx + step])
            idx += max(2, result.samples_read * 2)
            self.audio_ms += result.samples_read / 16.0
            if not result.features:
                continue
            feat = np.asarray(result.features, dtype=np.float32)
            for w in self._words:
                w.features.append(feat)
                if len(w.features) < w.stride:
                    continue
                stacked = np.stack(w.features)[None, :, :]
                w.features.clear()
                out = await w.lease.infer({w.input_name: _quantize(w, stacked)})
                self.invocations += 1
                prob = (float(out[w.output_name].reshape(-1)[0]) - w.out_zero) * w.out_scale
                w.probs.append(prob)
                if len(w.probs) < w.window:
                    continue
                mean = sum(w.probs) / len(w.probs)
                w.best = max(w.best, mean)
                if mean > w.cutoff and self.audio_ms >= w.quiet_until_ms:
                    w.quiet_until_ms = self.audio_ms + REFRACTORY_MS
                    w.probs.clear()
                    found.append(
                        Detection(
                            source="wake",
                            stream=self.stream,
                            name=w.name,
                            phrase=w.phrase,
                            timestamp_ms=self.audio_ms,
                            probability=round(mean, 4),
                        )
                    )
        self._pending = data[idx:]
        self.busy_s += time.perf_counter() - t0
        return found

    def best_probabilities(self) -> dict[str, float]:
        """Highest windowed probability seen per word (diagnostics, tests)."""
        return {w.name: round(w.best, 4) for w in self._words}
