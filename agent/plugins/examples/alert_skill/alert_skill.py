"""Voice skill: "read the last alert" / "any open alerts on press 1?" speaks the open alerts.

It asks the daemon (``alerts.open``, granted by ``permissions.host =
["alerts:read"]``) rather than reading the database: a plugin sees only what
its permissions grant. Phrases that are not about alerts get no answer
(``None``), so the next skill or the assistant's own intents and LLM answer.
"""

from __future__ import annotations

import re
from typing import Any

from agent.plugins.sdk import Plugin

_ASKS = re.compile(
    r"\b(last|latest|newest|open|any|current|read)\b.*\balerts?\b|\balerts?\b.*\b(open|now)\b", re.I
)
_MACHINE = re.compile(r"\b(?:on|for|of)\s+(?:the\s+)?([a-z]+)[\s-]?(\d+)\b", re.I)


def answer(text: str, alerts: list[dict[str, Any]], limit: int, machine: str | None) -> str:
    where = f" on {machine}" if machine else ""
    if not alerts:
        return f"There are no open alerts{where}."
    count = f"{len(alerts)} open alert{'s' if len(alerts) != 1 else ''}{where}."
    parts = [count]
    for i, alert in enumerate(alerts[:limit]):
        lead = "The latest" if i == 0 else "Then"
        hint = f" {alert['hint']}." if alert.get("hint") else ""
        parts.append(
            f"{lead}: {alert.get('level', 'an')} alert on {alert.get('machine', 'a machine')}, {alert.get('title', alert.get('condition', ''))}.{hint}"
        )
    return " ".join(parts)


class AlertSkill(Plugin):
    async def handle(self, method: str, params: dict[str, Any]) -> Any:
        if method != "skill.handle":
            return None
        text = str(params.get("text", ""))
        if not _ASKS.search(text):
            return None
        found = _MACHINE.search(text)
        machine = f"{found.group(1).lower()}-{found.group(2)}" if found else None
        alerts = await self.ctx.call("alerts.open", {"machine": machine} if machine else {})
        return answer(text, alerts, self.ctx.settings["max_alerts"], machine)
