"""The supervisor: restart with back-off, status, and bounded shutdown."""

from __future__ import annotations

import asyncio

from agent import metrics
from agent.bus import Bus
from agent.config import SupervisorSettings
from agent.supervisor import FunctionService, Service, Supervisor

FAST = SupervisorSettings(shutdown_timeout=0.5, restart_backoff_initial=0.02, restart_backoff_max=0.1)


async def test_failed_service_is_restarted_with_reason() -> None:
    bus = Bus()
    states = bus.subscribe("states", ["service.state"])
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"sensor unplugged (run {runs})")
        await asyncio.Event().wait()

    sup = Supervisor(bus, FAST)
    sup.add(FunctionService("flaky-test", flaky))
    sup.start()
    for _ in range(100):
        if runs >= 3 and sup.status["flaky-test"].state == "running":
            break
        await asyncio.sleep(0.02)
    st = sup.status["flaky-test"]
    assert (runs, st.state, st.restarts) == (3, "running", 2)
    assert "sensor unplugged (run 2)" in st.last_error
    assert metrics.SERVICE_RESTARTS.value("flaky-test") >= 2
    seen = []
    while not states.queue.empty():
        seen.append(states.queue.get_nowait().state)
    assert seen.count("restarting") == 2
    assert await sup.stop() == []
    assert sup.status["flaky-test"].state == "stopped"


async def test_backoff_grows_and_is_capped() -> None:
    sup = Supervisor(Bus(), SupervisorSettings(restart_backoff_initial=1, restart_backoff_max=8))
    delays = [sup._backoff(n) for n in range(1, 8)]
    assert 0.8 <= delays[0] <= 1.2
    assert 3.2 <= delays[2] <= 4.8
    assert all(d <= 8 * 1.2 for d in delays)


async def test_non_restarting_service_fails_alone() -> None:
    async def broken() -> None:
        raise ValueError("bad model")

    async def steady() -> None:
        await asyncio.Event().wait()

    sup = Supervisor(Bus(), FAST)
    sup.add(FunctionService("broken", broken, restart=False))
    sup.add(FunctionService("steady", steady))
    sup.start()
    await asyncio.sleep(0.1)
    assert sup.status["broken"].state == "failed"
    assert sup.status["steady"].state == "running"
    await sup.stop()


async def test_shutdown_is_bounded_even_when_a_service_hangs() -> None:
    release = asyncio.Event()

    class Stubborn(Service):
        name = "stubborn"

        async def run(self) -> None:
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    continue  # ignores cancellation: the supervisor must not wait forever

    sup = Supervisor(Bus(), FAST)
    sup.add(Stubborn())
    sup.start()
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    hung = await sup.stop(timeout=0.3)
    assert hung == ["stubborn"]
    assert loop.time() - started < 1.0
    release.set()  # let the test's loop close cleanly
    await asyncio.sleep(0)


async def test_wait_ready_waits_for_services_that_signal() -> None:
    class Slow(Service):
        name = "slow"
        signals_ready = True

        async def run(self) -> None:
            await asyncio.sleep(0.1)
            self.ready.set()
            await asyncio.Event().wait()

    sup = Supervisor(Bus(), FAST)
    sup.add(Slow())
    sup.start()
    assert await sup.wait_ready(0.01) == ["slow"]
    assert await sup.wait_ready(1.0) == []
    await sup.stop()
