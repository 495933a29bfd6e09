"""FP16 and INT8 variants of an installed FP32 ONNX model, as a new signed model version.

Methods:

- ``fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16`` with
  ``keep_io_types=True`` (inputs and outputs stay float32, so callers do not
  change). Halves the weights; fast on GPUs and NPUs, usually not on CPUs.
- ``int8-dynamic``: ``onnxruntime.quantization.quantize_dynamic`` (int8
  weights, activations quantized per call). No calibration data needed.
- ``int8-static``: ``quantize_static`` (QDQ, uint8 activations, int8 weights)
  with a calibration set: ``.npy`` files (single-input models) or ``.npz``
  files (keys = input names) in a directory, one sample per file; or a single
  ``.npy``/``.npz`` whose first axis indexes samples (its rank is the input's
  rank + 1). Float data is cast to the input's float dtype.

The result is a new version of the model holding every source variant plus
the new one (``onnxruntime``, the precision, a ``quantization`` record with
the size change and the drift from FP32: max absolute and range-relative
error on the smoke vector and on the calibration set). The new variant's
smoke tolerance is widened to twice the measured drift (at least the
original tolerance): the smoke test on a device checks that the engine
computes what the quantized model computes; accuracy loss is the recorded
drift, for a person to judge before activating. The new version is signed
with the given key and installed, not activated unless asked.

Needs the ``quantize`` extra (onnx, onnxruntime); imported inside functions.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.errors import BadRequestError, UnavailableError
from models.bundle import remake_manifest, write_signed
from models.manifest import Manifest, Quantization, Variant
from models.smoke import Drift, drift, smoke_inputs
from models.store import InstalledModel, ModelStore
from runtimes.base import TensorSpec

METHODS = {"fp16": "fp16", "int8-dynamic": "int8", "int8-static": "int8"}
_TAGS = {"fp16": "fp16", "int8-dynamic": "int8", "int8-static": "int8s"}
MAX_CALIBRATION_SAMPLES = 10_000


@dataclass(frozen=True)
class QuantizeResult:
    name: str
    source_version: str
    version: str
    method: str
    variant: Variant
    installed: InstalledModel

    @property
    def quantization(self) -> Quantization:
        assert self.variant.quantization is not None
        return self.variant.quantization

    def to_dict(self) -> dict[str, Any]:
        q = self.quantization
        return {
            "name": self.name,
            "source_version": self.source_version,
            "version": self.version,
            "method": self.method,
            "precision": self.variant.precision,
            "file": self.variant.model_file,
            "size_bytes": q.size,
            "source_size_bytes": q.source_size,
            "size_ratio": round(q.size / q.source_size, 4) if q.source_size else None,
            "smoke_max_abs_error": q.max_abs_error,
            "smoke_max_rel_error": q.max_rel_error,
            "calibration_max_abs_error": q.calibration_max_abs_error,
            "calibration_max_rel_error": q.calibration_max_rel_error,
            "calibration_samples": q.calibration_samples,
            "active": self.installed.active,
        }


class _Progress:
    """Step messages on stderr, only when it is a terminal (logs and pipes stay clean)."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total = total
        self.step = 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def __call__(self, message: str) -> None:
        self.step += 1
        if self.enabled:
            print(
                f"\r\033[K[quantize {self.step}/{self.total}] {message}", end="", file=sys.stderr, flush=True
            )

    def done(self) -> None:
        if self.enabled:
            print(file=sys.stderr, flush=True)


def _require_quantize_extra() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        raise UnavailableError(
            f"quantization needs onnx and onnxruntime ({exc}): pip install 'edge-agent[quantize]'",
            code="runtime_missing",
        ) from None


# -- calibration data -------------------------------------------------------------------------------------


def _fit(arr: Any, spec: TensorSpec, origin: str) -> Any:
    import numpy as np

    want = np.dtype(spec.dtype)
    if arr.dtype != want:
        if arr.dtype.kind == "f" and want.kind == "f":
            arr = arr.astype(want)
        else:
            raise BadRequestError(
                f"calibration {origin}: dtype {arr.dtype}, the model's {spec.name!r} is {want}"
            )
    if len(arr.shape) != len(spec.shape) or any(
        w is not None and w >= 0 and g != w for g, w in zip(arr.shape, spec.shape, strict=False)
    ):
        raise BadRequestError(
            f"calibration {origin}: shape {list(arr.shape)} does not fit input {spec.name!r} {list(spec.shape)}"
        )
    return arr


