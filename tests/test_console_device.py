"""The box's web console in a real browser (Chromium via Playwright) against a real daemon process.

One daemon for the module: an HTTP-fed machine streams live readings (10 Hz,
stamped with the wall clock) from a feeder thread, so the sensors page has a
moving chart; the test injects a fault and times the alert's arrival in the
page. Tokens are made with the real CLI (`edge-agent tokens create`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.sensors.simulator import MachineSimulator
from agent.sensors.spec import parse_machine
from tests.conftest import REPO, DaemonProcess, free_port
from tests.console_browser import (  # noqa: F401
    accessibility_problems,
    browser_fixture,
    login,
    playwright_fixture,
    shoot,
)
from tests.daemon_support import daemon_env, stop_daemon
from tests.machine_support import MACHINE, machine_toml
from tests.models_fixtures import MLP_A, build_bundle, signing_key

pytestmark = pytest.mark.timeout(240)

RATE_HZ = 10.0
#: the test times the console's path from an open alert to the page, so the machine opens a
#: Warning without the alarm policy's on-delay (learned from the baseline: one correlation time
#: of the held-out score, seconds that are the detector's, not the page's)
_NO_ON_DELAY = "on_delay_s = 0"


def request(url: str, method: str = "GET", body: Any = None, token: str = "") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw.startswith(b"{") else raw
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw.startswith(b"{") else raw


def wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass
class Feeder:
    """Streams the machine's readings at RATE_HZ, stamped now; ``fault()`` spikes the pressure channel."""

    url: str
    token: str
    sim: MachineSimulator
    names: list[str]
    fault_at: float = 0.0
    sent: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def post(self, n: int, start_ts: float | None = None) -> None:
        ts, X, _ = self.sim.generate(n)
        if start_ts is not None:
            ts = ts - ts[0] + start_ts
        pressure = self.names.index("pressure")
        rows = []
        for t, row in zip(ts.tolist(), X.tolist(), strict=True):
            if self.fault_at and self.fault_at <= t < self.fault_at + 6.0:
                row[pressure] += 10.0 * self.sim.spread(pressure)
            rows.append({"ts": t, "values": dict(zip(self.names, row, strict=True))})
        for i in range(0, len(rows), 200):
            status, body = request(
                self.url + "/v1/sensors/readings",
                "POST",
                {"machine": "m1", "rows": rows[i : i + 200]},
                self.token,
            )
            if status != 202:
                self.errors.append(f"{status} {body}")
        self.sent += n

    def run(self) -> None:
        next_ts = time.time()
        while not self.stop.is_set():
            now = time.time()
            n = int((now - next_ts) * RATE_HZ)
            if n > 0:
                self.post(n, start_ts=next_ts)
                next_ts += n / RATE_HZ
            time.sleep(0.1)  # ~10 requests/s: well inside the API's rate limit

    def fault(self) -> float:
        self.fault_at = time.time()
        return self.fault_at


@dataclass
class Box:
    daemon: DaemonProcess
    tokens: dict[str, str]
    feeder: Feeder

    @property
    def url(self) -> str:
        return self.daemon.url


def _config(path: Path) -> Path:
    path.write_text(
        f"""
[mqtt]
url = "mqtt://127.0.0.1:{free_port()}"

[sync]
discovery = false

[sensors]
sources = ["http"]
reading_event_s = 0.1

{machine_toml(_NO_ON_DELAY)}"""
    )
    return path


