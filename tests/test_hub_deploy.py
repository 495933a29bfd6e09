"""Staged deployment: bundles served with Range, canary first, the rest only after canary success."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sync.hub.bundles import make_bundle_tar
from sync.hub.cli import main
from sync.hub.deploy import canary_count, parse_percent
from tests.fleet_sim import SimDevice, deploy_fails, deploy_ok
from tests.hub_support import hub_settings, wait_for
from tests.models_fixtures import MLP_A, build_bundle

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bundle") / "mlp-a", MLP_A, version="2.0.0")


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _run_deploy(hub_url: str, bundle: Path, to: str, canary: str, timeout: int, capsys) -> tuple[int, dict]:
    """``edge-hub --hub URL deploy BUNDLE --to SEL --canary N --timeout S --json``: its exit code and answer."""
    argv = ["--hub", hub_url, "deploy", str(bundle), "--to", to, "--canary", canary]
    code = main([*argv, "--timeout", str(timeout), "--json"])
    return code, json.loads(capsys.readouterr().out)


def _online_fleet(hub, broker, key: str, names: list[str], fleet: str, failing: str) -> list[SimDevice]:
    """Simulated devices labelled ``fleet=FLEET``, started and seen online; ``failing`` fails its deploy."""
    devs = [
        SimDevice(
            name,
            broker.port,
            trusted_keys=[key],
            labels={"fleet": fleet},
            handlers={"deploy": deploy_fails if name == failing else deploy_ok},
        )
        for name in names
    ]
    try:
        for d in devs:
            d.start()
        wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM devices WHERE online = 1") == len(names))
    except BaseException:
        for d in devs:
            d.stop()
        raise
    return devs


def test_canary_share() -> None:
    assert parse_percent("10%") == 10.0 and parse_percent(25) == 25.0
    assert [canary_count(n, 10) for n in (0, 1, 9, 10, 11, 200)] == [0, 1, 1, 1, 2, 20]
    assert canary_count(5, 0) == 0 and canary_count(5, 100) == 5
    with pytest.raises(Exception, match="between 0% and 100%"):
        parse_percent("150%")


def test_bundles_are_uploaded_and_served_with_range(
    broker, start_hub, tmp_path: Path, bundle_dir: Path
) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    data = make_bundle_tar(bundle_dir)
    assert make_bundle_tar(bundle_dir) == data  # reproducible: the same directory, the same sha256
    auth = {"Authorization": f"Bearer {hub.token}"}
    req = urllib.request.Request(
        hub.url + "/v1/bundles",
        data=data,
        method="POST",
        headers={"Content-Type": "application/x-tar", **auth},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201
        row = json.loads(resp.read())
    sha = hashlib.sha256(data).hexdigest()
    assert (row["sha256"], row["size"], row["model"], row["version"]) == (sha, len(data), "mlp-a", "2.0.0")
    assert row["url"] == f"{hub.url}/v1/bundles/{sha}"
    assert row["manifest"] == json.loads((bundle_dir / "manifest.json").read_text())
    assert row["uploaded_by"].startswith("test-admin-")  # who asked is recorded
    status, headers, body = _get(row["url"], auth)
    assert status == 200 and body == data and headers["Accept-Ranges"] == "bytes"
    # a device has no token: the deploy command's URL carries a download capability for this bundle only
    device_url = hub.service.ctx.bundles.download_url(sha)
    status, headers, body = _get(device_url, {"Range": "bytes=100-1123"})
    assert status == 206 and body == data[100:1124]
    assert headers["Content-Range"] == f"bytes 100-1123/{len(data)}"
    status, _, body = _get(device_url, {"Range": f"bytes={len(data) - 10}-"})  # resume the tail
    assert status == 206 and body == data[-10:]
    assert _get(device_url, {"Range": f"bytes={len(data) + 5}-"})[0] == 416
    assert _get(row["url"])[0] == 401  # neither token nor capability
    assert _get(row["url"] + "?dl=" + "0" * 32)[0] == 401
    capability = device_url.split("?dl=")[1]
    assert _get(f"{hub.url}/v1/bundles/{'0' * 64}?dl={capability}")[0] == 401  # not this bundle's
    assert _get(f"{hub.url}/v1/bundles/{'0' * 64}", auth)[0] == 404
    assert _get(f"{hub.url}/v1/bundles/not-a-sha", auth)[0] == 404
    bad = urllib.request.Request(
        hub.url + "/v1/bundles", data=b"not a tar at all", method="POST", headers=auth
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(bad, timeout=5)
    assert exc.value.code == 400 and "tar" in json.loads(exc.value.read())["error"]["message"]


def test_a_failing_canary_stops_the_rollout(
    broker, start_hub, tmp_path: Path, bundle_dir: Path, capsys
) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    key = hub.service.keys.current().public_hex
    # ten devices, 10% canary: the first by id (d-00) goes first, and fails its smoke test
    devs = _online_fleet(hub, broker, key, [f"d-{i:02d}" for i in range(10)], "north", failing="d-00")
    try:
        code, dep = _run_deploy(hub.url, bundle_dir, "fleet=north", "10%", 15, capsys)
        assert code == 1
        assert dep["status"] == "canary_failed"
        by_device = {d["device"]: d for d in dep["devices"]}
        assert by_device["d-00"]["phase"] == "canary" and by_device["d-00"]["status"] == "failed"
        assert "smoke test failed" in by_device["d-00"]["error"]
        assert all(by_device[f"d-{i:02d}"]["status"] == "skipped" for i in range(1, 10))
        assert dep["summary"] == {"failed": 1, "skipped": 9}
        # the canary got the command and downloaded the bundle; nobody else got anything
        assert [c.body["name"] for c in devs[0].commands] == ["deploy"]
        assert all(d.commands == [] for d in devs[1:])
        assert hub.count("SELECT COUNT(*) AS n FROM commands WHERE deployment_id = ?", (dep["id"],)) == 1
    finally:
        for d in devs:
            d.stop()


def test_a_good_canary_lets_the_rest_follow(
    broker, start_hub, tmp_path: Path, bundle_dir: Path, capsys
) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    key = hub.service.keys.current().public_hex
    devs = _online_fleet(hub, broker, key, [f"e-{i}" for i in range(7)], "south", failing="e-5")
    try:
        devs[6].kill_socket()  # offline before the rollout: recorded as skipped, never sent
        wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM devices WHERE online = 1") == 6)
        code, dep = _run_deploy(hub.url, bundle_dir, "fleet=south", "20%", 15, capsys)
        assert code == 1  # e-5 failed in the second stage
        assert dep["status"] == "failed"
        phases = {d["device"]: (d["phase"], d["status"]) for d in dep["devices"]}
        assert phases == {
            "e-0": ("canary", "ok"),
            "e-1": ("canary", "ok"),  # ceil(6 * 20%) = 2 canaries
            "e-2": ("rollout", "ok"),
            "e-3": ("rollout", "ok"),
            "e-4": ("rollout", "ok"),
            "e-5": ("rollout", "failed"),
            "e-6": ("-", "skipped"),
        }
        args = devs[0].commands[0].body["args"]
        assert set(args) == {"bundle_url", "sha256", "size", "manifest"}
        assert args["manifest"] == json.loads((bundle_dir / "manifest.json").read_text())
        assert devs[0].results[0]["result"]["installed"] == "mlp-a"
        assert devs[6].commands == []
        assert main(["--hub", hub.url, "deployments"]) == 0
        listing = capsys.readouterr().out
        assert dep["id"] in listing and "failed" in listing
        assert main(["--hub", hub.url, "deployments", dep["id"]]) == 0
        assert "e-5" in capsys.readouterr().out
    finally:
        for d in devs:
            d.stop()


def _unsigned_copy(bundle_dir: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(bundle_dir, dest)
    doc = json.loads((dest / "manifest.json").read_text())
    doc.pop("signature")
    (dest / "manifest.json").write_text(json.dumps(doc))
    return dest


def test_an_unsigned_bundle_is_signed_with_the_hub_key(
    broker, start_hub, tmp_path: Path, bundle_dir: Path
) -> None:
    import io
    import tarfile

    from models.manifest import parse_manifest_json

    hub = start_hub(hub_settings(tmp_path, broker))
    key = hub.service.keys.current()
    unsigned = _unsigned_copy(bundle_dir, tmp_path / "unsigned")
    data = make_bundle_tar(unsigned)
    auth = {"Authorization": f"Bearer {hub.token}"}
    # asking the hub to sign takes an admin: no token is 401, an operator's is 403, and nothing is stored
    tar = "application/x-tar"
    assert hub.http("POST", "/v1/bundles", data=data, token="", content_type=tar)[0] == 401
    operator = hub.make_token("ops", "operator")
    status, body = hub.http("POST", "/v1/bundles", data=data, token=operator, content_type=tar)
    assert status == 403 and "admin" in body["error"]["message"]
    assert hub.count("SELECT COUNT(*) AS n FROM bundles") == 0
    req = urllib.request.Request(hub.url + "/v1/bundles", data=data, method="POST", headers=auth)
    with urllib.request.urlopen(req, timeout=10) as resp:
        row = json.loads(resp.read())
    assert row["sha256"] != hashlib.sha256(data).hexdigest()  # rewritten with the signed manifest
    assert row["manifest"]["signature"]["key_id"] == key.key_id
    status, _, served = _get(row["url"], auth)
    assert (
        status == 200 and hashlib.sha256(served).hexdigest() == row["sha256"] and len(served) == row["size"]
    )
    with tarfile.open(fileobj=io.BytesIO(served)) as tar:
        inside = tar.extractfile("manifest.json").read()  # type: ignore[union-attr]
        model = tar.extractfile("model.onnx").read()  # type: ignore[union-attr]
    signed = parse_manifest_json(inside)
    assert signed.verify([key.public_hex]) == key.key_id
    original = json.loads(parse_manifest_json((unsigned / "manifest.json").read_bytes()).signed_bytes)
    # the body is untouched but for who asked, inside the signature
    admin = row["uploaded_by"]
    assert json.loads(signed.signed_bytes) == {**original, "extra": {"signed_for": admin}}
    assert signed.manifest.extra["signed_for"] == admin
    assert model == (unsigned / "model.onnx").read_bytes()


def test_the_device_side_deployer_installs_what_the_hub_serves(
    broker, start_hub, tmp_path: Path, bundle_dir: Path, capsys
) -> None:
    """The wire contract, end to end: the real sync.deploy.DeviceDeployer (download with Range, signature,
    manifest match, install, smoke test on onnxruntime) behind a simulated device's MQTT connection."""
    import asyncio

    import agent.syncd.deploy as deploy_mod
    from models.store import ModelStore

    hub = start_hub(hub_settings(tmp_path, broker))
    key = hub.service.keys.current().public_hex
    store = ModelStore(tmp_path / "device-models")
    deployer = deploy_mod.DeviceDeployer(
        data_dir=tmp_path / "device-data", model_store=store, trusted_keys=lambda: [key]
    )

    def real_deploy(args: dict) -> tuple[bool, object, str | None]:
        return True, asyncio.run(deployer.deploy(args)), None

    dev = SimDevice("real-1", broker.port, trusted_keys=[key], handlers={"deploy": real_deploy}).start()
    try:
        wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM devices WHERE online = 1") == 1)
        unsigned = _unsigned_copy(bundle_dir, tmp_path / "unsigned")
        code, dep = _run_deploy(hub.url, unsigned, "device=real-1", "0", 30, capsys)
        assert code == 0, dep
        assert dep["status"] == "succeeded" and dep["summary"] == {"ok": 1}
        result = dev.results[0]["result"]
        assert (result["name"], result["version"]) == ("mlp-a", "2.0.0")
        assert store.active_version("mlp-a") == "2.0.0"
    finally:
        dev.stop()


