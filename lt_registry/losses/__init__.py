"""Registry losses. Each accepts class indices, a MixedTarget or soft targets [B, C]; see :mod:`lt_registry.losses.base`."""
from .base import LTLoss, soft_target
from .ce import ClassBalancedLoss, CrossEntropy, FocalLoss, SoftmaxCE
from .margin import (BayiasLoss, LDAMLoss, LogitAdjustedLoss, adapt_logits_to_prior, ldam_margins,
                     posthoc_logit_adjustment)
from .weights import DeferredReweighting, class_balanced_weights

__all__ = ["LTLoss", "SoftmaxCE", "CrossEntropy", "FocalLoss", "ClassBalancedLoss", "LDAMLoss",
           "LogitAdjustedLoss", "BayiasLoss", "DeferredReweighting", "class_balanced_weights", "ldam_margins",
           "posthoc_logit_adjustment", "adapt_logits_to_prior", "assumed_test_prior", "soft_target"]


def assumed_test_prior(loss: object) -> str:
    """The test prior a model's raw logits assume, from the loss it was trained with: ``"uniform"`` when the
    loss class is ``prior_free`` (logit adjustment, Bayias and their aliases), ``"train"`` (the training prior)
    otherwise or when the loss is unknown or unregistered. This is the ``assumed_prior`` of
    :func:`adapt_logits_to_prior`: ``None`` for uniform, the run's ClassPrior for train."""
    from .._registry import LOSSES

    if isinstance(loss, str) and loss in LOSSES:
        return "uniform" if getattr(LOSSES.get(loss).factory, "prior_free", False) else "train"
    if isinstance(loss, LTLoss) or isinstance(loss, type):
        return "uniform" if getattr(loss, "prior_free", False) else "train"
    return "train"
