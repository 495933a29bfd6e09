"""The agent's update end to end: signed metadata, staged by the agent, re-verified and installed by the updater."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from agent.security import agent_update
from agent.security.selfupdate import Installer, command_health
from agent.security.update_repo import Repository
from agent.security.updates import DirectoryFetcher, UpdateClient, UpdateRejected
from models import signing
from tests.test_updates_selfupdate import CHECK, HEALTH, build_wheel, run_app


def bundle(wheel: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(wheel, arcname=wheel.name)
    return buf.getvalue()


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    wheels = tmp_path / "wheels"
    w1, w2, w0 = build_wheel(wheels, "1.0"), build_wheel(wheels, "2.0"), build_wheel(wheels, "0.5")
    prefix = tmp_path / "opt"
    installer = Installer(
        prefix, check_cmd=CHECK, no_deps=True, seed_pip=False, health=command_health(HEALTH)
    )
    installer.bootstrap(w1, "1.0")
    keys = {
        role: [signing.generate_keypair().private_hex]
        for role in ("root", "timestamp", "snapshot", "targets")
    }
    repo = Repository(tmp_path / "repo", keys)
    repo.write_root()
    anchor = tmp_path / "etc" / "update-root.json"
    anchor.parent.mkdir()
    shutil.copy(repo.path / "root.json", anchor)
    repo.add_target("agent/edgeapp-2.0.tar", bundle(w2), kind="agent", product="edgeapp", version="2.0")
    repo.add_target("agent/edgeapp-0.5.tar", bundle(w0), kind="agent", product="edgeapp", version="0.5")
    repo.publish()
    client = UpdateClient(tmp_path / "state", DirectoryFetcher(repo.path), anchor_root=anchor)
    client.refresh()
    return prefix, installer, client, anchor, repo


def test_stage_and_apply(setup) -> None:  # type: ignore[no-untyped-def]
    prefix, installer, client, anchor, repo = setup
    agent_update.stage(client, "agent/edgeapp-2.0.tar")
    result = agent_update.apply_pending(client.state_dir, installer, anchor_root=anchor)
    assert result.outcome == "installed" and run_app(prefix) == "edgeapp 2.0"
    assert not (client.state_dir / agent_update.PENDING).exists()
    assert client.installed() == {"agent/edgeapp": "2.0"}
    assert json.loads((client.state_dir / agent_update.LAST_RESULT).read_text())["outcome"] == "installed"
    # an older bundle, validly signed: refused even when the agent's own record is wiped
    (client.state_dir / "installed.json").unlink()
    old = client.state_dir / "dl" / "edgeapp-0.5.tar"
    old.parent.mkdir()
    shutil.copy(repo.path / "targets" / "agent" / "edgeapp-0.5.tar", old)
    (client.state_dir / agent_update.PENDING).write_text(
        json.dumps({"target": "agent/edgeapp-0.5.tar", "path": str(old)})
    )
    with pytest.raises(UpdateRejected) as exc:
        agent_update.apply_pending(client.state_dir, installer, anchor_root=anchor)
    assert exc.value.code == "rollback" and "older than the installed 2.0" in str(exc.value)
    assert run_app(prefix) == "edgeapp 2.0"
    assert json.loads((client.state_dir / agent_update.LAST_RESULT).read_text())["code"] == "rollback"


def test_updater_does_not_trust_the_agents_files(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    prefix, installer, client, anchor, _repo = setup
    staged = agent_update.stage(client, "agent/edgeapp-2.0.tar")
    data = staged.path.read_bytes()
    staged.path.write_bytes(data[:-1] + b"\x01")  # swapped after the agent verified it
    with pytest.raises(UpdateRejected) as exc:
        agent_update.apply_pending(client.state_dir, installer, anchor_root=anchor)
    assert exc.value.code == "hash_mismatch"
    assert run_app(prefix) == "edgeapp 1.0"
    # a compromised agent plants its own root and metadata in the state dir
    evil = Repository(
        tmp_path / "evil",
        {r: [signing.generate_keypair().private_hex] for r in ("root", "timestamp", "snapshot", "targets")},
    )
    evil.write_root()
    evil.add_target(
        "agent/edgeapp-2.0.tar", data[:-1] + b"\x01", kind="agent", product="edgeapp", version="2.0"
    )
    evil.publish()
    for name in ("root.json", "timestamp.json", "snapshot.json", "targets.json"):
        shutil.copy(evil.path / name, client.state_dir / name)
    staged.path.write_bytes(data[:-1] + b"\x01")
    (client.state_dir / agent_update.PENDING).write_text(
        json.dumps({"target": "agent/edgeapp-2.0.tar", "path": str(staged.path)})
    )
    with pytest.raises(UpdateRejected, match="does not follow from the anchor"):
        agent_update.apply_pending(client.state_dir, installer, anchor_root=anchor)
    assert run_app(prefix) == "edgeapp 1.0"
