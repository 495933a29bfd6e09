"""OpenVINO adapter: Intel CPUs, integrated/discrete GPUs and NPUs.

Reads ONNX (``.onnx``) and OpenVINO IR (``.xml`` with its ``.bin`` beside it).
Device names are OpenVINO's own, from ``Core.available_devices``: ``CPU``,
``GPU`` / ``GPU.0``, ``NPU``; ``AUTO`` lets OpenVINO pick.

Each session owns one InferRequest. An InferRequest is not safe to use from
two threads at once, so ``run`` holds a per-session lock: concurrent callers
are serialised, never corrupted. For parallel inference load several sessions
(the model manager's instance pool does).

Inputs are shared with the engine, not copied (``share_inputs=True``), as
onnxruntime reads numpy memory in place: ``run`` is synchronous, so the
caller's array is read only while the call lasts. On a tiny model the copy
OpenVINO makes by default is about a quarter of the call. Outputs are still
copied: the next call cannot overwrite a result.

``LoadOptions.extra`` keys: ``inference_precision`` (CPU only; default
``f32`` so results match other engines bit-for-bit within float tolerance; on
CPUs with AMX/AVX512-BF16 OpenVINO would otherwise silently run in bf16 -
pass ``bf16`` or ``f16`` to opt in), ``cache_dir`` (compiled-blob cache, worth
it for GPU/NPU whose compile takes seconds), ``ov_config`` (a dict of
OpenVINO properties, applied last).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from agent.core.errors import BadRequestError, EdgeAgentError, UnavailableError
from runtimes.base import DeviceInfo, LoadOptions, Runtime, Session, TensorSpec, require_model_file, warmed


def _kind(device: str) -> str:
    prefix = device.split(".")[0].upper()
    return {"CPU": "cpu", "GPU": "gpu", "NPU": "npu"}.get(prefix, "cpu")


def _port_spec(port: Any, index: int, prefix: str) -> TensorSpec:
    try:
        name = port.get_any_name()
    except RuntimeError:  # a port without tensor names
        name = f"{prefix}_{index}"
    shape = tuple(None if dim.is_dynamic else dim.get_length() for dim in port.get_partial_shape())
    return TensorSpec(name=name, dtype=port.get_element_type().to_dtype().name, shape=shape)


def _first_line(exc: BaseException) -> str:
    """OpenVINO messages are multi-line C++ traces; the useful part is the last non-empty line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


class OpenVinoSession(Session):
    def __init__(self, compiled: Any, device: str) -> None:
        self.runtime = OpenVinoRuntime.name
        self.device = device
        self._engine = compiled
        self._request: Any = compiled.create_infer_request()
        self._infer = self._request.infer
        self._lock = threading.Lock()
        self.inputs = tuple(_port_spec(p, i, "input") for i, p in enumerate(compiled.inputs))
        self.outputs = tuple(_port_spec(p, i, "output") for i, p in enumerate(compiled.outputs))
        self._output_names = tuple(spec.name for spec in self.outputs)

    def run(self, feed: Mapping[str, Any], *, validate: bool = False) -> dict[str, Any]:
        # OpenVINO converts a wrong dtype silently (float64 -> float32), which
        # hides bugs upstream: the fast check runs on every call.
        if validate or not self.feed_ok(feed):
            self.check_feed(feed)
        with self._lock:
            try:
                result = self._infer(feed, share_inputs=True)
            except Exception as exc:
                raise self._run_error(exc) from None
        return dict(zip(self._output_names, result.to_tuple(), strict=False))

    def _run_error(self, exc: Exception) -> Exception:
        if self._engine is None:
            return self._closed_error()
        if isinstance(exc, (TypeError, ValueError)):
            return BadRequestError(f"OpenVINO refused the input: {_first_line(exc)}", code="bad_input")
        return EdgeAgentError(
            f"OpenVINO failed on {self.device}: {_first_line(exc)}", code="inference_failed"
        )

    def close(self) -> None:
        with self._lock:
            self._request = None
            self._engine = None
            self._infer = self._closed


