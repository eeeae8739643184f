"""Registry losses. Each accepts hard labels or a MixedTarget; see :mod:`lt_registry.losses.base`."""
from .base import LTLoss
from .ce import ClassBalancedLoss, CrossEntropy, FocalLoss, SoftmaxCE
from .margin import (BayiasLoss, LDAMLoss, LogitAdjustedLoss, adapt_logits_to_prior, ldam_margins,
                     posthoc_logit_adjustment)
from .weights import DeferredReweighting, class_balanced_weights

__all__ = ["LTLoss", "SoftmaxCE", "CrossEntropy", "FocalLoss", "ClassBalancedLoss", "LDAMLoss",
           "LogitAdjustedLoss", "BayiasLoss", "DeferredReweighting", "class_balanced_weights", "ldam_margins",
           "posthoc_logit_adjustment", "adapt_logits_to_prior"]
