"""Registry mixers: ``none``, ``mixup``, ``remix``, ``unimix``. Contract in :mod:`lt_registry.mixers.base`."""
from .base import MixedTarget, Mixer, sample_beta
from .standard import Mixup, NoMix, Remix
from .effective_prior import effective_label_prior
from .unimix import UNIMIX_PRESETS, UniMix, UniMixPreset, resolve_unimix_preset, tau_from_code

__all__ = ["MixedTarget", "Mixer", "sample_beta", "NoMix", "Mixup", "Remix", "UniMix", "UniMixPreset",
           "UNIMIX_PRESETS", "resolve_unimix_preset", "tau_from_code", "effective_label_prior"]
