"""The on-disk model store: verified installs, activation, rollback, removal, crash safety."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.errors import BadRequestError, ConflictError, NotFoundError
from models import signing
from models.manifest import MANIFEST_FILE
from models.store import ModelStore
from tests.models_fixtures import MLP_A, MLP_B, build_bundle, signing_key, tree_snapshot
from tests.modelzoo import truncated_copy

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bundles")
    return {
        "v1": build_bundle(base / "v1", MLP_A, version="1.0.0"),
        "v2": build_bundle(base / "v2", MLP_A, version="2.0.0", runtimes=("onnxruntime", "openvino")),
        "b": build_bundle(base / "b", MLP_B, version="0.1"),
    }


@pytest.fixture
def trusted() -> list[str]:
    return [signing_key().public_hex]


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_install_get_list_verify(store: ModelStore, bundles: dict[str, Path], trusted: list[str]) -> None:
    m = store.install(bundles["v1"], trusted)
    assert (m.name, m.version, m.active) == ("mlp-a", "1.0.0", True)
    assert m.file_path("model.onnx").read_bytes() == (bundles["v1"] / "model.onnx").read_bytes()
    assert store.get("mlp-a").version == "1.0.0"
    store.install(bundles["b"] / MANIFEST_FILE, trusted)  # a manifest path works too
    assert [(x.name, x.version) for x in store.list()] == [("mlp-a", "1.0.0"), ("mlp-b", "0.1")]
    report = store.verify("mlp-a", trusted_keys=trusted)
    assert report.ok and report.key_id == signing_key().key_id and not report.problems


def test_activate_rollback_remove(store: ModelStore, bundles: dict[str, Path], trusted: list[str]) -> None:
    store.install(bundles["v1"], trusted)
    store.install(bundles["v2"], trusted)
    assert store.active_version("mlp-a") == "2.0.0"
    assert store.rollback("mlp-a").version == "1.0.0"
    assert store.rollback("mlp-a").version == "2.0.0"  # rollback of a rollback goes forward again
    store.activate("mlp-a", "1.0.0")
    assert [(x.version, x.active, x.previous) for x in store.list("mlp-a")] == [
        ("1.0.0", True, False),
        ("2.0.0", False, True),
    ]
    with pytest.raises(NotFoundError):
        store.activate("mlp-a", "9.9")
    with pytest.raises(ConflictError, match="is active"):
        store.remove("mlp-a", "1.0.0")
    store.remove("mlp-a", "2.0.0")
    with pytest.raises(ConflictError, match="no previous"):
        store.rollback("mlp-a")
    store.install(bundles["v2"], trusted)  # re-install after removal is allowed
    store.remove("mlp-a", "2.0.0", force=True)  # active: falls back to the previous one
    assert store.active_version("mlp-a") == "1.0.0"
    store.remove("mlp-a", "1.0.0", force=True)
    assert store.list() == [] and not (store.root / "mlp-a").exists()
    with pytest.raises(NotFoundError, match="mlp-a is not installed"):
        store.get("mlp-a")


def test_install_without_activation_and_idempotence(
    store: ModelStore, bundles: dict[str, Path], trusted: list[str], tmp_path: Path
) -> None:
    store.install(bundles["v1"], trusted)
    m2 = store.install(bundles["v2"], trusted, activate=False)
    assert not m2.active and store.active_version("mlp-a") == "1.0.0"
    before = tree_snapshot(store.root)
    store.install(bundles["v1"], trusted)  # same signed bytes: nothing to do
    assert tree_snapshot(store.root) == before
    # same version, different content: versions are immutable
    other = build_bundle(tmp_path / "other", MLP_A, version="1.0.0", memory_bytes=123456)
    with pytest.raises(ConflictError, match="immutable"):
        store.install(other, trusted)
    assert tree_snapshot(store.root) == before


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _unsign(bundle: Path) -> None:
    doc = json.loads((bundle / MANIFEST_FILE).read_bytes())
    del doc["signature"]
    (bundle / MANIFEST_FILE).write_text(json.dumps(doc))


def _tamper(bundle: Path) -> None:
    doc = json.loads((bundle / MANIFEST_FILE).read_bytes())
    doc["manifest"]["memory_bytes"] = 1
    (bundle / MANIFEST_FILE).write_text(json.dumps(doc))


def _swap_file_and_manifest_hash(bundle: Path) -> None:
    """An attacker replaces the model and fixes its hash in the manifest, but cannot re-sign."""
    _flip_byte(bundle / "model.onnx")
    import hashlib

    doc = json.loads((bundle / MANIFEST_FILE).read_bytes())
    doc["manifest"]["files"][0]["sha256"] = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    (bundle / MANIFEST_FILE).write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        (lambda b: _flip_byte(b / "model.onnx"), "model_file_hash"),
        (lambda b: truncated_copy(b / "model.onnx", b / "model.onnx", keep=0.5), "model_file_size"),
        (
            lambda b: (b / "model.onnx").write_bytes((b / "model.onnx").read_bytes() + b"\0"),
            "model_file_size",
        ),
        (lambda b: (b / "model.onnx").unlink(), "bad_request"),
        (_unsign, "signature_missing"),
        (_tamper, "signature_invalid"),
        (_swap_file_and_manifest_hash, "signature_invalid"),
        (lambda b: (b / MANIFEST_FILE).write_text("{"), "manifest_invalid"),
    ],
)
def test_bad_bundle_is_refused_and_store_unchanged(
    store: ModelStore, bundles: dict[str, Path], trusted: list[str], tmp_path: Path, damage, code: str
) -> None:
    store.install(bundles["v1"], trusted)
    before = tree_snapshot(store.root)
    bad = _copy(bundles["v2"], tmp_path / "bad")
    damage(bad)
    with pytest.raises(BadRequestError) as err:
        store.install(bad, trusted)
    assert err.value.code == code, err.value
    assert tree_snapshot(store.root) == before
    assert store.active_version("mlp-a") == "1.0.0"


def _tar(path: Path, members: dict[str, Path | bytes], *, link: str = "") -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, src in members.items():
            if isinstance(src, Path):
                tar.add(src, arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(src)
                tar.addfile(info, io.BytesIO(src))
        if link:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return path


def test_install_from_the_bundle_tar(
    store: ModelStore, bundles: dict[str, Path], trusted: list[str], tmp_path: Path
) -> None:
    """The tar `models pack` writes installs as its directory would, flat or under one top directory."""
    flat = _tar(tmp_path / "v1.tar", {p.name: p for p in bundles["v1"].iterdir()})
    m = store.install(flat, trusted)
    assert (m.name, m.version, m.active) == ("mlp-a", "1.0.0", True)
    assert m.file_path("model.onnx").read_bytes() == (bundles["v1"] / "model.onnx").read_bytes()
    nested = _tar(tmp_path / "v2.tar", {"mlp-a-2.0.0": bundles["v2"]})
    assert store.install(nested, trusted, activate=False).version == "2.0.0"
    assert store.active_version("mlp-a") == "1.0.0"


@pytest.mark.parametrize(
    ("members", "link", "message"),
    [
        ({"../evil.onnx": b"x"}, "", "escapes the bundle"),
        ({"/abs.onnx": b"x"}, "", "escapes the bundle"),
        ({}, "model.onnx", "not a regular file"),
        ({"readme.txt": b"hello"}, "", "no manifest.json"),
    ],
)
def test_a_hostile_or_empty_tar_is_refused_and_store_unchanged(
    store: ModelStore,
    bundles: dict[str, Path],
    trusted: list[str],
    tmp_path: Path,
    members: dict[str, bytes],
    link: str,
    message: str,
) -> None:
    store.install(bundles["v1"], trusted)
    before = tree_snapshot(store.root)
    bad = _tar(tmp_path / "bad.tar", {**{p.name: p for p in bundles["v2"].iterdir()}, **members}, link=link)
    if message == "no manifest.json":
        bad = _tar(tmp_path / "bad.tar", members)
    with pytest.raises(BadRequestError, match=message) as err:
        store.install(bad, trusted)
    assert err.value.code == "bad_bundle"
    assert tree_snapshot(store.root) == before
    assert not (tmp_path.parent / "evil.onnx").exists()


def test_untrusted_key_is_refused(store: ModelStore, bundles: dict[str, Path]) -> None:
    before = tree_snapshot(store.root)
    with pytest.raises(BadRequestError) as err:
        store.install(bundles["v1"], [signing.generate_keypair().public_hex])
    assert err.value.code == "signature_untrusted"
    assert tree_snapshot(store.root) == before


def test_verify_finds_damage_after_install(
    store: ModelStore, bundles: dict[str, Path], trusted: list[str]
) -> None:
    m = store.install(bundles["v2"], trusted)
    _flip_byte(m.file_path("model.onnx"))
    report = store.verify("mlp-a")
    assert not report.ok and report.problems == ("model.onnx: sha256 mismatch",)
    m.file_path("model.onnx").unlink()
    assert store.verify("mlp-a").problems == ("model.onnx: missing",)


def test_bad_names_are_refused(store: ModelStore) -> None:
    for bad in ("../x", "A", ".staging", ""):
        with pytest.raises(BadRequestError):
            store.get(bad)
    with pytest.raises(BadRequestError):
        store.get("ok", "../1")


_CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from models.store import ModelStore

    root, bundle, key, step = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    calls = [0]

    def hook(fn):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapped

    # every durable step of an install goes through one of these: die right before the Nth
    os.fsync, os.rename, os.replace = hook(os.fsync), hook(os.rename), hook(os.replace)
    ModelStore(Path(root)).install(Path(bundle), [key])
    print("COMPLETED", calls[0])
    """
)


