"""The security commands end to end, in process: keys, tokens, secrets, audit, licence, update."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

import agent.cli
from agent.security.licence import make_licence
from agent.security.update_repo import Repository
from models import signing
from tests.test_cli import walk

OURS = tuple(
    f"agent.cli.{group}_cmd" for group in ("keys", "tokens", "secrets", "audit", "update", "licence")
)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    modules = tuple(dict.fromkeys((*agent.cli.COMMAND_MODULES, *OURS)))
    monkeypatch.setattr(agent.cli, "COMMAND_MODULES", modules)
    for name in list(__import__("os").environ):
        if name.startswith("EDGE_AGENT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EDGE_AGENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EDGE_AGENT_DEVICE_ID", "ea-test")
    monkeypatch.setenv("EDGE_AGENT_SECURITY__UPDATE_ROOT_FILE", str(tmp_path / "anchor.json"))

    def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = agent.cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_every_security_command_has_help(cli) -> None:  # type: ignore[no-untyped-def]
    names = {" ".join(path) for path, _, _ in walk(agent.cli.build_parser())}
    assert {
        "keys show",
        "tokens create",
        "tokens list",
        "tokens revoke",
        "secrets set",
        "audit verify",
        "update refresh",
        "update apply-pending",
        "licence show",
    } <= names
    for path, short_help, sub in walk(agent.cli.build_parser()):
        assert short_help, path
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (path, action.option_strings)


def test_keys_show(cli) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("keys", "show")
    assert code == 2 and "keys show --create" in err
    code, out, _ = cli("keys", "show", "--create", "--json")
    data = json.loads(out)
    assert code == 0 and data["device_id"] == "ea-test" and data["fingerprint"].startswith("SHA256:")
    code, out, _ = cli("keys", "show")
    assert data["public_key"] in out


def test_tokens_and_audit(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("tokens", "create", "ci", "--role", "operator", "--ttl", "30d")
    token = out.splitlines()[0]
    assert code == 0 and token.startswith("eat_")
    code, out, _ = cli("tokens", "list", "--json")
    [row] = json.loads(out)
    assert row["name"] == "ci" and row["role"] == "operator" and row["expires_at"] > time.time() + 29 * 86400
    assert token not in out
    assert cli("tokens", "revoke", "ci")[0] == 0
    assert json.loads(cli("tokens", "list", "--json")[1]) == []
    assert cli("tokens", "revoke", "ci")[0] == 1
    code, out, _ = cli("audit", "verify")
    assert code == 0 and "chain intact" in out
    code, out, _ = cli("audit", "list", "--json")
    assert [e["action"] for e in json.loads(out)] == ["token.revoke", "token.create"]
    head = cli("audit", "head")[1].strip()
    db = sqlite3.connect(tmp_path / "data" / "edge-agent.db", isolation_level=None)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET actor = 'cli:someone-else' WHERE id = 1")
    db.close()
    code, out, _ = cli("audit", "verify", "--anchor", head)
    assert code == 1 and "TAMPERED" in out and "row 1: edited" in out


def test_secrets(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("secrets", "set", "mqtt.url", stdin="x")
    assert code == 1 and "not a secret setting" in err
    assert cli("secrets", "set", "mqtt.password", stdin="hunter2\n")[0] == 0
    assert "hunter2" not in (tmp_path / "data" / "secrets.json").read_text()
    assert "secrets.json (sealed)" in cli("secrets", "list")[1]
    sealed = cli("secrets", "seal", "mqtt.password", stdin="pw2")[1].strip()
    assert sealed.startswith("sealed:v1:")
    assert cli("secrets", "unset", "mqtt.password")[0] == 0
    actions = [e["action"] for e in json.loads(cli("audit", "list", "--json")[1])]
    assert actions == ["secrets.unset", "secrets.set"]


def test_licence(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    vendor = signing.generate_keypair()
    monkeypatch.setenv("EDGE_AGENT_SECURITY__VENDOR_KEYS", vendor.public_hex)
    monkeypatch.setenv("EDGE_AGENT_SECURITY__LICENSED_FEATURES", "llm,voice")
    code, _, err = cli("licence", "check", "llm")
    assert code == 1 and "feature 'llm' needs a licence" in err and "ea-test" in err
    assert cli("licence", "check", "sensors")[0] == 0
    doc = make_licence(
        vendor.private_hex,
        licence_id="L7",
        issued_to="ACME",
        features=["llm"],
        expires=time.time() + 86400,
        devices=["ea-test"],
    )
    (tmp_path / "lic.json").write_text(json.dumps(doc))
    assert cli("licence", "install", str(tmp_path / "lic.json"))[0] == 0
    assert cli("licence", "check", "llm")[0] == 0
    code, _, err = cli("licence", "check", "voice")
    assert code == 1 and "not included in licence L7" in err
    code, out, _ = cli("licence", "show")
    assert code == 0 and "VALID" in out


def test_update_commands(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo = Repository(
        tmp_path / "repo",
        {r: [signing.generate_keypair().private_hex] for r in ("root", "timestamp", "snapshot", "targets")},
    )
    repo.write_root()
    shutil.copy(repo.path / "root.json", tmp_path / "anchor.json")
    repo.add_target("configs/site-3.cfg.tar", b"config bundle", kind="config", product="site", version="3")
    repo.publish()
    code, out, _ = cli("update", "refresh", "--repo", str(repo.path))
    assert code == 0 and "1 target(s)" in out
    code, out, _ = cli("update", "list", "--json")
    assert json.loads(out)["targets"][0]["version"] == "3"
    code, out, _ = cli(
        "update", "fetch", "configs/site-3.cfg.tar", "--repo", str(repo.path), "--dest", str(tmp_path / "dl")
    )
    assert code == 0 and (tmp_path / "dl" / "site-3.cfg.tar").read_bytes() == b"config bundle"
    repo.publish(timestamp_expires_in=-1)
    code, _, err = cli("update", "refresh", "--repo", str(repo.path))
    assert code == 1 and "expired" in err
