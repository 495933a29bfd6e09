"""ModelManager on real onnxruntime sessions: budget, LRU, pins, leases, pools, priorities, status."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agent.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from models.choose import Policy
from models.manager import ManagerSettings, ModelManager
from models.manifest import Variant
from models.scheduling import Priority
from models.store import ModelStore
from tests.models_fixtures import (
    MLP_A,
    MLP_B,
    MLP_HEAVY,
    FakeNpuRuntime,
    build_bundle,
    real_runtimes,
    signing_key,
)
from tests.modelzoo import mlp_input, mlp_reference

MiB = 1 << 20
DECLARED = 100 * MiB


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("mgr")
    cache = base / "cache"
    cache.mkdir()

    def mk(key, spec, **kw):
        return build_bundle(
            base / key, spec, memory_bytes=kw.pop("memory_bytes", DECLARED), model_cache=cache, **kw
        )

    return {
        "a": mk("a", MLP_A),
        "a2": mk("a2", MLP_A, version="2.0.0", runtimes=("openvino",)),
        "b": mk("b", MLP_B),
        "c": mk("c", MLP_A, name="mlp-c"),
        "heavy": mk("heavy", MLP_HEAVY, memory_bytes=1000, smoke=False),
        "rknn-only": mk(
            "rk",
            MLP_A,
            name="rk-only",
            runtimes=(),
            extra_variants=[Variant("rknn", "int8", ("model.onnx",))],
        ),
        "npu": mk(
            "npu", MLP_A, name="npu-model", extra_variants=[Variant("fakenpu", "int8", ("model.onnx",))]
        ),
    }


@pytest.fixture
def store(tmp_path: Path, bundles: dict[str, Path]) -> ModelStore:
    s = ModelStore(tmp_path / "models")
    for key in ("a", "b", "c"):
        s.install(bundles[key], [signing_key().public_hex])
    return s


def _settings(**kw) -> ManagerSettings:
    base = dict(memory_budget_bytes=250 * MiB, idle_timeout_s=None, workers=2, threads=1)
    base.update(kw)
    return ManagerSettings(**base)


def _x(spec, batch=2, seed=0):
    return mlp_input(spec, batch=batch, seed=seed)


async def test_load_on_first_use_and_status(store: ModelStore) -> None:
    async with ModelManager(store, _settings(), runtimes=real_runtimes()) as mgr:
        assert mgr.loaded_names() == []
        x = _x(MLP_A, 3)
        out = await asyncio.wait_for(mgr.infer("mlp-a", {"x": x}), 10)
        np.testing.assert_allclose(out["y"], mlp_reference(MLP_A, x), atol=1e-4)
        st = mgr.model_status("mlp-a")
        assert st["loaded"] and st["runtime"] == "onnxruntime" and st["device"] == "CPU"
        assert st["precision"] == "fp32" and st["version"] == "1.0.0" and st["refcount"] == 0
        assert st["memory_declared_bytes"] == DECLARED and st["memory_bytes"] >= DECLARED
        assert st["memory_measured_bytes"] is not None
        assert st["latency"]["count"] == 1 and st["latency"]["p95_ms"] >= st["latency"]["p50_ms"] > 0
        full = await mgr.status_async()
        assert [m["name"] for m in full["models"]] == ["mlp-a", "mlp-b", "mlp-c"]
        assert full["memory_used_bytes"] == st["memory_bytes"]
        assert full["models"][1]["would_run_on"] == "onnxruntime/fp32@CPU" and not full["models"][1]["loaded"]
        with pytest.raises(NotFoundError):
            await mgr.infer("nope", {"x": x})


async def test_lru_eviction_order(store: ModelStore) -> None:
    async with ModelManager(store, _settings(), runtimes=real_runtimes()) as mgr:
        await mgr.load("mlp-a")
        await mgr.load("mlp-b")
        await mgr.infer("mlp-a", {"x": _x(MLP_A)})  # a is now more recent than b
        await mgr.load("mlp-c")
        assert mgr.loaded_names() == ["mlp-a", "mlp-c"]  # b, least recently used, went
        await mgr.infer("mlp-b", {"x": _x(MLP_B)})  # loads again, evicting a (older than c)
        assert mgr.loaded_names() == ["mlp-b", "mlp-c"]
        assert mgr.used_bytes() <= mgr.budget_bytes


async def test_pinned_models_are_never_evicted(store: ModelStore) -> None:
    async with ModelManager(store, _settings(pinned=("mlp-a",)), runtimes=real_runtimes()) as mgr:
        assert mgr.loaded_names() == ["mlp-a"]  # pinned models load at start
        await mgr.load("mlp-b")
        await mgr.load("mlp-c")  # a is the least recently used, but pinned: b goes
        assert mgr.loaded_names() == ["mlp-a", "mlp-c"]
        assert (await mgr.sweep_idle(now=time.monotonic() + 1e6)) == []  # no idle timeout set
        with pytest.raises(ConflictError, match="pinned"):
            await mgr.unload("mlp-a")
        assert await mgr.unload("mlp-a", force=True)
        assert not mgr.model_status("mlp-a")["pinned"]


async def test_in_use_model_is_protected_and_all_pinned_is_refused(store: ModelStore) -> None:
    async with ModelManager(store, _settings(), runtimes=real_runtimes()) as mgr:
        await mgr.pin("mlp-a")
        async with mgr.use("mlp-b") as lease:
            assert lease.name == "mlp-b" and mgr.model_status("mlp-b")["refcount"] == 1
            with pytest.raises(ConflictError, match="in use"):
                await mgr.unload("mlp-b", force=True)
            with pytest.raises(ResourceExhaustedError) as err:
                await mgr.load("mlp-c")
            msg = str(err.value)
            assert err.value.code == "memory_budget"
            assert "mlp-a (100.0 MiB, pinned)" in msg and "mlp-b (100.0 MiB, in use by 1)" in msg
            assert "raise models.memory_budget" in msg
            # the lease still works: nothing was unloaded under it
            out = await lease.infer({"x": _x(MLP_B)})
            np.testing.assert_allclose(out["y"], mlp_reference(MLP_B, _x(MLP_B)), atol=1e-4)
        await mgr.load("mlp-c")  # b released: now evictable
        assert mgr.loaded_names() == ["mlp-a", "mlp-c"]
        await mgr.pin("mlp-c")
        with pytest.raises(ResourceExhaustedError, match="cannot be unloaded"):
            await mgr.load("mlp-b")
        assert mgr.loaded_names() == ["mlp-a", "mlp-c"]
        assert "cannot be unloaded" in mgr.model_status("mlp-b")["last_error"]


async def test_model_larger_than_budget(store: ModelStore) -> None:
    async with ModelManager(store, _settings(memory_budget_bytes=50 * MiB), runtimes=real_runtimes()) as mgr:
        with pytest.raises(ResourceExhaustedError, match="more than the whole model memory budget"):
            await mgr.load("mlp-a")


async def test_idle_unload(store: ModelStore) -> None:
    settings = _settings(idle_timeout_s=30.0, idle_check_interval_s=3600, pinned=("mlp-b",))
    async with ModelManager(store, settings, runtimes=real_runtimes()) as mgr:
        await mgr.load("mlp-a")
        assert await mgr.sweep_idle() == []  # not idle long enough
        async with mgr.use("mlp-a"):
            assert await mgr.sweep_idle(now=time.monotonic() + 60) == []  # leased
        assert await mgr.sweep_idle(now=time.monotonic() + 60) == ["mlp-a"]
        assert mgr.loaded_names() == ["mlp-b"]


#: the load of test_measured_rss_refines_an_underdeclared_manifest, in a fresh interpreter
_MEASURE_LOAD = """
import asyncio, json, sys
from models.manager import ModelManager
from models.store import ModelStore
from tests.models_fixtures import real_runtimes
from tests.test_models_manager import _settings

