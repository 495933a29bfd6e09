"""aarch64 CPU features from the ELF auxiliary vector (AT_HWCAP, AT_HWCAP2), as the process sees them.

``/proc/cpuinfo`` is the kernel's description of the CPU. Under qemu-user
(an ARM64 board image run on an x86_64 machine) it is the *host's* cpuinfo,
which names x86 flags; the auxiliary vector, on the other hand, is what the
emulator hands the emulated process: the features of the CPU it emulates. On
a real board both agree. So on a live aarch64 process the probe reads
``/proc/self/auxv`` first and falls back to cpuinfo's ``Features`` line; a
recorded board tree may hold a ``proc/self/auxv`` blob too.

Bit numbers: Linux ``arch/arm64/include/uapi/asm/hwcap.h``.
"""

from __future__ import annotations

import struct

AT_NULL = 0
AT_HWCAP = 16
AT_HWCAP2 = 26

#: (word, bit, our name): the features an inference engine's kernels choose by, as cpuinfo's table names them
ARM64_HWCAPS = (
    (AT_HWCAP, 1, "neon"),  # HWCAP_ASIMD
    (AT_HWCAP, 10, "fp16"),  # HWCAP_ASIMDHP
    (AT_HWCAP, 20, "dotprod"),  # HWCAP_ASIMDDP
    (AT_HWCAP2, 13, "i8mm"),  # HWCAP2_I8MM
    (AT_HWCAP2, 14, "bf16"),  # HWCAP2_BF16
    (AT_HWCAP, 22, "sve"),  # HWCAP_SVE
    (AT_HWCAP2, 1, "sve2"),  # HWCAP2_SVE2
)


def parse_auxv(blob: bytes, word: int = 8) -> dict[int, int]:
    """``{a_type: a_val}`` from an auxv blob of native-endian (type, value) pairs, up to AT_NULL.

    ``word`` is 8 on a 64-bit process (aarch64). A truncated or odd blob gives what was whole.
    """
    fmt = "=QQ" if word == 8 else "=II"
    size = struct.calcsize(fmt)
    out: dict[int, int] = {}
    for offset in range(0, len(blob) - size + 1, size):
        a_type, a_val = struct.unpack_from(fmt, blob, offset)
        if a_type == AT_NULL:
            break
        out[a_type] = a_val
    return out


def arm64_features(auxv: dict[int, int]) -> tuple[str, ...] | None:
    """The normalised feature names set in AT_HWCAP/AT_HWCAP2; None when the vector has no AT_HWCAP."""
    if AT_HWCAP not in auxv:
        return None
    return tuple(name for at, bit, name in ARM64_HWCAPS if auxv.get(at, 0) >> bit & 1)


__all__ = ["AT_HWCAP", "AT_HWCAP2", "arm64_features", "parse_auxv"]
