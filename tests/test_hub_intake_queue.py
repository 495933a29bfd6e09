"""The intake queue between the MQTT reader and the writer: bounded, so a hub that cannot keep up
stops reading the socket (the broker holds the messages) instead of growing without limit."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sync import topics
from sync.envelope import Envelope
from sync.hub.db import open_hub_db
from sync.hub.intake import Intake
from sync.hub.settings import IntakeSettings
from sync.hub.validate import Incoming

pytestmark = pytest.mark.timeout(30)


def _message(i: int) -> Incoming:
    env = Envelope(kind="telemetry", device="box-1", body={"i": i})
    return Incoming(topics.device_topic("box-1", "telemetry"), env.encode(), time.time(), mid=i + 1, qos=1)


def test_a_full_queue_holds_the_reader_until_the_writer_takes_a_batch(tmp_path: Path) -> None:
    db = open_hub_db(str(tmp_path / "hub.db"))
    acked: list[int] = []
    intake = Intake(db, IntakeSettings(queue_size=10), ack=lambda m: acked.append(m.mid))
    messages = [_message(i) for i in range(11)]
    try:
        for m in messages[:10]:
            assert intake.submit(m)
        done = threading.Event()
        reader = threading.Thread(target=lambda: intake.submit(messages[10]) and done.set(), daemon=True)
        reader.start()
        assert not done.wait(0.6)  # the 11th waits: nothing is dropped, the reader is held
        assert intake.queue.qsize() == 10
        intake.start()
        assert done.wait(5)  # the writer took a batch: room again
        deadline = time.monotonic() + 5
        while len(acked) < 11 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(acked) == list(range(1, 12))  # each acknowledged once, after its commit
        assert db.query("SELECT COUNT(*) AS n FROM messages")[0]["n"] == 11
    finally:
        intake.stop()
        db.close()


def test_a_reader_held_by_a_full_queue_gives_up_when_the_hub_stops(tmp_path: Path) -> None:
    db = open_hub_db(str(tmp_path / "hub.db"))
    intake = Intake(db, IntakeSettings(queue_size=10))
    try:
        for i in range(10):
            assert intake.submit(_message(i))
        result: list[bool] = []
        reader = threading.Thread(target=lambda: result.append(intake.submit(_message(10))), daemon=True)
        reader.start()
        time.sleep(0.3)
        intake._stop.set()  # what stop() sets once the writer is done
        reader.join(2)
        assert result == [False]  # not queued: left unacknowledged for the broker to deliver again
        assert intake.queue.qsize() == 10
    finally:
        db.close()
