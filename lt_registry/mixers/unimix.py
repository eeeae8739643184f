"""UniMix (paper Sec. 3.1): a prior-aware mixing factor and a prior-aware partner draw.

Factor (Eq. 6-7): for anchor i and partner j, ``c_ij = pi_j / (pi_i + pi_j)`` and
``xi_ij = (Beta(alpha, alpha) + c_ij) mod 1``, one draw per pair. With alpha < 1 the mass sits near c_ij, so
a head-tail pair gives a sample that is mostly the tail image and mostly the tail label.

Partner (Eq. 9): the partner's class has probability ``∝ pi^tau`` (paper convention: tau = 1 random,
0 class-balanced, < 0 tail-favoured). In-batch form (released code): B draws with replacement from the
batch, weight ``n_{y_k}^(tau - 1)``. Dataset-level form (Algorithm 1): the recipe draws the partner batch
with ``create_sampler("prior_power", labels, tau=tau)`` and passes it as ``partner=(x2, y2)``.

The released code writes the exponent as ``tau_code`` with weight ``n^tau_code``: ``tau = tau_code + 1``
(:func:`tau_from_code`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import torch

from .._registry import register_mixer
from ..prior import as_prior
from .base import Mixer, _check_alpha, sample_beta
from .standard import _CountsOnDevice

__all__ = ["UniMix", "UniMixPreset", "UNIMIX_PRESETS", "DEFAULT_UNIMIX_PRESET", "resolve_unimix_preset", "tau_from_code"]


def tau_from_code(tau_code: float) -> float:
    """Convert the released code's exponent (per-sample weight ``n^tau_code``) to the paper's tau."""
    return float(tau_code) + 1.0


@dataclass(frozen=True)
class UniMixPreset:
    """docs/method.md §1.3. ``tau`` per dataset family in the paper's convention."""

    alpha: float
    tau_cifar10: float
    tau_cifar100: float
    partner: str  # 'dataset' (a prior_power sampler) or 'batch' (in-batch draw)
    mix_off_epoch: Optional[int]  # epoch (0-indexed) from which mixing stops; None = never
    batch_size: int


UNIMIX_PRESETS: Dict[str, UniMixPreset] = {
    # App. C.1 alpha; Sec. 4.4 / Fig. 4 tau; Algorithm 1 dataset-level partner; mixing stops after epoch 120
    "paper": UniMixPreset(alpha=0.5, tau_cifar10=-1.0, tau_cifar100=0.0, partner="dataset", mix_off_epoch=120,
                          batch_size=128),
    # the authors' released code: alpha 0.8, tau_code -0.5 / -0.1, in-batch partner, mixing never stops
    "official": UniMixPreset(alpha=0.8, tau_cifar10=tau_from_code(-0.5), tau_cifar100=tau_from_code(-0.1),
                             partner="batch", mix_off_epoch=None, batch_size=64),
}


#: the preset ``UniMix()``, ``create_mixer("unimix")`` and ``--mix unimix`` use: the released code's settings,
#: the one that reproduces the paper's gain in the 200-epoch runs (README, "Results"); ``paper`` is the paper's text.
DEFAULT_UNIMIX_PRESET = "official"


def resolve_unimix_preset(preset: str, num_classes: int, dataset: Optional[str] = None) -> Dict[str, Any]:
    """The preset's settings with tau picked for the dataset.

    ``dataset`` containing ``'cifar100'`` or ``'cifar10'`` picks that column; otherwise 10 classes use the
    CIFAR-10 value and any other class count the CIFAR-100 value (the paper's choice for the larger label
    space). Pass ``tau=`` explicitly to override.
    """
    if preset not in UNIMIX_PRESETS:
        raise ValueError(f"Unknown UniMix preset {preset!r}; available presets: {', '.join(UNIMIX_PRESETS)}.")
    p = UNIMIX_PRESETS[preset]
    d = (dataset or "").lower().replace("-", "").replace("_", "")
    if "cifar100" in d:
        tau = p.tau_cifar100
    elif "cifar10" in d:
        tau = p.tau_cifar10
    else:
        tau = p.tau_cifar10 if num_classes == 10 else p.tau_cifar100
    out = asdict(p)
    out.pop("tau_cifar10"), out.pop("tau_cifar100")
    out["tau"] = tau
    out["preset"] = preset
    return out


@register_mixer("unimix", label="UniMix", order=3)
class UniMix(Mixer):
    """UniMix mixer (paper Eq. 6-9).

    Args:
        class_counts: training counts or a ClassPrior.
        preset: ``'official'`` (default, :data:`DEFAULT_UNIMIX_PRESET`) or ``'paper'`` (docs/method.md §1.3);
            explicit ``alpha``/``tau`` override it.
        alpha: Beta concentration of the factor.
        tau: partner exponent, paper convention (class of the partner ∝ pi^tau).
        dataset: optional dataset name used to pick the preset's tau (``'cifar10_lt'`` / ``'cifar100_lt'``).

    Attributes:
        partner: ``'dataset'`` or ``'batch'``, the preset's partner form; the training recipe builds a
            ``prior_power`` sampler for ``'dataset'``. Called with ``partner=None`` the mixer always uses
            the in-batch draw.
        mix_off_epoch: the preset's epoch to stop mixing (None = never).
    """

    name = "unimix"

    def __init__(self, class_counts: Any = None, *, preset: str = DEFAULT_UNIMIX_PRESET, alpha: Optional[float] = None,
                 tau: Optional[float] = None, dataset: Optional[str] = None, partner: Optional[str] = None):
        self.prior = as_prior(class_counts, what="mixer 'unimix'")
        self.num_classes = self.prior.num_classes
        cfg = resolve_unimix_preset(preset, self.prior.num_classes, dataset)
        self.preset = preset
        self.alpha = _check_alpha(cfg["alpha"] if alpha is None else alpha)
        self.tau = float(cfg["tau"] if tau is None else tau)
        if not math.isfinite(self.tau):
            raise ValueError(f"unimix tau must be finite, got {tau!r}.")
        self.partner = cfg["partner"] if partner is None else partner
        if self.partner not in ("dataset", "batch"):
            raise ValueError(f"unimix partner must be 'dataset' or 'batch', got {self.partner!r}.")
        self.mix_off_epoch = cfg["mix_off_epoch"]
        self._probs = _CountsOnDevice(self.prior.probs)
        # in-batch partner weight n^(tau - 1); computed once in float64 to keep tiny tails representable
        self._pair_weight = _CountsOnDevice((self.prior.counts ** (self.tau - 1.0)).to(torch.float32))

    def pair_index(self, y: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """B partners drawn with replacement from the batch, weight ``n_{y_k}^(tau-1)`` (docs/method.md §1.2)."""
        w = self._pair_weight.on(y.device)[y]
        return torch.multinomial(w, y.numel(), replacement=True, generator=generator)

    def factors(self, y_a, y_b, generator):
        pi = self._probs.on(y_a.device)
        c = pi[y_b] / (pi[y_a] + pi[y_b])
        b = sample_beta(self.alpha, self.alpha, y_a.numel(), device=y_a.device, generator=generator)
        xi = torch.remainder(b + c, 1.0)  # Eq. 7: the circular shift of Beta(alpha, alpha) by c_ij
        return xi, xi

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, alpha={self.alpha}, tau={self.tau}, partner={self.partner!r}"
