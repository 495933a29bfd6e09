"""Deployments, device side: a real HTTP server with Range, real signed bundles, real onnxruntime smoke tests."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from agent.errors import BadRequestError
from agent.syncd.deploy import DeployError, DeviceDeployer
from models.bundle import make_manifest, write_signed
from models.manifest import SmokeTest, Variant
from models.signing import generate_keypair
from models.store import ModelStore
from models.tensors import encode_tensor
from tests.models_fixtures import MLP_A, build_bundle, specs_for
from tests.modelzoo import mlp_input, mlp_reference

HUB = generate_keypair()
OTHER = generate_keypair()


def tar_of(directory: Path, *, gz: bool = False, prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=prefix + path.relative_to(directory).as_posix())
    return buf.getvalue()


class Hub:
    """Serves bundles over HTTP like the hub does (aiohttp FileResponse: Range support)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str | None] = []  # the Range header of each request
        self.cut_first = 0  # serve only half the body to this many requests, then drop the connection

    async def bundle(self, request: web.Request) -> web.StreamResponse:
        path = self.root / request.match_info["name"]
        self.requests.append(request.headers.get("Range"))
        if not path.exists():
            raise web.HTTPNotFound()
        if self.cut_first > 0:
            self.cut_first -= 1
            data = path.read_bytes()
            start = int(request.headers["Range"][6:].split("-")[0]) if "Range" in request.headers else 0
            rest = data[start:]
            headers = {"Content-Length": str(len(rest))}
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            resp = web.StreamResponse(status=206 if start else 200, headers=headers)
            await resp.prepare(request)
            half = rest[: len(rest) // 2]
            for i in range(0, len(half), 1024):  # a slow link that carries some of it, then drops
                await resp.write(half[i : i + 1024])
                await asyncio.sleep(0.02)
            request.transport.close()
            return resp
        return web.FileResponse(path)

    async def __aenter__(self) -> Hub:
        app = web.Application()
        app.router.add_get("/v1/bundles/{name}", self.bundle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    def publish(self, name: str, data: bytes) -> dict:
        (self.root / name).write_bytes(data)
        return {
            "bundle_url": f"http://127.0.0.1:{self.port}/v1/bundles/{name}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }


def args_for(hub: Hub, bundle_dir: Path, name: str, **tar_kw) -> dict:
    data = tar_of(bundle_dir, **tar_kw)
    return {**hub.publish(name, data), "manifest": json.loads((bundle_dir / "manifest.json").read_bytes())}


@pytest.fixture
def deployer(tmp_path: Path) -> DeviceDeployer:
    data = tmp_path / "data"
    data.mkdir()
    return DeviceDeployer(
        data_dir=data,
        model_store=ModelStore(data / "models"),
        trusted_keys=lambda: [HUB.public_hex],
        retry_delay_s=0.01,
    )


async def test_deploy_fetches_verifies_installs_smoke_tests_and_activates(deployer, tmp_path: Path) -> None:
    async with Hub(tmp_path / "hub") as hub:
        (tmp_path / "hub").mkdir(exist_ok=True)
        v1 = build_bundle(tmp_path / "v1", version="1.0.0", key=HUB)
        result = await deployer.deploy(args_for(hub, v1, "v1.tar"))
        assert result["activated"] and result["name"] == "mlp-a" and result["version"] == "1.0.0"
        assert result["previous"] is None and result["smoke"]["passed"]
        assert deployer.store.active_version("mlp-a") == "1.0.0"
        assert deployer.store.verify("mlp-a", trusted_keys=[HUB.public_hex]).ok

        v2 = build_bundle(tmp_path / "v2", version="1.1.0", key=HUB)
        result = await deployer.deploy(args_for(hub, v2, "v2.tgz", gz=True, prefix="bundle/"))
        assert result["version"] == "1.1.0" and result["previous"] == "1.0.0"
        assert deployer.store.active_version("mlp-a") == "1.1.0"
        assert list(deployer.downloads.iterdir()) == []  # the archive is not kept after install
        assert not (deployer.data_dir / "deploy").exists() or not any(
            (deployer.data_dir / "deploy").iterdir()
        )

        rolled = await deployer.rollback("mlp-a")
        assert rolled["version"] == "1.0.0" and deployer.store.active_version("mlp-a") == "1.0.0"


async def test_download_resumes_with_range_after_a_dropped_link_and_a_restart(
    deployer, tmp_path: Path
) -> None:
    (tmp_path / "hub").mkdir()
    async with Hub(tmp_path / "hub") as hub:
        bundle = build_bundle(tmp_path / "b", version="2.0.0", key=HUB)
        args = args_for(hub, bundle, "b.tar")
        # a previous attempt (before a restart) left the first 1000 bytes
        deployer.downloads.mkdir(parents=True)
        data = (tmp_path / "hub" / "b.tar").read_bytes()
        (deployer.downloads / f"{args['sha256']}.part").write_bytes(data[:1000])
        hub.cut_first = 1
        result = await deployer.deploy(args)
    assert result["activated"]
    assert result["download"]["resumed_from"] == 1000 and result["download"]["attempts"] == 2
    assert hub.requests[0] == "bytes=1000-"
    assert hub.requests[1].startswith("bytes=") and int(hub.requests[1][6:-1]) > 1000  # resumed past the cut
    assert result["download"]["bytes"] == len(data) - 1000


async def test_corrupt_download_is_refused_and_nothing_installed(deployer, tmp_path: Path) -> None:
    (tmp_path / "hub").mkdir()
    async with Hub(tmp_path / "hub") as hub:
        bundle = build_bundle(tmp_path / "b", version="1.0.0", key=HUB)
        args = args_for(hub, bundle, "b.tar")
        args["sha256"] = hashlib.sha256(b"something else").hexdigest()
        with pytest.raises(DeployError) as err:
            await deployer.deploy(args)
    assert err.value.code == "hash_mismatch"
    assert deployer.store.names() == []
    assert list(deployer.downloads.iterdir()) == []


async def test_untrusted_or_unsigned_manifest_is_refused_before_downloading(deployer, tmp_path: Path) -> None:
    (tmp_path / "hub").mkdir()
    async with Hub(tmp_path / "hub") as hub:
        foreign = build_bundle(tmp_path / "f", version="1.0.0", key=OTHER)
        with pytest.raises(BadRequestError) as err:
            await deployer.deploy(args_for(hub, foreign, "f.tar"))
        assert err.value.code == "signature_untrusted"
        args = args_for(hub, build_bundle(tmp_path / "g", version="1.0.0", key=HUB), "g.tar")
        with pytest.raises(BadRequestError) as err2:
            await deployer.deploy({**args, "manifest": args["manifest"]["manifest"]})  # signature stripped
        assert err2.value.code == "signature_missing"
        # a manifest that does not match the archive: the hub served something else
        other = args_for(hub, build_bundle(tmp_path / "h", version="3.0.0", key=HUB), "h.tar")
        with pytest.raises(DeployError) as err3:
            await deployer.deploy({**other, "manifest": args["manifest"]})
        assert err3.value.code == "manifest_mismatch"
    assert hub.requests == [None]  # only the mismatched one was downloaded
    assert deployer.store.names() == []


def bad_smoke_bundle(directory: Path, version: str) -> Path:
    """A real model whose manifest promises outputs it does not produce: fails its smoke test."""
    build_bundle(directory, version=version, key=HUB)
    x = mlp_input(MLP_A, batch=MLP_A.batch, seed=5)
    y = mlp_reference(MLP_A, x) + 1.0
    inputs, outputs = specs_for(MLP_A)
    manifest = make_manifest(
        directory,
        name="mlp-a",
        version=version,
        task="regression",
        variants=[Variant("onnxruntime", "fp32", ("model.onnx",))],
        memory_bytes=1 << 20,
        inputs=inputs,
        outputs=outputs,
        smoke_test=SmokeTest(
            inputs={"x": encode_tensor(x)},
            outputs={"y": encode_tensor(y.astype(np.float32))},
            atol=1e-4,
            rtol=1e-3,
        ),
    )
    write_signed(directory, manifest, HUB.private_hex)
    return directory


async def test_failed_smoke_test_is_never_activated(deployer, tmp_path: Path) -> None:
    (tmp_path / "hub").mkdir()
    async with Hub(tmp_path / "hub") as hub:
        await deployer.deploy(
            args_for(hub, build_bundle(tmp_path / "good", version="1.0.0", key=HUB), "a.tar")
        )
        with pytest.raises(DeployError) as err:
            await deployer.deploy(args_for(hub, bad_smoke_bundle(tmp_path / "bad", "1.1.0"), "b.tar"))
    assert err.value.code == "smoke_test_failed" and "1.0.0 stays active" in str(err.value)
    assert deployer.store.active_version("mlp-a") == "1.0.0"
    assert deployer.store.versions("mlp-a") == ["1.0.0"]  # the failed version is not left behind


async def test_live_manager_reloads_the_new_version(tmp_path: Path) -> None:
    from models.manager import ManagerSettings, ModelManager

    data = tmp_path / "data"
    store = ModelStore(data / "models")
    store.install(build_bundle(tmp_path / "v1", version="1.0.0", key=HUB), [HUB.public_hex])
    (tmp_path / "hub").mkdir()
    async with ModelManager(store, ManagerSettings(idle_timeout_s=None, measure_rss=False)) as manager:
        await manager.load("mlp-a")
        deployer = DeviceDeployer(data_dir=data, model_store=store, trusted_keys=lambda: [HUB.public_hex],
                                  manager=manager)  # fmt: skip
        async with Hub(tmp_path / "hub") as hub:
            result = await deployer.deploy(
                args_for(hub, build_bundle(tmp_path / "v2", version="2.0.0", key=HUB), "b")
            )
        assert result["reloaded"] is True
        status = manager.model_status("mlp-a")
        assert status["loaded"] and status["version"] == "2.0.0"
        x = mlp_input(MLP_A, batch=2, seed=1)
        out = await manager.infer("mlp-a", {"x": x})
        np.testing.assert_allclose(out["y"], mlp_reference(MLP_A, x), rtol=1e-4, atol=1e-4)


def test_bad_arguments_are_refused(deployer) -> None:
    for args in ({}, {"bundle_url": "ftp://x", "sha256": "0" * 64, "size": 1, "manifest": {}}):
        with pytest.raises(BadRequestError):
            asyncio.run(deployer.deploy(args))