class OpenVinoRuntime(Runtime):
    name: ClassVar[str] = "openvino"
    extra: ClassVar[str] = "openvino"
    suffixes: ClassVar[tuple[str, ...]] = (".xml", ".onnx")
    modules: ClassVar[tuple[str, ...]] = ("openvino",)
    title: ClassVar[str] = "OpenVINO"

    def __init__(self) -> None:
        self._core: Any = None
        self._core_lock = threading.Lock()

    def _import_engine(self) -> Any:
        # ``import openvino`` imports its model converter, which reports the import to Google
        # Analytics (a spawned process posting to the internet) unless a consent file in the
        # user's home says no. An edge box is offline and its owner agreed to nothing: the
        # telemetry package is hidden, so openvino takes its own no-op stub, as when it is absent.
        modules: dict[str, Any] = sys.modules  # None there means "not installed" to the import system
        modules.setdefault("openvino_telemetry", None)
        import openvino

        return openvino

    def _ov(self) -> Any:
        return self.engine()

    def core(self) -> Any:
        """One Core per adapter: creating it scans plugins (tens of ms); it is thread-safe."""
        with self._core_lock:
            if self._core is None:
                self._core = self._ov().Core()
            return self._core

    def devices(self) -> list[DeviceInfo]:
        if not self.available():
            return []
        core = self.core()
        found = []
        for device in core.available_devices:
            try:
                detail = str(core.get_property(device, "FULL_DEVICE_NAME"))
            except RuntimeError:
                detail = ""
            found.append(DeviceInfo(self.name, device, _kind(device), detail))
        return found

    def _device(self, device: str) -> str:
        wanted = device.strip().upper()
        if wanted == "AUTO":
            return wanted
        present = list(self.core().available_devices)
        # "GPU" means the first GPU when OpenVINO lists GPU.0, GPU.1...
        if wanted in present or any(d.split(".")[0] == wanted for d in present):
            return wanted
        raise UnavailableError(
            f"OpenVINO has no device {device!r} here (available: {', '.join(present) or 'none'}); "
            "GPU and NPU need Intel's drivers (intel-opencl-icd, intel-level-zero-npu)",
            code="device_unavailable",
        )

    def compile_config(self, device: str, options: LoadOptions) -> dict[str, Any]:
        """Properties passed to compile_model; public so a benchmark can build its peer identically."""
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if device.startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = options.threads
            config["INFERENCE_PRECISION_HINT"] = str(options.extra.get("inference_precision", "f32"))
        if options.extra.get("cache_dir"):
            config["CACHE_DIR"] = str(options.extra["cache_dir"])
        config.update(dict(options.extra.get("ov_config", {})))
        return config

    def load(self, model: Path, device: str, options: LoadOptions) -> OpenVinoSession:
        self._ov()
        path = require_model_file(model, self.name)
        if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
            raise BadRequestError(
                f"OpenVINO IR {path.name} needs its weights {path.with_suffix('.bin').name} beside it",
                code="model_not_found",
            )
        target = self._device(device)
        core = self.core()
        try:
            ov_model = core.read_model(str(path))
        except Exception as exc:
            raise BadRequestError(
                f"OpenVINO cannot read {path.name} ({_first_line(exc)}); the file may be truncated or "
                "corrupt: pull the model again or re-export it",
                code="model_invalid",
            ) from None
        try:
            compiled = core.compile_model(ov_model, target, self.compile_config(target, options))
        except Exception as exc:
            if target.startswith("CPU"):
                raise BadRequestError(
                    f"OpenVINO cannot compile {path.name} for CPU ({_first_line(exc)})", code="model_invalid"
                ) from None
            raise UnavailableError(
                f"OpenVINO cannot compile {path.name} for {target} ({_first_line(exc)}); try CPU",
                code="device_unavailable",
            ) from None
        return warmed(OpenVinoSession(compiled, target), options)
