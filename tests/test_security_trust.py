"""Trust store: enrolment, signed rotation, revocation forever, persistence across restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.errors import BadRequestError
from agent.security.trust import TrustStore, make_rotation
from models import signing
from sync.signed import make_command, verify_command


@pytest.fixture
def hub():
    return signing.generate_keypair()


def test_seed_add_and_persistence(tmp_path: Path, hub) -> None:
    store = TrustStore(tmp_path / "trust.json", seed=[hub.public_hex])
    assert store.keys() == [hub.public_hex]
    other = signing.generate_keypair()
    assert store.add(other.public_hex.upper()) == other.key_id
    # a fresh instance (a restart) sees the same state
    again = TrustStore(tmp_path / "trust.json")
    assert sorted(again.keys()) == sorted([hub.public_hex, other.public_hex])
    assert oct((tmp_path / "trust.json").stat().st_mode & 0o777) == "0o600"


def test_rotation_signed_by_current_key_is_accepted_and_retires_it(tmp_path: Path, hub) -> None:
    store = TrustStore(tmp_path / "trust.json", seed=[hub.public_hex])
    new = signing.generate_keypair()
    ann = make_rotation(new.public_hex, hub.private_hex, retire=[hub.key_id])
    assert store.rotate(new.public_hex, ann) == new.key_id
    assert store.keys() == [new.public_hex]
    assert store.is_revoked(hub.key_id)
    # commands from the new key verify, from the old one no longer
    cmd_new = make_command("dev1", "ping", {}, new.private_hex)
    assert verify_command(cmd_new, store.keys(), device="dev1") == new.key_id
    cmd_old = make_command("dev1", "ping", {}, hub.private_hex)
    with pytest.raises(BadRequestError) as exc:
        verify_command(cmd_old, store.keys(), device="dev1")
    assert exc.value.code == "signature_untrusted"
    # replaying the announcement (signed by the now-retired key) is refused
    third = signing.generate_keypair()
    with pytest.raises(BadRequestError) as exc:
        store.rotate(third.public_hex, make_rotation(third.public_hex, hub.private_hex))
    assert exc.value.code == "signature_untrusted"


def test_rotation_rejections(tmp_path: Path, hub) -> None:
    store = TrustStore(tmp_path / "trust.json", seed=[hub.public_hex])
    new = signing.generate_keypair()
    stranger = signing.generate_keypair()
    cases = {
        "signature_untrusted": make_rotation(new.public_hex, stranger.private_hex),
        "expired": make_rotation(new.public_hex, hub.private_hex, now=time.time() - 10, ttl_s=5),
    }
    tampered = make_rotation(new.public_hex, hub.private_hex)
    tampered["retire"] = ["0123456789abcdef"]
    cases["signature_invalid"] = tampered
    unsigned = make_rotation(new.public_hex, hub.private_hex)
    del unsigned["sig"]
    cases["signature_missing"] = unsigned
    for code, ann in cases.items():
        with pytest.raises(BadRequestError) as exc:
            store.rotate(new.public_hex, ann)
        assert exc.value.code == code, code
    with pytest.raises(BadRequestError) as exc:
        store.rotate(stranger.public_hex, make_rotation(new.public_hex, hub.private_hex))
    assert exc.value.code == "bad_schema"
    assert store.keys() == [hub.public_hex]


def test_revoked_key_is_never_trusted_again(tmp_path: Path, hub) -> None:
    path = tmp_path / "trust.json"
    store = TrustStore(path, seed=[hub.public_hex])
    backup = signing.generate_keypair()
    store.add(backup.public_hex)
    store.revoke(hub.key_id, reason="leaked")
    assert store.keys() == [backup.public_hex]
    with pytest.raises(BadRequestError) as exc:
        store.add(hub.public_hex)
    assert exc.value.code == "key_revoked"
    with pytest.raises(BadRequestError) as exc:
        store.rotate(hub.public_hex, make_rotation(hub.public_hex, backup.private_hex))
    assert exc.value.code == "key_revoked"
    # the old config seed comes back after a restart: still not trusted
    assert TrustStore(path, seed=[hub.public_hex]).keys() == [backup.public_hex]
    states = {row["key_id"]: row["state"] for row in TrustStore(path).entries()}
    assert states == {hub.key_id: "revoked", backup.key_id: "trusted"}


def test_changes_by_another_instance_are_seen(tmp_path: Path, hub) -> None:
    daemon_view = TrustStore(tmp_path / "trust.json", seed=[hub.public_hex])
    assert daemon_view.keys() == [hub.public_hex]
    TrustStore(tmp_path / "trust.json").revoke(hub.public_hex)  # e.g. the CLI
    assert daemon_view.keys() == []


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "trust.json"
    path.write_text("{not json")
    from agent.errors import ConfigError

    with pytest.raises(ConfigError, match="trust store"):
        TrustStore(path).keys()
    path.write_text(json.dumps({"format": 99}))
    with pytest.raises(ConfigError, match="unknown format"):
        TrustStore(path).keys()