def _token(env: dict[str, str], name: str, role: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "tokens", "create", name, "--role", role],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip().splitlines()[0]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    env = daemon_env(tmp / "data", port)
    config = _config(tmp / "agent.toml")
    tokens = {role: _token({**env}, f"console-{role}", role) for role in ("admin", "operator", "viewer")}
    # the equipment pushing readings has a token of its own (its own rate-limit bucket, as in a plant)
    feeder_token = _token({**env}, "press-line-gateway", "operator")
    # one small model installed as a user would (`edge-agent models install`), for the models page
    keys = tmp / "data" / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    (keys / "model_publishers.pub").write_text(signing_key().public_hex + "\n")
    subprocess.run(
        [sys.executable, "-m", "agent.cli", "models", "install", str(build_bundle(tmp / "bundle", MLP_A))],
        env=env, cwd=REPO, capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    log_path = tmp / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "--config", str(config), "run"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    daemon = DaemonProcess(proc, port, tmp / "data", log_path, env)
    feeder: Feeder | None = None
    thread: threading.Thread | None = None
    try:
        daemon.wait_healthy(60)
        spec = parse_machine("m1", MACHINE)
        sim = MachineSimulator(spec, seed=5, rate_hz=RATE_HZ, start_ts=time.time() - 70)
        feeder = Feeder(daemon.url, feeder_token, sim, list(spec.channel_names))
        feeder.post(650, start_ts=time.time() - 66)  # the baseline, then live
        wait(
            lambda: any(
                m.get("phase") == "detecting"
                for m in request(daemon.url + "/v1/sensors", token=tokens["viewer"])[1].get("machines", [])
            ),
            60,
            "the machine's baseline",
        )
        thread = threading.Thread(target=feeder.run, name="feeder", daemon=True)
        thread.start()
        yield Box(daemon, tokens, feeder)
    finally:
        if feeder is not None:
            feeder.stop.set()
        if thread is not None:
            thread.join(5)
        stop_daemon(daemon)


def test_no_token_gets_the_login_page_and_the_api_refuses(box: Box, browser: Any) -> None:
    context = browser.new_context(base_url=box.url)
    page = context.new_page()
    page.goto("/")
    assert "/login" in page.url
    assert page.get_by_label("API token").is_visible()
    page.goto("/ui/sensors")
    assert "/login?next=/ui/sensors" in page.url
    shoot(page, "device-login")
    # a wrong token: the form says why, and no cookie is set
    page.get_by_label("API token").fill("eat_nope")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text().startswith("That token is not valid")
    assert context.cookies() == []
    assert request(box.url + "/v1/info")[0] == 401
    context.close()


def test_login_cookie_flags_and_no_token_in_pages(box: Box, browser: Any) -> None:
    token = box.tokens["operator"]
    context, page = login(browser, box.url, token)
    page.wait_for_selector("body[data-ready='1']")
    assert page.url.endswith("/ui/overview")
    assert page.locator("#who-role").inner_text() == "operator"
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["secure"] is False
    assert token not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # scripts cannot read the session
    for path in ("/ui/overview", "/ui/sensors", "/ui/voice", "/ui/models", "/ui/logs"):
        response = page.goto(path)
        assert response.status == 200
        html = response.text()
        assert token not in html and token not in page.url
        assert response.headers["cache-control"] == "no-store"
        assert "default-src 'self'" in response.headers["content-security-policy"]
    # the overview shows services, the hub link and the outbox depth from the running daemon
    page.goto("/ui/overview")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#services tbody tr").count() >= 2
    assert "running" in page.locator("#services").inner_text()
    assert "not connected" in page.locator("#hub").inner_text()
    assert page.locator("#hub").get_attribute("data-outbox") != ""
    shoot(page, "device-overview")
    # static assets: versioned URLs with a year's cache; the vendored uPlot is served from the box
    asset = page.evaluate("[...document.scripts].map(s => s.src).find(s => s.includes('uPlot'))")
    response = page.request.get(asset)
    assert response.status == 200 and "immutable" in response.headers["cache-control"]
    # log out ends the session: the same cookie no longer opens a page
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login")
    page.goto("/ui/overview")
    assert "/login" in page.url
    context.close()


def test_live_chart_alert_within_2s_ack_and_viewer_refused(box: Box, browser: Any) -> None:
    context, page = login(browser, box.url, box.tokens["operator"])
    page.goto("/ui/sensors")
    page.wait_for_selector("body[data-ready='1']")
    chart = page.locator("#chart-m1")
    wait(lambda: int(chart.get_attribute("data-points") or 0) >= 5, 10, "readings on the chart")
    before = int(chart.get_attribute("data-points"))
    wait(lambda: int(chart.get_attribute("data-points") or 0) > before, 5, "the chart to move")

    viewer_ctx, viewer = login(browser, box.url, box.tokens["viewer"])
    viewer.goto("/ui/sensors")
    viewer.wait_for_selector("body[data-ready='1']")

    fault_at = box.feeder.fault()
    row = page.locator("#alerts tbody tr[data-state='open']").first
    row.wait_for(timeout=10_000)
    wait(lambda: chart.get_attribute("data-first-band-at"), 5, "the alert band on the chart")
    # the page stamps when it first showed each (wall clock, same machine): no polling delay in the figure
    seen_s = int(row.get_attribute("data-shown-at")) / 1000 - fault_at
    band_s = int(chart.get_attribute("data-first-band-at")) / 1000 - fault_at
    assert seen_s <= 2.0, f"the alert reached the page {seen_s:.2f} s after the fault"
    assert band_s <= 2.0, f"the alert band reached the chart {band_s:.2f} s after the fault"
    print(f"fault -> alert row {seen_s:.2f} s, fault -> chart band {band_s:.2f} s")
    assert not box.feeder.errors, box.feeder.errors[:3]  # every reading was taken
    alert_id = row.get_attribute("data-id")
    assert "pressure" in row.inner_text()  # the root-cause channel
    shoot(page, "device-sensors")

    # the viewer sees the alert but no operator button, and the API refuses the viewer's ack
    viewer_row = viewer.locator(f"#alerts tbody tr[data-id='{alert_id}']")
    viewer_row.wait_for(timeout=5_000)
    assert viewer_row.locator("button").count() == 0  # neither Ack nor Shelve
    assert viewer.locator("#who-role").inner_text() == "viewer"
    status = viewer.evaluate(
        f"fetch('/v1/alerts/{alert_id}/ack', {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: '{{}}'}}).then(r => r.status)"
    )
    assert status == 403
    status = viewer.evaluate(
        f"fetch('/ui/alerts/{alert_id}/shelve', {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: '{{\"for_s\": 60}}'}}).then(r => r.status)"
    )
    assert status == 403
    shoot(viewer, "device-sensors-viewer")
    viewer_ctx.close()

    # the operator acknowledges it; the API says who did
    row.get_by_role("button", name="Acknowledge").click()
    page.locator(f"#alerts tbody tr[data-id='{alert_id}'] .badge", has_text="acked by").wait_for(
        timeout=5_000
    )
    status, shown = request(f"{box.url}/v1/alerts/{alert_id}", token=box.tokens["admin"])
    assert status == 200 and shown["acked_at"] and shown["acked_by"] == "console-operator"
    assert "acked" in [h["transition"] for h in shown["history"]]
    # and shelves it for an hour: stored, with who did it, and in the audit log
    page.locator(f"#alerts tbody tr[data-id='{alert_id}']").get_by_role("button", name="Shelve").click()
    page.locator(f"#alerts tbody tr[data-id='{alert_id}'] .badge", has_text="shelved to").wait_for(
        timeout=5_000
    )
    shown = request(f"{box.url}/v1/alerts/{alert_id}", token=box.tokens["admin"])[1]
    assert shown["shelved_until"] > time.time() + 3000 and shown["shelved_by"] == "console:console-operator"
    # the last hour: samples stored by the report recorder, before the live ones
    page.get_by_role("button", name="1 h").click()
    wait(lambda: int(chart.get_attribute("data-history") or 0) > 0, 15, "stored samples on the chart")
    assert page.get_by_role("button", name="1 h").get_attribute("aria-pressed") == "true"
    context.close()


def test_models_voice_logs_pages(box: Box, browser: Any) -> None:
    context, page = login(browser, box.url, box.tokens["admin"])
    for slug in ("overview", "sensors", "models", "voice", "logs"):
        page.goto(f"/ui/{slug}")
        page.wait_for_selector("body[data-ready]")
        assert page.locator("body").get_attribute("data-ready") == "1", slug
        assert accessibility_problems(page) == [], slug
    # logs: the live tail shows a record the daemon writes after the page opened
    page.goto("/ui/logs")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#audit-verify").inner_text().startswith("audit verify: OK")
    assert page.locator("#audit tbody tr").count() >= 1  # the operator's ack, at least
    request(box.url + "/v1/alerts/no-such-alert/ack", "POST", {}, box.tokens["operator"])
    shoot(page, "device-logs")
    # models: the operator's Load and Unload go through the API; the table follows
    context.close()
    context, page = login(browser, box.url, box.tokens["operator"])
    page.goto("/ui/models")
    page.wait_for_selector("body[data-ready='1']")
    row = page.locator("#models tbody tr[data-model='mlp-a']")
    assert row.get_attribute("data-state") == "unloaded" and "would run on" in row.inner_text()
    row.get_by_role("button", name="Load mlp-a").click()
    page.locator("#models tbody tr[data-model='mlp-a'][data-state='loaded']").wait_for(timeout=30_000)
    assert "onnxruntime" in page.locator("#models tbody tr[data-model='mlp-a']").inner_text()
    assert request(box.url + "/v1/models/mlp-a", token=box.tokens["viewer"])[1]["loaded"] is True
    shoot(page, "device-models")
    page.get_by_role("button", name="Unload mlp-a").click()
    page.locator("#models tbody tr[data-model='mlp-a'][data-state='unloaded']").wait_for(timeout=30_000)
    page.goto("/ui/voice")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#ptt").count() == 1  # an admin may talk
    shoot(page, "device-voice")
    context.close()
    # keyboard: the login form works with the keyboard alone
    context = browser.new_context(base_url=box.url)
    page = context.new_page()
    page.goto("/login")
    # the field has focus on load (autofocus); on a busy box it takes it a moment after "load"
    page.wait_for_function("document.activeElement && document.activeElement.id === 'token'")
    page.keyboard.type(box.tokens["viewer"])
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/overview")
    page.goto("/ui/voice")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#ptt").count() == 0  # a viewer gets no push-to-talk button
    page.goto("/ui/models")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#models tbody tr[data-model='mlp-a'] button").count() == 0  # nor Load/Unload
    context.close()
