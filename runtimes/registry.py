"""Find the inference engine adapters: the built-in four plus plugins.

Adapters are declared as entry points in the group ``edge_agent.runtimes``
(``name = "module:Class"``). A source checkout that was never pip-installed has
no entry points, so the built-in table below is always the base, and the
entry points of installed distributions are merged over it (a plugin may add
an engine, or replace a built-in one on purpose).

A missing engine never breaks the registry: adapter modules import their
engine lazily, so they always import and report ``available() == False``; an
adapter module that fails to import at all (a broken plugin) is listed as an
``UnloadableRuntime`` carrying the import error as its reason.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Any, ClassVar

from agent.core.errors import NotFoundError, UnavailableError
from runtimes.base import DeviceInfo, LoadOptions, Runtime, Session

log = logging.getLogger(__name__)

GROUP = "edge_agent.runtimes"

#: the adapters shipped with edge-agent; must match pyproject's entry points.
BUILTIN: dict[str, str] = {
    "onnxruntime": "runtimes.onnxrt:OnnxRuntime",
    "openvino": "runtimes.openvino_rt:OpenVinoRuntime",
    "litert": "runtimes.litert:LiteRtRuntime",
    "rknn": "runtimes.rknn:RknnRuntime",
}

#: extras of the built-ins, for the message when their module itself fails to import
_BUILTIN_EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino", "litert": "litert", "rknn": "rknn"}

_lock = threading.Lock()
_cache: dict[str, Runtime] | None = None


class UnloadableRuntime(Runtime):
    """Stands in for an adapter whose module or class could not be loaded."""

    name: ClassVar[str] = "unloadable"
    extra: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, target: str, reason: str, extra: str = "") -> None:
        # Instance attributes shadow the ClassVars: each placeholder names its adapter.
        self.name = name  # type: ignore[misc]  # a ClassVar on adapters; this placeholder has one per name
        self.extra = extra  # type: ignore[misc]  # likewise
        self.target = target
        self.reason = reason

    def available(self) -> bool:
        return False

    def missing_reason(self) -> str:
        fix = f" (pip install 'edge-agent[{self.extra}]')" if self.extra else ""
        return f"runtime adapter {self.name} ({self.target}) could not be loaded: {self.reason}{fix}"

    def devices(self) -> list[DeviceInfo]:
        return []

    def load(self, model: Path, device: str, options: LoadOptions) -> Session:
        raise UnavailableError(self.missing_reason(), code="runtime_missing")


def entry_point_table() -> dict[str, str]:
    """``name -> "module:Class"`` from installed distributions (empty in a source checkout)."""
    from importlib.metadata import entry_points

    try:
        found = entry_points(group=GROUP)
    except Exception as exc:  # broken metadata of some unrelated distribution
        log.warning("reading entry points of %s failed: %s", GROUP, exc)
        return {}
    return {ep.name: ep.value for ep in found}


def runtime_table() -> dict[str, str]:
    """The built-ins with installed entry points merged over them."""
    table = dict(BUILTIN)
    for name, target in entry_point_table().items():
        if name in table and table[name] != target:
            log.info("runtime %s: plugin %s replaces built-in %s", name, target, table[name])
        table[name] = target
    return table


def instantiate(name: str, target: str) -> Runtime:
    """Import ``module:Class`` and build the adapter; never raises."""
    module_name, _, attr = target.partition(":")
    extra = _BUILTIN_EXTRAS.get(name, "")
    try:
        cls: Any = importlib.import_module(module_name)
        for part in (attr or "").split("."):
            cls = getattr(cls, part)
        runtime = cls()
    except Exception as exc:
        return UnloadableRuntime(name, target, f"{type(exc).__name__}: {exc}", extra)
    if not isinstance(runtime, Runtime):
        return UnloadableRuntime(name, target, f"{target} is not a runtimes.base.Runtime", extra)
    return runtime


def all_runtimes(refresh: bool = False) -> dict[str, Runtime]:
    """Every known adapter by name, available or not; built once and cached."""
    global _cache
    with _lock:
        if _cache is None or refresh:
            _cache = {name: instantiate(name, target) for name, target in sorted(runtime_table().items())}
        return dict(_cache)


def get_runtime(name: str) -> Runtime:
    """The adapter called ``name`` (it may be unavailable: ``load`` then raises UnavailableError)."""
    runtimes = all_runtimes()
    try:
        return runtimes[name]
    except KeyError:
        raise NotFoundError(
            f"no runtime called {name!r}; known: {', '.join(sorted(runtimes))}", code="runtime_unknown"
        ) from None


def available_runtimes() -> dict[str, Runtime]:
    return {name: rt for name, rt in all_runtimes().items() if rt.available()}


def runtimes_for(model: Path | str) -> list[Runtime]:
    """Available adapters that load a file with ``model``'s suffix (``.onnx``...), built-ins first."""
    text = str(model)
    suffix = text.lower() if text.startswith(".") and "/" not in text else Path(text).suffix.lower()
    order = list(BUILTIN)
    found = [rt for rt in available_runtimes().values() if suffix in rt.suffixes]
    return sorted(found, key=lambda rt: order.index(rt.name) if rt.name in order else len(order))


def status(probe: bool = True) -> list[dict[str, Any]]:
    """One row per adapter for ``edge-agent runtimes`` and ``GET /runtimes``.

    Each row: name, available, installed, extra, suffixes, devices (device,
    kind, detail), reason (None when available, else what is missing and the
    fix). ``probe=True`` imports every installed engine to list its devices
    (about 100 MiB of RSS for onnxruntime + OpenVINO + LiteRT, paid once);
    ``probe=False`` imports none and leaves ``available`` None.
    """
    return [runtime.describe(probe) for runtime in all_runtimes().values()]
