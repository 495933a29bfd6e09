"""What a box is made of: the hardware profile ``hal.probe()`` returns.

Every part is a frozen dataclass so a profile can be cached, compared and
shared between tasks without anyone changing it under another's feet. The
profile is plain data: ``to_dict()`` gives JSON for ``/v1/hardware`` and the
hub, ``from_dict()`` rebuilds it (the hub reads profiles devices publish).
Nothing here reads the system; ``hal.probe`` does that.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from agent.core.errors import BadRequestError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CpuCluster:
    """CPUs of one core type and top frequency (a big.LITTLE cluster on ARM).

    ``performance`` marks the clusters worth running inference threads on:
    the fastest cores and those within 80 % of them (so Intel's "favoured
    cores", 100 MHz faster than their siblings, do not split one cluster into
    big and little).
    """

    core: str
    cpus: tuple[int, ...]
    max_mhz: int | None = None
    capacity: int | None = None
    performance: bool = True
    physical_cores: int = 0  # fewer than ``count`` with SMT; 0 = unknown, taken as ``count``

    @property
    def count(self) -> int:
        return len(self.cpus)


@dataclass(frozen=True)
class CpuInfo:
    """The processor: ``features`` holds only the ML-relevant flags, normalised.

    Names: ``neon fp16 dotprod i8mm bf16 sve sve2`` on ARM (from the kernel's
    ``asimd asimdhp asimddp i8mm bf16 sve sve2``) and the kernel's own names
    on x86 (``avx2 fma f16c avx512f avx512_vnni avx_vnni amx_int8`` ...). A
    feature is listed only when every core has it, since a thread may run on
    any core.
    """

    architecture: str
    model: str
    vendor: str = ""
    logical_cores: int = 0
    physical_cores: int = 0
    clusters: tuple[CpuCluster, ...] = ()
    features: tuple[str, ...] = ()
    usable_cpus: float | None = None  # affinity and cgroup quota, when they restrict us

    @property
    def performance_cores(self) -> int:
        """Physical cores in performance clusters (big cores on big.LITTLE).

        SMT siblings share one core's execution units, so cores are counted,
        not hardware threads.
        """
        cores = sum(c.physical_cores or c.count for c in self.clusters if c.performance)
        return max(1, cores or self.physical_cores or self.logical_cores)

    def has(self, feature: str) -> bool:
        return feature in self.features


@dataclass(frozen=True)
class MemoryInfo:
    """Memory in MiB; ``limit_mb`` is the cgroup limit when one applies (containers)."""

    total_mb: int = 0
    available_mb: int = 0
    swap_total_mb: int = 0
    limit_mb: int | None = None

    @property
    def usable_mb(self) -> int:
        """What a model may take now: available memory, capped by the cgroup limit."""
        return self.available_mb if self.limit_mb is None else min(self.available_mb, self.limit_mb)


@dataclass(frozen=True)
class ThermalZone:
    """One kernel thermal zone; temperatures in °C.

    ``throttling`` is true when the temperature has reached the zone's lowest
    passive trip point, where the kernel starts capping frequencies.
    """

    zone: int
    type: str
    temp_c: float | None = None
    passive_c: float | None = None
    critical_c: float | None = None

    @property
    def throttling(self) -> bool:
        return self.temp_c is not None and self.passive_c is not None and self.temp_c >= self.passive_c


_FIRMWARE_BITS = {
    "under_voltage": 0,
    "freq_capped": 1,
    "throttled": 2,
    "soft_temp_limit": 3,
}


@dataclass(frozen=True)
class FirmwareThrottle:
    """Raspberry Pi firmware state (``vcgencmd get_throttled``, or sysfs ``get_throttled``).

    The firmware, not the kernel, throttles a Pi, so its thermal zone shows no
    passive trip; this bit field is the only record. Bits 0-3 are "now",
    bits 16-19 "since boot".
    """

    raw: int

    def now(self) -> tuple[str, ...]:
        return tuple(name for name, bit in _FIRMWARE_BITS.items() if self.raw >> bit & 1)

    def since_boot(self) -> tuple[str, ...]:
        return tuple(name for name, bit in _FIRMWARE_BITS.items() if self.raw >> (bit + 16) & 1)

    @property
    def throttling(self) -> bool:
        return bool(self.raw & 0b1110)


@dataclass(frozen=True)
class ThermalInfo:
    zones: tuple[ThermalZone, ...] = ()
    firmware: FirmwareThrottle | None = None

    @property
    def throttling(self) -> bool:
        return any(z.throttling for z in self.zones) or bool(self.firmware and self.firmware.throttling)

    @property
    def max_temp_c(self) -> float | None:
        temps = [z.temp_c for z in self.zones if z.temp_c is not None]
        return max(temps) if temps else None


@dataclass(frozen=True)
class Target:
    """How one runtime addresses a piece of hardware (``openvino`` + ``GPU.0``).

    ``confirmed`` is true when the runtime itself listed the device in this
    probe; false means the hardware is there and this is how the runtime
    would name it, but the runtime was not asked (recorded tree, not
    installed, or ``runtimes=False``).
    """

    runtime: str
    device: str
    confirmed: bool = False


@dataclass(frozen=True)
class Accelerator:
    """A device that can run inference; the CPU is always one.

    ``kind`` is ``cpu | gpu | npu | tpu``; ``evidence`` lists what showed it
    (paths, runtime device lists) so a user can see why we think it is there.
    """

    kind: str
    vendor: str
    name: str
    targets: tuple[Target, ...] = ()
    evidence: tuple[str, ...] = ()
    detail: str = ""
    index: int | None = None

    def target(self, runtime: str) -> Target | None:
        return next((t for t in self.targets if t.runtime == runtime), None)


@dataclass(frozen=True)
class RuntimeInfo:
    """An inference engine importable here, with the devices it reported."""

    name: str
    version: str = ""
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class AudioDevice:
    """One ALSA PCM device; ``alsa_name`` is what pyaudio / arecord accept."""

    card: int
    device: int
    card_id: str
    card_name: str = ""
    name: str = ""
    playback: bool = False
    capture: bool = False

    @property
    def alsa_name(self) -> str:
        return f"hw:CARD={self.card_id},DEV={self.device}"


@dataclass(frozen=True)
class SerialPort:
    """A serial port; ``kind`` is ``usb`` (ttyUSB), ``acm`` (ttyACM) or ``uart``."""

    path: str
    kind: str
    by_id: str | None = None


@dataclass(frozen=True)
class BoardInfo:
    """The board: device-tree model on ARM, DMI product on x86."""

    model: str = ""
    vendor: str = ""
    compatible: tuple[str, ...] = ()
    l4t_release: str | None = None  # Jetson Linux (L4T) release, e.g. "R36.3.0"

    @property
    def soc(self) -> str:
        """The SoC from the most generic device-tree compatible (``rockchip,rk3588`` -> ``rk3588``)."""
        return self.compatible[-1].split(",", 1)[-1] if self.compatible else ""


@dataclass(frozen=True)
class HardwareProfile:
    """Everything ``hal.probe`` found; ``notes`` says what it could not read, and why."""

    cpu: CpuInfo
    memory: MemoryInfo = MemoryInfo()
    thermal: ThermalInfo = ThermalInfo()
    accelerators: tuple[Accelerator, ...] = ()
    runtimes: tuple[RuntimeInfo, ...] = ()
    audio: tuple[AudioDevice, ...] = ()
    serial: tuple[SerialPort, ...] = ()
    board: BoardInfo = BoardInfo()
    kernel: str = ""
    root: str = "/"
    notes: tuple[str, ...] = ()

    @property
    def architecture(self) -> str:
        return self.cpu.architecture

    def accelerators_of(self, kind: str) -> tuple[Accelerator, ...]:
        return tuple(a for a in self.accelerators if a.kind == kind)

    def runtime(self, name: str) -> RuntimeInfo | None:
        return next((r for r in self.runtimes if r.name == name), None)

    def recommended_threads(self, concurrent_models: int = 1) -> int:
        """Intra-op threads for one model session, when ``concurrent_models`` run at once.

        Why: each session owns a thread pool, and engines default to one
        thread per logical CPU, so two models on a 4-core board would run
        eight busy threads on four cores and both slow down. We share the
        performance cores: an intra-op parallel loop splits work evenly and
        waits for its slowest thread, so a thread on a LITTLE core (A55 beside
        an A76) drags the whole op down; SMT siblings share execution units
        and add little to GEMM-bound work. The result is also capped by the
        CPUs this process may use (affinity, cgroup quota). Never below 1.
        """
        cores = self.cpu.performance_cores
        if self.cpu.usable_cpus is not None:
            cores = min(cores, max(1, math.floor(self.cpu.usable_cpus)))
        return max(1, cores // max(1, concurrent_models))

    def summary(self) -> dict[str, Any]:
        """The short form for ``/v1/info``."""
        return {
            "arch": self.cpu.architecture,
            "cpu_model": self.cpu.model,
            "cores": self.cpu.logical_cores,
            "memory_mb": self.memory.total_mb,
            "board": self.board.model,
            "accelerators": [{"kind": a.kind, "vendor": a.vendor, "name": a.name} for a in self.accelerators],
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists), with a schema version for readers."""
        return {"schema": SCHEMA_VERSION, **_dump(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HardwareProfile:
        """Rebuild a profile from ``to_dict()`` output; unknown keys are ignored (newer writers).

        Raises ``BadRequestError`` when a required field is missing or of the
        wrong shape, since profiles arrive from other devices over the wire.
        """
        if not isinstance(data, dict):
            raise BadRequestError("a hardware profile must be a JSON object")
        schema = data.get("schema", SCHEMA_VERSION)
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise BadRequestError(
                f"hardware profile schema {schema!r} is newer than this edge-agent reads "
                f"({SCHEMA_VERSION}); upgrade edge-agent"
            )
        return _build(cls, data, "profile")


def _dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_dump(v) for v in value]
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a dict, following its type hints (nested, tuples, optionals)."""
    if not isinstance(data, dict):
        raise BadRequestError(f"hardware profile: {where} must be an object, got {type(data).__name__}")
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise BadRequestError(f"hardware profile: {where}.{f.name} is missing")
    return cls(**kwargs)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise BadRequestError(f"hardware profile: {where} must be a list")
        item = typing.get_args(hint)[0]
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)  # type: ignore[arg-type]  # is_dataclass narrows to an instance too
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise BadRequestError(f"hardware profile: {where} must be {hint.__name__}, got {value!r}")
    return value
