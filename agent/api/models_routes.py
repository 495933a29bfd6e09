"""``/v1/models``: installed and loaded models, load/unload, and inference.

Inference takes JSON tensors (``{"inputs": {"x": {"dtype", "shape", "data"}},
"priority": "interactive"}``) or, for single-input models, a raw ``.npy`` body
(``Content-Type: application/x-npy``, priority in ``?priority=``). The answer
is JSON unless ``Accept`` asks for ``application/x-npz`` (every output) or
``application/x-npy`` (single-output models): binary tensors never pass
through JSON when the client does not want them to.

The manager lives on the daemon context as ``ctx.models`` (None when the
models service is off); nothing here imports numpy or an engine at import.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.api.app import CTX
from agent.api.routes import Route
from agent.core.jsonbody import is_json_type, read_json
from agent.errors import BadRequestError, UnavailableError
from models.manifest import NAME_RE, VERSION_RE
from models.tensors import DTYPES

if TYPE_CHECKING:
    from models.manager import ModelManager

NPY = "application/x-npy"
NPZ = "application/x-npz"
_INFER_KEYS = {"inputs", "priority"}


def _manager(request: web.Request) -> ModelManager:
    manager = getattr(request.app[CTX], "models", None)
    if manager is None:
        raise UnavailableError("the model manager is not running on this daemon", code="models_disabled")
    return manager


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME_RE.match(name):
        raise BadRequestError(
            f"{name[:70]!r} is not a model name: lower-case letters, digits, '.', '_' and '-', at most 64"
        )
    return name


async def _json_body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    """An optional JSON object body with known keys only (an empty body is ``{}``)."""
    body: dict[str, Any] = await read_json(request, optional=True, allowed=allowed)
    return body


def _created(manager: ModelManager, name: str, default: int) -> int:
    """When the active version was installed (its directory's mtime): OpenAI's ``created``."""
    try:
        return int(manager.store.get(name).path.stat().st_mtime)
    except Exception:  # a packaged or half-removed model still lists
        return default


async def list_models(request: web.Request) -> web.Response:
    """The OpenAI list shape (``object: list``, ``data: [{id, object, owned_by, created, ...}]``).

    Each entry also carries the manager's own fields (state, device, latency...);
    the manager's totals sit beside ``data``, and ``models`` (the same entries
    under the old key) stays for one release for clients of the earlier shape.
    """
    manager = _manager(request)
    status = await manager.status_async()
    default = int(request.app[CTX].started_at)
    data = [
        {
            "id": m["name"],
            "object": "model",
            "owned_by": "edge-agent",
            "created": _created(manager, m["name"], default),
            **m,
        }
        for m in status["models"]
    ]
    return web.json_response({"object": "list", "data": data, **status, "models": data})


async def get_model(request: web.Request) -> web.Response:
    manager = _manager(request)
    await manager.status_async()
    return web.json_response(manager.model_status(_name(request)))


async def load_model(request: web.Request) -> web.Response:
    body = await _json_body(request, {"version", "pin"})  # a bad body is a 4xx even with models off
    manager = _manager(request)
    name = _name(request)
    version = body.get("version")
    if version is not None and not isinstance(version, str):
        raise BadRequestError("version must be a string")
    status = await manager.load(name, version)
    pin = body.get("pin", False)
    if not isinstance(pin, bool):
        raise BadRequestError("pin must be true or false")
    if pin:
        await manager.pin(name)
        status = manager.model_status(name)
    return web.json_response(status)


async def unload_model(request: web.Request) -> web.Response:
    body = await _json_body(request, {"force"})
    manager = _manager(request)
    name = _name(request)
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise BadRequestError("force must be true or false")
    unloaded = await manager.unload(name, force=force)
    return web.json_response({"name": name, "unloaded": unloaded})


async def infer(request: web.Request) -> web.StreamResponse:
    from models.tensors import decode_npy, decode_tensors, encode_npy, encode_npz, encode_tensors

    name = _name(request)
    priority: Any = request.query.get("priority", "batch")
    ctype = request.content_type
    npy_body: bytes | None = None
    feed: dict[str, Any] = {}
    if ctype in (NPY, "application/octet-stream"):
        npy_body = await request.read()
    elif is_json_type(ctype):
        body = await _json_body(request, _INFER_KEYS)
        if "inputs" not in body:
            raise BadRequestError('send {"inputs": {"<name>": {"dtype", "shape", "data"}}}')
        priority = body.get("priority", priority)
    else:
        raise web.HTTPUnsupportedMediaType(text=f"send application/json or {NPY}, not {ctype or 'no type'}")
    manager = _manager(request)
    accept = request.headers.get("Accept", "")
    async with manager.use(name, priority) as lease:  # an unknown model is a 404 before its inputs are read
        if npy_body is None:
            feed = decode_tensors(body["inputs"])
        else:
            if len(lease.session.inputs) != 1:
                names = [s.name for s in lease.session.inputs]
                raise BadRequestError(f"model {name} takes {len(names)} inputs {names}; send JSON tensors")
            feed = {lease.session.inputs[0].name: decode_npy(npy_body)}
        t0 = time.perf_counter()
        outputs = await lease.infer(feed)
        latency_ms = round((time.perf_counter() - t0) * 1000, 3)
        version = lease.version
    headers = {"X-Model-Version": version, "X-Latency-Ms": str(latency_ms)}
    if NPZ in accept:
        return web.Response(body=encode_npz(outputs), content_type=NPZ, headers=headers)
    if NPY in accept:
        if len(outputs) != 1:
            raise BadRequestError(f"model {name} has {len(outputs)} outputs; ask for {NPZ} or JSON")
        return web.Response(body=encode_npy(next(iter(outputs.values()))), content_type=NPY, headers=headers)
    return web.json_response(
        {"model": name, "version": version, "latency_ms": latency_ms, "outputs": encode_tensors(outputs)}
    )


_TENSOR = {
    "type": "object",
    "required": ["dtype", "shape", "data"],
    "properties": {
        "dtype": {"type": "string", "enum": list(DTYPES)},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "data": {"type": "array"},
    },
}
_INFER_BODY = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "inputs": {"type": "object", "additionalProperties": _TENSOR, "minProperties": 1},
        "priority": {"type": "string", "enum": ["realtime", "interactive", "batch"]},
    },
    "additionalProperties": False,
}
_LOAD_BODY = {
    "type": "object",
    "properties": {"version": {"type": "string", "pattern": VERSION_RE.pattern}, "pin": {"type": "boolean"}},
    "additionalProperties": False,
}
_UNLOAD_BODY = {"type": "object", "properties": {"force": {"type": "boolean"}}, "additionalProperties": False}

_NAME = {"name": {"type": "string", "pattern": NAME_RE.pattern}}

ROUTES = [
    Route(
        "GET",
        "/v1/models",
        list_models,
        "Installed and loaded models, memory, devices, latency.",
        tag="models",
    ),
    Route(
        "GET",
        "/v1/models/{name}",
        get_model,
        "One model's status.",
        tag="models",
        path_params=_NAME,
        extra_responses={404: "unknown"},
    ),
    Route(
        "POST",
        "/v1/models/{name}/load",
        load_model,
        "Load a model now (optionally a version, optionally pinned).",
        tag="models",
        path_params=_NAME,
        body=_LOAD_BODY,
        body_required=False,
        role="operator",
        extra_responses={404: "not installed", 503: "no engine or device", 507: "memory budget"},
    ),
    Route(
        "POST",
        "/v1/models/{name}/unload",
        unload_model,
        "Unload a model (refused while in use; pinned only with force).",
        tag="models",
        path_params=_NAME,
        body=_UNLOAD_BODY,
        body_required=False,
        role="operator",
        extra_responses={409: "in use or pinned"},
    ),
    Route(
        "POST",
        "/v1/models/{name}/infer",
        infer,
        "Run the model on JSON tensors, or on a .npy body for single-input models.",
        tag="models",
        path_params=_NAME,
        body=_INFER_BODY,
        role="operator",
        audit=False,  # a data path: auditing every inference would fsync a row per request
        extra_responses={404: "not installed", 415: "unsupported body type", 507: "queue or memory full"},
    ),
]
