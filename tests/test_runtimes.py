"""The runtime registry and the protocol's shared parts (no engine-specific behaviour here)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.errors import BadRequestError, NotFoundError, UnavailableError
from runtimes import registry
from runtimes.base import LoadOptions, Runtime, TensorSpec
from runtimes.litert import LiteRtRuntime
from runtimes.onnxrt import OnnxRuntime
from runtimes.openvino_rt import OpenVinoRuntime
from runtimes.rknn import RknnRuntime
from tests.modelzoo import ModelZoo, mlp_input

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> ModelZoo:
    return ModelZoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    registry.all_runtimes(refresh=True)
    yield
    registry.all_runtimes(refresh=True)


def test_registry_lists_all_four_with_rknn_unavailable_and_why() -> None:
    runtimes = registry.all_runtimes()
    assert set(registry.BUILTIN) <= set(runtimes)
    assert isinstance(runtimes["onnxruntime"], OnnxRuntime)
    assert isinstance(runtimes["openvino"], OpenVinoRuntime)
    assert isinstance(runtimes["litert"], LiteRtRuntime)
    assert isinstance(runtimes["rknn"], RknnRuntime)

    rows = {row["name"]: row for row in registry.status()}
    for name in ("onnxruntime", "openvino", "litert"):
        assert rows[name]["available"] is True, rows[name]
        assert rows[name]["reason"] is None
        assert any(d["device"] == "CPU" and d["kind"] == "cpu" for d in rows[name]["devices"])
    rknn = rows["rknn"]
    assert rknn["available"] is False and rknn["installed"] is False
    assert rknn["devices"] == []
    assert "rknn-toolkit-lite2" in rknn["reason"] and "edge-agent[rknn]" in rknn["reason"]
    assert "aarch64" in rknn["reason"]
    json.dumps(registry.status())  # the API serves it as is


def test_status_without_probe_imports_no_engine() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from runtimes import registry
        rows = registry.status(probe=False)
        loaded = [m for m in ("numpy", "onnxruntime", "openvino", "ai_edge_litert") if m in sys.modules]
        print(json.dumps({"rows": rows, "loaded": loaded}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(out.stdout)
    assert result["loaded"] == []
    rows = {row["name"]: row for row in result["rows"]}
    assert rows["onnxruntime"]["installed"] is True and rows["onnxruntime"]["available"] is None
    assert rows["rknn"]["installed"] is False and "edge-agent[rknn]" in rows["rknn"]["reason"]


def test_get_runtime_and_unknown_name() -> None:
    assert registry.get_runtime("onnxruntime").name == "onnxruntime"
    with pytest.raises(NotFoundError, match=r"known: .*litert.*onnxruntime"):
        registry.get_runtime("tensorflow")


def test_runtimes_for_suffix() -> None:
    assert [rt.name for rt in registry.runtimes_for("model.onnx")] == ["onnxruntime", "openvino"]
    assert [rt.name for rt in registry.runtimes_for(".xml")] == ["openvino"]
    assert [rt.name for rt in registry.runtimes_for(Path("a/b.tflite"))] == ["litert"]
    assert registry.runtimes_for("m.rknn") == []  # rknn does not import here


@pytest.mark.parametrize(
    ("module", "factory", "blocked", "extra"),
    [
        ("onnxruntime", OnnxRuntime, ["onnxruntime"], "edge-agent[onnx]"),
        ("openvino", OpenVinoRuntime, ["openvino"], "edge-agent[openvino]"),
        ("litert", LiteRtRuntime, ["ai_edge_litert", "tflite_runtime"], "edge-agent[litert]"),
    ],
)
def test_missing_engine_is_unavailable_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, zoo: ModelZoo, module: str, factory: type, blocked: list[str], extra: str
) -> None:
    model = zoo.mlp_tflite() if module == "litert" else zoo.mlp_onnx()
    for name in blocked:
        # None in sys.modules makes `import name` raise ImportError, as on a box without it.
        monkeypatch.setitem(sys.modules, name, None)
        for sub in [m for m in sys.modules if m.startswith(name + ".")]:
            monkeypatch.setitem(sys.modules, sub, None)
    runtime: Runtime = factory()
    assert runtime.available() is False
    assert extra in runtime.missing_reason()
    assert runtime.devices() == []
    with pytest.raises(UnavailableError, match=r"edge-agent\[") as info:
        runtime.load(model, "CPU", LoadOptions())
    assert info.value.code == "runtime_missing"
    with pytest.raises(UnavailableError):
        runtime.require()


def test_registry_survives_a_missing_engine_in_a_fresh_process() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        sys.modules["onnxruntime"] = None
        from runtimes import registry
        print(json.dumps(registry.status()))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["onnxruntime"]["available"] is False
    assert "edge-agent[onnx]" in rows["onnxruntime"]["reason"]
    assert rows["openvino"]["available"] is True
    assert rows["litert"]["available"] is True


PLUGIN = '''
from runtimes.onnxrt import OnnxRuntime

class EchoRuntime(OnnxRuntime):
    """A plugin engine: onnxruntime under another name."""
    name = "echo"
    extra = "echo"
'''


def test_entry_point_plugins_are_merged_and_broken_ones_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zoo: ModelZoo
) -> None:
    # A real installed distribution (dist-info on sys.path) declaring three adapters.
    (tmp_path / "echo_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "echo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[edge_agent.runtimes]\n"
        "echo = echo_plugin:EchoRuntime\n"
        "ghost = no_such_module_xyz:Ghost\n"
        "notaruntime = runtimes.base:LoadOptions\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    runtimes = registry.all_runtimes(refresh=True)

    assert set(registry.BUILTIN) <= set(runtimes)  # the built-in table is still the base
    echo = runtimes["echo"]
    assert echo.available()
    with echo.load(zoo.mlp_onnx(), "CPU", LoadOptions()) as session:
        assert session.run({"x": mlp_input("tiny")})["y"].shape == (1, 4)

    ghost = runtimes["ghost"]
    assert isinstance(ghost, registry.UnloadableRuntime) and not ghost.available()
    assert "no_such_module_xyz" in ghost.missing_reason()
    with pytest.raises(UnavailableError, match="could not be loaded"):
        ghost.load(zoo.mlp_onnx(), "CPU", LoadOptions())
    assert "not a runtimes.base.Runtime" in runtimes["notaruntime"].missing_reason()

    rows = {row["name"]: row for row in registry.status()}
    assert rows["ghost"]["available"] is False and "ModuleNotFoundError" in rows["ghost"]["reason"]


def test_source_checkout_without_entry_points_uses_builtin_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "entry_point_table", dict)
    assert registry.runtime_table() == registry.BUILTIN
    assert set(registry.all_runtimes(refresh=True)) == set(registry.BUILTIN)


def test_tensor_spec_from_dict_and_options_validation() -> None:
    spec = TensorSpec.from_dict({"name": "x", "dtype": "float32", "shape": [-1, 3, None, 8]})
    assert spec == TensorSpec("x", "float32", (None, 3, None, 8))
    assert spec.dynamic and spec.concrete_shape() == (1, 3, 1, 8)
    with pytest.raises(BadRequestError, match="tensor spec"):
        TensorSpec.from_dict({"name": "x", "shape": [1]})
    with pytest.raises(BadRequestError, match="threads"):
        LoadOptions(threads=0)


def test_check_feed_fast_path_and_messages() -> None:
    from runtimes.base import Session

    class Specs(Session):
        def __init__(self) -> None:
            self.runtime, self.device = "none", "CPU"
            self.inputs = (TensorSpec("a", "float32", (None, 4)), TensorSpec("b", "int64", (2,)))
            self.outputs = ()

        def run(self, feed, *, validate=False):  # type: ignore[no-untyped-def]
            return {}

        def close(self) -> None:
            pass

    s = Specs()
    good = {"a": np.zeros((7, 4), np.float32), "b": np.zeros(2, np.int64)}
    assert s.feed_ok(good)
    s.check_feed(good)
    cases = [
        ({"a": good["a"]}, "bad_input_names", "missing ['b']"),
        ({**good, "c": good["b"]}, "bad_input_names", "unknown ['c']"),
        ({**good, "a": np.zeros((7, 4), np.float64)}, "bad_input_dtype", "expected float32"),
        ({**good, "a": np.zeros((7, 5), np.float32)}, "bad_input_shape", "expected [None, 4]"),
        ({**good, "b": np.zeros((2, 1), np.int64)}, "bad_input_shape", "expected [2]"),
    ]
    for feed, code, text in cases:
        assert not s.feed_ok(feed)
        with pytest.raises(BadRequestError) as info:
            s.check_feed(feed)
        assert info.value.code == code and text in str(info.value)
