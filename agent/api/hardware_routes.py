"""``/v1/hardware``: the probed hardware profile, engines' devices included.

The probe asks the engines for their devices in a child process (so the
daemon does not carry onnxruntime and OpenVINO just to list devices) and
blocks for a moment: it runs in an executor once and is cached; ``?refresh=1``
probes again (a USB accelerator plugged in later).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from agent.api.app import CTX
from agent.api.routes import Route


async def hardware(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    cached: dict[str, Any] | None = ctx.hardware_profile
    if cached is None or request.query.get("refresh") in ("1", "true"):
        import hal

        loop = asyncio.get_running_loop()
        profile = await loop.run_in_executor(None, hal.probe)
        cached = profile.to_dict()
        ctx.hardware_profile = cached
        ctx._hardware = profile.summary()
    return web.json_response(cached)


ROUTES = [
    Route(
        "GET",
        "/v1/hardware",
        hardware,
        "Hardware profile: CPU, memory, thermal, accelerators, runtimes, audio, serial.",
        tag="hardware",
    ),
]
