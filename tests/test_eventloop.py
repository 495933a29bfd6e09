"""The event loop the daemon and the hub run on: uvloop where installed, chosen by the setting event_loop."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from agent.core import eventloop
from agent.core.errors import ConfigError
from tests.conftest import free_port
from tests.daemon_support import agent_cli, daemon_env


async def _which() -> str:
    return eventloop.loop_name(asyncio.get_running_loop())


def test_asyncio_when_asked() -> None:
    assert eventloop.run(_which(), "asyncio") == "asyncio"


def test_asyncio_by_default_and_uvloop_when_asked() -> None:
    assert eventloop.run(_which()) == "asyncio"  # uvloop costs ~2 MiB at idle: opt-in
    pytest.importorskip("uvloop")  # the optional `fast` extra
    assert eventloop.run(_which(), "auto") == "uvloop"
    assert eventloop.run(_which(), "uvloop") == "uvloop"


def test_without_uvloop_auto_falls_back_and_uvloop_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert eventloop.run(_which(), "auto") == "asyncio"
    with pytest.raises(ConfigError, match=r"pip install 'edge-agent\[fast\]'"):
        eventloop.run(_which(), "uvloop")


def test_an_unknown_choice_is_refused() -> None:
    with pytest.raises(ConfigError, match="auto, uvloop, asyncio"):
        eventloop.loop_factory("trio")


def test_the_daemon_refuses_an_unknown_loop_with_exit_2(tmp_path: Path) -> None:
    env = daemon_env(tmp_path / "data", free_port(), EDGE_AGENT_EVENT_LOOP="trio")
    proc = agent_cli(env, "run", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "event_loop" in proc.stderr and "trio" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_daemon_without_uvloop_says_what_to_install(tmp_path: Path) -> None:
    # a directory named uvloop whose __init__ fails stands for a box without the `fast` extra
    shadow = tmp_path / "shadow" / "uvloop"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed here')\n")
    env = daemon_env(tmp_path / "data", free_port(), EDGE_AGENT_EVENT_LOOP="uvloop")
    env["PYTHONPATH"] = str(shadow.parent)
    proc = agent_cli(env, "run", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'edge-agent[fast]'" in proc.stderr
    assert "Traceback" not in proc.stderr
