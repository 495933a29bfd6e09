"""The local API against its own OpenAPI document, fuzzed by schemathesis (bounded).

A real daemon with the voice models; schemathesis reads ``/openapi.json``
and sends a few generated requests to every operation. No answer may be a
5xx the document does not list for that operation (a 503 "no audio output on
this box" is documented and expected on a machine without a speaker), and
every answer must match the schema the document gives for its status.
Operations that stream or run the LLM on arbitrary text are left out: a
generated 1,000-token prompt would take minutes on a CPU, not find a bug.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import DaemonProcess
from tests.daemon_support import voice_daemon

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

#: streaming/WebSocket routes and the ones that run the LLM on whatever text is generated
SKIPPED = {"/v1/events", "/v1/voice/ws", "/v1/chat/completions", "/v1/voice/ask"}
EXAMPLES = 8


@pytest.fixture(scope="module")
def api_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    # the fuzzer is one client sending hundreds of requests: not what the rate limit is about
    unlimited = {
        "EDGE_AGENT_SECURITY__RATE_LIMIT_PER_S": "100000",
        "EDGE_AGENT_SECURITY__RATE_LIMIT_BURST": "100000",
    }
    with voice_daemon(tmp_path_factory.mktemp("contract"), extra_env=unlimited) as daemon:
        yield daemon


def assert_no_undocumented_server_error(response, case) -> None:  # type: ignore[no-untyped-def]
    """A 5xx the operation's responses do not list is a bug; a listed one (no speaker: 503) is not."""
    status = response.status_code
    if status < 500:
        return
    documented = {str(code) for code in case.operation.definition.raw.get("responses", {})}
    assert str(status) in documented, f"undocumented server error {status}: {response.text[:300]}"


def test_no_undocumented_5xx_and_every_answer_matches_the_schema(api_daemon: DaemonProcess) -> None:
    from hypothesis import given
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_url(api_daemon.url + "/openapi.json")
    failures: list[str] = []
    calls: list[int] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in SKIPPED:
            continue
        tested += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
            database=None,
        )  # fmt: skip
        def fuzz(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(timeout=60)
            calls.append(response.status_code)
            assert_no_undocumented_server_error(response, case)
            case.validate_response(response, checks=[response_schema_conformance])

        try:
            fuzz()
        except BaseException as exc:  # one operation's failure must not hide the others'
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert tested >= 15 and len(calls) >= tested * 2, (tested, len(calls))
    assert not failures, "\n\n".join(failures)