async def main():
    async with ModelManager(ModelStore(sys.argv[1]), _settings(), runtimes=real_runtimes()) as mgr:
        await mgr.load("mlp-heavy")
        print(json.dumps(mgr.model_status("mlp-heavy")))

asyncio.run(main())
"""


def test_measured_rss_refines_an_underdeclared_manifest(tmp_path: Path, bundles: dict[str, Path]) -> None:
    """The load's RSS growth, measured in a process of its own: RSS is the whole process's, and in
    a full test run memory that earlier tests free meanwhile (their sessions, on other threads) can
    take the weights without RSS growing (measured: 8 KiB, 90 KiB and 3.5 MiB for 8 MiB of weights)."""
    store = ModelStore(tmp_path / "m")
    store.install(bundles["heavy"], [signing_key().public_hex])
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE_LOAD, str(tmp_path / "m")],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout.strip().splitlines()[-1])
    # 8 MiB of fp32 weights; the manifest claims 1000 bytes
    assert st["memory_declared_bytes"] == 1000
    assert st["memory_measured_bytes"] >= 4 * MiB
    assert st["memory_bytes"] == st["memory_measured_bytes"]


async def test_two_models_concurrently(store: ModelStore) -> None:
    settings = _settings(pool_size=2, workers=2, memory_budget_bytes=400 * MiB, max_waiting=200)
    async with ModelManager(store, settings, runtimes=real_runtimes()) as mgr:
        calls = []
        for i in range(100):
            calls.append(("mlp-a", MLP_A, _x(MLP_A, 1 + i % 4, seed=i)))
            calls.append(("mlp-b", MLP_B, _x(MLP_B, 1 + i % 3, seed=i)))
        results = await asyncio.wait_for(
            asyncio.gather(*(mgr.infer(n, {"x": x}) for n, _, x in calls)),
            timeout=30,
        )
        for (_, spec, x), out in zip(calls, results, strict=True):
            np.testing.assert_allclose(out["y"], mlp_reference(spec, x), atol=1e-4)
        for name in ("mlp-a", "mlp-b"):
            st = mgr.model_status(name)
            assert st["latency"]["count"] == 100 and st["pool_size"] == 2 and st["refcount"] == 0


async def test_realtime_is_served_before_batch(store: ModelStore) -> None:
    async with ModelManager(store, _settings(pool_size=1, workers=1), runtimes=real_runtimes()) as mgr:
        order: list[str] = []

        async def call(label: str, prio: Priority) -> None:
            await mgr.infer("mlp-a", {"x": _x(MLP_A)}, priority=prio)
            order.append(label)

        async with mgr.use("mlp-a"):  # hold the only session: everyone queues
            tasks = [asyncio.create_task(call(f"batch{i}", Priority.BATCH)) for i in range(3)]
            tasks.append(asyncio.create_task(call("interactive", Priority.INTERACTIVE)))
            tasks.append(asyncio.create_task(call("realtime", "realtime")))
            for _ in range(200):
                if mgr.model_status("mlp-a")["waiting"] == 5:
                    break
                await asyncio.sleep(0.01)
            assert mgr.model_status("mlp-a")["waiting"] == 5
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert order == ["realtime", "interactive", "batch0", "batch1", "batch2"]


async def test_bounded_queue_rejects(store: ModelStore) -> None:
    async with ModelManager(store, _settings(pool_size=1, max_waiting=2), runtimes=real_runtimes()) as mgr:
        async with mgr.use("mlp-a"):
            waiting = [asyncio.ensure_future(mgr.infer("mlp-a", {"x": _x(MLP_A)})) for _ in range(2)]
            await asyncio.sleep(0.05)
            with pytest.raises(ResourceExhaustedError, match="already waiting"):
                await mgr.infer("mlp-a", {"x": _x(MLP_A)})
        await asyncio.wait_for(asyncio.gather(*waiting), 10)
        assert mgr.model_status("mlp-a")["rejected"] == 1


async def test_bad_feed_is_a_bad_request(store: ModelStore) -> None:
    async with ModelManager(store, _settings(), runtimes=real_runtimes()) as mgr:
        with pytest.raises(BadRequestError, match="dtype"):
            await mgr.infer("mlp-a", {"x": _x(MLP_A).astype(np.float64)})
        with pytest.raises(BadRequestError, match="missing"):
            await mgr.infer("mlp-a", {"z": _x(MLP_A)})
        assert mgr.model_status("mlp-a")["refcount"] == 0


async def test_engine_missing_says_which_extra(store: ModelStore, bundles: dict[str, Path]) -> None:
    store.install(bundles["rknn-only"], [signing_key().public_hex])
    async with ModelManager(store, _settings(), runtimes=real_runtimes()) as mgr:
        st = next(m for m in (await mgr.status_async())["models"] if m["name"] == "rk-only")
        assert st["missing_extras"] == ["rknn"] and "edge-agent[rknn]" in st["install_hint"]
        assert "cannot run here" in st["unavailable"]
        with pytest.raises(UnavailableError, match=r"edge-agent\[rknn\]"):
            await mgr.load("rk-only")
        st = mgr.model_status("rk-only")
        assert "rknn" in st["last_error"] and st["fallback"][0]["category"] == "engine_missing"


async def test_fallback_reason_is_recorded_and_loads_are_shared(
    store: ModelStore, bundles: dict[str, Path]
) -> None:
    store.install(bundles["npu"], [signing_key().public_hex])
    npu = FakeNpuRuntime("garbage")
    async with ModelManager(store, _settings(), runtimes=real_runtimes(fakenpu=npu)) as mgr:
        x = _x(MLP_A)
        outs = await asyncio.wait_for(
            asyncio.gather(*(mgr.infer("npu-model", {"x": x}) for _ in range(8))), 10
        )
        assert npu.loads == 1  # eight first-use callers, one load
        for out in outs:
            np.testing.assert_allclose(out["y"], mlp_reference(MLP_A, x), atol=1e-4)
        st = mgr.model_status("npu-model")
        assert st["device_kind"] == "cpu"
        failed = [f for f in st["fallback"] if f["category"] == "load_failed"]
        assert (
            failed and failed[0]["what"] == "fakenpu/int8@NPU" and "smoke test failed" in failed[0]["reason"]
        )


async def test_load_a_version_replaces_the_loaded_one(store: ModelStore, bundles: dict[str, Path]) -> None:
    store.install(bundles["a2"], [signing_key().public_hex], activate=False)
    async with ModelManager(store, _settings(), runtimes=real_runtimes()) as mgr:
        assert (await mgr.load("mlp-a"))["version"] == "1.0.0"
        await mgr.pin("mlp-a")
        st = await mgr.load("mlp-a", version="2.0.0")
        assert st["version"] == "2.0.0" and st["runtime"] == "openvino" and st["pinned"]
        x = _x(MLP_A)
        out = await mgr.infer("mlp-a", {"x": x})
        np.testing.assert_allclose(out["y"], mlp_reference(MLP_A, x), atol=1e-4)
        async with mgr.use("mlp-a"):
            with pytest.raises(ConflictError, match="in use"):
                await mgr.load("mlp-a", version="1.0.0")
        # no version: the store's active one (still 1.0.0) replaces 2.0.0
        assert (await mgr.load("mlp-a"))["version"] == "1.0.0"
        mgr.unpin("mlp-a")
        assert await mgr.unload("mlp-a") and not await mgr.unload("mlp-a")


@pytest.mark.parametrize(
    ("prefer", "file"), [("openvino", "model.xml"), ("litert", "model.tflite"), ("onnxruntime", "model.onnx")]
)
async def test_every_engine_variant_serves(tmp_path: Path, prefer: str, file: str) -> None:
    """One bundle with .onnx, .xml+.bin and .tflite variants; policy picks the engine, outputs agree."""
    bundle = build_bundle(tmp_path / "b", MLP_A, runtimes=("onnxruntime", "openvino-ir", "litert"))
    store = ModelStore(tmp_path / "m")
    m = store.install(bundle, [signing_key().public_hex])
    assert {f.path for f in m.manifest.files} == {"model.onnx", "model.xml", "model.bin", "model.tflite"}
    settings = _settings(policy=Policy(runtimes=(prefer,)))
    async with ModelManager(store, settings, runtimes=real_runtimes()) as mgr:
        x = _x(MLP_A, 1)
        out = await mgr.infer("mlp-a", {"x": x})
        np.testing.assert_allclose(out["y"], mlp_reference(MLP_A, x), atol=1e-4)
        st = mgr.model_status("mlp-a")
        assert st["runtime"] == prefer
        assert m.manifest.variant(prefer).model_file == file


async def test_the_sweeper_task_unloads_idle_models(store: ModelStore) -> None:
    settings = _settings(idle_timeout_s=0.05, idle_check_interval_s=0.02)
    async with ModelManager(store, settings, runtimes=real_runtimes()) as mgr:
        await mgr.load("mlp-a")
        for _ in range(200):
            if not mgr.loaded_names():
                break
            await asyncio.sleep(0.01)
        assert mgr.loaded_names() == []


async def test_fast_models_run_inline_and_slow_ones_in_the_inference_threads(store: ModelStore) -> None:
    """A model measured under inline_below_ms runs on the caller's thread; with 0 every call queues."""
    for threshold, inline in ((50.0, True), (0.0, False)):
        async with ModelManager(store, _settings(inline_below_ms=threshold), runtimes=real_runtimes()) as mgr:
            for i in range(8):
                x = _x(MLP_A, seed=i)
                np.testing.assert_allclose(
                    (await mgr.infer("mlp-a", {"x": x}))["y"], mlp_reference(MLP_A, x), atol=1e-4
                )
            st = mgr.model_status("mlp-a")
            assert st["inline"] is inline and st["latency"]["count"] == 8 and st["refcount"] == 0
            async with mgr.use("mlp-a", "realtime") as lease:  # a lease runs the same way
                x = _x(MLP_A, seed=9)
                np.testing.assert_allclose(
                    (await lease.infer({"x": x}))["y"], mlp_reference(MLP_A, x), atol=1e-4
                )


