"""A batch job waits while a real voice turn runs: the daemon speaks over its WebSocket, a report job
asked for meanwhile is held ("a voice turn is active"), and runs once the speech has ended."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import aiohttp
import pytest

from tests.voice_fixtures import require_models

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def _post(url: str) -> dict:
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


async def test_a_report_job_is_held_while_the_daemon_speaks(start_daemon) -> None:  # type: ignore[no-untyped-def]
    require_models("piper-joe-medium", "silero-vad")
    daemon = start_daemon({"EDGE_AGENT_VOICE__ENABLED": "auto", "EDGE_AGENT_SENSORS__ENABLED": "false"})
    await asyncio.to_thread(daemon.wait_healthy, 60)
    deadline = time.monotonic() + 150
    while (await asyncio.to_thread(daemon.json, "/readyz"))[0] != 200:
        assert time.monotonic() < deadline, daemon.log()[-3000:]
        await asyncio.sleep(0.5)
    base = f"http://127.0.0.1:{daemon.port}"

    async def runs() -> list[dict]:
        return (await asyncio.to_thread(daemon.json, "/v1/job-runs?job=report.daily"))[1]["runs"]

    async with aiohttp.ClientSession() as http, http.ws_connect(base + "/v1/voice/ws?mode=listen") as ws:
        await asyncio.wait_for(ws.receive(), 10)  # hello
        text = " ".join(["The line is running normally and every machine is within its limits."] * 2)
        await ws.send_str(json.dumps({"type": "say", "text": text}))
        while True:  # the daemon is speaking (paced in real time: many seconds of audio)
            msg = await asyncio.wait_for(ws.receive(), 30)
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "audio-start":
                break

        async def drain() -> None:  # a client reads what it is sent (the daemon's audio is paced)
            async for _ in ws:
                pass

        reader = asyncio.create_task(drain())
        run_id = (await asyncio.to_thread(_post, base + "/v1/jobs/report.daily/run"))["run_id"]
        await asyncio.sleep(1.0)
        (row,) = [r for r in await runs() if r["id"] == run_id]
        assert row["state"] == "held" and row["held"] == "a voice turn is active", row
        # the speech ends by itself (a client "stop" leaves the pipeline "speaking": see the report)
        deadline = time.monotonic() + 120
        while True:
            (row,) = [r for r in await runs() if r["id"] == run_id]
            if row["state"] not in ("held", "queued", "running"):
                break
            assert time.monotonic() < deadline, row
            await asyncio.sleep(0.5)
        reader.cancel()
    assert row["state"] == "ok", row
