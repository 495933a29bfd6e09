"""The human view of a HardwareProfile, for ``edge-agent hardware``.

Plain ASCII columns (the box may be reached over a serial console), one
section per part, empty sections said in words rather than left out so a
user sees that we looked: "no serial ports" is an answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from hal.profile import CpuCluster, HardwareProfile, Target


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(r[i])) for r in (headers, *rows)) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return (indent + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _cpus(cpus: Sequence[int]) -> str:
    """``(0, 1, 2, 3, 6)`` -> ``0-3,6``."""
    spans: list[list[int]] = []
    for cpu in sorted(cpus):
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in spans)


def _cluster(c: CpuCluster) -> str:
    speed = f" @ {c.max_mhz} MHz" if c.max_mhz else ""
    role = "performance" if c.performance else "efficiency"
    return f"{c.count}x {c.core}{speed}, cpus {_cpus(c.cpus)} ({role})"


def _target(t: Target) -> str:
    return f"{t.runtime}:{t.device}{'*' if t.confirmed else ''}"


def format_profile(profile: HardwareProfile) -> str:
    """A readable multi-section table of everything ``probe`` found."""
    cpu, mem, board = profile.cpu, profile.memory, profile.board
    out: list[str] = []
    board_bits = [board.model or "unknown board"]
    if board.vendor:
        board_bits.append(f"by {board.vendor}")
    if board.soc:
        board_bits.append(f"SoC {board.soc}")
    if board.l4t_release:
        board_bits.append(f"L4T {board.l4t_release}")
    out.append(f"Board         {', '.join(board_bits)}")
    out.append(f"Kernel        {profile.kernel or 'unknown'} ({cpu.architecture})")
    cores = f"{cpu.logical_cores} logical"
    if cpu.physical_cores and cpu.physical_cores != cpu.logical_cores:
        cores += f", {cpu.physical_cores} physical"
    out.append(f"CPU           {cpu.model} ({cores})")
    for c in cpu.clusters:
        out.append(f"  cluster     {_cluster(c)}")
    out.append(f"  features    {' '.join(cpu.features) or 'none of note'}")
    if cpu.usable_cpus is not None:
        out.append(f"  usable      {cpu.usable_cpus:g} CPUs (affinity or cgroup quota)")
    threads = profile.recommended_threads()
    out.append(f"  threads     {threads} per model alone, {profile.recommended_threads(2)} each for 2 models")
    swap = f", swap {mem.swap_total_mb} MiB" if mem.swap_total_mb else ""
    limit = f", cgroup limit {mem.limit_mb} MiB" if mem.limit_mb is not None else ""
    out.append(f"Memory        {mem.total_mb} MiB total, {mem.available_mb} MiB available{swap}{limit}")

    out += ["", "Accelerators  (* = confirmed by the runtime in this probe)"]
    rows = [
        [a.kind, a.vendor or "-", a.name, ", ".join(_target(t) for t in a.targets) or "-", a.detail]
        for a in profile.accelerators
    ]
    out += _table(["kind", "vendor", "name", "runtime:device", "detail"], rows) if rows else ["  none found"]

    if profile.runtimes:
        out += ["", "Runtimes"]
        rows = [[r.name, r.version or "?", ", ".join(r.devices) or "-"] for r in profile.runtimes]
        out += _table(["runtime", "version", "devices"], rows)

    thermal = profile.thermal
    state = "THROTTLING" if thermal.throttling else "ok"
    out += ["", f"Thermal       {state}"]
    rows = [
        [
            str(z.zone),
            z.type,
            "?" if z.temp_c is None else f"{z.temp_c:.1f}",
            "-" if z.passive_c is None else f"{z.passive_c:.1f}",
            "-" if z.critical_c is None else f"{z.critical_c:.1f}",
            "THROTTLING" if z.throttling else "",
        ]
        for z in thermal.zones
    ]
    out += _table(["zone", "type", "temp C", "passive C", "critical C", ""], rows) if rows else ["  no zones"]
    if thermal.firmware is not None:
        fw = thermal.firmware
        now = ", ".join(fw.now()) or "nothing"
        since = ", ".join(fw.since_boot()) or "nothing"
        out.append(f"  firmware    {fw.raw:#x}: now {now}; since boot {since}")

    out += ["", "Audio"]
    rows = [
        [
            d.alsa_name,
            "+".join(k for k, on in (("playback", d.playback), ("capture", d.capture)) if on) or "-",
            d.card_name,
            d.name,
        ]
        for d in profile.audio
    ]
    out += _table(["alsa", "streams", "card", "device"], rows) if rows else ["  no sound cards"]

    out += ["", "Serial"]
    rows = [[p.path, p.kind, p.by_id or ""] for p in profile.serial]
    out += _table(["port", "kind", "by-id"], rows) if rows else ["  no serial ports"]

    if profile.notes:
        out += ["", "Notes"] + [f"  - {n}" for n in profile.notes]
    return "\n".join(out) + "\n"
