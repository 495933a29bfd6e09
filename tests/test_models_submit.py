"""``manager.infer()`` hands back a future: the call is queued at once, no task per call (real onnxruntime)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.errors import BadRequestError, ConflictError, ResourceExhaustedError
from models.manager import ManagerSettings, ModelManager
from models.store import ModelStore
from tests.models_fixtures import MLP_A, build_bundle, real_runtimes, signing_key
from tests.modelzoo import mlp_input, mlp_reference

MiB = 1 << 20


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("submit") / "a", MLP_A, memory_bytes=100 * MiB)


@pytest.fixture
def store(tmp_path: Path, bundle: Path) -> ModelStore:
    s = ModelStore(tmp_path / "models")
    s.install(bundle, [signing_key().public_hex])
    return s


def _manager(store: ModelStore, **kw: Any) -> ModelManager:
    base: dict[str, Any] = dict(
        memory_budget_bytes=250 * MiB,
        idle_timeout_s=None,
        workers=1,
        threads=1,
        pool_size=1,
        inline_below_ms=0,
    )
    base.update(kw)
    return ModelManager(store, ManagerSettings(**base), runtimes=real_runtimes())


def _x(seed: int) -> np.ndarray:
    return mlp_input(MLP_A, seed=seed)


async def test_the_call_is_queued_when_infer_returns_and_holds_the_model(store: ModelStore) -> None:
    async with _manager(store) as mgr:
        await mgr.load("mlp-a")
        async with mgr.use("mlp-a"):  # the only session is held: calls queue behind it
            futures = [mgr.infer("mlp-a", {"x": _x(i)}) for i in range(3)]
            assert all(isinstance(f, asyncio.Future) and not f.done() for f in futures)
            st = mgr.model_status("mlp-a")  # no await in between: queued by infer() itself
            assert st["waiting"] == 3 and st["refcount"] == 4  # the lease and the three calls
            with pytest.raises(ConflictError, match="in use by 4 request"):
                await mgr.unload("mlp-a")
        outs = await asyncio.wait_for(asyncio.gather(*futures), 10)
        for i, out in enumerate(outs):
            np.testing.assert_allclose(out["y"], mlp_reference(MLP_A, _x(i)), atol=1e-4)
        st = mgr.model_status("mlp-a")
        assert st["refcount"] == 0 and st["waiting"] == 0
        assert st["latency"]["count"] == 3 and st["queue_wait"]["count"] == 4  # and the lease's wait
        assert await mgr.unload("mlp-a")


async def test_a_cancelled_call_leaves_the_queue_and_never_runs(store: ModelStore) -> None:
    async with _manager(store) as mgr:
        await mgr.load("mlp-a")
        async with mgr.use("mlp-a"):
            leaving = mgr.infer("mlp-a", {"x": _x(1)})
            staying = mgr.infer("mlp-a", {"x": _x(2)})
            leaving.cancel()
            st = mgr.model_status("mlp-a")
            assert st["waiting"] == 1 and st["refcount"] == 2
        out = await asyncio.wait_for(staying, 10)
        np.testing.assert_allclose(out["y"], mlp_reference(MLP_A, _x(2)), atol=1e-4)
        st = mgr.model_status("mlp-a")
        assert st["latency"]["count"] == 1  # the cancelled call did not run
        assert st["refcount"] == 0 and st["waiting"] == 0
        assert await mgr.unload("mlp-a")


async def test_calls_given_up_do_not_fill_the_waiting_line(store: ModelStore) -> None:
    async with _manager(store, max_waiting=2) as mgr:
        await mgr.load("mlp-a")
        async with mgr.use("mlp-a"):
            first = [mgr.infer("mlp-a", {"x": _x(i)}) for i in range(2)]
            with pytest.raises(ResourceExhaustedError, match="2 requests already waiting"):
                await mgr.infer("mlp-a", {"x": _x(3)})
            for f in first:
                f.cancel()
            again = [mgr.infer("mlp-a", {"x": _x(i)}) for i in range(2)]  # room again at once
            assert mgr.model_status("mlp-a")["waiting"] == 2
        assert len(await asyncio.wait_for(asyncio.gather(*again), 10)) == 2
        assert mgr.model_status("mlp-a")["rejected"] == 1


async def test_errors_are_the_futures_and_a_model_not_loaded_loads_first(store: ModelStore) -> None:
    async with _manager(store) as mgr:
        bad = mgr.infer("mlp-a", {"nope": _x(1)})  # not loaded yet: loads, then checks the feed
        with pytest.raises(BadRequestError):
            await bad
        bad_again = mgr.infer("mlp-a", {"nope": _x(1)})  # loaded: refused at once, in the future
        assert bad_again.done()
        with pytest.raises(BadRequestError):
            await bad_again
        out = await asyncio.wait_for(mgr.infer("mlp-a", {"x": _x(4)}), 10)
        np.testing.assert_allclose(out["y"], mlp_reference(MLP_A, _x(4)), atol=1e-4)
