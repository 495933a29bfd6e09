"""The import contract (tests/import_contract.py) holds on this tree and fails on a forbidden import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.import_contract import EXCEPTIONS, Exception_, check


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for pkg in ("agent", "agent/core", "hal", "runtimes", "models", "sync"):
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "__init__.py").touch()
    return root


def test_this_tree_keeps_the_contract() -> None:
    assert check(REPO) == []


def test_make_lint_fails_on_a_forbidden_import(tmp_path: Path) -> None:
    """The command ``make lint`` runs exits 1 and names the file, the line and the rule broken."""
    root = _tree(
        tmp_path,
        {
            "agent/config.py": "X = 1\n",
            "agent/core/errors.py": "class E(Exception): ...\n",
            "hal/probe.py": "from agent.core.errors import E\n\n\ndef f():\n    from agent import config\n",
        },
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.import_contract", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert "hal/probe.py:5: hal.probe (hal) imports agent.config (agent)" in done.stdout
    assert "agent.core/errors" not in done.stdout  # the ground floor is allowed


def test_each_layer_may_import_only_downward(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "hal/a.py": "import runtimes.base\n",
            "runtimes/base.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from models import manifest\n",
            "models/manifest.py": "from ..sync import outbox\n",
            "sync/outbox.py": "from models import manifest\nfrom hal import a\n",
            "agent/core/x.py": "from agent import daemon\n",
            "agent/daemon.py": "import sync.outbox, models.manifest, hal.a\n",
        },
    )
    found = check(root, exceptions=())
    assert [line.split(":")[0] for line in found] == [
        "agent/core/x.py",
        "hal/a.py",
        "runtimes/base.py",
        "models/manifest.py",
    ], found


def test_an_exception_that_matches_nothing_fails(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"sync/a.py": "import agent.core\n"})
    stale = Exception_("sync.a", "agent.config", "moved since")
    assert check(root, exceptions=(stale,)) == [
        "import contract: the exception sync.a -> agent.config matches nothing any more; "
        "remove it from tests/import_contract.py"
    ]


def test_every_exception_says_why() -> None:
    assert all(e.importer.startswith("sync") and len(e.why) > 10 for e in EXCEPTIONS)


def test_lint_and_ci_run_the_contract_and_mypy() -> None:
    """`make lint` runs this contract and mypy, and CI (.ci/run) runs `make lint`."""
    makefile = (REPO / "Makefile").read_text()
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "-m tests.import_contract" in lint and "/mypy" in lint, lint
    assert "\nmake lint\n" in (REPO / ".ci" / "run").read_text()
