"""Staged rollout of a model or config bundle: the canary share first, the rest only if every canary succeeded.

A deployment targets the *online* devices matching a selector (offline ones
are recorded as ``skipped``: a command they cannot receive would only turn
into a timeout). The canary share is the first ``ceil(n * percent / 100)``
devices in device-id order: predictable, so an operator can tell which boxes
go first (or give the canaries a label and deploy to that label first).

Each device gets one signed ``deploy`` command with args
``{"bundle_url", "sha256", "size", "manifest"}`` (a model or a config bundle
alike: the device dispatches on the manifest's ``kind``, and a config bundle's
name fills the ``model`` column); its result moves its row in
``deployment_devices`` to ``ok``, ``failed`` or ``timeout``. The deployment
row ends as ``succeeded``, ``canary_failed`` (nothing beyond the canaries was
touched) or ``failed`` (some of the rest failed).

The deployment runs as a task inside the hub instance whose API started it.
A graceful stop marks it ``interrupted``; after a crash the row stays
``running`` (with several instances sharing a database, no other instance
can tell a crashed owner from a slow one: a known limit).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

from agent.core.errors import BadRequestError, EdgeAgentError, NotFoundError
from sync.envelope import new_id
from sync.hub.bundles import BundleStore
from sync.hub.commands import CommandCenter
from sync.hub.db import HubDB
from sync.hub.registry import list_devices, selector_text

log = logging.getLogger("edge_hub.deploy")

DEPLOY_COMMAND = "deploy"


def parse_percent(value: str | float | int) -> float:
    """``"10%"``, ``"10"`` or ``10`` -> 10.0 (0 means no canary stage)."""
    text = str(value).strip().rstrip("%").strip()
    try:
        pct = float(text)
    except ValueError:
        raise BadRequestError(f"canary share {value!r}: expected a percentage such as 10%") from None
    if not 0 <= pct <= 100:
        raise BadRequestError(f"canary share {value!r} must be between 0% and 100%")
    return pct


def canary_count(n: int, percent: float) -> int:
    if n == 0 or percent <= 0:
        return 0
    return min(n, max(1, math.ceil(n * percent / 100)))


class Deployer:
    def __init__(self, db: HubDB, commands: CommandCenter, bundles: BundleStore) -> None:
        self.db = db
        self.commands = commands
        self.bundles = bundles
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ starting

    async def start(
        self,
        bundle_sha256: str,
        selector: dict[str, str],
        canary_percent: float,
        timeout_s: float,
        *,
        operator: str = "",
    ) -> dict[str, Any]:
        bundle = await asyncio.to_thread(self.bundles.get, bundle_sha256)
        devices = await asyncio.to_thread(list_devices, self.db, selector)
        if not devices:
            raise NotFoundError(f"no registered device matches {selector_text(selector)}")
        online = [d["device"] for d in devices if d["online"]]
        if not online:
            raise BadRequestError(
                f"none of the {len(devices)} devices matching {selector_text(selector)} is online"
            )
        k = canary_count(len(online), canary_percent)
        deployment_id = new_id()
        now = time.time()
        rows: list[tuple[str, Any, str, str, str | None, str | None, float]] = [
            (deployment_id, d, "canary", "pending", None, None, now) for d in online[:k]
        ]
        rows += [(deployment_id, d, "rollout", "pending", None, None, now) for d in online[k:]]
        rows += [
            (deployment_id, d["device"], "-", "skipped", None, "offline when the deployment started", now)
            for d in devices
            if not d["online"]
        ]

        def insert() -> None:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO deployments (id, created_at, updated_at, bundle_sha256, model, version, selector, "
                    "canary_percent, status, operator) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        deployment_id,
                        now,
                        now,
                        bundle["sha256"],
                        bundle["model"],
                        bundle["version"],
                        json.dumps(selector, sort_keys=True),
                        canary_percent,
                        "running",
                        operator or None,
                    ),
                )
                tx.executemany(
                    "INSERT INTO deployment_devices (deployment_id, device, phase, status, command_id, error, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )

        await asyncio.to_thread(insert)
        task = asyncio.create_task(
            self._run(deployment_id, bundle, timeout_s, operator), name=f"deploy-{deployment_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info(
            "deployment %s of %s %s to %d devices (%d canary)",
            deployment_id,
            bundle["model"],
            bundle["version"],
            len(online),
            k,
        )
        return await asyncio.to_thread(self.get, deployment_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except asyncio.CancelledError:
                pass

    # ------------------------------------------------------------ running

    async def _run(
        self, deployment_id: str, bundle: dict[str, Any], timeout_s: float, operator: str = ""
    ) -> None:
        args = {
            "bundle_url": self.bundles.download_url(bundle["sha256"]),
            "sha256": bundle["sha256"],
            "size": bundle["size"],
            "manifest": bundle["manifest"],
        }
        try:
            for phase in ("canary", "rollout"):
                ok = await self._phase(deployment_id, phase, args, timeout_s, operator)
                if not ok:
                    status = "canary_failed" if phase == "canary" else "failed"
                    if phase == "canary":
                        await asyncio.to_thread(
                            self._set_pending, deployment_id, "skipped", "not deployed: the canary failed"
                        )
                    await asyncio.to_thread(self._finish, deployment_id, status)
                    return
            await asyncio.to_thread(self._finish, deployment_id, "succeeded")
        except asyncio.CancelledError:
            await asyncio.to_thread(
                self._finish, deployment_id, "interrupted", "the hub stopped during the rollout"
            )
            raise
        except Exception as exc:
            log.exception("deployment %s failed", deployment_id)
            await asyncio.to_thread(self._finish, deployment_id, "failed", f"hub error: {exc}")

    async def _phase(
        self, deployment_id: str, phase: str, args: dict[str, Any], timeout_s: float, operator: str = ""
    ) -> bool:
        rows = await asyncio.to_thread(
            self.db.query,
            "SELECT device FROM deployment_devices WHERE deployment_id = ? AND phase = ? AND status = 'pending' "
            "ORDER BY device",
            (deployment_id, phase),
        )
        if not rows:
            return True
        sent: dict[str, str] = {}
        all_ok = True
        for row in rows:
            device = row["device"]
            try:
                cmd = await asyncio.to_thread(
                    self.commands.send,
                    device,
                    DEPLOY_COMMAND,
                    args,
                    ttl_s=max(self.commands.ttl_s, timeout_s),
                    deployment_id=deployment_id,
                    operator=operator,
                )
            except EdgeAgentError as exc:
                all_ok = False
                await asyncio.to_thread(self._set_device, deployment_id, device, "failed", None, str(exc))
                continue
            sent[cmd["id"]] = device
            await asyncio.to_thread(self._set_device, deployment_id, device, "sent", cmd["id"], None)
        results = await self.commands.wait(sent, timeout_s)
        for command_id, device in sent.items():
            cmd = results.get(command_id, {})
            if cmd.get("status") == "ok":
                status, error = "ok", None
            elif cmd.get("status") == "failed":
                status, error = "failed", cmd.get("error") or "the device reported a failure"
            else:
                status, error = "timeout", f"no result within {timeout_s:g} s"
            all_ok = all_ok and status == "ok"
            await asyncio.to_thread(self._set_device, deployment_id, device, status, command_id, error)
        return all_ok

    # ------------------------------------------------------------ rows

    def _set_device(
        self, deployment_id: str, device: str, status: str, command_id: str | None, error: str | None
    ) -> None:
        now = time.time()
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE deployment_devices SET status = ?, command_id = COALESCE(?, command_id), error = ?, "
                "updated_at = ? WHERE deployment_id = ? AND device = ?",
                (status, command_id, error, now, deployment_id, device),
            )
            tx.execute("UPDATE deployments SET updated_at = ? WHERE id = ?", (now, deployment_id))

    def _set_pending(self, deployment_id: str, status: str, error: str) -> None:
        self.db.execute(
            "UPDATE deployment_devices SET status = ?, error = ?, updated_at = ? "
            "WHERE deployment_id = ? AND status = 'pending'",
            (status, error, time.time(), deployment_id),
        )

    def _finish(self, deployment_id: str, status: str, detail: str = "") -> None:
        now = time.time()
        self.db.execute(
            "UPDATE deployments SET status = ?, detail = ?, updated_at = ?, finished_at = ? WHERE id = ?",
            (status, detail, now, now, deployment_id),
        )
        log.info("deployment %s finished: %s %s", deployment_id, status, detail)

    def get(self, deployment_id: str) -> dict[str, Any]:
        rows = self.db.query("SELECT * FROM deployments WHERE id = ?", (deployment_id,))
        if not rows:
            raise NotFoundError(f"deployment {deployment_id!r} is unknown to this hub")
        out = dict(rows[0])
        out["selector"] = json.loads(out["selector"])
        out["devices"] = self.db.query(
            "SELECT device, phase, status, command_id, error, updated_at FROM deployment_devices "
            "WHERE deployment_id = ? ORDER BY phase, device",
            (deployment_id,),
        )
        summary: dict[str, int] = {}
        for d in out["devices"]:
            summary[d["status"]] = summary.get(d["status"], 0) + 1
        out["summary"] = summary
        return out

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT id, created_at, finished_at, model, version, selector, canary_percent, status, detail "
            "FROM deployments ORDER BY created_at DESC LIMIT ?",
            (limit,),
        )
        return [{**r, "selector": json.loads(r["selector"])} for r in rows]


__all__ = ["DEPLOY_COMMAND", "Deployer", "canary_count", "parse_percent"]
