"""Class-balanced weights (Cui et al. 2019) and the deferred re-weighting schedule (DRW, Cao et al. 2019)."""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..prior import as_prior

__all__ = ["class_balanced_weights", "DeferredReweighting"]


def class_balanced_weights(class_counts: Any, beta: float = 0.9999) -> torch.Tensor:
    """``w_c = (1 - beta) / (1 - beta^{n_c})`` normalised so ``sum_c w_c = C`` (docs/method.md §3, "effective number").

    ``beta = 0`` gives all-ones (no re-weighting); ``beta -> 1`` approaches inverse frequency.
    Same as timm's ``compute_class_weights(method='effective_num')`` up to scale (timm's mean is 1).
    """
    if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
        raise ValueError(f"beta must be in [0, 1), got {beta!r}.")
    n = as_prior(class_counts, what="class_balanced_weights").counts
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(float(beta), dtype=torch.float64), n))
    return (w / w.sum() * n.numel()).to(torch.float32)


class DeferredReweighting:
    """DRW: plain (unweighted) training until ``start_epoch``, class-balanced weights from then on.

    Works with any registry loss: call ``drw.step(loss, epoch)`` at the start of every epoch (0-indexed,
    so ``start_epoch=160`` switches for the last 40 of 200 epochs, as in the LDAM-DRW recipe).
    """

    def __init__(self, class_counts: Any, start_epoch: int = 160, beta: float = 0.9999):
        if not isinstance(start_epoch, int) or start_epoch < 0:
            raise ValueError(f"start_epoch must be a non-negative integer (0-indexed epoch), got {start_epoch!r}.")
        self.start_epoch = start_epoch
        self.beta = beta
        self._weights = class_balanced_weights(class_counts, beta)

    def weights(self, epoch: int) -> Optional[torch.Tensor]:
        """Class weights for ``epoch`` (``None`` before the switch)."""
        return self._weights.clone() if epoch >= self.start_epoch else None

    def step(self, loss: torch.nn.Module, epoch: int) -> Optional[torch.Tensor]:
        """Install this epoch's weights on ``loss`` (any :class:`LTLoss`); returns them."""
        if not hasattr(loss, "set_class_weight"):
            raise TypeError(f"DRW needs a loss with set_class_weight (an lt_registry loss), got {type(loss).__name__}.")
        w = self.weights(epoch)
        loss.set_class_weight(w)
        return w

    def __repr__(self) -> str:
        return f"DeferredReweighting(start_epoch={self.start_epoch}, beta={self.beta})"
