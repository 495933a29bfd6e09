"""The row every benchmark returns: ours, the peer measured in the same run, and their ratio.

``bench/run.py`` prints the rows as one table and writes them under
``bench/results/``; a module builds each with ``row``.
"""

from __future__ import annotations

from typing import Any


def row(
    name: str,
    ours: float,
    peer: float | None,
    peer_name: str,
    unit: str,
    target: str,
    ratio: float | None = None,
    *,
    digits: int = 4,
) -> dict[str, Any]:
    """One line of the bench table; ``ratio`` is ours / peer unless given (none without a peer).

    ``digits``: the figures' rounding (the ratio keeps 4).
    """
    if ratio is None and peer:
        ratio = ours / peer
    return {
        "name": name,
        "ours": round(ours, digits),
        "peer": None if peer is None else round(peer, digits),
        "peer_name": peer_name,
        "unit": unit,
        "ratio": None if ratio is None else round(ratio, 4),
        "target": target,
    }
