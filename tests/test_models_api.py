"""/v1/models routes on a real aiohttp server, a real store and real onnxruntime sessions."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from agent.api.app import create_app
from agent.daemon import build_context
from models.manager import ManagerSettings, ModelManager
from models.store import ModelStore
from models.tensors import encode_npy, encode_tensor
from tests.models_fixtures import MLP_A, MLP_B, build_bundle, real_runtimes, signing_key
from tests.modelzoo import mlp_input, mlp_reference


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("api")
    return {"a": build_bundle(base / "a", MLP_A), "b": build_bundle(base / "b", MLP_B)}


@pytest.fixture
async def client(aiohttp_client, settings, tmp_path: Path, bundles: dict[str, Path]):
    store = ModelStore(tmp_path / "models")
    for b in bundles.values():
        store.install(b, [signing_key().public_hex])
    manager = ModelManager(
        store,
        ManagerSettings(memory_budget_bytes=1 << 30, idle_timeout_s=None, threads=1),
        runtimes=real_runtimes(),
    )
    await manager.start()
    ctx = build_context(settings)
    ctx.models = manager  # type: ignore[attr-defined]  # the lead adds the field to AgentContext
    app = create_app(ctx, modules=("agent.api.models_routes",))
    try:
        yield await aiohttp_client(app)
    finally:
        await manager.close()
        ctx.store.close()


async def test_list_load_infer_unload(client) -> None:
    resp = await client.get("/v1/models")
    assert resp.status == 200
    body = await resp.json()
    assert [m["name"] for m in body["models"]] == ["mlp-a", "mlp-b"]
    assert not body["models"][0]["loaded"] and body["models"][0]["would_run_on"] == "onnxruntime/fp32@CPU"

    resp = await client.post("/v1/models/mlp-a/load", json={"pin": True})
    st = await resp.json()
    assert resp.status == 200 and st["loaded"] and st["pinned"] and st["device"] == "CPU"

    x = mlp_input(MLP_A, batch=3)
    resp = await client.post(
        "/v1/models/mlp-a/infer", json={"inputs": {"x": encode_tensor(x)}, "priority": "realtime"}
    )
    out = await resp.json()
    assert resp.status == 200 and out["version"] == "1.0.0" and out["latency_ms"] > 0
    y = np.asarray(out["outputs"]["y"]["data"], np.float32).reshape(out["outputs"]["y"]["shape"])
    np.testing.assert_allclose(y, mlp_reference(MLP_A, x), atol=1e-4)

    resp = await client.post("/v1/models/mlp-a/unload", json={})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "conflict"
    resp = await client.post("/v1/models/mlp-a/unload", json={"force": True})
    assert (await resp.json()) == {"name": "mlp-a", "unloaded": True}

    resp = await client.get("/v1/models/mlp-a")
    st = await resp.json()
    assert not st["loaded"] and st["latency"]["count"] == 1


async def test_binary_npy_in_and_out(client) -> None:
    x = mlp_input(MLP_B, batch=2)
    resp = await client.post(
        "/v1/models/mlp-b/infer?priority=interactive",
        data=encode_npy(x),
        headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"},
    )
    assert resp.status == 200 and resp.content_type == "application/x-npy"
    assert resp.headers["X-Model-Version"] == "1.0.0"
    y = np.load(io.BytesIO(await resp.read()), allow_pickle=False)
    np.testing.assert_allclose(y, mlp_reference(MLP_B, x), atol=1e-4)
    resp = await client.post(
        "/v1/models/mlp-b/infer",
        json={"inputs": {"x": encode_tensor(x)}},
        headers={"Accept": "application/x-npz"},
    )
    z = np.load(io.BytesIO(await resp.read()))
    np.testing.assert_allclose(z["y"], mlp_reference(MLP_B, x), atol=1e-4)


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        (
            "/v1/models/nope/infer",
            {"json": {"inputs": {"x": encode_tensor(np.zeros((1, 4), np.float32))}}},
            404,
            "not_found",
        ),
        (
            "/v1/models/mlp-a/infer",
            {"json": {"inputs": {"x": {"dtype": "float32", "shape": [1, 4], "data": [1]}}}},
            400,
            "bad_request",
        ),
        (
            "/v1/models/mlp-a/infer",
            {"json": {"inputs": {"x": encode_tensor(np.zeros((1, 5), np.float32))}}},
            400,
            "bad_input_shape",
        ),
        (
            "/v1/models/mlp-a/infer",
            {"json": {"inputs": {"x": encode_tensor(np.zeros((1, 4), np.float64))}}},
            400,
            "bad_input_dtype",
        ),
        ("/v1/models/mlp-a/infer", {"json": {"inputs": {}, "colour": 1}}, 400, "bad_request"),
        (
            "/v1/models/mlp-a/infer",
            {"json": {"inputs": {"x": encode_tensor(np.zeros((1, 4), np.float32))}, "priority": "urgent"}},
            400,
            "bad_request",
        ),
        (
            "/v1/models/mlp-a/infer",
            {"data": b"{nope", "headers": {"Content-Type": "application/json"}},
            400,
            "bad_request",
        ),
        (
            "/v1/models/mlp-a/infer",
            {"data": b"not npy", "headers": {"Content-Type": "application/x-npy"}},
            400,
            "bad_request",
        ),
        (
            "/v1/models/mlp-a/infer",
            {"data": b"x", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ("/v1/models/mlp-a/load", {"json": {"version": 3}}, 400, "bad_request"),
        ("/v1/models/mlp-a/load", {"json": {"version": "9.9"}}, 404, "not_found"),
    ],
)
async def test_bad_requests(client, path: str, kwargs: dict, status: int, code: str) -> None:
    resp = await client.post(path, **kwargs)
    body = await resp.json()
    assert resp.status == status, body
    assert body["error"]["code"] == code and body["error"]["message"]
