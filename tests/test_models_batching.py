"""Queued calls to one model sharing a run (``batch_max``), on real onnxruntime sessions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from agent.models_service import manager_settings
from agent.settings_features import ModelsSettings
from models import batching
from models.manager import ManagerSettings, ModelManager
from models.store import ModelStore
from runtimes.base import LoadOptions
from runtimes.onnxrt import OnnxRuntime
from tests.models_fixtures import MLP_A, build_bundle, real_runtimes, signing_key
from tests.modelzoo import build_mlp_onnx, mlp_input, mlp_reference

CALLS = 12


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    base = tmp_path_factory.mktemp("batching")
    s = ModelStore(base / "models")
    s.install(build_bundle(base / "a", MLP_A), [signing_key().public_hex])
    return s


def _settings(batch_max: int) -> ManagerSettings:
    # inline_below_ms=0: the tiny model's calls go through the inference threads, where batches form
    return ManagerSettings(
        memory_budget_bytes=1 << 28,
        idle_timeout_s=None,
        workers=1,
        threads=1,
        inline_below_ms=0,
        batch_max=batch_max,
        max_waiting=4 * CALLS,
    )


async def _queued_calls(
    mgr: ModelManager, rows: list[int], priority: str = "batch"
) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]], int]:
    """Hold the model's only session, queue one call per entry of ``rows``, let go; (inputs, outputs, runs)."""
    await mgr.load("mlp-a")
    pool = mgr._loaded["mlp-a"].pool
    xs = [mlp_input(MLP_A, batch=n, seed=i) for i, n in enumerate(rows)]
    async with mgr.use("mlp-a"):
        runs_before = pool.calls
        calls = [asyncio.ensure_future(mgr.infer("mlp-a", {"x": x}, priority)) for x in xs]
        await asyncio.sleep(0)  # each call's first step: into the queue
        assert pool.waiting == len(rows)  # all queued before the session is free
    outs = await asyncio.wait_for(asyncio.gather(*calls), 30)
    return xs, outs, pool.calls - runs_before


async def test_queued_batch_calls_share_runs_and_each_gets_its_own_rows(store: ModelStore) -> None:
    rows = [1 + i % 3 for i in range(CALLS)]  # 1, 2, 3 rows: joined and cut back apart
    async with ModelManager(store, _settings(4), runtimes=real_runtimes()) as mgr:
        xs, outs, runs = await _queued_calls(mgr, rows)
        assert mgr.model_status("mlp-a")["batch_max"] == 4
    assert runs == CALLS // 4  # the head call and three riders each time
    for x, out in zip(xs, outs, strict=True):
        assert out["y"].shape == (x.shape[0], MLP_A.dims[-1])
        np.testing.assert_allclose(out["y"], mlp_reference(MLP_A, x), rtol=1e-5, atol=1e-5)


async def test_off_by_default_and_never_for_realtime_calls(store: ModelStore) -> None:
    async with ModelManager(store, _settings(1), runtimes=real_runtimes()) as mgr:
        _, _, runs = await _queued_calls(mgr, [2] * CALLS)
    assert runs == CALLS
    async with ModelManager(store, _settings(4), runtimes=real_runtimes()) as mgr:
        xs, outs, runs = await _queued_calls(mgr, [2] * CALLS, "realtime")
    assert runs == CALLS
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_allclose(out["y"], mlp_reference(MLP_A, x), rtol=1e-5, atol=1e-5)


def test_a_model_without_a_batch_axis_runs_one_call_at_a_time(tmp_path: Path) -> None:
    fixed = build_mlp_onnx(MLP_A, tmp_path / "fixed.onnx", dynamic_batch=False)
    dynamic = build_mlp_onnx(MLP_A, tmp_path / "dynamic.onnx")
    rt = OnnxRuntime()
    settings = _settings(8)
    assert batching.limit(settings, "m", rt.load(fixed, "CPU", LoadOptions(threads=1))) == 1
    assert batching.limit(settings, "m", rt.load(dynamic, "CPU", LoadOptions(threads=1))) == 8


def test_only_matching_feeds_share_a_run() -> None:
    a = {"x": np.zeros((2, 4), np.float32)}
    assert batching.compatible(a, {"x": np.ones((5, 4), np.float32)})
    assert not batching.compatible(a, {"x": np.zeros((2, 5), np.float32)})  # another shape past rows
    assert not batching.compatible(a, {"x": np.zeros((2, 4), np.float64)})  # another dtype
    assert not batching.compatible(a, {"x": a["x"], "h": a["x"]})  # other inputs


def test_an_output_without_a_row_per_input_row_is_refused() -> None:
    feed, rows = batching.merge([{"x": np.zeros((2, 4))}, {"x": np.zeros((3, 4))}])
    assert rows == [2, 3] and feed["x"].shape == (5, 4)
    parts = batching.split({"y": np.arange(5.0)}, rows)
    assert [p["y"].tolist() for p in parts] == [[0.0, 1.0], [2.0, 3.0, 4.0]]
    with pytest.raises(batching.BatchShapeError, match="set its batch_max to 1"):
        batching.split({"y": np.zeros((1, 4))}, rows)  # e.g. a mean over the batch


def test_the_daemon_setting_reaches_the_manager() -> None:
    assert manager_settings(ModelsSettings()).batch_max == 1
    assert manager_settings(ModelsSettings(batch_max=8)).batch_max == 8
