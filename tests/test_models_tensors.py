"""Tensor (de)serialisation for the API: JSON and .npy, dtype whitelist, limits, clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest

from agent.errors import BadRequestError
from models.tensors import (
    TensorLimits,
    decode_npy,
    decode_tensor,
    decode_tensors,
    encode_npy,
    encode_npz,
    encode_tensor,
    encode_tensors,
)


@pytest.mark.parametrize(
    "dtype", ["float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"]
)
def test_round_trip_every_dtype(dtype: str) -> None:
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((2, 3, 4)) * 50).astype(dtype)
    back = decode_tensor(encode_tensor(arr))
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_nested_data_non_finite_and_mapping_forms() -> None:
    t = decode_tensor({"dtype": "float32", "shape": [2, 2], "data": [[1, "nan"], ["inf", "-inf"]]})
    assert np.isnan(t[0, 1]) and t[1, 0] == np.inf and t[1, 1] == -np.inf
    enc = encode_tensor(t)
    assert enc["data"] == [1.0, "nan", "inf", "-inf"]
    feed = decode_tensors({"inputs": {"x": enc}})
    assert list(feed) == ["x"]
    assert decode_tensors({"x": enc}).keys() == {"x"}
    assert encode_tensors({"y": np.zeros((0, 3), np.float32)}) == {
        "y": {"dtype": "float32", "shape": [0, 3], "data": []}
    }


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"dtype": "complex64", "shape": [1], "data": [1]}, "not accepted"),
        ({"dtype": "object", "shape": [1], "data": [1]}, "not accepted"),
        ({"dtype": "float32", "shape": [2, 2], "data": [1, 2, 3]}, "needs 4 values, data has 3"),
        ({"dtype": "float32", "shape": [1], "data": [1, 2]}, "more data than its shape"),
        ({"dtype": "float32", "shape": [-1], "data": []}, "non-negative"),
        ({"dtype": "float32", "shape": [1.5], "data": [1]}, "non-negative integers"),
        ({"dtype": "float32", "shape": [1], "data": ["abc"]}, "numbers only"),
        ({"dtype": "float32", "shape": [1], "data": [None]}, "numbers only"),
        ({"dtype": "int8", "shape": [1], "data": [300]}, "out of range"),
        ({"dtype": "int32", "shape": [1], "data": [1.5]}, "integers"),
        ({"dtype": "bool", "shape": [1], "data": [2]}, "true/false"),
        ({"dtype": "float32", "shape": [1]}, "dtype, shape and data"),
        ({"dtype": "float32", "shape": [1], "data": [1], "extra": 1}, "dtype, shape and data"),
        ([1, 2], "dtype, shape and data"),
    ],
)
def test_bad_tensors(obj, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        decode_tensor(obj, "x")


def test_limits() -> None:
    limits = TensorLimits(max_tensors=2, max_elements=100, max_bytes=256, max_dims=3)
    with pytest.raises(BadRequestError, match="101 elements; the limit is 100"):
        decode_tensor({"dtype": "uint8", "shape": [101], "data": [0] * 101}, "x", limits)
    with pytest.raises(BadRequestError, match="400 bytes; the limit is 256"):
        decode_tensor({"dtype": "float32", "shape": [100], "data": [0] * 100}, "x", limits)
    with pytest.raises(BadRequestError, match="4 dimensions"):
        decode_tensor({"dtype": "uint8", "shape": [1, 1, 1, 1], "data": [0]}, "x", limits)
    t = {"dtype": "uint8", "shape": [1], "data": [0]}
    with pytest.raises(BadRequestError, match="3 tensors; the limit is 2"):
        decode_tensors({"a": t, "b": t, "c": t}, limits)
    big = {"dtype": "float32", "shape": [40], "data": [0] * 40}
    with pytest.raises(BadRequestError, match="together"):
        decode_tensors({"a": big, "b": big}, limits)
    with pytest.raises(BadRequestError, match='send {"inputs"'):
        decode_tensors({}, limits)
    # a shape that would allocate a huge array is refused before any allocation
    with pytest.raises(BadRequestError, match="elements"):
        decode_tensor({"dtype": "float32", "shape": [10**6, 10**6], "data": []}, "x")


def test_npy_round_trip_and_header_checks() -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    back = decode_npy(encode_npy(arr))
    np.testing.assert_array_equal(back, arr)
    fortran = np.asfortranarray(arr)
    assert decode_npy(encode_npy(fortran)).flags["C_CONTIGUOUS"]
    with pytest.raises(BadRequestError, match="not a valid .npy"):
        decode_npy(b"hello world")
    with pytest.raises(BadRequestError, match="truncated or corrupt"):
        decode_npy(encode_npy(arr)[:-8])
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadRequestError, match="Python objects"):
        decode_npy(buf.getvalue())
    with pytest.raises(BadRequestError, match="complex64"):
        decode_npy(encode_npy(np.zeros(2, np.complex64)))
    # the header announces 10^10 elements: refused from the header alone
    header = encode_npy(np.zeros((1,), np.float32)).replace(b"(1,)", b"(10000000000,)")
    with pytest.raises(BadRequestError, match="elements"):
        decode_npy(header)
    z = np.load(io.BytesIO(encode_npz({"y": arr, "z": arr[:1]})))
    assert sorted(z.files) == ["y", "z"]
