"""Small REAL models for tests and benchmarks, built on the spot (nothing downloads).

Every engine that installs here can run them: ONNX graphs written with
``onnx.helper`` (onnxruntime, OpenVINO), the same MLP as an OpenVINO IR
(``.xml``/``.bin`` through ``ov.convert_model`` + ``ov.save_model``) and as a
``.tflite`` flatbuffer written with LiteRT's own schema module (no TensorFlow).
The MLP variants share their weights across formats, so a test can demand that
every engine computes the same numbers, and ``mlp_reference`` gives the answer
in plain numpy.

Use ``ModelZoo(directory)`` from a session-scoped fixture: it builds each file
once and hands back its path::

    @pytest.fixture(scope="session")
    def zoo(tmp_path_factory):
        return ModelZoo(tmp_path_factory.mktemp("zoo"))

    def test_x(zoo):
        path = zoo.mlp_onnx("tiny")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LSTM_AE",
    "MLPS",
    "MLP_MS",
    "MLP_TINY",
    "LstmSpec",
    "MlpSpec",
    "ModelZoo",
    "build_lstm_autoencoder_onnx",
    "build_mlp_ir",
    "build_mlp_onnx",
    "build_mlp_tflite",
    "lstm_input",
    "mlp_input",
    "mlp_reference",
    "mlp_weights",
    "truncated_copy",
]

# Opset 17 / IR 8: loadable by every onnxruntime >= 1.14 and OpenVINO >= 2023.
OPSET = 17
IR_VERSION = 8


@dataclass(frozen=True)
class MlpSpec:
    """A ReLU MLP ``x[batch, dims[0]] -> y[batch, dims[-1]]`` (last layer linear).

    ``batch`` is the batch the variant is meant to be fed (the ``ms`` one takes
    about a millisecond per call on one x86 core with it); the graph itself
    accepts any batch.
    """

    name: str
    dims: tuple[int, ...]
    batch: int
    seed: int


#: ~1 ms per call on one core of a 2-core x86 VM with AVX-512 (onnxruntime, 1 thread, batch 64).
MLP_MS = MlpSpec("mlp_ms", (256, 768, 768, 768, 16), batch=64, seed=1)
#: tens of microseconds per call: the engine's fixed cost dominates, so adapter overhead shows.
MLP_TINY = MlpSpec("mlp_tiny", (8, 16, 4), batch=1, seed=2)
MLPS = {"ms": MLP_MS, "tiny": MLP_TINY}


def _mlp(spec: MlpSpec | str) -> MlpSpec:
    return MLPS[spec] if isinstance(spec, str) else spec


def mlp_weights(spec: MlpSpec | str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer ``(W[in, out], b[out])``, float32, deterministic from ``spec.seed``."""
    spec = _mlp(spec)
    rng = np.random.default_rng(spec.seed)
    layers = []
    for n_in, n_out in zip(spec.dims[:-1], spec.dims[1:], strict=True):
        # He-style scale keeps activations O(1) through the ReLU stack.
        w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        b = (rng.standard_normal(n_out) * 0.1).astype(np.float32)
        layers.append((w, b))
    return layers


def mlp_reference(spec: MlpSpec | str, x: np.ndarray) -> np.ndarray:
    """The MLP in plain numpy (float64 accumulate), the answer engines are checked against."""
    layers = mlp_weights(spec)
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(layers):
        h = h @ w.astype(np.float64) + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h.astype(np.float32)


def mlp_input(spec: MlpSpec | str, batch: int | None = None, seed: int = 0) -> np.ndarray:
    spec = _mlp(spec)
    rng = np.random.default_rng(1000 + seed)
    return rng.standard_normal((batch or spec.batch, spec.dims[0])).astype(np.float32)


