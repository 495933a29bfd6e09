"""The CLI: every command has help text, and version prints."""

from __future__ import annotations

import argparse

import pytest

from agent.cli import build_parser, main


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), helps.get(name), sub
                yield from walk(sub, (*path, name))


def test_every_command_has_help_text() -> None:
    commands = list(walk(build_parser()))
    names = {" ".join(path) for path, _, _ in commands}
    assert {"run", "status", "config", "config check", "config show", "version"} <= names
    for path, short_help, sub in commands:
        assert short_help, f"`edge-agent {' '.join(path)}` has no help line"
        assert sub.description or sub.format_help().strip(), f"`{' '.join(path)}` has no description"
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
                continue
            what = action.option_strings or [action.dest]
            assert action.help, f"argument {what} of `{' '.join(path)}` has no help"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("edge-agent 0.")


def test_readme_documents_every_setting() -> None:
    from pathlib import Path

    from agent.config import reference_rows

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [key for key, *_ in reference_rows() if f"`{key}`" not in readme]
    assert not missing, (
        f"README's configuration reference lacks {missing}; paste `edge-agent config reference`"
    )
