"""Class-agnostic and rebalancing mixers: ``none``, ``mixup`` (Zhang et al. 2018), ``remix``
(Chou et al. 2020). docs/method.md §3."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from .._registry import register_mixer
from ..prior import as_prior
from .base import MixedTarget, Mixer, _check_alpha, _num_classes, sample_beta

__all__ = ["NoMix", "Mixup", "Remix"]


class _CountsOnDevice:
    """Class counts cached per device, so the hot path never copies them from the CPU twice."""

    def __init__(self, counts: torch.Tensor):
        self._cpu = counts.to(torch.float32)
        self._cache: Dict[torch.device, torch.Tensor] = {}

    def on(self, device: torch.device) -> torch.Tensor:
        t = self._cache.get(device)
        if t is None:
            t = self._cache[device] = self._cpu.to(device)
        return t


@register_mixer("none", aliases=("identity", "no_mix"), label="None", order=0)
class NoMix(Mixer):
    """Identity: returns the batch unchanged with ``lam = 1`` (and ``y_b is y_a``, which losses skip)."""

    name = "none"

    def __init__(self, class_counts: Any = None):
        self.num_classes = _num_classes(class_counts)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, partner: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                 generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, MixedTarget]:
        if not torch.is_tensor(x) or not torch.is_tensor(y):
            raise TypeError("mixer expects tensors x [B, ...] and y [B].")
        if x.ndim < 1:
            raise ValueError(f"mixer expects a batch x [B, ...]; got x {tuple(x.shape)}.")
        y = self._labels(y, x.shape[0])
        return x, MixedTarget(y, y, torch.ones(y.shape, dtype=torch.float32, device=y.device))


@register_mixer("mixup", label="mixup", order=1)
class Mixup(Mixer):
    """mixup: one ``lam ~ Beta(alpha, alpha)`` per batch (alpha = 1), partner = random permutation."""

    name = "mixup"

    def __init__(self, class_counts: Any = None, *, alpha: float = 1.0):
        self.alpha = _check_alpha(alpha)
        self.num_classes = _num_classes(class_counts)

    def factors(self, y_a, y_b, generator):
        lam = sample_beta(self.alpha, self.alpha, 1, device=y_a.device, generator=generator).expand(y_a.shape[0])
        return lam, lam

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


@register_mixer("remix", label="Remix", order=2)
class Remix(Mixer):
    """Remix: images mixed with one ``lam ~ Beta(alpha, alpha)`` per batch; the label weight is pushed to the
    minority class: ``lam_y = 0`` if ``n_a / n_b >= kappa`` and ``lam < t``; ``lam_y = 1`` if
    ``n_b / n_a >= kappa`` and ``1 - lam < t``; else ``lam_y = lam``. Defaults kappa = 3, t = 0.5 (docs/method.md §3)."""

    name = "remix"

    def __init__(self, class_counts: Any = None, *, alpha: float = 1.0, kappa: float = 3.0, t: float = 0.5):
        self.alpha = _check_alpha(alpha)
        if not kappa >= 1:
            raise ValueError(f"remix kappa (count ratio threshold) must be >= 1, got {kappa!r}.")
        if not 0 <= t <= 1:
            raise ValueError(f"remix t (mixing threshold) must be in [0, 1], got {t!r}.")
        self.kappa, self.t = float(kappa), float(t)
        self.prior = as_prior(class_counts, what="mixer 'remix'")
        self.num_classes = self.prior.num_classes
        self._counts = _CountsOnDevice(self.prior.counts)

    def factors(self, y_a, y_b, generator):
        B = y_a.shape[0]
        lam = sample_beta(self.alpha, self.alpha, 1, device=y_a.device, generator=generator).expand(B)
        n = self._counts.on(y_a.device)
        n_a, n_b = n[y_a], n[y_b]
        lam_y = torch.where((n_a / n_b >= self.kappa) & (lam < self.t), torch.zeros_like(lam), lam)
        lam_y = torch.where((n_b / n_a >= self.kappa) & (1 - lam < self.t), torch.ones_like(lam), lam_y)
        return lam, lam_y

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, kappa={self.kappa}, t={self.t}"
