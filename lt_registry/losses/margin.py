"""Prior-aware margin losses: ``ldam``, ``la`` (logit adjustment) and ``bayias``, plus the post-hoc
inference-time adjustments (docs/method.md §2 and 3)."""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from .._registry import register_loss
from ..prior import ClassPrior, PriorLike, as_prior
from .base import LTLoss
from .ce import SoftmaxCE

__all__ = ["LDAMLoss", "LogitAdjustedLoss", "BayiasLoss", "ldam_margins", "posthoc_logit_adjustment",
           "adapt_logits_to_prior"]


def ldam_margins(class_counts: Any, max_margin: float = 0.5) -> torch.Tensor:
    """``m_c ∝ n_c^(-1/4)`` rescaled so ``max_c m_c = max_margin`` (Cao et al. 2019, Eq. 13)."""
    n = as_prior(class_counts, what="ldam_margins").counts
    m = n.pow(-0.25)
    return (m * (max_margin / m.max())).to(torch.float32)


@register_loss("ldam", aliases=("ldam_loss",), label="LDAM", order=3)
class LDAMLoss(LTLoss):
    """Label-distribution-aware margin loss: ``CE(s * (z - m_y e_y), y)`` (Cao et al. 2019; docs/method.md §3).
    With soft targets the margin follows each class's label: ``sum_c t_c CE(s * (z - m_c e_c), c)`` (§3.1).

    Expects *cosine* logits in [-1, 1], i.e. a model with :class:`lt_registry.models.CosineLinear` as its
    head (``timm.create_model(..., head='cosine')`` for our CIFAR ResNets). Add DRW with
    :class:`DeferredReweighting` for the classic LDAM-DRW baseline.
    """

    needs_prior = True

    def __init__(self, class_counts: Any = None, *, max_margin: float = 0.5, scale: float = 30.0, **kw: Any):
        super().__init__(class_counts, **kw)
        if not (max_margin > 0 and math.isfinite(max_margin)):
            raise ValueError(f"ldam max_margin must be positive and finite, got {max_margin!r}.")
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"ldam scale s must be positive and finite, got {scale!r}.")
        self.max_margin, self.scale = float(max_margin), float(scale)
        self.register_buffer("margins", ldam_margins(self.prior, max_margin))

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        m = self.margins.to(z.device)[target]
        z = z.scatter_add(1, target.unsqueeze(1), -m.unsqueeze(1))
        return F.cross_entropy(self.scale * z, target, reduction="none")

    def per_class(self, logits: torch.Tensor) -> torch.Tensor:
        """``L_c = -log( e^{a'_c} / (e^{a'_c} + sum_{j != c} e^{a_j}) )`` for every c, with ``a = s z`` and
        ``a' = s (z - m)``: ``softplus(lse_{j != c}(a_j) - a'_c)``. The leave-one-out log-sum-exp is
        ``M + log(sum_j e^{a_j - M} - e^{a_c - M})`` (M the row maximum; the argmax's own term stays >= 1, so
        no cancellation) except for the argmax column, which takes the masked row's log-sum-exp."""
        z = logits.float()
        B, C = z.shape
        a = self.scale * z
        a_m = self.scale * (z - self.margins.to(z.device))
        if C == 1:  # one class: the loss is 0
            return a_m * 0.0
        M, k = a.max(dim=1, keepdim=True)
        is_max = torch.zeros_like(a, dtype=torch.bool).scatter_(1, k, True)
        e = torch.exp(a - M)
        rest = e.sum(dim=1, keepdim=True) - e
        loo = M + torch.log(torch.where(is_max, torch.ones_like(rest), rest))
        loo_max = torch.logsumexp(a.masked_fill(is_max, float("-inf")), dim=1, keepdim=True)
        loo = torch.where(is_max, loo_max, loo)
        return F.softplus(loo - a_m)

    def extra_repr(self) -> str:
        return f"max_margin={self.max_margin}, scale={self.scale}, " + super().extra_repr()


@register_loss("la", aliases=("logit_adjustment", "logit_adjusted", "balanced_softmax"), label="LA",
               order=4)
class LogitAdjustedLoss(SoftmaxCE):
    """Logit-adjusted loss (Menon et al. 2021): ``CE(z + tau * log pi, y)``, tau = 1 (docs/method.md §3).

    With tau = 1 this is Balanced Softmax and, under a uniform test prior, identical to Bayias.
    """

    needs_prior = True
    prior_free = True  # with tau = 1 (the default): z + log pi is trained, so z itself is prior-free

    def __init__(self, class_counts: Any = None, *, tau: float = 1.0, **kw: Any):
        super().__init__(class_counts, **kw)
        if not math.isfinite(tau):
            raise ValueError(f"la tau must be finite, got {tau!r}.")
        self.tau = float(tau)
        self.register_buffer("offset", self.tau * self.prior.log_probs)

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.offset.to(logits.device, logits.dtype)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, " + super().extra_repr()


@register_loss("bayias", aliases=("bayias_ce", "bayias_compensated"), label="Bayias", order=5)
class BayiasLoss(SoftmaxCE):
    """Bayias-compensated CE (paper Eq. 14-15, App. B Eq. B.17): ``CE(z + log pi - log pi', y)``.

    ``test_prior`` pi' defaults to uniform, where the loss equals ``la`` with tau = 1 in value and
    gradient (the extra ``+ log C`` shifts every logit equally). A known non-uniform deployment prior
    (paper App. D.4, Table D2) is passed as ``test_prior``. Training-time only: predict with raw logits.
    """

    needs_prior = True
    prior_free = True

    def __init__(self, class_counts: Any = None, *, test_prior: Optional[PriorLike] = None, **kw: Any):
        super().__init__(class_counts, **kw)
        self.register_buffer("offset", self.prior.offset(test_prior))

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.offset.to(logits.device, logits.dtype)


def posthoc_logit_adjustment(logits: torch.Tensor, class_counts: Any, tau: float = 1.0) -> torch.Tensor:
    """Post-hoc logit adjustment (Menon et al. 2021): ``z - tau * log pi`` for a CE-trained model."""
    prior = as_prior(class_counts, what="posthoc_logit_adjustment")
    _check_logits(logits, prior.num_classes)
    return logits - tau * prior.log_probs.to(logits.device, logits.dtype)


def adapt_logits_to_prior(logits: torch.Tensor, new_prior: PriorLike,
                          assumed_prior: Optional[PriorLike] = None) -> torch.Tensor:
    """docs/method.md §2 post-hoc form: ``z + log pi'_new - log pi'_assumed``.

    A model trained with Bayias (or LA) for a test prior ``assumed_prior`` (uniform by default) is moved to
    a known deployment prior ``new_prior`` without retraining. Both priors are probabilities over C classes
    (or ClassPriors).
    """
    C = logits.shape[-1]
    _check_logits(logits, C)
    ref = ClassPrior(torch.ones(C))  # only used to validate and normalise the two priors
    shift = torch.log(ref.test_prior(new_prior)) - torch.log(ref.test_prior(assumed_prior))
    return logits + shift.to(logits.device, logits.dtype)


def _check_logits(logits: torch.Tensor, num_classes: int) -> None:
    if not torch.is_tensor(logits) or logits.ndim < 1 or logits.shape[-1] != num_classes:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise ValueError(f"logits must be a tensor [..., {num_classes}] (one column per class), got {shape}.")
