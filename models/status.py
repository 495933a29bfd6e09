"""The manager's status view: one model's state, and the body of ``GET /v1/models``.

Where an unloaded model would run comes from the manager's probe cache
(filled by a load or by ``ModelManager.status_async``), so building the view
never imports an engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.core.errors import NotFoundError

if TYPE_CHECKING:
    from models.loaded import Loader
    from models.manager import ModelManager


def model_status(manager: ModelManager, name: str) -> dict[str, Any]:
    """One model's state; where an unloaded one would run comes from the probe cache."""
    store = manager.store
    versions = store.versions(name)
    entry = manager.entry(name)
    record = manager.record(name)
    if not versions and entry is None:
        raise NotFoundError(f"model {name} is not installed")
    active = store.active_version(name)
    out: dict[str, Any] = {
        "name": name,
        "installed": bool(versions),
        "versions": versions,
        "active_version": active,
        "state": "loaded" if entry else ("loading" if manager.is_loading(name) else "unloaded"),
        "loaded": entry is not None,
        "pinned": record.pinned,
        "latency": record.latency.to_dict(),
        "queue_wait": record.wait.to_dict(),
        "fallback": [s.to_dict() for s in record.fallback],
        "last_error": record.last_error,
        "missing_extras": list(record.missing_extras),
    }
    if entry is not None:
        cand = entry.candidate
        out.update(
            version=entry.installed.version,
            runtime=cand.runtime,
            device=cand.device,
            device_kind=cand.kind,
            precision=cand.variant.precision,
            memory_bytes=entry.memory_bytes,
            memory_declared_bytes=entry.declared_bytes,
            memory_measured_bytes=entry.measured_bytes,
            load_ms=round(entry.load_s * 1000, 1),
            refcount=entry.refcount,
            pool_size=len(entry.pool.sessions),
            batch_max=entry.pool.batch_max,
            waiting=entry.pool.waiting_now(),
            rejected=entry.pool.rejected,
            inline=manager.runs_inline(entry),
        )
    else:
        out.update(refcount=0, memory_bytes=0)
        found = manager.probed(name, active) if active is not None else None
        if isinstance(found, str):
            out["unavailable"] = found
        elif found is not None and active is not None:
            if found.candidates:
                out["would_run_on"] = found.chosen.label
            else:
                out["unavailable"] = str(found.unavailable(store.get(name, active).manifest))
            out["missing_extras"] = sorted(set(out["missing_extras"]) | set(found.missing_extras))
    if out["missing_extras"]:
        out["install_hint"] = f"pip install 'edge-agent[{','.join(out['missing_extras'])}]'"
    return out


def status(manager: ModelManager) -> dict[str, Any]:
    """The body of ``GET /v1/models`` (see ``ModelManager.status_async`` for unloaded models)."""
    names = sorted(set(manager.store.names()) | set(manager.loaded_names()))
    return {
        "memory_budget_bytes": manager.budget_bytes,
        "memory_used_bytes": manager.used_bytes(),
        "workers": manager.settings.workers,
        "models": [model_status(manager, n) for n in names],
    }


async def probe_unloaded(manager: ModelManager, loader: Loader) -> None:
    """Probe, off the loop, where each unloaded model's active version would run (fills the cache)."""
    store = manager.store
    unloaded = [n for n in store.names() if n not in manager.loaded_names()]
    active = [(n, store.active_version(n)) for n in unloaded]
    choices = loader.choices
    await loader.probe([store.get(n, v) for n, v in active if v and (n, v) not in choices])
