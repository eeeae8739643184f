"""The validation hold-out of datasets that ship without a validation split (docs/method.md §4.3).

A stratified draw: from every class with ``n >= 2`` training images, ``max(1, round(fraction * n))`` images go to
validation, never all of them (at least one stays for training); a class with one image keeps it for
training. The draw is a pure function of ``(labels, fraction, seed)``, so a run folder that records the three
(and the held-out indices, for a check) reproduces the same split.

    >>> tr, va = stratified_holdout([0] * 10 + [1] * 3 + [2], 0.1, seed=0)
    >>> sorted(int(i) for i in va if i < 10).__len__(), sorted(int(i) for i in va if 10 <= i < 13).__len__()
    (1, 1)
    >>> 13 in set(va.tolist())
    False
"""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np

__all__ = ["stratified_holdout", "holdout_counts"]


def holdout_counts(counts: Any, fraction: float) -> np.ndarray:
    """Images per class that :func:`stratified_holdout` moves to validation, for per-class ``counts``."""
    n = np.asarray(counts, dtype=np.int64)
    if not (isinstance(fraction, (int, float)) and 0.0 < float(fraction) < 1.0):
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction!r}.")
    k = np.maximum(1, np.rint(float(fraction) * n).astype(np.int64))
    k = np.minimum(k, n - 1)
    return np.where(n >= 2, k, 0)


def stratified_holdout(labels: Any, fraction: float, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Split sample indices into ``(train_indices, val_indices)``, both sorted, stratified by label.

    Args:
        labels: integer labels [N] (numpy, list or tensor).
        fraction: share of each class held out, in (0, 1) (``--val-fraction``, default 0.1).
        seed: seed of the draw (the run's ``--seed``).
    """
    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels, dtype=np.int64).reshape(-1)
    if y.size == 0:
        raise ValueError("cannot hold out a validation split from an empty training set.")
    C = int(y.max()) + 1
    k = holdout_counts(np.bincount(y, minlength=C), fraction)
    rng = np.random.default_rng(seed)
    val = []
    for c in np.flatnonzero(k):
        idx = np.flatnonzero(y == c)
        val.append(rng.choice(idx, size=int(k[c]), replace=False))
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    mask = np.ones(y.size, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask).astype(np.int64), val_idx.astype(np.int64)
