"""Calls to one model that wait in its queue together run as one batch (opt-in: ``batch_max``).

A busy model pays its fixed cost per ``session.run`` (the engine's own set-up,
an inference thread's lock round, a hand-off back to the loop) once per call.
With ``batch_max`` > 1 an inference thread that takes a BATCH call also takes
the BATCH calls right behind it in the same model's queue whose feeds match
(the same input names and dtypes, the same shapes past the first dimension), up
to ``batch_max`` calls; their inputs are joined along the first axis, the
session runs once, and each output is cut back into each call's rows.

Only for models whose rows are independent of one another (most classifiers,
detectors, embedders and autoencoders; not a model that normalises over its
batch or carries state from row to row): the engine cannot tell, so the
operator opts in (``[models] batch_max``). A model whose inputs and outputs do
not all have a dynamic first dimension runs one call at a time whatever the
setting (``batchable``). REALTIME and INTERACTIVE calls never wait for, or ride
in, a batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.settings import ManagerSettings
    from runtimes.base import Session


class BatchShapeError(ValueError):
    """An output of a batched run did not have one row per input row: the model is not batchable."""


def batchable(session: Session) -> bool:
    """Every input and output has a dynamic first dimension (the batch): calls can be joined on it."""
    specs = (*session.inputs, *session.outputs)
    return bool(session.inputs) and all(s.shape and (s.shape[0] is None or s.shape[0] < 0) for s in specs)


def limit(settings: ManagerSettings, name: str, session: Session) -> int:
    """How many calls one run of ``name`` may take: its ``batch_max``, 1 where a tensor has no batch axis."""
    wanted = max(1, settings.batch_maxes.get(name, settings.batch_max))
    return wanted if wanted > 1 and batchable(session) else 1


def compatible(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Feeds that can share a run: the same names, dtypes, and shapes past the first dimension."""
    if a.keys() != b.keys():
        return False
    for name, x in a.items():
        y = b[name]
        if x.dtype != y.dtype or x.shape[1:] != y.shape[1:] or not x.shape:
            return False
    return True


def merge(feeds: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], list[int]]:
    """One feed from several (joined on the first axis), and the rows each brought."""
    import numpy as np

    first = next(iter(feeds[0]))
    rows = [int(f[first].shape[0]) for f in feeds]
    return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}, rows


def split(out: Mapping[str, Any], rows: Sequence[int]) -> list[dict[str, Any]]:
    """Each call's share of a batched run's outputs (views of the batch's arrays)."""
    total = sum(rows)
    for name, value in out.items():
        if getattr(value, "shape", ())[:1] != (total,):
            raise BatchShapeError(
                f"output {name!r} of a batched run has shape {getattr(value, 'shape', None)} for {total} "
                "input rows: this model's rows are not independent; set its batch_max to 1"
            )
    parts: list[dict[str, Any]] = []
    start = 0
    for n in rows:
        parts.append({name: value[start : start + n] for name, value in out.items()})
        start += n
    return parts
