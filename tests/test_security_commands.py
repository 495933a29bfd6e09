"""Attack fixtures for hub commands, through the real command processor and the trust store:
replay, expired, wrong key, revoked key (also when the revoked key is still in the config), rotated key."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

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
