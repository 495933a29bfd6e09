"""CPU and memory: /proc/cpuinfo, cpufreq, /proc/meminfo and the cgroup limits.

aarch64 kernels print no CPU name, only ``CPU implementer`` / ``CPU part``
ids, so the part table below turns ``0xd0b`` into ``Cortex-A76``; x86 prints
``model name``. big.LITTLE clusters come from each CPU's
``cpufreq/cpuinfo_max_freq`` (falling back to ``cpu_capacity``, then to the
known LITTLE core names) because that is what tells a scheduler, and us, which
cores are fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from hal.probe_fs import Tree
from hal.probe_hwcap import arm64_features, parse_auxv
from hal.profile import CpuCluster, CpuInfo, MemoryInfo

ARM_IMPLEMENTERS = {
    0x41: "ARM",
    0x42: "Broadcom",
    0x48: "HiSilicon",
    0x4E: "NVIDIA",
    0x51: "Qualcomm",
    0x61: "Apple",
    0xC0: "Ampere",
}

ARM_PARTS = {
    0xC07: "Cortex-A7",
    0xC09: "Cortex-A9",
    0xC0F: "Cortex-A15",
    0xD01: "Cortex-A32",
    0xD02: "Cortex-A34",
    0xD03: "Cortex-A53",
    0xD04: "Cortex-A35",
    0xD05: "Cortex-A55",
    0xD07: "Cortex-A57",
    0xD08: "Cortex-A72",
    0xD09: "Cortex-A73",
    0xD0A: "Cortex-A75",
    0xD0B: "Cortex-A76",
    0xD0C: "Neoverse-N1",
    0xD0D: "Cortex-A77",
    0xD0E: "Cortex-A76AE",
    0xD40: "Neoverse-V1",
    0xD41: "Cortex-A78",
    0xD42: "Cortex-A78AE",
    0xD44: "Cortex-X1",
    0xD46: "Cortex-A510",
    0xD47: "Cortex-A710",
    0xD48: "Cortex-X2",
    0xD49: "Neoverse-N2",
    0xD4B: "Cortex-A78C",
    0xD4C: "Cortex-X1C",
    0xD4D: "Cortex-A715",
    0xD4E: "Cortex-X3",
    0xD4F: "Neoverse-V2",
    0xD80: "Cortex-A520",
    0xD81: "Cortex-A720",
    0xD82: "Cortex-X4",
}

# In-order "efficiency" cores: slower per clock than any core they pair with.
LITTLE_CORES = {"Cortex-A7", "Cortex-A32", "Cortex-A34", "Cortex-A35", "Cortex-A53", "Cortex-A55"}
LITTLE_CORES |= {"Cortex-A510", "Cortex-A520"}

# kernel flag -> our name; the first that matches wins (armv7 says "neon", aarch64 "asimd").
ARM_FEATURES = (
    ("asimd", "neon"),
    ("neon", "neon"),
    ("asimdhp", "fp16"),
    ("asimddp", "dotprod"),
    ("i8mm", "i8mm"),
    ("bf16", "bf16"),
    ("sve", "sve"),
    ("sve2", "sve2"),
)
X86_FEATURES = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_int8",
    "amx_bf16",
)

_X86_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}
_PERFORMANCE_SHARE = 0.8


def parse_cpuinfo(text: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Split /proc/cpuinfo into one dict per processor and the trailing board block (Pi: Revision, Model)."""
    processors: list[dict[str, str]] = []
    extra: dict[str, str] = {}
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "processor" in fields and fields["processor"].isdigit():
            processors.append(fields)
        else:
            extra.update(fields)
    return processors, extra


