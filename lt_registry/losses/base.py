"""The loss contract shared by every registry entry.

``forward(logits, target)`` takes one of three targets (docs/method.md §3.1):

- integer class indices [B]: ``w_y * L_y(z)`` per sample, by the cheap gather of :meth:`LTLoss.per_sample`;
- a :class:`MixedTarget` ``(y_a, y_b, lam)``: ``lam * w_{y_a} L_{y_a}(z) + (1 - lam) * w_{y_b} L_{y_b}(z)``
  per sample (paper Eq. 11), also by :meth:`LTLoss.per_sample`. Reducing first and weighting afterwards
  is the peer bug docs/method.md §1.1 warns about: the per-sample weights collapse to their mean;
- soft targets, a float tensor [B, C] whose rows are class probabilities t_i: ``sum_c t_ic * w_c L_c(z_i)``,
  with :meth:`LTLoss.per_class` giving ``L_c(z_i)`` for every class at once. A two-hot row
  ``lam e_a + (1 - lam) e_b`` gives the MixedTarget's value and gradient, a one-hot row the class index's.

``L_c`` is the loss the sample would have with label c, the class weight ``w_c`` comes on top: optional
per-class weights (class-balanced losses, the DRW schedule); ``reduction='mean'`` is then the plain batch
mean of the weighted losses (Cui et al.'s form), not torch's ``sum(w_i l_i) / sum(w_i)``.

Label smoothing (``label_smoothing=eps``, every loss) replaces a target ``t`` by ``(1 - eps) t + eps / C``
(timm's and torch's meaning), for each of the three kinds of target.
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..labels import check_labels, check_soft_targets
from ..mixers.base import MixedTarget
from ..prior import ClassPrior, as_prior

__all__ = ["LTLoss", "Target", "soft_target"]

Target = Union[torch.Tensor, MixedTarget]
_REDUCTIONS = ("none", "mean", "sum")


def _check_smoothing(eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0.0 <= float(eps) < 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1) (0 = off, 0.1 = timm's default), got {eps!r}.")
    return float(eps)


def soft_target(target: Target, num_classes: int, *, label_smoothing: float = 0.0,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The soft target [B, C] of class indices [B], a :class:`MixedTarget` or soft targets [B, C], smoothed:
    ``(1 - eps) * t + eps / C`` with ``t`` the one-hot row, ``lam * e_{y_a} + (1 - lam) * e_{y_b}`` or the row
    itself (docs/method.md §3.1). On the target's device; labels must lie in ``[0, C)`` (checked on the CPU)."""
    eps = _check_smoothing(label_smoothing)
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    C = int(num_classes)
    if isinstance(target, MixedTarget):
        y_a = check_labels(target.y_a, C, what="target.y_a", sync=False)
        y_b = check_labels(target.y_b, C, what="target.y_b", n=y_a.shape[0], sync=False)
        lam = target.lam.to(y_a.device, dtype)
        if lam.shape != y_a.shape:
            raise ValueError(f"target.lam must have shape [B] = {tuple(y_a.shape)}, got {tuple(lam.shape)}.")
        t = torch.zeros(y_a.shape[0], C, dtype=dtype, device=y_a.device)
        t.scatter_add_(1, y_a.unsqueeze(1), lam.unsqueeze(1))
        t.scatter_add_(1, y_b.unsqueeze(1), (1 - lam).unsqueeze(1))
    elif torch.is_tensor(target) and target.is_floating_point():
        t = check_soft_targets(target, C, sync=False).to(dtype)
    else:
        if not torch.is_tensor(target):
            raise TypeError(f"target must be class indices [B], a MixedTarget or soft targets [B, C], "
                            f"got {type(target).__name__}.")
        t = F.one_hot(check_labels(target, C, what="target", sync=False), C).to(dtype)
    return t * (1.0 - eps) + eps / C if eps > 0 else t