async def test_a_caller_cancelled_while_queued_hands_its_turn_on(store: ModelStore) -> None:
    async with ModelManager(store, _settings(pool_size=1), runtimes=real_runtimes()) as mgr:
        async with mgr.use("mlp-a"):  # hold the only session
            leaving = asyncio.ensure_future(mgr.infer("mlp-a", {"x": _x(MLP_A)}, "realtime"))
            lease_waiter = asyncio.create_task(_lease_and_leave(mgr))
            staying = asyncio.ensure_future(mgr.infer("mlp-a", {"x": _x(MLP_A)}))
            await asyncio.sleep(0.05)
            assert mgr.model_status("mlp-a")["waiting"] == 3
            leaving.cancel()
            lease_waiter.cancel()
            await asyncio.sleep(0)
            assert mgr.model_status("mlp-a")["waiting"] == 1
        assert (await asyncio.wait_for(staying, 10))["y"].shape == (2, MLP_A.dims[-1])
        async with mgr.use("mlp-a"):  # nobody kept the session
            pass
        st = mgr.model_status("mlp-a")
        assert st["waiting"] == 0 and st["refcount"] == 0


async def test_a_lease_granted_by_an_inference_thread_reaches_its_caller(store: ModelStore) -> None:
    # The thread that frees the session hands it to the queued lease and then finds nothing to run:
    # it must wake the loop before it sleeps, or the lease waits for ever.
    settings = _settings(pool_size=1, workers=1, inline_below_ms=0)
    async with ModelManager(store, settings, runtimes=real_runtimes()) as mgr:
        for _ in range(3):
            calls = [asyncio.ensure_future(mgr.infer("mlp-a", {"x": _x(MLP_A)})) for _ in range(4)]
            await asyncio.sleep(0)  # the calls queue first; the lease queues behind them

            async def lease() -> int:
                async with mgr.use("mlp-a") as held:
                    return len((await held.infer({"x": _x(MLP_A)}))["y"])

            assert await asyncio.wait_for(lease(), 10) == 2
            assert len(await asyncio.wait_for(asyncio.gather(*calls), 10)) == 4
        st = mgr.model_status("mlp-a")
        assert st["waiting"] == 0 and st["refcount"] == 0


