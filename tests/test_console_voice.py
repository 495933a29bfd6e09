"""The voice page with a real voice daemon: push-to-talk from the browser's microphone.

Chromium's fake capture device plays a WAV (synthetic speech, tests/speech.py)
as the microphone (``--use-file-for-fake-audio-capture``); holding the page's
push-to-talk button streams it to ``/v1/voice/ws``, and the page shows the
level meter move, the transcript, the answer and each stage's latency.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import speech
from tests.conftest import REPO, DaemonProcess, free_port
from tests.console_browser import launch, login, playwright_fixture, shoot  # noqa: F401
from tests.voice_fixtures import require_models

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def voiced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, str]]:
    require_models()
    tmp = tmp_path_factory.mktemp("console-voice")
    port = free_port()
    env = {
        **os.environ,
        "EDGE_AGENT_DATA_DIR": str(tmp / "data"),
        "EDGE_AGENT_API__PORT": str(port),
        "EDGE_AGENT_LOG__FORMAT": "json",
        "EDGE_AGENT_VOICE__ENABLED": "on",
        "EDGE_AGENT_SENSORS__ENABLED": "false",
        "EDGE_AGENT_SYNC__DISCOVERY": "false",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("NOTIFY_SOCKET", None)
    made = subprocess.run(
        [sys.executable, "-m", "agent.cli", "tokens", "create", "driver", "--role", "operator"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    log_path = tmp / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    daemon = DaemonProcess(proc, port, tmp / "data", log_path, env)
    try:
        daemon.wait_healthy(timeout=60)
        deadline = time.monotonic() + 180
        while daemon.json("/readyz")[0] != 200:  # the voice models load after the API answers
            assert proc.poll() is None and time.monotonic() < deadline, daemon.log()[-3000:]
            time.sleep(0.2)
        yield daemon, made.stdout.strip()
    finally:
        _stop(daemon)


def test_push_to_talk_streams_the_microphone_and_shows_the_turn(
    voiced: tuple[DaemonProcess, str], playwright_driver: Any, tmp_path: Path
) -> None:
    daemon, token = voiced
    said = speech.speak("Play the next song.")  # an intent: the answer does not wait for the LLM
    wav = speech.wav_file(speech.silence(300) + said + speech.silence(2500), tmp_path / "mic.wav")
    seconds = len(said) / 2 / speech.RATE
    browser = launch(
        playwright_driver,
        [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )
    try:
        context, page = login(browser, daemon.url, token)
        page.goto("/ui/voice")
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#vstatus").inner_text().strip()  # the assistant's status is shown
        button = page.get_by_role("button", name="Hold to talk")
        button.focus()
        page.keyboard.down("Space")
        page.locator("#ptt[aria-pressed='true']").wait_for(timeout=5_000)
        levels = set()
        deadline = time.monotonic() + seconds + 1.5
        while time.monotonic() < deadline:  # the level meter follows the voice.level events
            levels.add(page.locator("#level").get_attribute("aria-valuenow"))
            time.sleep(0.1)
        page.keyboard.up("Space")
        row = page.locator("#turns tbody tr").first
        row.locator("td.spans", has_text="speech_end_to_transcript").wait_for(timeout=90_000)
        transcript = row.locator("td.transcript").inner_text().lower()
        assert "next song" in transcript, transcript
        assert row.locator("td.answer").inner_text() not in ("", "…")
        assert page.locator("#vstate").inner_text() in ("idle", "speaking", "listening")
        assert len(levels) > 2, levels
        latency = page.locator("#latency")
        deadline = time.monotonic() + 20  # the report recorder writes turns in 2 s batches
        while latency.get_attribute("data-turns") in (None, "0"):
            assert time.monotonic() < deadline, "no latency histogram after the turn"
            time.sleep(0.2)
        assert "speech end → transcript" in latency.inner_text()
        shoot(page, "device-voice-turn")
        context.close()
    finally:
        browser.close()


def _stop(daemon: DaemonProcess) -> None:
    """SIGTERM, and time to stop on a loaded machine (the voice models take a while to let go); then kill."""
    try:
        daemon.stop(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()
        daemon.proc.wait(timeout=10)
