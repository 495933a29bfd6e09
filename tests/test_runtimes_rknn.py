"""The RKNN adapter behind a faithful fake of ``rknnlite.api.RKNNLite``.

rknn-toolkit-lite2 ships aarch64 wheels only and needs a Rockchip NPU, so the
fake stands in for the hardware: same class, constants, signatures and return
conventions (0 = success, non-zero = failure, ``inference`` returns None on
failure). Its ``.rknn`` container is a stand-in too (``RKNN`` magic + an ONNX
graph), and ``inference`` really computes: it runs that graph through
onnxruntime, so outputs can be checked against the MLP's numpy reference.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.errors import BadRequestError, ConflictError, EdgeAgentError, UnavailableError
from runtimes.base import LoadOptions
from runtimes.rknn import RknnRuntime, soc_name
from tests.modelzoo import ModelZoo, mlp_input, mlp_reference

MAGIC = b"RKNN\x00\x01\x00\x00"


class FakeRKNNLite:
    """rknnlite.api.RKNNLite as the board runtime behaves, computing on onnxruntime."""

    NPU_CORE_AUTO = 0
    NPU_CORE_0 = 1
    NPU_CORE_1 = 2
    NPU_CORE_2 = 4
    NPU_CORE_0_1 = 3
    NPU_CORE_0_1_2 = 7
    NPU_CORE_ALL = 0xFFFF

    #: NPU cores of the simulated SoC (the real runtime refuses masks beyond them)
    platform_cores = 3
    #: every instance made, so tests can look at what the adapter did
    instances: list[FakeRKNNLite] = []

    def __init__(self, verbose: bool = False, verbose_file: str | None = None) -> None:
        self.verbose = verbose
        self._model: bytes | None = None
        self._sess: Any = None
        self.core_mask: int | None = None
        self.inference_calls = 0
        self.last_data_format: Any = None
        self.released = False
        FakeRKNNLite.instances.append(self)

    def load_rknn(self, path: str) -> int:
        try:
            data = Path(path).read_bytes()
        except OSError:
            return -1
        if not data.startswith(MAGIC):
            return -1
        self._model = data[len(MAGIC) :]
        return 0

    def init_runtime(
        self,
        target: str | None = None,
        device_id: str | None = None,
        async_mode: bool = False,
        core_mask: int = NPU_CORE_AUTO,
    ) -> int:
        if self._model is None or target is not None:  # on the board, target must be None
            return -1
        if core_mask not in (self.NPU_CORE_AUTO, self.NPU_CORE_ALL) and core_mask >= (
            1 << self.platform_cores
        ):
            return -1
        import onnxruntime as ort

        try:
            self._sess = ort.InferenceSession(self._model, providers=["CPUExecutionProvider"])
        except Exception:
            return -1
        self.core_mask = core_mask
        return 0

    def inference(
        self,
        inputs: list[Any] | None = None,
        data_type: Any = None,
        data_format: Any = None,
        inputs_pass_through: Any = None,
        get_frame_id: bool = False,
    ) -> list[np.ndarray] | None:
        if self._sess is None or not isinstance(inputs, list):
            return None
        specs = self._sess.get_inputs()
        if len(inputs) != len(specs):
            return None
        self.inference_calls += 1
        self.last_data_format = data_format
        # The NPU runtime converts inputs to the model's type itself.
        feed = {
            spec.name: np.asarray(value, dtype=np.float32) for spec, value in zip(specs, inputs, strict=True)
        }
        try:
            return self._sess.run(None, feed)
        except Exception:
            return None

    def release(self) -> None:
        self._sess = None
        self._model = None
        self.released = True


@pytest.fixture
def fake_rknnlite(monkeypatch: pytest.MonkeyPatch) -> type[FakeRKNNLite]:
    package = types.ModuleType("rknnlite")
    api = types.ModuleType("rknnlite.api")
    api.RKNNLite = FakeRKNNLite  # type: ignore[attr-defined]
    package.api = api  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rknnlite", package)
    monkeypatch.setitem(sys.modules, "rknnlite.api", api)
    monkeypatch.setattr(FakeRKNNLite, "instances", [])
    monkeypatch.setattr(FakeRKNNLite, "platform_cores", 3)
    return FakeRKNNLite


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> ModelZoo:
    return ModelZoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def rknn_model(zoo: ModelZoo) -> Path:
    """The tiny MLP (static batch 1, as RKNN models are) in the fake container."""
    path = zoo.directory / "mlp_tiny.rknn"
    path.write_bytes(MAGIC + zoo.mlp_onnx("tiny", dynamic_batch=False).read_bytes())
    return path


def board(tmp_path: Path, soc: str | None) -> Path:
    """A device-tree ``compatible`` file as a Rockchip board has it."""
    path = tmp_path / "compatible"
    if soc is None:
        path.write_bytes(b"qemu,virt\0")
    else:
        path.write_bytes(f"radxa,rock-5b\0rockchip,{soc}\0".encode())
    return path


SPECS = {
    "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 8]}],
    "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 4]}],
}


def test_devices_follow_the_soc(tmp_path: Path, fake_rknnlite: type[FakeRKNNLite]) -> None:
    assert soc_name(board(tmp_path, "rk3588")) == "rk3588"
    rk3588 = [d.device for d in RknnRuntime(board(tmp_path, "rk3588")).devices()]
    assert rk3588 == ["NPU", "NPU:0", "NPU:1", "NPU:2", "NPU:0_1", "NPU:0_1_2"]
    rk3576 = [d.device for d in RknnRuntime(board(tmp_path, "rk3576")).devices()]
    assert rk3576 == ["NPU", "NPU:0", "NPU:1", "NPU:0_1"]
    assert [d.device for d in RknnRuntime(board(tmp_path, "rk3566")).devices()] == ["NPU"]
    assert all(d.kind == "npu" for d in RknnRuntime(board(tmp_path, "rk3588")).devices())
    assert RknnRuntime(board(tmp_path, None)).core_count() is None


@pytest.mark.parametrize(
    ("device", "mask", "name"),
    [
        ("NPU", 0, "NPU"),
        ("NPU:0", 1, "NPU:0"),
        ("NPU:1", 2, "NPU:1"),
        ("NPU:2", 4, "NPU:2"),
        ("NPU:0_1", 3, "NPU:0_1"),
        ("npu:0_1_2", 7, "NPU:0_1_2"),
    ],
)
def test_core_masks_reach_init_runtime_and_outputs_are_right(
    tmp_path: Path, fake_rknnlite: type[FakeRKNNLite], rknn_model: Path, device: str, mask: int, name: str
) -> None:
    runtime = RknnRuntime(board(tmp_path, "rk3588"))
    assert runtime.available()
    with runtime.load(rknn_model, device, LoadOptions(extra=SPECS)) as session:
        rk = fake_rknnlite.instances[-1]
        assert rk.core_mask == mask and session.device == name
        assert session.engine is rk
        x = mlp_input("tiny", batch=1, seed=4)
        out = session.run({"x": x})
        np.testing.assert_allclose(out["y"], mlp_reference("tiny", x), rtol=1e-5, atol=1e-6)
    assert rk.released


def test_warm_up_runs_once_with_specs_and_is_skipped_without(
    tmp_path: Path, fake_rknnlite: type[FakeRKNNLite], rknn_model: Path
) -> None:
    runtime = RknnRuntime(board(tmp_path, "rk3588"))
    with runtime.load(rknn_model, "NPU", LoadOptions(extra=SPECS)) as session:
        assert fake_rknnlite.instances[-1].inference_calls == 1
        assert session.warmup_ms is not None
    with runtime.load(rknn_model, "NPU", LoadOptions(extra=SPECS, warmup=False)) as session:
        assert fake_rknnlite.instances[-1].inference_calls == 0
    with runtime.load(rknn_model, "NPU", LoadOptions()) as session:
        rk = fake_rknnlite.instances[-1]
        assert rk.inference_calls == 0 and session.warmup_ms is None
        assert session.inputs == () and session.outputs == ()
        # Without specs: inputs in feed order, outputs named by position.
        x = mlp_input("tiny", batch=1)
        out = session.run({"whatever": x})
        assert list(out) == ["output_0"]
        np.testing.assert_allclose(out["output_0"], mlp_reference("tiny", x), rtol=1e-5, atol=1e-6)
        # Two inputs to a one-input model: RKNNLite returns None, the adapter says so.
        with pytest.raises(EdgeAgentError, match="inference returned None") as info:
            session.run({"a": x, "b": x})
        assert info.value.code == "inference_failed"


def test_bad_input_is_refused_when_specs_are_known(
    tmp_path: Path, fake_rknnlite: type[FakeRKNNLite], rknn_model: Path
) -> None:
    with RknnRuntime(board(tmp_path, "rk3588")).load(rknn_model, "NPU", LoadOptions(extra=SPECS)) as session:
        calls = fake_rknnlite.instances[-1].inference_calls
        with pytest.raises(BadRequestError, match=r"expected \[1, 8\]"):
            session.run({"x": np.zeros((2, 8), np.float32)})
        with pytest.raises(BadRequestError, match="expected float32"):
            session.run({"x": np.zeros((1, 8), np.uint8)})
        assert fake_rknnlite.instances[-1].inference_calls == calls  # never reached the NPU


def test_return_codes_become_clear_errors(
    tmp_path: Path, fake_rknnlite: type[FakeRKNNLite], rknn_model: Path
) -> None:
    runtime = RknnRuntime(board(tmp_path, "rk3588"))
    corrupt = tmp_path / "corrupt.rknn"
    corrupt.write_bytes(b"not an rknn model")
    with pytest.raises(BadRequestError, match=r"load_rknn\(corrupt.rknn\) returned -1") as info:
        runtime.load(corrupt, "NPU", LoadOptions())
    assert info.value.code == "model_invalid" and fake_rknnlite.instances[-1].released

    with pytest.raises(BadRequestError) as info:
        runtime.load(tmp_path / "absent.rknn", "NPU", LoadOptions())
    assert info.value.code == "model_not_found"

    # A core the SoC lacks: refused before the runtime is touched on a known SoC...
    made = len(fake_rknnlite.instances)
    with pytest.raises(UnavailableError, match="this SoC has 1 core"):
        RknnRuntime(board(tmp_path, "rk3566")).load(rknn_model, "NPU:2", LoadOptions())
    assert len(fake_rknnlite.instances) == made
    # ...and by init_runtime's return code where the SoC is unknown.
    fake_rknnlite.platform_cores = 1
    with pytest.raises(UnavailableError, match=r"init_runtime\(core_mask=4\).*returned -1") as info:
        RknnRuntime(board(tmp_path, None)).load(rknn_model, "NPU:2", LoadOptions())
    assert info.value.code == "device_unavailable" and fake_rknnlite.instances[-1].released

    with pytest.raises(BadRequestError, match="no device 'GPU'"):
        runtime.load(rknn_model, "GPU", LoadOptions())
    with pytest.raises(BadRequestError, match="tensor spec"):
        runtime.load(rknn_model, "NPU", LoadOptions(extra={"inputs": [{"name": "x"}]}))


def test_data_format_close_and_arun(
    tmp_path: Path, fake_rknnlite: type[FakeRKNNLite], rknn_model: Path
) -> None:
    options = LoadOptions(extra={**SPECS, "data_format": "nchw"})
    session = RknnRuntime(board(tmp_path, "rk3588")).load(rknn_model, "NPU:0", options)
    rk = fake_rknnlite.instances[-1]
    x = mlp_input("tiny", batch=1)
    out = asyncio.run(asyncio.wait_for(session.arun({"x": x}), timeout=10))
    np.testing.assert_allclose(out["y"], mlp_reference("tiny", x), rtol=1e-5, atol=1e-6)
    assert rk.last_data_format == "nchw"
    session.close()
    session.close()
    assert rk.released
    with pytest.raises(ConflictError, match="closed"):
        session.run({"x": x})


def test_unavailable_without_rknnlite() -> None:
    runtime = RknnRuntime()
    if importlib.util.find_spec("rknnlite") is not None:
        pytest.skip("a real rknnlite is importable here (a Rockchip board)")
    assert not runtime.available()
    with pytest.raises(UnavailableError, match=r"edge-agent\[rknn\]"):
        runtime.load(Path("m.rknn"), "NPU", LoadOptions())
