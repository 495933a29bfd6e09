"""The OpenAPI document is complete and true (issue 19 §4): a bounded schemathesis run against the real daemon.

schemathesis (a dev dependency) reads the daemon's own ``/openapi.json``,
generates valid and invalid requests for every operation and checks each
answer: no 500, every status and content type documented, every body matching
its schema, schema-valid requests accepted, invalid ones refused, 405 with
``Allow`` for methods a path does not have. 503 and 507 are documented answers
(the voice assistant is off in this run; a full disk), so
tests/schemathesis.toml lets them pass the server-error check; a 500 fails it.

The two WebSocket routes are left out: a plain HTTP client cannot complete
their upgrade, and their 400 for a request without one is not a fault.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

#: the whole run, all phases: well under the two minutes the issue allows
RUN_TIMEOUT_S = 110


def _document(url: str) -> dict:
    with urllib.request.urlopen(url + "/openapi.json", timeout=5) as resp:
        return json.loads(resp.read())


def test_the_document_lists_what_the_api_answers(start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon()
    daemon.wait_healthy()
    doc = _document(daemon.url)
    paths = doc["paths"]
    readings = paths["/v1/sensors/readings"]["post"]["responses"]
    assert "202" in readings and "200" not in readings
    for status in ("400", "401", "403", "413", "415", "422", "429", "503"):
        assert status in readings, status
    assert "401" not in paths["/healthz"]["get"]["responses"], "probes are open"
    for path, methods in paths.items():
        for method, op in methods.items():
            if path not in ("/healthz", "/readyz"):
                assert {"401", "403", "429"} <= set(op["responses"]), (method, path)
                assert {"bearer": []} in op["security"]
    upload = paths["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert daemon.stop() == 0


def test_schemathesis_finds_no_server_error_and_no_mismatch(start_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # a fuzzer is one client sending fast: the rate limit is not what this run is about
    daemon = start_daemon(
        {"EDGE_AGENT_SECURITY__RATE_LIMIT_PER_S": "100000", "EDGE_AGENT_SECURITY__RATE_LIMIT_BURST": "100000"}
    )
    daemon.wait_healthy()
    command = [
        sys.executable,
        "-c",
        "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
        "--config-file",
        str(REPO / "tests" / "schemathesis.toml"),
        "run",
        f"{daemon.url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "10",
        "--generation-deterministic",
        "--request-timeout",
        "10",
        "--exclude-path",
        "/v1/events",
        "--exclude-path",
        "/v1/voice/ws",
        "--no-color",
    ]
    result = subprocess.run(
        # run from tmp_path: schemathesis keeps a cache directory where it runs
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=daemon.env,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failure" not in result.stdout.split("SUMMARY")[-1].lower()
    assert daemon.proc.poll() is None, "the daemon survived the run"
    assert "Traceback" not in daemon.log()
    assert daemon.stop() == 0
