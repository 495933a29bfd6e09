"""FP16 / INT8 quantization into a new signed version: loadable, within tolerance, deltas recorded.

Stated tolerances on this MLP (64→256→256→8, outputs of order 1-4), as the
largest error relative to the largest FP32 output: fp16 ≤ 0.5 %,
int8-dynamic ≤ 8 %, int8-static ≤ 12 %. Measured here on the smoke and
calibration sets: ~0.03 %, ~2.5 %, ~3.3 %; static int8 reaches ~8-9 % on a
held-out set the 48 calibration rows did not cover (clipped activations).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.errors import BadRequestError, ConflictError
from models.choose import Policy
from models.manager import ManagerSettings, ModelManager
from models.quantize import load_calibration, next_version, quantize_model
from models.store import ModelStore
from runtimes.base import LoadOptions, TensorSpec
from runtimes.onnxrt import OnnxRuntime
from tests.models_fixtures import MLP_Q, build_bundle, real_runtimes, signing_key
from tests.modelzoo import mlp_input, mlp_reference

REL_TOL = {"fp16": 0.005, "int8-dynamic": 0.08, "int8-static": 0.12}
SIZE_MAX = {"fp16": 0.55, "int8-dynamic": 0.30, "int8-static": 0.30}


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("calib")
    for i in range(12):
        np.save(d / f"s{i:02d}.npy", mlp_input(MLP_Q, batch=4, seed=100 + i).astype(np.float64))
    return d


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory, calib_dir: Path):
    base = tmp_path_factory.mktemp("q")
    store = ModelStore(base / "store")
    store.install(build_bundle(base / "bundle", MLP_Q), [signing_key().public_hex])
    results = {
        method: quantize_model(
            store,
            "mlp-q",
            method,
            private_key_hex=signing_key().private_hex,
            trusted_keys=[signing_key().public_hex],
            version="1.0.0",
            calibration=calib_dir,
            progress=False,
        )
        for method in REL_TOL
    }
    return store, results


@pytest.mark.parametrize("method", list(REL_TOL))
def test_quantized_variant_is_installed_signed_and_within_tolerance(quantized, method: str) -> None:
    store, results = quantized
    r = results[method]
    q = r.quantization
    assert (
        r.version
        == {"fp16": "1.0.0+fp16", "int8-dynamic": "1.0.0+int8", "int8-static": "1.0.0+int8s"}[method]
    )
    assert not r.installed.active and store.active_version("mlp-q") == "1.0.0"
    assert store.verify("mlp-q", r.version, [signing_key().public_hex]).ok
    labels = [v.label for v in r.installed.manifest.variants]
    assert labels == ["onnxruntime/fp32", f"onnxruntime/{r.variant.precision}"]
    # deltas and sizes are recorded in the signed manifest
    assert q.method == method and q.source_precision == "fp32" and q.calibration_samples == 12
    assert 0 < q.size < SIZE_MAX[method] * q.source_size
    assert q.size == r.installed.manifest.file(r.variant.model_file).size
    assert 0 < q.max_rel_error <= REL_TOL[method] and 0 < q.calibration_max_rel_error <= REL_TOL[method]
    assert r.variant.atol == pytest.approx(max(1e-4, 2 * q.max_abs_error))
    # the file loads and computes what the recorded drift says, against a plain-numpy reference
    sess = OnnxRuntime().load(r.installed.file_path(r.variant.model_file), "CPU", LoadOptions())
    try:
        x = mlp_input(MLP_Q, batch=16, seed=7)
        ref = mlp_reference(MLP_Q, x)
        got = sess.run({"x": x})["y"]
        assert got.dtype == np.float32 and got.shape == ref.shape  # keep_io_types / QDQ keep float I/O
        assert np.max(np.abs(got - ref)) <= REL_TOL[method] * np.max(np.abs(ref))
    finally:
        sess.close()
    d = r.to_dict()
    assert d["size_ratio"] == pytest.approx(q.size / q.source_size, abs=1e-4)


async def test_manager_loads_the_quantized_variant_by_policy(quantized) -> None:
    store, results = quantized
    store.activate("mlp-q", results["int8-dynamic"].version)
    settings = ManagerSettings(
        memory_budget_bytes=1 << 30,
        idle_timeout_s=None,
        threads=1,
        policy=Policy(precisions=("int8", "fp32")),
    )
    async with ModelManager(store, settings, runtimes=real_runtimes()) as mgr:
        st = await mgr.load("mlp-q")  # the smoke test runs at load, with the widened tolerance
        assert st["precision"] == "int8"
        assert all(f["category"] != "load_failed" for f in st["fallback"])
        x = mlp_input(MLP_Q, batch=4, seed=3)
        out = await mgr.infer("mlp-q", {"x": x})
        ref = mlp_reference(MLP_Q, x)
        assert np.max(np.abs(out["y"] - ref)) <= REL_TOL["int8-dynamic"] * np.max(np.abs(ref))
    store.activate("mlp-q", "1.0.0")


def test_quantize_errors(quantized, tmp_path: Path) -> None:
    store, _ = quantized
    kw = dict(
        private_key_hex=signing_key().private_hex, trusted_keys=[signing_key().public_hex], version="1.0.0"
    )
    with pytest.raises(BadRequestError, match="needs calibration"):
        quantize_model(store, "mlp-q", "int8-static", new_version="9", **kw)
    with pytest.raises(BadRequestError, match="not one of"):
        quantize_model(store, "mlp-q", "int4", **kw)
    with pytest.raises(
        ConflictError, match="immutable"
    ):  # same version, different bytes (no calibration now)
        quantize_model(store, "mlp-q", "fp16", **{**kw, "version": "1.0.0+int8"}, new_version="1.0.0+fp16")
    # quantizing a quantized version: source is still its fp32 variant; the version tag stacks
    r = quantize_model(store, "mlp-q", "fp16", **{**kw, "version": "1.0.0+int8"})
    assert r.version == "1.0.0+int8.fp16" and next_version("2", "int8-static") == "2+int8s"
    assert [v.label for v in r.installed.manifest.variants] == [
        "onnxruntime/fp32",
        "onnxruntime/int8",
        "onnxruntime/fp16",
    ]


def test_calibration_formats_and_errors(tmp_path: Path, calib_dir: Path) -> None:
    spec = (TensorSpec("x", "float32", (None, 64)),)
    samples = load_calibration(calib_dir, spec)
    assert len(samples) == 12 and samples[0]["x"].dtype == np.float32  # float64 cast to the input dtype
    stacked = tmp_path / "stacked.npz"
    np.savez(stacked, x=np.stack([mlp_input(MLP_Q, batch=2, seed=i) for i in range(5)]))
    assert len(load_calibration(stacked, spec)) == 5
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 3), np.float32))
    with pytest.raises(BadRequestError, match=r"shape \[2, 3\] does not fit input 'x'"):
        load_calibration(bad, spec)
    np.save(bad, np.zeros((2, 64), np.int32))
    with pytest.raises(BadRequestError, match="dtype int32"):
        load_calibration(bad, spec)
    wrong_key = tmp_path / "k.npz"
    np.savez(wrong_key, z=np.zeros((2, 64), np.float32))
    with pytest.raises(BadRequestError, match="the model takes"):
        load_calibration(wrong_key, spec)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadRequestError, match="no .npy"):
        load_calibration(tmp_path / "empty", spec)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(BadRequestError, match="cannot be read"):
        load_calibration(tmp_path / "junk.npy", spec)
