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
from runtimes.base import TensorSpec

SCHEMA = 1
MANIFEST_FILE = "manifest.json"
PRECISIONS = ("fp32", "fp16", "int8")
DEVICE_KINDS = ("cpu", "gpu", "npu", "tpu")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
RUNTIME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_PATH_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")
_MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def canonical_json(obj: Any) -> bytes:
    """The bytes a signature covers: sorted keys, compact, UTF-8, finite numbers only."""
    try:
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except ValueError as exc:
        raise BadRequestError(f"manifest cannot be serialised canonically: {exc}") from None


# -- strict field access -------------------------------------------------------------------------------


class _Obj:
    """A JSON object read under a path, that must end with every key consumed."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise BadRequestError(f"{path or 'manifest'} must be an object, got {type(value).__name__}")
        self.value = value
        self.path = path
        self.seen: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(
        self, key: str, types: type | tuple[type, ...], *, required: bool = True, default: Any = None
    ) -> Any:
        self.seen.add(key)
        if key not in self.value:
            if required:
                raise BadRequestError(f"missing field {self._name(key)!r}", code="manifest_missing_field")
            return default
        value = self.value[key]
        if value is None and not required:
            return default
        # bool is an int subclass: refuse it where a number is expected
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
            raise BadRequestError(
                f"field {self._name(key)!r} must be {names}, got {type(value).__name__}",
                code="manifest_bad_field",
            )
        return value

    def child(self, key: str) -> str:
        return self._name(key)

    def done(self) -> None:
        unknown = sorted(set(self.value) - self.seen)
        if unknown:
            raise BadRequestError(
                f"unknown field {self._name(unknown[0])!r}"
                + (f" (and {unknown[1:]})" if unknown[1:] else ""),
                code="manifest_unknown_field",
            )


def _bad(path: str, why: str) -> BadRequestError:
    return BadRequestError(f"field {path!r} {why}", code="manifest_bad_field")


def _check_rel_path(value: str, path: str) -> str:
    parts = value.split("/")
    if not value or any(not _PATH_PART_RE.match(p) for p in parts):
        raise _bad(path, f"must be a relative path of plain names (no '..', no leading '/'), got {value!r}")
    if value == MANIFEST_FILE:
        raise _bad(path, f"must not be {MANIFEST_FILE}")
    return value


def _number(obj: _Obj, key: str, *, required: bool = True, default: float | None = None) -> float | None:
    value = obj.get(key, (int, float), required=required, default=default)
    if value is not None and value < 0:
        raise _bad(obj.child(key), "must be >= 0")
    return None if value is None else float(value)


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
        o = _Obj(value, path)
        q = cls(
            method=o.get("method", str),
            source_precision=o.get("source_precision", str),
            source_size=o.get("source_size", int),
            size=o.get("size", int),
            max_abs_error=_number(o, "max_abs_error") or 0.0,
            max_rel_error=_number(o, "max_rel_error") or 0.0,
            calibration_max_abs_error=_number(o, "calibration_max_abs_error", required=False),
            calibration_max_rel_error=_number(o, "calibration_max_rel_error", required=False),
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
        o = _Obj(value, path)
        runtime = o.get("runtime", str)
        if not RUNTIME_RE.match(runtime):
            raise _bad(o.child("runtime"), f"is not a runtime name: {runtime!r}")
        precision = o.get("precision", str)
        if precision not in PRECISIONS:
            raise _bad(o.child("precision"), f"must be one of {list(PRECISIONS)}, got {precision!r}")
        files = o.get("files", list)
        if not files:
            raise _bad(o.child("files"), "must list at least one file")
        for i, f in enumerate(files):
            fpath = f"{o.child('files')}[{i}]"
            if not isinstance(f, str):
                raise _bad(fpath, "must be a string")
            if f not in known_files:
                raise _bad(fpath, f"names {f!r}, which is not in the manifest's files")
        devices = o.get("devices", list, required=False, default=[])
        for i, d in enumerate(devices):
            if d not in DEVICE_KINDS:
                raise _bad(f"{o.child('devices')}[{i}]", f"must be one of {list(DEVICE_KINDS)}, got {d!r}")
        q = o.get("quantization", dict, required=False)
        variant = cls(
            runtime=runtime,
            precision=precision,
            files=tuple(files),
            devices=tuple(devices),
            atol=_number(o, "atol", required=False),
            rtol=_number(o, "rtol", required=False),
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
        o = _Obj(value, path)
        inputs = o.get("inputs", dict)
        outputs = o.get("outputs", dict)
        for key, group in (("inputs", inputs), ("outputs", outputs)):
            for name, tensor in group.items():
                t = _Obj(tensor, f"{o.child(key)}.{name}")
                t.get("dtype", str)
                t.get("shape", list)
                t.get("data", list)
                t.done()
        smoke = cls(
            inputs=inputs,
            outputs=outputs,
            atol=_number(o, "atol", required=False, default=1e-4) or 0.0,
            rtol=_number(o, "rtol", required=False, default=1e-3) or 0.0,
        )
        o.done()
        return smoke


def _parse_specs(o: _Obj, key: str) -> tuple[TensorSpec, ...]:
    specs = []
    for i, item in enumerate(o.get(key, list)):
        t = _Obj(item, f"{o.child(key)}[{i}]")
        shape = t.get("shape", list)
        for j, dim in enumerate(shape):
            if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
                raise _bad(f"{t.child('shape')}[{j}]", f"must be an integer or null, got {dim!r}")
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
        o = _Obj(value, "")
        schema = o.get("schema", int)
        if schema != SCHEMA:
            raise _bad("schema", f"is {schema}; this edge-agent reads schema {SCHEMA} (upgrade edge-agent)")
        name = o.get("name", str)
        if not NAME_RE.match(name):
            raise _bad("name", f"must match {NAME_RE.pattern}, got {name!r}")
        version = o.get("version", str)
        if not VERSION_RE.match(version):
            raise _bad("version", f"must match {VERSION_RE.pattern}, got {version!r}")
        files: list[FileEntry] = []
        for i, item in enumerate(o.get("files", list)):
            f = _Obj(item, f"files[{i}]")
            path = _check_rel_path(f.get("path", str), f.child("path"))
            sha = f.get("sha256", str)
            if not _SHA256_RE.match(sha):
                raise _bad(f.child("sha256"), "must be 64 lowercase hex characters")
            size = f.get("size", int)
            if size < 0:
                raise _bad(f.child("size"), "must be >= 0")
            f.done()
            if any(e.path == path for e in files):
                raise _bad(f.child("path"), f"repeats {path!r}")
            files.append(FileEntry(path, sha, size))
        if not files:
            raise _bad("files", "must list at least one file")
        known = {f.path for f in files}
        variants = tuple(
            Variant.parse(v, f"variants[{i}]", known) for i, v in enumerate(o.get("variants", list))
        )
        if not variants:
            raise _bad("variants", "must list at least one variant")
        labels = [v.label for v in variants]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                raise _bad(f"variants[{i}]", f"repeats {label}; one variant per runtime and precision")
        memory = o.get("memory_bytes", int)
        if memory <= 0:
            raise _bad("memory_bytes", "must be > 0")
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
    top = _Obj(doc, "")
    body = top.get("manifest", dict)
    sig_doc = top.get("signature", dict, required=False)
    top.done()
    signature = None
    if sig_doc is not None:
        s = _Obj(sig_doc, "signature")
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
