"""The MQTT topic scheme, v1 (see shared/design.md).

``edge/v1/{device}/state`` (retained; the last will sets it offline) ·
``…/telemetry`` · ``…/alerts`` · ``…/events`` · ``…/cmd/{id}`` (hub → device,
signed) · ``…/cmd/{id}/result`` · ``…/receipts`` (hub → device: the ids the hub
has stored, batched; the device deletes an outbox row only then). Device ids are single topic levels: no
``/``, ``+`` or ``#`` (config validation enforces it).
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "edge/v1"
KINDS = ("state", "telemetry", "alerts", "events")
#: hub -> device; not a device kind (the hub never subscribes to it)
RECEIPTS = "receipts"
#: retained, published by each hub instance when it connects: boxes send again at once what awaits a
#: receipt instead of waiting out their timeout (the '$' keeps it clear of any device id)
HUB_PRESENCE = f"{ROOT}/$hub/online"


def device_topic(device: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}; expected one of {', '.join(KINDS)}")
    return f"{ROOT}/{check_level(device)}/{kind}"


def command_topic(device: str, command_id: str) -> str:
    return f"{ROOT}/{check_level(device)}/cmd/{check_level(command_id)}"


def result_topic(device: str, command_id: str) -> str:
    return command_topic(device, command_id) + "/result"


def receipt_topic(device: str) -> str:
    """Hub -> device: which of the device's messages the hub stored (``sync/receipts.py``)."""
    return f"{ROOT}/{check_level(device)}/{RECEIPTS}"


def command_subscription(device: str) -> str:
    """What a device subscribes to for its commands."""
    return f"{ROOT}/{check_level(device)}/cmd/+"


def hub_subscriptions(share_group: str | None = "hub") -> list[str]:
    """What the hub subscribes to; with a share group, instances split the load (MQTT 5)."""
    topics = [f"{ROOT}/+/{kind}" for kind in KINDS] + [f"{ROOT}/+/cmd/+/result"]
    if share_group:
        return [f"$share/{share_group}/{t}" for t in topics]
    return topics


def check_level(value: str) -> str:
    if not value or any(c in value for c in "/+#\0") or len(value) > 128:
        raise ValueError(
            f"{value!r} cannot be an MQTT topic level (no '/', '+', '#', at most 128 characters)"
        )
    return value


@dataclass(frozen=True)
class ParsedTopic:
    device: str
    kind: str  # state | telemetry | alerts | events | cmd | result | receipts
    command_id: str | None = None


def parse(topic: str) -> ParsedTopic | None:
    """Split a v1 topic; None for anything that is not one of ours."""
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != ROOT:
        return None
    device = parts[2]
    rest = parts[3:]
    if len(rest) == 1 and (rest[0] in KINDS or rest[0] == RECEIPTS):
        return ParsedTopic(device, rest[0])
    if len(rest) == 2 and rest[0] == "cmd":
        return ParsedTopic(device, "cmd", rest[1])
    if len(rest) == 3 and rest[0] == "cmd" and rest[2] == "result":
        return ParsedTopic(device, "result", rest[1])
    return None
