"""Runtime adapters for the voice engines that are not tensor-in/tensor-out.

faster-whisper (CTranslate2), vosk (Kaldi) and llama-cpp load a model
directory or file and run whole requests (a waveform to text, a chat to
tokens). Each is wrapped in the same ``runtimes.base.Runtime``/``Session``
protocol as onnxruntime, so the model manager loads them through its usual
path: memory budget (declared, then measured RSS), pinning, leases, LRU
eviction, idle unloading, priority scheduling on its inference threads.

A "feed" here is a dict of Python values rather than tensors; each session
checks it against ``feed_keys`` (``check_feed``), so a wrong call is a
BadRequestError naming the expected keys, exactly as a wrong tensor is.
Streaming output (tokens, partial transcripts) goes through a callback in the
feed, called on the inference thread; ``agent.voice.threads`` bridges it to
asyncio.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from agent.errors import BadRequestError
from runtimes.base import DeviceInfo, Runtime, Session, require_model_file


class EngineSession(Session):
    """A loaded engine object on the CPU; ``run(feed)`` takes a dict of Python values.

    The engine object is ``Session._engine`` (so ``engine`` and the closed
    state work as for every runtime); ``_lock`` serialises what the engine
    cannot run twice at once.
    """

    #: key -> (accepted types, required)
    feed_keys: ClassVar[dict[str, tuple[tuple[type, ...], bool]]] = {}
    inputs = ()
    outputs = ()

    def __init__(self, runtime: str, engine: Any, path: Path) -> None:
        self.runtime = runtime
        self.device = "CPU"
        self._engine = engine
        self.path = path
        self._lock = threading.Lock()

    def live_engine(self) -> Any:
        """The engine object; the closed-session error once ``close()`` dropped it."""
        engine = self._engine
        if engine is None:
            raise self._closed_error()
        return engine

    def feed_ok(self, feed: Mapping[str, Any]) -> bool:
        for key, (types, required) in self.feed_keys.items():
            value = feed.get(key)
            if value is None:
                if required:
                    return False
            elif types and not isinstance(value, types):
                return False
        return all(k in self.feed_keys for k in feed)

    def check_feed(self, feed: Mapping[str, Any]) -> None:
        if not isinstance(feed, Mapping):
            raise BadRequestError(f"{self.runtime} takes a dict feed, got {type(feed).__name__}")
        if self.feed_ok(feed):
            return
        expected = {
            k: ("required " if req else "optional ") + "/".join(t.__name__ for t in types)
            for k, (types, req) in self.feed_keys.items()
        }
        unknown = [k for k in feed if k not in self.feed_keys]
        wrong = {
            k: type(v).__name__
            for k, v in feed.items()
            if k in self.feed_keys and v is not None and not isinstance(v, self.feed_keys[k][0])
        }
        missing = [k for k, (_, req) in self.feed_keys.items() if req and feed.get(k) is None]
        raise BadRequestError(
            f"{self.runtime} feed does not match: missing {missing or 'none'}, unknown {unknown or 'none'}, "
            f"wrong types {wrong or 'none'}; expected {expected}",
            code="bad_input",
        )

    def zero_feed(self) -> dict[str, Any]:  # pragma: no cover - each engine names its warm-up request
        raise NotImplementedError


class EngineRuntime(Runtime):
    """An engine on the CPU; ``_import_engine`` (``Runtime.engine``) imports it on first use only."""

    def devices(self) -> list[DeviceInfo]:
        return [DeviceInfo(self.name, "CPU", "cpu", "")] if self.available() else []

    def check_device(self, device: str) -> None:
        if device.upper() != "CPU":
            raise BadRequestError(f"{self.name} runs on CPU only here, not {device!r}", code="bad_device")

    def prepare_load(self, model: Path, device: str) -> tuple[Path, Any]:
        """What every load starts with: the engine installed, the CPU, the model file; (its path, the module)."""
        module = self.engine()
        self.check_device(device)
        return require_model_file(model, self.name), module


def voice_runtimes() -> dict[str, Runtime]:
    """The voice engine adapters by name (nothing imported yet); merge them over the registry's."""
    from agent.voice.engines.llama import LlamaRuntime
    from agent.voice.engines.vosk_engine import VoskRuntime
    from agent.voice.engines.whisper import WhisperRuntime

    return {rt.name: rt for rt in (WhisperRuntime(), VoskRuntime(), LlamaRuntime())}


def all_runtimes() -> dict[str, Runtime]:
    """The registry's adapters (onnxruntime, OpenVINO, LiteRT, ...) plus the voice engines."""
    from models.choose import default_runtimes

    return {**default_runtimes(), **voice_runtimes()}