def _split(arrays: Mapping[str, Any], inputs: tuple[TensorSpec, ...], origin: str) -> list[dict[str, Any]]:
    """One sample if ranks match the inputs; many (first axis) if each is one rank higher."""
    specs = {s.name: s for s in inputs}
    if set(arrays) != set(specs):
        raise BadRequestError(
            f"calibration {origin}: holds {sorted(arrays)}, the model takes {sorted(specs)}"
        )
    ranks = {name: arr.ndim - len(specs[name].shape) for name, arr in arrays.items()}
    if set(ranks.values()) == {0}:
        return [{n: _fit(a, specs[n], origin) for n, a in arrays.items()}]
    if set(ranks.values()) == {1}:
        counts = {arr.shape[0] for arr in arrays.values()}
        if len(counts) != 1:
            raise BadRequestError(
                f"calibration {origin}: inputs hold different sample counts {sorted(counts)}"
            )
        return [
            {n: _fit(a[i], specs[n], f"{origin}[{i}]") for n, a in arrays.items()}
            for i in range(counts.pop())
        ]
    raise BadRequestError(
        f"calibration {origin}: array ranks {ranks} (relative to the inputs) must all be 0 (one sample) "
        "or all be 1 (samples along the first axis)"
    )


def _read(path: Path, inputs: tuple[TensorSpec, ...]) -> dict[str, Any]:
    import numpy as np

    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BadRequestError(f"calibration file {path.name} cannot be read: {exc}") from None
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            raise BadRequestError(
                f"calibration file {path.name} is a .npy but the model has {len(inputs)} inputs; use .npz"
            )
        return {inputs[0].name: loaded}
    with loaded:
        return {k: loaded[k] for k in loaded.files}


def load_calibration(path: Path, inputs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
    """Calibration samples (feeds) from a directory of .npy/.npz files or one such file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))
        if not files:
            raise BadRequestError(f"calibration directory {path} holds no .npy or .npz files")
        samples = [s for f in files for s in _split(_read(f, inputs), inputs, f.name)]
    elif path.is_file():
        samples = _split(_read(path, inputs), inputs, path.name)
    else:
        raise BadRequestError(f"calibration data {path} does not exist")
    if not samples:
        raise BadRequestError(f"calibration data {path} holds no samples")
    if len(samples) > MAX_CALIBRATION_SAMPLES:
        raise BadRequestError(f"{len(samples)} calibration samples; use at most {MAX_CALIBRATION_SAMPLES}")
    return samples


def _reader(samples: list[dict[str, Any]]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class ListReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, Any]] = iter(samples)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(samples)

    return ListReader()


# -- the conversion --------------------------------------------------------------------------------------


class _DropPreprocessHint(logging.Filter):
    """onnxruntime's quantizer logs "consider pre-processing" on the root logger on every call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def convert(source: Path, dest: Path, method: str, calibration: list[dict[str, Any]] | None = None) -> Path:
    """Write the ``method`` version of ONNX model ``source`` to ``dest``."""
    _require_quantize_extra()
    hint_filter = _DropPreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint_filter)
    try:
        return _convert(source, dest, method, calibration)
    finally:
        root.removeFilter(hint_filter)


