"""onnxruntime adapter: CPU, CUDA, TensorRT and the OpenVINO execution provider.

Device names: ``CPU``, ``CUDA`` / ``CUDA:<n>``, ``TensorRT`` / ``TensorRT:<n>``,
``ROCm:<n>``, ``OpenVINO`` / ``OpenVINO:<CPU|GPU|NPU>``. An accelerator
provider is always followed by the CPU provider so nodes it cannot take still
run; if onnxruntime silently drops the asked-for provider (its libraries are
missing), ``load`` refuses instead of running on the CPU behind the caller's back.

``LoadOptions.extra`` keys: ``allow_spinning`` (bool, default False: idle
intra-op threads sleep instead of spinning, so several models and the daemon
share a small board's cores), ``session_config`` (a dict of onnxruntime session
config entries), ``provider_options`` (a dict merged into the accelerator
provider's options).

``run`` is thread-safe (onnxruntime's ``InferenceSession.run`` is), so one
session can serve several executor threads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from agent.core.errors import BadRequestError, EdgeAgentError, UnavailableError
from runtimes.base import DeviceInfo, LoadOptions, Runtime, Session, TensorSpec, require_model_file, warmed

# Device prefix (upper case) -> (provider, canonical prefix, kind).
_PROVIDERS: dict[str, tuple[str, str, str]] = {
    "CPU": ("CPUExecutionProvider", "CPU", "cpu"),
    "CUDA": ("CUDAExecutionProvider", "CUDA", "gpu"),
    "TENSORRT": ("TensorrtExecutionProvider", "TensorRT", "gpu"),
    "ROCM": ("ROCMExecutionProvider", "ROCm", "gpu"),
    "OPENVINO": ("OpenVINOExecutionProvider", "OpenVINO", "cpu"),
}

# onnxruntime tensor type strings -> numpy dtype names.
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
}


def _gpu_count() -> int:
    """NVIDIA GPUs the driver exposes; at least 1 where a CUDA provider is built in."""
    try:
        return max(1, len(os.listdir("/proc/driver/nvidia/gpus")))
    except OSError:
        return 1


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))
    return TensorSpec(name=arg.name, dtype=_ORT_DTYPES.get(arg.type, arg.type), shape=shape)


def _error_kind(exc: BaseException) -> str:
    """onnxruntime's pybind exception class name (InvalidProtobuf, NoSuchFile, Fail...)."""
    return type(exc).__name__


class OnnxSession(Session):
    """One InferenceSession. The hot path is a bound-method call plus one ``dict(zip())``."""

    def __init__(self, sess: Any, device: str, providers: list[str]) -> None:
        self.runtime = OnnxRuntime.name
        self.device = device
        self.providers = providers
        self._engine = sess
        self.inputs = tuple(_spec(arg) for arg in sess.get_inputs())
        self.outputs = tuple(_spec(arg) for arg in sess.get_outputs())
        self._output_names = [spec.name for spec in self.outputs]
        self._run = sess.run

    def run(self, feed: Mapping[str, Any], *, validate: bool = False) -> dict[str, Any]:
        if validate:
            self.check_feed(feed)
        try:
            outputs = self._run(self._output_names, feed)
        except Exception as exc:
            raise self._run_error(exc, feed) from None
        return dict(zip(self._output_names, outputs, strict=False))

    def _run_error(self, exc: Exception, feed: Mapping[str, Any]) -> Exception:
        if self._engine is None:
            return self._closed_error()
        # The engine refused the feed: say what the model expects instead of its message.
        self.check_feed(feed)
        kind = _error_kind(exc)
        if isinstance(exc, (ValueError, TypeError)) or kind == "InvalidArgument":
            return BadRequestError(f"onnxruntime refused the input: {exc}", code="bad_input")
        return EdgeAgentError(f"onnxruntime failed on {self.device}: {exc}", code="inference_failed")

    def close(self) -> None:
        # Dropping the last reference frees the session's arena; the bound
        # method holds one too.
        self._engine = None
        self._run = self._closed


