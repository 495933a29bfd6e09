"""Signed model bundles built from tests/modelzoo.py's real models, and a fake NPU.

A bundle here is exactly what a publisher ships: real ONNX/IR/tflite files,
their hashes, a manifest with a smoke vector computed in plain numpy, signed
with a fresh Ed25519 key. The fake NPU stands in for hardware that cannot
exist on this machine (an NPU): it implements the real ``Runtime`` interface
and runs the model on onnxruntime's CPU, or refuses/garbles on purpose.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agent.errors import UnavailableError
from models.bundle import make_manifest, write_signed
from models.manifest import Manifest, SmokeTest, Variant
from models.signing import KeyPair, generate_keypair
from models.tensors import encode_tensor
from runtimes.base import DeviceInfo, LoadOptions, Runtime, Session, TensorSpec
from tests.modelzoo import MlpSpec, build_mlp_ir, build_mlp_onnx, build_mlp_tflite, mlp_input, mlp_reference

#: small and fast: for store, manager and API tests
MLP_A = MlpSpec("mlp_a", (4, 16, 3), batch=2, seed=11)
MLP_B = MlpSpec("mlp_b", (6, 12, 5), batch=2, seed=12)
#: ~8 MiB of weights: loading it moves RSS measurably
MLP_HEAVY = MlpSpec("mlp_heavy", (512, 2048, 512), batch=1, seed=13)
#: for quantization: enough weights that int8 visibly shrinks the file
MLP_Q = MlpSpec("mlp_q", (64, 256, 256, 8), batch=4, seed=14)

_KEY: KeyPair | None = None


def signing_key() -> KeyPair:
    """One key for the session (generation is cheap, but stable ids make failures readable)."""
    global _KEY
    if _KEY is None:
        _KEY = generate_keypair()
    return _KEY


def smoke_for(spec: MlpSpec, batch: int | None = None, atol: float = 1e-4, rtol: float = 1e-3) -> SmokeTest:
    x = mlp_input(spec, batch=batch or spec.batch, seed=5)
    y = mlp_reference(spec, x)
    return SmokeTest(inputs={"x": encode_tensor(x)}, outputs={"y": encode_tensor(y)}, atol=atol, rtol=rtol)


def specs_for(spec: MlpSpec) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    return (
        (TensorSpec("x", "float32", (None, spec.dims[0])),),
        (TensorSpec("y", "float32", (None, spec.dims[-1])),),
    )


def build_bundle(
    directory: Path,
    spec: MlpSpec = MLP_A,
    *,
    name: str | None = None,
    version: str = "1.0.0",
    key: KeyPair | None = None,
    memory_bytes: int = 1 << 20,
    runtimes: Sequence[str] = ("onnxruntime",),
    extra_variants: Sequence[Variant] = (),
    smoke: bool = True,
    model_cache: Path | None = None,
) -> Path:
    """Write a signed bundle directory (model files + manifest.json) and return it.

    ``runtimes``: ``onnxruntime`` and ``openvino`` share ``model.onnx``;
    ``openvino-ir`` adds ``model.xml``/``model.bin``; ``litert`` adds ``model.tflite``.
    ``extra_variants`` may name ``model.onnx`` for other (fake) runtimes.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cache = model_cache or directory
    onnx_src = cache / f"{spec.name}.onnx"
    if not onnx_src.exists():
        build_mlp_onnx(spec, onnx_src)
    if onnx_src != directory / "model.onnx":
        shutil.copyfile(onnx_src, directory / "model.onnx")
    variants = []
    for rt in runtimes:
        if rt in ("onnxruntime", "openvino"):
            variants.append(Variant(rt, "fp32", ("model.onnx",)))
        elif rt == "openvino-ir":
            build_mlp_ir(spec, directory / "model.xml", directory / "model.onnx")
            variants.append(Variant("openvino", "fp32", ("model.xml", "model.bin")))
        elif rt == "litert":
            build_mlp_tflite(spec, directory / "model.tflite")
            variants.append(Variant("litert", "fp32", ("model.tflite",)))
        else:
            raise ValueError(rt)
    variants.extend(extra_variants)
    inputs, outputs = specs_for(spec)
    manifest = make_manifest(
        directory,
        name=name or spec.name.replace("_", "-"),
        version=version,
        task="regression",
        variants=variants,
        memory_bytes=memory_bytes,
        inputs=inputs,
        outputs=outputs,
        smoke_test=smoke_for(spec) if smoke else None,
    )
    write_signed(directory, manifest, (key or signing_key()).private_hex)
    return directory


