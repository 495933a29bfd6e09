"""Hub discovery: TXT parsing and selection, and a real zeroconf announcement found on loopback."""

from __future__ import annotations

import random
import uuid

import pytest

from sync.discovery import HubCandidate, advertise_hub, browse, candidate_from, choose, discover_hub


def test_candidate_from_txt_properties() -> None:
    plain = candidate_from("a", ["10.0.0.5"], 1883, {b"v": b"1"})
    assert plain == HubCandidate("a", "mqtt://10.0.0.5:1883", 0, False)
    tls = candidate_from("b", ["10.0.0.6", "fe80::1"], 8883, {b"tls": b"1", b"priority": b"5"})
    assert tls == HubCandidate("b", "mqtts://10.0.0.6:8883", 5, True)
    explicit = candidate_from("c", ["10.0.0.7"], 1, {"mqtt": "mqtts://hub.site:8883"})
    assert explicit.url == "mqtts://hub.site:8883" and explicit.tls
    v6 = candidate_from("d", ["fd00::2"], 1883, {})
    assert v6.url == "mqtt://[fd00::2]:1883"
    assert candidate_from("e", ["10.0.0.8"], 1883, {b"v": b"2"}) is None  # a future protocol
    assert candidate_from("f", [], 1883, {}) is None
    assert candidate_from("g", ["10.0.0.9"], 1883, {"mqtt": "http://nope"}) is None


def test_choose_prefers_priority_then_tls_then_name() -> None:
    a = HubCandidate("a", "mqtt://a:1883", 0, False)
    b = HubCandidate("b", "mqtts://b:8883", 0, True)
    c = HubCandidate("c", "mqtts://c:8883", 1, True)
    assert choose([c, a, b]) == b
    assert choose([c, a]) == a
    assert choose([]) is None


def test_a_hub_announced_on_loopback_is_found() -> None:
    """Real multicast DNS on 127.0.0.1 (works here; on a host without multicast on lo this skips).

    The name and port are unique per run: another test run on the same machine announces on the
    same loopback.
    """
    name = f"hub-{uuid.uuid4().hex[:8]}"
    port = random.randint(20000, 60000)
    try:
        with advertise_hub(name, port, properties={"priority": "1"}, interfaces=["127.0.0.1"]):
            found = browse(3.0, interfaces=["127.0.0.1"])
    except OSError as exc:  # pragma: no cover - depends on the host's network
        pytest.skip(f"multicast on loopback is not available here: {exc}")
    ours = [c for c in found if c.name == f"{name}._edge-hub._tcp.local."]
    if not found:  # pragma: no cover
        pytest.skip("no mDNS answer on loopback on this host")
    assert [(c.url, c.priority, c.tls) for c in ours] == [(f"mqtt://127.0.0.1:{port}", 1, False)]


async def test_nothing_found_means_offline() -> None:
    assert await discover_hub(0.3, interfaces=["127.0.0.1"]) is None
