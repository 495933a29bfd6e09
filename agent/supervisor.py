"""The supervisor: every long-lived part of the daemon is a named, restartable service.

A service that raises is restarted after an exponential, jittered back-off
(reset once it has run stably), and the reason goes to the log and the bus.
The daemon never dies because one part failed: a box in a vehicle must keep
doing everything else. Shutdown cancels every service and waits a bounded
time, so SIGTERM always ends the process promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent import metrics
from agent.bus import Bus, ServiceStateChanged
from agent.config import SupervisorSettings
from agent.errors import EdgeAgentError

log = logging.getLogger("edge_agent.supervisor")

#: a service that ran this long without failing has its back-off reset
STABLE_AFTER_S = 60.0


class Service:
    """Base of a supervised service.

    Subclasses implement ``run()``, which lives until cancelled. A service that
    needs time to become useful (binding a port, loading a model) sets
    ``signals_ready = True`` and calls ``self.ready.set()`` itself; the daemon
    reports READY to systemd only when every service is ready.
    """

    name: str = "service"
    signals_ready: bool = False
    #: restart after a failure (False: a failure stops only this service)
    restart: bool = True

    def __init__(self) -> None:
        self.ready = asyncio.Event()

    async def run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class FunctionService(Service):
    """A service made of one coroutine function; for small background loops."""

    def __init__(self, name: str, fn: Callable[[], Awaitable[None]], *, restart: bool = True) -> None:
        super().__init__()
        self.name = name
        self.restart = restart
        self._fn = fn

    async def run(self) -> None:
        await self._fn()


@dataclass
class ServiceStatus:
    name: str
    state: str = "starting"  # starting | running | restarting | failed | finished | stopped
    restarts: int = 0
    last_error: str = ""
    since: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class Supervisor:
    """Runs services as named tasks and restarts the ones that fail."""

    def __init__(self, bus: Bus, settings: SupervisorSettings | None = None) -> None:
        self.bus = bus
        self.settings = settings or SupervisorSettings()
        self.services: dict[str, Service] = {}
        self.status: dict[str, ServiceStatus] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    def add(self, service: Service) -> None:
        if service.name in self.services:
            raise ValueError(f"a service named {service.name!r} is already supervised")
        self.services[service.name] = service
        self.status[service.name] = ServiceStatus(service.name, since=time.time())

    def start(self) -> None:
        """Start every added service as a named task."""
        for name, service in self.services.items():
            if name not in self._tasks:
                self._tasks[name] = asyncio.create_task(self._keep_running(service), name=f"service:{name}")

    async def wait_ready(self, timeout: float) -> list[str]:
        """Wait until every service is ready; returns the names still not ready."""
        waits = {name: asyncio.ensure_future(s.ready.wait()) for name, s in self.services.items()}
        if waits:
            await asyncio.wait(waits.values(), timeout=timeout)
        for fut in waits.values():
            fut.cancel()
        return [name for name, s in self.services.items() if not s.ready.is_set()]

    @property
    def all_running(self) -> bool:
        return all(s.state == "running" for s in self.status.values())

    def _set_state(self, service: Service, state: str, reason: str = "") -> None:
        st = self.status[service.name]
        st.state = state
        st.since = time.time()
        if reason:
            st.last_error = reason
        metrics.SERVICE_UP.labels(service.name).set(1 if state == "running" else 0)
        self.bus.publish_nowait(
            ServiceStateChanged(source="supervisor", service=service.name, state=state, reason=reason)
        )

    async def _keep_running(self, service: Service) -> None:
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            self._set_state(service, "running")
            if not service.signals_ready:
                service.ready.set()
            try:
                await service.run()
            except asyncio.CancelledError:
                self._set_state(service, "stopped")
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if time.monotonic() - started > STABLE_AFTER_S:
                    failures = 0
                failures += 1
                if not service.restart:
                    log.error(
                        "service %s failed and is not restarted: %s",
                        service.name,
                        reason,
                        exc_info=exc,
                        extra={"service": service.name},
                    )
                    self._set_state(service, "failed", reason)
                    return
                delay = self._backoff(failures)
                # Our own errors carry a message meant for the user; a traceback adds noise.
                trace = None if isinstance(exc, EdgeAgentError) else exc
                log.error(
                    "service %s failed (%s); restarting in %.1f s",
                    service.name,
                    reason,
                    delay,
                    exc_info=trace,
                    extra={"service": service.name, "restart_in_s": round(delay, 2)},
                )
                self._set_state(service, "restarting", reason)
                self.status[service.name].restarts += 1
                metrics.SERVICE_RESTARTS.labels(service.name).inc()
                await asyncio.sleep(delay)
                continue
            log.info("service %s finished", service.name, extra={"service": service.name})
            self._set_state(service, "finished")
            return

    def _backoff(self, failures: int) -> float:
        base = self.settings.restart_backoff_initial * (2 ** (failures - 1))
        base = min(base, self.settings.restart_backoff_max)
        return base * random.uniform(0.8, 1.2)

    async def restart(self, name: str) -> None:
        """Stop one service (bounded by shutdown_timeout) and start it again, e.g. on an operator's command."""
        from agent.errors import ConflictError, NotFoundError

        if name not in self.services:
            raise NotFoundError(f"no service {name!r}; services: {', '.join(sorted(self.services))}")
        task = self._tasks.get(name)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=self.settings.shutdown_timeout)
            if not task.done():
                raise ConflictError(f"service {name} did not stop within {self.settings.shutdown_timeout} s")
        service = self.services[name]
        service.ready.clear()
        self.status[name].restarts += 1
        metrics.SERVICE_RESTARTS.labels(name).inc()
        self._tasks[name] = asyncio.create_task(self._keep_running(service), name=f"service:{name}")
        log.info("service %s restarted on request", name, extra={"service": name})

    async def stop(self, timeout: float | None = None) -> list[str]:
        """Cancel every service and wait at most ``timeout`` seconds; returns those that hung."""
        self._stopping = True
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        hung: list[str] = []
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            hung = [t.get_name().removeprefix("service:") for t in pending]
            for task in done:
                with contextlib.suppress(asyncio.CancelledError):
                    exc = task.exception()
                    if exc is not None:
                        log.error("service %s raised while stopping: %s", task.get_name(), exc)
        if hung:
            log.error("services did not stop within %.1f s: %s", timeout, ", ".join(hung))
        return hung
