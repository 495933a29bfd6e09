"""The web console: first paint of the overview on loopback, and what a watching console costs the daemon.

- First paint: Chromium (Debian's, driven by Playwright) loads ``/ui/overview``
  from a running daemon; first-contentful-paint and "data shown" (the page's
  API calls answered and rendered) from the browser's own clock. Peer: the
  same page and assets saved to disk and served by ``python -m http.server``
  (the floor for a page of this size on this machine), loaded the same way.
- CPU: the daemon's CPU share while its simulator streams a 1 kHz machine
  (sensor.reading sampled at 10 Hz for the chart), first with no browser,
  then with one console watching the sensors page. The same daemon, the same
  windows, one after the other.
- RSS: the daemon after one API call (the web stack loaded) vs after the
  console's pages and assets were also served.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.bench_idle import cpu_s, free_port, rss_kb, start_daemon, wait_healthy
from tests.console_browser import launch

ENV_1KHZ = {
    "EDGE_AGENT_VOICE__ENABLED": "off",
    "EDGE_AGENT_SENSORS__SIMULATOR_RATE_HZ": "1000",
    "EDGE_AGENT_SENSORS__SIMULATOR_FAULTS": "false",
    "EDGE_AGENT_SENSORS__READING_EVENT_S": "0.1",
}


_TIMING = """() => new Promise((done) => {
  let ready = null;
  const started = performance.now();
  const wait = () => {
    if (ready === null && document.body.dataset.ready === '1') ready = performance.now();
    const paint = performance.getEntriesByName('first-contentful-paint')[0];
    if (ready !== null && (paint || performance.now() - started > 3000)) {
      done({fcp: paint ? paint.startTime : null, ready});
      return;
    }
    setTimeout(wait, 5);
  };
  wait();
})"""


def _load(browser: Any, url: str, runs: int) -> tuple[float, float]:
    """Median first-contentful-paint and data-shown times (ms) over ``runs`` fresh page loads."""
    fcp, ready = [], []
    for _ in range(runs):
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        timing = page.evaluate(_TIMING)
        if timing["fcp"] is not None:  # no paint entry within 3 s: that load is left out
            fcp.append(timing["fcp"])
        ready.append(timing["ready"])
        context.close()
    if not fcp:
        raise RuntimeError("Chromium reported no first-contentful-paint for any load")
    fcp.sort()
    ready.sort()
    return fcp[len(fcp) // 2], ready[len(ready) // 2]


def _static_copy(base: str, folder: Path) -> None:
    """The overview page as the browser got it, with its assets, for a plain static server."""
    html = urllib.request.urlopen(base + "/ui/overview", timeout=10).read().decode()
    (folder / "ui").mkdir()
    (folder / "static").mkdir()
    import re

    for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        name = src.split("?")[0].rsplit("/", 1)[1]
        (folder / "static" / name).write_bytes(urllib.request.urlopen(base + src, timeout=10).read())
        html = html.replace(src, f"/static/{name}")
    # the static copy has no API behind it: mark it ready as soon as its scripts ran
    html = html.replace('<script src="/static/device.js"></script>', "")
    (folder / "static" / "ready.js").write_text("document.body.dataset.ready = '1';")
    html = html.replace("</body>", '<script src="/static/ready.js"></script></body>')
    (folder / "ui" / "overview.html").write_text(html)


def _cpu_window(pid: int, seconds: float) -> float:
    c0, t0 = cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_s(pid) - c0) / (time.monotonic() - t0) * 100


def run(quick: bool = False) -> list[dict]:
    from playwright.sync_api import sync_playwright

    runs, window = (3, 10.0) if quick else (9, 30.0)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        port = free_port()
        daemon = start_daemon(tmp + "/data", port, ENV_1KHZ)
        static = None
        browser = launch(p)
        try:
            wait_healthy(port, 60)
            base = f"http://127.0.0.1:{port}"
            urllib.request.urlopen(base + "/v1/info", timeout=10).read()
            time.sleep(2)
            rss_api = rss_kb(daemon.pid) / 1024
            _load(browser, base + "/ui/overview", 1)  # warm: assets cached by nobody (fresh contexts)
            ours_fcp, ours_ready = _load(browser, base + "/ui/overview", runs)
            rss_console = rss_kb(daemon.pid) / 1024

            folder = Path(tmp) / "static-copy"
            folder.mkdir()
            _static_copy(base, folder)
            static_port = free_port()
            static = subprocess.Popen(
                [sys.executable, "-m", "http.server", str(static_port), "--bind", "127.0.0.1"],
                cwd=folder,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
            peer_fcp, peer_ready = _load(browser, f"http://127.0.0.1:{static_port}/ui/overview.html", runs)

            time.sleep(3 if quick else 10)  # the 1 kHz machine's baseline settles
            idle = _cpu_window(daemon.pid, window)
            context = browser.new_context()
            page = context.new_page()
            page.goto(base + "/ui/sensors")
            page.wait_for_selector("body[data-ready='1']")
            time.sleep(2)
            watched = _cpu_window(daemon.pid, window)
            points = page.locator("[id^='chart-']").first.get_attribute("data-points")
            context.close()
        finally:
            browser.close()
            if static is not None:
                static.kill()
                static.wait()
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=15)
    rows.append(
        {"name": "console overview first contentful paint", "ours": round(ours_fcp, 1), "peer": round(peer_fcp, 1),
         "peer_name": "same page, static copy via python -m http.server", "unit": "ms",
         "ratio": round(ours_fcp / peer_fcp, 2) if peer_fcp else None, "target": "<= 500 ms"}
    )  # fmt: skip
    rows.append(
        {"name": "console overview data shown", "ours": round(ours_ready, 1), "peer": round(peer_ready, 1),
         "peer_name": "static copy (no API calls)", "unit": "ms",
         "ratio": round(ours_ready / peer_ready, 2) if peer_ready else None, "target": "<= 500 ms"}
    )  # fmt: skip
    rows.append(
        {"name": "daemon CPU, 1 kHz machine, one console watching", "ours": round(watched, 1),
         "peer": round(idle, 1), "peer_name": "same daemon, no console", "unit": "% of one core",
         "ratio": round(watched / idle, 2) if idle else None, "target": f"report (chart held {points} points)"}
    )  # fmt: skip
    rows.append(
        {"name": "daemon RSS after the console was served", "ours": round(rss_console, 1),
         "peer": round(rss_api, 1), "peer_name": "after one API call (web stack loaded)", "unit": "MiB",
         "ratio": round(rss_console / rss_api, 3), "target": "report"}
    )  # fmt: skip
    return rows
