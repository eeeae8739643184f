"""The loss contract shared by every registry entry.

``forward(logits, target)`` takes integer labels [B] or a :class:`MixedTarget` and always evaluates
``lam * L(y_a) + (1 - lam) * L(y_b)`` *per sample* before reducing (paper Eq. 11). Reducing first and
weighting afterwards is the peer bug docs/method.md §1.1 warns about: the per-sample weights collapse to their mean.

Optional per-class weights ``w`` (class-balanced losses, the DRW schedule) multiply each sample's loss by
``w[y]``; ``reduction='mean'`` is then the plain batch mean of the weighted losses (Cui et al.'s form),
not torch's ``sum(w_i l_i) / sum(w_i)``.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import nn

from ..labels import check_labels
from ..mixers.base import MixedTarget
from ..prior import ClassPrior, as_prior

__all__ = ["LTLoss", "Target"]

Target = Union[torch.Tensor, MixedTarget]
_REDUCTIONS = ("none", "mean", "sum")


class LTLoss(nn.Module):
    """Base class: subclasses implement :meth:`per_sample` (unweighted loss per sample, shape [B]).

    Args:
        class_counts: training counts per class or a :class:`ClassPrior` (required where ``needs_prior``).
        reduction: ``'none'`` | ``'mean'`` | ``'sum'``.
        class_weight: optional per-class weights [C] (see :meth:`set_class_weight`).

    Attributes:
        validate_labels: check that every label lies in ``[0, C)`` (:func:`lt_registry.labels.check_labels`)
            also for labels on an accelerator, at one host sync per call. Labels on the CPU are always
            checked. Set it to ``False`` on an instance when the labels were validated where they entered
            (the training recipe does), so the training step has no per-step sync.
    """

    #: the loss needs the training class counts
    needs_prior = False
    #: the trained logits are already free of the training prior (they assume a uniform test prior), as after
    #: logit adjustment or Bayias; otherwise they carry the training prior. Post-hoc prior moves, the model card
    #: and the calibrators read this instead of a list of loss names.
    prior_free = False
    #: range-check labels on accelerators too (one host sync per call); see the class docstring
    validate_labels = True

    def __init__(self, class_counts: Any = None, *, reduction: str = "mean",
                 class_weight: Optional[Any] = None):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
        self.reduction = reduction
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
        raise NotImplementedError

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

    def _labels(self, logits: torch.Tensor, y: Any, what: str) -> torch.Tensor:
        """``y`` checked against the logits: integer [B] in ``[0, C)``, as int64."""
        if not torch.is_tensor(y):
            raise TypeError(f"{what} must be a LongTensor [B] or a MixedTarget, got {type(y).__name__}.")
        return check_labels(y, logits.shape[1], what=what, n=logits.shape[0], sync=self.validate_labels)

    def forward(self, logits: torch.Tensor, target: Target) -> torch.Tensor:
        if not torch.is_tensor(logits) or logits.ndim != 2:
            shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
            raise ValueError(f"logits must be a tensor [B, C], got {shape}.")
        C = logits.shape[1]
        if self.num_classes is not None and C != self.num_classes:
            raise ValueError(f"logits have {C} classes but the loss was built for {self.num_classes} "
                             "(class_counts length); the model's num_classes must match the data.")
        if isinstance(target, MixedTarget):
            unmixed = target.y_b is target.y_a  # no mixing happened: lam * L + (1 - lam) * L = L
            y_a = self._labels(logits, target.y_a, "target.y_a")
            if target.lam.shape != y_a.shape:
                raise ValueError(f"target.lam must have shape [B] = {tuple(y_a.shape)}, "
                                 f"got {tuple(target.lam.shape)}.")
            if unmixed:
                loss = self._weighted(self.per_sample(logits, y_a), y_a)
            else:
                y_b = self._labels(logits, target.y_b, "target.y_b")
                loss = self.mixed_per_sample(logits, MixedTarget(y_a, y_b, target.lam))
        else:
            y = self._labels(logits, target, "target")
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
        return ", ".join(parts)