async def _lease_and_leave(mgr: ModelManager) -> None:
    async with mgr.use("mlp-a", "interactive"):
        raise AssertionError("cancelled before its turn")


async def test_calls_queued_at_close_are_refused_saying_why(store: ModelStore) -> None:
    mgr = ModelManager(store, _settings(pool_size=1), runtimes=real_runtimes())
    await mgr.start()
    async with mgr.use("mlp-a"):  # the only session is held: the next call queues
        queued = asyncio.ensure_future(mgr.infer("mlp-a", {"x": _x(MLP_A)}))
        await asyncio.sleep(0.05)
        await mgr.close()
        with pytest.raises(UnavailableError, match="stopped before this call ran"):
            await asyncio.wait_for(queued, 5)
    with pytest.raises(ConflictError, match="not started"):
        await mgr.infer("mlp-a", {"x": _x(MLP_A)})
    await mgr.close()


async def test_close_gives_up_a_load_in_progress(store: ModelStore, bundles: dict[str, Path]) -> None:
    """A stop does not wait for a load under way (tens of seconds on a slow board's NPU, minutes under
    emulation): the load is given up, its caller told why, and the load thread ends on its own."""
    store.install(bundles["npu"], [signing_key().public_hex])
    release = threading.Event()
    npu = FakeNpuRuntime("ok", hold=release)
    mgr = ModelManager(store, _settings(), runtimes=real_runtimes(fakenpu=npu))
    await mgr.start()
    try:
        call = asyncio.ensure_future(mgr.infer("npu-model", {"x": _x(MLP_A)}))
        for _ in range(500):  # until the load thread is inside the engine's load, held
            if npu.loads:
                break
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await asyncio.wait_for(mgr.close(), 5)
        assert time.monotonic() - started < 1.0
        with pytest.raises(UnavailableError, match="stopped while npu-model was loading"):
            await asyncio.wait_for(call, 5)
    finally:
        release.set()
