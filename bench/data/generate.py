"""The labelled sensor benchmark set, generated deterministically (nothing large is committed).

Four machines (different seeds, so different noise, load and fault placement),
each a 5-minute baseline then 6 faults of every kind on rotating channels,
separated by normal stretches. ``python -m bench.data.generate --check``
regenerates the set and compares its SHA-256 with manifest.json.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from agent.sensors.simulator import FAULT_KINDS, Fault, MachineSimulator
from agent.sensors.spec import parse_machines, sample_machines

HERE = Path(__file__).resolve().parent
MACHINES = 4
GAP_S = 150.0
LENGTH_S = {"spike": 3.0, "drift": 240.0, "stuck": 40.0, "noise": 120.0, "decorrelate": 90.0, "dropout": 20.0}


def machine_set(k: int, quick: bool = False):
    spec = parse_machines(sample_machines())[0]
    names = spec.channel_names
    rng = np.random.default_rng(1000 + k)
    t = spec.learn_rows / spec.rate_hz + 60.0
    faults = []
    kinds = list(FAULT_KINDS) * (1 if quick else 2)
    for i, kind in enumerate(kinds):
        ch = names[(i + k) % len(names)]
        if kind == "decorrelate" and ch == "bearing_temp":  # a lagged channel: not separable, see README
            ch = "current"
        faults.append(Fault(kind, ch, t, LENGTH_S[kind]))
        t += LENGTH_S[kind] + GAP_S + float(rng.uniform(0, 60))
    sim = MachineSimulator(spec, seed=k + 11, faults=faults)
    ts, X, labels = sim.generate(int(t * spec.rate_hz))
    return spec, faults, ts, X, labels


def digest(quick: bool = False) -> str:
    h = hashlib.sha256()
    for k in range(MACHINES):
        _, _, ts, X, labels = machine_set(k, quick)
        for arr in (ts, np.nan_to_num(X, nan=-1e300), labels):
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    manifest = json.loads((HERE / "manifest.json").read_text())
    got = digest()
    if "--write" in sys.argv:
        manifest["sha256"] = got
        (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(got, "ok" if got == manifest["sha256"] else "DIFFERS from manifest.json")
