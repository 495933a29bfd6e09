"""The model memory budget: how big it is, and which loaded model goes to make room for another.

Least recently used first; pinned models and models with leases (or queued
calls) are never evicted. When nothing evictable is left, the load is refused
with ResourceExhaustedError naming who holds the memory, instead of letting the
kernel's OOM killer pick a victim.

Memory accounting, per loaded model: before loading we reserve the manifest's
``memory_bytes`` × pool size; after loading we measure the process RSS delta
across the load (psutil) and account ``max(declared, measured)``. Why max: a
manifest can under-declare (measured wins), while a small delta does not
prove a small need (the allocator may reuse pages freed by an earlier unload,
and mmapped weights fault in later). Loads are serialised so each delta
belongs to one model; inference running meanwhile adds noise, accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from agent.core.errors import ResourceExhaustedError
from models.loaded import LoadedModel

_MB = 1024 * 1024


def default_budget(profile: Any, share: float) -> int:
    """A share of RAM (or of the container's memory limit, when lower)."""
    memory = getattr(profile, "memory", None)
    total_mb = getattr(memory, "total_mb", 0)
    if total_mb:
        limit_mb = getattr(memory, "limit_mb", None)
        total_mb = min(total_mb, limit_mb) if limit_mb else total_mb
        return int(total_mb * 1024 * 1024 * share)
    import psutil

    return int(psutil.virtual_memory().total * share)


def check_fits(name: str, need: int, budget: int) -> None:
    if need > budget:
        raise ResourceExhaustedError(
            f"model {name} needs {need / _MB:.1f} MiB, more than the whole model memory budget "
            f"({budget / _MB:.1f} MiB); raise models.memory_budget",
            code="memory_budget",
        )


def next_victim(
    name: str,
    need: int,
    budget: int,
    used: int,
    loaded: Iterable[LoadedModel],
    pinned: Callable[[str], bool],
) -> LoadedModel | None:
    """None when ``need`` fits; else the model to unload first; refuses when none may go."""
    if used + need <= budget:
        return None
    entries = list(loaded)
    victims = sorted(
        (e for e in entries if e.refcount == 0 and not pinned(e.name) and e.name != name),
        key=lambda e: e.last_used,
    )
    if victims:
        return victims[0]
    holders = ", ".join(
        f"{e.name} ({e.memory_bytes / _MB:.1f} MiB, "
        + ("pinned" if pinned(e.name) else f"in use by {e.refcount}")
        + ")"
        for e in entries
    )
    raise ResourceExhaustedError(
        f"cannot load {name}: it needs {need / _MB:.1f} MiB, the budget is "
        f"{budget / _MB:.1f} MiB and {used / _MB:.1f} MiB is held by "
        f"models that cannot be unloaded: {holders or 'loads in progress'}. "
        "Unpin a model, wait for requests to finish, or raise models.memory_budget.",
        code="memory_budget",
    )
