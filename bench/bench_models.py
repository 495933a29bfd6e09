"""The model manager against raw onnxruntime, and FP32 vs FP16 vs INT8, measured in the same run.

- load + unload cycle through ``ModelManager`` (store read, choose, load,
  warm-up, smoke test, RSS accounting, close) vs constructing and dropping an
  identically configured ``InferenceSession`` (1 thread), on the ~1 ms MLP;
  also the manager with the smoke test off, to show what the check costs;
- two models served concurrently through the manager (``asyncio.gather``,
  1 intra-op thread each, 2 executor threads) vs the same calls one after the
  other on raw sessions (the gain), and vs each raw session driven by its own
  thread (the ceiling: what the manager's scheduling costs); inferences/s, and
  CPU seconds per inference beside the raw threads' (what the scheduling
  costs in CPU, which a shared machine's load does not move as it moves the
  wall clock);
- what one ``await manager.infer()`` costs on a tiny model against
  ``session.run`` (it runs inline on the caller's thread: session take/give
  back, feed check, latency stats; no executor hand-off);
- the ~1 ms MLP (tests/modelzoo MLP_MS, batch 64) as FP32, FP16
  (keep_io_types) and INT8 (dynamic, static): latency on raw onnxruntime
  sessions (1 thread; INT8/FP16 vs FP32 as the peer), file size, and the
  drift from FP32 as the largest error relative to the largest output.

Rounds interleave ours and the peer so drift and noisy neighbours hit both;
figures are medians over rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(ROOT))

from bench.common import row  # noqa: E402  (after the sys.path step)

MiB = 1 << 20
#: bench_models' batched row: up to this many queued calls share a run
BATCH_MAX = 4


def _daemon_loop() -> asyncio.AbstractEventLoop:
    """The event loop the daemon runs the model manager on by default (the setting ``event_loop``)."""
    from agent.core import eventloop

    return eventloop.new_event_loop()


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        print(f"  bench_models: {message}", file=sys.stderr, flush=True)


def _interleaved(ours: Callable[[], float], peer: Callable[[], float], rounds: int) -> tuple[float, float]:
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds):
        if r % 2:
            b.append(peer())
            a.append(ours())
        else:
            a.append(ours())
            b.append(peer())
    return statistics.median(a), statistics.median(b)


def _setup(tmp: Path) -> tuple[Any, Path]:
    from models.store import ModelStore
    from tests.models_fixtures import build_bundle, signing_key
    from tests.modelzoo import MLP_MS

    store = ModelStore(tmp / "store")
    store.install(build_bundle(tmp / "ms", MLP_MS, memory_bytes=64 * MiB), [signing_key().public_hex])
    from tests.modelzoo import MlpSpec

    second = MlpSpec("mlp_ms2", MLP_MS.dims, MLP_MS.batch, seed=21)
    store.install(
        build_bundle(tmp / "ms2", second, name="mlp-ms2", memory_bytes=64 * MiB), [signing_key().public_hex]
    )
    return store, store.get("mlp-ms").file_path("model.onnx")


def _load_cycle(store: Any, model_file: Path, quick: bool) -> list[dict[str, Any]]:
    import onnxruntime as ort

    from models.manager import ManagerSettings, ModelManager
    from runtimes.base import LoadOptions
    from runtimes.onnxrt import OnnxRuntime

    so = OnnxRuntime().session_options(LoadOptions(threads=1))
    rounds = 5 if quick else 15
    loop = _daemon_loop()
    results = []
    try:
        for smoke in (True, False):
            settings = ManagerSettings(
                memory_budget_bytes=1 << 30, idle_timeout_s=None, threads=1, smoke_test_on_load=smoke
            )
            mgr = ModelManager(store, settings)
            loop.run_until_complete(mgr.start())

            def ours(mgr: ModelManager = mgr) -> float:
                t0 = time.perf_counter()
                loop.run_until_complete(mgr.load("mlp-ms"))
                loop.run_until_complete(mgr.unload("mlp-ms"))
                return (time.perf_counter() - t0) * 1000

            def peer() -> float:
                t0 = time.perf_counter()
                sess = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
                del sess
                gc.collect()
                return (time.perf_counter() - t0) * 1000

            ours()
            peer()  # first loads pay imports and allocator growth: not what we measure
            a, b = _interleaved(ours, peer, rounds)
            loop.run_until_complete(mgr.close())
            label = "with smoke test" if smoke else "smoke test off"
            results.append(
                row(
                    f"models: load+unload cycle, mlp_ms ({label})",
                    a,
                    b,
                    "InferenceSession() + del",
                    "ms",
                    "overhead <= 5 ms" if not smoke else "info: includes warm-up and smoke run",
                )
            )
    finally:
        loop.close()
    return results


def _concurrency(store: Any, quick: bool) -> list[dict[str, Any]]:
    import numpy as np
    import onnxruntime as ort

    from models.manager import ManagerSettings, ModelManager
    from runtimes.base import LoadOptions
    from runtimes.onnxrt import OnnxRuntime
    from tests.modelzoo import MLP_MS, mlp_input

    calls = 40 if quick else 200
    x = mlp_input(MLP_MS)
    so = OnnxRuntime().session_options(LoadOptions(threads=1))
    raw = [
        ort.InferenceSession(
            str(store.get(n).file_path("model.onnx")), so, providers=["CPUExecutionProvider"]
        )
        for n in ("mlp-ms", "mlp-ms2")
    ]
    settings = ManagerSettings(
        memory_budget_bytes=1 << 30, idle_timeout_s=None, threads=1, workers=2, max_waiting=4 * calls
    )

    async def ours_async(mgr: ModelManager) -> float:
        t0 = time.perf_counter()
        outs = await asyncio.gather(
            *(mgr.infer(name, {"x": x}) for _ in range(calls) for name in ("mlp-ms", "mlp-ms2"))
        )
        elapsed = time.perf_counter() - t0
        assert all(np.isfinite(o["y"]).all() for o in outs)
        return 2 * calls / elapsed

    def sequential() -> float:
        t0 = time.perf_counter()
        for sess in raw:
            for _ in range(calls):
                sess.run(None, {"x": x})
        return 2 * calls / (time.perf_counter() - t0)

    def threaded() -> float:
        """The ceiling: each raw session driven by its own thread, no scheduling at all."""

        def drive(sess: Any) -> None:
            for _ in range(calls):
                sess.run(None, {"x": x})

        threads = [threading.Thread(target=drive, args=(s,)) for s in raw]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return 2 * calls / (time.perf_counter() - t0)

    rounds = 3 if quick else 7
    from agent.core import eventloop
    from agent.core.errors import ConfigError

    def serving(
        loop: asyncio.AbstractEventLoop, batch_max: int = 1
    ) -> tuple[Callable[[], float], Callable[[], object]]:
        """A manager serving both models on ``loop``: (one round, its close)."""
        mgr = ModelManager(store, dataclasses.replace(settings, batch_max=batch_max))
        loop.run_until_complete(mgr.start())
        loop.run_until_complete(mgr.load("mlp-ms"))
        loop.run_until_complete(mgr.load("mlp-ms2"))
        return lambda: loop.run_until_complete(ours_async(mgr)), lambda: loop.run_until_complete(mgr.close())

    # the loop the daemon runs on by default and, where installed, uvloop (event_loop = auto)
    loops = {"daemon": _daemon_loop()}
    loop_name = eventloop.loop_name(loops["daemon"])
    with contextlib.suppress(ConfigError):
        if loop_name != "uvloop":
            loops["uvloop"] = eventloop.new_event_loop("uvloop")
    try:
        managers = {k: serving(lp) for k, lp in loops.items()}
        # the same calls with queued ones sharing runs (models/batching.py, opt-in: rows independent)
        managers["batched"] = serving(loops["daemon"], BATCH_MAX)
        ours = managers["daemon"][0]
        cpu: dict[str, list[float]] = {"ours": [], "threads": []}

        def cpu_of(name: str, f: Callable[[], float]) -> Callable[[], float]:
            def go() -> float:
                c0 = time.process_time()
                rate = f()
                cpu[name].append((time.process_time() - c0) / (2 * calls))
                return rate

            return go

        ours()
        a1, seq = _interleaved(ours, sequential, rounds)
        a2, thr = _interleaved(cpu_of("ours", ours), cpu_of("threads", threaded), rounds)
        if "uvloop" in managers:  # uvloop against the daemon's default loop, interleaved
            fast = managers["uvloop"][0]
            fast()
            a3, a4 = _interleaved(fast, ours, rounds)
        batched = managers["batched"][0]
        batched()
        a5, thr5 = _interleaved(batched, threaded, rounds)
        for _go, close in managers.values():
            close()
    finally:
        for lp in loops.values():
            lp.close()
    cores = os.cpu_count() or 1
    name = (
        f"models: two models concurrently via manager (mlp_ms x2, {loop_name}, load {os.getloadavg()[0]:.2f})"
    )
    rows = [
        row(name, a1, seq, "raw sessions, one after the other", "infer/s", f"> 1x ({cores} cores here)"),
        row(
            name,
            a2,
            thr,
            "raw sessions, one thread each",
            "infer/s",
            ">= 0.95x (threads take calls from the queues themselves)",
        ),
        row(
            "models: two models concurrently, CPU per inference (process time)",
            statistics.median(cpu["ours"]) * 1e6,
            statistics.median(cpu["threads"]) * 1e6,
            "raw sessions, one thread each",
            "us",
            "info: <= 1.05x (the scheduling's own cost)",
        ),
    ]
    rows.append(
        row(
            f"models: two models concurrently via manager, queued calls batched (batch_max {BATCH_MAX})",
            a5,
            thr5,
            "raw sessions, one thread each, one call a run",
            "infer/s",
            "info: opt-in (models whose rows are independent)",
        )
    )
    if "uvloop" in managers:
        rows.append(
            row(
                f"models: two models concurrently via manager, uvloop against the default {loop_name} loop",
                a3,
                a4,
                f"the same on {loop_name}'s loop",
                "infer/s",
                "info: the event loop's share (event_loop = auto)",
            )
        )
    return rows


def _call_overhead(tmp: Path, quick: bool) -> list[dict[str, Any]]:
    """What one ``await manager.infer()`` adds to ``session.run`` (tiny model: the engine costs ~10 us)."""
    import onnxruntime as ort

    from models.manager import ManagerSettings, ModelManager
    from models.store import ModelStore
    from runtimes.base import LoadOptions
    from runtimes.onnxrt import OnnxRuntime
    from tests.models_fixtures import build_bundle, signing_key
    from tests.modelzoo import MLP_TINY, mlp_input

    store = ModelStore(tmp / "tiny-store")
    store.install(build_bundle(tmp / "tiny", MLP_TINY), [signing_key().public_hex])
    x = mlp_input(MLP_TINY)
    so = OnnxRuntime().session_options(LoadOptions(threads=1))
    raw = ort.InferenceSession(
        str(store.get("mlp-tiny").file_path("model.onnx")), so, providers=["CPUExecutionProvider"]
    )
    calls = 300 if quick else 2000
    loop = _daemon_loop()
    try:
        mgr = ModelManager(
            store, ManagerSettings(memory_budget_bytes=1 << 30, idle_timeout_s=None, threads=1)
        )
        loop.run_until_complete(mgr.start())
        loop.run_until_complete(mgr.load("mlp-tiny"))

        async def many() -> None:
            for _ in range(calls):
                await mgr.infer("mlp-tiny", {"x": x})

        def ours() -> float:
            t0 = time.perf_counter()
            loop.run_until_complete(many())
            return (time.perf_counter() - t0) / calls * 1e6

        def peer() -> float:
            t0 = time.perf_counter()
            for _ in range(calls):
                raw.run(None, {"x": x})
            return (time.perf_counter() - t0) / calls * 1e6

        ours()
        a, b = _interleaved(ours, peer, 5 if quick else 9)
        loop.run_until_complete(mgr.close())
    finally:
        loop.close()
    return [
        row(
            f"models: await manager.infer() per call, mlp_tiny (load {os.getloadavg()[0]:.2f})",
            a,
            b,
            "InferenceSession.run",
            "us/call",
            "<= 20 us per call (small models run inline: no executor hand-off)",
        )
    ]


def _precisions(tmp: Path, model_file: Path, quick: bool) -> list[dict[str, Any]]:
    import numpy as np
    import onnxruntime as ort

    from models.quantize import convert
    from runtimes.base import LoadOptions
    from runtimes.onnxrt import OnnxRuntime
    from tests.modelzoo import MLP_MS, mlp_input

    x = mlp_input(MLP_MS)
    calib = [{"x": mlp_input(MLP_MS, seed=50 + i)} for i in range(8)]
    files = {"fp32": model_file}
    for method in ("fp16", "int8-dynamic", "int8-static"):
        _progress(f"converting {method}")
        files[method] = convert(model_file, tmp / f"ms.{method}.onnx", method, calib)
    so = OnnxRuntime().session_options(LoadOptions(threads=1))
    sessions = {
        k: ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for k, p in files.items()
    }
    ref = sessions["fp32"].run(None, {"x": x})[0]
    calls = 20 if quick else 100
    rounds = 5 if quick else 11

    def timed(sess: Any) -> Callable[[], float]:
        def go() -> float:
            t0 = time.perf_counter()
            for _ in range(calls):
                sess.run(None, {"x": x})
            return (time.perf_counter() - t0) / calls * 1000

        return go

    for s in sessions.values():
        timed(s)()
    rows = []
    fp32_size = files["fp32"].stat().st_size / MiB
    for method in ("fp16", "int8-dynamic", "int8-static"):
        a, b = _interleaved(timed(sessions[method]), timed(sessions["fp32"]), rounds)
        rows.append(
            row(f"models: {method} latency, mlp_ms batch 64", a, b, "fp32", "ms", "info (CPU, 1 thread)")
        )
        rows.append(
            row(
                f"models: {method} file size, mlp_ms",
                files[method].stat().st_size / MiB,
                fp32_size,
                "fp32",
                "MiB",
                "<= 0.55x" if method == "fp16" else "<= 0.3x",
            )
        )
        got = sessions[method].run(None, {"x": x})[0]
        rel = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref))) * 100
        rows.append(row(f"models: {method} max error vs fp32, mlp_ms", rel, None, "-", "% of range", "info"))
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench_models_") as tmp_name:
        tmp = Path(tmp_name)
        _progress("building models")
        store, model_file = _setup(tmp)
        _progress("load/unload cycles")
        rows = _load_cycle(store, model_file, quick)
        _progress("two models concurrently")
        rows += _concurrency(store, quick)
        _progress("per-call overhead")
        rows += _call_overhead(tmp, quick)
        _progress("fp32 / fp16 / int8")
        rows += _precisions(tmp, model_file, quick)
    return rows


if __name__ == "__main__":
    from bench.run import run_one

    sys.exit(run_one(__file__))
