"""The manifest of one model version, its strict parser and its canonical bytes.

``manifest.json`` holds ``{"manifest": {...}, "signature": {...}}``. The
signature covers the *canonical bytes* of the ``manifest`` object: JSON with
sorted keys, no whitespace, UTF-8, no NaN (``canonical_json``). Verification
canonicalises the object exactly as it was read, so a signer and a verifier
agree byte for byte without either re-serialising through dataclasses.

Parsing is strict on purpose: a typo in a field name must not silently drop a
file from hash checking or a device hint. Unknown or missing fields raise
BadRequestError naming the field path (``variants[1].precision``).

A variant lists the files one runtime needs; its first file is the one handed
to the runtime's ``load`` (for OpenVINO the ``.xml``, its ``.bin`` sits beside
it). Tensors in the smoke test stay in their JSON form here, so reading a
manifest never imports numpy; ``models.tensors`` decodes them when needed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.core.errors import BadRequestError
from models.signing import Signature
from models.strict_json import StrictObject, bad_field, number, rel_path
from runtimes.base import TensorSpec

SCHEMA = 1
MANIFEST_FILE = "manifest.json"
PRECISIONS = ("fp32", "fp16", "int8")
DEVICE_KINDS = ("cpu", "gpu", "npu", "tpu")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
RUNTIME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def canonical_json(obj: Any) -> bytes:
    """The bytes a signature covers: sorted keys, compact, UTF-8, finite numbers only."""
    try:
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except ValueError as exc:
        raise BadRequestError(f"manifest cannot be serialised canonically: {exc}") from None


# -- the model -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Quantization:
    """Where a quantized variant came from and how far it drifts from FP32.

    ``max_rel_error`` is the max absolute error divided by the largest absolute
    FP32 output (relative to the output's range, so outputs near zero do not
    make it explode).
    """

    method: str  # fp16 | int8-dynamic | int8-static
    source_precision: str
    source_size: int
    size: int
    max_abs_error: float
    max_rel_error: float
    calibration_max_abs_error: float | None = None
    calibration_max_rel_error: float | None = None
    calibration_samples: int = 0

    _FIELDS = (
        "method source_precision source_size size max_abs_error max_rel_error "
        "calibration_max_abs_error calibration_max_rel_error calibration_samples"
    ).split()

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._FIELDS}
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def parse(cls, value: Any, path: str) -> Quantization:
        o = StrictObject(value, path)
        q = cls(
            method=o.get("method", str),
            source_precision=o.get("source_precision", str),
            source_size=o.get("source_size", int),
            size=o.get("size", int),
            max_abs_error=number(o, "max_abs_error") or 0.0,
            max_rel_error=number(o, "max_rel_error") or 0.0,
            calibration_max_abs_error=number(o, "calibration_max_abs_error", required=False),
            calibration_max_rel_error=number(o, "calibration_max_rel_error", required=False),
            calibration_samples=o.get("calibration_samples", int, required=False, default=0),
        )
        o.done()
        return q


@dataclass(frozen=True)
class Variant:
    """The files one runtime loads, at one precision, with optional device hints.

    ``atol``/``rtol`` override the smoke test's tolerance for this variant (a
    quantized variant drifts more than FP32 and is still correct).
    """

    runtime: str
    precision: str
    files: tuple[str, ...]
    devices: tuple[str, ...] = ()
    atol: float | None = None
    rtol: float | None = None
    quantization: Quantization | None = None

    @property
    def label(self) -> str:
        return f"{self.runtime}/{self.precision}"

    @property
    def model_file(self) -> str:
        return self.files[0]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "runtime": self.runtime,
            "precision": self.precision,
            "files": list(self.files),
        }
        if self.devices:
            out["devices"] = list(self.devices)
        if self.atol is not None:
            out["atol"] = self.atol
        if self.rtol is not None:
            out["rtol"] = self.rtol
        if self.quantization is not None:
            out["quantization"] = self.quantization.to_dict()
        return out

    @classmethod
    def parse(cls, value: Any, path: str, known_files: set[str]) -> Variant:
        o = StrictObject(value, path)
        runtime = o.get("runtime", str)
        if not RUNTIME_RE.match(runtime):
            raise bad_field(o.child("runtime"), f"is not a runtime name: {runtime!r}")
        precision = o.get("precision", str)
        if precision not in PRECISIONS:
            raise bad_field(o.child("precision"), f"must be one of {list(PRECISIONS)}, got {precision!r}")
        files = o.get("files", list)
        if not files:
            raise bad_field(o.child("files"), "must list at least one file")
        for i, f in enumerate(files):
            fpath = f"{o.child('files')}[{i}]"
            if not isinstance(f, str):
                raise bad_field(fpath, "must be a string")
            if f not in known_files:
                raise bad_field(fpath, f"names {f!r}, which is not in the manifest's files")
        devices = o.get("devices", list, required=False, default=[])
        for i, d in enumerate(devices):
            if d not in DEVICE_KINDS:
                raise bad_field(
                    f"{o.child('devices')}[{i}]", f"must be one of {list(DEVICE_KINDS)}, got {d!r}"
                )
        q = o.get("quantization", dict, required=False)
        variant = cls(
            runtime=runtime,
            precision=precision,
            files=tuple(files),
            devices=tuple(devices),
            atol=number(o, "atol", required=False),
            rtol=number(o, "rtol", required=False),
            quantization=Quantization.parse(q, o.child("quantization")) if q is not None else None,
        )
        o.done()
        return variant


@dataclass(frozen=True)
class SmokeTest:
    """Known inputs and the outputs they must give; tensors in the JSON tensor form."""

    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    atol: float = 1e-4
    rtol: float = 1e-3

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
            "atol": self.atol,
            "rtol": self.rtol,
        }

    @classmethod
    def parse(cls, value: Any, path: str) -> SmokeTest:
        o = StrictObject(value, path)
        inputs = o.get("inputs", dict)
        outputs = o.get("outputs", dict)
        for key, group in (("inputs", inputs), ("outputs", outputs)):
            for name, tensor in group.items():
                t = StrictObject(tensor, f"{o.child(key)}.{name}")
                t.get("dtype", str)
                t.get("shape", list)
                t.get("data", list)
                t.done()
        smoke = cls(
            inputs=inputs,
            outputs=outputs,
            atol=number(o, "atol", required=False, default=1e-4) or 0.0,
            rtol=number(o, "rtol", required=False, default=1e-3) or 0.0,
        )
        o.done()
        return smoke


def _parse_specs(o: StrictObject, key: str) -> tuple[TensorSpec, ...]:
    specs = []
    for i, item in enumerate(o.get(key, list)):
        t = StrictObject(item, f"{o.child(key)}[{i}]")
        shape = t.get("shape", list)
        for j, dim in enumerate(shape):
            if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
                raise bad_field(f"{t.child('shape')}[{j}]", f"must be an integer or null, got {dim!r}")
        specs.append(TensorSpec(name=t.get("name", str), dtype=t.get("dtype", str), shape=tuple(shape)))
        t.done()
    return tuple(specs)


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    task: str
    files: tuple[FileEntry, ...]
    variants: tuple[Variant, ...]
    memory_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    smoke_test: SmokeTest | None = None
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)

    def variant(self, runtime: str, precision: str | None = None) -> Variant | None:
        for v in self.variants:
            if v.runtime == runtime and (precision is None or v.precision == precision):
                return v
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "files": [f.to_dict() for f in self.files],
            "variants": [v.to_dict() for v in self.variants],
            "memory_bytes": self.memory_bytes,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }
        if self.smoke_test is not None:
            out["smoke_test"] = self.smoke_test.to_dict()
        if self.description:
            out["description"] = self.description
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, value: Any) -> Manifest:
        o = StrictObject(value, "")
        schema = o.get("schema", int)
        if schema != SCHEMA:
            raise bad_field(
                "schema", f"is {schema}; this edge-agent reads schema {SCHEMA} (upgrade edge-agent)"
            )
        name = o.get("name", str)
        if not NAME_RE.match(name):
            raise bad_field("name", f"must match {NAME_RE.pattern}, got {name!r}")
        version = o.get("version", str)
        if not VERSION_RE.match(version):
            raise bad_field("version", f"must match {VERSION_RE.pattern}, got {version!r}")
        files: list[FileEntry] = []
        for i, item in enumerate(o.get("files", list)):
            f = StrictObject(item, f"files[{i}]")
            path = rel_path(f.get("path", str), f.child("path"), MANIFEST_FILE)
            sha = f.get("sha256", str)
            if not _SHA256_RE.match(sha):
                raise bad_field(f.child("sha256"), "must be 64 lowercase hex characters")
            size = f.get("size", int)
            if size < 0:
                raise bad_field(f.child("size"), "must be >= 0")
            f.done()
            if any(e.path == path for e in files):
                raise bad_field(f.child("path"), f"repeats {path!r}")
            files.append(FileEntry(path, sha, size))
        if not files:
            raise bad_field("files", "must list at least one file")
        known = {f.path for f in files}
        variants = tuple(
            Variant.parse(v, f"variants[{i}]", known) for i, v in enumerate(o.get("variants", list))
        )
        if not variants:
            raise bad_field("variants", "must list at least one variant")
        labels = [v.label for v in variants]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                raise bad_field(f"variants[{i}]", f"repeats {label}; one variant per runtime and precision")
        memory = o.get("memory_bytes", int)
        if memory <= 0:
            raise bad_field("memory_bytes", "must be > 0")
        smoke = o.get("smoke_test", dict, required=False)
        manifest = cls(
            name=name,
            version=version,
            task=o.get("task", str),
            files=tuple(files),
            variants=variants,
            memory_bytes=memory,
            inputs=_parse_specs(o, "inputs"),
            outputs=_parse_specs(o, "outputs"),
            smoke_test=SmokeTest.parse(smoke, "smoke_test") if smoke is not None else None,
            description=o.get("description", str, required=False, default=""),
            extra=o.get("extra", dict, required=False, default={}),
        )
        o.done()
        return manifest


@dataclass(frozen=True)
class SignedManifest:
    """A manifest as read from ``manifest.json``, with the exact bytes its signature covers."""

    manifest: Manifest
    signature: Signature | None
    signed_bytes: bytes

    def verify(self, trusted_keys: Any) -> str:
        from models.signing import verify

        return verify(self.signed_bytes, self.signature, trusted_keys)

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"manifest": json.loads(self.signed_bytes)}
        if self.signature is not None:
            body["signature"] = self.signature.to_dict()
        return (json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def sign_manifest(manifest: Manifest, private_hex: str) -> SignedManifest:
    from models.signing import sign

    data = manifest.canonical_bytes()
    return SignedManifest(manifest=manifest, signature=sign(data, private_hex), signed_bytes=data)


def unsigned(manifest: Manifest) -> SignedManifest:
    return SignedManifest(manifest=manifest, signature=None, signed_bytes=manifest.canonical_bytes())


def parse_manifest_json(data: bytes) -> SignedManifest:
    """Parse ``manifest.json`` strictly. Does not check the signature (``verify`` does)."""
    if len(data) > _MAX_MANIFEST_BYTES:
        raise BadRequestError(f"manifest.json is {len(data)} bytes; the limit is {_MAX_MANIFEST_BYTES}")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"manifest.json is not valid JSON: {exc}", code="manifest_invalid") from None
    top = StrictObject(doc, "")
    body = top.get("manifest", dict)
    sig_doc = top.get("signature", dict, required=False)
    top.done()
    signature = None
    if sig_doc is not None:
        s = StrictObject(sig_doc, "signature")
        signature = Signature(
            algorithm=s.get("algorithm", str), key_id=s.get("key_id", str), value=s.get("value", str)
        )
        s.done()
    # canonicalise what was read, not a re-serialised dataclass: the signer's bytes, exactly
    signed_bytes = canonical_json(body)
    prefixed = _prefix_errors(body)
    return SignedManifest(manifest=prefixed, signature=signature, signed_bytes=signed_bytes)


def _prefix_errors(body: dict[str, Any]) -> Manifest:
    try:
        return Manifest.from_dict(body)
    except BadRequestError as exc:
        raise BadRequestError(f"manifest.json: {exc}", code=exc.code) from None
