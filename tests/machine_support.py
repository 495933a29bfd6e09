"""The small machine the daemon tests feed over HTTP: its settings, its TOML, a baseline then a spike.

``MACHINE`` is machine ``m1`` as the settings take it (``parse_machine("m1", MACHINE)``);
``machine_toml`` writes it as a config file's tables; ``spike_batches`` is a
60 s baseline, a pressure spike at 90 s and quiet until 140 s, as the request
bodies of ``POST /v1/sensors/readings`` (200 rows each).
"""

from __future__ import annotations

from typing import Any

#: a short baseline and three channels; ``clear_s`` short so an alert clears within a test
MACHINE: dict[str, Any] = {
    "channels": {"vibration": {"min": 0, "max": 100}, "current": {}, "pressure": {}},
    "learn_rows": 600,
    "clear_s": 2.0,
}
#: every level reached at once, so a fault opens at Critical
LEVELS_TOML = "warning = [1.0, 0.0]\nminor = [1.0, 0.0]\nmajor = [1.0, 0.0]\ncritical = [1.0, 0.0]\n"


def machine_toml(levels: str = "") -> str:
    """``[sensors.machines.m1]`` and its channels' tables; ``levels`` (e.g. ``LEVELS_TOML``) goes in m1's table."""
    channels = "\n".join(
        f"[sensors.machines.m1.channels.{name}]\n" + "".join(f"{k} = {v}\n" for k, v in spec.items())
        for name, spec in MACHINE["channels"].items()
    )
    return (
        f"[sensors.machines.m1]\nlearn_rows = {MACHINE['learn_rows']}\nclear_s = {MACHINE['clear_s']}\n"
        f"{levels}\n{channels}"
    )


def spike_batches(start_ts: float, *, seed: int = 3) -> list[dict[str, Any]]:
    """1,400 readings from ``start_ts`` at the machine's rate (10 Hz): a 60 s baseline, a spike at 90 s, quiet until 140 s."""
    from agent.sensors.simulator import Fault, MachineSimulator
    from agent.sensors.spec import parse_machine

    spec = parse_machine("m1", MACHINE)
    sim = MachineSimulator(spec, seed=seed, start_ts=start_ts, faults=[Fault("spike", "pressure", 90.0, 3.0)])
    ts, X, _ = sim.generate(1400)
    rows = [
        {"ts": t, "values": dict(zip(spec.channel_names, row, strict=True))}
        for t, row in zip(ts.tolist(), X.tolist(), strict=True)
    ]
    return [{"machine": "m1", "rows": rows[i : i + 200]} for i in range(0, len(rows), 200)]
