"""onnxruntime, OpenVINO and LiteRT adapters on real models built by tests/modelzoo.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.errors import BadRequestError, ConflictError, UnavailableError
from runtimes.base import LoadOptions, Session
from runtimes.litert import EDGETPU_LIB, LiteRtRuntime
from runtimes.onnxrt import OnnxRuntime
from runtimes.openvino_rt import OpenVinoRuntime
from tests.modelzoo import ModelZoo, lstm_input, mlp_input, mlp_reference

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> ModelZoo:
    return ModelZoo(tmp_path_factory.mktemp("zoo"))


# (id, runtime factory, model path from the zoo): the same MLP in every format.
ENGINES: list[tuple[str, Callable[[], object], Callable[[ModelZoo, str], Path]]] = [
    ("onnxruntime", OnnxRuntime, lambda z, v: z.mlp_onnx(v)),
    ("openvino-onnx", OpenVinoRuntime, lambda z, v: z.mlp_onnx(v)),
    ("openvino-ir", OpenVinoRuntime, lambda z, v: z.mlp_ir(v)),
    ("litert", LiteRtRuntime, lambda z, v: z.mlp_tflite(v)),
]
ENGINE_IDS = [e[0] for e in ENGINES]


def load(engine: str, zoo: ModelZoo, variant: str = "tiny", **options: object) -> Session:
    _, factory, path = next(e for e in ENGINES if e[0] == engine)
    return factory().load(path(zoo, variant), "CPU", LoadOptions(**options))  # type: ignore[attr-defined]


@pytest.mark.parametrize("variant", ["tiny", "ms"])
def test_every_engine_computes_the_same_mlp(zoo: ModelZoo, variant: str) -> None:
    x = mlp_input(variant, seed=7)
    expected = mlp_reference(variant, x)
    results = {}
    for engine in ENGINE_IDS:
        with load(engine, zoo, variant) as session:
            assert [s.to_dict() for s in session.inputs] == [
                {"name": "x", "dtype": "float32", "shape": [None, x.shape[1]]}
            ]
            assert [s.name for s in session.outputs] == ["y"]
            out = session.run({"x": x})
            assert set(out) == {"y"}
            results[engine] = out["y"]
    scale = float(np.abs(expected).max())
    for engine, y in results.items():
        assert y.shape == expected.shape and y.dtype == np.float32, engine
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5 * scale, err_msg=engine)
        np.testing.assert_allclose(y, results["onnxruntime"], rtol=1e-4, atol=1e-5 * scale, err_msg=engine)


def test_lstm_autoencoder_agrees_between_onnxruntime_and_openvino(zoo: ModelZoo) -> None:
    path = zoo.lstm_autoencoder_onnx()
    outputs = []
    for runtime in (OnnxRuntime(), OpenVinoRuntime()):
        with runtime.load(path, "CPU", LoadOptions()) as session:
            assert session.inputs[0].shape == (None, None, 8)
            assert [s.name for s in session.outputs] == ["reconstruction", "error"]
            # dynamic T and batch: two different shapes through one session
            outputs.append([session.run({"x": lstm_input(t, b)}) for t, b in ((20, 1), (7, 3))])
    for ort_out, ov_out in zip(*outputs, strict=True):
        for name in ("reconstruction", "error"):
            np.testing.assert_allclose(ov_out[name], ort_out[name], rtol=1e-4, atol=1e-5)
    assert outputs[0][1]["error"].shape == (3,)
    assert (outputs[0][1]["error"] > 0).all()


@pytest.mark.parametrize("engine", ENGINE_IDS)
@pytest.mark.parametrize("validate", [False, True])
def test_bad_input_names_the_expected_shape_and_dtype(zoo: ModelZoo, engine: str, validate: bool) -> None:
    with load(engine, zoo) as session:
        x = mlp_input("tiny", batch=2)
        cases = [
            ({"x": x.astype(np.float64)}, "bad_input_dtype", "expected float32"),
            ({"x": x.astype(np.int32)}, "bad_input_dtype", "expected float32"),
            ({"x": np.zeros((2, 9), np.float32)}, "bad_input_shape", "expected [None, 8]"),
            ({"x": np.zeros((8,), np.float32)}, "bad_input_shape", "expected [None, 8]"),
            ({"input": x}, "bad_input_names", "missing ['x']"),
        ]
        for feed, code, text in cases:
            with pytest.raises(BadRequestError) as info:
                session.run(feed, validate=validate)
            assert info.value.code == code, (feed, info.value)
            assert text in str(info.value)
        # the session is still good afterwards
        np.testing.assert_allclose(session.run({"x": x})["y"], mlp_reference("tiny", x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino-onnx", "litert"])
def test_static_model_refuses_another_batch(zoo: ModelZoo, engine: str) -> None:
    runtime = {"onnxruntime": OnnxRuntime, "openvino-onnx": OpenVinoRuntime, "litert": LiteRtRuntime}[
        engine
    ]()
    path = zoo.mlp_tflite(dynamic_batch=False) if engine == "litert" else zoo.mlp_onnx(dynamic_batch=False)
    with runtime.load(path, "CPU", LoadOptions()) as session:
        assert session.inputs[0].shape == (1, 8)
        with pytest.raises(BadRequestError, match=r"expected \[1, 8\]"):
            session.run({"x": mlp_input("tiny", batch=2)})
        assert session.run({"x": mlp_input("tiny", batch=1)})["y"].shape == (1, 4)


def test_litert_resizes_dynamic_inputs_back_and_forth(zoo: ModelZoo) -> None:
    with LiteRtRuntime().load(zoo.mlp_tflite(), "CPU", LoadOptions()) as session:
        for batch in (1, 5, 5, 1, 3):
            x = mlp_input("tiny", batch=batch, seed=batch)
            y = session.run({"x": x})["y"]
            np.testing.assert_allclose(y, mlp_reference("tiny", x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("runtime", "suffix"),
    [
        (OnnxRuntime, ".onnx"),
        (OpenVinoRuntime, ".onnx"),
        (OpenVinoRuntime, ".xml"),
        (LiteRtRuntime, ".tflite"),
    ],
)
def test_corrupt_or_missing_model_file_is_a_bad_request(
    zoo: ModelZoo, tmp_path: Path, runtime: type, suffix: str
) -> None:
    source = {".onnx": zoo.mlp_onnx, ".xml": zoo.mlp_ir, ".tflite": zoo.mlp_tflite}[suffix]("ms")
    rt = runtime()
    for keep in (0.5, 0.01):
        broken = tmp_path / f"broken{suffix}"
        broken.write_bytes(source.read_bytes()[: int(source.stat().st_size * keep)])
        if suffix == ".xml":
            broken.with_suffix(".bin").write_bytes(source.with_suffix(".bin").read_bytes())
        with pytest.raises(BadRequestError) as info:
            rt.load(broken, "CPU", LoadOptions())
        assert info.value.code == "model_invalid", info.value
        assert "broken" in str(info.value)
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(bytes(range(256)) * 8)
    if suffix == ".xml":
        garbage.with_suffix(".bin").write_bytes(b"\0" * 64)
    with pytest.raises(BadRequestError, match="garbage"):
        rt.load(garbage, "CPU", LoadOptions())
    with pytest.raises(BadRequestError) as info:
        rt.load(tmp_path / f"absent{suffix}", "CPU", LoadOptions())
    assert info.value.code == "model_not_found"


def test_openvino_ir_without_its_weights(zoo: ModelZoo, tmp_path: Path) -> None:
    xml = tmp_path / "lonely.xml"
    xml.write_bytes(zoo.mlp_ir().read_bytes())
    with pytest.raises(BadRequestError, match=r"lonely\.bin") as info:
        OpenVinoRuntime().load(xml, "CPU", LoadOptions())
    assert info.value.code == "model_not_found"


def test_devices_and_unavailable_devices(zoo: ModelZoo) -> None:
    ort, ov, lite = OnnxRuntime(), OpenVinoRuntime(), LiteRtRuntime()
    assert "CPU" in [d.device for d in ort.devices()]
    assert "CPU" in [d.device for d in ov.devices()]
    assert "CPU" in [d.device for d in lite.devices()]

    with pytest.raises(BadRequestError, match="no device 'FPGA'"):
        ort.load(zoo.mlp_onnx(), "FPGA", LoadOptions())
    if "CUDAExecutionProvider" not in ort._ort().get_available_providers():
        with pytest.raises(UnavailableError, match="CUDAExecutionProvider") as info:
            ort.load(zoo.mlp_onnx(), "CUDA:0", LoadOptions())
        assert info.value.code == "device_unavailable"
    if not any(d.device.startswith("NPU") for d in ov.devices()):
        with pytest.raises(UnavailableError, match="no device 'NPU'"):
            ov.load(zoo.mlp_onnx(), "NPU", LoadOptions())
    if lite.edgetpu_library() is None:
        with pytest.raises(UnavailableError, match=EDGETPU_LIB.replace(".", r"\.")) as info:
            lite.load(zoo.mlp_tflite(), "EdgeTPU", LoadOptions())
        assert info.value.code == "device_unavailable"
    with pytest.raises(BadRequestError, match="no device 'GPU'"):
        lite.load(zoo.mlp_tflite(), "GPU", LoadOptions())


def test_thread_count_is_honoured_by_the_engines(zoo: ModelZoo) -> None:
    ort_session = OnnxRuntime().load(zoo.mlp_onnx(), "CPU", LoadOptions(threads=3))
    options = ort_session.engine.get_session_options()
    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 1
    assert str(options.execution_mode).endswith("ORT_SEQUENTIAL")
    assert str(options.graph_optimization_level).endswith("ORT_ENABLE_ALL")
    ort_session.close()
    for threads in (1, 2):
        with OpenVinoRuntime().load(zoo.mlp_onnx(), "CPU", LoadOptions(threads=threads)) as session:
            assert session.engine.get_property("INFERENCE_NUM_THREADS") == threads
            assert str(session.engine.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"

    # The engines' own thread pools, counted in a fresh process so nothing else spawns threads:
    # intra-op N means N-1 pool threads beside the caller's.
    code = textwrap.dedent(
        f"""
        import json, os, sys
        from pathlib import Path
        from runtimes.base import LoadOptions
        from runtimes.onnxrt import OnnxRuntime
        from runtimes.litert import LiteRtRuntime
        def count():
            return len(os.listdir("/proc/self/task"))
        out = {{}}
        for name, rt, path in (("ort", OnnxRuntime(), {str(zoo.mlp_onnx("ms"))!r}),
                               ("litert", LiteRtRuntime(), {str(zoo.mlp_tflite("ms"))!r})):
            rt.available()
            keep = []
            for threads in (1, 3):
                before = count()
                keep.append(rt.load(Path(path), "CPU", LoadOptions(threads=threads)))
                out[f"{{name}}{{threads}}"] = count() - before
        print(json.dumps(out))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=90, check=True
    )
    spawned = json.loads(proc.stdout.strip().splitlines()[-1])
    assert spawned == {"ort1": 0, "ort3": 2, "litert1": 0, "litert3": 2}


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino-ir", "litert"])
def test_warm_up_runs_at_load_unless_disabled(zoo: ModelZoo, engine: str) -> None:
    with load(engine, zoo, "ms") as warm:
        assert warm.warmup_ms is not None and warm.warmup_ms > 0
        assert warm.describe()["warmup_ms"] == warm.warmup_ms
    with load(engine, zoo, "ms", warmup=False) as cold:
        assert cold.warmup_ms is None
        assert set(cold.zero_feed()) == {"x"} and cold.zero_feed()["x"].shape == (1, 256)


