"""Hub commands for plugins: ``plugins.list``, ``plugins.enable {name, settings?}``,
``plugins.disable {name}``, ``plugins.remove {name}``, ``plugins.logs {name, lines?}``.

Registered on the device's command registry (``sync.commands``) by one call,
so the hub drives plugins with the same signed, de-duplicated, audited
commands as everything else, through the same operations as the CLI.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agent.errors import BadRequestError


def _name(args: dict[str, Any]) -> str:
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequestError("argument 'name' (the plugin's name) is required")
    return name


def register_plugin_commands(registry: Any, settings: Any) -> None:
    from agent.plugins import manage

    async def plugins_list(req: Any) -> dict[str, Any]:
        return {"plugins": await asyncio.to_thread(manage.listing, settings)}

    async def plugins_enable(req: Any) -> dict[str, Any]:
        values = req.args.get("settings")
        if values is not None and not isinstance(values, dict):
            raise BadRequestError("argument 'settings' must be an object")
        return await asyncio.to_thread(manage.enable, settings, _name(req.args), values)

    async def plugins_disable(req: Any) -> dict[str, Any]:
        reason = f"disabled by the hub (command {req.id})"
        return await asyncio.to_thread(manage.disable, settings, _name(req.args), reason)

    async def plugins_remove(req: Any) -> dict[str, Any]:
        return await asyncio.to_thread(manage.remove, settings, _name(req.args))

    async def plugins_logs(req: Any) -> dict[str, Any]:
        lines = req.args.get("lines", 100)
        if not isinstance(lines, int) or isinstance(lines, bool):
            raise BadRequestError("argument 'lines' must be an integer")
        return await asyncio.to_thread(manage.logs, settings, _name(req.args), lines)

    registry.register("plugins.list", plugins_list, doc="Installed plugins and their state.")
    registry.register(
        "plugins.enable", plugins_enable, doc="Enable a plugin (settings checked); applies at once."
    )
    registry.register("plugins.disable", plugins_disable, doc="Disable a plugin; its process stops at once.")
    registry.register("plugins.remove", plugins_remove, doc="Remove an installed archive plugin.")
    registry.register("plugins.logs", plugins_logs, doc="The last lines a plugin logged.")
