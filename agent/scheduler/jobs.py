"""What a job is: its trigger, priority, dependencies, retries, timeout and missed-run policy.

A job's *action* is either a coroutine function registered in code (the
built-in jobs: reports, housekeeping) or a command line from ``jobs.toml``
run as a child process (killed with its process group on timeout). The spec
without the action is what the store keeps and the API shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.errors import BadRequestError
from agent.scheduler.triggers import Trigger

#: lower runs first; batch jobs also wait for the resource gate
PRIORITIES = {"realtime": 0, "normal": 1, "batch": 2}
#: what happens to fires that fell while the daemon was down
MISSED_POLICIES = ("once", "skip", "all")
#: the most missed fires "all" replays for one job
MAX_REPLAY = 100
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


@dataclass(frozen=True)
class RunContext:
    """What one attempt of a job knows about itself."""

    job: str
    run_id: int
    scheduled_for: float
    reason: str  # schedule | missed | event | manual | retry | dependency
    attempt: int
    event: dict[str, Any] = field(default_factory=dict)


Action = Callable[[RunContext], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class JobSpec:
    name: str
    trigger: Trigger
    action: Action | None = None
    command: tuple[str, ...] = ()
    priority: str = "batch"
    depends_on: tuple[str, ...] = ()
    retries: int = 0
    backoff_s: float = 30.0
    timeout_s: float = 600.0
    missed: str = "once"
    description: str = ""
    #: "all": every run is a row and bus events; "failures": only failed runs are (housekeeping every
    #: few seconds would otherwise write a row, with its fsync, each time)
    record: str = "all"

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= _NAME_OK or len(self.name) > 64:
            raise BadRequestError(
                f"job name {self.name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-'"
            )
        if self.priority not in PRIORITIES:
            raise BadRequestError(f"job {self.name}: priority must be one of {', '.join(PRIORITIES)}")
        if self.missed not in MISSED_POLICIES:
            raise BadRequestError(f"job {self.name}: missed must be one of {', '.join(MISSED_POLICIES)}")
        if self.record not in ("all", "failures"):
            raise BadRequestError(f"job {self.name}: record must be all or failures")
        if not 0 <= self.retries <= 20:
            raise BadRequestError(f"job {self.name}: retries must be 0..20")
        if self.timeout_s <= 0 or self.backoff_s < 0:
            raise BadRequestError(f"job {self.name}: timeout_s must be > 0 and backoff_s >= 0")
        if (self.action is None) == (not self.command):
            raise BadRequestError(f"job {self.name}: give exactly one of an action or a command")
        if self.trigger.kind == "after" and not self.depends_on:
            raise BadRequestError(f"job {self.name}: trigger 'after' needs depends_on")
        if self.name in self.depends_on:
            raise BadRequestError(f"job {self.name} cannot depend on itself")

    @property
    def rank(self) -> int:
        return PRIORITIES[self.priority]

    def retry_delay(self, attempt: int) -> float:
        """Back-off before attempt ``attempt + 1``: doubling from ``backoff_s``, at most an hour."""
        return min(self.backoff_s * (2 ** max(0, attempt - 1)), 3600.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trigger": str(self.trigger),
            "kind": "command" if self.command else "builtin",
            "command": list(self.command),
            "priority": self.priority,
            "depends_on": list(self.depends_on),
            "retries": self.retries,
            "backoff_s": self.backoff_s,
            "timeout_s": self.timeout_s,
            "missed": self.missed,
            "description": self.description,
            "record": self.record,
        }

    @classmethod
    def from_table(cls, entry: dict[str, Any]) -> JobSpec:
        """A ``[[job]]`` table of ``jobs.toml`` (a command job)."""
        known = {"name", "trigger", "command", "priority", "depends_on", "retries", "backoff_s"}
        known |= {"timeout_s", "missed", "description"}
        unknown = set(entry) - known
        if unknown:
            raise BadRequestError(f"job {entry.get('name', '?')}: unknown keys {', '.join(sorted(unknown))}")
        command = entry.get("command")
        if isinstance(command, str):
            import shlex

            command = shlex.split(command)
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise BadRequestError(
                f"job {entry.get('name', '?')}: command must be a non-empty list of strings"
            )
        return cls(
            name=str(entry.get("name", "")),
            trigger=Trigger.parse(str(entry.get("trigger", "manual"))),
            command=tuple(command),
            priority=str(entry.get("priority", "batch")),
            depends_on=tuple(entry.get("depends_on", ())),
            retries=int(entry.get("retries", 0)),
            backoff_s=float(entry.get("backoff_s", 30.0)),
            timeout_s=float(entry.get("timeout_s", 600.0)),
            missed=str(entry.get("missed", "once")),
            description=str(entry.get("description", "")),
        )


async def run_command(argv: tuple[str, ...], timeout_s: float) -> dict[str, Any]:
    """Run a command job; on timeout its whole process group is killed. Non-zero exit fails the run."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
        raise
    tail = out.decode(errors="replace")[-2000:]
    if proc.returncode != 0:
        raise JobFailed(f"{argv[0]} exited with status {proc.returncode}: {tail.strip()[-300:]}")
    return {"exit": 0, "output": tail}


class JobFailed(Exception):
    """A job's own failure (its message is recorded as the run's error)."""


#: how much nicer than the daemon batch work runs (Linux nice steps; 19 is the floor)
BATCH_NICE = 10
_batch_executor: Any = None


def _lower_this_thread() -> None:
    # On Linux a thread is a task with its own nice value: this lowers the worker alone, so voice
    # and sensors keep the CPU while a report renders (the gate only decides when batch work starts)
    with contextlib.suppress(OSError, AttributeError):
        import threading

        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + BATCH_NICE))


async def in_batch_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking batch work (queries, charts, PDF) on one low-priority worker thread."""
    global _batch_executor
    if _batch_executor is None:
        from concurrent.futures import ThreadPoolExecutor

        _batch_executor = ThreadPoolExecutor(1, thread_name_prefix="batch", initializer=_lower_this_thread)
    return await asyncio.get_running_loop().run_in_executor(_batch_executor, fn, *args)
