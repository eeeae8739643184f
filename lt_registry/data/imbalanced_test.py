"""Imbalanced test sets drawn from a balanced one, for evaluating under a shifted test prior (docs/method.md §2).

docs/method.md §2 asks for evaluation at test imbalance rho' in {100, 10, 1, 0.1, 0.01}: rho' > 1 is a long tail in the
training direction, 1 balanced, rho' < 1 the reversed tail (class 0 smallest). The counts follow the
training profile of docs/method.md §4, ``n'_c = int(n_max * (1/rho')^(c/(C-1)))`` (reversed for rho' < 1), with
``n_max`` the smallest class of the balanced test set (1000 for CIFAR-10, 100 for CIFAR-100); each class
keeps a seeded random subset, so the sets are the same on every machine and run.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, List

import numpy as np

from .cifar_lt import cifar_lt_indices

__all__ = ["ImbalancedTestSet", "imbalanced_test_indices", "TEST_IMB_FACTORS"]

#: The test imbalance factors of docs/method.md §2 (paper App. D.4, Table D2).
TEST_IMB_FACTORS = (100, 10, 1, 0.1, 0.01)


class ImbalancedTestSet(NamedTuple):
    """``indices`` into the balanced test set (int64), the test prior ``prior`` pi' (float64 [C], sums to 1)
    and the per-class ``counts``."""

    indices: np.ndarray
    prior: np.ndarray
    counts: List[int]


def imbalanced_test_indices(
    labels: Any,
    num_classes: int,
    test_imb_factor: float,
    n_max: Optional[int] = None,
    seed: int = 0,
) -> ImbalancedTestSet:
    """Select an imbalanced subset of a balanced test set (docs/method.md §2).

    Args:
        labels: test labels (int [N]).
        num_classes: C.
        test_imb_factor: rho' (> 1 long tail, 1 balanced, < 1 reversed long tail).
        n_max: images of the largest class; default the smallest class size in ``labels``.
        seed: seed of the per-class shuffles (the same selection rule as the training subset, docs/method.md §4).

    Returns:
        :class:`ImbalancedTestSet` ``(indices, prior, counts)``; pass ``prior`` as the loss's or the
        post-hoc adjustment's ``test_prior``.

    >>> sel = imbalanced_test_indices([0] * 4 + [1] * 4, 2, 0.25)
    >>> sel.counts, sel.prior.tolist()
    ([1, 4], [0.2, 0.8])
    """
    indices, counts = cifar_lt_indices(labels, num_classes, test_imb_factor, n_max=n_max, seed=seed)
    c = np.asarray(counts, dtype=np.float64)
    if (c == 0).any():
        raise ValueError(f"test_imb_factor={test_imb_factor} leaves classes {np.flatnonzero(c == 0).tolist()[:10]} "
                         "empty at this n_max; use a larger n_max or a milder imbalance.")
    return ImbalancedTestSet(indices, c / c.sum(), counts)