class LTLoss(nn.Module):
    """Base class: subclasses implement :meth:`per_sample` (unweighted loss per sample for hard labels,
    shape [B]) and, for soft targets and label smoothing at O(B*C) cost, :meth:`per_class` ([B, C]).

    Args:
        class_counts: training counts per class or a :class:`ClassPrior` (required where ``needs_prior``).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        class_weight: optional per-class weights [C] (see :meth:`set_class_weight`).
        label_smoothing: epsilon in [0, 1): every target ``t`` becomes ``(1 - eps) * t + eps / C``
            (docs/method.md §3.1).

    Attributes:
        validate_labels: check that every label lies in ``[0, C)`` (:func:`lt_registry.labels.check_labels`)
            and that soft-target rows are probabilities (:func:`lt_registry.labels.check_soft_targets`) also
            for targets on an accelerator, at one host sync per call. Targets on the CPU are always checked.
            Set it to ``False`` on an instance when the targets were validated where they entered (the
            training recipe does), so the training step has no per-step sync.
    """

    #: the loss needs the training class counts
    needs_prior = False
    #: the trained logits are already free of the training prior (they assume a uniform test prior), as after
    #: logit adjustment or Bayias; otherwise they carry the training prior. Post-hoc prior moves, the model card
    #: and the calibrators read this instead of a list of loss names.
    prior_free = False
    #: range-check labels / soft targets on accelerators too (one host sync per call); see the class docstring
    validate_labels = True

    def __init__(self, class_counts: Any = None, *, reduction: str = "mean",
                 class_weight: Optional[Any] = None, label_smoothing: float = 0.0):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
        self.reduction = reduction
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.prior: Optional[ClassPrior] = None
        if class_counts is not None or self.needs_prior:
            self.prior = as_prior(class_counts, what=f"loss '{type(self).__name__}'")
        self.register_buffer("class_weight", None)
        if class_weight is not None:
            self.set_class_weight(class_weight)

    @property
    def num_classes(self) -> Optional[int]:
        return None if self.prior is None else self.prior.num_classes

    def set_class_weight(self, weight: Optional[Any]) -> None:
        """Install per-class weights [C] (or remove them with ``None``); used by DRW at its epoch."""
        if weight is None:
            self.class_weight = None
            return
        w = torch.as_tensor(weight, dtype=torch.float32).detach()
        if w.ndim != 1 or (self.num_classes is not None and w.numel() != self.num_classes):
            raise ValueError(f"class_weight must be 1-D with one entry per class ({self.num_classes}), "
                             f"got shape {tuple(w.shape)}.")
        if not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError("class_weight entries must be finite and non-negative.")
        device = self.class_weight.device if self.class_weight is not None else None
        self.class_weight = w if device is None else w.to(device)

    # ---- to implement --------------------------------------------------------------------------
    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Unweighted, unsmoothed loss ``L_y(z_i)`` of each sample with its label ``y_i``, shape [B]."""
        raise NotImplementedError

    def per_class(self, logits: torch.Tensor) -> torch.Tensor:
        """Unweighted loss ``L_c(z_i)`` of each sample for every label c, shape [B, C]: column c equals
        ``per_sample(logits, full(c))``.

        This default evaluates :meth:`per_sample` once on every (sample, class) pair, a [B*C, C] batch
        (O(B*C^2) memory); the registry losses override it with an O(B*C) form."""
        B, C = logits.shape
        rows = logits.repeat_interleave(C, dim=0)
        labels = torch.arange(C, device=logits.device).repeat(B)
        return self.per_sample(rows, labels).view(B, C)

    def mixed_per_sample(self, logits: torch.Tensor, target: MixedTarget) -> torch.Tensor:
        """``lam * L(y_a) + (1 - lam) * L(y_b)`` per sample, each term with its class weight."""
        la = self._weighted(self.per_sample(logits, target.y_a), target.y_a)
        lb = self._weighted(self.per_sample(logits, target.y_b), target.y_b)
        lam = target.lam.to(la.dtype)
        return lam * la + (1 - lam) * lb

    # ---- shared machinery ----------------------------------------------------------------------
    def _weighted(self, loss: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.class_weight is None:
            return loss
        return loss * self.class_weight.to(loss.device, loss.dtype)[y]

    def _weighted_per_class(self, logits: torch.Tensor) -> torch.Tensor:
        """``w_c * L_c(z_i)``, shape [B, C]."""
        P = self.per_class(logits)
        if self.class_weight is None:
            return P
        return P * self.class_weight.to(P.device, P.dtype)

    def _labels(self, logits: torch.Tensor, y: Any, what: str) -> torch.Tensor:
        """``y`` checked against the logits: integer [B] in ``[0, C)``, as int64."""
        if not torch.is_tensor(y):
            raise TypeError(f"{what} must be a LongTensor [B] of class indices, a MixedTarget or a float tensor "
                            f"[B, C] of soft targets, got {type(y).__name__}.")
        return check_labels(y, logits.shape[1], what=what, n=logits.shape[0], sync=self.validate_labels)

    def _smoothed(self, hard: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
        """``sum_c ((1 - eps) t_c + eps / C) P_c`` from ``hard = sum_c t_c P_c``."""
        eps = self.label_smoothing
        return (1.0 - eps) * hard + eps * P.mean(dim=1)

    def forward(self, logits: torch.Tensor, target: Target) -> torch.Tensor:
        if not torch.is_tensor(logits) or logits.ndim != 2:
            shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
            raise ValueError(f"logits must be a tensor [B, C], got {shape}.")
        C = logits.shape[1]
        if self.num_classes is not None and C != self.num_classes:
            raise ValueError(f"logits have {C} classes but the loss was built for {self.num_classes} "
                             "(class_counts length); the model's num_classes must match the data.")
        smooth = self.label_smoothing > 0
        if isinstance(target, MixedTarget):
            unmixed = target.y_b is target.y_a  # no mixing happened: lam * L + (1 - lam) * L = L
            y_a = self._labels(logits, target.y_a, "target.y_a")
            if target.lam.shape != y_a.shape:
                raise ValueError(f"target.lam must have shape [B] = {tuple(y_a.shape)}, "
                                 f"got {tuple(target.lam.shape)}.")
            y_b = y_a if unmixed else self._labels(logits, target.y_b, "target.y_b")
            if smooth:
                P = self._weighted_per_class(logits)
                hard = P.gather(1, y_a.unsqueeze(1)).squeeze(1)
                if not unmixed:
                    lam = target.lam.to(P.device, P.dtype)
                    hard = lam * hard + (1 - lam) * P.gather(1, y_b.unsqueeze(1)).squeeze(1)
                loss = self._smoothed(hard, P)
            elif unmixed:
                loss = self._weighted(self.per_sample(logits, y_a), y_a)
            else:
                loss = self.mixed_per_sample(logits, MixedTarget(y_a, y_b, target.lam))
        elif torch.is_tensor(target) and target.is_floating_point():
            t = check_soft_targets(target, C, what="target", n=logits.shape[0], sync=self.validate_labels)
            P = self._weighted_per_class(logits)
            loss = (t.to(P.device, P.dtype) * P).sum(dim=1)
            if smooth:
                loss = self._smoothed(loss, P)
        else:
            y = self._labels(logits, target, "target")
            if smooth:
                P = self._weighted_per_class(logits)
                loss = self._smoothed(P.gather(1, y.unsqueeze(1)).squeeze(1), P)
            else:
                loss = self._weighted(self.per_sample(logits, y), y)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def extra_repr(self) -> str:
        parts = [f"reduction={self.reduction!r}"]
        if self.num_classes is not None:
            parts.append(f"num_classes={self.num_classes}")
        if self.label_smoothing > 0:
            parts.append(f"label_smoothing={self.label_smoothing}")
        return ", ".join(parts)
