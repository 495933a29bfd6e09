"""The README's "Using it" commands, run as written, in order, against a fresh box.

A real daemon (its own data dir and port, a real Mosquitto as its hub) is
started, then the README's fenced shell block is run line by line in one
bash (so ``T=$(...)`` carries to the next line), exactly as a new user
pastes it. Each line has a check of what the README promises; a line the
README adds without a check here, or a checked line the README dropped,
fails the journey, so the README and the program cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import pytest

from tests.conftest import REPO

README = REPO / "README.md"


def readme_block(heading: str) -> list[str]:
    """The command lines of the first ```sh block under ``heading`` (comments kept: they are the promise)."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.DOTALL)
    assert block, f"README: no sh block under {heading}"
    return [line for line in block.group(1).splitlines() if line.strip()]


def command(line: str) -> str:
    """The line without its trailing comment (a comment starts at two spaces and '#')."""
    return re.split(r"\s{2,}#", line, maxsplit=1)[0].strip()


def readme_commands(heading: str, checks: Collection[str]) -> tuple[list[str], list[str]]:
    """The block's lines and their commands, once every command has a check and every check a line."""
    lines = readme_block(heading)
    commands = [command(line) for line in lines]
    assert set(commands) == set(checks), (
        f"README and journey disagree under {heading!r}: lines without a check: "
        f"{sorted(set(commands) - set(checks))}; checked lines the README dropped: "
        f"{sorted(set(checks) - set(commands))}"
    )
    return lines, commands


class Ran:
    def __init__(self, rc: int, out: str, err: str) -> None:
        self.rc, self.out, self.err = rc, out, err

    def __repr__(self) -> str:
        return f"rc={self.rc}\n--- stdout\n{self.out[-2000:]}\n--- stderr\n{self.err[-2000:]}"


def run_as_written(
    commands: list[str],
    out_dir: Path,
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float = 600,
    after: Mapping[str, str] | None = None,
) -> list[Ran]:
    """The commands in order in one bash, as a user pastes them; what each one returned, wrote and said.

    ``after`` maps a command to a shell line run after it (what a person does between two lines).
    """
    out_dir.mkdir()
    script = ["set -u"]
    for i, cmd in enumerate(commands):
        script.append(f"{{ {cmd} ; }} >{out_dir}/{i}.out 2>{out_dir}/{i}.err; echo $? >{out_dir}/{i}.rc")
        if cmd.startswith("T=$("):  # an assignment's own output is the token: keep it to check it
            script.append(f'printf %s "$T" >{out_dir}/{i}.out')
        if after and cmd in after:
            script.append(after[cmd])
    subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, env=dict(env), timeout=timeout, check=True)
    return [
        Ran(
            int((out_dir / f"{i}.rc").read_text()),
            (out_dir / f"{i}.out").read_text(),
            (out_dir / f"{i}.err").read_text(),
        )
        for i in range(len(commands))
    ]


def no_speaker() -> bool:
    try:
        import pyaudio
    except ImportError:
        return True
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)
    try:
        pa = pyaudio.PyAudio()
        try:
            pa.get_default_output_device_info()
            return False
        except OSError:
            return True
        finally:
            pa.terminate()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _said_hello(r: Ran) -> bool:
    if r.rc == 0:
        return "s of speech" in r.err
    # a box without a speaker: one clear line, no audio-library noise
    return (
        no_speaker() and r.rc == 1 and r.err.strip().count("\n") == 0 and "cannot open the speaker" in r.err
    )


#: what each README line promises, keyed by the command exactly as the README writes it
CHECKS: dict[str, Callable[[Ran], bool]] = {
    ".venv/bin/edge-agent status": lambda r: (
        r.rc == 0 and " ready " in r.out and "hub: connected to" in r.out
    ),
    ".venv/bin/edge-agent config check": lambda r: r.rc == 0 and r.out.startswith("config OK"),
    ".venv/bin/edge-agent config show": lambda r: r.rc == 0 and "[api]" in r.out and "port = " in r.out,
    ".venv/bin/edge-agent config reference": lambda r: r.rc == 0 and r.out.startswith("| key | type |"),
    ".venv/bin/edge-agent version": lambda r: r.rc == 0 and r.out.startswith("edge-agent "),
    ".venv/bin/edge-agent hardware": lambda r: r.rc == 0 and len(r.out.splitlines()) > 2,
    ".venv/bin/edge-agent models list": lambda r: r.rc == 0 and "served by the running daemon" in r.out,
    ".venv/bin/edge-agent alerts list": lambda r: r.rc == 0 and ("alerts" in r.out or "id " in r.out),
    '.venv/bin/edge-agent say "Hello"': _said_hello,
    '.venv/bin/edge-agent ask "play some jazz"': lambda r: (
        r.rc == 0 and "Playing jazz." in r.out and "using the running daemon" in r.err
    ),
    ".venv/bin/edge-hub --help": lambda r: r.rc == 0 and "usage: edge-hub" in r.out,
    "T=$(.venv/bin/edge-agent tokens create ops --role operator)": lambda r: r.rc == 0 and "# id" in r.err,
    '.venv/bin/edge-agent status --token "$T"': lambda r: (
        r.rc == 0 and " ready " in r.out and "eat_" not in r.out
    ),
}


def test_readme_using_it_runs_as_written(start_daemon, broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines, commands = readme_commands("## Using it", CHECKS)
    # the daemon the README's first line asks: fresh data dir, a real broker as the hub, voice on
    daemon = start_daemon({"EDGE_AGENT_MQTT__URL": broker.url, "EDGE_AGENT_VOICE__ENABLED": "auto"})
    daemon.wait_healthy(timeout=60)
    deadline = time.monotonic() + 120  # services (the hub link, the voice models) come up after /healthz
    while daemon.json("/readyz")[0] != 200:
        assert time.monotonic() < deadline, daemon.log()[-3000:]
        time.sleep(0.2)
    _wait_connected(daemon)

    env = {k: v for k, v in daemon.env.items() if k not in ("EDGE_AGENT_TOKEN",)}
    runs = run_as_written(commands, tmp_path / "journey", cwd=REPO, env=env)
    failures = []
    for line, cmd, ran in zip(lines, commands, runs, strict=True):
        if "Traceback" in ran.err or not CHECKS[cmd](ran):
            failures.append(f"README line {line!r}:\n{ran}")
    token = runs[commands.index("T=$(.venv/bin/edge-agent tokens create ops --role operator)")].out
    assert token.startswith("eat_") and "\n" not in token, token
    assert not failures, "\n\n".join(failures)


def _wait_connected(daemon) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(daemon.url + "/v1/info", timeout=5) as resp:
            if json.loads(resp.read())["mqtt"].get("connected"):
                return
        time.sleep(0.2)
    pytest.fail("the daemon never connected to the test broker")
