"""An agent update keeps the extras (the engines) the box was installed with.

The updater installs the bundle's wheel with the extras recorded in
``installed.json`` (written by install.sh and by every install), from the bundle
alone (no index): the new environment has the same engines, and a bundle that
lacks one fails before the switch, leaving the running version as it was.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from agent.security.selfupdate import Installer, UpdateFailed
from tests.test_updates_selfupdate import CHECK, run_app


def wheel(
    dest: Path,
    name: str,
    version: str,
    *,
    module: str,
    extra_requires: str = "",
    extra: str = "engines",
    requires: str = "",
) -> Path:
    """A minimal real wheel; ``extra_requires``: a requirement only ``extra`` pulls in."""
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    if extra_requires:
        meta += f'Provides-Extra: {extra}\nRequires-Dist: {extra_requires}; extra == "{extra}"\n'
    if requires:
        meta += f"Requires-Dist: {requires}\n"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\ndef main():\n    print('{module} ' + VERSION)\n",
        f"{dist}/METADATA": meta,
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": f"[console_scripts]\n{module} = {module}:main\n",
    }
    record = [
        f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).decode().rstrip('=')},{len(t.encode())}"
        for n, t in files.items()
    ]
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, t in files.items():
            zf.writestr(n, t)
    return path


def has_engine(prefix: Path, slot: str) -> bool:
    return any((prefix / slot).glob("lib/python*/site-packages/edgeengine/__init__.py"))


def test_the_update_keeps_the_installed_extras(tmp_path: Path) -> None:
    full, bare = tmp_path / "bundle", tmp_path / "bundle-without-engine"
    wheel(full, "edgeengine", "1.0", module="edgeengine")
    for d in (full, bare):
        wheel(d, "edgeapp", "2.0", module="edgeapp", extra_requires="edgeengine")
    first = wheel(tmp_path / "first", "edgeapp", "1.0", module="edgeapp", extra_requires="edgeengine")
    prefix = tmp_path / "opt"
    Installer(prefix, check_cmd=CHECK, seed_pip=False, find_links=full, extras="engines").bootstrap(
        first, "1.0"
    )
    assert json.loads((prefix / "installed.json").read_text())["extras"] == "engines"
    assert has_engine(prefix, "venv-a")

    # the bundle without the engine's wheel: refused before the switch, 1.0 runs on
    with pytest.raises(UpdateFailed, match=r"with \[engines\]"):
        Installer(prefix, check_cmd=CHECK, seed_pip=False, find_links=bare).install(
            bare / "edgeapp-2.0-py3-none-any.whl", "2.0"
        )
    Installer(prefix, check_cmd=CHECK, seed_pip=False).recover()
    assert run_app(prefix) == "edgeapp 1.0" and not (prefix / "venv-b").exists()

    result = Installer(prefix, check_cmd=CHECK, seed_pip=False, find_links=full).install(
        full / "edgeapp-2.0-py3-none-any.whl", "2.0"
    )
    assert result.outcome == "installed" and run_app(prefix) == "edgeapp 2.0"
    assert has_engine(prefix, "venv-b")
    assert json.loads((prefix / "installed.json").read_text())["extras"] == "engines"


def test_voice_brings_silero_vad_without_its_torch(tmp_path: Path) -> None:
    # silero-vad's package requires torch; its ONNX model does not: the bundle has no torch wheel
    bundle = tmp_path / "bundle"
    wheel(bundle, "silero-vad", "5.1", module="silero_vad", requires="torch")
    wheel(bundle, "edgeapp", "2.0", module="edgeapp", extra_requires="wyoming-x", extra="voice")
    wheel(bundle, "wyoming-x", "1.0", module="wyoming_x")
    first = wheel(tmp_path / "first", "edgeapp", "1.0", module="edgeapp")
    prefix = tmp_path / "opt"
    Installer(prefix, check_cmd=CHECK, seed_pip=False).bootstrap(first, "1.0")
    result = Installer(prefix, check_cmd=CHECK, seed_pip=False, find_links=bundle, extras="voice").install(
        bundle / "edgeapp-2.0-py3-none-any.whl", "2.0"
    )
    assert result.outcome == "installed" and run_app(prefix) == "edgeapp 2.0"
    assert any((prefix / "venv-b").glob("lib/python*/site-packages/silero_vad/__init__.py"))
