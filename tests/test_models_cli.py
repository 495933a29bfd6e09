"""``edge-agent models ...`` on a real store, and load/unload against a real API server."""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import models_cmd
from agent.config import load_settings
from agent.errors import ConfigError, EdgeAgentError
from tests.conftest import free_port
from tests.models_fixtures import MLP_Q, build_bundle, signing_key


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent")
    parser.add_argument("--config")
    parser.add_argument("--token")
    sub = parser.add_subparsers(dest="command", required=True)
    models_cmd.register(sub)
    return parser


def run(*argv: str) -> int:
    args = _parser().parse_args(["models", *argv])
    return int(args.handler(args) or 0)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("EDGE_AGENT_DATA_DIR", str(data))
    monkeypatch.setenv("EDGE_AGENT_API__PORT", str(free_port()))
    monkeypatch.delenv("EDGE_AGENT_CONFIG", raising=False)
    return data


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("cli"), MLP_Q)


def test_every_models_command_has_help() -> None:
    parser = _parser()
    models = parser._subparsers._group_actions[0].choices["models"]  # type: ignore[union-attr]
    action = next(a for a in models._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in action._choices_actions}
    assert set(helps) == {
        "list",
        "install",
        "verify",
        "activate",
        "rollback",
        "remove",
        "load",
        "unload",
        "quantize",
        "bench",
        "keygen",
        "pack",
        "sign",
    }
    for name, sub in action.choices.items():
        assert helps[name] and sub.description
        for opt in sub._actions:
            if opt.option_strings and opt.dest != "help":
                assert opt.help, (name, opt.option_strings)


def test_store_commands(env: Path, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="no trusted model keys"):
        run("install", str(bundle))
    keys = env / "keys"
    keys.mkdir(parents=True)
    (keys / "model_publishers.pub").write_text(signing_key().public_hex + "\n")
    assert run("install", str(bundle)) == 0
    assert "installed mlp-q 1.0.0 (active)" in capsys.readouterr().out
    assert run("verify", "mlp-q") == 0
    assert f"OK (signed by {signing_key().key_id})" in capsys.readouterr().out

    # a local signing key, trusted beside the publisher's, signs quantized versions
    assert run("keygen") == 0
    public = capsys.readouterr().out.strip()
    with (keys / "model_publishers.pub").open("a") as fh:
        fh.write(public + "\n")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        run("keygen")
    assert run("quantize", "mlp-q", "--method", "int8-dynamic", "--json") == 0
    q = json.loads(capsys.readouterr().out)
    assert q["version"] == "1.0.0+int8" and q["size_ratio"] < 0.3 and not q["active"]
    assert run("activate", "mlp-q", "1.0.0+int8") == 0
    assert "1.0.0+int8 is active" in capsys.readouterr().out
    assert run("list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(m["version"], m["active"], m["previous"]) for m in listed] == [
        ("1.0.0", False, True),
        ("1.0.0+int8", True, False),
    ]
    assert listed[1]["variants"] == ["onnxruntime/fp32", "onnxruntime/int8"]
    assert run("rollback", "mlp-q") == 0 and "rolled back to 1.0.0" in capsys.readouterr().out
    assert run("bench", "mlp-q", "--runs", "5", "--json") == 0
    b = json.loads(capsys.readouterr().out)
    assert b["latency"]["count"] == 5 and b["version"] == "1.0.0" and b["load_ms"] > 0
    with pytest.raises(EdgeAgentError, match="is active"):
        run("remove", "mlp-q", "1.0.0")
    assert run("remove", "mlp-q", "1.0.0+int8") == 0
    # damage the installed file: verify fails with the reason and exit 1
    model = env / "models" / "mlp-q" / "1.0.0" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1])
    capsys.readouterr()
    assert run("verify", "mlp-q") == 1
    assert "size" in capsys.readouterr().out


@pytest.fixture
def daemon_api(env: Path, bundle: Path) -> Iterator[None]:
    """The models routes served on the configured port from a thread with its own loop."""
    from aiohttp import web

    from agent.api.app import create_app
    from agent.daemon import build_context
    from models.manager import ManagerSettings, ModelManager
    from models.store import ModelStore

    store = ModelStore(env / "models")
    store.install(bundle, [signing_key().public_hex])
    settings = load_settings()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict = {}

    async def start() -> None:
        manager = ModelManager(
            store, ManagerSettings(memory_budget_bytes=1 << 30, idle_timeout_s=None, threads=1)
        )
        await manager.start()
        ctx = build_context(settings)
        ctx.models = manager  # type: ignore[attr-defined]  # the lead adds the field to AgentContext
        app = create_app(ctx, modules=("agent.api.models_routes",))
        state["ctx"] = ctx
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.api.port).start()
        state.update(manager=manager, runner=runner)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield

    async def stop() -> None:
        await state["runner"].cleanup()
        await state["manager"].close()
        state["ctx"].store.close()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_load_unload_through_the_daemon(daemon_api: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("load", "mlp-q", "--pin", "--timeout", "10") == 0
    out = capsys.readouterr().out
    assert "mlp-q 1.0.0 loaded on onnxruntime/CPU (fp32" in out and "pinned" in out
    with pytest.raises(EdgeAgentError, match="pinned"):
        run("unload", "mlp-q", "--timeout", "10")
    assert run("unload", "mlp-q", "--force", "--timeout", "10") == 0
    assert "mlp-q: unloaded" in capsys.readouterr().out
    with pytest.raises(EdgeAgentError, match="not installed"):
        run("load", "nope", "--timeout", "10")


def test_load_without_daemon_says_so(env: Path) -> None:
    with pytest.raises(EdgeAgentError, match="no daemon answers") as err:
        run("load", "mlp-q", "--timeout", "2")
    assert err.value.code == "daemon_unreachable"


def test_a_packed_bundle_tar_installs_on_a_box_without_a_hub(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """keygen, pack --key, then `models install NAME-VERSION.tar`: the tar pack wrote, as written."""
    built = build_bundle(tmp_path / "built", MLP_Q, name="press-model")
    src = tmp_path / "press-model"  # a plain directory holding the model file, as a publisher has it
    src.mkdir()
    (src / "model.onnx").write_bytes((built / "model.onnx").read_bytes())
    assert run("keygen", "--out", str(tmp_path / "publisher.key")) == 0
    public = capsys.readouterr().out.strip().splitlines()[-1]
    keys = env / "keys"
    keys.mkdir(parents=True)
    (keys / "model_publishers.pub").write_text(public + "\n")
    tar = tmp_path / "press-model-2.0.0.tar"
    assert (
        run(
            "pack",
            str(src),
            "--version",
            "2.0.0",
            "--key",
            str(tmp_path / "publisher.key"),
            "--out",
            str(tar),
        )
        == 0
    )
    capsys.readouterr()
    assert run("install", str(tar)) == 0
    assert "installed press-model 2.0.0 (active)" in capsys.readouterr().out
    assert run("verify", "press-model") == 0