def build_mlp_onnx(spec: MlpSpec | str, path: Path, *, dynamic_batch: bool = True) -> Path:
    """Write the MLP as MatMul + Add (+ Relu) nodes; input ``x``, output ``y``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    spec = _mlp(spec)
    batch: str | int = "batch" if dynamic_batch else spec.batch
    nodes = []
    inits = []
    prev = "x"
    layers = mlp_weights(spec)
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(layers) - 1
        mm, add = f"mm{i}", ("y" if last else f"add{i}")
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [mm]),
            helper.make_node("Add", [mm, f"b{i}"], [add]),
        ]
        prev = add
        if not last:
            nodes.append(helper.make_node("Relu", [add], [f"relu{i}"]))
            prev = f"relu{i}"
    graph = helper.make_graph(
        nodes,
        spec.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, spec.dims[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, spec.dims[-1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_mlp_ir(spec: MlpSpec | str, xml_path: Path, onnx_path: Path | None = None) -> Path:
    """Convert the ONNX MLP to OpenVINO IR (``.xml`` + ``.bin``), keeping FP32 weights."""
    import openvino as ov

    spec = _mlp(spec)
    if onnx_path is None:
        onnx_path = build_mlp_onnx(spec, xml_path.with_suffix(".onnx"))
    model = ov.convert_model(str(onnx_path))
    # save_model compresses weights to FP16 by default; keep FP32 so every
    # engine computes the same numbers.
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def build_mlp_tflite(spec: MlpSpec | str, path: Path, *, dynamic_batch: bool = True) -> Path:
    """Write the MLP as FULLY_CONNECTED ops (fused ReLU) in a ``.tflite`` flatbuffer.

    Built with LiteRT's generated schema (object API) and ``flatbuffers``; no
    TensorFlow. TFLite stores FC weights as ``[out, in]``, hence the transposes.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    spec = _mlp(spec)
    layers = mlp_weights(spec)
    aligned_buffer = _aligned_buffer_class()
    buffers: list[Any] = [fb.BufferT()]  # buffer 0 is the conventional empty one
    tensors: list[Any] = []

    def add_tensor(name: str, shape: list[int], data: np.ndarray | None = None) -> int:
        tensor = fb.TensorT()
        tensor.name = name
        tensor.type = fb.TensorType.FLOAT32
        tensor.shape = [1 if d < 0 else d for d in shape]
        if any(d < 0 for d in shape):
            tensor.shapeSignature = list(shape)
        if data is None:
            tensor.buffer = 0
        else:
            buf = aligned_buffer()
            buf.data = np.ascontiguousarray(data, dtype=np.float32)
            buffers.append(buf)
            tensor.buffer = len(buffers) - 1
        tensors.append(tensor)
        return len(tensors) - 1

    batch = -1 if dynamic_batch else spec.batch
    x = add_tensor("x", [batch, spec.dims[0]])
    prev = x
    operators = []
    for i, (w, b) in enumerate(layers):
        last = i == len(layers) - 1
        wt = add_tensor(f"w{i}", [w.shape[1], w.shape[0]], w.T)
        bt = add_tensor(f"b{i}", [b.shape[0]], b)
        out = add_tensor("y" if last else f"h{i}", [batch, w.shape[1]])
        options = fb.FullyConnectedOptionsT()
        options.fusedActivationFunction = (
            fb.ActivationFunctionType.NONE if last else fb.ActivationFunctionType.RELU
        )
        op = fb.OperatorT()
        op.opcodeIndex = 0
        op.inputs = [prev, wt, bt]
        op.outputs = [out]
        op.builtinOptionsType = fb.BuiltinOptions.FullyConnectedOptions
        op.builtinOptions = options
        operators.append(op)
        prev = out

    code = fb.OperatorCodeT()
    code.builtinCode = fb.BuiltinOperator.FULLY_CONNECTED
    code.deprecatedBuiltinCode = fb.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    subgraph = fb.SubGraphT()
    subgraph.tensors = tensors
    subgraph.inputs = [x]
    subgraph.outputs = [prev]
    subgraph.operators = operators
    subgraph.name = "main"
    model = fb.ModelT()
    model.version = 3
    model.operatorCodes = [code]
    model.subgraphs = [subgraph]
    model.description = spec.name
    model.buffers = buffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(builder.Output()))
    return path


def _aligned_buffer_class() -> type:
    from ai_edge_litert import schema_py_generated as fb

    class AlignedBuffer(fb.BufferT):  # type: ignore[misc]
        """A BufferT whose bytes start on a 16-byte boundary, as the TFLite converter writes them.

        The generated Pack writes a ubyte vector with 1-byte alignment; kernels
        that read weights in place (ARM builds) may expect natural alignment.
        """

        def Pack(self, builder: Any) -> int:
            payload = np.ascontiguousarray(self.data, dtype="<f4").tobytes()
            builder.StartVector(1, len(payload), 16)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data = builder.EndVector()
            fb.BufferStart(builder)
            fb.BufferAddData(builder, data)
            return fb.BufferEnd(builder)

    return AlignedBuffer


@dataclass(frozen=True)
class LstmSpec:
    """An LSTM autoencoder ``x[T, batch, features] -> reconstruction[T, batch, features], error[batch]``.

    Encoder LSTM -> last hidden state repeated over T -> decoder LSTM -> linear
    projection back to ``features``. ``error`` is the mean squared
    reconstruction error per batch element: the anomaly score a detector uses.
    T and batch are dynamic.
    """

    name: str = "lstm_ae"
    features: int = 8
    hidden: int = 16
    seed: int = 3


