"""Helpers for the hub's tests: a hub running in a thread, settings, waiting (fixtures: hub_fixtures.py).

The hub runs in its own thread with its own event loop, so tests stay plain
functions that may block (paho clients, urllib, the CLI) without starving the
hub's loop. PostgreSQL is used when a server answers at ``EDGE_HUB_TEST_PG``
(default ``postgresql://postgres@127.0.0.1:5432/test``) within 1 s; each test
gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sync.hub.db import HubDB
from sync.hub.service import HubService
from sync.hub.settings import HubSettings, load_hub_settings
from sync.hub.tokens import HubTokens
from tests.mosquitto import Mosquitto

PG_DSN = os.environ.get("EDGE_HUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def hub_settings(tmp: Path, broker: Mosquitto, db_url: str | None = None, **overrides: Any) -> HubSettings:
    values = {"data_dir": str(tmp), "mqtt.url": broker.url, "api.port": 0, "db": db_url}
    values.update(overrides)
    return load_hub_settings(env={}, overrides=values)


class HubThread:
    """A HubService in a thread with its own loop: ``start()``, use ``url`` / ``db``, ``stop()``.

    ``start()`` makes an admin operator token (``token``), which ``http()``
    sends unless told otherwise (``token=""`` sends none); ``make_token``
    makes more, for role tests.
    """

    def __init__(self, settings: HubSettings, **kwargs: Any) -> None:
        self.settings = settings
        self.service = HubService(settings, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="hub-under-test", daemon=True)
        self.token = ""

    def _main(self) -> None:
        async def body() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                await self.service.start()
            except BaseException as exc:
                self._error = exc
                self._started.set()
                return
            self._started.set()
            try:
                await self._stop.wait()
            finally:
                await self.service.stop()

        asyncio.run(body())

    def start(self, timeout: float = 15.0) -> HubThread:
        self._thread.start()
        if not self._started.wait(timeout):
            raise AssertionError("the hub did not start in time")
        if self._error is not None:
            raise self._error
        assert self.service.mqtt is not None
        self.service.mqtt.wait_connected(timeout)  # connected and SUBACK'd
        self.token = self.make_token(f"test-admin-{os.urandom(3).hex()}", "admin")
        return self

    def make_token(self, name: str, role: str) -> str:
        return HubTokens(self.db).create(name, role, created_by="test")[0]

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.api_port}"

    @property
    def db(self) -> HubDB:
        assert self.service.api_db is not None
        return self.service.api_db

    def count(self, sql: str, params: tuple = ()) -> int:
        return int(self.db.query(sql, params)[0]["n"])

    def http(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 20.0,
        *,
        token: str | None = None,
        data: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """One request; ``token`` defaults to the admin token made at start (``""``: none at all)."""
        if body is not None:
            data = json.dumps(body).encode()
        headers = {"Content-Type": content_type}
        token = self.token if token is None else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, json.loads(
                    raw
                ) if raw and resp.headers.get_content_type() == "application/json" else raw
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None


__all__ = ["PG_DSN", "HubThread", "hub_settings", "wait_for"]
