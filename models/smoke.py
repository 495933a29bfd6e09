"""Run a manifest's smoke test on a loaded session and measure how far outputs drift.

At load, the manager runs the smoke vector on the chosen engine and device: a
driver that loads a model and then returns garbage (it happens on NPUs) is
caught there and the next device in the chain is tried, instead of serving
wrong answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.core.errors import BadRequestError
from models.manifest import Manifest, Variant
from models.tensors import TensorLimits, decode_tensors

# smoke vectors are written by the publisher, not a client: allow more than an API request
_SMOKE_LIMITS = TensorLimits(max_tensors=64, max_elements=16_000_000, max_bytes=256 * 1024 * 1024)


@dataclass(frozen=True)
class Drift:
    """Largest absolute error, and that error relative to the largest reference magnitude."""

    max_abs: float
    max_rel: float

    def worst(self, other: Drift) -> Drift:
        return Drift(max(self.max_abs, other.max_abs), max(self.max_rel, other.max_rel))


def drift(got: Mapping[str, Any], expected: Mapping[str, Any]) -> Drift:
    import numpy as np

    worst = Drift(0.0, 0.0)
    for name, ref in expected.items():
        if name not in got:
            raise BadRequestError(f"output {name!r} is missing (got {sorted(got)})")
        a = np.asarray(got[name], dtype=np.float64)
        b = np.asarray(ref, dtype=np.float64)
        if a.shape != b.shape:
            raise BadRequestError(f"output {name!r} has shape {list(a.shape)}, expected {list(b.shape)}")
        if not a.size:
            continue
        abs_err = float(np.max(np.abs(a - b)))
        scale = float(np.max(np.abs(b)))
        worst = worst.worst(Drift(abs_err, abs_err / scale if scale > 0 else abs_err))
    return worst


def smoke_inputs(manifest: Manifest) -> dict[str, Any]:
    if manifest.smoke_test is None:
        raise BadRequestError(f"model {manifest.name} {manifest.version} has no smoke test")
    return decode_tensors(dict(manifest.smoke_test.inputs), _SMOKE_LIMITS)


def smoke_outputs(manifest: Manifest) -> dict[str, Any]:
    if manifest.smoke_test is None:
        raise BadRequestError(f"model {manifest.name} {manifest.version} has no smoke test")
    return decode_tensors(dict(manifest.smoke_test.outputs), _SMOKE_LIMITS)


def check_session(session: Any, manifest: Manifest, variant: Variant) -> Drift:
    """Run the smoke vector; raise BadRequestError when any output is outside tolerance."""
    import numpy as np

    smoke = manifest.smoke_test
    if smoke is None:
        return Drift(0.0, 0.0)
    atol = variant.atol if variant.atol is not None else smoke.atol
    rtol = variant.rtol if variant.rtol is not None else smoke.rtol
    got = session.run(smoke_inputs(manifest))
    expected = smoke_outputs(manifest)
    result = drift(got, expected)
    for name, ref in expected.items():
        a = np.asarray(got[name], dtype=np.float64)
        if not np.allclose(a, np.asarray(ref, dtype=np.float64), atol=atol, rtol=rtol, equal_nan=True):
            raise BadRequestError(
                f"smoke test failed on {variant.label}: output {name!r} differs by up to "
                f"{result.max_abs:.3g} "
                f"(tolerance atol={atol:g}, rtol={rtol:g})",
                code="smoke_test_failed",
            )
    return result
