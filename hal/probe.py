"""``probe()``: read a root directory into a HardwareProfile.

One entry point for the live box (``/``) and for recorded board trees
(``tests/boards/<board>/``), so every parser is tested on boards we cannot
have here. The engines are asked only for the live root and only with
``runtimes=True``, in a child process (see ``hal.probe_runtimes``). probe
never raises: whatever cannot be read is left out and said in ``notes``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

from hal.probe_accel import detect, merge_engines
from hal.probe_board import probe_board
from hal.probe_cpu import probe_cpu, probe_memory
from hal.probe_fs import Tree
from hal.probe_io import probe_audio, probe_serial
from hal.probe_thermal import probe_thermal
from hal.profile import (
    Accelerator,
    AudioDevice,
    BoardInfo,
    CpuInfo,
    HardwareProfile,
    MemoryInfo,
    RuntimeInfo,
    SerialPort,
    ThermalInfo,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


def _guarded(tree: Tree, part: str, fn: Callable[[], T], default: T) -> T:
    """Run one part of the probe; a failure nobody foresaw costs that part only."""
    try:
        return fn()
    except Exception as exc:  # parsers note what they expect; this is the last line
        log.warning("hardware probe: %s failed", part, exc_info=True)
        tree.note(f"probing {part} failed: {type(exc).__name__}: {exc}")
        return default


def probe(root: str | os.PathLike[str] = "/", *, runtimes: bool = True) -> HardwareProfile:
    """Probe the box, or the recorded tree at ``root``.

    ``runtimes=True`` on the live root starts a child process that imports
    the installed engines to list their devices (about a second, once);
    ``runtimes=False`` gives hardware evidence only, no target confirmed.
    """
    tree = Tree(root)
    if not tree.root.is_dir():
        tree.note(f"{root} is not a directory: nothing probed")
        return HardwareProfile(CpuInfo("unknown", "unknown CPU"), root=str(root), notes=tuple(tree.notes))
    unknown: tuple[CpuInfo, dict[str, str]] = (CpuInfo("unknown", "unknown CPU"), {})
    cpu, cpuinfo_extra = _guarded(tree, "cpu", lambda: probe_cpu(tree), unknown)
    board = _guarded(tree, "board", lambda: probe_board(tree, cpuinfo_extra), BoardInfo())
    no_accelerators: list[Accelerator] = []
    accelerators = _guarded(tree, "accelerators", lambda: detect(tree, cpu, board), no_accelerators)
    runtime_infos: tuple[RuntimeInfo, ...] = ()
    if runtimes and tree.live:
        from hal.probe_runtimes import ask_engines  # only here: the daemon probes without runtimes

        engines = ask_engines()
        for note in engines.notes:
            tree.note(note)
        found = accelerators
        accelerators = _guarded(tree, "engines", lambda: merge_engines(found, engines, tree.notes), found)
        runtime_infos = tuple(engines.runtimes)
    memory = _guarded(tree, "memory", lambda: probe_memory(tree), MemoryInfo())
    thermal = _guarded(tree, "thermal", lambda: probe_thermal(tree), ThermalInfo())
    no_audio: tuple[AudioDevice, ...] = ()
    no_serial: tuple[SerialPort, ...] = ()
    audio = _guarded(tree, "audio", lambda: probe_audio(tree), no_audio)
    serial = _guarded(tree, "serial", lambda: probe_serial(tree), no_serial)
    kernel = tree.read("/proc/sys/kernel/osrelease") or (os.uname().release if tree.live else "")
    return HardwareProfile(
        cpu=cpu,
        memory=memory,
        thermal=thermal,
        accelerators=tuple(accelerators),
        runtimes=runtime_infos,
        audio=audio,
        serial=serial,
        board=board,
        kernel=kernel,
        root=str(root),
        notes=tuple(tree.notes),
    )
