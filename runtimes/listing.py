"""Which registered engines are available here, and the devices each sees, as one JSON line.

Run in a child process by ``hal.probe_runtimes.ask_engines`` (``python -m
runtimes.listing``), so the daemon never imports an engine just to list
devices; ``hal`` reads the JSON and never imports this layer.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _version(modules: tuple[str, ...]) -> str:
    import importlib.metadata  # child only: ~15 ms the daemon need not pay

    for module in modules:
        version = getattr(sys.modules.get(module), "__version__", None)
        if version:
            return str(version).split("-")[0]
    dists = importlib.metadata.packages_distributions()
    for module in modules:
        for dist in dists.get(module, ()):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
    return ""


def ask_engines_here() -> dict[str, Any]:
    """Runs in the child: every registered adapter that is available, and its devices."""
    out: dict[str, Any] = {"runtimes": [], "details": {}, "notes": []}
    from runtimes import registry

    for name, runtime in registry.all_runtimes().items():
        try:
            if not runtime.available():
                if runtime.installed():
                    out["notes"].append(f"{name} is installed but cannot load: {runtime.missing_reason()}")
                continue
            devices = runtime.devices()
        except Exception as exc:  # a broken engine must not hide the others
            out["notes"].append(f"{name} failed while listing devices: {exc}")
            continue
        version = _version(tuple(getattr(runtime, "modules", ())))
        out["runtimes"].append({"name": name, "version": version, "devices": [d.device for d in devices]})
        out["details"].update({f"{name}:{d.device}": d.detail for d in devices if d.detail})
    return out


if __name__ == "__main__":
    print(json.dumps(ask_engines_here()))
