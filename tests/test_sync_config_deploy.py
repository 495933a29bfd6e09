"""Config bundle deployments, device side: real signed bundles over real HTTP (Range), real override files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config import Settings
from agent.errors import BadRequestError, EdgeAgentError
from agent.syncd.commands import CommandDeps, builtin_registry
from agent.syncd.deploy import DeployError, DeviceDeployer
from agent.syncd.overrides import (
    apply_overrides,
    override_path,
    parse_config_document,
    previous_path,
    sign_config_document,
)
from models.signing import generate_keypair
from models.store import ModelStore
from sync.commands import CommandRequest
from tests.test_sync_deploy import Hub, tar_of

pytestmark = pytest.mark.timeout(60)

HUB = generate_keypair()
OTHER = generate_keypair()


def config_bundle(directory: Path, tree: dict[str, Any], version: str, key: Any = HUB) -> Path:
    directory.mkdir(parents=True)
    body = {"kind": "config", "name": "site-lab", "version": version, "settings": tree}
    data = json.dumps({"manifest": body}).encode()
    if key is not None:
        data = sign_config_document(data, key.private_hex)
    (directory / "manifest.json").write_bytes(data)
    return directory


def publish(hub: Hub, directory: Path, name: str) -> dict[str, Any]:
    doc = json.loads((directory / "manifest.json").read_bytes())
    return {**hub.publish(name, tar_of(directory)), "manifest": doc}


class Device:
    """The built-in command registry over a real DeviceDeployer, as the sync service wires it."""

    def __init__(self, settings: Settings) -> None:
        data = settings.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.deployer = DeviceDeployer(
            data_dir=data,
            model_store=ModelStore(data / "models"),
            trusted_keys=lambda: [HUB.public_hex],
            retry_delay_s=0.01,
        )
        self.registry = builtin_registry(CommandDeps(settings=settings, deployer=self.deployer))

    async def run(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = self.registry.get(name)
        assert handler is not None
        return await handler(CommandRequest("c1", name, args, "dev-1", HUB.key_id, time.time()))

    def files(self) -> tuple[bytes | None, bytes | None]:
        def read(p: Path) -> bytes | None:
            return p.read_bytes() if p.exists() else None

        return read(override_path(self.settings)), read(previous_path(self.settings))


@pytest.fixture
def device(settings: Settings) -> Device:
    return Device(settings)


async def test_good_bundles_are_written_reported_and_rolled_back(device: Device, tmp_path: Path) -> None:
    (tmp_path / "hub").mkdir()
    async with Hub(tmp_path / "hub") as hub:
        v1 = config_bundle(tmp_path / "v1", {"sync": {"inflight": 8, "labels": ["site=lab"]}}, "1")
        result = await device.run("deploy", publish(hub, v1, "v1.tar"))  # the hub's name: dispatch on kind
        assert (result["kind"], result["name"], result["version"]) == ("config", "site-lab", "1")
        assert result["key_id"] == HUB.key_id and result["smoke"]["passed"] and result["changed"]
        assert result["applied"] == "on_restart" and result["restart_required"]
        assert result["download"]["bytes"] > 0
        current, previous = device.files()
        assert json.loads(current or b"") == {"sync": {"inflight": 8, "labels": ["site=lab"]}}
        assert previous == b"{}\n"  # there were no overrides before
        assert device.settings.sync.inflight == 32  # nothing changes under the running daemon
        applied = apply_overrides(device.settings)  # the next start
        assert applied.sync.inflight == 8 and applied.sync.labels == ("site=lab",)

        v2 = config_bundle(tmp_path / "v2", {"sync": {"inflight": 4}}, "2")
        result = await device.run("config.deploy", publish(hub, v2, "v2.tar"))
        assert result["version"] == "2" and result["changed"]
        new, kept = device.files()
        assert json.loads(new or b"") == {"sync": {"inflight": 4}} and kept == current  # v1 is kept
        assert apply_overrides(device.settings).sync.inflight == 4
        again = await device.run("config.deploy", publish(hub, v2, "v2b.tar"))
        assert again["changed"] is False and device.files()[1] == current  # the previous one is not lost

    v2_bytes = device.files()[0]
    rolled = await device.run("config.rollback", {})
    assert rolled["restart_required"] and rolled["restored"] == ["sync"]
    assert device.files() == (current, v2_bytes)  # swapped: a second rollback undoes the first
    assert apply_overrides(device.settings).sync.inflight == 8
    assert list(device.deployer.downloads.iterdir()) == []


async def test_refused_bundles_leave_the_overrides_byte_identical(device: Device, tmp_path: Path) -> None:
    (tmp_path / "hub").mkdir()
    async with Hub(tmp_path / "hub") as hub:
        good = config_bundle(tmp_path / "good", {"sync": {"inflight": 8}}, "1")
        await device.run("deploy", publish(hub, good, "good.tar"))
        before = device.files()
        n_requests = len(hub.requests)

        async def refused(args: dict[str, Any]) -> EdgeAgentError:
            with pytest.raises(EdgeAgentError) as err:
                await device.run("deploy", args)
            assert device.files() == before
            return err.value

        signed = publish(hub, config_bundle(tmp_path / "s", {"sync": {"inflight": 6}}, "2"), "s.tar")
        tampered = json.loads(json.dumps(signed))
        tampered["manifest"]["manifest"]["settings"]["sync"]["inflight"] = 2
        assert (await refused(tampered)).code == "signature_invalid"
        unsigned = publish(
            hub, config_bundle(tmp_path / "u", {"sync": {"inflight": 6}}, "2", key=None), "u.tar"
        )
        assert (await refused(unsigned)).code == "signature_missing"
        foreign = publish(hub, config_bundle(tmp_path / "f", {"sync": {"inflight": 6}}, "2", OTHER), "f.tar")
        assert (await refused(foreign)).code == "signature_untrusted"
        assert len(hub.requests) == n_requests  # signatures are checked before downloading

        corrupt = dict(signed, sha256=hashlib.sha256(b"other bytes").hexdigest())
        assert (await refused(corrupt)).code == "hash_mismatch"
        other = publish(hub, config_bundle(tmp_path / "o", {"sync": {"inflight": 5}}, "3"), "o.tar")
        assert (await refused({**other, "manifest": signed["manifest"]})).code == "manifest_mismatch"

        invalid = publish(hub, config_bundle(tmp_path / "i", {"sync": {"inflight": 0}}, "4"), "i.tar")
        err = await refused(invalid)
        assert isinstance(err, DeployError) and err.code == "config_invalid"
        assert "sync.inflight" in str(err) and "unchanged" in str(err)
        unknown = publish(hub, config_bundle(tmp_path / "k", {"sync": {"no_such_key": 1}}, "5"), "k.tar")
        assert (await refused(unknown)).code == "config_invalid"
        moved = publish(hub, config_bundle(tmp_path / "d", {"data_dir": "/tmp/elsewhere"}, "6"), "d.tar")
        assert "data_dir" in str(await refused(moved))

        # validly signed by a trusted key, and still refused, before any download: who this box trusts
        # and who may use its API are not the fleet's to change
        n_requests = len(hub.requests)
        for i, tree in enumerate(
            [
                {"security": {"api_auth": "off"}},
                {"sync": {"inflight": 6, "trusted_keys": [OTHER.public_hex]}},
                {"models": {"trusted_keys": [OTHER.public_hex]}},
                {"sync": {"trusted_keys_file": "/tmp/keys"}},
                {"mqtt": {"ca_file": "/tmp/evil-ca.pem"}},
            ]
        ):
            evil = publish(hub, config_bundle(tmp_path / f"p{i}", tree, f"7.{i}"), f"p{i}.tar")
            err = await refused(evil)
            assert err.code == "setting_protected" and "whoever signs" in str(err), err
        assert len(hub.requests) == n_requests

        dry = await device.run("config.deploy", {**signed, "activate": False})
        assert dry["activated"] is False and not dry["changed"] and device.files() == before
    assert list(device.deployer.downloads.iterdir()) == []


async def test_commands_refuse_the_wrong_kind_and_a_rollback_with_nothing_before(
    device: Device, tmp_path: Path
) -> None:
    model_like = {
        "bundle_url": "http://127.0.0.1:1/x",
        "sha256": "0" * 64,
        "size": 1,
        "manifest": {"manifest": {}},
    }
    with pytest.raises(BadRequestError, match="not a config bundle"):
        await device.run("config.deploy", model_like)
    config = config_bundle(tmp_path / "c", {"sync": {"inflight": 8}}, "1")
    args = {**model_like, "manifest": json.loads((config / "manifest.json").read_bytes())}
    with pytest.raises(BadRequestError, match="config bundle"):
        await device.run("models.deploy", args)
    with pytest.raises(EdgeAgentError) as err:
        await device.run("config.rollback", {})
    assert err.value.code == "no_previous_config" and device.files() == (None, None)
    with pytest.raises(BadRequestError) as bad:
        parse_config_document(
            b'{"manifest": {"kind": "config", "name": "x", "version": "1", "settings": {}}}'
        )
    assert bad.value.code == "manifest_invalid"


async def test_a_start_with_a_broken_newest_override_falls_back_to_the_previous(
    device: Device, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "hub").mkdir()
    async with Hub(tmp_path / "hub") as hub:
        for version, inflight in (("1", 8), ("2", 4)):
            bundle = config_bundle(tmp_path / version, {"sync": {"inflight": inflight}}, version)
            await device.run("deploy", publish(hub, bundle, f"{version}.tar"))
    path = override_path(device.settings)
    # an agent upgrade tightened a range, or the file was damaged: the newest tree no longer validates
    for broken in (b'{"sync": {"inflight": 0}}', b"{broken"):
        path.write_bytes(broken)
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="edge_agent.sync.overrides"):
            applied = apply_overrides(device.settings)
        assert applied.sync.inflight == 8 and applied.source == device.settings.source
        assert "started with the previous ones" in caplog.text and str(path) in caplog.text
        assert path.read_bytes() == broken  # not rewritten: config.rollback makes it permanent
    previous_path(device.settings).write_bytes(b'{"sync": {"inflight": -1}}')  # both bad: the file config
    assert apply_overrides(device.settings) == device.settings
    path.unlink()
    assert apply_overrides(device.settings) == device.settings  # no overrides: the previous is not used


def test_bad_arguments_are_refused(device: Device) -> None:
    with pytest.raises(BadRequestError):
        asyncio.run(device.run("config.deploy", {"manifest": {"manifest": {"kind": "config"}}}))