def test_kill_9_at_every_step_of_an_install_leaves_a_valid_store(
    bundles: dict[str, Path], trusted: list[str], tmp_path: Path
) -> None:
    template = ModelStore(tmp_path / "template")
    template.install(bundles["v1"], trusted)
    script = tmp_path / "crasher.py"
    script.write_text(_CRASHER)
    outcomes = []
    for step in range(1, 40):
        root = tmp_path / f"store{step}"
        shutil.copytree(template.root, root)
        proc = subprocess.run(
            [sys.executable, str(script), str(root), str(bundles["v2"]), trusted[0], str(step)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            timeout=60,
        )
        store = ModelStore(root)
        active = store.active_version("mlp-a")
        assert active in ("1.0.0", "2.0.0")
        for m in store.list():  # every version a reader can see is complete and intact
            assert store.verify(m.name, m.version, trusted).ok, (step, m.version)
        if proc.returncode == 0:
            assert b"COMPLETED" in proc.stdout and active == "2.0.0"
            break
        assert proc.returncode == -9, proc.stderr.decode()
        outcomes.append(active)
        # the next change sweeps the leftovers and finishes the job
        store.install(bundles["v2"], trusted)
        assert store.active_version("mlp-a") == "2.0.0"
        assert not (root / ".staging").exists() or not any((root / ".staging").iterdir())
    else:
        pytest.fail("the install never completed")
    # killed while copying/hashing/renaming (old version still active) and after the pointer switch
    assert outcomes.count("1.0.0") >= 5 and "2.0.0" in outcomes
