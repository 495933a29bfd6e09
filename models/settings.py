"""How the model manager is set up: memory budget, pools, threads, idle unloading, the inline threshold.

Built once from the daemon's ``[models]`` settings (``agent/models_service.py``)
or by a CLI command; ``models/manager.py`` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from models.choose import DEFAULT_POLICY, Policy

MB = 1024 * 1024


@dataclass(frozen=True)
class ManagerSettings:
    """Built once from config. ``memory_budget_bytes=None`` means ``memory_share`` of total RAM."""

    memory_budget_bytes: int | None = None
    memory_share: float = 0.5
    idle_timeout_s: float | None = 300.0
    idle_check_interval_s: float = 10.0
    pool_size: int = 1
    pool_sizes: Mapping[str, int] = field(default_factory=dict)
    #: > 1: up to this many queued BATCH calls to one model share a run (models/batching.py); opt-in,
    #: for models whose rows are independent
    batch_max: int = 1
    batch_maxes: Mapping[str, int] = field(default_factory=dict)
    pinned: tuple[str, ...] = ()
    max_waiting: int = 64
    workers: int = 4
    threads: int | None = None
    smoke_test_on_load: bool = True
    measure_rss: bool = True
    policy: Policy = DEFAULT_POLICY
    #: a model whose calls take less than this (smoothed, measured) runs on the caller's thread
    inline_below_ms: float = 0.5
    #: a model declaring at most this much memory runs on one engine thread: a 50 µs wake-word
    #: step is over before a second thread wakes up (2 threads cost 10x on a busy 2-core box)
    one_thread_up_to_bytes: int = 16 * MB
