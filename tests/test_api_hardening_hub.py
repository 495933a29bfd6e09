"""The hub's operator API reads bodies through the same JSON reader as the device (issue 19 §4).

A real hub (thread) on a real Mosquitto: the issue's 5,000-digit integer on the commands route, deep
nesting, text/plain and broken JSON are answered 4xx in the error shape, and nothing is signed or sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hub_support import hub_settings

pytestmark = pytest.mark.timeout(60)


def test_bad_bodies_on_the_hub_are_4xx_and_sign_nothing(broker, start_hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hub = start_hub(hub_settings(tmp_path, broker))
    digits = b'{"name": "ping", "to": "all", "wait_s": ' + b"9" * 5000 + b"}"
    status, answer = hub.http("POST", "/v1/commands", data=digits)
    assert status == 422 and answer["error"]["field"] == "wait_s", answer
    deep = b"[" * 50_000 + b"]" * 50_000
    for path in ("/v1/commands", "/v1/devices/d-1/commands", "/v1/deployments", "/v1/tokens"):
        status, answer = hub.http("POST", path, data=deep)
        assert status == 400 and answer["error"]["code"] == "json_too_deep", (path, answer)
        status, answer = hub.http("POST", path, data=b'{"name": "ping"}', content_type="text/plain")
        assert status == 415 and "application/json" in answer["error"]["message"], (path, answer)
        status, answer = hub.http("POST", path, data=b'{"name": ')
        assert status == 400 and answer["error"]["code"] == "bad_request", (path, answer)
    assert hub.count("SELECT COUNT(*) AS n FROM commands") == 0
