"""Signed update metadata (TUF style): an honest repository, then one attack fixture per rejection."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import NotFoundError
from agent.security.update_repo import Repository
from agent.security.updates import DirectoryFetcher, HttpFetcher, UpdateClient, UpdateRejected
from models import signing

MODEL = "models/kws-1.0.0.bundle"


def new_keys(n: int = 1) -> list[str]:
    return [signing.generate_keypair().private_hex for _ in range(n)]


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    r = Repository(
        tmp_path / "repo",
        {"root": new_keys(), "timestamp": new_keys(), "snapshot": new_keys(), "targets": new_keys(2)},
        thresholds={"targets": 2},
    )
    r.write_root()
    shutil.copy(r.path / "root.json", tmp_path / "anchor-root.json")
    r.add_target(MODEL, b"model bytes v1" * 100, kind="model", product="kws", version="1.0.0")
    r.publish()
    return r


@pytest.fixture
def client(tmp_path: Path, repo: Repository) -> UpdateClient:
    return UpdateClient(
        tmp_path / "state", DirectoryFetcher(repo.path), anchor_root=tmp_path / "anchor-root.json"
    )


def rejected(code: str, fn, *args, **kwargs) -> UpdateRejected:  # type: ignore[no-untyped-def]
    with pytest.raises(UpdateRejected) as exc:
        fn(*args, **kwargs)
    assert exc.value.code == code, f"expected {code}, got {exc.value.code}: {exc.value}"
    return exc.value


def snapshot_files(repo: Repository) -> dict[str, bytes]:
    return {n: (repo.path / n).read_bytes() for n in ("timestamp.json", "snapshot.json", "targets.json")}


def restore(repo: Repository, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (repo.path / name).write_bytes(data)


def test_honest_update_and_state_survives_restart(
    tmp_path: Path, repo: Repository, client: UpdateClient
) -> None:
    targets = client.refresh()
    assert MODEL in targets["targets"]
    got = client.download(MODEL, tmp_path / "dl")
    assert got.path.read_bytes() == b"model bytes v1" * 100
    assert (got.info.kind, got.info.product, got.info.version) == ("model", "kws", "1.0.0")
    client.mark_installed(got.info)
    # a restart: a new client on the same state, even with the anchor gone
    (tmp_path / "anchor-root.json").unlink()
    again = UpdateClient(tmp_path / "state", DirectoryFetcher(repo.path))
    assert again.installed() == {"model/kws": "1.0.0"}
    assert again.verify_offline()["version"] == 1
    assert again.verify_file(MODEL, got.path).sha256 == got.info.sha256


def test_bad_signature(repo: Repository, client: UpdateClient) -> None:
    doc = json.loads((repo.path / "timestamp.json").read_text())
    doc["signed"]["version"] += 5  # altered after signing
    (repo.path / "timestamp.json").write_text(json.dumps(doc))
    rejected("bad_signature", client.refresh)


def test_below_threshold(repo: Repository, client: UpdateClient) -> None:
    repo.add_target("models/kws-1.1.0.bundle", b"v1.1", kind="model", product="kws", version="1.1.0")
    repo.publish(sign={"targets": repo.keys["targets"][:1]})  # one of the two required
    rejected("below_threshold", client.refresh)
    stranger = new_keys(2)
    repo.publish(sign={"targets": stranger})  # two signatures, by keys the root does not name
    rejected("below_threshold", client.refresh)


def test_expired_metadata_freeze(repo: Repository, client: UpdateClient) -> None:
    client.refresh()
    # the mirror keeps serving the same (validly signed) metadata; two days on it has expired
    rejected("expired", client.refresh, now=time.time() + 2 * 86400)
    repo.publish(timestamp_expires_in=-60)
    rejected("expired", client.refresh)


def test_rollback_of_metadata_even_after_restart(
    tmp_path: Path, repo: Repository, client: UpdateClient
) -> None:
    client.refresh()
    old = snapshot_files(repo)
    repo.publish()
    client.refresh()
    restore(repo, old)  # replay release 1, validly signed and unexpired
    rejected("rollback", client.refresh)
    restarted = UpdateClient(tmp_path / "state", DirectoryFetcher(repo.path))
    rejected("rollback", restarted.refresh)


def test_older_target_than_installed(tmp_path: Path, repo: Repository, client: UpdateClient) -> None:
    client.refresh()
    client.mark_installed(client.download(MODEL, tmp_path / "dl").info)
    repo.add_target("models/kws-0.9.0.bundle", b"old model", kind="model", product="kws", version="0.9.0")
    repo.publish()
    client.refresh()
    err = rejected("rollback", client.download, "models/kws-0.9.0.bundle", tmp_path / "dl")
    assert "older than the installed 1.0.0" in str(err)
    assert not (tmp_path / "dl" / "kws-0.9.0.bundle").exists()


def test_mix_and_match(repo: Repository, client: UpdateClient) -> None:
    repo.publish()
    release2_targets = (repo.path / "targets.json").read_bytes()
    repo.publish()
    # validly signed targets from another release, same length as the pinned one
    (repo.path / "targets.json").write_bytes(release2_targets)
    rejected("hash_mismatch", client.refresh)
    repo.add_target("models/kws-2.0.0.bundle", b"v2", kind="model", product="kws", version="2.0.0")
    repo.publish()
    (repo.path / "targets.json").write_bytes(release2_targets)  # and of another length
    rejected("length_mismatch", client.refresh)


def test_target_hash_and_size(tmp_path: Path, repo: Repository, client: UpdateClient) -> None:
    client.refresh()
    path = repo.path / "targets" / MODEL
    good = path.read_bytes()
    path.write_bytes(good[:-1] + b"X")  # same length, other content
    rejected("hash_mismatch", client.download, MODEL, tmp_path / "dl")
    path.write_bytes(good + b"endless data" * 1000)
    rejected("too_large", client.download, MODEL, tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []  # streamed to a part file, removed when refused
    path.write_bytes(good)
    assert client.download(MODEL, tmp_path / "dl").path.read_bytes() == good
    (tmp_path / "dl" / MODEL.rsplit("/", 1)[-1]).unlink()
    small = UpdateClient(tmp_path / "state", DirectoryFetcher(repo.path), max_download_bytes=100)
    rejected("too_large", small.download, MODEL, tmp_path / "dl")
    (repo.path / "timestamp.json").write_bytes(b" " * (64 * 1024))
    rejected("too_large", client.refresh)
    with pytest.raises(NotFoundError):
        client.download("models/none.bundle", tmp_path / "dl")


def test_key_rotation_through_root(tmp_path: Path, repo: Repository, client: UpdateClient) -> None:
    client.refresh()
    old_targets_keys = list(repo.keys["targets"])
    repo.rotate_keys("targets", new_keys(1), threshold=1)
    repo.publish()
    client.refresh()
    assert json.loads((tmp_path / "state" / "root.json").read_text())["signed"]["version"] == 2
    repo.publish(sign={"targets": old_targets_keys})  # the retired keys no longer count
    rejected("below_threshold", client.refresh)


def test_root_rotation_needs_the_old_root(tmp_path: Path, repo: Repository, client: UpdateClient) -> None:
    client.refresh()
    repo.keys["root"] = new_keys(1)  # an attacker's new root, not signed by the trusted one
    repo.write_root()
    rejected("below_threshold", client.refresh)


@pytest.fixture
def http_repo(repo: Repository) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo.path))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_over_http(tmp_path: Path, repo: Repository, http_repo: str) -> None:
    client = UpdateClient(
        tmp_path / "state", HttpFetcher(http_repo, timeout=5), anchor_root=tmp_path / "anchor-root.json"
    )
    client.refresh()
    assert client.download(MODEL, tmp_path / "dl").info.version == "1.0.0"
    (repo.path / "targets" / MODEL).write_bytes(b"x" * 5000)
    rejected("too_large", client.download, MODEL, tmp_path / "dl")