def manifest_dict(manifest: Manifest) -> dict[str, Any]:
    return manifest.to_dict()


# -- a fake NPU (hardware that cannot exist here), behind the real Runtime interface ---------------------


class _GarbleSession(Session):
    """Wraps a real session and returns wrong numbers: an NPU driver that loads but computes garbage."""

    def __init__(self, inner: Session) -> None:
        self._inner = inner
        self.runtime = "fakenpu"
        self.device = "NPU"
        self.inputs = inner.inputs
        self.outputs = inner.outputs

    def run(self, feed: Mapping[str, Any], *, validate: bool = False) -> dict[str, Any]:
        return {k: np.asarray(v) + 1.0 for k, v in self._inner.run(feed, validate=validate).items()}

    def close(self) -> None:
        self._inner.close()


class FakeNpuRuntime(Runtime):
    """An NPU engine: ``mode`` is ``ok`` (runs on onnxruntime CPU), ``refuse`` or ``garbage``.

    ``hold``: each load waits until this event is set, as a board's NPU driver compiling a
    graph can take tens of seconds.
    """

    name: ClassVar[str] = "fakenpu"
    extra: ClassVar[str] = "fakenpu"
    suffixes: ClassVar[tuple[str, ...]] = (".onnx",)

    def __init__(self, mode: str = "ok", present: bool = True, hold: threading.Event | None = None) -> None:
        self.mode = mode
        self.present = present
        self.loads = 0
        self.hold = hold

    def available(self) -> bool:
        return True

    def devices(self) -> list[DeviceInfo]:
        return [DeviceInfo(self.name, "NPU", "npu", "fake NPU")] if self.present else []

    def load(self, model: Path, device: str, options: LoadOptions) -> Session:
        from runtimes.onnxrt import OnnxRuntime

        self.loads += 1
        if self.hold is not None:
            self.hold.wait()
        if self.mode == "refuse":
            raise UnavailableError(
                "NPU driver refused the model (fake: mode=refuse)", code="device_unavailable"
            )
        inner = OnnxRuntime().load(model, "CPU", options)
        if self.mode == "garbage":
            return _GarbleSession(inner)
        inner.device = "NPU"
        return inner


class AbsentRuntime(Runtime):
    """An engine that is not installed here (its import would fail), as the registry reports one."""

    name: ClassVar[str] = "absent"
    extra: ClassVar[str] = "absent-extra"
    suffixes: ClassVar[tuple[str, ...]] = (".onnx",)

    def available(self) -> bool:
        return False

    def devices(self) -> list[DeviceInfo]:
        return []

    def load(self, model: Path, device: str, options: LoadOptions) -> Session:
        self.require()
        raise AssertionError("unreachable")


def real_runtimes(**extra: Runtime) -> dict[str, Runtime]:
    """The registry's real adapters, plus fakes for hardware that cannot exist here."""
    from runtimes.registry import all_runtimes

    return {**all_runtimes(), **extra}


def tree_snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root`` with its size and content hash (directories as entries too)."""
    import hashlib

    out: dict[str, tuple[int, str]] = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel == ".lock":
            continue
        if p.is_dir():
            out[rel + "/"] = (0, "")
        else:
            data = p.read_bytes()
            out[rel] = (len(data), hashlib.sha256(data).hexdigest())
    return out
