"""The voice page with a real voice daemon: push-to-talk from the browser's microphone.

Chromium's fake capture device plays a WAV (synthetic speech, tests/speech.py)
as the microphone (``--use-file-for-fake-audio-capture``); holding the page's
push-to-talk button streams it to ``/v1/voice/ws``, and the page shows the
level meter move, the transcript, the answer and each stage's latency.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import speech
from tests.conftest import DaemonProcess
from tests.console_browser import launch, login, playwright_fixture, shoot  # noqa: F401
from tests.daemon_support import voice_daemon

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def voiced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, str]]:
    with voice_daemon(
        tmp_path_factory.mktemp("console-voice"),
        token_name="driver",
        extra_env={"EDGE_AGENT_SENSORS__ENABLED": "false"},
    ) as daemon:
        yield daemon, daemon.env["EDGE_AGENT_TOKEN"]


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
