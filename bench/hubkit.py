"""What the hub benchmarks share (bench_hub.py, bench_delivery.py): the hub in a thread, the stored-time
recorder, percentiles and a PostgreSQL schema to run on.

- ``Stored``: (device timestamp, commit time) of each stored message of the watched kinds, fed by the
  hub's intake hook (``HubService(on_committed=...)``) or by a bare subscriber, from any thread.
- ``running_hub``: the real ``HubService`` (SQLite or PostgreSQL, receipts on or off) in a thread
  with its own event loop (tests/hub_support.py's ``HubThread``), as ``edge-hub run`` runs it.
- ``postgres()``: a DSN on a fresh schema (dropped afterwards) of the server at ``EDGE_HUB_TEST_PG``
  (the tests' default ``postgresql://postgres@127.0.0.1:5432/test``); when none answers there and
  Debian's PostgreSQL is installed, a private cluster started for the run on a free loopback port
  (``initdb`` + ``pg_ctl``, as the ``postgres`` user when run as root), stopped and removed after.
  None when neither is possible (the PostgreSQL rows are then left out, and said so).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def progress(bench: str, text: str) -> None:
    if sys.stderr.isatty():
        print(f"  {bench}: {text}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank, as the bench tables always used)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Stored:
    """(device timestamp, stored or received time) per message of ``kinds``, from any thread."""

    def __init__(self, kinds: tuple[str, ...] = ("telemetry",)) -> None:
        self.kinds = kinds
        self.pairs: list[tuple[float, float]] = []
        self.lock = threading.Lock()

    def committed(self, stored: list[Any], at: float) -> None:
        """The hub's intake hook: ``stored`` (sync.hub.validate.Accepted) committed at ``at``."""
        pairs = [(a.env.ts, at) for a in stored if a.kind in self.kinds]
        with self.lock:
            self.pairs.extend(pairs)

    def add(self, sent: float, at: float) -> None:
        with self.lock:
            self.pairs.append((sent, at))

    def count(self) -> int:
        with self.lock:
            return len(self.pairs)

    def reset(self) -> None:
        with self.lock:
            self.pairs = []

    def wait(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.count()} of {n} messages arrived within {timeout} s")
            time.sleep(0.01)

    def rate(self) -> float:
        """Messages per second from the first one sent to the last one stored."""
        with self.lock:
            return len(self.pairs) / (max(p[1] for p in self.pairs) - min(p[0] for p in self.pairs))

    def stored_rate(self) -> float:
        """Messages per second between the first and the last commit."""
        with self.lock:
            times = sorted(at for _, at in self.pairs)
        return (len(times) - 1) / (times[-1] - times[0])

    def latency_ms(self) -> tuple[float, float]:
        """p50 and p99 from each message's device timestamp to its commit (ms)."""
        with self.lock:
            lat = [(done - sent) * 1000 for sent, done in self.pairs]
        return percentile(lat, 0.5), percentile(lat, 0.99)


class FsyncProbe:
    """A 4 KiB write and fsync every 20 ms in ``folder`` while it runs: what a commit waits on this disk."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "fsync-probe"
        self.times_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fsync-probe", daemon=True)

    def _run(self) -> None:
        with open(self.path, "wb") as f:
            while not self._stop.wait(0.02):
                started = time.perf_counter()
                f.write(b"x" * 4096)
                f.flush()
                os.fsync(f.fileno())
                self.times_ms.append((time.perf_counter() - started) * 1000)

    def __enter__(self) -> FsyncProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.path.unlink(missing_ok=True)


def hub_settings(tmp: Path, name: str, url: str, db: str | None = None) -> Any:
    """The hub's settings for a bench instance: its own data dir, the bench broker, any free API port."""
    from sync.hub.settings import load_hub_settings

    overrides: dict[str, Any] = {"data_dir": str(tmp / name), "mqtt.url": url, "api.port": 0}
    if db is not None:
        overrides["db"] = db
    return load_hub_settings(env={}, overrides=overrides)


@contextlib.contextmanager
def running_hub(settings: Any, stored: Stored, *, receipts: bool = True) -> Iterator[Any]:
    """The real HubService (tests/hub_support.py's thread with its own loop), its commits into ``stored``."""
    from tests.hub_support import HubThread

    hub = HubThread(settings, on_committed=stored.committed, receipts=receipts).start(timeout=30)
    try:
        yield hub.service
    finally:
        hub.stop(timeout=30)


# ------------------------------------------------------------ PostgreSQL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sh(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=120)


@contextlib.contextmanager
def _private_cluster() -> Iterator[str | None]:
    """A throwaway PostgreSQL cluster on a free loopback port; None when Debian's server is not installed."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        yield None
        return
    bindir = Path(bins[-1]).parent
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None:
            yield None
            return
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
        data = Path(tmp) / "data"
        if as_user:
            shutil.chown(tmp, "postgres")
        _sh([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"])
        options = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1"
        pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(Path(tmp) / "log")]
        _sh([*pg_ctl, "-o", options, "start"])
        try:
            _sh(
                [
                    *as_user,
                    str(bindir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    "test",
                ]
            )
            yield f"postgresql://postgres@127.0.0.1:{port}/test"
        finally:
            subprocess.run([*pg_ctl, "-m", "fast", "stop"], check=False, capture_output=True, timeout=60)


@contextlib.contextmanager
def postgres() -> Iterator[tuple[str, str] | None]:
    """(DSN on a fresh schema, where it came from), or None when no PostgreSQL can be had."""
    from sync.hub.db import postgres_reachable
    from tests.hub_support import PG_DSN

    with contextlib.ExitStack() as stack:
        base: str | None = PG_DSN
        where = f"the server at {PG_DSN}"
        if postgres_reachable(PG_DSN, timeout=1.0) is not None:
            base = stack.enter_context(_private_cluster())
            where = "a private cluster started for the run"
        if base is None:
            yield None
            return
        import psycopg

        schema = f"hubbench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in base else "?"
        try:
            yield f"{base}{sep}options=-csearch_path%3D{schema}", where
        finally:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def row(name: str, ours: float, peer: float | None, peer_name: str, unit: str, target: str) -> dict[str, Any]:
    """One line of the bench table: ours, the peer from the same run, and their ratio."""
    return {
        "name": name,
        "ours": round(ours, 2),
        "peer": None if peer is None else round(peer, 2),
        "peer_name": peer_name,
        "unit": unit,
        "ratio": None if not peer else round(ours / peer, 3),
        "target": target,
    }


__all__ = ["FsyncProbe", "Stored", "hub_settings", "percentile", "postgres", "progress", "row", "running_hub"]
