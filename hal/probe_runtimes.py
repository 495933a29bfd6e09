"""Ask the installed inference engines (and ``nvidia-smi``) which devices they see.

The engines are asked in a short-lived child process, not in the caller:
importing onnxruntime and OpenVINO just to list devices adds ~75 MiB of
resident memory to the daemon for its whole life (measured on x86_64 with
onnxruntime 1.32 and OpenVINO 2026.4), and a broken GPU plugin can crash the
process that loads it. The child prints one JSON line; the parent never
imports an engine. The child runs ``python -m runtimes.listing``, which asks the
``runtimes/`` adapters, so device names here are the ones ``Runtime.load`` takes.
The layer below (``hal``) never imports ``runtimes``: it reads the child's JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hal.profile import RuntimeInfo

CHILD_TIMEOUT_S = 30.0  # OpenVINO's GPU plugin may compile kernels on its first start


@dataclass
class EngineFindings:
    """What the live box's engines said.

    ``runtimes`` lists the available engines with their devices named as the
    ``runtimes/`` adapters name them (``CPU``, ``CUDA:0``, ``GPU.0``, ``NPU``,
    ``EdgeTPU``), the names ``models.choose`` and ``Runtime.load`` use;
    ``details`` maps ``runtime:device`` to the adapter's detail (OpenVINO's
    FULL_DEVICE_NAME); ``nvidia_gpus`` holds nvidia-smi's (index, name, detail).
    """

    runtimes: list[RuntimeInfo] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)
    nvidia_gpus: list[tuple[int, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _nvidia_smi(findings: EngineFindings) -> None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return
    query = "--query-gpu=index,name,memory.total,driver_version"
    try:
        done = subprocess.run(
            [exe, query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        findings.notes.append(f"nvidia-smi failed: {exc}")
        return
    if done.returncode != 0:
        findings.notes.append(f"nvidia-smi exited {done.returncode}: {done.stderr.strip()[:200]}")
        return
    for line in done.stdout.splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) == 4 and cols[0].isdigit():
            findings.nvidia_gpus.append((int(cols[0]), cols[1], f"{cols[2]} MiB, driver {cols[3]}"))


def ask_engines(timeout: float = CHILD_TIMEOUT_S) -> EngineFindings:
    """Engine device lists from a child process, plus ``nvidia-smi``; never raises."""
    findings = EngineFindings()
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "runtimes.listing",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            findings.notes.append(f"engine probe exited {done.returncode}: {tail[0][:200]}")
        else:
            data = json.loads(lines[-1])
            findings.runtimes = [
                RuntimeInfo(r["name"], str(r["version"]), tuple(r["devices"])) for r in data["runtimes"]
            ]
            findings.details = dict(data["details"])
            findings.notes.extend(data["notes"])
    except subprocess.TimeoutExpired:
        findings.notes.append(f"engine probe took over {timeout:.0f} s and was stopped; runtimes unknown")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        findings.notes.append(f"engine probe failed: {exc}")
    _nvidia_smi(findings)
    return findings
