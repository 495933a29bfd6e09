"""Plugin packages on the box: signatures (unsigned and untrusted refused, tampering caught), manifests,
settings checked by the daemon's own config code, scaffolding, and the CLI's answers to bad input."""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from agent.errors import BadRequestError
from agent.plugins.manifest import parse_manifest
from agent.plugins.store import PluginStore
from models import signing
from tests.conftest import free_port
from tests.plugins_support import Box

SOURCE = """
class Main(Plugin):
    async def run(self):
        await asyncio.Event().wait()
"""


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path, free_port())


def unsigned_archive(box: Box, folder: Path) -> Path:
    archive = box.tmp / "unsigned.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in folder.iterdir():
            tar.add(path, arcname=f"p/{path.name}")
    return archive


def test_unsigned_and_untrusted_plugins_are_refused(box: Box) -> None:
    folder = box.write_plugin("lonely", SOURCE)
    done = box.cli("plugins", "install", str(unsigned_archive(box, folder)), check=False)
    assert done.returncode == 2 and "is not signed" in done.stderr, done
    assert "Traceback" not in done.stderr
    stranger = signing.generate_keypair()
    key = box.tmp / "stranger.key"
    signing.write_private_key(key, stranger.private_hex)
    archive = box.tmp / "stranger.tar.gz"
    box.cli("plugins", "pack", str(folder), "--key", str(key), "--out", str(archive))
    done = box.cli("plugins", "install", str(archive), check=False)
    assert done.returncode == 2 and "not among the trusted keys" in done.stderr, done
    assert "lonely" not in box.plugins()
    assert not (box.data / "plugins" / "installed" / "lonely").exists()


def test_a_file_changed_after_install_is_refused_at_start(box: Box) -> None:
    box.install(box.write_plugin("tampered", SOURCE))
    code = next((box.data / "plugins" / "installed" / "tampered").glob("*/main.py"))
    code.write_text(code.read_text() + "\nimport os  # added later\n")
    listed = box.plugins()["tampered"]
    assert listed["state"] == "refused" and "files differ from what was signed (main.py)" in listed["reason"]
    done = box.cli("plugins", "enable", "tampered", check=False)
    assert done.returncode == 2 and "files differ" in done.stderr


def test_archives_dropped_in_the_plugins_folder(box: Box) -> None:
    store = PluginStore(box.data, lambda: [box.keys.public_hex])
    good = box.write_plugin("dropped", SOURCE)
    (box.data / "plugins").mkdir(parents=True, exist_ok=True)
    box.cli(
        "plugins",
        "pack",
        str(good),
        "--key",
        str(box.key_file),
        "--out",
        str(box.data / "plugins" / "d.tar.gz"),
    )
    bad = unsigned_archive(box, box.write_plugin("unsigned", SOURCE))
    bad.rename(box.data / "plugins" / "u.tar.gz")
    said: list[str] = []
    old = time.time() - 5  # an archive still being copied in (modified this second) waits a round
    for archive in (box.data / "plugins").glob("*.tar.gz"):
        os.utime(archive, (old, old))
    assert store.install_dropped(said.append) == ["dropped"]
    assert (box.data / "plugins" / "d.tar.gz.installed").exists()
    assert (box.data / "plugins" / "u.tar.gz.refused").exists()
    assert "not signed" in said[0]
    catalog = store.catalog()
    assert catalog["dropped"].origin == "archive" and catalog["dropped"].key_id == box.keys.key_id
    assert "unsigned" not in catalog


def test_manifest_mistakes_name_the_key() -> None:
    base = {"name": "x", "version": "1.0.0", "kinds": ["source"], "entry": "m:C"}
    for change, words in (
        ({"kinds": ["teleporter"]}, "kinds must be"),
        ({"name": "Bad Name"}, "name must be"),
        ({"entry": "no-colon"}, "entry must be"),
        ({"permissions": {"network": ["${nowhere}"]}}, "names ${nowhere}"),
        ({"permissions": {"host": ["root"]}}, "permissions.host may name"),
        ({"colour": "red"}, "unknown key 'colour'"),
    ):
        with pytest.raises(BadRequestError, match=None) as info:
            parse_manifest({**base, **change}, Path("."))
        assert words in str(info.value), (change, str(info.value))


