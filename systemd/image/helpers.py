"""Constants and small helpers of the image check (the steps are in steps.py)."""

from __future__ import annotations

import random
import re
import socket
import subprocess
from pathlib import Path

from nspawn import ImageError

REPO = Path(__file__).resolve().parents[2]
BIN = "/opt/edge-agent/current/bin/edge-agent"
CHECK_DIR = "/srv/image-check"  # fixtures inside the tree, readable by the service user
UNIT = "edge-agent.service"
#: the engines whose presence the installer decides per architecture
ENGINE_PACKAGES = (
    "onnxruntime",
    "openvino",
    "ai-edge-litert",
    "tflite-runtime",
    "rknn-toolkit-lite2",
    "numpy",
)
EMULATION_DROPIN = (
    "[Service]\n"
    "# qemu-user: no user namespace for a threaded process, and the host's /proc (nspawn.emulated_board)\n"
    "PrivateUsers=no\n"
    "BindReadOnlyPaths=/srv/board/cpuinfo:/proc/cpuinfo /srv/board/arch:/proc/sys/kernel/arch\n"
)
DENIAL = re.compile(
    r"audit|seccomp|apparmor|denied|operation not permitted|read-only file system|bad system call", re.I
)


SRC = "/usr/local/src/edge-agent"  # the checkout, as a board owner has it
#: Debian's minbase has no sudo: this stands in for it (root, or ``-u USER`` through runuser)
SUDO_SHIM = """#!/bin/sh
# image-check: sudo as the README uses it (as root, or -u USER), where the tree has no sudo
if [ "$1" = "-u" ]; then user="$2"; shift 2; exec runuser -u "$user" -- "$@"; fi
exec "$@"
"""


def readme_block(heading: str = "### Running under systemd") -> list[str]:
    """The command lines of the sh block under the README heading (as tests/journeys read them)."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n{heading}\n")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.DOTALL)
    if block is None:
        raise ImageError(f"README: no sh block under {heading}")
    return [line for line in block.group(1).splitlines() if line.strip()]


def kernel_log() -> list[str]:
    """The kernel's log as the host sees it: seccomp (type=1326) and AppArmor/audit records land here."""
    proc = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout.splitlines()


def free_port() -> int:
    """A free port below the ephemeral range, so no outgoing connection takes it before the daemon binds it."""
    for _ in range(200):
        port = random.randint(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ImageError("no free port in 20000-30000")
