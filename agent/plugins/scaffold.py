"""``plugins new KIND NAME`` (a minimal working plugin) and ``plugins pack`` (sign, then archive)."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

from agent.errors import BadRequestError
from agent.plugins.manifest import load_manifest
from agent.plugins.signing import sign_plugin

_MANIFEST = """name = "{name}"
version = "0.1.0"
kinds = ["{kind}"]
entry = "{module}:{cls}"
description = "{description}"

[permissions]
{permissions}
{settings}"""

_BODIES = {
    "source": (
        "A sensor source: readings of one machine, every interval_s.",
        "",
        """[settings.machine]
type = "str"
default = "press-1"
doc = "Machine the readings belong to (a [sensors.machines] name)."

[settings.interval_s]
type = "float"
default = 1.0
min = 0.001
doc = "Seconds between readings."
""",
        """    async def run(self) -> None:
        machine, interval = self.ctx.settings["machine"], self.ctx.settings["interval_s"]
        n = 0
        while True:
            n += 1
            self.ctx.emit(machine, {"temperature": 20.0 + (n % 10) / 10})
            await asyncio.sleep(interval)
""",
    ),
    "detector": (
        "A detector: flags a channel over a limit in the sampled readings.",
        "",
        """[settings.limit]
type = "float"
default = 100.0
doc = "Values above it are reported."
""",
        """    async def on_event(self, type_: str, data: dict[str, Any]) -> None:
        if type_ != "sensor.reading":
            return
        for channel, value in (data.get("values") or {}).items():
            if value is not None and value > self.ctx.settings["limit"]:
                self.ctx.event("over_limit", {"machine": data.get("machine"), "channel": channel, "value": value})
""",
    ),
    "skill": (
        "A voice skill: answers 'hello' with a greeting.",
        "",
        "",
        """    async def handle(self, method: str, params: dict[str, Any]) -> Any:
        if method == "skill.handle" and "hello" in params.get("text", "").lower():
            return "Hello from the {name} skill."
        return None  # not ours: the next skill (or the built-in intents) answers
""",
    ),
    "sink": (
        "A sink: appends every alert transition to a file in its data folder.",
        "",
        "",
        """    async def on_event(self, type_: str, data: dict[str, Any]) -> None:
        if type_.startswith("alert."):
            with (self.ctx.data_dir / "alerts.jsonl").open("a") as fh:
                fh.write(json.dumps({"type": type_, "alert": data.get("alert")}) + "\\n")
""",
    ),
}


def write_plugin(kind: str, name: str, where: Path) -> Path:
    if kind not in _BODIES:
        raise BadRequestError(f"unknown kind {kind!r}; one of {', '.join(_BODIES)}")
    if not re.match(r"^[a-z][a-z0-9_-]{0,39}$", name):
        raise BadRequestError(
            f"{name!r}: a plugin name is lowercase letters, digits, '-' or '_', starting with a letter"
        )
    folder = where / name
    if folder.exists():
        raise BadRequestError(f"{folder} already exists; choose another name or --dir")
    description, permissions, settings, body = _BODIES[kind]
    module = name.replace("-", "_") + "_plugin"
    cls = "".join(part.title() for part in re.split(r"[-_]", name)) + kind.title()
    folder.mkdir(parents=True)
    (folder / "plugin.toml").write_text(
        _MANIFEST.format(
            name=name,
            kind=kind,
            module=module,
            cls=cls,
            description=description,
            permissions=permissions,
            settings=settings,
        )
    )
    code = (
        f'"""{description}"""\n\nfrom __future__ import annotations\n\nimport asyncio  # noqa: F401\n'
        "import json  # noqa: F401\nfrom typing import Any  # noqa: F401\n\n"
        "from agent.plugins.sdk import Plugin\n\n\n"
        f"class {cls}(Plugin):\n" + body.replace("{name}", name)
    )
    (folder / f"{module}.py").write_text(code)
    load_manifest(folder)  # what we wrote must load
    return folder


def pack(folder: Path, private_hex: str, out: Path | None = None) -> Path:
    """Sign ``folder`` (writes signature.json) and write it as a .tar.gz; returns the archive."""
    manifest = load_manifest(folder)
    sign_plugin(folder, private_hex)
    archive = out or Path(f"{manifest.name}-{manifest.version}.tar.gz")
    try:
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(folder.rglob("*")):
                rel = path.relative_to(folder)
                if "__pycache__" in rel.parts or not path.is_file():
                    continue
                tar.add(path, arcname=f"{manifest.name}/{rel.as_posix()}")
    except OSError as exc:
        raise BadRequestError(f"cannot write {archive}: {exc.strerror}; choose another --out") from None
    return archive
