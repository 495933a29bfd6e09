"""The scheduler's rows: jobs (paused, last handled fire, next run) and one row per run attempt.

Every write is one short statement or transaction on the daemon's store
(``synchronous=FULL``): a run recorded as finished survives a power cut, and
a run found ``queued``/``held``/``running`` at the next start is known to
have been cut short (``interrupted``).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from agent.core.errors import DiskFullError
from agent.store import Store

log = logging.getLogger("edge_agent.scheduler")

ACTIVE_STATES = ("queued", "held", "running")
FINAL_STATES = ("ok", "failed", "timeout", "skipped", "missed", "cancelled", "interrupted")


class RunStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ jobs

    def upsert_job(self, name: str, spec: dict[str, Any], now: float) -> dict[str, Any]:
        """Record the job's spec (keeping paused and fire times); returns its row.

        On a full disk the box must still start (and say "disk full"): the row it had is used,
        or a new one kept in memory until space is back."""
        spec_json = json.dumps(spec, separators=(",", ":"))
        try:
            with self.store.atomic() as conn:
                conn.execute(
                    "INSERT INTO scheduler_jobs (name, spec, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at",
                    (name, spec_json, now),
                )
        except DiskFullError as exc:
            log.warning("job %s not recorded (%s); it runs from memory until space is back", name, exc)
            rows = self.store.query("SELECT * FROM scheduler_jobs WHERE name = ?", (name,))
            if rows:
                return {**rows[0], "spec": spec_json}
            return {
                "name": name, "spec": spec_json, "paused": 0, "last_fire": None, "next_run": None,
                "updated_at": now,
            }  # fmt: skip
        return self.store.query("SELECT * FROM scheduler_jobs WHERE name = ?", (name,))[0]

    def set_fire(self, name: str, last_fire: float | None, next_run: float | None) -> None:
        """The fire times kept for the next start; on a full disk they stay in memory (a restart
        then handles those fires again by its missed-run policy)."""
        try:
            self.store.execute(
                "UPDATE scheduler_jobs SET last_fire = ?, next_run = ?, updated_at = ? WHERE name = ?",
                (last_fire, next_run, time.time(), name),
            )
        except DiskFullError as exc:
            log.debug("fire times of %s not recorded: %s", name, exc)

    def set_paused(self, name: str, paused: bool) -> None:
        self.store.execute(
            "UPDATE scheduler_jobs SET paused = ?, updated_at = ? WHERE name = ?",
            (int(paused), time.time(), name),
        )

    # ------------------------------------------------------------ runs

    def add_run(
        self,
        job: str,
        scheduled_for: float,
        reason: str,
        attempt: int,
        state: str,
        now: float,
        error: str = "",
    ) -> int:
        cur = self.store.execute(
            "INSERT INTO scheduler_runs (job, scheduled_for, reason, attempt, state, queued_at, finished_at,"
            " error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (job, scheduled_for, reason, attempt, state, now, now if state in FINAL_STATES else None, error),
        )
        return int(cur.lastrowid or 0)

    def set_state(self, run_id: int, state: str, now: float, *, held: str = "") -> None:
        if run_id < 0:  # a quiet job's run: no row unless it fails
            return
        if state == "running":
            self.store.execute(
                "UPDATE scheduler_runs SET state = ?, started_at = ?, held = NULL WHERE id = ?",
                (state, now, run_id),
            )
        else:
            self.store.execute(
                "UPDATE scheduler_runs SET state = ?, held = ? WHERE id = ?", (state, held or None, run_id)
            )

    def finish(
        self,
        run_id: int,
        state: str,
        now: float,
        *,
        error: str = "",
        result: Any = None,
        started_at: float | None = None,
    ) -> None:
        if run_id < 0:
            return
        self.store.execute(
            "UPDATE scheduler_runs SET state = ?, started_at = COALESCE(?, started_at), held = NULL,"
            " finished_at = ?, error = ?, result = ? WHERE id = ?",
            (
                state,
                started_at,
                now,
                error or None,
                None if result is None else json.dumps(result, separators=(",", ":"), default=str)[:4000],
                run_id,
            ),
        )

    def interrupt_active(self, now: float) -> list[str]:
        """Runs cut short by the last stop or power cut become ``interrupted``; returns their jobs."""
        with self.store.atomic() as conn:
            jobs = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT job FROM scheduler_runs WHERE state IN ('queued', 'held', 'running')"
                )
            ]
            conn.execute(
                "UPDATE scheduler_runs SET state = 'interrupted', finished_at = ?,"
                " error = 'the daemon stopped before this run finished' "
                "WHERE state IN ('queued', 'held', 'running')",
                (now,),
            )
        return jobs

    def last_final(self, job: str) -> dict[str, Any] | None:
        """The newest run of ``job`` that ran to an outcome (ok, failed or timeout)."""
        rows = self.store.query(
            "SELECT * FROM scheduler_runs WHERE job = ? AND state IN ('ok', 'failed', 'timeout') "
            "ORDER BY id DESC LIMIT 1",
            (job,),
        )
        return rows[0] if rows else None

    def history(self, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        if job:
            rows = self.store.query(
                "SELECT * FROM scheduler_runs WHERE job = ? ORDER BY id DESC LIMIT ?", (job, limit)
            )
        else:
            rows = self.store.query("SELECT * FROM scheduler_runs ORDER BY id DESC LIMIT ?", (limit,))
        for row in rows:
            row["result"] = json.loads(row["result"]) if row.get("result") else None
            if row.get("started_at") and row.get("finished_at"):
                row["duration_s"] = round(row["finished_at"] - row["started_at"], 3)
        return rows