LSTM_AE = LstmSpec()


def build_lstm_autoencoder_onnx(path: Path, spec: LstmSpec = LSTM_AE) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(spec.seed)
    f, h = spec.features, spec.hidden

    def rnd(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    inits = [
        numpy_helper.from_array(rnd(1, 4 * h, f), "enc_w"),
        numpy_helper.from_array(rnd(1, 4 * h, h), "enc_r"),
        numpy_helper.from_array(rnd(1, 8 * h, scale=0.1), "enc_b"),
        numpy_helper.from_array(rnd(1, 4 * h, h), "dec_w"),
        numpy_helper.from_array(rnd(1, 4 * h, h), "dec_r"),
        numpy_helper.from_array(rnd(1, 8 * h, scale=0.1), "dec_b"),
        numpy_helper.from_array(rnd(h, f), "out_w"),
        numpy_helper.from_array(rnd(f, scale=0.1), "out_b"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "two"),
        numpy_helper.from_array(np.array([h], dtype=np.int64), "hidden_dim"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("LSTM", ["x", "enc_w", "enc_r", "enc_b"], ["", "enc_h"], hidden_size=h),
        # Repeat the code vector [1, B, H] over the T steps of the input.
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Slice", ["x_shape", "zero", "two"], ["tb"]),
        helper.make_node("Concat", ["tb", "hidden_dim"], ["tbh"], axis=0),
        helper.make_node("Expand", ["enc_h", "tbh"], ["repeated"]),
        helper.make_node("LSTM", ["repeated", "dec_w", "dec_r", "dec_b"], ["dec_y"], hidden_size=h),
        helper.make_node("Squeeze", ["dec_y", "axis1"], ["dec"]),
        helper.make_node("MatMul", ["dec", "out_w"], ["proj"]),
        helper.make_node("Add", ["proj", "out_b"], ["reconstruction"]),
        helper.make_node("Sub", ["reconstruction", "x"], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["error"], axes=[0, 2], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        spec.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "batch", f])],
        [
            helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, ["T", "batch", f]),
            helper.make_tensor_value_info("error", TensorProto.FLOAT, ["batch"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def lstm_input(t: int = 20, batch: int = 1, spec: LstmSpec = LSTM_AE, seed: int = 0) -> np.ndarray:
    """A smooth multichannel signal (sines with per-channel phase) plus a little noise."""
    rng = np.random.default_rng(2000 + seed)
    steps = np.arange(t, dtype=np.float32)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, size=(1, batch, spec.features)).astype(np.float32)
    signal = np.sin(0.3 * steps + phase) + 0.05 * rng.standard_normal((t, batch, spec.features))
    return signal.astype(np.float32)


def truncated_copy(source: Path, dest: Path, keep: float = 0.5) -> Path:
    """A copy of ``source`` cut to ``keep`` of its size: a download that died half-way."""
    data = source.read_bytes()
    dest.write_bytes(data[: max(1, int(len(data) * keep))])
    return dest


class ModelZoo:
    """Builds each model once into ``directory`` and returns its path."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.directory / name

    def mlp_onnx(self, variant: str = "tiny", *, dynamic_batch: bool = True) -> Path:
        suffix = "" if dynamic_batch else "_static"
        path = self._path(f"{MLPS[variant].name}{suffix}.onnx")
        return path if path.exists() else build_mlp_onnx(variant, path, dynamic_batch=dynamic_batch)

    def mlp_ir(self, variant: str = "tiny") -> Path:
        path = self._path(f"{MLPS[variant].name}.xml")
        return path if path.exists() else build_mlp_ir(variant, path, self.mlp_onnx(variant))

    def mlp_tflite(self, variant: str = "tiny", *, dynamic_batch: bool = True) -> Path:
        suffix = "" if dynamic_batch else "_static"
        path = self._path(f"{MLPS[variant].name}{suffix}.tflite")
        return path if path.exists() else build_mlp_tflite(variant, path, dynamic_batch=dynamic_batch)

    def lstm_autoencoder_onnx(self) -> Path:
        path = self._path(f"{LSTM_AE.name}.onnx")
        return path if path.exists() else build_lstm_autoencoder_onnx(path)

    def corrupt(self, source: Path, keep: float = 0.5) -> Path:
        """A truncated copy of ``source`` (same suffix), for the bad-file paths."""
        return truncated_copy(source, self._path(f"truncated_{int(keep * 100)}_{source.name}"), keep)
