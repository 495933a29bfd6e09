"""LiteRT (TensorFlow Lite) adapter: CPU with XNNPACK, and the Coral Edge TPU.

Uses ``ai_edge_litert.interpreter`` and falls back to ``tflite_runtime.interpreter``
(the older package, which needs numpy<2) on boards where LiteRT has no wheel.

Devices: ``CPU`` (XNNPACK, LiteRT's default delegate) and ``EdgeTPU`` /
``EdgeTPU:usb`` / ``EdgeTPU:usb:0`` / ``EdgeTPU:pci:0`` through
``load_delegate('libedgetpu.so.1')``; the model must have been compiled with
``edgetpu_compiler`` for the TPU to take its ops.

Inputs with a dynamic dimension (``shape_signature`` -1) are resized to the fed
shape on the fly; resizing re-plans the interpreter's memory, so feeding one
shape steadily costs nothing after the first call.

An Interpreter is not thread-safe: ``run`` holds a per-session lock.

``LoadOptions.extra`` keys: ``xnnpack`` (bool, default True; False runs the
built-in kernels without default delegates).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from agent.core.errors import BadRequestError, EdgeAgentError, UnavailableError
from runtimes.base import DeviceInfo, LoadOptions, Runtime, Session, TensorSpec, require_model_file, warmed

EDGETPU_LIB = "libedgetpu.so.1"


def _spec(detail: Mapping[str, Any]) -> TensorSpec:
    import numpy as np

    signature = detail.get("shape_signature")
    if signature is None or len(signature) == 0:
        signature = detail["shape"]
    shape = tuple(None if int(d) < 0 else int(d) for d in signature)
    return TensorSpec(name=str(detail["name"]), dtype=np.dtype(detail["dtype"]).name, shape=shape)


class LiteRtSession(Session):
    def __init__(self, interpreter: Any, device: str, delegates: list[Any]) -> None:
        self.runtime = LiteRtRuntime.name
        self.device = device
        self._engine = interpreter
        self._delegates = delegates  # keep alive as long as the interpreter
        self._lock = threading.Lock()
        in_details = interpreter.get_input_details()
        out_details = interpreter.get_output_details()
        self.inputs = tuple(_spec(d) for d in in_details)
        self.outputs = tuple(_spec(d) for d in out_details)
        self._in = tuple(
            (spec.name, int(d["index"])) for spec, d in zip(self.inputs, in_details, strict=True)
        )
        self._out = tuple(
            (spec.name, int(d["index"])) for spec, d in zip(self.outputs, out_details, strict=True)
        )
        # The shape each input tensor is currently allocated for.
        self._allocated = [tuple(int(x) for x in d["shape"]) for d in in_details]
        self._set = interpreter.set_tensor
        self._get = interpreter.get_tensor
        self._invoke = interpreter.invoke

    def run(self, feed: Mapping[str, Any], *, validate: bool = False) -> dict[str, Any]:
        if validate:
            self.check_feed(feed)
        with self._lock:
            try:
                allocated = self._allocated
                for pos, (name, index) in enumerate(self._in):
                    value = feed[name]
                    if value.shape != allocated[pos]:
                        self._resize(pos, index, feed)
                    self._set(index, value)
                self._invoke()
                return {name: self._get(index) for name, index in self._out}
            except Exception as exc:
                raise self._run_error(exc, feed) from None

    def _resize(self, pos: int, index: int, feed: Mapping[str, Any]) -> None:
        """Resize a dynamic input, never a static one (LiteRT would allow it and change the model)."""
        self.check_feed(feed)
        shape = tuple(feed[self._in[pos][0]].shape)
        self._engine.resize_tensor_input(index, list(shape))
        self._engine.allocate_tensors()
        self._allocated[pos] = shape

    def _run_error(self, exc: Exception, feed: Mapping[str, Any]) -> Exception:
        if isinstance(exc, EdgeAgentError):
            return exc
        if self._engine is None:
            return self._closed_error()
        self.check_feed(feed)
        if isinstance(exc, (ValueError, TypeError, KeyError, AttributeError)):
            return BadRequestError(f"LiteRT refused the input: {exc}", code="bad_input")
        return EdgeAgentError(f"LiteRT failed on {self.device}: {exc}", code="inference_failed")

    def close(self) -> None:
        with self._lock:
            self._engine = None
            self._delegates = []
            self._set = self._get = self._invoke = self._closed


class LiteRtRuntime(Runtime):
    name: ClassVar[str] = "litert"
    extra: ClassVar[str] = "litert"
    suffixes: ClassVar[tuple[str, ...]] = (".tflite",)
    modules: ClassVar[tuple[str, ...]] = ("ai_edge_litert", "tflite_runtime")
    title: ClassVar[str] = "LiteRT"
    install_hint: ClassVar[str] = " (or 'edge-agent[tflite]' for tflite-runtime where LiteRT has no wheel)"

    def __init__(self) -> None:
        self.package: str | None = None  # which interpreter package was found

    def _import_engine(self) -> Any:
        """LiteRT's interpreter module, falling back to tflite-runtime (the error names LiteRT's)."""
        try:
            from ai_edge_litert import interpreter

            self.package = "ai-edge-litert"
            return interpreter
        except ImportError as first:
            try:
                from tflite_runtime import interpreter

                self.package = "tflite-runtime"
                return interpreter
            except ImportError:
                raise first from None

    def _interp_module(self) -> Any:
        return self.engine()

    @staticmethod
    def edgetpu_library(ld_cache: Path = Path("/etc/ld.so.cache")) -> str | None:
        """libedgetpu's soname or path when the dynamic linker would find it, else None.

        Looked up where the linker looks: its cache (what ``ldconfig -p`` lists) and the
        directories of ``LD_LIBRARY_PATH``. ``ctypes.util.find_library`` did the same, then, where
        the library is absent (most boxes), ran gcc and ld to search again: two compiler and linker
        processes at every start of the daemon, for a probe.
        """
        try:
            if EDGETPU_LIB.encode() in ld_cache.read_bytes():
                return EDGETPU_LIB
        except OSError:
            pass
        for folder in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
            if folder and (Path(folder) / EDGETPU_LIB).is_file():
                return str(Path(folder) / EDGETPU_LIB)
        return None

    def devices(self) -> list[DeviceInfo]:
        if not self.available():
            return []
        found = [DeviceInfo(self.name, "CPU", "cpu", f"{self.package}, XNNPACK")]
        lib = self.edgetpu_library()
        if lib:
            found.append(DeviceInfo(self.name, "EdgeTPU", "tpu", lib))
        return found

    def _delegates(self, module: Any, device: str) -> tuple[str, list[Any]]:
        prefix, _, spec = device.strip().partition(":")
        if prefix.upper() == "CPU" and not spec:
            return "CPU", []
        if prefix.upper() != "EDGETPU":
            raise BadRequestError(
                f"LiteRT has no device {device!r}; use CPU or EdgeTPU[:usb|:pci][:<n>]", code="bad_device"
            )
        options = {"device": spec} if spec else None
        try:
            # dlopen first: a failed load_delegate leaves a half-built Delegate
            # whose __del__ raises during garbage collection.
            ctypes.CDLL(EDGETPU_LIB)
            delegate = module.load_delegate(EDGETPU_LIB, options)
        except (ValueError, OSError, RuntimeError) as exc:
            raise UnavailableError(
                f"the Edge TPU delegate {EDGETPU_LIB} could not be loaded ({exc}); install "
                "libedgetpu1-std from Coral's apt repository and plug in the Coral",
                code="device_unavailable",
            ) from None
        return ("EdgeTPU:" + spec) if spec else "EdgeTPU", [delegate]

    def load(self, model: Path, device: str, options: LoadOptions) -> LiteRtSession:
        module = self._interp_module()
        path = require_model_file(model, self.name)
        name, delegates = self._delegates(module, device)
        kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": options.threads}
        if delegates:
            kwargs["experimental_delegates"] = delegates
        resolver = getattr(module, "OpResolverType", None)
        if not options.extra.get("xnnpack", True) and resolver is not None:
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interpreter = module.Interpreter(**kwargs)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BadRequestError(
                f"LiteRT cannot load {path.name} ({exc}); the file may be truncated or corrupt, or use "
                "ops this runtime lacks: pull the model again or re-convert it",
                code="model_invalid",
            ) from None
        return warmed(LiteRtSession(interpreter, name, delegates), options)
