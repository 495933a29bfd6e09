"""Attack fixtures for hub commands, through the real command processor and the trust store:
replay, expired, wrong key, revoked key (also when the revoked key is still in the config), rotated key."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.security.audit import AuditLog
from agent.security.trust import TrustStore, make_rotation
from agent.store import Store
from models import signing
from sync import topics
from sync.commands import CommandRegistry
from sync.inbox import CommandProcessor, Rejection
from sync.outbox import Outbox
from sync.signed import make_command

DEVICE = "ea-dev1"


@pytest.fixture
def hub():  # type: ignore[no-untyped-def]
    return signing.generate_keypair()


@pytest.fixture
async def setup(tmp_path: Path, hub):  # type: ignore[no-untyped-def]
    store = Store.open(tmp_path / "d.db")
    trust = TrustStore(tmp_path / "trust.json", seed=[hub.public_hex])
    configured = [hub.public_hex]  # the same key also sits in sync.trusted_keys
    registry = CommandRegistry()
    ran: list[str] = []

    @registry.command("ping")
    async def ping(request):  # type: ignore[no-untyped-def]
        ran.append(request.id)
        return {"pong": True}

    proc = CommandProcessor(
        device=DEVICE,
        store=store,
        outbox=Outbox(store),
        registry=registry,
        trusted_keys=lambda: trust.merged(configured),
        audit=AuditLog(store).append,
    )
    yield proc, trust, ran
    store.close()


def message(env):  # type: ignore[no-untyped-def]
    return topics.command_topic(DEVICE, env.id), env.encode()


def reason(proc: CommandProcessor, env) -> str:  # type: ignore[no-untyped-def]
    result = proc.check(*message(env))
    return result.reason if isinstance(result, Rejection) else "accepted"


async def test_replay_runs_once(setup, hub) -> None:  # type: ignore[no-untyped-def]
    proc, _, ran = setup
    env = make_command(DEVICE, "ping", {}, hub.private_hex)
    assert await proc.handle(*message(env)) == env.id
    assert await proc.handle(*message(env)) is None
    for _ in range(100):
        if ran:
            break
        await asyncio.sleep(0.01)
    assert ran == [env.id] and proc.rejected == {"replayed": 1}


async def test_expired_wrong_key_wrong_device(setup, hub) -> None:  # type: ignore[no-untyped-def]
    proc, _, _ = setup
    assert (
        reason(proc, make_command(DEVICE, "ping", {}, hub.private_hex, ttl_s=5, now=time.time() - 60))
        == "expired"
    )
    stranger = signing.generate_keypair()
    assert reason(proc, make_command(DEVICE, "ping", {}, stranger.private_hex)) == "signature_untrusted"
    env = make_command(DEVICE, "ping", {}, hub.private_hex)
    env.body["args"]["x"] = 1  # altered in transit
    assert reason(proc, env) == "signature_invalid"


async def test_revoked_key_even_if_still_configured(setup, hub) -> None:  # type: ignore[no-untyped-def]
    proc, trust, _ = setup
    assert reason(proc, make_command(DEVICE, "ping", {}, hub.private_hex)) == "accepted"
    trust.revoke(hub.key_id, reason="leaked")
    assert reason(proc, make_command(DEVICE, "ping", {}, hub.private_hex)) == "signature_untrusted"


async def test_rotated_key(setup, hub) -> None:  # type: ignore[no-untyped-def]
    proc, trust, _ = setup
    new = signing.generate_keypair()
    assert reason(proc, make_command(DEVICE, "ping", {}, new.private_hex)) == "signature_untrusted"
    trust.rotate(new.public_hex, make_rotation(new.public_hex, hub.private_hex, retire=[hub.key_id]))
    assert reason(proc, make_command(DEVICE, "ping", {}, new.private_hex)) == "accepted"
    assert reason(proc, make_command(DEVICE, "ping", {}, hub.private_hex)) == "signature_untrusted"


async def test_security_settings_are_refused_however_validly_signed(tmp_path: Path, hub) -> None:  # type: ignore[no-untyped-def]
    """The issue's repro: config.set of security.api_auth=off and of attacker keys, signed by the trusted
    hub key, through the real built-in commands. Every one is refused, nothing is written, and the device's
    audit log names the operator the hub signed for, refused or not."""
    import json

    from agent.config import load_settings
    from agent.syncd.commands import CommandDeps, builtin_registry
    from agent.syncd.overrides import apply_overrides, load_overrides, override_path

    settings = load_settings(env={"EDGE_AGENT_DATA_DIR": str(tmp_path / "box")})
    settings.data_path.mkdir(parents=True)
    store = Store.open(settings.data_path / "agent.db")
    outbox = Outbox(store)
    proc = CommandProcessor(
        device=DEVICE,
        store=store,
        outbox=outbox,
        registry=builtin_registry(CommandDeps(settings=settings)),
        trusted_keys=lambda: [hub.public_hex],
        audit=AuditLog(store).append,
    )
    evil = signing.generate_keypair().public_hex
    attempts = [
        {"key": "security.api_auth", "value": "off"},
        {"values": {"sync.trusted_keys": [evil]}},
        {"values": {"models.trusted_keys": [evil], "sync.inflight": 4}},  # one bad key spoils the lot
        {"values": {"sync": {"trusted_keys": [evil]}}},  # a whole section hides nothing
        {"values": {"security": {"api_auth": "off"}}},
        {"key": "sync.trusted_keys_file", "value": "/tmp/evil-keys"},
        {"key": "mqtt.key_file", "value": "/tmp/evil.key"},
        {"key": "security.licence_file", "value": "/tmp/licence.json"},
    ]
    try:
        for args in attempts:
            env = make_command(DEVICE, "config.set", args, hub.private_hex, operator="mallory")
            assert await proc.handle(*message(env)) == env.id
            await proc.join(10)
        ok = make_command(
            DEVICE, "config.set", {"key": "sync.inflight", "value": 4}, hub.private_hex, operator="alice"
        )
        await proc.handle(*message(ok))
        await proc.join(10)

        answers = [json.loads(m.payload)["body"] for m in outbox.peek_batch(100)]
        assert len(answers) == len(attempts) + 1
        for args, answer in zip(attempts, answers, strict=False):
            assert answer["ok"] is False and answer["error"]["code"] == "setting_protected", (args, answer)
            assert "whoever signs" in answer["error"]["message"]
        assert answers[-1]["ok"] is True
        assert load_overrides(settings) == {"sync": {"inflight": 4}}  # only alice's harmless change

        audit = AuditLog(store)
        entries = list(reversed(audit.entries(action="command.config.set", limit=100)))
        assert [e.actor for e in entries] == ["hub:mallory"] * len(attempts) + ["hub:alice"]
        assert all(e.detail["ok"] is False and e.detail["error"] == "setting_protected" for e in entries[:-1])
        assert (
            entries[0].detail["keys"] == ["security.api_auth"] and entries[0].detail["key_id"] == hub.key_id
        )
        assert entries[-1].detail["ok"] is True and entries[-1].detail["set"] == {"sync.inflight": 4}
        assert audit.verify().ok

        # an override file written before this rule (or by hand) cannot smuggle them in at start either
        override_path(settings).write_text(
            json.dumps({"security": {"api_auth": "off"}, "sync": {"inflight": 5, "trusted_keys": [evil]}})
        )
        applied = apply_overrides(settings)
        assert applied.sync.inflight == 5 and applied.sync.trusted_keys == settings.sync.trusted_keys
        assert applied.security.api_auth == settings.security.api_auth
    finally:
        await proc.close()
        store.close()


async def test_a_command_names_its_operator_inside_the_signature(hub) -> None:  # type: ignore[no-untyped-def]
    from sync.signed import verify_command

    env = make_command(DEVICE, "ping", {}, hub.private_hex, operator="alice")
    assert env.body["operator"] == "alice"
    assert verify_command(env, [hub.public_hex], device=DEVICE) == hub.key_id
    env.body["operator"] = "bob"  # blame someone else in transit
    with pytest.raises(Exception, match="signature"):
        verify_command(env, [hub.public_hex], device=DEVICE)
