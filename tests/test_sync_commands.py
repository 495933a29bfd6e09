"""Commands: verification and rejection by reason, exactly-once across restarts, the built-ins."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from pathlib import Path

import pytest

from agent.context import AgentContext
from agent.daemon import build_context
from agent.supervisor import FunctionService
from agent.syncd.overrides import apply_overrides, load_overrides
from agent.syncd.service import SyncRuntime
from models.signing import KeyPair, generate_keypair
from sync import topics
from sync.envelope import Envelope
from sync.signed import make_command
from tests.sync_support import sync_settings

HUB: KeyPair = generate_keypair()
STRANGER: KeyPair = generate_keypair()


class Env:
    """A daemon context and sync runtime on a data dir, reopenable to play a restart."""

    def __init__(self, data: Path, **env: str) -> None:
        self.data = data
        self.env = {"SYNC__TRUSTED_KEYS": HUB.public_hex, **env}
        self.ctx: AgentContext | None = None
        self.rt: SyncRuntime | None = None
        self.open()

    def open(self) -> SyncRuntime:
        settings = sync_settings(self.data, **self.env)
        self.ctx = build_context(settings)
        self.rt = SyncRuntime(self.ctx)
        return self.rt

    def close(self) -> None:
        assert self.rt and self.ctx
        self.rt.close()
        self.ctx.store.close()

    def restart(self) -> SyncRuntime:
        self.close()
        return self.open()

    def rows(self) -> tuple[int, int]:
        st = self.ctx.store
        return (
            st.execute("SELECT COUNT(*) FROM sync_inbox").fetchone()[0],
            st.execute("SELECT COUNT(*) FROM sync_outbox").fetchone()[0],
        )

    def results(self) -> list[dict]:
        out = []
        for m in self.rt.outbox.peek_batch(1000):
            if topics.parse(m.topic).kind == "result":
                out.append(json.loads(m.payload)["body"])
        return out


@pytest.fixture
def env(tmp_path: Path):
    e = Env(tmp_path / "data")
    yield e
    e.close()


def cmd(name: str, args: dict | None = None, *, device: str = "d1", key: KeyPair = HUB, **kw) -> Envelope:
    return make_command(device, name, args or {}, key.private_hex, **kw)


async def send(rt: SyncRuntime, env: Envelope, *, topic: str | None = None, payload: bytes | None = None):
    topic = topic or topics.command_topic("d1", env.id)
    result = await rt.processor.handle(topic, payload if payload is not None else env.encode())
    await rt.processor.join(10)
    return result


async def test_ping_is_executed_and_answered_through_the_outbox(env: Env) -> None:
    c = cmd("ping")
    assert await send(env.rt, c) == c.id
    [answer] = env.results()
    assert answer["command_id"] == c.id and answer["name"] == "ping" and answer["ok"] is True
    assert answer["result"]["pong"] is True and answer["error"] is None
    row = env.rt.processor.inbox.get(c.id)
    assert row["state"] == "done" and row["ok"] == 1
    [msg] = env.rt.outbox.peek_batch(10)
    assert msg.topic == topics.result_topic("d1", c.id)
    assert json.loads(msg.payload)["kind"] == "result"


def _tampered(c: Envelope) -> bytes:
    d = c.to_dict()
    d["body"]["args"] = {"n": 999}
    return json.dumps(d).encode()


def _unsigned(c: Envelope) -> bytes:
    d = c.to_dict()
    del d["body"]["sig"]
    return json.dumps(d).encode()


def _version(c: Envelope) -> bytes:
    d = c.to_dict()
    d["v"] = 2
    return json.dumps(d).encode()


@pytest.mark.parametrize(
    ("reason", "make"),
    [
        ("expired", lambda: (cmd("ping", ttl_s=-1), None, None)),
        ("signature_untrusted", lambda: (cmd("ping", key=STRANGER), None, None)),
        ("wrong_device", lambda: (cmd("ping", device="d2"), None, None)),
        ("wrong_device", lambda: (c := cmd("ping", device="d2"), topics.command_topic("d2", c.id), None)),
        ("signature_invalid", lambda: (c := cmd("ping", {"n": 1}), None, _tampered(c))),
        ("signature_missing", lambda: (c := cmd("ping"), None, _unsigned(c))),
        ("not_json", lambda: (cmd("ping"), None, b"{not json")),
        ("bad_version", lambda: (c := cmd("ping"), None, _version(c))),
        (
            "oversized",
            lambda: (c := cmd("ping", {"blob": "x" * 300_000}), None, json.dumps(c.to_dict()).encode()),
        ),
        ("bad_schema", lambda: (cmd("ping"), topics.command_topic("d1", cmd("ping").id), None)),
        ("bad_schema", lambda: (cmd("ping"), None, b'{"v":1,"id":"X"}')),
    ],
)
async def test_rejections_are_counted_by_reason_and_write_nothing(env: Env, reason, make, caplog) -> None:
    c, topic, payload = make()
    before = env.rows()
    with caplog.at_level(logging.WARNING, logger="edge_agent.sync.commands"):
        assert await send(env.rt, c, topic=topic, payload=payload) is None
    assert env.rows() == before  # never a partial write
    assert env.rt.processor.rejected == {reason: 1}
    assert env.rt.processor.executed == 0
    assert any(reason in r.getMessage() for r in caplog.records)


async def test_replay_is_rejected_and_executed_once(env: Env) -> None:
    c = cmd("ping")
    assert await send(env.rt, c) == c.id
    assert await send(env.rt, c) is None
    assert env.rt.processor.rejected == {"replayed": 1}
    assert len(env.results()) == 1


async def test_exactly_once_across_a_restart(env: Env) -> None:
    calls: list[str] = []

    async def count(req):
        calls.append(req.id)
        return {"n": len(calls)}

    env.rt.registry.register("count", count)
    c = cmd("count")
    await send(env.rt, c)
    rt = env.restart()
    rt.registry.register("count", count)
    assert rt.processor.recover() == []  # it finished: nothing to answer again
    assert await send(rt, c) is None  # the broker redelivers it after our restart
    assert calls == [c.id]
    assert rt.processor.rejected == {"replayed": 1}
    assert [r["result"] for r in env.results()] == [{"n": 1}]


async def test_interrupted_command_is_answered_as_failed_not_rerun(env: Env) -> None:
    started = asyncio.Event()
    calls: list[str] = []

    async def slow(req):
        calls.append(req.id)
        started.set()
        await asyncio.sleep(3600)
        return {}

    env.rt.registry.register("slow", slow)
    c = cmd("slow")
    await env.rt.processor.handle(topics.command_topic("d1", c.id), c.encode())
    await asyncio.wait_for(started.wait(), 5)
    await env.rt.processor.close()  # the daemon dies mid-command (its row says 'received')
    assert env.rt.processor.inbox.get(c.id)["state"] == "received"
    assert env.results() == []

    rt = env.restart()
    rt.registry.register("slow", slow)
    assert rt.processor.recover() == [c.id]
    [answer] = env.results()
    assert answer["ok"] is False and answer["error"]["code"] == "interrupted"
    assert rt.processor.inbox.get(c.id)["state"] == "failed"
    assert await send(rt, c) is None  # and a redelivery does not run it again
    assert calls == [c.id]
    assert rt.processor.recover() == []


async def test_unknown_command_and_handler_errors_are_answered(env: Env) -> None:
    async def broken(req):
        raise RuntimeError("boom")

    env.rt.registry.register("broken", broken)
    await send(env.rt, cmd("no.such"))
    await send(env.rt, cmd("broken"))
    await send(env.rt, cmd("logs.tail", {"n": "ten"}))
    codes = [r["error"]["code"] for r in env.results()]
    assert codes == ["unknown_command", "internal", "bad_request"]
    assert env.rt.processor.executed == 3


# ---------------------------------------------------------------- built-ins


async def test_config_get_masks_secrets(tmp_path: Path) -> None:
    e = Env(tmp_path / "data", MQTT__PASSWORD="hunter2")
    try:
        await send(e.rt, cmd("config.get", {"key": "sync.inflight"}))
        await send(e.rt, cmd("config.get", {"key": "mqtt"}))
        await send(e.rt, cmd("config.get", {"key": "nope.x"}))
        r = e.results()
        assert r[0]["result"]["value"] == 32
        assert r[1]["result"]["value"]["password"] == "********"
        assert r[2]["error"]["code"] == "not_found"
    finally:
        e.close()


async def test_config_set_validates_persists_and_applies_on_restart(env: Env) -> None:
    await send(env.rt, cmd("config.set", {"key": "sync.inflight", "value": 8}))
    await send(env.rt, cmd("config.set", {"values": {"sync.inflight": 0}}))  # below its minimum
    await send(env.rt, cmd("config.set", {"values": {"data_dir": "/tmp/elsewhere"}}))
    await send(
        env.rt, cmd("config.set", {"values": {"mqtt.password": "s3cret", "sync.labels": ["site=lab"]}})
    )
    ok, bad, forbidden, secret = env.results()
    assert ok["ok"] and ok["result"]["restart_required"] and ok["result"]["applied"] == "on_restart"
    assert "restart" in ok["result"]["message"]
    assert (
        not bad["ok"]
        and bad["error"]["code"] == "config_invalid"
        and "sync.inflight" in bad["error"]["message"]
    )
    assert not forbidden["ok"] and "data_dir" in forbidden["error"]["message"]
    assert secret["result"]["set"]["mqtt.password"] == "********"
    settings = env.rt.settings
    assert settings.sync.inflight == 32  # nothing changes under the running daemon
    assert load_overrides(settings) == {
        "sync": {"inflight": 8, "labels": ["site=lab"]},
        "mqtt": {"password": "s3cret"},
    }
    applied = apply_overrides(settings)  # what the daemon does at its next start
    assert applied.sync.inflight == 8 and applied.sync.labels == ("site=lab",)
    assert applied.mqtt.password == "s3cret" and applied.source == settings.source
    # a damaged override file never keeps the box from starting
    (settings.data_path / "config-overrides.json").write_text("{broken")
    assert apply_overrides(settings) == settings


async def test_logs_tail_outbox_stats_and_service_restart(env: Env) -> None:
    logging.getLogger("edge_agent.test").warning("disk almost full", extra={"disk": "sda"})
    await send(env.rt, cmd("logs.tail", {"n": 5, "level": "warning", "logger": "edge_agent.test"}))
    [tail] = env.results()
    assert tail["ok"] and tail["result"]["records"][-1]["msg"] == "disk almost full"
    assert tail["result"]["records"][-1]["disk"] == "sda"

    await send(env.rt, cmd("outbox.stats"))
    stats = env.results()[-1]["result"]
    assert stats["messages"] >= 1 and "dropped" in stats

    ran = []

    async def worker():
        ran.append(1)
        await asyncio.sleep(3600)

    sup = env.ctx.supervisor
    sup.add(FunctionService("dummy", worker))
    sup.start()
    await asyncio.sleep(0.05)
    await send(env.rt, cmd("service.restart", {"name": "dummy"}))
    await asyncio.sleep(0.05)
    answer = env.results()[-1]
    assert answer["ok"] and answer["result"]["restarts"] == 1
    assert len(ran) == 2 and sup.status["dummy"].state == "running"
    await send(env.rt, cmd("service.restart", {"name": "nope"}))
    assert env.results()[-1]["error"]["code"] == "not_found"
    await sup.stop(2)


async def test_models_list_and_rollback(env: Env, tmp_path: Path) -> None:
    from models.store import ModelStore
    from tests.models_fixtures import build_bundle

    store = ModelStore(env.rt.settings.data_path / "models")
    for version in ("1.0.0", "1.1.0"):
        bundle = build_bundle(tmp_path / f"b{version}", version=version, key=HUB)
        store.install(bundle, [HUB.public_hex])
    await send(env.rt, cmd("models.list"))
    await send(env.rt, cmd("models.rollback", {"name": "mlp-a"}))
    await send(env.rt, cmd("models.rollback", {"name": "missing"}))
    listed, rolled, missing = env.results()
    ours = {m["version"]: m for m in listed["result"]["models"] if m["name"] == "mlp-a"}
    assert ours["1.1.0"]["active"] and ours["1.0.0"]["previous"] and not ours["1.0.0"]["active"]
    assert rolled["ok"] and rolled["result"]["version"] == "1.0.0"
    assert store.active_version("mlp-a") == "1.0.0"
    assert not missing["ok"]


def test_trusted_hub_keys_come_from_settings_and_file(tmp_path: Path) -> None:
    from sync.keys import trusted_hub_keys, trusted_model_keys

    settings = sync_settings(tmp_path / "data", SYNC__TRUSTED_KEYS=HUB.public_hex)
    settings.data_path.mkdir(parents=True)
    (settings.data_path / "hub_keys.txt").write_text(f"# the hub\n{STRANGER.public_hex}\n")
    assert trusted_hub_keys(settings) == [HUB.public_hex, STRANGER.public_hex]
    assert set(trusted_model_keys(settings)) >= {HUB.public_hex, STRANGER.public_hex}
    other = dataclasses.replace(settings, sync=dataclasses.replace(settings.sync, trusted_keys=()))
    (settings.data_path / "hub_keys.txt").unlink()
    assert trusted_hub_keys(other) == []  # no key: no command is accepted


async def test_hub_originated_changes_are_in_the_box_audit_log(env: Env) -> None:
    """config.set, a deploy and trust.rotate from the hub: each one an entry of the box's own audit log,
    naming the hub operator, whether it worked, and what changed (a refused deploy too)."""
    from agent.security.audit import AuditLog
    from agent.security.trust import make_rotation

    rt = env.rt
    assert rt is not None and env.ctx is not None
    new = generate_keypair()
    announcement = make_rotation(new.public_hex, HUB.private_hex)
    await send(rt, cmd("config.set", {"key": "log.level", "value": "debug"}, operator="alice"))
    await send(rt, cmd("models.deploy", {"url": "http://127.0.0.1:9/nothing.tar"}, operator="bob"))
    await send(
        rt, cmd("trust.rotate", {"new_key": new.public_hex, "announcement": announcement}, operator="carol")
    )
    entries = {
        e.action: e for e in AuditLog(env.ctx.store).entries(limit=50) if e.action.startswith("command.")
    }
    assert entries["command.config.set"].actor == "hub:alice"
    assert entries["command.config.set"].detail["ok"] is True
    assert entries["command.config.set"].detail["set"] == {"log.level": "debug"}
    assert entries["command.models.deploy"].actor == "hub:bob"
    assert entries["command.models.deploy"].detail["ok"] is False  # refused, and still on record
    assert entries["command.trust.rotate"].actor == "hub:carol"
    assert entries["command.trust.rotate"].detail["ok"] is True
    assert entries["command.trust.rotate"].detail["trusted"] == new.key_id
    assert AuditLog(env.ctx.store).verify().ok  # the chain holds