class OnnxRuntime(Runtime):
    name: ClassVar[str] = "onnxruntime"
    extra: ClassVar[str] = "onnx"
    suffixes: ClassVar[tuple[str, ...]] = (".onnx", ".ort")
    modules: ClassVar[tuple[str, ...]] = ("onnxruntime",)

    def _import_engine(self) -> Any:
        import onnxruntime

        return onnxruntime

    def _ort(self) -> Any:
        return self.engine()

    def devices(self) -> list[DeviceInfo]:
        if not self.available():
            return []
        present = set(self._ort().get_available_providers())
        found: list[DeviceInfo] = []
        for provider, prefix, kind in _PROVIDERS.values():
            if provider not in present:
                continue
            if prefix == "CPU":
                found.append(DeviceInfo(self.name, "CPU", kind, "CPUExecutionProvider"))
            elif prefix == "OpenVINO":
                found.append(DeviceInfo(self.name, "OpenVINO:CPU", kind, provider))
            else:
                found += [DeviceInfo(self.name, f"{prefix}:{i}", kind, provider) for i in range(_gpu_count())]
        return found

    def _providers(self, device: str, extra: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """Map a device name to (canonical name, providers list) or refuse it."""
        prefix, _, index = device.strip().partition(":")
        entry = _PROVIDERS.get(prefix.upper())
        if entry is None:
            raise BadRequestError(
                f"onnxruntime has no device {device!r}; use CPU, CUDA:<n>, TensorRT:<n>, ROCm:<n> "
                "or OpenVINO:<CPU|GPU|NPU>",
                code="bad_device",
            )
        provider, canonical, _ = entry
        present = self._ort().get_available_providers()
        if provider not in present:
            raise UnavailableError(
                f"onnxruntime here has no {provider} (it has {', '.join(present)}); install the "
                "onnxruntime build for that accelerator (onnxruntime-gpu, onnxruntime-openvino) "
                "or pick another device",
                code="device_unavailable",
            )
        if canonical == "CPU":
            return "CPU", ["CPUExecutionProvider"]
        options: dict[str, Any] = {}
        if canonical == "OpenVINO":
            kind = (index or "CPU").upper()
            options["device_type"] = kind
            name = f"OpenVINO:{kind}"
        else:
            if index and not index.isdigit():
                raise BadRequestError(f"device index in {device!r} must be a number", code="bad_device")
            options["device_id"] = int(index or 0)
            name = f"{canonical}:{options['device_id']}"
        options.update(extra.get("provider_options", {}))
        chain: list[Any] = [(provider, options)]
        if canonical == "TensorRT" and "CUDAExecutionProvider" in present:
            # Nodes TensorRT cannot take fall back to CUDA before the CPU.
            chain.append(("CUDAExecutionProvider", {"device_id": options["device_id"]}))
        chain.append("CPUExecutionProvider")
        return name, chain

    def session_options(self, options: LoadOptions) -> Any:
        """The SessionOptions every session gets; public so a benchmark can build its peer identically."""
        ort = self._ort()
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only: warnings go to stderr, not our log
        spinning = "1" if options.extra.get("allow_spinning", False) else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        for key, value in dict(options.extra.get("session_config", {})).items():
            so.add_session_config_entry(str(key), str(value))
        return so

    def load(self, model: Path, device: str, options: LoadOptions) -> OnnxSession:
        ort = self._ort()
        path = require_model_file(model, self.name)
        name, providers = self._providers(device, options.extra)
        try:
            sess = ort.InferenceSession(str(path), self.session_options(options), providers=providers)
        except Exception as exc:
            raise self._load_error(exc, path, name) from None
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        active = sess.get_providers()
        if wanted not in active:
            raise UnavailableError(
                f"onnxruntime could not start {wanted} for {path.name} (active: {', '.join(active)}); "
                "check the accelerator's libraries (CUDA/cuDNN/TensorRT versions) or pick CPU",
                code="device_unavailable",
            )
        return warmed(OnnxSession(sess, name, active), options)

    def _load_error(self, exc: Exception, path: Path, device: str) -> Exception:
        kind = _error_kind(exc)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
        if kind in ("InvalidProtobuf", "InvalidGraph", "NoModel", "ModelRequiresCompilation"):
            return BadRequestError(
                f"{path.name} is not a valid ONNX model ({detail}); the file may be truncated or "
                "corrupt: pull the model again or re-export it",
                code="model_invalid",
            )
        if kind == "NoSuchFile":
            return BadRequestError(
                f"onnxruntime could not open a file {path.name} needs ({detail}); external weight "
                "files must sit beside the model",
                code="model_not_found",
            )
        if kind == "NotImplemented":
            return UnavailableError(
                f"{path.name} uses an operator this onnxruntime cannot run ({detail}); upgrade "
                "onnxruntime or export the model with an older opset",
                code="runtime_unsupported",
            )
        if kind == "EPFail" or device != "CPU":
            return UnavailableError(
                f"onnxruntime could not load {path.name} on {device} ({detail}); try CPU",
                code="device_unavailable",
            )
        return BadRequestError(f"onnxruntime could not load {path.name}: {detail}", code="model_invalid")
