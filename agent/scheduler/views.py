"""What the scheduler shows: one job with its state, next and last run; the run history.

A mixin of ``Scheduler`` (agent/scheduler/engine.py), kept apart so the
engine holds only the deciding and running.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.scheduler.jobs import JobSpec
    from agent.scheduler.runs import RunStore


class SchedulerViews:
    jobs: dict[str, JobSpec]
    runs: RunStore
    _rows: dict[str, dict[str, Any]]
    _pending: builtins.list[Any]
    _running: dict[str, Any]
    _quiet_last: dict[str, dict[str, Any]]

    def spec(self, name: str) -> JobSpec:  # pragma: no cover - the engine's
        raise NotImplementedError

    def describe(self, name: str) -> dict[str, Any]:
        spec = self.spec(name)
        row = self._rows[name]
        pending = [p for p in self._pending if p.spec.name == name]
        state = "running" if name in self._running else ("held" if any(p.held for p in pending) else "")
        state = state or ("queued" if pending else ("paused" if row["paused"] else "idle"))
        last = self.runs.history(name, 1)
        quiet = self._quiet_last.get(name)
        if quiet is not None and (not last or (last[0]["finished_at"] or 0) < quiet["finished_at"]):
            last = [quiet]
        return {
            **spec.to_dict(),
            "paused": bool(row["paused"]),
            "state": state,
            "held": next((p.held for p in pending if p.held), ""),
            "next_run": row["next_run"] if not row["paused"] else None,
            "last_run": last[0] if last else None,
        }

    def list(self) -> list[dict[str, Any]]:
        return [self.describe(n) for n in sorted(self.jobs)]

    # builtins.list: inside this class ``list`` is the method above
    def history(self, name: str | None = None, limit: int = 50) -> builtins.list[dict[str, Any]]:
        if name:
            self.spec(name)
        return self.runs.history(name, limit)
