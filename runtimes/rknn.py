"""Rockchip NPU adapter through ``rknnlite.api.RKNNLite`` (rknn-toolkit-lite2, aarch64 only).

What the adapter uses of RKNNLite, and nothing else: ``RKNNLite(verbose=False)``,
``load_rknn(path) -> int``, ``init_runtime(core_mask=...) -> int``,
``inference(inputs=[...], data_format=...) -> list | None``, ``release()``,
and the ``NPU_CORE_*`` constants. Every return code is checked: 0 is success,
anything else becomes an error naming the call and the likely fix.

Devices: ``NPU`` (the driver picks a free core), ``NPU:0`` / ``NPU:1`` /
``NPU:2`` (one core), ``NPU:0_1`` and ``NPU:0_1_2`` (a model split across
cores, RK3588 only). The core count comes from the SoC named in the device
tree: RK3588 has 3, RK3576 2, the others (RK3566/RK3568/RV1106) 1.

Tensor specs: RKNNLite exposes no input/output metadata in Python, so pass
them from the manifest as ``LoadOptions.extra["inputs"]`` /
``extra["outputs"]`` (lists of ``{"name", "dtype", "shape"}``). With input
specs the feed is checked and the model warmed up; without them inputs are
taken in the feed's order, outputs are named ``output_0``... and warm-up is
skipped (nothing says what shape to warm up with). ``extra["data_format"]``
(``"nchw"`` or ``"nhwc"``) is passed to ``inference``.

The RKNN context is not thread-safe: ``run`` holds a per-session lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from agent.core.errors import BadRequestError, EdgeAgentError, UnavailableError
from runtimes.base import DeviceInfo, LoadOptions, Runtime, Session, TensorSpec, require_model_file

DEVICE_TREE_COMPATIBLE = Path("/proc/device-tree/compatible")

#: device suffix -> (RKNNLite constant, cores it needs)
CORE_MASKS: dict[str, tuple[str, tuple[int, ...]]] = {
    "": ("NPU_CORE_AUTO", ()),
    "AUTO": ("NPU_CORE_AUTO", ()),
    "0": ("NPU_CORE_0", (0,)),
    "1": ("NPU_CORE_1", (1,)),
    "2": ("NPU_CORE_2", (2,)),
    "0_1": ("NPU_CORE_0_1", (0, 1)),
    "0_1_2": ("NPU_CORE_0_1_2", (0, 1, 2)),
}

#: SoC -> NPU cores; anything else with an NPU has one.
SOC_CORES = {"rk3588": 3, "rk3576": 2}


def soc_name(compatible: Path = DEVICE_TREE_COMPATIBLE) -> str | None:
    """The Rockchip SoC from the device tree (``rk3588``...), or None off Rockchip boards."""
    try:
        entries = compatible.read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in entries:
        vendor, _, model = entry.decode(errors="replace").partition(",")
        if vendor == "rockchip" and model.startswith(("rk", "rv")):
            return model
    return None


def _specs(raw: Any, what: str) -> tuple[TensorSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        raise BadRequestError(f"rknn: extra[{what!r}] must be a list of tensor specs", code="bad_tensor_spec")
    return tuple(item if isinstance(item, TensorSpec) else TensorSpec.from_dict(item) for item in raw)


class RknnSession(Session):
    def __init__(
        self,
        rknn: Any,
        device: str,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        data_format: str | None,
    ) -> None:
        self.runtime = RknnRuntime.name
        self.device = device
        self.inputs = inputs
        self.outputs = outputs
        self._engine = rknn
        self._data_format = data_format
        self._input_names = tuple(spec.name for spec in inputs)
        self._output_names = tuple(spec.name for spec in outputs)
        self._lock = threading.Lock()

    def run(self, feed: Mapping[str, Any], *, validate: bool = False) -> dict[str, Any]:
        # The NPU runtime quantises whatever it is given; it does not refuse a
        # wrong shape reliably, so known specs are always checked (fast path).
        if self._input_names:
            if validate or not self.feed_ok(feed):
                self.check_feed(feed)
            values = [feed[name] for name in self._input_names]
        else:
            values = list(feed.values())
        with self._lock:
            if self._engine is None:
                raise self._closed_error()
            kwargs: dict[str, Any] = {"inputs": values}
            if self._data_format:
                kwargs["data_format"] = self._data_format
            try:
                outputs = self._engine.inference(**kwargs)
            except Exception as exc:
                raise EdgeAgentError(
                    f"RKNN inference failed on {self.device}: {exc}", code="inference_failed"
                ) from None
        if outputs is None:
            raise EdgeAgentError(
                f"RKNN inference failed on {self.device} (inference returned None; the runtime log "
                f"says why): {len(values)} input(s) fed",
                code="inference_failed",
            )
        names = self._output_names
        if len(names) != len(outputs):
            names = tuple(f"output_{i}" for i in range(len(outputs)))
        return dict(zip(names, outputs, strict=True))

    def close(self) -> None:
        with self._lock:
            rknn, self._engine = self._engine, None
        if rknn is not None:
            rknn.release()


class RknnRuntime(Runtime):
    name: ClassVar[str] = "rknn"
    extra: ClassVar[str] = "rknn"
    suffixes: ClassVar[tuple[str, ...]] = (".rknn",)
    modules: ClassVar[tuple[str, ...]] = ("rknnlite",)

    title: ClassVar[str] = "rknn-toolkit-lite2"
    install_hint: ClassVar[str] = (
        " on the board: it ships aarch64 wheels only, for Rockchip RK3566/RK3568/RK3576/RK3588, "
        "and needs librknnrt.so from Rockchip's rknpu2 in /usr/lib"
    )

    def __init__(self, device_tree: Path = DEVICE_TREE_COMPATIBLE) -> None:
        self._device_tree = device_tree

    def _import_engine(self) -> Any:
        from rknnlite.api import RKNNLite

        return RKNNLite

    def _api(self) -> Any:
        return self.engine()

    def core_count(self) -> int | None:
        """NPU cores of this SoC, or None when the device tree names no Rockchip SoC."""
        soc = soc_name(self._device_tree)
        if soc is None:
            return None
        return SOC_CORES.get(soc[:6], 1)

    def devices(self) -> list[DeviceInfo]:
        if not self.available():
            return []
        cores = self.core_count()
        soc = soc_name(self._device_tree) or "unknown SoC"
        found = [DeviceInfo(self.name, "NPU", "npu", f"{soc}, driver picks the core")]
        if cores and cores > 1:
            found += [DeviceInfo(self.name, f"NPU:{i}", "npu", f"{soc} core {i}") for i in range(cores)]
            found.append(DeviceInfo(self.name, "NPU:0_1", "npu", f"{soc} cores 0+1"))
            if cores > 2:
                found.append(DeviceInfo(self.name, "NPU:0_1_2", "npu", f"{soc} cores 0+1+2"))
        return found

    def core_mask(self, api: Any, device: str) -> tuple[str, int]:
        """(canonical device name, RKNNLite core mask) for ``NPU``, ``NPU:0``, ``NPU:0_1_2``..."""
        prefix, _, suffix = device.strip().partition(":")
        entry = CORE_MASKS.get(suffix.upper()) if prefix.upper() == "NPU" else None
        if entry is None:
            raise BadRequestError(
                f"rknn has no device {device!r}; use NPU, NPU:0, NPU:1, NPU:2, NPU:0_1 or NPU:0_1_2",
                code="bad_device",
            )
        constant, needs = entry
        cores = self.core_count()
        if cores is not None and needs and max(needs) >= cores:
            raise UnavailableError(
                f"{device} needs NPU core {max(needs)} but this SoC has {cores} core(s); use NPU",
                code="device_unavailable",
            )
        name = f"NPU:{suffix}" if suffix and suffix.upper() != "AUTO" else "NPU"
        return name, int(getattr(api, constant))

    def load(self, model: Path, device: str, options: LoadOptions) -> RknnSession:
        api = self._api()
        path = require_model_file(model, self.name)
        inputs = _specs(options.extra.get("inputs"), "inputs")
        outputs = _specs(options.extra.get("outputs"), "outputs")
        name, mask = self.core_mask(api, device)
        rknn = api(verbose=False)
        ret = rknn.load_rknn(str(path))
        if ret != 0:
            rknn.release()
            raise BadRequestError(
                f"rknn: load_rknn({path.name}) returned {ret}; the file is corrupt or was not produced "
                "by rknn-toolkit2 for this SoC: convert it again with the right target_platform",
                code="model_invalid",
            )
        ret = rknn.init_runtime(core_mask=mask)
        if ret != 0:
            rknn.release()
            raise UnavailableError(
                f"rknn: init_runtime(core_mask={mask}) for {path.name} on {name} returned {ret}; check that "
                "/dev/rknpu (or the rknpu DRM node) is accessible, that librknnrt.so matches the "
                "toolkit version the model was converted with, and that the model targets this SoC",
                code="device_unavailable",
            )
        data_format = options.extra.get("data_format")
        session = RknnSession(rknn, name, inputs, outputs, str(data_format) if data_format else None)
        if options.warmup and inputs:
            session.warm_up()
        return session
