"""Inference engine adapters behind one protocol (see ``runtimes.base``).

Engines are imported inside their adapter only, so importing this package
costs nothing where onnxruntime, OpenVINO, LiteRT or RKNN are missing.
"""

from runtimes.base import DeviceInfo, LoadOptions, Runtime, Session, TensorSpec
from runtimes.registry import all_runtimes, available_runtimes, get_runtime, runtimes_for, status

__all__ = [
    "DeviceInfo",
    "LoadOptions",
    "Runtime",
    "Session",
    "TensorSpec",
    "all_runtimes",
    "available_runtimes",
    "get_runtime",
    "runtimes_for",
    "status",
]
