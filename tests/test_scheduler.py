"""The scheduler on a real SQLite store: cron and interval under a moved clock, reboots, deps, retries.

The clock is injected (a wall clock the test moves on), so days of cron run
in milliseconds; a "reboot" closes the Scheduler and its Store and opens new
ones on the same file with the clock moved past the outage.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from agent.bus import Bus
from agent.errors import BadRequestError, NotFoundError
from agent.scheduler.engine import Scheduler
from agent.scheduler.gate import ResourceGate
from agent.scheduler.jobs import JobSpec, RunContext
from agent.scheduler.triggers import Trigger
from agent.store import Store
from agent.voice.events import PipelineStateChanged

UTC = timezone.utc
T0 = datetime(2026, 12, 1, 0, 0, tzinfo=UTC).timestamp()


class Clock:
    """Wall seconds the test sets; ``speed`` > 0 lets real time run it forward too (accelerated)."""

    def __init__(self, start: float, speed: float = 0.0) -> None:
        self.base, self.speed, self.m0 = start, speed, time.monotonic()

    def __call__(self) -> float:
        return self.base + self.speed * (time.monotonic() - self.m0)

    def advance(self, seconds: float) -> None:
        self.base += seconds


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str, int]] = []
        self.fail: dict[str, int] = {}

    def action(self, name: str, *, sleep: float = 0.0) -> Any:
        async def run(ctx: RunContext) -> dict[str, Any]:
            self.calls.append((ctx.job, ctx.scheduled_for, ctx.reason, ctx.attempt))
            if sleep:
                await asyncio.sleep(sleep)
            if self.fail.get(name, 0) > 0:
                self.fail[name] -= 1
                raise RuntimeError(f"{name} failed on purpose")
            return {"ok": True}

        return run

    def of(self, job: str) -> list[tuple[str, float, str, int]]:
        return [c for c in self.calls if c[0] == job]


def job(rec: Recorder, name: str, trigger: str, **kw: Any) -> JobSpec:
    sleep = kw.pop("sleep", 0.0)
    return JobSpec(name=name, trigger=Trigger.parse(trigger), action=rec.action(name, sleep=sleep), **kw)


def make(path: Path, clock: Clock, rec: Recorder, jobs: list[JobSpec], **kw: Any) -> tuple[Store, Scheduler]:
    store = Store.open(path)
    sched = Scheduler(
        store, Bus(), clock=clock, tz=UTC, gate=kw.pop("gate", ResourceGate("/nonexistent")), **kw
    )
    for j in jobs:
        sched.add(j)
    sched.start()
    return store, sched


async def step(sched: Scheduler, clock: Clock, seconds: float, by: float = 300.0) -> None:
    """Move the clock on in steps of ``by``, letting the scheduler fire and finish at each."""
    end = clock() + seconds
    while clock() < end:
        clock.advance(min(by, end - clock()))
        await sched.tick()
        await sched.idle(5)


def day_hour(ts: float) -> tuple[int, int]:
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.day, dt.hour


async def test_cron_and_interval_fire_on_time_and_missed_runs_follow_each_policy_across_a_reboot(
    tmp_path: Path,
) -> None:
    db = tmp_path / "agent.db"
    clock, rec = Clock(T0), Recorder()
    specs = [
        job(rec, "hourly", "cron:0 * * * *", missed="once"),
        job(rec, "half", "every:30m", missed="all"),
        job(rec, "six", "cron:0 6 * * *", missed="skip"),
    ]
    store, sched = make(db, clock, rec, specs)
    await step(sched, clock, 3 * 3600)
    assert [day_hour(c[1]) for c in rec.of("hourly")] == [(1, 1), (1, 2), (1, 3)]
    assert [c[1] - T0 for c in rec.of("half")] == [1800 * k for k in range(1, 7)]
    assert all(c[2] == "schedule" for c in rec.calls)
    await sched.close()
    store.close()

    # power off from 03:00 to 08:40: 5 hourly fires, 11 half-hour fires and the 06:00 fire fall in the gap
    clock.advance(5 * 3600 + 40 * 60)
    rec.calls.clear()
    store, sched = make(db, clock, rec, specs)
    await sched.idle(5)
    hourly = rec.of("hourly")
    assert [(day_hour(c[1]), c[2]) for c in hourly] == [((1, 8), "missed")]  # once: only the newest
    half = rec.of("half")
    assert [c[1] - T0 for c in half] == [3 * 3600 + 1800 * k for k in range(1, 12)]  # all: each one
    assert all(c[2] == "missed" for c in half)
    assert rec.of("six") == []  # skip: none run
    missed = {r["job"]: r for r in sched.history() if r["state"] == "missed"}
    assert "1 scheduled run(s) missed" in missed["six"]["error"] and "policy skip" in missed["six"]["error"]
    assert "4 scheduled run(s) missed" in missed["hourly"]["error"]
    # and the schedule goes on from where it is now
    rec.calls.clear()
    await step(sched, clock, 3600)
    assert [(day_hour(c[1]), c[2]) for c in rec.of("hourly")] == [((1, 9), "schedule")]
    await sched.close()
    store.close()


async def test_the_loop_keeps_time_under_an_accelerated_clock(tmp_path: Path) -> None:
    clock, rec = Clock(T0, speed=1800.0), Recorder()  # half an hour per real second
    store, sched = make(
        tmp_path / "a.db", clock, rec, [job(rec, "tick", "every:10m", priority="normal")], speed=1800.0
    )
    task = asyncio.create_task(sched.run_forever())
    await asyncio.sleep(2.0)  # about an hour of clock time: six fires of every:10m
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fires = [c[1] for c in rec.of("tick")]
    assert 4 <= len(fires) <= 7
    assert [round(b - a) for a, b in itertools.pairwise(fires)] == [600] * (len(fires) - 1)
    assert all(c[2] == "schedule" for c in rec.calls)
    store.close()


async def test_a_run_cut_short_by_a_power_cut_runs_again_after_the_reboot(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    clock, rec = Clock(T0), Recorder()
    specs = [job(rec, "slow", "manual", sleep=30), job(rec, "skipper", "manual", sleep=30, missed="skip")]
    store, sched = make(db, clock, rec, specs)
    await sched.run_now("slow")
    await sched.run_now("skipper")
    await asyncio.sleep(0.05)
    store.close()  # the power goes: no clean stop (the running rows stay "running" on disk)
    sched._running.clear()
    rec.calls.clear()
    store, sched = make(
        db, clock, rec, [job(rec, "slow", "manual"), job(rec, "skipper", "manual", missed="skip")]
    )
    await sched.idle(5)
    assert [c[2] for c in rec.calls] == ["interrupted"]
    states = [(r["job"], r["state"]) for r in sched.history()]
    assert ("slow", "interrupted") in states and ("skipper", "interrupted") in states
    store.close()


async def test_dependencies_wait_skip_and_chain(tmp_path: Path) -> None:
    clock, rec = Clock(T0), Recorder()
    rec.fail["extract"] = 1
    specs = [
        job(rec, "extract", "manual"),
        job(rec, "load", "after", depends_on=("extract",)),
        job(rec, "publish", "cron:0 * * * *", depends_on=("extract",)),
    ]
    store, sched = make(tmp_path / "a.db", clock, rec, specs)
    await sched.run_now("extract")
    await sched.idle(5)
    assert rec.of("load") == []  # 'after' runs only on success
    await step(sched, clock, 3600)  # publish fires at 01:00; extract's newest outcome is failed
    assert rec.of("publish") == []
    skipped = sched.history("publish")[0]
    assert skipped["state"] == "skipped" and skipped["error"] == "dependency extract last ended failed"

    await sched.run_now("extract")  # succeeds now: load chains after it
    await sched.idle(5)
    assert [c[2] for c in rec.of("load")] == ["dependency"]
    await step(sched, clock, 3600)
    assert len(rec.of("publish")) == 1

    # a dependency still queued or running holds the dependant back until it is done
    slow = Recorder()
    store2, s2 = make(
        tmp_path / "b.db",
        Clock(T0),
        slow,
        [job(slow, "first", "manual", sleep=0.2), job(slow, "second", "manual", depends_on=("first",))],
        max_concurrent=4,
    )
    await s2.run_now("first")
    await s2.run_now("second")
    await s2.idle(5)
    assert [c[0] for c in slow.calls] == ["first", "second"]
    store.close()
    store2.close()


async def test_retries_back_off_and_then_succeed(tmp_path: Path) -> None:
    clock, rec = Clock(T0), Recorder()
    rec.fail["flaky"] = 2
    store, sched = make(tmp_path / "a.db", clock, rec, [job(rec, "flaky", "manual", retries=3, backoff_s=60)])
    await sched.run_now("flaky")
    await sched.idle(5)
    assert len(rec.calls) == 1
    await step(sched, clock, 59, by=59)
    assert len(rec.calls) == 1  # not before the back-off
    await step(sched, clock, 1, by=1)
    assert len(rec.calls) == 2
    await step(sched, clock, 120, by=120)  # doubled: 120 s
    assert [c[3] for c in rec.calls] == [1, 2, 3]
    runs = sched.history("flaky")
    assert [(r["attempt"], r["state"]) for r in reversed(runs)] == [(1, "failed"), (2, "failed"), (3, "ok")]
    assert runs[-1]["error"] == "flaky failed on purpose"
    store.close()


async def test_a_batch_job_is_held_while_a_voice_turn_runs(tmp_path: Path) -> None:
    clock, rec = Clock(T0), Recorder()
    bus = Bus()
    events = bus.subscribe("test", ["job.run"])
    specs = [job(rec, "render", "manual"), job(rec, "ping", "manual", priority="normal")]
    store, sched = make(tmp_path / "a.db", clock, rec, specs)
    sched.bus = bus
    sched.on_event(PipelineStateChanged(source="voice", stream="mic", state="thinking").to_dict())
    await sched.run_now("render")
    await sched.run_now("ping")
    await sched.idle(5)
    assert [c[0] for c in rec.calls] == ["ping"]  # normal priority is never held
    row = sched.history("render")[0]
    assert row["state"] == "held" and row["held"] == "a voice turn is active"
    assert sched.describe("render")["state"] == "held"
    sched.on_event(PipelineStateChanged(source="voice", stream="mic", state="speaking").to_dict())
    await sched.idle(5)
    assert len(rec.of("render")) == 0
    # back to listening on an open microphone: nobody talks, nothing is held back
    sched.on_event(PipelineStateChanged(source="voice", stream="mic", state="listening").to_dict())
    await sched.idle(5)
    assert len(rec.of("render")) == 1
    # listening after the wake word, or the VAD hearing speech, is a turn again
    from agent.voice.vad import VoiceStarted, VoiceStopped

    sched.on_event(
        PipelineStateChanged(source="voice", stream="car", state="listening", reason="wake").to_dict()
    )
    assert sched.gate.busy() == "a voice turn is active"
    sched.on_event(PipelineStateChanged(source="voice", stream="car", state="idle").to_dict())
    sched.on_event(VoiceStarted(stream="mic").to_dict())
    assert sched.gate.busy() == "a voice turn is active"
    sched.on_event(VoiceStopped(stream="mic").to_dict())
    assert sched.gate.busy() == ""
    seen = []
    while not events.queue.empty():
        e = events.queue.get_nowait()
        if e.job == "render":
            seen.append(e.state)
    assert seen == ["queued", "held", "running", "ok"]
    store.close()


def _sysfs(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")
    return root


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        (
            {
                "/sys/class/thermal/thermal_zone0/type": "cpu-thermal",
                "/sys/class/thermal/thermal_zone0/temp": "86000",
                "/sys/class/thermal/thermal_zone0/trip_point_0_type": "passive",
                "/sys/class/thermal/thermal_zone0/trip_point_0_temp": "85000",
            },
            "the CPU is thermally throttled",
        ),
        (
            {
                "/sys/class/power_supply/BAT0/type": "Battery",
                "/sys/class/power_supply/BAT0/status": "Discharging",
                "/sys/class/power_supply/AC/type": "Mains",
                "/sys/class/power_supply/AC/online": "0",
            },
            "the box is on battery power",
        ),
    ],
)
async def test_batch_jobs_wait_while_throttled_or_on_battery(
    tmp_path: Path, files: dict[str, str], reason: str
) -> None:
    root = _sysfs(tmp_path / "board", files)
    clock, rec = Clock(T0), Recorder()
    gate = ResourceGate(root, recheck_s=0)
    store, sched = make(tmp_path / "a.db", clock, rec, [job(rec, "render", "manual")], gate=gate)
    await sched.run_now("render")
    await sched.idle(5)
    assert rec.calls == [] and sched.history("render")[0]["held"] == reason
    for f in files:  # cooled down / back on mains
        if f.endswith("/temp"):
            (root / f.lstrip("/")).write_text("50000\n")
        if f.endswith("/online"):
            (root / f.lstrip("/")).write_text("1\n")
    await sched.idle(5)
    assert len(rec.calls) == 1
    store.close()


async def test_higher_priority_runs_first_when_slots_are_short(tmp_path: Path) -> None:
    clock, rec = Clock(T0), Recorder()
    specs = [job(rec, "b1", "manual"), job(rec, "b2", "manual"), job(rec, "n1", "manual", priority="normal")]
    store, sched = make(tmp_path / "a.db", clock, rec, specs, max_concurrent=1)
    sched._queue(sched.spec("b1"), T0, "manual")
    sched._queue(sched.spec("b2"), T0, "manual")
    sched._queue(sched.spec("n1"), T0, "manual")
    await sched.idle(5)
    assert [c[0] for c in rec.calls] == ["n1", "b1", "b2"]
    store.close()


async def test_timeouts_cancel_coroutines_and_kill_commands(tmp_path: Path) -> None:
    clock, rec = Clock(T0), Recorder()
    pidfile = tmp_path / "pid"
    specs = [
        job(rec, "stuck", "manual", sleep=30, timeout_s=0.2),
        JobSpec(
            name="hang",
            trigger=Trigger.parse("manual"),
            timeout_s=0.5,
            command=("sh", "-c", f"echo $$ > {pidfile}; sleep 30"),
        ),
        JobSpec(name="bad", trigger=Trigger.parse("manual"), command=("sh", "-c", "echo nope; exit 3")),
    ]
    store, sched = make(tmp_path / "a.db", clock, rec, specs, max_concurrent=4)
    t0 = time.monotonic()
    for name in ("stuck", "hang", "bad"):
        await sched.run_now(name)
    await sched.idle(10)
    assert time.monotonic() - t0 < 5
    assert sched.history("stuck")[0]["state"] == "timeout"
    assert sched.history("stuck")[0]["error"] == "did not finish within 0.2 s (timeout_s)"
    assert sched.history("hang")[0]["state"] == "timeout"
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    bad = sched.history("bad")[0]
    assert bad["state"] == "failed" and "exited with status 3" in bad["error"] and "nope" in bad["error"]
    store.close()


async def test_pause_resume_and_bad_input(tmp_path: Path) -> None:
    clock, rec = Clock(T0), Recorder()
    store, sched = make(tmp_path / "a.db", clock, rec, [job(rec, "hourly", "cron:0 * * * *")])
    sched.pause("hourly")
    await step(sched, clock, 3 * 3600)
    assert rec.calls == []
    assert sched.describe("hourly")["paused"] is True and sched.describe("hourly")["next_run"] is None
    sched.resume("hourly")
    await step(sched, clock, 3600)
    assert len(rec.calls) == 1  # the fires during the pause are not replayed
    with pytest.raises(NotFoundError, match="no job 'nope'; jobs: hourly"):
        sched.pause("nope")
    for bad, msg in [
        ("cron:61 * * * *", "not valid"),
        ("every:0.5s", "under one second"),
        ("on:coffee", "use one of alert.major"),
        ("weekly", "start with one of"),
    ]:
        with pytest.raises(BadRequestError, match=msg):
            Trigger.parse(bad)
    with pytest.raises(BadRequestError, match="priority"):
        job(rec, "x", "manual", priority="urgent")
    store.close()
    # the paused flag survives a restart
    store, sched = make(tmp_path / "a.db", clock, rec, [job(rec, "hourly", "cron:0 * * * *")])
    sched.pause("hourly")
    store.close()
    store, sched = make(tmp_path / "a.db", clock, rec, [job(rec, "hourly", "cron:0 * * * *")])
    assert sched.describe("hourly")["paused"] is True
    store.close()


async def test_event_triggers_fire_on_major_alerts_only(tmp_path: Path) -> None:
    from agent.sensors.events import AlertOpened

    clock, rec = Clock(T0), Recorder()
    store, sched = make(tmp_path / "a.db", clock, rec, [job(rec, "on-major", "on:alert.major")])
    sched.on_event(AlertOpened(alert={"id": "a1", "machine": "press", "level": "warning"}).to_dict())
    await sched.idle(5)
    assert rec.calls == []
    sched.on_event(AlertOpened(alert={"id": "a2", "machine": "press", "level": "major"}).to_dict())
    await sched.idle(5)
    assert [c[2] for c in rec.calls] == ["event"]
    store.close()


def test_jobs_toml_adds_command_jobs_and_changes_built_ins(tmp_path: Path) -> None:
    from agent.errors import ConfigError
    from agent.scheduler.service import load_jobs_file

    rec = Recorder()
    builtins = {"report.daily": job(rec, "report.daily", "cron:5 6 * * *", retries=2)}
    path = tmp_path / "jobs.toml"
    path.write_text(
        '[[job]]\nname = "backup"\ntrigger = "cron:30 2 * * *"\ncommand = "/usr/local/bin/backup.sh --all"\n'
        'retries = 2\ndepends_on = ["report.daily"]\n\n'
        '[[job]]\nname = "report.daily"\ntrigger = "cron:0 7 * * *"\nmissed = "skip"\n'
    )
    jobs = {j.name: j for j in load_jobs_file(path, builtins)}
    assert jobs["backup"].command == ("/usr/local/bin/backup.sh", "--all") and jobs["backup"].retries == 2
    assert str(jobs["report.daily"].trigger) == "cron:0 7 * * *" and jobs["report.daily"].missed == "skip"
    assert (
        jobs["report.daily"].action is builtins["report.daily"].action and jobs["report.daily"].retries == 2
    )
    assert load_jobs_file(tmp_path / "absent.toml", builtins) == []
    for text, msg in [
        ('[[job]]\nname = "x"\ntrigger = "every:1h"\n', "command must be a non-empty list"),
        ('[[job]]\nname = "x"\ntrigger = "hourly"\ncommand = ["true"]\n', "start with one of"),
        ('[[job]]\nname = "report.daily"\ncommand_typo = 1\n', "only backoff_s, depends_on"),
        ("[[job]\n", "jobs.toml"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            load_jobs_file(path, builtins)


async def test_batch_work_runs_on_a_nicer_thread() -> None:
    import threading

    from agent.scheduler.jobs import BATCH_NICE, in_batch_thread

    base = os.getpriority(os.PRIO_PROCESS, 0)
    nice = await in_batch_thread(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    assert nice == min(19, base + BATCH_NICE)
    assert (
        os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    )  # the loop's thread is untouched


async def test_quiet_jobs_record_only_their_failures(tmp_path: Path) -> None:
    clock, rec = Clock(T0), Recorder()
    bus_events = []
    store, sched = make(tmp_path / "a.db", clock, rec, [job(rec, "sweep", "every:10s", record="failures")])
    sched.bus = Bus()
    sub = sched.bus.subscribe("t", ["job.run"])
    await step(sched, clock, 30, by=10)
    assert len(rec.calls) == 3 and sched.history("sweep") == []
    assert sched.describe("sweep")["last_run"]["state"] == "ok"
    rec.fail["sweep"] = 1
    await step(sched, clock, 10, by=10)
    (row,) = sched.history("sweep")
    assert row["state"] == "failed" and row["error"] == "sweep failed on purpose"
    while not sub.queue.empty():
        bus_events.append(sub.queue.get_nowait().state)
    assert bus_events == ["failed"]  # the routine runs stay off the bus
    await sched.run_now("sweep")  # an operator's run is always recorded
    await sched.idle(5)
    assert [r["reason"] for r in sched.history("sweep")] == ["manual", "schedule"]
    store.close()


def test_a_turn_that_never_ends_stops_holding_batch_work() -> None:
    now = [0.0]
    gate = ResourceGate("/nonexistent", max_turn_s=600, clock=lambda: now[0])
    gate.note_event(PipelineStateChanged(source="voice", stream="ws", state="speaking").to_dict())
    now[0] = 599.0
    assert gate.busy() == "a voice turn is active"
    now[0] = 601.0  # no voice event for 10 minutes: the pipeline lost its "idle"
    assert gate.busy() == ""
