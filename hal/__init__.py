"""Hardware abstraction layer: what this box is made of.

``probe(root="/")`` reads /proc, /sys, /dev and /etc (or a recorded board
tree) into a ``HardwareProfile``; ``hal.render.format_profile`` prints it.
Importing ``hal`` costs only the standard library: no numpy, no engine.
"""

from __future__ import annotations

from hal.probe import probe
from hal.profile import (
    Accelerator,
    AudioDevice,
    BoardInfo,
    CpuCluster,
    CpuInfo,
    FirmwareThrottle,
    HardwareProfile,
    MemoryInfo,
    RuntimeInfo,
    SerialPort,
    Target,
    ThermalInfo,
    ThermalZone,
)

__all__ = [
    "Accelerator",
    "AudioDevice",
    "BoardInfo",
    "CpuCluster",
    "CpuInfo",
    "FirmwareThrottle",
    "HardwareProfile",
    "MemoryInfo",
    "RuntimeInfo",
    "SerialPort",
    "Target",
    "ThermalInfo",
    "ThermalZone",
    "probe",
]
