"""ResNet-10 of the large-scale long-tailed benchmarks (docs/method.md §5, paper App. C.2), registered as ``resnet10_lt``.

This is the ResNet-10 of OLTR (Liu et al. 2019) and Decoupling (Kang et al. 2020) used on ImageNet-LT:
the standard ImageNet ResNet (7x7/2 conv stem + 3x3/2 max-pool) with BasicBlocks and one block per stage,
``layers = [1, 1, 1, 1]``, 512 features. timm has no plain equivalent (its ``resnet10t`` has a deep tiered
stem and average-pool downsampling), so this entry builds timm's own ``ResNet`` with those arguments rather
than adding a second ResNet implementation; every timm utility (``reset_classifier``, ``features_only``,
``local-dir:`` / ``hf-hub:`` loading) works as for any timm ResNet.
"""
from __future__ import annotations

from typing import Any, Dict

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, register_model
from timm.models.resnet import BasicBlock, ResNet

__all__ = ["RESNET10_LT_ARGS"]

#: Architecture arguments of ``resnet10_lt`` for ``timm.models.resnet.ResNet``.
RESNET10_LT_ARGS: Dict[str, Any] = dict(block=BasicBlock, layers=(1, 1, 1, 1))

# read by timm.models.register_model (it looks up ``default_cfgs`` in the entry point's module)
default_cfgs: Dict[str, Dict[str, Any]] = {
    "resnet10_lt": {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
    },
}


@register_model
def resnet10_lt(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-10 (BasicBlock, layers [1, 1, 1, 1], ImageNet stem) for ImageNet-LT / Places-LT (docs/method.md §5)."""
    return build_model_with_cfg(ResNet, "resnet10_lt", pretrained, **dict(RESNET10_LT_ARGS, **kwargs))
