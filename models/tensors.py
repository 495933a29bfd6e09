"""Tensors in and out of JSON and ``.npy``, with limits, for the API, CLI and manifests.

JSON form, one tensor: ``{"dtype": "float32", "shape": [1, 4], "data": [...]}``;
``data`` is flat (row-major) or nested, its element count must equal the
shape's product. Non-finite floats are written as the strings ``"nan"``,
``"inf"`` and ``"-inf"`` (JSON has no literal for them) and read back alike.

Binary form: one ``.npy`` (single-input models) or an ``.npz`` (several
outputs). The ``.npy`` header is checked against the limits *before* the array
is allocated, and pickles are never loaded.

numpy is imported inside the functions: this module is reachable from the API,
which the daemon imports at start.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.core.errors import BadRequestError

DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


@dataclass(frozen=True)
class TensorLimits:
    """Caps one request must respect; defaults suit a small edge box."""

    max_tensors: int = 16
    max_elements: int = 4_000_000
    max_bytes: int = 16 * 1024 * 1024
    max_dims: int = 8


DEFAULT_LIMITS = TensorLimits()


def _check_meta(name: str, dtype: str, shape: Any, limits: TensorLimits) -> tuple[int, ...]:
    if dtype not in DTYPES:
        raise BadRequestError(f"tensor {name!r}: dtype {dtype!r} is not accepted; use one of {list(DTYPES)}")
    if not isinstance(shape, (list, tuple)) or any(
        isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape
    ):
        raise BadRequestError(
            f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}"
        )
    if len(shape) > limits.max_dims:
        raise BadRequestError(f"tensor {name!r}: {len(shape)} dimensions; the limit is {limits.max_dims}")
    count = math.prod(shape)
    if count > limits.max_elements:
        raise BadRequestError(f"tensor {name!r}: {count} elements; the limit is {limits.max_elements}")
    import numpy as np

    nbytes = count * np.dtype(dtype).itemsize
    if nbytes > limits.max_bytes:
        raise BadRequestError(f"tensor {name!r}: {nbytes} bytes; the limit is {limits.max_bytes}")
    return tuple(shape)


def _flatten(data: Any, name: str, limit: int) -> list[Any]:
    out: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            if isinstance(item, str):
                if item not in _NONFINITE:
                    raise BadRequestError(
                        f"tensor {name!r}: data holds the string {item[:20]!r}; numbers only"
                    )
                item = _NONFINITE[item]
            elif item is None or isinstance(item, dict):
                raise BadRequestError(f"tensor {name!r}: data holds {type(item).__name__}; numbers only")
            out.append(item)
            if len(out) > limit:
                raise BadRequestError(f"tensor {name!r}: more data than its shape allows")
    return out


def decode_tensor(obj: Any, name: str = "tensor", limits: TensorLimits = DEFAULT_LIMITS) -> Any:
    """One JSON tensor to a numpy array, refusing anything outside ``limits``."""
    import numpy as np

    if not isinstance(obj, dict) or set(obj) != {"dtype", "shape", "data"}:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise BadRequestError(f"tensor {name!r} must be an object with dtype, shape and data; got {keys}")
    dtype = obj["dtype"]
    shape = _check_meta(name, dtype if isinstance(dtype, str) else repr(dtype), obj["shape"], limits)
    count = math.prod(shape)
    flat = _flatten(obj["data"], name, count)
    if len(flat) != count:
        raise BadRequestError(
            f"tensor {name!r}: shape {list(shape)} needs {count} values, data has {len(flat)}"
        )
    try:
        arr = np.asarray(flat, dtype=np.float64 if dtype.startswith("float") else None)
        if dtype == "bool" and arr.size and arr.dtype != np.bool_:
            raise TypeError("bool tensors take true/false")
        if dtype.startswith(("int", "uint")) and arr.size and arr.dtype.kind not in "iu":
            raise TypeError("integer tensors take integers")
        if dtype.startswith(("int", "uint")) and arr.size:
            info = np.iinfo(dtype)
            if arr.min() < info.min or arr.max() > info.max:
                raise TypeError(f"values out of range for {dtype}")
        return arr.astype(dtype).reshape(shape)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequestError(f"tensor {name!r}: data does not fit dtype {dtype}: {exc}") from None


def decode_tensors(obj: Any, limits: TensorLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """``{"inputs": {name: tensor}}`` (or the bare mapping) to ``{name: ndarray}``."""
    if isinstance(obj, dict) and set(obj) == {"inputs"}:
        obj = obj["inputs"]
    if not isinstance(obj, dict) or not obj:
        raise BadRequestError('send {"inputs": {"<name>": {"dtype": ..., "shape": [...], "data": [...]}}}')
    if len(obj) > limits.max_tensors:
        raise BadRequestError(f"{len(obj)} tensors; the limit is {limits.max_tensors}")
    out = {}
    total = 0
    for name, tensor in obj.items():
        arr = decode_tensor(tensor, str(name), limits)
        total += arr.nbytes
        if total > limits.max_bytes:
            raise BadRequestError(f"the inputs hold more than {limits.max_bytes} bytes together")
        out[str(name)] = arr
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def encode_tensor(array: Any) -> dict[str, Any]:
    import numpy as np

    arr = np.asarray(array)
    if arr.dtype.name not in DTYPES:
        raise BadRequestError(f"output dtype {arr.dtype.name} cannot be sent as JSON; ask for the .npz form")
    flat = arr.reshape(-1).tolist()
    if arr.dtype.kind == "f":
        flat = [_jsonable(v) for v in flat]
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": flat}


def encode_tensors(outputs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: encode_tensor(value) for name, value in outputs.items()}


def decode_npy(body: bytes, limits: TensorLimits = DEFAULT_LIMITS, name: str = "input") -> Any:
    """A ``.npy`` body to an array; the header is checked before any allocation."""
    import numpy as np
    from numpy.lib import format as npformat

    if len(body) > limits.max_bytes + 4096:
        raise BadRequestError(f"the .npy body is {len(body)} bytes; the limit is {limits.max_bytes}")
    fh = io.BytesIO(body)
    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, _fortran, dtype = npformat.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _fortran, dtype = npformat.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as exc:
        raise BadRequestError(f"the body is not a valid .npy file: {exc}") from None
    if dtype.hasobject:
        raise BadRequestError(".npy files holding Python objects are refused")
    _check_meta(name, dtype.name, list(shape), limits)
    fh.seek(0)
    try:
        arr = np.load(fh, allow_pickle=False)
    except ValueError as exc:
        raise BadRequestError(f"the .npy file is truncated or corrupt: {exc}") from None
    return np.ascontiguousarray(arr)


def encode_npy(array: Any) -> bytes:
    import numpy as np

    fh = io.BytesIO()
    np.save(fh, np.asarray(array), allow_pickle=False)
    return fh.getvalue()


def encode_npz(outputs: Mapping[str, Any]) -> bytes:
    import numpy as np

    fh = io.BytesIO()
    arrays: dict[str, Any] = {k: np.asarray(v) for k, v in outputs.items()}
    np.savez(fh, **arrays)
    return fh.getvalue()
