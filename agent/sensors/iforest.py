"""Isolation Forest: fitted in numpy, scored in micro-batches by a flat-array tree walk.

Why not call scikit-learn per batch: ``IsolationForest.score_samples`` walks
each tree in a Python-level loop over estimators and validates its input
every call, which costs milliseconds per call however small the batch, so a
live stream scored a few rows at a time would spend its CPU on overhead. Here
all trees are flattened into shared arrays (feature, threshold, left, right,
leaf value = depth + c(leaf size)) and a micro-batch of n rows walks all T
trees at once: ``max_depth`` vectorised steps over an (n, T) array of node ids.

The scores are exactly scikit-learn's (``from_sklearn`` imports a fitted
forest; the tests compare both), and ``fit`` grows trees by the same
algorithm (Liu et al. 2008: random feature, uniform split between the node's
min and max, depth limit ceil(log2 psi)) without needing scikit-learn at all,
which keeps ~60 MB of scipy/sklearn out of the daemon.
"""

from __future__ import annotations

import math
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np

_EULER = 0.5772156649015329
#: the flat arrays one step of the tree walk reads: feature, threshold, left, right
_Walk = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def average_path_length(n: np.ndarray | int) -> np.ndarray:
    """c(n): the mean path length of an unsuccessful BST search, as scikit-learn defines it."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + _EULER) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@dataclass(eq=False, repr=False)
class IsolationForestModel:
    """All trees in flat arrays; ``score_samples`` matches scikit-learn's (higher = more normal)."""

    name = "iforest"

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    max_depth: int
    max_samples: InitVar[int]
    #: scikit-learn's trees compare float32 inputs; imported forests must too, to match exactly
    float32_inputs: bool = False
    denominator: float = field(init=False)
    _walk_arrays: _Walk | None = field(init=False, default=None)

    def __post_init__(self, max_samples: int) -> None:
        self.denominator = float(average_path_length(max_samples))

    @property
    def n_trees(self) -> int:
        return int(self.roots.size)

    def mean_depth(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self.float32_inputs:
            X = X.astype(np.float32).astype(np.float64)
        n, d = X.shape
        flat = np.ascontiguousarray(X).ravel()
        base = (np.arange(n, dtype=np.int64) * d)[:, None]
        node = np.broadcast_to(self.roots, (n, self.roots.size))
        # leaves loop onto themselves (feature 0, threshold +inf), so every row can take
        # exactly max_depth steps with no per-step leaf test
        feat, thr, left, right = self._walk
        for _ in range(self.max_depth):
            go_left = flat[base + feat[node]] <= thr[node]
            node = np.where(go_left, left[node], right[node])
        return self.value[node].mean(axis=1)

    @property
    def _walk(self) -> _Walk:
        if self._walk_arrays is None:
            leaf = self.feature < 0
            ids = np.arange(self.feature.size, dtype=np.int64)
            self._walk_arrays = (
                np.where(leaf, 0, self.feature),
                np.where(leaf, np.inf, self.threshold),
                np.where(leaf, ids, self.left),
                np.where(leaf, ids, self.right),
            )
        return self._walk_arrays

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """scikit-learn's convention: the opposite of the anomaly score (in [-1, 0))."""
        return -(2.0 ** (-self.mean_depth(X) / self.denominator))

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        """s(x) = 2^(-E(h)/c(psi)) in (0, 1]: above ~0.6 is anomalous."""
        return 2.0 ** (-self.mean_depth(X) / self.denominator)

    # ------------------------------------------------------------ building

    @classmethod
    def fit(
        cls, X: np.ndarray, n_trees: int = 100, max_samples: int = 256, seed: int | None = None
    ) -> IsolationForestModel:
        X = np.asarray(X, dtype=np.float64)
        rng = np.random.default_rng(seed)
        n, d = X.shape
        psi = min(max_samples, n)
        max_depth = max(1, math.ceil(math.log2(max(psi, 2))))
        builder = _Builder()
        roots = []
        for _ in range(n_trees):
            idx = rng.choice(n, size=psi, replace=False)
            roots.append(builder.grow(X[idx], rng, max_depth, d))
        return cls(*builder.arrays(), np.asarray(roots, dtype=np.int64), max_depth, psi)

    @classmethod
    def from_sklearn(cls, forest: Any) -> IsolationForestModel:
        """Flatten a fitted ``sklearn.ensemble.IsolationForest`` (same scores, batch-friendly)."""
        feats, thrs, lefts, rights, values, roots = [], [], [], [], [], []
        offset = 0
        max_depth = 0
        for tree, features in zip(forest.estimators_, forest.estimators_features_, strict=True):
            t = tree.tree_
            count = t.node_count
            leaf = t.children_left == -1
            depth = _node_depths(t.children_left, t.children_right)
            max_depth = max(max_depth, int(depth.max()))
            f = np.where(leaf, -1, np.asarray(features)[np.maximum(t.feature, 0)])
            feats.append(f)
            thrs.append(t.threshold.astype(np.float64))
            lefts.append(np.where(leaf, -1, t.children_left + offset))
            rights.append(np.where(leaf, -1, t.children_right + offset))
            values.append(np.where(leaf, depth + average_path_length(t.n_node_samples), 0.0))
            roots.append(offset)
            offset += count
        return cls(
            np.concatenate(feats).astype(np.int64),
            np.concatenate(thrs),
            np.concatenate(lefts).astype(np.int64),
            np.concatenate(rights).astype(np.int64),
            np.concatenate(values),
            np.asarray(roots, dtype=np.int64),
            max_depth,
            int(forest.max_samples_),
            float32_inputs=True,
        )


def _node_depths(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    depth = np.zeros(left.size, dtype=np.float64)
    for i in range(left.size):  # children always come after their parent in sklearn's arrays
        if left[i] != -1:
            depth[left[i]] = depth[right[i]] = depth[i] + 1
    return depth


class _Builder:
    """Grows isolation trees into shared flat lists (iteratively: no recursion limit)."""

    def __init__(self) -> None:
        self.feature: list[int] = []
        self.threshold: list[float] = []
        self.left: list[int] = []
        self.right: list[int] = []
        self.value: list[float] = []

    def _new(self) -> int:
        self.feature.append(-1)
        self.threshold.append(0.0)
        self.left.append(-1)
        self.right.append(-1)
        self.value.append(0.0)
        return len(self.feature) - 1

    def grow(self, X: np.ndarray, rng: np.random.Generator, max_depth: int, d: int) -> int:
        root = self._new()
        stack = [(root, X, 0)]
        while stack:
            node, data, depth = stack.pop()
            m = data.shape[0]
            if depth >= max_depth or m <= 1:
                self.value[node] = depth + float(average_path_length(m))
                continue
            lo, hi = data.min(axis=0), data.max(axis=0)
            usable = np.flatnonzero(hi > lo)
            if usable.size == 0:  # all rows identical: cannot be split further
                self.value[node] = depth + float(average_path_length(m))
                continue
            f = int(usable[rng.integers(usable.size)])
            thr = float(rng.uniform(lo[f], hi[f]))
            go_left = data[:, f] <= thr
            left, right = self._new(), self._new()
            self.feature[node], self.threshold[node] = f, thr
            self.left[node], self.right[node] = left, right
            stack.append((left, data[go_left], depth + 1))
            stack.append((right, data[~go_left], depth + 1))
        return root

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.asarray(self.feature, dtype=np.int64),
            np.asarray(self.threshold, dtype=np.float64),
            np.asarray(self.left, dtype=np.int64),
            np.asarray(self.right, dtype=np.int64),
            np.asarray(self.value, dtype=np.float64),
        )
