"""Offline licences: a file signed by the vendor key naming devices (or fleets), features and an expiry.

Checked with no network: the vendor's public keys are in the config
(``security.vendor_keys``), the licence file in the data dir. Only the
features listed in ``security.licensed_features`` are gated; everything else
works without a licence, so a box with no licence still runs its free
features. A refused feature gets a message that says which feature, why
(no licence, wrong device, expired, feature not included, bad signature) and
what to do.

Clocks on offline boxes can be set back to stretch an expired licence; the
highest time seen is remembered beside the licence, and a clock more than a
day behind it is treated as tampering.

Signature: Ed25519 (``models.signing``) over the canonical JSON of the
``licence`` object, which carries a ``kind`` of its own so no other signed
document can pass for a licence.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import BadRequestError, EdgeAgentError
from agent.security.fileio import atomic_write_json, canonical_json
from agent.security.tuf import format_expires, parse_expires
from models import signing

KIND = "edge-agent/licence/v1"
LICENCE_FILE = "licence.json"
_CLOCK_SLACK_S = 86400.0


class LicenceError(EdgeAgentError, code="licence_required", http_status=403):
    """A feature outside the licence was asked for."""


def make_licence(
    vendor_private_hex: str,
    *,
    licence_id: str,
    issued_to: str,
    features: Iterable[str],
    expires: float,
    devices: Iterable[str] = (),
    fleets: Iterable[str] = (),
    now: float | None = None,
) -> dict[str, Any]:
    """The vendor side: a signed licence document (JSON-ready)."""
    devices, fleets = sorted(set(devices)), sorted(set(fleets))
    if not devices and not fleets:
        raise BadRequestError("a licence must name at least one device or fleet")
    body = {
        "kind": KIND,
        "id": licence_id,
        "issued_to": issued_to,
        "devices": devices,
        "fleets": fleets,
        "features": sorted(set(features)),
        "issued_at": format_expires(time.time() if now is None else now),
        "expires": format_expires(expires),
    }
    sig = signing.sign(canonical_json(body), vendor_private_hex)
    return {"licence": body, "key_id": sig.key_id, "sig": sig.value}


@dataclass(frozen=True)
class LicenceStatus:
    valid: bool
    reason: str
    licence_id: str = ""
    issued_to: str = ""
    features: tuple[str, ...] = ()
    expires: str = ""
    gated: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "reason": self.reason,
            "id": self.licence_id,
            "issued_to": self.issued_to,
            "features": list(self.features),
            "expires": self.expires,
            "gated_features": list(self.gated),
        }


class LicenceChecker:
    def __init__(
        self,
        path: str | Path,
        *,
        vendor_keys: Iterable[str],
        device_id: str,
        fleet: str = "",
        gated: Iterable[str] = (),
        clock_file: str | Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.vendor_keys = list(vendor_keys)
        self.device_id = device_id
        self.fleet = fleet
        self.gated = tuple(sorted(set(gated)))
        self.clock_file = Path(clock_file) if clock_file else self.path.with_name("licence-clock.json")

    @classmethod
    def from_settings(cls, settings: Any) -> LicenceChecker:
        sec = settings.security
        path = Path(sec.licence_file) if sec.licence_file else Path(settings.data_dir) / LICENCE_FILE
        return cls(
            path,
            vendor_keys=sec.vendor_keys,
            device_id=settings.device_id,
            fleet=sec.fleet,
            gated=sec.licensed_features,
            clock_file=Path(settings.data_dir) / "licence-clock.json",
        )

    # ------------------------------------------------------------ checking

    def status(self, now: float | None = None) -> LicenceStatus:
        now = time.time() if now is None else now
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return LicenceStatus(False, f"no licence installed ({self.path})", gated=self.gated)
        except (OSError, ValueError) as exc:
            return LicenceStatus(
                False, f"the licence file {self.path} is unreadable: {exc}", gated=self.gated
            )
        return self.check_document(doc, now)

    def check_document(self, doc: Any, now: float | None = None) -> LicenceStatus:
        now = time.time() if now is None else now
        body = doc.get("licence") if isinstance(doc, dict) else None
        if not isinstance(body, dict) or body.get("kind") != KIND:
            return LicenceStatus(False, "not an edge-agent licence file", gated=self.gated)
        info: dict[str, Any] = {
            "licence_id": str(body.get("id", "")),
            "issued_to": str(body.get("issued_to", "")),
            "features": tuple(body.get("features") or ()),
            "expires": str(body.get("expires", "")),
            "gated": self.gated,
        }
        if not self.vendor_keys:
            return LicenceStatus(False, "no vendor key is configured (security.vendor_keys)", **info)
        try:
            signing.verify(
                canonical_json(body),
                signing.Signature(key_id=str(doc.get("key_id", "")), value=str(doc.get("sig", ""))),
                self.vendor_keys,
            )
        except BadRequestError as exc:
            return LicenceStatus(
                False,
                "the licence signature is not valid: " + str(exc).replace("the manifest", "the licence"),
                **info,
            )
        if self.device_id not in (body.get("devices") or []) and not (
            self.fleet and self.fleet in (body.get("fleets") or [])
        ):
            return LicenceStatus(
                False,
                f"the licence is for other devices/fleets, not device {self.device_id}"
                + (f" or fleet {self.fleet}" if self.fleet else ""),
                **info,
            )
        try:
            expires = parse_expires(body.get("expires"))
        except BadRequestError:
            return LicenceStatus(False, "the licence has no valid expiry", **info)
        seen = self._clock_high_water(now)
        if now < seen - _CLOCK_SLACK_S:
            return LicenceStatus(
                False,
                f"the clock is behind a time already seen ({format_expires(seen)}); "
                "fix the clock (NTP) before licensed features can run",
                **info,
            )
        if expires <= now:
            return LicenceStatus(False, f"the licence expired on {format_expires(expires)}", **info)
        return LicenceStatus(True, "valid", **info)

    def require(self, feature: str, now: float | None = None) -> None:
        """Return when ``feature`` may run; LicenceError with the reason and the fix otherwise."""
        if feature not in self.gated:
            return
        st = self.status(now)
        if not st.valid:
            raise LicenceError(
                f"feature {feature!r} needs a licence: {st.reason}. Install one with "
                "`edge-agent licence install FILE` (ask your vendor, quoting this device id: "
                f"{self.device_id})"
            )
        if feature not in st.features:
            raise LicenceError(
                f"feature {feature!r} is not included in licence {st.licence_id} (it covers "
                f"{', '.join(st.features) or 'no features'}); ask your vendor to add it"
            )

    def allowed(self, feature: str) -> bool:
        try:
            self.require(feature)
            return True
        except LicenceError:
            return False

    # ------------------------------------------------------------ installing

    def install(self, data: bytes, now: float | None = None) -> LicenceStatus:
        """Check a licence file and, when valid for this box, make it the installed one."""
        try:
            doc = json.loads(data)
        except ValueError:
            raise BadRequestError("the licence file is not JSON") from None
        st = self.check_document(doc, now)
        if not st.valid:
            raise BadRequestError(f"licence refused: {st.reason}", code="licence_invalid")
        atomic_write_json(self.path, doc, mode=0o644)
        return st

    def _clock_high_water(self, now: float) -> float:
        try:
            seen = float(json.loads(self.clock_file.read_text())["seen"])
        except (OSError, ValueError, KeyError, TypeError):
            seen = 0.0
        if now > seen + 3600:  # written at most hourly: a check must not mean a disk write
            try:
                atomic_write_json(self.clock_file, {"seen": now}, mode=0o644)
            except OSError:
                pass
        return seen
