"""The one protocol every inference engine adapter implements.

An adapter is a class with a ``name`` (the registry key, e.g. ``onnxruntime``)
and the ``extra`` a user installs to get it. Its engine is imported inside the
adapter's methods, never at module import, so the daemon starts where the
engine is missing and can say which extra to install.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from agent.core.errors import BadRequestError, ConflictError, UnavailableError


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype (numpy name, e.g. ``float32``) and shape of one tensor.

    A ``None`` or negative dimension is dynamic (batch, sequence length).
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        """Build from ``{"name", "dtype", "shape"}`` (a manifest entry); negative dims become None."""
        try:
            shape = tuple(None if d is None or int(d) < 0 else int(d) for d in data["shape"])
            return cls(name=str(data["name"]), dtype=str(data["dtype"]), shape=shape)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequestError(
                f"tensor spec {dict(data)!r} is invalid ({exc}); expected "
                '{"name": str, "dtype": "float32", "shape": [1, 3, null]}',
                code="bad_tensor_spec",
            ) from None

    @property
    def dynamic(self) -> bool:
        return any(d is None or d < 0 for d in self.shape)

    def concrete_shape(self, fill: int = 1) -> tuple[int, ...]:
        """The shape with every dynamic dimension set to ``fill`` (warm-up, smoke tests)."""
        return tuple(fill if d is None or d < 0 else d for d in self.shape)


@dataclass(frozen=True)
class DeviceInfo:
    """A device an engine can run on, as the engine names it (``CPU``, ``GPU.0``, ``NPU``)."""

    runtime: str
    device: str
    kind: str  # cpu | gpu | npu | tpu
    detail: str = ""


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model; filled from the hardware profile, not engine defaults.

    ``threads`` is the intra-op thread count; leaving it to engines makes each
    session spawn one thread per core, which oversubscribes a 4-core board as
    soon as two models run at once.
    """

    threads: int = 1
    warmup: bool = True
    #: engine-specific knobs, documented by each adapter (e.g. ``inputs``/``outputs``
    #: specs for RKNN, ``inference_precision`` for OpenVINO, ``xnnpack`` for LiteRT)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.threads, int) or self.threads < 1:
            raise BadRequestError(
                f"threads must be an integer >= 1, got {self.threads!r}", code="bad_threads"
            )


