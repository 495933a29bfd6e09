"""The hub's web console in a real browser: two agents online, a ping, a canary deployment to the end.

A real hub (thread, real Mosquitto, SQLite) and two simulated devices on their
own MQTT connections (tests/fleet_sim.py); the browser is Debian's Chromium
driven by Playwright. The deployment is started through the API while the
page is open, and the page follows it live (``/ui/feed``) to its end.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sync.hub.bundles import make_bundle_tar
from tests.console_browser import (  # noqa: F401
    accessibility_problems,
    browser_fixture,
    login,
    playwright_fixture,
    shoot,
)
from tests.fleet_sim import SimDevice, deploy_ok
from tests.hub_support import hub_settings, wait_for
from tests.models_fixtures import MLP_A, build_bundle

pytestmark = pytest.mark.timeout(180)


def _api(hub: Any, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    kind = "application/x-tar" if raw is not None else "application/json"
    req = urllib.request.Request(
        hub.url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {hub.token}", "Content-Type": kind},
    )
    with urllib.request.urlopen(req, timeout=20) as resp:
        return json.loads(resp.read())


def slow_deploy(args: dict[str, Any]) -> tuple[bool, Any, str | None]:
    time.sleep(1.5)  # long enough for the page to show the canary stage before the rollout
    return deploy_ok(args)


ALERT = {"id": "alert-press0-1", "machine": "press", "condition": "anomaly", "level": "major",
         "title": "press: unusual vibration (major)", "state": "open"}  # fmt: skip


def acking(devs: list[SimDevice]) -> Any:
    """The box's side of alerts.ack: answer, then send the acknowledged alert as its transition."""

    def handler(args: dict[str, Any]) -> tuple[bool, Any, str | None]:
        def send() -> None:
            now = time.time()
            devs[0].publish(
                "alerts",
                {"transition": "acked", "alert": {**ALERT, "acked_at": now, "acked_by": args.get("by", ""),
                                                  "updated_at": now}},
            )  # fmt: skip

        threading.Thread(target=send, daemon=True).start()  # not from the MQTT callback's own thread
        return True, {"acked": args["id"]}, None

    return handler


