"""Architectures, registered into timm's model registry on import .

After ``import lt_registry.models``::

    timm.create_model("resnet32_cifar", num_classes=100)              # docs/method.md §5
    timm.create_model("resnet32_cifar", num_classes=10, head="cosine")  # LDAM's cosine head
    timm.create_model("resnet10_lt", num_classes=1000)                # ImageNet-LT ResNet-10

Registered: ``resnet20_cifar``, ``resnet32_cifar``, ``resnet44_cifar``, ``resnet56_cifar``,
``resnet110_cifar``, ``resnet10_lt``.
"""
from .heads import CosineLinear
from .cifar_resnet import CIFAR_DEPTHS, CifarBasicBlock, CifarResNet
from . import resnet10 as _resnet10  # noqa: F401  (registers resnet10_lt)

__all__ = [
    "CosineLinear", "CifarResNet", "CifarBasicBlock", "CIFAR_DEPTHS",
    "MODEL_NAMES",
]

#: timm names this package registers.
MODEL_NAMES = tuple(f"resnet{d}_cifar" for d in CIFAR_DEPTHS) + ("resnet10_lt",)
