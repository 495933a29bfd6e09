"""Pack a directory of model files into a bundle: manifest (hashes, tensors, smoke test), optionally signed.

What ``edge-agent models pack DIR`` and ``edge-hub bundle build DIR`` do for
a model: every ``*.onnx`` becomes an onnxruntime fp32 variant (``*.tflite`` a
LiteRT one, an ``*.xml`` with its ``*.bin`` an OpenVINO one); the inputs and
outputs are read from the first ONNX model through the onnxruntime adapter,
which also runs it once on a fixed input to record the smoke test the box
replays before it activates the bundle. The result is ``DIR/manifest.json``
(signed when a key is given; the hub signs an unsigned one on upload) and a
reproducible tar beside it, ready for ``edge-hub deploy``.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from agent.core.errors import BadRequestError
from models.bundle import make_manifest
from models.manifest import MANIFEST_FILE, Manifest, SmokeTest, Variant, sign_manifest, unsigned
from runtimes.base import TensorSpec

_NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def variants_in(directory: Path) -> list[Variant]:
    """One variant per model file found in ``directory`` (top level), in a stable order."""
    out: list[Variant] = []
    for path in sorted(directory.glob("*.onnx")):
        out.append(Variant("onnxruntime", "fp32", (path.name,)))
    for path in sorted(directory.glob("*.tflite")):
        out.append(Variant("litert", "fp32", (path.name,)))
    for path in sorted(directory.glob("*.xml")):
        if path.with_suffix(".bin").is_file():
            out.append(Variant("openvino", "fp32", (path.name, path.with_suffix(".bin").name)))
    return out


def _probe(model: Path, seed: int) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], SmokeTest]:
    """Tensors of an ONNX model and a smoke test: its outputs for a fixed input (dynamic dims -> 1)."""
    import numpy as np

    from models.tensors import encode_tensor
    from runtimes.base import LoadOptions
    from runtimes.onnxrt import OnnxRuntime

    runtime = OnnxRuntime()
    runtime.require()
    session = runtime.load(model, "cpu", LoadOptions(threads=1, warmup=False))
    try:
        rng = np.random.default_rng(seed)
        feed: dict[str, Any] = {}
        for spec in session.inputs:
            shape = tuple(d if d is not None else 1 for d in spec.shape)
            if spec.dtype.startswith("float"):
                feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            elif spec.dtype.startswith(("int", "uint")):
                feed[spec.name] = rng.integers(0, 2, size=shape).astype(spec.dtype)
            else:
                raise BadRequestError(
                    f"{model.name}: input {spec.name} is {spec.dtype}; pack makes smoke tests for numeric "
                    "inputs only (pass --no-smoke)"
                )
        outputs = session.run(feed)
        smoke = SmokeTest(
            inputs={k: encode_tensor(v) for k, v in feed.items()},
            outputs={k: encode_tensor(np.asarray(v)) for k, v in outputs.items()},
            atol=1e-4,
            rtol=1e-3,
        )
        return tuple(session.inputs), tuple(session.outputs), smoke
    finally:
        session.close()


def pack_directory(
    directory: Path,
    *,
    name: str,
    version: str,
    task: str = "custom",
    description: str = "",
    private_hex: str | None = None,
    smoke: bool = True,
    seed: int = 0,
) -> Manifest:
    """Write ``directory/manifest.json`` for the model files in it (signed with ``private_hex`` when given)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BadRequestError(f"{directory} is not a directory of model files")
    if not name or not set(name) <= _NAME_OK or len(name) > 64:
        raise BadRequestError(f"model name {name!r}: use 1-64 lowercase letters, digits, '-', '_' or '.'")
    if not version or len(version) > 64 or any(c.isspace() or c == "/" for c in version):
        raise BadRequestError(f"version {version!r}: expected something like 1.2.0")
    variants = variants_in(directory)
    onnx = [v for v in variants if v.runtime == "onnxruntime"]
    if not onnx:
        raise BadRequestError(
            f"{directory} holds no .onnx model; pack reads the tensors and the smoke test from one "
            "(other formats may sit beside it: .tflite, .xml + .bin)"
        )
    inputs, outputs, test = _probe(directory / onnx[0].files[0], seed)
    files_size = sum((directory / f).stat().st_size for v in variants for f in v.files)
    manifest = make_manifest(
        directory,
        name=name,
        version=version,
        task=task,
        variants=variants,
        memory_bytes=max(1 << 20, 3 * files_size),
        inputs=inputs,
        outputs=outputs,
        smoke_test=test if smoke else None,
        description=description,
    )
    signed = sign_manifest(manifest, private_hex) if private_hex else unsigned(manifest)
    (directory / MANIFEST_FILE).write_bytes(signed.to_json())
    return manifest


def tar_directory(directory: Path, out: Path) -> Path:
    """A reproducible tar of the bundle's manifest and the files it names (sorted, zero times and owners)."""
    directory = Path(directory)
    doc = json.loads((directory / MANIFEST_FILE).read_bytes())
    body = doc.get("manifest", {})
    names = [MANIFEST_FILE, *(f["path"] for f in body.get("files", []))]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(dict.fromkeys(names)):
            path = directory / rel
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    Path(out).write_bytes(buf.getvalue())
    return Path(out)


__all__ = ["pack_directory", "tar_directory", "variants_in"]
