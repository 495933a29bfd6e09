"""Checking one incoming MQTT message before it may be stored.

Every rejection raises BadRequestError with a ``code`` that becomes the
``reason`` label of ``edge_hub_rejected_total``, so an operator sees *why*
messages are refused (a device on an old schema, a misbehaving client
publishing into our topics...) without reading logs. Checks that need the
database (is the device known, did we send this command) happen in the write
transaction, in ``intake.py``.

Bodies are checked only as far as the hub uses them: state (registry fields),
alerts (level, title, state) and results (command id, ok). Telemetry and event
bodies are stored as the device sent them: the device side owns their shape.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, NamedTuple

from agent.core.errors import BadRequestError
from sync import topics
from sync.envelope import Envelope, decode

#: envelope kinds accepted on each topic kind (singular or plural: both ends spell it from the topic)
_KINDS = {
    "state": ("state",),
    "telemetry": ("telemetry",),
    "alerts": ("alert", "alerts"),
    "events": ("event", "events"),
    "result": ("result",),
}


#: one encoder for every body: json.dumps with options builds a new JSONEncoder per call
_BODY_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class Incoming(NamedTuple):
    """A message as the MQTT reader hands it over; ``mid``/``qos`` are needed to acknowledge it.

    A NamedTuple: one is made per message in paho's thread (a frozen dataclass cost ~1 us more)."""

    topic: str
    payload: bytes
    received_at: float
    mid: int = 0
    qos: int = 0


class Accepted:
    """A message that passed every check that needs no database.

    A plain class with slots, ``id`` and ``device`` copied from the envelope: the batch writer reads
    them several times per message (properties on a frozen dataclass cost a call each time)."""

    __slots__ = ("body_json", "command_id", "device", "env", "id", "incoming", "kind")

    def __init__(
        self, incoming: Incoming, env: Envelope, kind: str, body_json: str, command_id: str | None = None
    ) -> None:
        self.incoming = incoming
        self.env = env
        self.kind = kind  # the topic kind: state | telemetry | alerts | events | result
        self.body_json = body_json
        self.command_id = command_id
        self.id: str = env.id
        self.device: str = env.device

    def __repr__(self) -> str:
        return f"Accepted({self.kind} {self.id} from {self.device!r})"


def reject(code: str, message: str) -> BadRequestError:
    return BadRequestError(message, code=code)


def validate(msg: Incoming, *, max_bytes: int) -> Accepted:
    """Parse and check ``msg``; BadRequestError(code=reason) when it must be refused."""
    parsed, level_error = _route(msg.topic)
    if parsed is None or parsed.kind == "cmd":
        raise reject("bad_topic", f"topic {msg.topic!r} is not one the hub takes messages from")
    env = decode(msg.payload, max_bytes=max_bytes)
    if env.device != parsed.device:
        raise reject(
            "device_mismatch",
            f"message {env.id} says device {env.device!r} but was published on {parsed.device!r}'s topic",
        )
    if level_error is not None:  # env.device is parsed.device's text here: the topic's verdict holds
        raise reject("bad_schema", level_error)
    if env.kind not in _KINDS[parsed.kind]:
        raise reject(
            "wrong_kind", f"message {env.id} of kind {env.kind!r} on a {parsed.kind} topic ({msg.topic})"
        )
    check = _BODY_CHECKS.get(parsed.kind)
    if check is not None:
        check(env, parsed)
    try:
        body_json = _BODY_JSON(env.body)
    except ValueError:
        raise reject(
            "bad_schema", f"message {env.id} body holds NaN or Infinity, which JSON has not"
        ) from None
    if "\x00" in body_json:
        raise reject("bad_schema", f"message {env.id} body holds a NUL character")
    return Accepted(msg, env, parsed.kind, body_json, parsed.command_id)


@lru_cache(maxsize=16384)
def _route(topic: str) -> tuple[topics.ParsedTopic | None, str | None]:
    """The topic parsed, and why its device level cannot be a device id (None: it can).

    A fleet publishes on a few topics per device, so each is parsed once, not per message;
    bounded, so a client inventing topics costs a parse each, as before, and bounded memory.
    """
    parsed = topics.parse(topic)
    if parsed is None:
        return None, None
    try:
        topics.check_level(parsed.device)
    except ValueError as exc:
        return parsed, str(exc)
    return parsed, None


def _want(env: Envelope, key: str, types: type | tuple[type, ...], *, required: bool = True) -> Any:
    value = env.body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        names = "/".join(t.__name__ for t in _as_tuple(types))
        raise reject(
            "bad_schema", f"{env.kind} message {env.id}: body.{key} must be {names}, got {value!r:.60}"
        )
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _check_state(env: Envelope, parsed: topics.ParsedTopic) -> None:
    _want(env, "online", bool)
    _want(env, "agent_version", str, required=False)
    _want(env, "public_key", str, required=False)
    labels = _want(env, "labels", dict, required=False)
    if labels and not all(
        isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in labels.items()
    ):
        raise reject("bad_schema", f"state message {env.id}: labels must map names to plain values")
    _want(env, "models", (list, dict), required=False)


def alert_fields(body: dict[str, Any]) -> dict[str, str | None] | None:
    """level, title, state (and the device's alert id) from an alert body; None when absent.

    Two shapes are accepted: the fields at the top of the body, or under ``body["alert"]`` (the
    agent's sensor pipeline sends ``{"transition": ..., "alert": {snapshot}}``).
    """
    for source in (body, body.get("alert")):
        if not isinstance(source, dict):
            continue
        fields = {k: source.get(k) for k in ("level", "title", "state")}
        if all(isinstance(v, str) for v in fields.values()):
            alert_id = next(
                (source[k] for k in ("alert_id", "id", "key") if isinstance(source.get(k), str)), None
            )
            return {**fields, "alert_id": alert_id}
    return None


def _check_alert(env: Envelope, parsed: topics.ParsedTopic) -> None:
    if alert_fields(env.body) is None:
        raise reject(
            "bad_schema",
            f"alert message {env.id}: the body (or body.alert) needs string fields level, title and state",
        )


def _check_result(env: Envelope, parsed: topics.ParsedTopic) -> None:
    command_id = _want(env, "command_id", str)
    if command_id != parsed.command_id:
        raise reject(
            "bad_schema",
            f"result {env.id} answers command {command_id!r} but came on the topic of {parsed.command_id!r}",
        )
    _want(env, "ok", bool)
    _want(env, "name", str, required=False)
    _want(env, "error", (str, dict), required=False)  # the agent sends {"code", "message"}


def error_text(error: Any) -> str | None:
    """A result's error as one readable line: ``code: message`` for the agent's structured errors."""
    if error is None or isinstance(error, str):
        return error
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        if isinstance(message, str):
            return f"{code}: {message}" if isinstance(code, str) and code else message
    return json.dumps(error, sort_keys=True)


_BODY_CHECKS = {"state": _check_state, "alerts": _check_alert, "result": _check_result}


__all__ = ["Accepted", "Incoming", "alert_fields", "error_text", "reject", "validate"]
