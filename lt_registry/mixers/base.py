"""The mixer contract: ``mixer(x, y, *, partner=None, generator=None) -> (x_mixed, MixedTarget)``.

Every mixer forms ``x~ = lam_x * x + (1 - lam_x) * x2`` and a target triple ``(y_a, y_b, lam)`` whose
loss is ``lam * L(y_a) + (1 - lam) * L(y_b)`` per sample (paper Eq. 11). Subclasses only decide the
partner (``pair_index``) and the factors (``factors``); pairing, shape checks and device handling live here.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

import torch

from ..labels import check_labels
from ..prior import as_prior

__all__ = ["MixedTarget", "Mixer", "sample_beta"]


class MixedTarget(NamedTuple):
    """Target of a mixed batch: ``y_a`` the batch's own labels, ``y_b`` the partners', ``lam`` the weight
    of ``y_a`` (all shape [B]). A loss evaluates ``lam * L(y_a) + (1 - lam) * L(y_b)`` per sample."""

    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: torch.Tensor

    def to(self, device: torch.device) -> "MixedTarget":
        return MixedTarget(self.y_a.to(device), self.y_b.to(device), self.lam.to(device))


def sample_beta(alpha: float, beta: float, n: int, *, device: torch.device,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``n`` draws of Beta(alpha, beta) on ``device`` from ``generator`` (Gamma ratio; float32 [n]).

    ``torch.distributions.Beta`` cannot take a generator, and reproducibility from a ``torch.Generator``
    is part of the mixer contract, so the two Gamma variates are drawn directly.
    """
    a = torch.full((n,), float(alpha), device=device, dtype=torch.float32)
    b = torch.full((n,), float(beta), device=device, dtype=torch.float32)
    ga = torch._standard_gamma(a, generator=generator)
    gb = torch._standard_gamma(b, generator=generator)
    s = ga + gb
    # both Gammas can underflow to 0 for tiny alpha; Beta's mass is then at the ends, pick one fairly
    return torch.where(s > 0, ga / s.clamp_min(torch.finfo(s.dtype).tiny), (ga >= gb).float())


def _check_alpha(alpha: float, name: str = "alpha") -> float:
    if not (isinstance(alpha, (int, float)) and alpha > 0 and alpha == alpha and alpha != float("inf")):
        raise ValueError(f"{name} must be a positive finite number (Beta concentration), got {alpha!r}.")
    return float(alpha)


def _num_classes(class_counts: Any) -> Optional[int]:
    """C of optional class counts (a ClassPrior or counts; zero counts are fine for a mixer that only needs C)."""
    return None if class_counts is None else as_prior(class_counts, smoothing=1.0).num_classes


class Mixer:
    """Base class. ``partner=None`` pairs inside the batch; ``partner=(x2, y2)`` mixes with a batch drawn
    by a partner sampler (paper Algorithm 1). Fully vectorised and on ``x.device``.

    Attributes:
        num_classes: C, known when the mixer was built with class counts; labels must lie in ``[0, C)``
            (``None``: only ``y >= 0`` is checked).
        validate_labels: check the label range (:func:`lt_registry.labels.check_labels`) also for labels on
            an accelerator, at one host sync per call; labels on the CPU are always checked. Set it to
            ``False`` on an instance when the labels were validated where they entered (the training
            recipe does), so the training step has no per-step sync.
    """

    name = "base"
    num_classes: Optional[int] = None
    validate_labels = True

    def _labels(self, y: torch.Tensor, n: int, what: str = "mixer labels y") -> torch.Tensor:
        """``y`` checked: integer [n] in ``[0, C)``, as int64 (:func:`lt_registry.labels.check_labels`)."""
        return check_labels(y, self.num_classes, what=what, n=n, sync=self.validate_labels)

    def pair_index(self, y: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Index [B] into the batch choosing each sample's partner (default: a random permutation)."""
        return torch.randperm(y.numel(), device=y.device, generator=generator)

    def factors(self, y_a: torch.Tensor, y_b: torch.Tensor,
                generator: Optional[torch.Generator]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(lam_x, lam_y), each [B] float: the weight of x_a in the image and of y_a in the loss."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, y: torch.Tensor, *,
                 partner: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                 generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, MixedTarget]:
        if not torch.is_tensor(x) or not torch.is_tensor(y):
            raise TypeError("mixer expects tensors x [B, ...] and y [B].")
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"mixer expects a non-empty batch x [B, ...] with B > 0; got x {tuple(x.shape)}.")
        y = self._labels(y, x.shape[0])
        if partner is None:
            idx = self.pair_index(y, generator)
            x2, y2 = x[idx], y[idx]
        else:
            try:
                x2, y2 = partner
            except (TypeError, ValueError):
                raise ValueError("partner must be a pair (x2, y2) of tensors.") from None
            if not torch.is_tensor(x2) or not torch.is_tensor(y2) or tuple(x2.shape) != tuple(x.shape):
                raise ValueError(f"partner batch must match the anchor batch: x {tuple(x.shape)} vs x2 "
                                 f"{tuple(getattr(x2, 'shape', ()))}.")
            x2, y2 = x2.to(x.device), self._labels(y2.to(y.device), x.shape[0], "partner labels y2")
        lam_x, lam_y = self.factors(y, y2, generator)
        w = lam_x.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        x_mixed = x * w + x2 * (1 - w)  # lerp-like; keeps x's dtype and memory format
        return x_mixed, MixedTarget(y, y2, lam_y.to(torch.float32))

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
