"""Offline licences: device or fleet, features, expiry, signature, clock set back; checked with no network."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.errors import BadRequestError
from agent.security.licence import LicenceChecker, LicenceError, make_licence
from models import signing

DAY = 86400.0


@pytest.fixture
def vendor():  # type: ignore[no-untyped-def]
    return signing.generate_keypair()


def checker(tmp_path: Path, vendor, **kw) -> LicenceChecker:  # type: ignore[no-untyped-def]
    args = {"vendor_keys": [vendor.public_hex], "device_id": "ea-1", "gated": ["llm", "voice"]} | kw
    return LicenceChecker(tmp_path / "licence.json", **args)


def test_valid_licence_enables_only_its_features(tmp_path: Path, vendor) -> None:  # type: ignore[no-untyped-def]
    c = checker(tmp_path, vendor)
    with pytest.raises(LicenceError, match="needs a licence: no licence installed"):
        c.require("llm")
    c.require("sensors")  # not gated: always allowed
    doc = make_licence(
        vendor.private_hex,
        licence_id="L1",
        issued_to="ACME",
        features=["llm"],
        expires=time.time() + 30 * DAY,
        devices=["ea-1"],
    )
    st = c.install(json.dumps(doc).encode())
    assert st.valid and st.features == ("llm",)
    c.require("llm")
    with pytest.raises(LicenceError, match="'voice' is not included in licence L1"):
        c.require("voice")
    assert c.allowed("llm") and not c.allowed("voice")


def test_fleet_licence(tmp_path: Path, vendor) -> None:  # type: ignore[no-untyped-def]
    doc = make_licence(
        vendor.private_hex,
        licence_id="F",
        issued_to="ACME",
        features=["voice"],
        expires=time.time() + DAY,
        fleets=["acme-prod"],
    )
    assert checker(tmp_path, vendor, fleet="acme-prod").check_document(doc).valid
    st = checker(tmp_path, vendor, fleet="other").check_document(doc)
    assert not st.valid and "not device ea-1 or fleet other" in st.reason


@pytest.mark.parametrize(
    "case, reason",
    [
        ("other_device", "for other devices"),
        ("expired", "expired on"),
        ("tampered", "signature is not valid"),
        ("stranger", "signature is not valid"),
        ("no_vendor_key", "no vendor key"),
    ],
)
def test_refusals(tmp_path: Path, vendor, case: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    key = signing.generate_keypair().private_hex if case == "stranger" else vendor.private_hex
    doc = make_licence(
        key,
        licence_id="L",
        issued_to="x",
        features=["llm"],
        expires=time.time() + (-DAY if case == "expired" else DAY),
        devices=["ea-2" if case == "other_device" else "ea-1"],
    )
    if case == "tampered":
        doc["licence"]["features"].append("voice")
    c = checker(tmp_path, vendor, **({"vendor_keys": []} if case == "no_vendor_key" else {}))
    (tmp_path / "licence.json").write_text(json.dumps(doc))
    with pytest.raises(LicenceError) as exc:
        c.require("llm")
    assert reason in str(exc.value) and "edge-agent licence install" in str(exc.value)
    assert exc.value.http_status == 403
    with pytest.raises(BadRequestError, match="licence refused"):
        c.install(json.dumps(doc).encode())


def test_clock_set_back(tmp_path: Path, vendor) -> None:  # type: ignore[no-untyped-def]
    now = time.time()
    c = checker(tmp_path, vendor)
    doc = make_licence(
        vendor.private_hex,
        licence_id="L",
        issued_to="x",
        features=["llm"],
        expires=now + 10 * DAY,
        devices=["ea-1"],
        now=now,
    )
    c.install(json.dumps(doc).encode(), now=now)
    c.require("llm", now=now + DAY)
    with pytest.raises(LicenceError, match="expired"):
        c.require("llm", now=now + 11 * DAY)  # the box has seen day 11
    with pytest.raises(LicenceError, match="clock is behind"):
        c.require("llm", now=now + 5 * DAY)  # ...and the clock is then set back to day 5
