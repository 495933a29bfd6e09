"""Runtime adapters against the raw engines they wrap, measured in the same run.

- onnxruntime: our ``Session.run`` vs ``InferenceSession.run`` on an
  identically configured session (same SessionOptions, same thread count),
  on a ~1 ms MLP (ratio, target <= 1.05) and on a tiny MLP (absolute overhead,
  target <= 5 us/call), with and without ``validate=True``;
- load + close cycle vs constructing and dropping an InferenceSession;
- OpenVINO and LiteRT adapters vs their raw engine APIs (tiny model), and
  their latency on the ~1 ms model beside onnxruntime's.

Timing: blocks of calls, ours and the peer interleaved (order alternating each
round), so drift and noisy neighbours hit both alike; figures are medians over
rounds and ratios are medians of per-round ratios. One thread per engine,
which is also what keeps a 2-core machine quiet enough to measure.
"""

from __future__ import annotations

import functools
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(ROOT))

from bench.common import row as bench_row  # noqa: E402  (after the sys.path step)

THREADS = 1
#: microseconds to the nanosecond
row = functools.partial(bench_row, digits=3)


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        print(f"  bench_runtimes: {message}", file=sys.stderr, flush=True)


def _block(fn: Callable[[], Any], calls: int) -> float:
    """Mean seconds per call over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def paired(
    ours: Callable[[], Any], peer: Callable[[], Any], calls: int, rounds: int
) -> tuple[float, float, float, float]:
    """(median us/call ours, median us/call peer, median per-round ratio, median per-round difference us)."""
    for _ in range(max(3, calls // 10)):  # warm caches and branch predictors for both
        ours()
        peer()
    a: list[float] = []
    b: list[float] = []
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            if r % 2:
                b.append(_block(peer, calls))
                a.append(_block(ours, calls))
            else:
                a.append(_block(ours, calls))
                b.append(_block(peer, calls))
    finally:
        if gc_was:
            gc.enable()
    ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
    diff = statistics.median((x - y) * 1e6 for x, y in zip(a, b, strict=True))
    return statistics.median(a) * 1e6, statistics.median(b) * 1e6, ratio, diff


def _ort_pair(
    rt: Any, path: Path, feed: dict[str, Any], options: Any, calls: int, rounds: int
) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float]]:
    """Our session vs a raw InferenceSession built with the same SessionOptions: plain and validate=True."""
    import onnxruntime as ort

    session = rt.load(path, "CPU", options)
    raw = ort.InferenceSession(str(path), rt.session_options(options), providers=["CPUExecutionProvider"])
    raw_run = raw.run
    try:
        plain = paired(lambda: session.run(feed), lambda: raw_run(None, feed), calls, rounds)
        checked = paired(lambda: session.run(feed, validate=True), lambda: raw_run(None, feed), calls, rounds)
    finally:
        session.close()
    return plain, checked


def _onnxruntime(zoo: Any, quick: bool) -> list[dict[str, Any]]:
    import onnxruntime as ort

    from runtimes.base import LoadOptions
    from runtimes.onnxrt import OnnxRuntime
    from tests.modelzoo import mlp_input

    rt = OnnxRuntime()
    options = LoadOptions(threads=THREADS)
    peer_name = "onnxruntime InferenceSession.run (same options)"
    rows = []
    for variant, calls, rounds in (
        ("ms", 30 if quick else 60, 9 if quick else 25),
        ("tiny", 1000, 9 if quick else 31),
    ):
        _progress(f"onnxruntime {variant}")
        plain, checked = _ort_pair(
            rt, zoo.mlp_onnx(variant), {"x": mlp_input(variant)}, options, calls, rounds
        )
        if variant == "ms":
            rows.append(
                row(
                    "onnxruntime ~1ms MLP: Session.run",
                    *plain[:2],
                    peer_name,
                    "us/call",
                    "ratio <= 1.05",
                    plain[2],
                )
            )
            rows.append(
                row(
                    "onnxruntime ~1ms MLP: Session.run(validate=True)",
                    *checked[:2],
                    peer_name,
                    "us/call",
                    "ratio <= 1.05",
                    checked[2],
                )
            )
        else:
            rows.append(
                row("onnxruntime tiny MLP: Session.run", *plain[:2], peer_name, "us/call", "info", plain[2])
            )
            rows.append(
                row(
                    "onnxruntime tiny MLP: adapter overhead",
                    plain[3],
                    None,
                    peer_name,
                    "us/call",
                    "<= 5 us/call",
                )
            )
            rows.append(
                row(
                    "onnxruntime tiny MLP: adapter overhead (validate=True)",
                    checked[3],
                    None,
                    peer_name,
                    "us/call",
                    "<= 5 us/call",
                )
            )

    # Load + close: our adapter (no warm-up, to compare like with like) vs a bare InferenceSession.
    path = zoo.mlp_onnx("ms")

    def ours_cycle() -> None:
        rt.load(path, "CPU", LoadOptions(threads=THREADS, warmup=False)).close()

    def peer_cycle() -> None:
        sess = ort.InferenceSession(
            str(path), rt.session_options(options), providers=["CPUExecutionProvider"]
        )
        del sess

    _progress("onnxruntime load/close")
    ours, peer, ratio, _ = paired(ours_cycle, peer_cycle, 3 if quick else 5, 7 if quick else 15)
    rows.append(
        row(
            "onnxruntime ~1ms MLP: load+close cycle",
            ours / 1000,
            peer / 1000,
            "InferenceSession() + del",
            "ms/cycle",
            "info",
            ratio,
        )
    )
    warm = statistics.median(rt.load(path, "CPU", options).warmup_ms or 0.0 for _ in range(3))
    rows.append(row("onnxruntime ~1ms MLP: warm-up run at load", warm, None, "-", "ms", "info"))
    return rows


def _other_engines(zoo: Any, quick: bool) -> list[dict[str, Any]]:
    from ai_edge_litert.interpreter import Interpreter

    from runtimes.base import LoadOptions
    from runtimes.litert import LiteRtRuntime
    from runtimes.onnxrt import OnnxRuntime
    from runtimes.openvino_rt import OpenVinoRuntime
    from tests.modelzoo import mlp_input

    options = LoadOptions(threads=THREADS)
    rows = []
    ov_rt, lite_rt = OpenVinoRuntime(), LiteRtRuntime()

    # Adapter overhead against each raw engine API, tiny model.
    feed = {"x": mlp_input("tiny")}
    ov_session = ov_rt.load(zoo.mlp_ir("tiny"), "CPU", options)
    compiled = ov_rt.core().compile_model(
        str(zoo.mlp_ir("tiny")), "CPU", ov_rt.compile_config("CPU", options)
    )
    request = compiled.create_infer_request()
    _progress("openvino tiny")
    # the adapter shares its inputs with the engine (share_inputs=True): the overhead is measured
    # against the same call; the second pair is what that mode saves over OpenVINO's default copy
    peer_name = "InferRequest.infer(share_inputs=True)"
    ours, peer, ratio, diff = paired(
        lambda: ov_session.run(feed), lambda: request.infer(feed, share_inputs=True), 500, 9 if quick else 21
    )
    rows.append(row("openvino tiny MLP: Session.run", ours, peer, peer_name, "us/call", "info", ratio))
    rows.append(row("openvino tiny MLP: adapter overhead", diff, None, peer_name, "us/call", "<= 5 us/call"))
    copying = compiled.create_infer_request()  # its own request: switching modes re-allocates tensors
    ours, peer, ratio, _ = paired(
        lambda: ov_session.run(feed), lambda: copying.infer(feed), 500, 9 if quick else 21
    )
    rows.append(
        row(
            "openvino tiny MLP: Session.run against OpenVINO's default (inputs copied)",
            ours,
            peer,
            "InferRequest.infer(feed)",
            "us/call",
            "info",
            ratio,
        )
    )

    lite_session = lite_rt.load(zoo.mlp_tflite("tiny"), "CPU", options)
    interp = Interpreter(model_path=str(zoo.mlp_tflite("tiny")), num_threads=THREADS)
    interp.allocate_tensors()
    in_index = interp.get_input_details()[0]["index"]
    out_index = interp.get_output_details()[0]["index"]
    x = feed["x"]

    def lite_raw() -> Any:
        interp.set_tensor(in_index, x)
        interp.invoke()
        return interp.get_tensor(out_index)

    _progress("litert tiny")
    ours, peer, ratio, diff = paired(lambda: lite_session.run(feed), lite_raw, 1000, 9 if quick else 21)
    rows.append(
        row(
            "litert tiny MLP: Session.run", ours, peer, "Interpreter set/invoke/get", "us/call", "info", ratio
        )
    )
    rows.append(
        row(
            "litert tiny MLP: adapter overhead",
            diff,
            None,
            "Interpreter set/invoke/get",
            "us/call",
            "<= 5 us/call",
        )
    )

    # The same ~1 ms MLP through each engine's adapter, beside onnxruntime's.
    feed = {"x": mlp_input("ms")}
    ort_session = OnnxRuntime().load(zoo.mlp_onnx("ms"), "CPU", options)
    calls, rounds = (20, 7) if quick else (50, 15)
    for label, session in (
        ("openvino (IR)", ov_rt.load(zoo.mlp_ir("ms"), "CPU", options)),
        ("litert (XNNPACK)", lite_rt.load(zoo.mlp_tflite("ms"), "CPU", options)),
    ):
        _progress(f"{label} ms")
        ours, peer, ratio, _ = paired(
            functools.partial(session.run, feed), lambda: ort_session.run(feed), calls, rounds
        )
        rows.append(
            row(
                f"{label} ~1ms MLP latency",
                ours,
                peer,
                "onnxruntime adapter, same threads",
                "us/call",
                "info",
                ratio,
            )
        )
        session.close()
    ort_session.close()
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    from tests.modelzoo import ModelZoo

    with tempfile.TemporaryDirectory(prefix="bench_runtimes_") as tmp:
        zoo = ModelZoo(Path(tmp))
        rows = _onnxruntime(zoo, quick)
        try:
            rows += _other_engines(zoo, quick)
        except ImportError as exc:  # OpenVINO or LiteRT not installed: say so, keep the rest
            rows.append(row(f"openvino/litert skipped: {exc}", 0.0, None, "-", "-", "info"))
    return rows


if __name__ == "__main__":
    from bench.run import run_one

    sys.exit(run_one(__file__))
