"""The class prior: computed once from the training counts and handed to every part that needs it.

``pi_c = n_c / sum(n)`` (docs/method.md notation). The offset ``log pi - log pi'`` is what Bayias adds to the logits
(paper Eq. 14-15); the many/medium/few split is the field's reporting convention (docs/method.md §6).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from .labels import check_labels

__all__ = ["ClassPrior", "long_tail_counts", "as_prior", "PriorLike"]

PriorLike = Union["ClassPrior", Sequence[float], torch.Tensor]


def long_tail_counts(n_max: int, num_classes: int, imb_factor: float) -> List[int]:
    """Exponential long-tail profile ``n_c = int(n_max * (1/rho)^(c/(C-1)))`` (docs/method.md §4).

    ``imb_factor`` (rho) = n_max / n_min. ``rho < 1`` gives the reversed tail (class 0 smallest), ``rho = 1``
    a balanced set: this also builds the imbalanced *test* sets of docs/method.md §2 (rho' in {100, ..., 0.01}).

    >>> long_tail_counts(5000, 10, 100)
    [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    if not n_max >= 1:
        raise ValueError(f"n_max must be >= 1, got {n_max!r}.")
    if not (isinstance(imb_factor, (int, float)) and math.isfinite(imb_factor) and imb_factor > 0):
        raise ValueError(f"imb_factor (rho = n_max / n_min) must be a positive finite number, got {imb_factor!r}.")
    if num_classes == 1:
        return [int(n_max)]
    if imb_factor >= 1:
        return [int(n_max * (1.0 / imb_factor) ** (c / (num_classes - 1))) for c in range(num_classes)]
    # reversed tail: the same profile read from the other end
    return long_tail_counts(n_max, num_classes, 1.0 / imb_factor)[::-1]


class ClassPrior:
    """Training class counts and everything derived from them.

    Args:
        counts: per-class training counts ``n_c`` (non-negative, at least one class).
        smoothing: pseudo-count added to every class. Zero-count classes are rejected unless
            ``smoothing > 0``, because ``log pi`` would be ``-inf`` and Bayias/LA would never predict them.

    Attributes:
        counts: float64 tensor [C] of (smoothed) counts; ``probs``/``log_probs``: float32 [C].
    """

    def __init__(self, counts: Any, *, smoothing: float = 0.0):
        if isinstance(counts, ClassPrior):
            counts = counts.raw_counts
        try:
            t = torch.as_tensor(counts, dtype=torch.float64).detach().cpu()
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"class counts must be a 1-D sequence of numbers, got {type(counts).__name__}.") from e
        if t.ndim != 1:
            raise ValueError(f"class counts must be 1-D (one count per class), got shape {tuple(t.shape)}.")
        if t.numel() == 0:
            raise ValueError("class counts are empty: need at least one class.")
        if not torch.isfinite(t).all():
            raise ValueError("class counts contain NaN or infinite values.")
        if (t < 0).any():
            bad = torch.nonzero(t < 0).flatten().tolist()
            raise ValueError(f"class counts must be non-negative; negative at class indices {bad[:10]}.")
        if not (isinstance(smoothing, (int, float)) and smoothing >= 0 and math.isfinite(smoothing)):
            raise ValueError(f"smoothing must be a non-negative number, got {smoothing!r}.")
        zero = torch.nonzero(t == 0).flatten().tolist()
        if zero and smoothing == 0:
            raise ValueError(
                f"classes {zero[:10]}{'...' if len(zero) > 10 else ''} have no training samples (count 0); "
                "their log-prior would be -inf. Pass smoothing > 0 (for example smoothing=1) to allow empty "
                "classes, or remove them from the label space."
            )
        self.raw_counts = t.clone()
        self.smoothing = float(smoothing)
        self.counts = t + self.smoothing
        self.probs = (self.counts / self.counts.sum()).to(torch.float32)
        self.log_probs = torch.log(self.counts / self.counts.sum()).to(torch.float32)

    # ---- constructors -------------------------------------------------------------------------------
    @classmethod
    def from_counts(cls, counts: Any, *, smoothing: float = 0.0) -> "ClassPrior":
        return cls(counts, smoothing=smoothing)

    @classmethod
    def from_labels(cls, labels: Any, num_classes: Optional[int] = None, *, smoothing: float = 0.0) -> "ClassPrior":
        """Count integer labels in ``[0, num_classes)``; ``num_classes`` defaults to ``max(label) + 1``.

        Labels are checked by :func:`lt_registry.labels.check_labels` (integer [N], values in range).
        """
        y = check_labels(labels, num_classes, what="labels").cpu()
        if y.numel() == 0:
            raise ValueError("labels are empty: cannot estimate a class prior from no samples.")
        if num_classes is None:
            num_classes = int(y.max()) + 1
        return cls(torch.bincount(y, minlength=num_classes), smoothing=smoothing)

    # ---- derived quantities ------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return int(self.counts.numel())

    @property
    def imbalance_factor(self) -> float:
        """rho = n_max / n_min of the (smoothed) counts."""
        return float(self.counts.max() / self.counts.min())

    def __len__(self) -> int:
        return self.num_classes

    def __repr__(self) -> str:
        return (f"ClassPrior(num_classes={self.num_classes}, total={int(self.raw_counts.sum())}, "
                f"imbalance_factor={self.imbalance_factor:.4g})")

    def test_prior(self, test_prior: Optional[PriorLike] = None) -> torch.Tensor:
        """A validated test prior pi' as float32 [C]: ``None``/``"uniform"`` -> 1/C, else normalised."""
        C = self.num_classes
        if test_prior is None or (isinstance(test_prior, str) and test_prior == "uniform"):
            return torch.full((C,), 1.0 / C)
        if isinstance(test_prior, str):
            raise ValueError(f"test_prior must be 'uniform', None, a ClassPrior or {C} probabilities; got {test_prior!r}.")
        if isinstance(test_prior, ClassPrior):
            p = test_prior.probs.to(torch.float64)
        else:
            p = torch.as_tensor(test_prior, dtype=torch.float64).detach().cpu()
        if p.ndim != 1 or p.numel() != C:
            raise ValueError(f"test_prior must have one entry per class ({C}), got shape {tuple(p.shape)}.")
        if not torch.isfinite(p).all() or (p <= 0).any():
            raise ValueError("test_prior entries must be positive and finite (a zero-probability class has log-prior -inf).")
        return (p / p.sum()).to(torch.float32)

    def offset(self, test_prior: Optional[PriorLike] = None) -> torch.Tensor:
        """``log pi - log pi'`` [C] (float32): the Bayias logit offset, paper Eq. 15 / App. B Eq. B.17."""
        return self.log_probs - torch.log(self.test_prior(test_prior))

    def split(self, many: int = 100, few: int = 20) -> Dict[str, torch.Tensor]:
        """Boolean class masks ``{'many': n > many, 'medium': few <= n <= many, 'few': n < few}`` (docs/method.md §6)."""
        n = self.raw_counts
        return {"many": n > many, "medium": (n >= few) & (n <= many), "few": n < few}

    def thirds(self) -> Dict[str, torch.Tensor]:
        """Head / mid / tail masks by class-index thirds (the CIFAR convention of docs/method.md §6)."""
        C = self.num_classes
        idx = torch.arange(C)
        a, b = math.ceil(C / 3), math.ceil(2 * C / 3)
        return {"head": idx < a, "mid": (idx >= a) & (idx < b), "tail": idx >= b}

    def to_dict(self) -> Dict[str, Any]:
        return {"class_counts": [int(c) if float(c).is_integer() else float(c) for c in self.raw_counts.tolist()],
                "smoothing": self.smoothing, "prior": self.probs.tolist()}


def as_prior(class_counts: Any, *, smoothing: float = 0.0, what: str = "this component") -> ClassPrior:
    """Accept a ClassPrior or counts; a missing prior is an error naming the component that needs it."""
    if class_counts is None:
        raise ValueError(f"{what} needs class_counts (a sequence of per-class training counts or a ClassPrior).")
    if isinstance(class_counts, ClassPrior):
        return class_counts
    return ClassPrior(class_counts, smoothing=smoothing)
