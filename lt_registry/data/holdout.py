"""Validation splits of datasets that ship without one (docs/method.md §4.3).

:func:`stratified_holdout` (own data): from every class with ``n >= 2`` training images,
``max(1, round(fraction * n))`` images go to validation, never all of them (at least one stays for training); a
class with one image keeps it for training. The draw is a pure function of ``(labels, fraction, seed)``, so a run
folder that records the three (and the held-out paths, for a check) reproduces the same split.

    >>> labels = [0] * 10 + [1] * 3 + [2]
    >>> holdout_counts([10, 3, 1], 0.1).tolist()
    [1, 1, 0]
    >>> tr, va = stratified_holdout(labels, 0.1, seed=0)
    >>> [labels[i] for i in va], len(tr)
    ([0, 1], 12)

:func:`left_out_validation` (CIFAR-LT, digits_lt): a balanced set drawn from the training images that the
long-tailed selection left out, so the paper's training set stays exactly as it is.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

__all__ = ["stratified_holdout", "holdout_counts", "left_out_validation"]


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


def left_out_validation(labels: Any, train_indices: Any, per_class: int, num_classes: Optional[int] = None,
                        seed: int = 0, overlap: bool = True) -> Tuple[np.ndarray, Dict[int, int]]:
    """A balanced validation set of ``per_class`` images per class from the images a selection left out.

    For each class c (in order, one ``numpy.random.default_rng(seed)`` for all draws): ``per_class`` images are
    drawn without replacement from the class's images outside ``train_indices``. A class with fewer left-out
    images (the head class of a long-tailed selection keeps all of its images) gives all of them, and with
    ``overlap`` the shortfall is drawn from its training images, which stay in training too: the training set
    and its counts are unchanged, and the overlap is reported. Without ``overlap`` such a class has fewer
    validation images. A class with fewer than ``per_class`` images in all gives them all.

    Args:
        labels: labels of the full pool (int [N]); train_indices: the selection (indices into the pool).
        per_class: validation images per class (>= 1).
        num_classes: C (default ``max(label) + 1``); seed: seed of the draw.

    Returns:
        ``(val_indices, overlap_with_train)``: sorted indices into the pool, and ``{class index: images also in
        training}`` for the classes that have any.

    >>> val, over = left_out_validation([0] * 5 + [1] * 5, [0, 1, 2, 3, 4, 5], 2)
    >>> sorted(int(i) // 5 for i in val), over
    ([0, 0, 1, 1], {0: 2})
    """
    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels, dtype=np.int64).reshape(-1)
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError(f"val_per_class must be a positive integer (0 turns the validation split off), got "
                         f"{per_class!r}.")
    C = int(num_classes) if num_classes is not None else (int(y.max()) + 1 if y.size else 0)
    in_train = np.zeros(y.size, dtype=bool)
    in_train[np.asarray(train_indices, dtype=np.int64)] = True
    rng = np.random.default_rng(seed)
    val, over = [], {}
    for c in range(C):
        members = np.flatnonzero(y == c)
        out = members[~in_train[members]]
        take = rng.choice(out, size=min(int(per_class), out.size), replace=False)
        val.append(take)
        short = min(int(per_class), members.size) - take.size
        if overlap and short > 0:
            val.append(rng.choice(members[in_train[members]], size=short, replace=False))
            over[c] = int(short)
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    return val_idx.astype(np.int64), over