def probe_architecture(tree: Tree, processors: list[dict[str, str]]) -> str:
    """What this process runs: ``uname`` on the live box, else ``/proc/sys/kernel/arch``, else cpuinfo's fields.

    On a board ``uname`` and the kernel agree. Under user-mode emulation (qemu-user: an ARM64 image
    on an x86_64 machine) ``uname`` is the emulated machine and the kernel's files are the host's;
    the engines that run are the emulated machine's, so that is the architecture, with a note.
    """
    arch = tree.read("/proc/sys/kernel/arch")
    if tree.live:
        machine = os.uname().machine
        if arch and arch != machine:
            tree.note(
                f"this process runs {machine} on a {arch} kernel (user-mode emulation such as qemu-user): "
                "/proc describes the host"
            )
        return machine
    if arch:
        return arch
    first = processors[0] if processors else {}
    if "flags" in first:
        return "x86_64" if " lm " in f" {first['flags']} " else "i686"
    if "Features" in first or "CPU architecture" in first:
        features = first.get("Features", "").split()
        version = first.get("CPU architecture", "")
        if version == "AArch64" or ("asimd" in features and version.startswith("8")):
            return "aarch64"
        return "armv7l"
    if first.get("isa", "").startswith("rv64"):
        return "riscv64"
    tree.note("architecture unknown: no /proc/sys/kernel/arch and /proc/cpuinfo says nothing usable")
    return "unknown"


def _core_name(fields: dict[str, str]) -> str:
    if "model name" in fields and "CPU part" not in fields:
        return fields["model name"]
    try:
        implementer = int(fields.get("CPU implementer", ""), 16)
        part = int(fields.get("CPU part", ""), 16)
    except ValueError:
        return fields.get("model name", "") or fields.get("cpu model", "") or "unknown CPU"
    if implementer == 0x41 and part in ARM_PARTS:
        return ARM_PARTS[part]
    vendor = ARM_IMPLEMENTERS.get(implementer, f"implementer {implementer:#x}")
    return f"{vendor} part {part:#x}"


def _features(processors: list[dict[str, str]]) -> tuple[str, ...]:
    """Normalised ML features every processor has."""
    common: set[str] | None = None
    for fields in processors:
        flags = set((fields.get("Features") or fields.get("flags") or "").split())
        common = flags if common is None else common & flags
    if not common:
        return ()
    if any("Features" in p for p in processors):
        names: list[str] = []
        for flag, name in ARM_FEATURES:
            if flag in common and name not in names:
                names.append(name)
        return tuple(names)
    return tuple(f for f in X86_FEATURES if f in common)


