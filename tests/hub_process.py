"""The real hub (``python -m sync.hub.cli run``) as a separate process, read back through its SQLite file.

For the fault tests of the device's sync: the messages must end where they end
in production, in the hub's database, de-duplicated by id by the hub's own
intake. A separate process, so the hub never lags behind a publisher that
shares the test's interpreter (GIL), and so it can outlive what the test kills.

The hub keeps a persistent MQTT session: messages published while it is away
wait at the broker. ``client_id=None`` starts it as the README shows, with no
``--client-id`` (its default, stable id); ``make_token`` makes an operator
token in its database for API calls. ``share_group=""`` subscribes without a
share group: Mosquitto (2.0.11 here) restores a session's plain subscriptions
from its persistence file after a restart, but NOT its shared subscriptions
(``$share/...``); until the hub reconnects and subscribes again, a restarted
broker would take the device's messages in and drop them, having no
subscriber for them. The hub re-subscribes on every connect either way.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port as _free_port

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class StoredRow:
    """One row of the hub's ``messages`` table; ``rowid`` is the order the hub inserted it in."""

    rowid: int
    id: str
    kind: str
    received_at: float
    body: dict


class HubProcess:
    """``start()`` (until ready: connected and subscribed), ``rows()`` / ``count()``, ``stop()``."""

    def __init__(
        self, data_dir: Path, mqtt_url: str, *, client_id: str | None = "hub-1", share_group: str = ""
    ) -> None:
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / "hub.db"
        self.log_path = self.data_dir / "hub.log"
        self.mqtt_url = mqtt_url
        self.client_id = client_id
        self.share_group = share_group
        self.api_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._conn: sqlite3.Connection | None = None

    def start(self, timeout: float = 20.0) -> HubProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_HUB_")}
        env.update({"PYTHONPATH": str(REPO), "EDGE_HUB_LOG__FORMAT": "text"})
        args = [
            sys.executable,
            "-m",
            "sync.hub.cli",
            "run",
            "--mqtt-url",
            self.mqtt_url,
            "--data-dir",
            str(self.data_dir),
            "--db",
            str(self.db_path),
            "--api-port",
            str(self.api_port),
            "--share-group",
            self.share_group,
        ]
        if self.client_id is not None:
            args += ["--client-id", self.client_id]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready(timeout)
        return self

    def ready(self) -> bool:
        """The hub's /readyz: connected to the broker and its subscriptions acknowledged."""
        try:
            url = f"http://127.0.0.1:{self.api_port}/readyz"
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the hub exited with {self.proc.returncode}:\n{self.log()}")
            if self.ready():
                return
            time.sleep(0.05)
        raise AssertionError(f"the hub was not ready within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: the hub stores what it has queued, then exits."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def make_token(self, name: str, role: str) -> str:
        """An operator token made in the hub's database (as `edge-hub tokens create` does)."""
        from sync.hub.db import open_hub_db
        from sync.hub.tokens import HubTokens

        db = open_hub_db(str(self.db_path))
        try:
            return HubTokens(db).create(name, role, created_by="test")[0]
        finally:
            db.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    # ------------------------------------------------------------ reading the hub's database

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            # reads only; WAL: never blocks the hub's writer
            self._conn = sqlite3.connect(
                self.db_path, timeout=5.0, isolation_level=None, check_same_thread=False
            )
        return self._conn

    def count(self, kinds: tuple[str, ...] = ("telemetry", "events", "alerts")) -> int:
        """Rows stored (committed) of these topic kinds."""
        if not self.db_path.exists():
            return 0
        marks = ",".join("?" * len(kinds))
        try:
            return int(
                self._db()
                .execute(f"SELECT COUNT(*) FROM messages WHERE kind IN ({marks})", kinds)
                .fetchone()[0]
            )
        except sqlite3.OperationalError:  # the hub has not created its schema yet
            return 0

    def rows(self, kinds: tuple[str, ...] = ("telemetry", "events", "alerts")) -> list[StoredRow]:
        """Stored rows of these topic kinds, in the order the hub inserted them (rowid)."""
        marks = ",".join("?" * len(kinds))
        cur = self._db().execute(
            f"SELECT rowid, id, kind, received_at, body FROM messages WHERE kind IN ({marks}) ORDER BY rowid",
            kinds,
        )
        return [StoredRow(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in cur.fetchall()]

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self._db().execute(sql, params).fetchall()

    def wait(self, predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.log()}")

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["HubProcess", "StoredRow"]