def test_settings_are_checked_by_the_config_code_and_listed_in_the_reference(box: Box) -> None:
    bad = box.tmp / "bad.toml"
    bad.write_text("port = 70000\n")
    done = box.cli("plugins", "enable", "modbus", "--settings", str(bad), check=False)
    assert done.returncode == 2
    assert "plugins.config.modbus.port: expected an integer between 1 and 65535, got 70000" in done.stderr
    unknown = box.tmp / "unknown.toml"
    unknown.write_text('hots = "10.0.0.5"\n')
    done = box.cli("plugins", "enable", "modbus", "--settings", str(unknown), check=False)
    assert done.returncode == 2 and "unknown key plugins.config.modbus.hots" in done.stderr
    assert box.plugins()["modbus"]["enabled"] is False
    reference = box.cli("config", "reference").stdout
    assert "| `plugins.config.modbus.port` | an integer between 1 and 65535 | `502` |" in reference
    assert "| `plugins.config.modbus.transport` | one of 'tcp', 'rtu' | `'tcp'` |" in reference


def test_cli_usage_errors_exit_2_without_a_traceback(box: Box) -> None:
    for args, words in (
        (("plugins", "enable", "nosuch"), "no plugin named 'nosuch'"),
        (("plugins", "remove", "modbus"), "cannot be removed, only disabled"),
        (("plugins", "logs", "modbus", "-n", "-1"), "--lines must be 0 or more"),
        (("plugins", "install", "missing.tar.gz"), "no such file"),
        (("plugins", "new", "source", "Bad Name"), "a plugin name is lowercase"),
    ):
        done = box.cli(*args, check=False)
        assert done.returncode == 2, (args, done)
        assert words in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    (box.tmp / "junk.tar.gz").write_bytes(b"not an archive")
    done = box.cli("plugins", "install", "junk.tar.gz", check=False)
    assert done.returncode == 2 and "is not a plugin archive" in done.stderr


@pytest.mark.parametrize("kind", ["source", "detector", "skill", "sink"])
def test_scaffolded_plugins_pack_and_install(box: Box, kind: str) -> None:
    box.cli("plugins", "new", kind, f"my-{kind}", "--dir", str(box.tmp))
    archive = box.tmp / f"my-{kind}.tar.gz"
    box.cli("plugins", "pack", str(box.tmp / f"my-{kind}"), "--key", str(box.key_file), "--out", str(archive))
    box.cli("plugins", "install", str(archive))
    listed = box.plugins()[f"my-{kind}"]
    assert listed["kinds"] == [kind] and listed["origin"] == "archive" and listed["state"] == "disabled"
    assert listed["signed_by"] == box.keys.key_id
    again = box.cli("plugins", "new", kind, f"my-{kind}", "--dir", str(box.tmp), check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    logs = json.loads(box.cli("plugins", "logs", f"my-{kind}", "--json").stdout)
    assert logs == {"name": f"my-{kind}", "lines": []}


def test_an_archive_with_a_link_or_a_path_outside_is_refused(box: Box) -> None:
    import io

    archive = box.tmp / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b'name = "evil"\n'
        info = tarfile.TarInfo("../outside.toml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("p/plugin.toml")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    done = box.cli("plugins", "install", str(archive), check=False)
    assert done.returncode == 2 and "not a plain file inside it" in done.stderr, done
    assert not (box.tmp / "outside.toml").exists()


def test_a_data_dir_that_cannot_be_written_is_one_clear_line(box: Box) -> None:
    box.env["EDGE_AGENT_DATA_DIR"] = "/proc/edge-agent-plugins-test"
    done = box.cli("plugins", "enable", "alert-skill", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done
    assert done.stderr.startswith("edge-agent: cannot use /proc/edge-agent-plugins-test"), done.stderr
