"""Plain cron expressions (``agent.scheduler.cron``) give croniter's answers, and the rest still go to croniter.

The scheduler evaluates plain five-field expressions itself so the idle
daemon does not import croniter; these tests hold it to croniter's results
over many generated expressions, instants and zones (a fixed offset as
``local_tz()`` gives, and two DST zones across their changes).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from agent.errors import BadRequestError
from agent.scheduler import cron
from agent.scheduler.triggers import Trigger

ZONES: list[tzinfo] = [
    timezone.utc,
    timezone(timedelta(hours=1)),
    timezone(timedelta(hours=-5, minutes=-30)),
    ZoneInfo("Europe/Berlin"),
    ZoneInfo("America/New_York"),
]
#: instants around the 2026 DST changes of both zones, and ordinary days
ANCHORS = [
    datetime(2026, 3, 8, 6, 30, tzinfo=timezone.utc),
    datetime(2026, 3, 29, 0, 30, tzinfo=timezone.utc),
    datetime(2026, 10, 25, 0, 15, tzinfo=timezone.utc),
    datetime(2026, 11, 1, 5, 45, tzinfo=timezone.utc),
    datetime(2026, 12, 31, 23, 59, 30, tzinfo=timezone.utc),
    datetime(2027, 2, 27, 12, 0, tzinfo=timezone.utc),
]
BUILTIN = ["0 6,14,22 * * *", "5 6 * * *", "0 3 * * 0", "*/15 * * * *", "30 2 * * *", "0 0 1 * *"]


def _item(rng: random.Random, lo: int, hi: int, stars: bool) -> str:
    a, b = sorted(rng.sample(range(lo, hi + 1), 2))
    items = [str(a), f"{a}-{b}", f"{a}-{b}/{rng.randint(1, 5)}"]
    return rng.choice([*items, "*", f"*/{rng.randint(1, hi - lo)}"] if stars else items)


def _field(rng: random.Random, lo: int, hi: int, stars: bool = True) -> str:
    return ",".join(_item(rng, lo, hi, stars) for _ in range(rng.choice([1, 1, 1, 2, 3])))


def generated(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        dom, dow = _field(rng, 1, 31, stars=False), _field(rng, 0, 6, stars=False)
        dom, dow = rng.choice([(dom, "*"), ("*", dow), ("*", "*")])
        out.append(" ".join([_field(rng, 0, 59), _field(rng, 0, 23), dom, _field(rng, 1, 12), dow]))
    return out


def croniter_next(expr: str, t: float, tz: tzinfo) -> float:
    return float(croniter(expr, datetime.fromtimestamp(t, tz)).get_next(float))


def test_plain_expressions_are_valid_for_croniter_and_give_its_next_fire() -> None:
    answered = asked = 0
    rng = random.Random(11)
    for expr in BUILTIN + generated(300):
        plain = cron.parse(expr)
        assert plain is not None, expr
        assert croniter.is_valid(expr), expr
        trigger = Trigger.parse(f"cron:{expr}")
        for anchor in ANCHORS:
            t = anchor.timestamp() + rng.uniform(-3 * 86400, 3 * 86400)
            tz = rng.choice(ZONES)
            asked += 1
            answered += cron.next_fire(plain, t, tz) is not None
            assert trigger.next_after(t, tz) == croniter_next(expr, t, tz), (expr, t, tz)
    assert answered > asked // 3  # the plain path answered many (the rest: croniter, months away)


@pytest.mark.parametrize("tz", ZONES, ids=str)
def test_builtin_jobs_around_dst_changes_every_quarter_hour(tz: tzinfo) -> None:
    for expr in BUILTIN:
        trigger = Trigger.parse(f"cron:{expr}")
        for anchor in ANCHORS:
            for k in range(96 * 2):  # two days of quarter hours, and a few seconds past each
                t = anchor.timestamp() + k * 900 + (k % 3) * 7
                assert trigger.next_after(t, tz) == croniter_next(expr, t, tz), (expr, t, tz)


@pytest.mark.parametrize("tz", ZONES, ids=str)
def test_fires_between_matches_croniter_and_keeps_the_newest(tz: tzinfo) -> None:
    def reference(expr: str, since: float, until: float, limit: int) -> list[float]:
        it = croniter(expr, datetime.fromtimestamp(since, tz))
        out: list[float] = []
        while (nxt := float(it.get_next(float))) <= until:
            out.append(nxt)
        return out[-limit:]

    cases = [(expr, 1, 30) for expr in generated(20, seed=3)]
    cases += [(expr, 3, 1000) for expr in BUILTIN] + [(expr, 40, 20) for expr in BUILTIN if "/" not in expr]
    for expr, days, limit in cases:
        trigger = Trigger.parse(f"cron:{expr}")
        for anchor in ANCHORS[1:3]:  # the spring and autumn changes of Europe/Berlin
            since = anchor.timestamp() - 2 * 86400
            until = since + days * 86400
            assert trigger.fires_between(since, until, tz, limit) == reference(expr, since, until, limit)


@pytest.mark.parametrize(
    "expr",
    [
        "0 6 * * mon-fri",
        "0 0 L * *",
        "0 6 */2 * *",
        "0 0 1 jan *",
        "0 12 15 * 1",
        "0 9 * * 1#2",
        "5/10 * * * *",
        "0 22-2 * * *",
        "0 12-12/5 * * *",
    ],
)
def test_other_expressions_go_to_croniter(expr: str) -> None:
    assert cron.parse(expr) is None
    trigger = Trigger.parse(f"cron:{expr}")
    t = datetime(2026, 12, 5, 10, 7, tzinfo=timezone.utc).timestamp()
    assert trigger.next_after(t, timezone.utc) == croniter_next(expr, t, timezone.utc)


@pytest.mark.parametrize(
    "expr", ["61 * * * *", "0 24 * * *", "*/0 * * * *", "0 6 * *", "0 6 32 * *", "x * * * *"]
)
def test_invalid_expressions_are_refused(expr: str) -> None:
    assert cron.parse(expr) is None
    with pytest.raises(BadRequestError):
        Trigger.parse(f"cron:{expr}")