class Session(ABC):
    """A loaded model on one device. ``run`` blocks; ``arun`` runs it in an executor.

    ``run`` does not re-check the feed in Python by default: the engine checks
    it anyway, and when it refuses a feed the adapter calls ``check_feed`` to
    turn the engine's message into one naming the expected names, dtypes and
    shapes. ``validate=True`` checks up front (a compiled fast path: about
    1 us per call for a one-input model, against ~0.3 us for the plain
    adapter). Adapters whose engine silently converts a wrong dtype (OpenVINO)
    or whose engine does not refuse bad shapes reliably (RKNN) always run the
    fast check.
    """

    runtime: str
    device: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: wall time of the warm-up run at load, in ms; None when it was skipped
    warmup_ms: float | None = None

    @abstractmethod
    def run(self, feed: Mapping[str, Any], *, validate: bool = False) -> dict[str, Any]:
        """Run one inference. ``feed`` maps input names to numpy arrays.

        Raises BadRequestError for a feed the model cannot take (naming what
        it expects), ConflictError after ``close()``, and EdgeAgentError with
        code ``inference_failed`` when the engine fails on a valid feed.
        """

    async def arun(
        self,
        feed: Mapping[str, Any],
        executor: concurrent.futures.Executor | None = None,
        *,
        validate: bool = False,
    ) -> dict[str, Any]:
        """Run in an executor so the event loop never blocks on inference."""
        loop = asyncio.get_running_loop()
        if validate:
            return await loop.run_in_executor(executor, functools.partial(self.run, feed, validate=True))
        return await loop.run_in_executor(executor, self.run, feed)

    @abstractmethod
    def close(self) -> None:
        """Release the engine's memory. Idempotent."""

    #: the engine's own object, set by the adapter; None once the session is closed
    _engine: Any = None

    @property
    def engine(self) -> Any:
        """The engine's own object (InferenceSession, CompiledModel, Interpreter...).

        An escape hatch for diagnostics and tests; code that uses it is tied to
        one engine. None where an adapter does not expose one, and after ``close()``.
        """
        return self._engine

    def _closed_error(self) -> ConflictError:
        """What a call on a closed session raises (the adapters' run paths turn engine errors into it)."""
        return closed_session_error(self.runtime, self.device)

    @staticmethod
    def _closed(*args: Any, **kwargs: Any) -> Any:
        """Stands in for the engine's bound calls after ``close()``; the run path sees ``_engine`` is None."""
        raise RuntimeError("closed")

    def describe(self) -> dict[str, Any]:
        """What the API and CLI show about a loaded model."""
        return {
            "runtime": self.runtime,
            "device": self.device,
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
            "warmup_ms": self.warmup_ms,
        }

    def zero_feed(self) -> dict[str, Any]:
        """Zeros of every input's declared dtype and shape, dynamic dims set to 1."""
        import numpy as np

        return {spec.name: np.zeros(spec.concrete_shape(), dtype=spec.dtype) for spec in self.inputs}

    def warm_up(self) -> float:
        """Run once on ``zero_feed()`` so the first real request pays no lazy init; returns ms.

        Engines allocate buffers, pick kernels and JIT on the first run; that
        first call can take 10-100x a normal one.
        """
        feed = self.zero_feed()
        start = time.perf_counter()
        self.run(feed)
        self.warmup_ms = (time.perf_counter() - start) * 1000.0
        return self.warmup_ms

    def _compiled_specs(self) -> tuple[tuple[str, Any, int, tuple[tuple[int, int], ...]], ...]:
        """``(name, numpy dtype, rank, ((axis, length), ...) of the fixed axes)`` per input, built once."""
        compiled = self.__dict__.get("_fast_specs")
        if compiled is None or compiled[0] is not self.inputs:
            import numpy as np

            specs = tuple(
                (
                    spec.name,
                    np.dtype(spec.dtype),
                    len(spec.shape),
                    tuple((axis, d) for axis, d in enumerate(spec.shape) if d is not None and d >= 0),
                )
                for spec in self.inputs
            )
            compiled = (self.inputs, specs)
            self.__dict__["_fast_specs"] = compiled
        return compiled[1]

    def feed_ok(self, feed: Mapping[str, Any]) -> bool:
        """The fast path of ``check_feed``: True when names, dtypes and shapes all match.

        Allocation-free apart from the loop (only the fixed axes are compared);
        False sends the caller to ``check_feed`` for the message.
        """
        specs = self._compiled_specs()
        if len(feed) != len(specs):
            return False
        for name, dtype, rank, fixed in specs:
            value = feed.get(name)
            if value is None:
                return False
            got_dtype = getattr(value, "dtype", None)
            if got_dtype is not dtype and got_dtype != dtype:
                return False
            got_shape = value.shape
            if len(got_shape) != rank:
                return False
            for axis, want in fixed:
                if got_shape[axis] != want:
                    return False
        return True

    def check_feed(self, feed: Mapping[str, Any]) -> None:
        """Refuse a feed whose names, dtypes or shapes do not match, naming what was expected."""
        if self.feed_ok(feed):
            return
        expected = {spec.name: spec for spec in self.inputs}
        missing = [name for name in expected if name not in feed]
        unknown = [name for name in feed if name not in expected]
        if missing or unknown:
            raise BadRequestError(
                f"inputs do not match the model: missing {missing or 'none'}, unknown {unknown or 'none'}; "
                f"expected {[s.to_dict() for s in self.inputs]}",
                code="bad_input_names",
            )
        for name, spec in expected.items():
            value = feed[name]
            dtype = str(getattr(value, "dtype", type(value).__name__))
            if dtype != spec.dtype:
                raise BadRequestError(
                    f"input {name!r} has dtype {dtype}, expected {spec.dtype}", code="bad_input_dtype"
                )
            shape = tuple(getattr(value, "shape", ()))
            if len(shape) != len(spec.shape) or any(
                want is not None and want >= 0 and got != want
                for got, want in zip(shape, spec.shape, strict=False)
            ):
                raise BadRequestError(
                    f"input {name!r} has shape {list(shape)}, expected {list(spec.shape)} (None is any size)",
                    code="bad_input_shape",
                )

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runtime(ABC):
    """An inference engine adapter. Stateless apart from the engine's import."""

    name: ClassVar[str]
    #: the pip extra that installs the engine (``pip install edge-agent[<extra>]``)
    extra: ClassVar[str]
    #: model file suffixes this engine loads (``.onnx``, ``.xml``, ``.tflite``, ``.rknn``)
    suffixes: ClassVar[tuple[str, ...]]
    #: the engine's top-level Python packages (any one present counts), for ``installed()``
    modules: ClassVar[tuple[str, ...]] = ()
    #: the engine's name as users know it, for messages (``OpenVINO``); defaults to ``name``
    title: ClassVar[str] = ""
    #: appended to the install command in ``missing_reason`` (alternatives, platform notes)
    install_hint: ClassVar[str] = ""

    _import_error: str | None = None
    _checked: bool = False

    def _import_engine(self) -> Any:
        """Import and return the engine's module; adapters override this (ImportError when absent)."""
        raise ImportError(f"{self.name} has no engine import")

    def engine(self) -> Any:
        """The engine's module, imported on first use; UnavailableError naming the extra when absent."""
        try:
            return self._import_engine()
        except ImportError as exc:
            self._import_error = str(exc)
            raise UnavailableError(self.missing_reason(), code="runtime_missing") from None

    def available(self) -> bool:
        """True when the engine imports here. Never raises; the import is tried once."""
        if not self._checked:
            try:
                self.engine()
            except UnavailableError:
                pass
            self._checked = True
        return self._import_error is None

    def missing_reason(self) -> str:
        """Why ``available()`` is False, with the command that fixes it."""
        why = f" ({self._import_error})" if self._import_error else ""
        return (
            f"{self.title or self.name} is not installed{why}: "
            f"pip install 'edge-agent[{self.extra}]'{self.install_hint}"
        )

    @abstractmethod
    def devices(self) -> list[DeviceInfo]:
        """Devices this engine can use on this machine (empty when unavailable)."""

    @abstractmethod
    def load(self, model: Path, device: str, options: LoadOptions) -> Session:
        """Load ``model`` on ``device``; warm up when ``options.warmup``.

        Raises UnavailableError when the engine or device is missing (codes
        ``runtime_missing``, ``device_unavailable``), and BadRequestError for
        a model file that is absent (``model_not_found``) or that the engine
        cannot read (``model_invalid``), or an unknown device name (``bad_device``).
        """

    def require(self) -> None:
        """Raise UnavailableError naming the extra when the engine is missing."""
        if not self.available():
            raise UnavailableError(self.missing_reason(), code="runtime_missing")

    def installed(self) -> bool:
        """Whether the engine's package is on the path, without importing it.

        ``available()`` imports the engine, which costs 20-40 MiB of RSS per
        engine; a status listing on an idle daemon can use this instead. A
        package that is present but broken still says True here.
        """
        if not self.modules:
            return self.available()
        import importlib.util

        for module in self.modules:
            try:
                if importlib.util.find_spec(module) is not None:
                    return True
            except (ImportError, ValueError, AttributeError):  # a module blocked in sys.modules
                continue
        return False

    def describe(self, probe: bool = True) -> dict[str, Any]:
        """One row of ``registry.status()``: availability, devices and the fix when missing.

        ``probe=False`` imports nothing: ``available`` is then None and
        ``devices`` empty, ``installed`` says whether the package is there.
        """
        installed = self.installed()
        available: bool | None = self.available() if probe else None
        devices: list[DeviceInfo] = []
        reason = None
        if available:
            try:
                devices = self.devices()
            except Exception as exc:  # a broken driver must not break the status page
                reason = f"listing devices failed: {exc}"
        elif available is False or not installed:
            reason = self.missing_reason()
        return {
            "name": self.name,
            "available": available,
            "installed": installed,
            "extra": self.extra,
            "suffixes": list(self.suffixes),
            "devices": [{"device": d.device, "kind": d.kind, "detail": d.detail} for d in devices],
            "reason": reason,
        }


_S = TypeVar("_S", bound=Session)


def warmed(session: _S, options: LoadOptions) -> _S:
    """The adapters' last step of ``load``: ``session``, run once on zeros first where ``options.warmup`` asks."""
    if options.warmup:
        session.warm_up()
    return session


def require_model_file(model: Path, runtime: str) -> Path:
    """Refuse a missing model path before the engine prints its own cryptic error.

    A missing file is a bad request (the caller named it), with its own code so
    the model manager can tell it from a corrupt file.
    """
    path = Path(model)
    if not path.is_file():
        raise BadRequestError(
            f"{runtime}: model file {str(path)!r} does not exist or is not a file; "
            "check the model store path or pull the model again",
            code="model_not_found",
        )
    return path


def closed_session_error(runtime: str, device: str) -> ConflictError:
    return ConflictError(
        f"this {runtime} session on {device} is closed; load the model again", code="session_closed"
    )