def test_fleet_ping_and_a_canary_deployment_followed_to_the_end(
    broker, start_hub, tmp_path: Path, browser: Any
) -> None:
    hub = start_hub(hub_settings(tmp_path, broker))
    key = hub.service.keys.current().public_hex
    operator = hub.make_token("console-op", "operator")
    viewer = hub.make_token("console-viewer", "viewer")
    devs: list[SimDevice] = []
    devs += [
        SimDevice(
            f"press-{i}",
            broker.port,
            trusted_keys=[key],
            labels={"site": "plant-a"},
            handlers={"deploy": slow_deploy, "alerts.ack": acking(devs)},
            agent_version="0.1.0",
        ).start()
        for i in range(2)
    ]
    try:
        # no session: the login page, and a bad token is refused there
        context = browser.new_context(base_url=hub.url)
        page = context.new_page()
        page.goto("/ui/fleet")
        assert "/login" in page.url
        shoot(page, "hub-login")
        context.close()

        context, page = login(browser, hub.url, operator)
        page.goto("/ui/fleet")
        page.wait_for_selector("body[data-ready='1']")
        count = page.locator("#fleet-count")
        wait_for(lambda: count.get_attribute("data-online") == "2", 10, "two agents online in the page")
        assert page.locator("#fleet tbody tr[data-online='1']").count() == 2
        assert "0.1.0" in page.locator("#fleet").inner_text()
        (cookie,) = context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and operator not in cookie["value"]
        assert accessibility_problems(page) == []
        shoot(page, "hub-fleet")

        # a device's page: its telemetry charted, then a ping and its pong
        for i in range(5):
            devs[0].publish(
                "telemetry",
                {"kind": "sample", "ts": time.time() - 5 + i, "interval_s": 1.0,
                 "metrics": {"cpu_percent": 10.0 + i, "memory_percent": 40.0 + i}},
            )  # fmt: skip
        page.get_by_role("link", name="press-0").click()
        page.wait_for_selector("body[data-ready='1']")
        chart = page.locator("#telemetry-chart")
        wait_for(lambda: int(chart.get_attribute("data-points") or 0) >= 5, 10, "the telemetry chart")
        assert "cpu_percent" in page.locator("#tel-note").inner_text()
        page.get_by_label("Command", exact=True).select_option("ping")
        page.get_by_role("button", name="Send").click()
        result = page.locator("#cmd-result[data-status]")
        result.wait_for(timeout=15_000)
        assert result.get_attribute("data-status") == "ok" and '"pong": true' in result.inner_text()
        assert accessibility_problems(page) == []
        shoot(page, "hub-device")

        # the command console: a ping to the whole fleet, both answers shown
        page.goto("/ui/commands")
        page.wait_for_selector("body[data-ready='1']")
        page.get_by_role("button", name="Send").click()
        page.locator("#results tbody tr[data-status='ok']").nth(1).wait_for(timeout=15_000)
        assert accessibility_problems(page) == []
        shoot(page, "hub-commands")

        # a deployment with a 50% canary, followed live on the deployments page
        page.goto("/ui/deployments")
        page.wait_for_selector("body[data-ready='1']")
        data = make_bundle_tar(build_bundle(tmp_path / "bundle" / "mlp-a", MLP_A, version="2.0.0"))
        sha = hashlib.sha256(data).hexdigest()
        _api(hub, "POST", "/v1/bundles", raw=data)
        dep = _api(hub, "POST", "/v1/deployments", {"bundle": sha, "to": "site=plant-a", "canary": "50%"})
        canary = page.locator("#dep-devices tbody tr[data-phase='canary']")
        canary.wait_for(timeout=10_000)
        page.locator("#dep-devices tbody tr[data-phase='rollout'][data-status='pending']").wait_for(
            timeout=10_000
        )  # the canary stage is shown while the rest waits
        page.locator("#dep-devices tbody tr[data-phase='canary'][data-status='ok']").wait_for(timeout=15_000)
        page.locator("#dep-title[data-status='succeeded']").wait_for(timeout=20_000)
        assert page.locator("#dep-devices tbody tr[data-status='ok']").count() == 2
        assert page.locator(f"#deps tbody tr[data-id='{dep['id']}'][data-status='succeeded']").count() == 1
        assert accessibility_problems(page) == []
        shoot(page, "hub-deployments")
        # the fleet page compares what was deployed with what each device reports
        page.goto("/ui/fleet")
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#fleet tbody tr", has_text="mlp-a: 2.0.0 deployed, not reported").count() == 2
        # the signing key (tokens are listed to admins only)
        page.goto("/ui/keys")
        page.wait_for_selector("body[data-ready='1']")
        assert hub.service.keys.current().key_id in page.locator("#key").inner_text()
        assert "admin tokens only" in page.locator("#tokens-note").inner_text()
        assert accessibility_problems(page) == []
        shoot(page, "hub-keys")
        # fleet alerts: one arrives while the page is open, the operator acknowledges it on the box
        page.goto("/ui/alerts")
        page.wait_for_selector("body[data-ready='1']")
        now = time.time()
        devs[0].publish(
            "alerts", {"transition": "opened", "alert": {**ALERT, "opened_at": now, "updated_at": now}}
        )
        row = page.locator(f"#falerts tbody tr[data-id='{ALERT['id']}']")
        row.wait_for(timeout=10_000)
        assert "press-0" in row.inner_text() and "major" in row.inner_text()
        row.get_by_role("button", name="Acknowledge").click()
        row.locator(".badge", has_text="acked by hub:console-op").wait_for(timeout=15_000)
        shown = _api(hub, "GET", f"/v1/alerts/{ALERT['id']}?device=press-0")
        assert shown["acked_at"] and shown["acked_by"] == "hub:console-op"  # the box records who, via the hub
        assert accessibility_problems(page) == []
        shoot(page, "hub-alerts")
        context.close()

        # a viewer: no command form, and the API refuses the viewer's command
        context, page = login(browser, hub.url, viewer)
        page.goto("/ui/devices/press-1")
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#who-role").inner_text() == "viewer"
        assert page.locator("#cmd-form").count() == 0
        status = page.evaluate(
            "fetch('/v1/devices/press-1/commands', {method: 'POST', headers: {'Content-Type': 'application/json'},"
            " body: JSON.stringify({name: 'ping'})}).then(r => r.status)"
        )
        assert status == 403
        context.close()
    finally:
        for d in devs:
            d.stop()


def test_a_cross_site_form_cannot_use_the_session(broker, start_hub, tmp_path: Path) -> None:
    """A state-changing call with the cookie from another origin is refused before the API sees it."""
    hub = start_hub(hub_settings(tmp_path, broker))
    operator = hub.make_token("console-op", "operator")
    req = urllib.request.Request(
        hub.url + "/login",
        data=f"token={operator}&next=/ui/fleet".encode(),
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(req, timeout=10)
    assert info.value.code == 303 and info.value.headers["Location"] == "/ui/fleet"
    cookie = info.value.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and operator not in cookie
    session = cookie.split(";", 1)[0]
    cross = urllib.request.Request(
        hub.url + "/v1/commands",
        data=json.dumps({"name": "ping", "to": "all"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Cookie": session, "Origin": "http://evil.example"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(cross, timeout=10)
    assert info.value.code == 403
    same = urllib.request.Request(hub.url + "/v1/devices", headers={"Cookie": session})
    with urllib.request.urlopen(same, timeout=10) as resp:
        assert resp.status == 200 and json.loads(resp.read()) == {"devices": []}
