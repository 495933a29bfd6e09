"""A voice-skill plugin answers in the assistant's dialogue: after the built-in intents, before the LLM.

The daemon's real plugins service runs the shipped alert skill in its own
process; the service offers it to the dialogue the voice service holds, and a
turn that no intent matches is answered by the skill (source "skill"); a
phrase the skill does not claim falls through to the usual fallback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from types import SimpleNamespace

from agent.config import Settings
from agent.daemon import build_context
from agent.plugins.host import PluginService
from agent.voice.dialogue import NO_LLM, Dialogue, TurnResult
from agent.voice.intents import IntentCatalog


async def turn(dialogue: Dialogue, text: str) -> TurnResult:
    result = TurnResult()
    pieces = [piece async for piece in dialogue.respond(text, "test", result)]
    assert "".join(pieces) == result.text
    return result


async def test_the_alert_skill_answers_in_the_voice_dialogue(settings: Settings) -> None:
    settings = dataclasses.replace(settings, sensors=dataclasses.replace(settings.sensors, enabled=False))
    ctx = build_context(settings)
    dialogue = Dialogue(IntentCatalog.load(), llm=None)
    ctx.voice = SimpleNamespace(engines=SimpleNamespace(dialogue=dialogue))  # where VoiceService keeps them
    service = PluginService(ctx)
    service.store.set_enabled("alert-skill", True)
    ctx.supervisor.add(service)
    ctx.supervisor.start()
    try:
        deadline = time.monotonic() + 30
        while (
            dialogue.skills is None
            or service.status()["plugins"].get("alert-skill", {}).get("state") != "running"
        ):
            assert time.monotonic() < deadline, service.status()
            await asyncio.sleep(0.1)
        answered = await turn(dialogue, "read the last alert")
        assert answered.source == "skill" and answered.text == "There are no open alerts.", answered
        fallback = await turn(dialogue, "tell me a story about whales")
        assert fallback.source != "skill" and fallback.text == NO_LLM, fallback
        # disabled: the dialogue stops asking it
        service.store.set_enabled("alert-skill", False)
        deadline = time.monotonic() + 10
        while dialogue.skills is not None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert (await turn(dialogue, "read the last alert")).text == NO_LLM
    finally:
        await ctx.supervisor.stop()
        ctx.store.close()
