"""Interop with timm's and Hugging Face's training loops (docs/method.md §3.1).

- :class:`LTMixup`: any registry mixer with the call signature of ``timm.data.Mixup`` (soft targets [B, C]).
- :class:`LTTrainerLoss`, :class:`LTMixingCollator`, :class:`LTCollator`, ``LTTrainer``: for
  ``transformers.Trainer``; only ``LTTrainer`` needs ``transformers`` (the ``[transformers]`` extra), imported
  when it is first used.
"""
from typing import Any

from .hf_transformers import LTCollator, LTMixingCollator, LTTrainerLoss, require_transformers
from .timm_mixup import LTMixup

# LTTrainer (built on first access, it imports transformers) is left out of __all__ so a star import never needs it
__all__ = ["LTMixup", "LTTrainerLoss", "LTCollator", "LTMixingCollator", "require_transformers"]


def __getattr__(name: str) -> Any:
    if name == "LTTrainer":
        from .hf_transformers import _trainer_class

        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
