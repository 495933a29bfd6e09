"""Pytest fixtures of the hub's tests, loaded with ``pytest_plugins = ["tests.hub_fixtures"]``.

PostgreSQL is used when a server answers at ``EDGE_HUB_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/test``) within 1 s; each test gets its
own schema, dropped afterwards. Otherwise those tests skip, saying why.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sync.hub.db import postgres_reachable
from sync.hub.settings import HubSettings
from tests.hub_support import PG_DSN, HubThread
from tests.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401  (registers `mosquitto`)


@functools.lru_cache(maxsize=1)
def _pg_unreachable() -> str | None:
    """Asked once per session: a server that does not answer costs its 1 s once, not per test."""
    return postgres_reachable(PG_DSN, timeout=1.0)


@pytest.fixture
def broker(mosquitto: Mosquitto) -> Mosquitto:
    """The hub tests' name for the suite's one broker fixture (``mosquitto``, tests/mosquitto.py)."""
    return mosquitto


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A DSN to a fresh schema on the local PostgreSQL, or a skip saying why there is none."""
    why = _pg_unreachable()
    if why:
        pytest.skip(f"PostgreSQL tests skipped: {why}")
    import psycopg

    schema = f"hubtest_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_DSN else "?"
    try:
        yield f"{PG_DSN}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs on an SQLite file and on PostgreSQL (skipped when no server)."""
    if request.param == "sqlite":
        return str(tmp_path / "hub.db")
    return request.getfixturevalue("pg_dsn")


@pytest.fixture
def start_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., HubThread]]:
    """Start a hub in a thread; the CLI (``main([...])``) gets its admin token through EDGE_HUB_TOKEN."""
    hubs: list[HubThread] = []

    def start(settings: HubSettings, **kwargs: Any) -> HubThread:
        hub = HubThread(settings, **kwargs)
        hubs.append(hub)
        hub.start()
        monkeypatch.setenv("EDGE_HUB_TOKEN", hub.token)
        return hub

    yield start
    for hub in hubs:
        hub.stop()
