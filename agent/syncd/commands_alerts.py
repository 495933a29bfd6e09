"""The hub's alert commands on the device: ``alerts.ack {id, by?}`` and ``alerts.shelve {id, for_s, by?}``.

They act as the box's own ``edge-agent alerts ack`` does: through the running
sensor service when there is one (its live copy of an open alert learns it,
and the bus hears ``alert.acked``), else on the stored row. Either way the
change is written with its outbox message in one transaction, so the hub
receives the resulting transition like any other and its alert row shows
what the box did. ``by`` defaults to the operator the hub signed the command
for, so the box's history names who acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from agent.core.errors import BadRequestError, UnavailableError

if TYPE_CHECKING:
    from agent.syncd.commands import CommandDeps
    from sync.commands import CommandRegistry, CommandRequest

#: the longest shelving the box accepts (the hub asks for at most 30 days too)
MAX_SHELVE_S = 30 * 86400


def _alert_id(req: CommandRequest) -> str:
    value = req.args.get("id")
    if not isinstance(value, str) or not value or len(value) > 64:
        raise BadRequestError("argument 'id' must be the alert's id")
    return value


def _by(req: CommandRequest) -> str:
    by = req.args.get("by", "")
    if not isinstance(by, str):
        raise BadRequestError("argument 'by' must be a name")
    return (by or (f"hub:{req.operator}" if req.operator else "hub"))[:200]


def register_alert_commands(reg: CommandRegistry, deps: CommandDeps) -> None:
    def service() -> Any:
        """The daemon's running sensor service (its supervisor names it "sensors"), or None."""
        sup = deps.supervisor
        svc = sup.services.get("sensors") if sup is not None else None
        return svc if hasattr(svc, "ack") and hasattr(svc, "policies") else None

    def sink() -> Any:
        svc = service()
        if svc is not None and getattr(svc, "sink", None) is not None:
            return svc.sink
        if deps.outbox is None:
            raise UnavailableError("no alert store in this process")
        from agent.sensors.sink import AlertSink

        return AlertSink(deps.outbox.store, deps.settings.device_id, deps.outbox)

    @reg.command("alerts.ack", "Acknowledge an alert, as `edge-agent alerts ack` does.")
    async def alerts_ack(req: CommandRequest) -> dict[str, Any]:
        alert_id, by = _alert_id(req), _by(req)
        svc = service()
        if svc is not None:
            alert = await svc.ack(alert_id, by)
        else:
            alert = await asyncio.to_thread(sink().ack, alert_id, by)
        return {
            "id": alert["id"],
            "state": alert["state"],
            "acked_at": alert["acked_at"],
            "acked_by": alert["acked_by"],
        }

    @reg.command("alerts.shelve", "Shelve an alert for for_s seconds (0 unshelves).")
    async def alerts_shelve(req: CommandRequest) -> dict[str, Any]:
        alert_id, by = _alert_id(req), _by(req)
        for_s = req.args.get("for_s")
        if not isinstance(for_s, (int, float)) or isinstance(for_s, bool) or not 0 <= for_s <= MAX_SHELVE_S:
            raise BadRequestError(f"argument 'for_s' must be seconds between 0 and {MAX_SHELVE_S}")
        until = time.time() + float(for_s) if for_s else None
        alert = await asyncio.to_thread(sink().shelve, alert_id, until, by)
        svc = service()
        for policy in getattr(svc, "policies", {}).values():  # the live copy of an open alert learns it too
            for open_alert in policy.open_alerts:
                if open_alert.id == alert_id:
                    open_alert.shelved_until, open_alert.shelved_by = until, alert["shelved_by"]
                    open_alert.history = list(alert["history"])
        return {
            "id": alert["id"],
            "state": alert["state"],
            "shelved_until": until,
            "shelved_by": alert["shelved_by"],
        }


__all__ = ["MAX_SHELVE_S", "register_alert_commands"]
