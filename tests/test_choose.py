"""models.choose: ranking variants × runtimes × devices, skip reasons, load fallback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from agent.errors import BadRequestError, ResourceExhaustedError, UnavailableError
from hal.profile import Accelerator, CpuInfo, HardwareProfile, MemoryInfo, Target
from models.choose import Policy, choose, load_with_fallback, rank
from models.manifest import MANIFEST_FILE, Variant, parse_manifest_json
from models.smoke import check_session
from runtimes.base import LoadOptions
from tests.models_fixtures import MLP_A, AbsentRuntime, FakeNpuRuntime, build_bundle, real_runtimes
from tests.modelzoo import mlp_input, mlp_reference

NPU_INT8 = Variant("fakenpu", "int8", ("model.onnx",), devices=("npu",))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(
        tmp_path_factory.mktemp("choose"),
        MLP_A,
        runtimes=("onnxruntime", "openvino"),
        extra_variants=[NPU_INT8, Variant("rknn", "int8", ("model.onnx",))],
    )


@pytest.fixture(scope="module")
def manifest(bundle: Path):
    return parse_manifest_json((bundle / MANIFEST_FILE).read_bytes()).manifest


def _profile(*accs: Accelerator, total_mb: int = 4096) -> HardwareProfile:
    cpu = Accelerator(
        "cpu", "intel", "x86 CPU", targets=(Target("onnxruntime", "CPU"), Target("openvino", "CPU"))
    )
    return HardwareProfile(
        cpu=CpuInfo(architecture="x86_64", model="test"),
        memory=MemoryInfo(total_mb=total_mb, available_mb=total_mb),
        accelerators=(*accs, cpu),
    )


RK_NPU = Accelerator("npu", "rockchip", "RK3588 NPU", targets=(Target("rknn", "NPU"),))


def test_npu_first_then_cpu_chain(manifest) -> None:
    rts = real_runtimes(fakenpu=FakeNpuRuntime())
    choice = choose(manifest, _profile(RK_NPU), Policy(), rts)
    assert [c.label for c in choice.candidates] == [
        "fakenpu/int8@NPU",
        "onnxruntime/fp32@CPU",
        "openvino/fp32@CPU",
    ]
    # rknn: the box has its NPU but the engine is missing here (x86): the extra is named
    rknn = [s for s in choice.skipped if s.what == "rknn/int8"]
    assert rknn and rknn[0].category == "engine_missing" and rknn[0].extra == "rknn"
    assert "edge-agent[rknn]" in rknn[0].reason
    assert choice.missing_extras == ("rknn",)
    assert any(s.what == "gpu" and s.category == "device_absent" for s in choice.skipped)
    assert "fakenpu/int8@NPU → onnxruntime/fp32@CPU" in choice.explain()


def test_policy_forbids_and_prefers(manifest) -> None:
    rts = real_runtimes(fakenpu=FakeNpuRuntime())
    no_npu = choose(manifest, None, Policy(forbid_devices=("npu",)), rts)
    assert no_npu.chosen.label == "onnxruntime/fp32@CPU"
    assert any(s.what == "fakenpu/int8@NPU" and s.category == "policy" for s in no_npu.skipped)
    prefer_ov = choose(manifest, None, Policy(runtimes=("openvino",), forbid_devices=("npu",)), rts)
    assert prefer_ov.chosen.label == "openvino/fp32@CPU"
    only_int8 = choose(manifest, None, Policy(forbid_precisions=("fp32",)), rts)
    assert [c.label for c in only_int8.candidates] == ["fakenpu/int8@NPU"]
    cpu_first = choose(manifest, None, Policy(device_order=("cpu", "npu")), rts)
    assert cpu_first.chosen.kind == "cpu" and cpu_first.candidates[-1].kind == "npu"
    with pytest.raises(BadRequestError, match="fpga"):
        Policy(device_order=("fpga",))


def test_device_hints_and_absent_npu(manifest) -> None:
    # the NPU variant is meant for NPUs only: with no NPU present it is simply not a candidate
    rts = real_runtimes(fakenpu=FakeNpuRuntime(present=False))
    choice = choose(manifest, None, Policy(), rts)
    assert all(c.kind == "cpu" for c in choice.candidates)
    assert any(s.what == "fakenpu/int8" and s.category == "device_absent" for s in choice.skipped)


def test_nowhere_to_run_names_the_extra(bundle: Path, manifest) -> None:
    rts = {"rknn": real_runtimes()["rknn"], "absent": AbsentRuntime()}
    choice = rank(manifest, _profile(RK_NPU), Policy(), rts)
    assert not choice.candidates
    with pytest.raises(UnavailableError) as err:
        choose(manifest, _profile(RK_NPU), Policy(), rts)
    assert err.value.code == "no_runtime"
    assert "pip install 'edge-agent[rknn]'" in str(err.value)
    assert "no 'onnxruntime' runtime adapter is registered" in str(err.value)


def test_profile_device_the_runtime_does_not_list(manifest) -> None:
    igpu = Accelerator("gpu", "intel", "Iris Xe", targets=(Target("openvino", "GPU.0"),))
    choice = choose(manifest, _profile(igpu), Policy(), real_runtimes())
    ov_gpu = [s for s in choice.skipped if s.what == "openvino/fp32@GPU.0"]
    assert ov_gpu and "driver or plugin missing" in ov_gpu[0].reason
    assert choice.chosen.kind == "cpu"


def test_memory_larger_than_the_box(manifest) -> None:
    big = dataclasses.replace(manifest, memory_bytes=3 << 20)
    with pytest.raises(ResourceExhaustedError, match="needs 3 MiB; this box has 2 MiB"):
        choose(big, _profile(total_mb=2), Policy(), real_runtimes())
    assert choose(big, _profile(total_mb=4), Policy(), real_runtimes()).candidates


@pytest.mark.parametrize("mode", ["refuse", "garbage"])
def test_load_with_fallback_skips_a_bad_npu(bundle: Path, manifest, mode: str) -> None:
    npu = FakeNpuRuntime(mode)
    rts = real_runtimes(fakenpu=npu)
    choice = choose(manifest, None, Policy(), rts)
    assert choice.chosen.kind == "npu"
    loaded = load_with_fallback(
        choice, bundle, LoadOptions(), rts, lambda s, c: check_session(s, manifest, c.variant)
    )
    try:
        assert loaded.candidate.label == "onnxruntime/fp32@CPU" and npu.loads == 1
        assert len(loaded.failures) == 1 and loaded.failures[0].category == "load_failed"
        assert ("refused" if mode == "refuse" else "smoke test failed") in loaded.failures[0].reason
        x = mlp_input(MLP_A, batch=3)
        np.testing.assert_allclose(loaded.session.run({"x": x})["y"], mlp_reference(MLP_A, x), atol=1e-4)
    finally:
        loaded.session.close()


def test_load_with_fallback_all_fail(tmp_path: Path, manifest) -> None:
    rts = real_runtimes(fakenpu=FakeNpuRuntime("refuse"))
    choice = choose(manifest, None, Policy(), rts)
    # an empty directory: every engine fails to find the file
    with pytest.raises(UnavailableError) as err:
        load_with_fallback(choice, tmp_path, LoadOptions(), rts)
    assert err.value.code == "load_failed"
    for label in ("fakenpu/int8@NPU", "onnxruntime/fp32@CPU", "openvino/fp32@CPU"):
        assert label in str(err.value)


BOARDS = Path(__file__).resolve().parent / "boards"


@pytest.mark.parametrize(
    ("board", "skipped_what", "reason_part"),
    [
        ("rock5b", "rknn/int8", "edge-agent[rknn]"),
        ("n100-minipc", "openvino/fp32@GPU", "does not list GPU"),
        ("jetson-orin-nano", "onnxruntime/fp32@CUDA:0", "does not list CUDA:0"),
    ],
)
def test_recorded_boards(manifest, board: str, skipped_what: str, reason_part: str) -> None:
    """Real probes of recorded board trees: the accelerator is seen, this machine's engines cannot drive it."""
    import hal

    profile = hal.probe(BOARDS / board, runtimes=False)
    choice = choose(manifest, profile, Policy(), real_runtimes())
    hit = [s for s in choice.skipped if s.what == skipped_what]
    assert hit and reason_part in hit[0].reason, choice.explain()
    assert choice.chosen.label == "onnxruntime/fp32@CPU"


def test_variant_file_type_must_suit_its_runtime(tmp_path: Path) -> None:
    b = build_bundle(
        tmp_path,
        MLP_A,
        runtimes=("onnxruntime",),
        extra_variants=[Variant("litert", "fp32", ("model.onnx",))],
    )
    m = parse_manifest_json((b / MANIFEST_FILE).read_bytes()).manifest
    choice = choose(m, None, Policy(runtimes=("litert", "onnxruntime")), real_runtimes())
    assert choice.chosen.runtime == "onnxruntime"
    skip = next(s for s in choice.skipped if s.what == "litert/fp32")
    assert skip.category == "variant_absent" and "not .onnx files" in skip.reason
