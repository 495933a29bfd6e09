"""validate() without a broker: each refusal's code and message, and the cached topic verdicts."""

from __future__ import annotations

import json

import pytest

from agent.core.errors import BadRequestError
from sync.envelope import Envelope
from sync.hub.validate import Incoming, validate

GOOD_ID = "01M945HG3KEHQWY51M3Y4G97SZ"


def _payload(**fields: object) -> bytes:
    data: dict[str, object] = {"v": 1, "id": GOOD_ID, "device": "box-1", "ts": 12.5, "kind": "telemetry"}
    data["body"] = {"t": 1}
    data.update(fields)
    return json.dumps(data).encode()


def _refusal(topic: str, payload: bytes) -> tuple[str, str]:
    with pytest.raises(BadRequestError) as caught:
        validate(Incoming(topic, payload, 0.0), max_bytes=4096)
    return caught.value.code, str(caught.value)


@pytest.mark.parametrize(
    "ident",
    [
        GOOD_ID[:-1],  # 25 characters
        GOOD_ID + "Z",  # 27
        GOOD_ID.lower(),
        "01I945HG3KEHQWY51M3Y4G97SZ",  # I, L, O and U are not Crockford digits
        "01U945HG3KEHQWY51M3Y4G97SZ",
        "01\u0663945HG3KEHQWY51M3Y4G97S",  # a non-ASCII digit
        GOOD_ID[:-1] + "\n",
        "",
    ],
)
def test_an_id_that_is_not_a_ulid_is_refused(ident: str) -> None:
    assert _refusal("edge/v1/box-1/telemetry", _payload(id=ident)) == (
        "bad_schema",
        "field 'id' is not a ULID",
    )


def test_each_field_names_itself_when_missing_or_of_the_wrong_type() -> None:
    topic = "edge/v1/box-1/telemetry"
    assert _refusal(topic, _payload(id=5)) == ("bad_schema", "field 'id' is missing or not a str")
    assert _refusal(topic, _payload(device=None)) == ("bad_schema", "field 'device' is missing or not a str")
    assert _refusal(topic, _payload(kind=[])) == ("bad_schema", "field 'kind' is missing or not a str")
    assert _refusal(topic, _payload(body=[1])) == ("bad_schema", "field 'body' is missing or not a dict")
    assert _refusal(topic, _payload(ts=True)) == ("bad_schema", "field 'ts' is missing or not a number")


def test_a_body_with_nan_is_refused_and_a_good_one_is_stored_compact() -> None:
    topic = "edge/v1/box-1/telemetry"
    nan = b'{"v":1,"id":"%s","device":"box-1","ts":1,"kind":"telemetry","body":{"x":NaN}}' % GOOD_ID.encode()
    assert _refusal(topic, nan) == (
        "bad_schema",
        f"message {GOOD_ID} body holds NaN or Infinity, which JSON has not",
    )
    body = {"é": "a\u2028b", "n": [1, 2.5, None]}
    accepted = validate(
        Incoming(topic, Envelope("telemetry", "box-1", body, id=GOOD_ID).encode(), 0.0), max_bytes=4096
    )
    assert accepted.body_json == '{"é":"a\u2028b","n":[1,2.5,null]}'
    assert accepted.kind == "telemetry" and accepted.device == "box-1"


def test_topic_verdicts_hold_on_every_message_not_only_the_first() -> None:
    """The parsed topic is cached per topic: the second message on it must get the same answer."""
    long_device = "x" * 129  # a valid MQTT level, too long for a device id
    for _ in range(2):
        code, message = _refusal(f"edge/v1/{long_device}/telemetry", _payload(device=long_device))
        assert code == "bad_schema" and "cannot be an MQTT topic level" in message
        assert _refusal("edge/v1/box-1/cmd/c1", _payload()) == (
            "bad_topic",
            "topic 'edge/v1/box-1/cmd/c1' is not one the hub takes messages from",
        )
        assert _refusal("edge/v1/box-1/telemetry", _payload(device="box-2")) == (
            "device_mismatch",
            f"message {GOOD_ID} says device 'box-2' but was published on 'box-1''s topic",
        )
        assert validate(Incoming("edge/v1/box-1/telemetry", _payload(), 0.0), max_bytes=4096).id == GOOD_ID
