"""aarch64 features from the auxiliary vector (AT_HWCAP/AT_HWCAP2) before /proc/cpuinfo.

``tests/boards/qemu-user-aarch64/auxv`` is a real ``/proc/self/auxv``, recorded with
``qemu-aarch64-static -L <arm64 tree> <tree>/usr/bin/cat /proc/self/auxv`` (qemu 7.2,
Debian 12; its default CPU, ``max``, has SVE2, I8MM and BF16). glibc printed the same
words (``LD_SHOW_AUXV=1``): AT_HWCAP ecfffffb, AT_HWCAP2 0x7f877fff.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

from hal import probe
from hal.probe_hwcap import AT_HWCAP, AT_HWCAP2, arm64_features, parse_auxv

BOARDS = Path(__file__).resolve().parent / "boards"
QEMU_AUXV = (BOARDS / "qemu-user-aarch64" / "auxv").read_bytes()


def test_recorded_qemu_auxv_decodes_to_the_words_glibc_printed() -> None:
    auxv = parse_auxv(QEMU_AUXV)
    assert auxv[AT_HWCAP] == 0xECFFFFFB and auxv[AT_HWCAP2] == 0x7F877FFF
    assert arm64_features(auxv) == ("neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2")


def test_a_pi5_vector_has_neon_and_dotprod_only() -> None:
    # Cortex-A76 (cpuinfo: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid
    # asimdrdm lrcpc dcpop asimddp): bits 0-12, 15, 16, 20; no AT_HWCAP2 features
    hwcap = sum(1 << b for b in (*range(13), 15, 16, 20))
    blob = struct.pack("=QQQQQQ", AT_HWCAP, hwcap, AT_HWCAP2, 0, 0, 0)
    assert arm64_features(parse_auxv(blob)) == ("neon", "fp16", "dotprod")


def test_no_hwcap_entry_and_torn_blobs() -> None:
    assert arm64_features(parse_auxv(b"")) is None
    assert arm64_features(parse_auxv(struct.pack("=QQ", 6, 4096))) is None  # AT_PAGESZ only
    assert parse_auxv(QEMU_AUXV[:-5]) == parse_auxv(QEMU_AUXV)  # a torn last pair is left out


def test_the_vector_wins_over_cpuinfo_on_an_aarch64_tree(tmp_path: Path) -> None:
    root = tmp_path / "rpi5"
    shutil.copytree(BOARDS / "rpi5", root, symlinks=True)
    assert probe(root, runtimes=False).cpu.features == ("neon", "fp16", "dotprod")  # cpuinfo's
    (root / "proc/self").mkdir(parents=True, exist_ok=True)
    (root / "proc/self/auxv").write_bytes(QEMU_AUXV)
    cpu = probe(root, runtimes=False).cpu
    assert cpu.features == ("neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2")
    assert cpu.model == "4x Cortex-A76"  # the model still comes from cpuinfo, which is this CPU's


def test_qemu_user_tree_host_cpuinfo_is_not_taken_for_the_emulated_cpu(tmp_path: Path) -> None:
    # what an ARM64 process under qemu-user sees: the x86 host's cpuinfo, an emulated vector
    root = tmp_path / "emulated"
    shutil.copytree(BOARDS / "n100-minipc", root, symlinks=True)
    (root / "proc/sys/kernel").mkdir(parents=True, exist_ok=True)
    (root / "proc/sys/kernel/arch").write_text("aarch64\n")
    (root / "proc/self").mkdir(parents=True, exist_ok=True)
    (root / "proc/self/auxv").write_bytes(QEMU_AUXV)
    profile = probe(root, runtimes=False)
    assert profile.cpu.architecture == "aarch64"
    assert "avx2" not in profile.cpu.features and "dotprod" in profile.cpu.features
    assert profile.cpu.model == "emulated aarch64 CPU"
    assert any("describes the host's CPU" in n for n in profile.notes), profile.notes
    (root / "proc/self/auxv").unlink()
    fallback = probe(root, runtimes=False)
    assert fallback.cpu.features == ()
    assert any("aarch64 features unknown" in n for n in fallback.notes)
