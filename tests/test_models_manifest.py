"""Manifest parsing (strict), canonical bytes, and Ed25519 signatures."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from agent.errors import BadRequestError, ConfigError
from models import signing
from models.manifest import MANIFEST_FILE, Manifest, canonical_json, parse_manifest_json, sign_manifest
from tests.models_fixtures import MLP_A, build_bundle, signing_key


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bundle"), MLP_A, runtimes=("onnxruntime", "openvino"))


def _doc(bundle: Path) -> dict:
    return json.loads((bundle / MANIFEST_FILE).read_bytes())


def _resign(body: dict) -> bytes:
    """Sign an arbitrary manifest body the way a publisher would, bypassing our own dataclasses."""
    sig = signing.sign(canonical_json(body), signing_key().private_hex)
    return json.dumps({"manifest": body, "signature": sig.to_dict()}).encode()


def test_round_trip_and_signature(bundle: Path) -> None:
    signed = parse_manifest_json((bundle / MANIFEST_FILE).read_bytes())
    m = signed.manifest
    assert m.name == "mlp-a" and m.version == "1.0.0"
    assert [v.label for v in m.variants] == ["onnxruntime/fp32", "openvino/fp32"]
    assert m.variants[0].model_file == "model.onnx"
    assert m.file("model.onnx").size == (bundle / "model.onnx").stat().st_size
    assert signed.verify([signing_key().public_hex]) == signing_key().key_id
    # the dataclass reproduces the signed bytes exactly, so re-signing is stable
    assert m.canonical_bytes() == signed.signed_bytes
    assert Manifest.from_dict(m.to_dict()) == m


def test_canonical_bytes_ignore_key_order_and_whitespace(bundle: Path) -> None:
    doc = _doc(bundle)
    reordered = {"signature": doc["signature"], "manifest": dict(reversed(list(doc["manifest"].items())))}
    pretty = json.dumps(reordered, indent=7).encode()
    signed = parse_manifest_json(pretty)
    assert signed.verify([signing_key().public_hex])


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("memory_bytes"), "memory_bytes"),
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d["files"][0].pop("sha256"), "files[0].sha256"),
        (lambda d: d["files"][0].update(sha="x"), "files[0].sha"),
        (lambda d: d["variants"][1].update(precision="fp8"), "variants[1].precision"),
        (lambda d: d["variants"][0].update(files=["nope.onnx"]), "variants[0].files[0]"),
        (lambda d: d["variants"][0].update(devices=["fpga"]), "variants[0].devices[0]"),
        (lambda d: d["files"][0].update(path="../escape.onnx"), "files[0].path"),
        (lambda d: d["files"][0].update(path="/etc/passwd"), "files[0].path"),
        (lambda d: d["files"][0].update(size=True), "files[0].size"),
        (lambda d: d.update(name="Bad Name"), "name"),
        (lambda d: d.update(version="../1"), "version"),
        (lambda d: d.update(schema=2), "schema"),
        (lambda d: d["inputs"][0].update(shape=[1, "x"]), "inputs[0].shape[1]"),
        (lambda d: d["smoke_test"]["inputs"]["x"].pop("dtype"), "smoke_test.inputs.x.dtype"),
        (lambda d: d["variants"].append(copy.deepcopy(d["variants"][0])), "variants[2]"),
        (lambda d: d.update(variants=[]), "variants"),
    ],
)
def test_strict_parsing_names_the_field(bundle: Path, mutate, field: str) -> None:
    body = _doc(bundle)["manifest"]
    mutate(body)
    with pytest.raises(BadRequestError) as err:
        parse_manifest_json(_resign(body))
    assert repr(field) in str(err.value)


def test_top_level_shape_errors(bundle: Path) -> None:
    with pytest.raises(BadRequestError, match="not valid JSON"):
        parse_manifest_json(b"{nope")
    with pytest.raises(BadRequestError, match="missing field 'manifest'"):
        parse_manifest_json(b"{}")
    doc = _doc(bundle)
    doc["signature"]["extra"] = 1
    with pytest.raises(BadRequestError, match="signature.extra"):
        parse_manifest_json(json.dumps(doc).encode())


def test_signature_failures_have_distinct_codes(bundle: Path) -> None:
    trusted = [signing_key().public_hex]
    doc = _doc(bundle)

    unsigned = {"manifest": doc["manifest"]}
    with pytest.raises(BadRequestError) as err:
        parse_manifest_json(json.dumps(unsigned).encode()).verify(trusted)
    assert err.value.code == "signature_missing"

    tampered = copy.deepcopy(doc)
    tampered["manifest"]["memory_bytes"] += 1
    with pytest.raises(BadRequestError) as err:
        parse_manifest_json(json.dumps(tampered).encode()).verify(trusted)
    assert err.value.code == "signature_invalid"

    stranger = signing.generate_keypair()
    with pytest.raises(BadRequestError) as err:
        parse_manifest_json(json.dumps(doc).encode()).verify([stranger.public_hex])
    assert err.value.code == "signature_untrusted" and signing_key().key_id in str(err.value)

    with pytest.raises(BadRequestError) as err:
        parse_manifest_json(json.dumps(doc).encode()).verify([])
    assert err.value.code == "signature_untrusted"

    bad_hex = copy.deepcopy(doc)
    bad_hex["signature"]["value"] = "zz" * 64
    with pytest.raises(BadRequestError) as err:
        parse_manifest_json(json.dumps(bad_hex).encode()).verify(trusted)
    assert err.value.code == "signature_invalid"


def test_key_files_and_ids(tmp_path: Path) -> None:
    kp = signing.generate_keypair()
    assert signing.public_key_of(kp.private_hex) == kp.public_hex
    assert len(kp.key_id) == 16 and kp.key_id == signing.key_id(kp.public_hex.upper())
    path = tmp_path / "k.key"
    signing.write_private_key(path, kp.private_hex)
    assert path.stat().st_mode & 0o777 == 0o600
    assert signing.read_private_key(path) == kp.private_hex
    trusted = tmp_path / "trusted"
    trusted.write_text(f"# publisher\n{kp.public_hex}  # main key\n\n")
    assert signing.load_trusted_keys_file(trusted) == [kp.public_hex]
    trusted.write_text("abc\n")
    with pytest.raises(ConfigError, match=r"trusted:1"):
        signing.load_trusted_keys_file(trusted)
    # a mapping's ids are recomputed, never taken on faith
    assert signing.trusted_key_map({"fake-id": kp.public_hex}) == {kp.key_id: kp.public_hex}


def test_sign_manifest_then_parse(bundle: Path) -> None:
    m = parse_manifest_json((bundle / MANIFEST_FILE).read_bytes()).manifest
    kp = signing.generate_keypair()
    signed = sign_manifest(m, kp.private_hex)
    again = parse_manifest_json(signed.to_json())
    assert again.manifest == m and again.verify([kp.public_hex]) == kp.key_id