def test_config_bundles_deploy_in_stages_to_real_device_commands(
    broker, start_hub, tmp_path: Path, capsys
) -> None:
    """A config bundle (manifest kind "config") goes through the same upload, hub signing and canary
    staging; each device runs the real built-in ``deploy`` command, which dispatches on the kind."""
    import asyncio
    import time

    from agent.config import load_settings
    from agent.syncd.commands import CommandDeps, builtin_registry
    from agent.syncd.deploy import DeviceDeployer
    from agent.syncd.overrides import apply_overrides, override_path
    from models.store import ModelStore
    from sync.commands import CommandRequest

    hub = start_hub(hub_settings(tmp_path, broker))
    key = hub.service.keys.current().public_hex
    boxes, devs = [], []
    for i in range(2):
        settings = load_settings(env={"EDGE_AGENT_DATA_DIR": str(tmp_path / f"box-{i}")})
        settings.data_path.mkdir(parents=True)
        deployer = DeviceDeployer(
            data_dir=settings.data_path,
            model_store=ModelStore(settings.data_path / "models"),
            trusted_keys=lambda: [key],
        )
        registry = builtin_registry(CommandDeps(settings=settings, deployer=deployer))

        def real_deploy(args: dict, registry=registry) -> tuple[bool, object, str | None]:
            handler = registry.get("deploy")
            assert handler is not None
            try:
                return (
                    True,
                    asyncio.run(handler(CommandRequest("c", "deploy", args, "d", "k", time.time()))),
                    None,
                )
            except Exception as exc:  # the agent's command runtime reports the code and message likewise
                return False, None, f"{getattr(exc, 'code', 'error')}: {exc}"

        boxes.append(settings)
        devs.append(
            SimDevice(
                f"c-{i}",
                broker.port,
                trusted_keys=[key],
                labels={"fleet": "cfg"},
                handlers={"deploy": real_deploy},
            ).start()
        )

    def deploy(settings_tree: dict, name: str) -> tuple[int, dict]:
        directory = tmp_path / name
        directory.mkdir()
        body = {"kind": "config", "name": "fleet-cfg", "version": name, "settings": settings_tree}
        (directory / "manifest.json").write_text(json.dumps({"manifest": body}))  # unsigned: the hub signs
        return _run_deploy(hub.url, directory, "fleet=cfg", "50%", 30, capsys)

    try:
        wait_for(lambda: hub.count("SELECT COUNT(*) AS n FROM devices WHERE online = 1") == 2)
        code, dep = deploy({"sync": {"inflight": 0}}, "bad")  # fails validation on the canary
        assert code == 1 and dep["status"] == "canary_failed", dep
        by_device = {d["device"]: d for d in dep["devices"]}
        assert by_device["c-0"]["status"] == "failed" and "config_invalid" in by_device["c-0"]["error"]
        assert by_device["c-1"]["status"] == "skipped" and devs[1].commands == []
        assert not any(override_path(s).exists() for s in boxes)

        code, dep = deploy({"sync": {"inflight": 7}}, "good")
        assert code == 0 and dep["status"] == "succeeded" and dep["summary"] == {"ok": 2}, dep
        assert (dep["model"], dep["version"]) == ("fleet-cfg", "good")
        for dev, settings in zip(devs, boxes, strict=True):
            result = dev.results[-1]["result"]
            assert result["kind"] == "config" and result["key_id"] == hub.service.keys.current().key_id
            assert json.loads(override_path(settings).read_text()) == {"sync": {"inflight": 7}}
            assert apply_overrides(settings).sync.inflight == 7
            assert result["signed_for"] == hub.service.ctx.bundles.get(dep["bundle_sha256"])["uploaded_by"]

        # signed by the hub for an admin, and still refused: security settings are not the fleet's to change
        code, dep = deploy({"security": {"api_auth": "off"}, "sync": {"inflight": 3}}, "evil")
        assert code == 1 and dep["status"] == "canary_failed", dep
        canary = {d["device"]: d for d in dep["devices"]}["c-0"]
        assert "setting_protected" in canary["error"] and "security.api_auth" in canary["error"]
        assert all(json.loads(override_path(s).read_text()) == {"sync": {"inflight": 7}} for s in boxes)
    finally:
        for d in devs:
            d.stop()
