"""The built-in commands a hub can send, bound to the daemon (the registry is sync/commands.py).

A handler is ``async def handler(request) -> dict``: it returns the result
body or raises an EdgeAgentError, whose ``code`` and message become the
answer's ``error``. Handlers are registered by name (``registry.register``),
so a plugin can add its own. Built-ins:

``ping`` · ``config.get {key?}`` · ``config.set {key, value} | {values}``
(validated, persisted, applied on restart) · ``models.list`` ·
``models.deploy`` / ``config.deploy`` / ``deploy {bundle_url, sha256, size, manifest}``
(``deploy`` dispatches on the manifest's ``kind``: ``config`` or a model) ·
``models.rollback {name}`` · ``config.rollback`` (undo the last config bundle) · ``logs.tail {n?, level?, logger?}`` ·
``service.restart {name}`` · ``trust.rotate {new_key, announcement}`` · ``outbox.stats`` ·
``alerts.ack {id}`` / ``alerts.shelve {id, for_s}`` (agent/syncd/commands_alerts.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.core.errors import BadRequestError, NotFoundError, UnavailableError
from sync.commands import CommandRegistry, CommandRequest

if TYPE_CHECKING:
    from agent.config import Settings
    from agent.security.trust import TrustStore
    from agent.supervisor import Supervisor
    from agent.syncd.deploy import DeviceDeployer
    from agent.syncd.logring import LogRing
    from sync.outbox import Outbox

log = logging.getLogger("edge_agent.sync.commands")


@dataclass
class CommandDeps:
    """What the built-ins act on; the daemon fills it from its context."""

    settings: Settings
    outbox: Outbox | None = None
    supervisor: Supervisor | None = None
    log_ring: LogRing | None = None
    deployer: DeviceDeployer | None = None
    #: name of the service that runs commands: restarting it is deferred until the answer is stored
    self_service: str = "sync"
    started_at: float = field(default_factory=time.time)
    #: the hub keys this device trusts (agent/security/trust.py), for trust.rotate
    trust: TrustStore | None = None
    #: the running settings and their live appliers (agent/live.py); None: every change waits for a restart
    live: Any = None
    #: stop the daemon cleanly and start it again (agent.restart); None outside a daemon
    restart: Callable[[str], None] | None = None
    #: called when what the device reports in its state changed (settings applied or pending)
    state_changed: Callable[[], None] | None = None


def _arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if name not in args:
        if default is ...:
            raise BadRequestError(f"argument {name!r} is required")
        return default
    value = args[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadRequestError(f"argument {name!r} must be {expected}, got {type(value).__name__}")
    return value


def builtin_registry(deps: CommandDeps) -> CommandRegistry:
    """A registry holding every built-in command, bound to ``deps``."""
    from agent import __version__
    from agent.syncd import overrides

    reg = CommandRegistry()
    settings = deps.settings

    @reg.command("ping", "Liveness: answers pong with the agent's version and uptime.")
    async def ping(req: CommandRequest) -> dict[str, Any]:
        return {
            "pong": True,
            "device": req.device,
            "agent_version": __version__,
            "uptime_s": round(time.time() - deps.started_at, 3),
            "ts": time.time(),
        }

    @reg.command("config.get", "Effective settings (secrets masked), or one key/section.")
    async def config_get(req: CommandRequest) -> dict[str, Any]:
        key = _arg(req.args, "key", str, "")
        tree = overrides.load_overrides(settings)
        running = deps.live.running() if deps.live is not None else settings
        waiting = sorted(deps.live.pending(tree)) if deps.live is not None else sorted(tree)
        return {
            "key": key,
            "value": overrides.get_value(running, key),
            "pending_overrides": bool(tree),
            "pending_restart": waiting,
        }

    @reg.command(
        "config.set",
        "Validate and persist settings; live ones apply at once, the rest when the agent restarts.",
    )
    async def config_set(req: CommandRequest) -> dict[str, Any]:
        if "values" in req.args:
            updates = _arg(req.args, "values", dict)
        else:
            updates = {_arg(req.args, "key", str): req.args.get("value")}
            if "value" not in req.args:
                raise BadRequestError("argument 'value' is required")
        await asyncio.to_thread(overrides.set_overrides, settings, updates)
        return apply_saved(deps, updates)

    @reg.command("agent.restart", "Stop the daemon cleanly and start it again (applies pending settings).")
    async def agent_restart(req: CommandRequest) -> dict[str, Any]:
        if deps.restart is None:
            raise UnavailableError("this process cannot restart the daemon")
        reason = _arg(req.args, "reason", str, "") or f"agent.restart from the hub ({req.id})"
        restart = deps.restart
        # after the answer is stored and sent: restarting now would cancel this very command
        asyncio.get_running_loop().call_later(1.0, restart, reason)
        pending = sorted(deps.live.pending(overrides.load_overrides(settings))) if deps.live else []
        return {"state": "restart_scheduled", "in_s": 1.0, "applies": pending}

    def model_store() -> Any:
        if deps.deployer is not None:
            return deps.deployer.store
        from models.store import ModelStore

        return ModelStore(settings.data_path / "models")

    @reg.command("models.list", "Installed models, versions and which one is active.")
    async def models_list(req: CommandRequest) -> dict[str, Any]:
        store = model_store()
        installed = await asyncio.to_thread(store.list)
        return {
            "models": [
                {
                    "name": m.name,
                    "version": m.version,
                    "active": m.active,
                    "previous": m.previous,
                    "size_bytes": m.size_bytes(),
                }
                for m in installed
            ]
        }

    def deployer() -> DeviceDeployer:
        if deps.deployer is None:
            raise UnavailableError("deployments are not enabled on this agent", code="deploy_disabled")
        return deps.deployer

    def kind_of(req: CommandRequest) -> str:
        return overrides.manifest_kind(req.args.get("manifest"))

    def reported(result: dict[str, Any]) -> dict[str, Any]:
        """What the box runs changed: its retained state goes out again (the hub's models column)."""
        if deps.state_changed is not None:
            deps.state_changed()
        return result

    async def models_deploy(req: CommandRequest) -> dict[str, Any]:
        if kind_of(req) == overrides.CONFIG_KIND:
            raise BadRequestError("this is a config bundle; send it as config.deploy (or deploy)")
        return reported(await deployer().deploy(req.args, command_id=req.id))

    async def config_deploy(req: CommandRequest) -> dict[str, Any]:
        if kind_of(req) != overrides.CONFIG_KIND:
            raise BadRequestError("this is not a config bundle (manifest kind 'config'); use models.deploy")
        return reported(await deployer().deploy_config(req.args, settings, command_id=req.id))

    async def deploy(req: CommandRequest) -> dict[str, Any]:
        if kind_of(req) == overrides.CONFIG_KIND:
            return reported(await deployer().deploy_config(req.args, settings, command_id=req.id))
        return reported(await deployer().deploy(req.args, command_id=req.id))

    reg.register(
        "models.deploy", models_deploy, doc="Fetch, verify, install, smoke-test and activate a bundle."
    )
    reg.register(
        "config.deploy",
        config_deploy,
        doc="Fetch, verify and validate a signed config bundle; it replaces the overrides on restart.",
    )
    reg.register("deploy", deploy, doc="The hub's name for models.deploy or config.deploy, by manifest kind.")

    @reg.command("config.rollback", "Restore the overrides the last config bundle replaced (on restart).")
    async def config_rollback(req: CommandRequest) -> dict[str, Any]:
        tree = await asyncio.to_thread(overrides.rollback_overrides, settings)
        return {
            "restored": sorted(tree),
            "applied": "on_restart",
            "restart_required": True,
            "message": f"restored {overrides.override_path(settings)} from "
            f"{overrides.previous_path(settings)}; takes effect when the agent restarts",
        }

    @reg.command("models.rollback", "Make the previous version of a model active again.")
    async def models_rollback(req: CommandRequest) -> dict[str, Any]:
        name = _arg(req.args, "name", str)
        if deps.deployer is not None:
            return reported(await deps.deployer.rollback(name))
        model = await asyncio.to_thread(model_store().rollback, name)
        return reported({"name": model.name, "version": model.version})

    @reg.command("logs.tail", "The most recent log records kept in memory.")
    async def logs_tail(req: CommandRequest) -> dict[str, Any]:
        if deps.log_ring is None:
            raise UnavailableError("the in-memory log ring is off (sync.log_ring_size = 0)")
        n = _arg(req.args, "n", int, 100)
        level = _arg(req.args, "level", str, "info")
        try:
            records = deps.log_ring.tail(
                max(0, min(n, 10_000)), level=level, logger=_arg(req.args, "logger", str, "")
            )
        except ValueError as exc:
            raise BadRequestError(str(exc)) from None
        return {"records": records, "dropped": deps.log_ring.dropped, "capacity": deps.log_ring.capacity}

    @reg.command("service.restart", "Restart one supervised service.")
    async def service_restart(req: CommandRequest) -> dict[str, Any]:
        name = _arg(req.args, "name", str)
        sup = deps.supervisor
        if sup is None:
            raise UnavailableError("no supervisor in this process")
        if name not in sup.services:
            raise NotFoundError(f"no service {name!r}; services: {', '.join(sorted(sup.services))}")
        if name == deps.self_service:
            # restarting now would cancel this very command before its answer is stored
            asyncio.get_running_loop().call_later(
                0.5, lambda: asyncio.ensure_future(restart_service(sup, name))
            )
            return {"service": name, "state": "restart_scheduled"}
        await restart_service(sup, name)
        return {"service": name, "state": sup.status[name].state, "restarts": sup.status[name].restarts}

    @reg.command("trust.rotate", "Trust a new hub key announced with a signature by a trusted key.")
    async def trust_rotate(req: CommandRequest) -> dict[str, Any]:
        if deps.trust is None:
            raise UnavailableError("no trust store in this process")
        new_key = _arg(req.args, "new_key", str)
        announcement = _arg(req.args, "announcement", dict)
        key_id = await asyncio.to_thread(deps.trust.rotate, new_key, announcement)
        return {"trusted": key_id, "keys": len(deps.trust.keys())}

    @reg.command("outbox.stats", "What waits in the outbox and what was dropped, by reason.")
    async def outbox_stats(req: CommandRequest) -> dict[str, Any]:
        if deps.outbox is None:
            raise UnavailableError("no outbox in this process")
        return await asyncio.to_thread(deps.outbox.stats)

    from agent.syncd.commands_alerts import register_alert_commands

    register_alert_commands(reg, deps)
    return reg


def apply_saved(deps: CommandDeps, updates: Mapping[str, Any]) -> dict[str, Any]:
    """After the override file is written: apply what can apply live, say what waits for a restart."""
    from agent.syncd import overrides

    if deps.live is None:
        applied: list[str] = []
        pending = sorted(updates)
    else:
        effective = overrides.apply_overrides(deps.live.running())
        result = deps.live.apply(effective)
        applied, pending = result["applied"], result["pending"]
    if deps.state_changed is not None:
        deps.state_changed()  # the hub sees the new reported settings without waiting for a reconnect
    where = overrides.override_path(deps.settings)
    if pending:
        message = (
            f"saved to {where}; {', '.join(pending)} take(s) effect when the agent restarts (agent.restart)"
        )
    else:
        message = f"saved to {where}; applied now"
    return {
        "set": overrides.mask(updates),
        "applied_live": applied,
        "pending_restart": pending,
        "applied": "on_restart" if pending else "live",
        "restart_required": bool(pending),
        "message": message,
    }


async def restart_service(supervisor: Supervisor, name: str) -> None:
    """Cancel a supervised service's task and start it again."""
    await supervisor.restart(name)
