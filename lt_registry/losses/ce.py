"""Softmax cross-entropy family: ``ce``, ``focal``, ``cb`` (class-balanced), and the shared
``SoftmaxCE`` base that the logit-adjusting losses (``la``, ``bayias``) build on."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .._registry import register_loss
from ..mixers.base import MixedTarget
from .base import LTLoss
from .weights import class_balanced_weights

__all__ = ["SoftmaxCE", "CrossEntropy", "FocalLoss", "ClassBalancedLoss"]


class SoftmaxCE(LTLoss):
    """Cross-entropy on (possibly shifted) logits: ``L_c(z) = -log softmax(adjust(z))_c``.

    Subclasses change :meth:`adjust` (a label-independent logit shift) or :meth:`from_log_probs` and
    :meth:`per_class_from_log_probs` (the loss from the log-probabilities, for one label or every class).
    A mixed target shares one ``log_softmax`` between ``y_a`` and ``y_b``; soft targets and label smoothing
    (``label_smoothing``, on the base class) use it for every class.
    """

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def from_log_probs(self, logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -logp.gather(1, y.unsqueeze(1)).squeeze(1)

    def per_class_from_log_probs(self, logp: torch.Tensor) -> torch.Tensor:
        return -logp

    def _log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.adjust(logits).float(), dim=1)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.from_log_probs(self._log_probs(logits), target)

    def per_class(self, logits: torch.Tensor) -> torch.Tensor:
        return self.per_class_from_log_probs(self._log_probs(logits))

    def mixed_per_sample(self, logits: torch.Tensor, target: MixedTarget) -> torch.Tensor:
        logp = self._log_probs(logits)
        la = self._weighted(self.from_log_probs(logp, target.y_a), target.y_a)
        lb = self._weighted(self.from_log_probs(logp, target.y_b), target.y_b)
        lam = target.lam.to(la.dtype)
        return lam * la + (1 - lam) * lb


@register_loss("ce", aliases=("cross_entropy", "erm"), label="CE", order=0)
class CrossEntropy(SoftmaxCE):
    """Plain softmax cross-entropy (ERM); label smoothing with ``label_smoothing`` (torch's meaning)."""


@register_loss("focal", aliases=("focal_loss",), label="Focal", order=1)
class FocalLoss(SoftmaxCE):
    """Focal loss (Lin et al. 2017): ``(1 - p_y)^gamma * CE`` with ``p_y = exp(-CE)``; gamma = 0 is CE.
    With soft targets or label smoothing: ``sum_c t_c (1 - p_c)^gamma (-log p_c)`` (docs/method.md §3.1).

    ``gamma = 1`` as in the LDAM-DRW CIFAR recipe (docs/method.md §3).
    """

    def __init__(self, class_counts: Any = None, *, gamma: float = 1.0, **kw: Any):
        super().__init__(class_counts, **kw)
        if not (isinstance(gamma, (int, float)) and gamma >= 0):
            raise ValueError(f"focal gamma must be a non-negative number, got {gamma!r}.")
        self.gamma = float(gamma)

    def _focal(self, ce: torch.Tensor) -> torch.Tensor:
        if self.gamma == 0:
            return ce
        p = torch.exp(-ce)
        return (1.0 - p).clamp_min(0.0).pow(self.gamma) * ce

    def from_log_probs(self, logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._focal(super().from_log_probs(logp, y))

    def per_class_from_log_probs(self, logp: torch.Tensor) -> torch.Tensor:
        return self._focal(-logp)  # L_c = (1 - p_c)^gamma * (-log p_c) for every class c

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, " + super().extra_repr()


@register_loss("cb", aliases=("class_balanced", "cb_loss"), label="CB", order=2)
class ClassBalancedLoss(SoftmaxCE):
    """Class-balanced loss (Cui et al. 2019): per-class weights ``(1 - beta) / (1 - beta^{n_c})``,
    normalised to sum to C, on a base loss ``'softmax'`` (CE, default), ``'sigmoid'`` (one-vs-all BCE
    summed over classes) or ``'focal'`` (sigmoid focal, ``(1 - p_t)^gamma * BCE``). docs/method.md §3."""

    needs_prior = True
    BASES = ("softmax", "sigmoid", "focal")

    def __init__(self, class_counts: Any = None, *, beta: float = 0.9999, base: str = "softmax",
                 gamma: float = 1.0, **kw: Any):
        if base not in self.BASES:
            raise ValueError(f"cb base must be one of {self.BASES}, got {base!r}.")
        if not (isinstance(gamma, (int, float)) and gamma >= 0):
            raise ValueError(f"cb focal gamma must be a non-negative number, got {gamma!r}.")
        super().__init__(class_counts, **kw)
        self.beta, self.base, self.gamma = beta, base, float(gamma)
        if self.class_weight is None:
            self.set_class_weight(class_balanced_weights(self.prior, beta))

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.base == "softmax":
            return super().per_sample(logits, target)
        z = logits.float()
        onehot = F.one_hot(target, z.shape[1]).to(z.dtype)
        bce = F.binary_cross_entropy_with_logits(z, onehot, reduction="none")
        if self.base == "focal" and self.gamma > 0:
            # p_t = sigmoid(z) for the true class, 1 - sigmoid(z) otherwise; (1 - p_t) = sigmoid(-z * sign)
            sign = 2 * onehot - 1
            bce = torch.exp(self.gamma * F.logsigmoid(-z * sign)) * bce
        return bce.sum(dim=1)

    def per_class(self, logits: torch.Tensor) -> torch.Tensor:
        if self.base == "softmax":
            return super().per_class(logits)
        # one-vs-all: label c makes class c positive and every other class negative, so
        # L_c = sum_j neg_j - neg_c + pos_c with neg_j, pos_j the (focal-)BCE of class j as negative / positive
        z = logits.float()
        neg, pos = F.softplus(z), F.softplus(-z)  # BCE(z, 0), BCE(z, 1)
        if self.base == "focal" and self.gamma > 0:
            neg = torch.exp(self.gamma * F.logsigmoid(z)) * neg  # (1 - p_t) = sigmoid(z) for a negative
            pos = torch.exp(self.gamma * F.logsigmoid(-z)) * pos  # (1 - p_t) = sigmoid(-z) for a positive
        return neg.sum(dim=1, keepdim=True) - neg + pos

    def mixed_per_sample(self, logits: torch.Tensor, target: MixedTarget) -> torch.Tensor:
        if self.base == "softmax":
            return super().mixed_per_sample(logits, target)
        return LTLoss.mixed_per_sample(self, logits, target)

    def extra_repr(self) -> str:
        return f"base={self.base!r}, beta={self.beta}, " + super().extra_repr()
