"""lt_registry: calibrated long-tailed classification (UniMix, Bayias and their peers) as registries.

    from lt_registry import create_loss, create_mixer, create_sampler, ClassPrior
"""
from ._registry import (
    LOSSES, MIXERS, SAMPLERS, Registry,
    create_loss, create_mixer, create_sampler,
    is_loss, is_mixer, is_sampler,
    list_losses, list_mixers, list_samplers,
    register_loss, register_mixer, register_sampler,
)
from .prior import ClassPrior, long_tail_counts
from .mixers import MixedTarget, Mixer, UNIMIX_PRESETS, tau_from_code
from .losses import (LTLoss, DeferredReweighting, class_balanced_weights, ldam_margins,
                     posthoc_logit_adjustment, adapt_logits_to_prior)
from .losses import soft_target
from . import interop  # noqa: F401
from .interop import LTMixup, LTCollator, LTMixingCollator, LTTrainerLoss
from . import samplers as _samplers  # noqa: F401  (registers the samplers)
from . import metrics  # noqa: F401
from . import models  # noqa: F401  (registers the CIFAR ResNets and resnet10_lt with timm)
from . import hub  # noqa: F401
from .calibration import (CALIBRATORS, Calibrator, CalibratorChain, create_calibrator, is_calibrator,
                          list_calibrators, register_calibrator)
from .predict import Classifier, load_classifier

from ._version import __version__

__all__ = [
    "Registry", "LOSSES", "MIXERS", "SAMPLERS",
    "register_loss", "create_loss", "list_losses", "is_loss",
    "register_mixer", "create_mixer", "list_mixers", "is_mixer",
    "register_sampler", "create_sampler", "list_samplers", "is_sampler",
    "ClassPrior", "long_tail_counts", "MixedTarget", "Mixer", "UNIMIX_PRESETS", "tau_from_code",
    "LTLoss", "DeferredReweighting", "class_balanced_weights", "ldam_margins",
    "posthoc_logit_adjustment", "adapt_logits_to_prior", "metrics", "__version__",
    "CALIBRATORS", "Calibrator", "CalibratorChain",
    "register_calibrator", "create_calibrator", "list_calibrators", "is_calibrator",
    "load_classifier", "Classifier",
]