@pytest.mark.parametrize("engine", ENGINE_IDS)
async def test_arun_in_an_executor_and_concurrent_callers(zoo: ModelZoo, engine: str) -> None:
    session = load(engine, zoo, threads=1)
    inputs = [mlp_input("tiny", batch=4, seed=i) for i in range(16)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        outs = await asyncio.wait_for(
            asyncio.gather(
                *(session.arun({"x": x}, pool, validate=bool(i % 2)) for i, x in enumerate(inputs))
            ),
            timeout=30,
        )
    for x, out in zip(inputs, outs, strict=True):
        np.testing.assert_allclose(out["y"], mlp_reference("tiny", x), rtol=1e-4, atol=1e-5)
    session.close()
    session.close()  # idempotent
    with pytest.raises(ConflictError, match="closed"):
        await asyncio.wait_for(session.arun({"x": inputs[0]}), timeout=10)


def test_onnxruntime_output_is_not_overwritten_by_the_next_call(zoo: ModelZoo) -> None:
    with load("onnxruntime", zoo) as s1, load("openvino-onnx", zoo) as s2, load("litert", zoo) as s3:
        for session in (s1, s2, s3):
            a = session.run({"x": mlp_input("tiny", seed=1)})["y"]
            kept = a.copy()
            session.run({"x": mlp_input("tiny", seed=2)})
            np.testing.assert_array_equal(a, kept)


@pytest.mark.parametrize("engine", ENGINE_IDS)
def test_inputs_are_read_during_the_call_only(zoo: ModelZoo, engine: str) -> None:
    """Engines that share the caller's input memory (onnxruntime; OpenVINO with share_inputs) read it
    only while ``run`` lasts: an array changed in place afterwards feeds the next call with its new
    values and leaves the earlier result alone; views and read-only arrays work too."""
    with load(engine, zoo, "tiny") as session:
        x = mlp_input("tiny", batch=4, seed=1).copy()
        first = session.run({"x": x})["y"]
        kept = first.copy()
        x[:] = mlp_input("tiny", batch=4, seed=2)
        second = session.run({"x": x})["y"]
        np.testing.assert_array_equal(first, kept)
        np.testing.assert_allclose(second, mlp_reference("tiny", x), rtol=1e-4, atol=1e-5)
        wide = np.repeat(mlp_input("tiny", batch=4, seed=3), 2, axis=0)[::2]  # a strided view
        assert not wide.flags["C_CONTIGUOUS"]
        np.testing.assert_allclose(
            session.run({"x": wide})["y"], mlp_reference("tiny", wide), rtol=1e-4, atol=1e-5
        )
        frozen = mlp_input("tiny", batch=4, seed=4).copy()
        frozen.flags.writeable = False
        np.testing.assert_allclose(
            session.run({"x": frozen})["y"], mlp_reference("tiny", frozen), rtol=1e-4, atol=1e-5
        )


def test_openvino_through_the_adapter_reports_nothing_home() -> None:
    """``import openvino`` reports itself to Google Analytics from a spawned process unless a consent
    file says no; through the adapter the telemetry package is never loaded and nothing is spawned."""
    code = textwrap.dedent(
        """
        import json, sys, time
        import multiprocessing.resource_tracker as rt
        import psutil
        from runtimes.openvino_rt import OpenVinoRuntime
        rt_ = OpenVinoRuntime()
        rt_.engine()
        rt_.devices()
        time.sleep(0.5)  # the report went out from a worker thread
        print(json.dumps({
            "telemetry_loaded": sys.modules.get("openvino_telemetry") is not None,
            "spawned": rt._resource_tracker._pid is not None or bool(psutil.Process().children()),
        }))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"telemetry_loaded": False, "spawned": False}


def test_the_edge_tpu_library_is_found_where_the_linker_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the linker's cache or LD_LIBRARY_PATH, with no compiler or linker run to look for it."""

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a process was started to look for libedgetpu: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    cache = tmp_path / "ld.so.cache"
    cache.write_bytes(b"glibc-ld.so.cache1.1\x00libc.so.6\x00/lib/x86_64-linux-gnu/libc.so.6\x00")
    assert LiteRtRuntime.edgetpu_library(cache) is None
    cache.write_bytes(
        cache.read_bytes() + b"libedgetpu.so.1\x00/usr/lib/x86_64-linux-gnu/libedgetpu.so.1\x00"
    )
    assert LiteRtRuntime.edgetpu_library(cache) == EDGETPU_LIB
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / EDGETPU_LIB).write_bytes(b"\x7fELF")
    monkeypatch.setenv("LD_LIBRARY_PATH", f"/nonexistent:{lib}")
    assert LiteRtRuntime.edgetpu_library(tmp_path / "no-cache") == str(lib / EDGETPU_LIB)