def _clusters(
    tree: Tree, cores: list[tuple[int, str]], physical_of: dict[int, tuple[str, str]]
) -> tuple[CpuCluster, ...]:
    """Group CPUs by core type and top speed; ``physical_of`` maps a CPU to its core (SMT siblings share one)."""
    groups: dict[tuple[str, int | None, int | None], list[int]] = {}
    for cpu, core in cores:
        base = f"/sys/devices/system/cpu/cpu{cpu}"
        khz = tree.read_int(f"{base}/cpufreq/cpuinfo_max_freq")
        capacity = tree.read_int(f"{base}/cpu_capacity")
        groups.setdefault((core, None if khz is None else khz // 1000, capacity), []).append(cpu)
    keys = list(groups)
    mhz = [k[1] for k in keys]
    caps = [k[2] for k in keys]
    if all(m is not None for m in mhz):
        top = max(m for m in mhz if m is not None)
        fast = {k for k in keys if k[1] is not None and k[1] >= _PERFORMANCE_SHARE * top}
    elif all(c is not None for c in caps):
        topc = max(c for c in caps if c is not None)
        fast = {k for k in keys if k[2] is not None and k[2] >= _PERFORMANCE_SHARE * topc}
    else:
        fast = {k for k in keys if k[0] not in LITTLE_CORES} or set(keys)
    clusters = [
        CpuCluster(
            core=k[0],
            cpus=tuple(groups[k]),
            max_mhz=k[1],
            capacity=k[2],
            performance=k in fast,
            physical_cores=len({physical_of.get(cpu, (str(cpu), "")) for cpu in groups[k]}),
        )
        for k in keys
    ]
    clusters.sort(key=lambda c: (not c.performance, -(c.max_mhz or 0), -(c.capacity or 0), c.cpus[0]))
    return tuple(clusters)


def _cgroup_dirs(tree: Tree) -> dict[str, str]:
    """This process's cgroup folders: ``{"": v2 dir, "memory": v1 dir, "cpu": v1 dir}``."""
    dirs: dict[str, str] = {}
    for line in (tree.read("/proc/self/cgroup") or "0::/").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            dirs[""] = f"/sys/fs/cgroup{path.rstrip('/')}"
        for name in controllers.split(","):
            if name in ("memory", "cpu"):
                dirs[name] = f"/sys/fs/cgroup/{name}{path.rstrip('/')}"
    return dirs


def _cpu_quota(tree: Tree, dirs: dict[str, str]) -> float | None:
    if "" in dirs:
        text = tree.read(f"{dirs['']}/cpu.max") or ""
        quota, _, period = text.partition(" ")
        if quota and quota != "max":
            try:
                return int(quota) / int(period or 100000)
            except (ValueError, ZeroDivisionError):
                tree.note(f"cannot parse {dirs['']}/cpu.max: {text!r}")
    if "cpu" in dirs:
        quota_us = tree.read_int(f"{dirs['cpu']}/cpu.cfs_quota_us")
        period_us = tree.read_int(f"{dirs['cpu']}/cpu.cfs_period_us")
        if quota_us and quota_us > 0 and period_us:
            return quota_us / period_us
    return None


def probe_cpu(tree: Tree) -> tuple[CpuInfo, dict[str, str]]:
    """The CPU, plus cpuinfo's non-processor block (Raspberry Pi puts the board there)."""
    text = tree.read_raw("/proc/cpuinfo")
    processors, extra = parse_cpuinfo(text or "")
    if text is not None and not processors:
        tree.note("/proc/cpuinfo lists no processors; core count from /sys")
    arch = probe_architecture(tree, processors)
    cores = [(int(p["processor"]), _core_name(p)) for p in processors]
    if not cores:
        cores = [(cpu, "unknown CPU") for cpu in _online_cpus(tree)]
    physical_of = {
        int(p["processor"]): (p.get("physical id", ""), p["core id"]) for p in processors if "core id" in p
    }
    clusters = _clusters(tree, cores, physical_of) if cores else ()
    first = processors[0] if processors else {}
    if "model name" in first and "CPU part" not in first:
        model = first["model name"]
        vendor = _X86_VENDORS.get(first.get("vendor_id", ""), first.get("vendor_id", ""))
    else:
        model = " + ".join(f"{c.count}x {c.core}" for c in _merge_by_core(clusters))
        try:
            vendor = ARM_IMPLEMENTERS.get(int(first.get("CPU implementer", ""), 16), "")
        except ValueError:
            vendor = ""
    features = _features(processors)
    if arch == "aarch64":
        features, model, vendor = _arm64_from_auxv(tree, processors, features, model, vendor)
    logical = len(cores)
    usable = _usable_cpus(tree, logical)
    info = CpuInfo(
        architecture=arch,
        model=model or "unknown CPU",
        vendor=vendor,
        logical_cores=logical,
        physical_cores=len(set(physical_of.values())) or logical,
        clusters=clusters,
        features=features,
        usable_cpus=usable,
    )
    return info, extra


def _arm64_from_auxv(
    tree: Tree, processors: list[dict[str, str]], features: tuple[str, ...], model: str, vendor: str
) -> tuple[tuple[str, ...], str, str]:
    """An aarch64 process's features from its auxiliary vector (AT_HWCAP/AT_HWCAP2), cpuinfo's as fallback.

    The vector is what the CPU (or qemu-user's emulated CPU) gives this very process; cpuinfo is the
    kernel's text, the host's under user-mode emulation. When cpuinfo describes a non-ARM CPU its
    model is not this process's CPU either, and the profile says so.
    """
    hwcaps = arm64_features(parse_auxv(tree.read_bytes("/proc/self/auxv") or b""))
    foreign = bool(processors) and not any("Features" in p or "CPU part" in p for p in processors)
    if foreign:
        host = model
        model, vendor = "emulated aarch64 CPU", ""
        tree.note(f"/proc/cpuinfo describes the host's CPU ({host}), not this aarch64 process's")
    if hwcaps is not None:
        return hwcaps, model, vendor
    if foreign:
        tree.note("no AT_HWCAP in /proc/self/auxv and cpuinfo is the host's: aarch64 features unknown")
        return (), model, vendor
    return features, model, vendor


def _merge_by_core(clusters: Iterable[CpuCluster]) -> list[CpuCluster]:
    """Clusters of the same core type shown once (RK3588 has two A76 clusters)."""
    merged: dict[str, CpuCluster] = {}
    for c in clusters:
        prev = merged.get(c.core)
        merged[c.core] = c if prev is None else CpuCluster(c.core, prev.cpus + c.cpus, prev.max_mhz)
    return list(merged.values())


def _online_cpus(tree: Tree) -> list[int]:
    """CPU numbers from ``/sys/devices/system/cpu/online`` (``0-3,6``) when cpuinfo fails."""
    text = tree.read("/sys/devices/system/cpu/online") or ""
    cpus: list[int] = []
    try:
        for part in filter(None, text.split(",")):
            lo, _, hi = part.partition("-")
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        tree.note(f"cannot parse /sys/devices/system/cpu/online: {text!r}")
        return []
    return cpus


def _usable_cpus(tree: Tree, logical: int) -> float | None:
    """CPUs this process may use, when fewer than the box has (affinity, cgroup quota)."""
    limits: list[float] = []
    if tree.live:
        try:
            limits.append(len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            pass
    quota = _cpu_quota(tree, _cgroup_dirs(tree))
    if quota is not None:
        limits.append(quota)
    usable = min(limits, default=None)
    if usable is None or (logical and usable >= logical):
        return None
    return usable


def probe_memory(tree: Tree) -> MemoryInfo:
    text = tree.read("/proc/meminfo")
    if text is None:
        tree.note("/proc/meminfo unreadable: memory unknown")
        return MemoryInfo()
    kb: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        try:
            kb[key.strip()] = int(value.split()[0])
        except (ValueError, IndexError):
            continue
    if "MemTotal" not in kb:
        tree.note("/proc/meminfo has no MemTotal: memory unknown")
        return MemoryInfo()
    available = kb.get("MemAvailable")
    if available is None:  # kernels before 3.14
        available = kb.get("MemFree", 0) + kb.get("Buffers", 0) + kb.get("Cached", 0)
    return MemoryInfo(
        total_mb=kb["MemTotal"] // 1024,
        available_mb=available // 1024,
        swap_total_mb=kb.get("SwapTotal", 0) // 1024,
        limit_mb=_memory_limit_mb(tree, kb["MemTotal"] // 1024),
    )


def _memory_limit_mb(tree: Tree, total_mb: int) -> int | None:
    dirs = _cgroup_dirs(tree)
    candidates = []
    if "" in dirs:
        candidates.append(f"{dirs['']}/memory.max")
    if "memory" in dirs:
        candidates.append(f"{dirs['memory']}/memory.limit_in_bytes")
    for path in candidates:
        text = tree.read(path)
        if not text or text == "max":
            continue
        try:
            limit = int(text) // (1 << 20)
        except ValueError:
            tree.note(f"cannot parse {path}: {text[:40]!r}")
            continue
        # cgroup v1 writes "no limit" as a huge number.
        return limit if limit < total_mb else None
    return None
