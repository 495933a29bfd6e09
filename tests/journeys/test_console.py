"""The README's "Web console" commands, run as written, then the console they point at, in a browser.

A fresh daemon with its default configuration (one simulated press); the
README's sh block is run line by line in one bash, each line checked; then
Chromium opens the address `edge-agent console` printed, logs in with the
token the README made, and watches the simulated machine's chart move.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.console_browser import browser_fixture, login, playwright_fixture  # noqa: F401
from tests.journeys.test_readme import readme_commands, run_as_written

pytestmark = pytest.mark.timeout(180)

CHECKS = {
    ".venv/bin/edge-agent console": lambda r: (
        r.rc == 0 and re.match(r"console: http://127\.0\.0\.1:\d+/ \(answering\)", r.out) is not None
    ),
    "T=$(.venv/bin/edge-agent tokens create alice --role operator)": lambda r: r.rc == 0 and "# id" in r.err,
    ".venv/bin/edge-agent console --json": lambda r: r.rc == 0 and '"answering": true' in r.out,
}


def test_readme_web_console_runs_as_written(start_daemon, tmp_path: Path, browser: Any) -> None:  # type: ignore[no-untyped-def]
    lines, commands = readme_commands("### Web console", CHECKS)
    daemon = start_daemon()
    daemon.wait_healthy(timeout=60)
    ran = run_as_written(commands, tmp_path / "journey", cwd=REPO, env=daemon.env, timeout=300)
    failures = [
        f"{line!r}:\n{r}" for line, cmd, r in zip(lines, commands, ran, strict=True) if not CHECKS[cmd](r)
    ]
    assert not failures, "\n\n".join(failures)
    url = re.match(r"console: (\S+)", ran[commands.index(".venv/bin/edge-agent console")].out).group(1)
    assert url == daemon.url + "/"
    token = ran[commands.index("T=$(.venv/bin/edge-agent tokens create alice --role operator)")].out

    context, page = login(browser, url, token)
    assert page.locator("#who-role").inner_text() == "operator"
    page.goto("/ui/sensors")
    page.wait_for_selector("body[data-ready='1']")
    chart = page.locator("[id^='chart-']").first  # the default configuration's simulated press
    deadline = time.monotonic() + 60  # its baseline is learned first; readings are charted from the start
    while int(chart.get_attribute("data-points") or 0) < 3:
        assert time.monotonic() < deadline, "the simulated machine's chart never moved"
        time.sleep(0.2)
    context.close()