def _convert(source: Path, dest: Path, method: str, calibration: list[dict[str, Any]] | None) -> Path:
    if method == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        onnx.save(model, str(dest))
    elif method == "int8-dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(source), str(dest), weight_type=QuantType.QInt8)
    elif method == "int8-static":
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        if not calibration:
            raise BadRequestError("int8-static needs calibration data (--calibration DIR or FILE)")
        quantize_static(
            str(source),
            str(dest),
            _reader(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    else:
        raise BadRequestError(f"quantization method {method!r} is not one of {sorted(METHODS)}")
    return dest


def _onnx_fp32(manifest: Manifest) -> Variant:
    for v in manifest.variants:
        if v.precision == "fp32" and v.model_file.endswith(".onnx"):
            return v
    raise BadRequestError(
        f"model {manifest.name} {manifest.version} has no fp32 ONNX variant to quantize "
        f"(variants: {[v.label for v in manifest.variants]})"
    )


def _drift_over(ref: Any, new: Any, feeds: list[dict[str, Any]]) -> Drift:
    worst = Drift(0.0, 0.0)
    for feed in feeds:
        worst = worst.worst(drift(new.run(feed), ref.run(feed)))
    return worst


def next_version(version: str, method: str) -> str:
    tag = _TAGS[method]
    return f"{version}.{tag}" if "+" in version else f"{version}+{tag}"


def quantize_model(
    store: ModelStore,
    name: str,
    method: str,
    *,
    private_key_hex: str,
    trusted_keys: Any,
    version: str | None = None,
    new_version: str | None = None,
    calibration: Path | None = None,
    activate: bool = False,
    progress: bool | None = None,
) -> QuantizeResult:
    """Quantize the installed ``name`` (active version by default) into a new, signed, installed version."""
    if method not in METHODS:
        raise BadRequestError(f"quantization method {method!r} is not one of {sorted(METHODS)}")
    _require_quantize_extra()
    from runtimes.base import LoadOptions
    from runtimes.onnxrt import OnnxRuntime

    show = _Progress(5, progress)
    src = store.get(name, version)
    manifest = src.manifest
    base = _onnx_fp32(manifest)
    samples = load_calibration(calibration, manifest.inputs) if calibration is not None else []
    precision = METHODS[method]
    target = new_version or next_version(src.version, method)
    stem = Path(base.model_file).stem
    new_file = f"{stem}.{_TAGS[method]}.onnx"
    with tempfile.TemporaryDirectory(prefix="edge-agent-quantize-") as tmp:
        bundle = Path(tmp)
        show("copying the source version")
        for entry in manifest.files:
            (bundle / entry.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src.file_path(entry.path), bundle / entry.path)
        show(f"converting {base.model_file} ({method})")
        convert(bundle / base.model_file, bundle / new_file, method, samples)
        show("measuring drift against fp32")
        rt = OnnxRuntime()
        opts = LoadOptions(threads=1, warmup=False)
        ref = rt.load(bundle / base.model_file, "CPU", opts)
        new = rt.load(bundle / new_file, "CPU", opts)
        try:
            smoke = (
                _drift_over(ref, new, [smoke_inputs(manifest)]) if manifest.smoke_test else Drift(0.0, 0.0)
            )
            calib = _drift_over(ref, new, samples) if samples else None
        finally:
            ref.close()
            new.close()
        source_size = manifest.file(base.model_file).size
        size = (bundle / new_file).stat().st_size
        q = Quantization(
            method=method,
            source_precision=base.precision,
            source_size=source_size,
            size=size,
            max_abs_error=smoke.max_abs,
            max_rel_error=smoke.max_rel,
            calibration_max_abs_error=calib.max_abs if calib else None,
            calibration_max_rel_error=calib.max_rel if calib else None,
            calibration_samples=len(samples),
        )
        base_atol = manifest.smoke_test.atol if manifest.smoke_test else 0.0
        variant = Variant(
            runtime="onnxruntime",
            precision=precision,
            files=(new_file,),
            devices=base.devices,
            atol=max(base_atol, 2 * smoke.max_abs) if manifest.smoke_test else None,
            quantization=q,
        )
        kept = [v for v in manifest.variants if not (v.runtime == "onnxruntime" and v.precision == precision)]
        show(f"signing {name} {target}")
        new_manifest = remake_manifest(bundle, manifest, version=target, variants=[*kept, variant])
        write_signed(bundle, new_manifest, private_key_hex)
        show("installing")
        installed = store.install(bundle, trusted_keys, activate=activate)
    show.done()
    final_variant = installed.manifest.variant("onnxruntime", precision) or variant
    return QuantizeResult(name, src.version, target, method, final_variant, installed)
