"""`service.restart sensors` (an operator's command) keeps each machine's learned baseline."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.config import Settings
from agent.context import AgentContext
from agent.sensors.simulator import MachineSimulator
from agent.sensors.spec import parse_machine
from tests.test_sensors_service import MACHINE, make_ctx, start, wait_for


@pytest.fixture
async def ctx(settings: Settings, tmp_path: Path) -> AsyncIterator[AgentContext]:
    context = make_ctx(settings, tmp_path)
    yield context
    await context.supervisor.stop()
    context.store.close()


async def test_service_restart_keeps_the_learned_baseline(ctx: AgentContext) -> None:
    service = await start(ctx)
    spec = parse_machine("m1", MACHINE)
    sim = MachineSimulator(spec, seed=5, start_ts=time.time() - 300)
    ts, X, _ = sim.generate(800)  # the 600-row baseline and 200 rows scored after it
    names = [c.name for c in spec.channels]
    rows = [(t, dict(zip(names, row, strict=True))) for t, row in zip(ts.tolist(), X.tolist(), strict=True)]
    assert service.emit("m1", rows[:700], "test") == 700
    await wait_for(lambda: service.engines["m1"].phase == "detecting", timeout=30)
    engine = service.engines["m1"]
    fitted_at, fits = engine.fitted_at, engine.fits

    await ctx.supervisor.restart("sensors")
    assert not await ctx.supervisor.wait_ready(10)
    assert service.engines["m1"] is engine and engine.phase == "detecting" and engine.fitted_at == fitted_at
    # scoring goes on at once: no relearning, and rows after the restart are not "out of order"
    scored = service.scored
    assert service.emit("m1", rows[700:], "test") == 100
    await wait_for(lambda: service.scored >= scored + 100, timeout=10)
    assert engine.fits == fits
    (entry,) = service.status()["machines"]
    assert entry["phase"] == "detecting", entry
