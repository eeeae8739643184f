"""CIFAR ResNets (He et al. 2016, Sec. 4.2) as timm models: ``resnet{20,32,44,56,110}_cifar`` (docs/method.md §5).

Layout (docs/method.md §5): 3x3 conv 3->16, BN, ReLU; three stages of ``n`` basic blocks with 16/32/64 channels and
strides 1/2/2 (depth = 6n + 2); shortcut "option A" (subsample by 2, zero-pad the new channels, no
parameters); global average pool; a linear head, or the cosine head LDAM needs (``head='cosine'``).
Conv and linear weights get Kaiming-normal init, as in the field's shared code (LDAM-DRW, MiSLAS, UniMix).
ResNet-32 with a linear head has 464,154 parameters at 10 classes.

The class speaks timm's model protocol (``num_classes``, ``num_features``, ``pretrained_cfg``,
``forward_features`` / ``forward_head``, ``get_classifier`` / ``reset_classifier``, ``feature_info``), and the
entry points are built through ``build_model_with_cfg``, so ``timm.create_model("resnet32_cifar",
num_classes=100)``, ``pretrained_cfg_overlay``, ``features_only=True``, ``local-dir:`` and ``hf-hub:`` work
once ``lt_registry.models`` is imported.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from timm.models import build_model_with_cfg, register_model
from timm.models._manipulate import checkpoint_seq

from ..data.transforms import CIFAR_MEAN, CIFAR_STD  # docs/method.md §4 constants have their home with the transforms
from .heads import CosineLinear

__all__ = ["CifarResNet", "CifarBasicBlock", "CIFAR_DEPTHS"]

#: depth -> blocks per stage (depth = 6n + 2).
CIFAR_DEPTHS: Dict[int, int] = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}

_HEADS = ("linear", "cosine")


class _ShortcutA(nn.Module):
    """Option-A shortcut: spatial subsampling by ``stride`` and zero channels appended; no parameters.

    The extra channels are split evenly before and after the identity channels (``planes // 4`` each side
    when the width doubles), matching the reference implementations, so checkpoints stay interchangeable.
    """

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        if planes < in_planes:
            raise ValueError(f"option-A shortcut cannot reduce channels ({in_planes} -> {planes}).")
        self.stride = stride
        extra = planes - in_planes
        self.pad_front, self.pad_back = extra // 2, extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_front or self.pad_back:
            x = F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_front}, {self.pad_back})"


class CifarBasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with ReLU, plus the option-A shortcut (docs/method.md §5)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = (
            _ShortcutA(in_planes, planes, stride) if stride != 1 or in_planes != planes else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def _make_head(head: str, num_features: int, num_classes: int) -> nn.Module:
    if num_classes <= 0:
        return nn.Identity()  # timm convention: num_classes=0 -> pooled features out
    if head == "cosine":
        return CosineLinear(num_features, num_classes)
    fc = nn.Linear(num_features, num_classes)
    nn.init.kaiming_normal_(fc.weight)
    return fc


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs with option-A shortcuts (docs/method.md §5).

    Args:
        layers: blocks per stage, e.g. ``(5, 5, 5)`` for ResNet-32.
        num_classes: classifier outputs; ``0`` removes the classifier (``forward`` returns pooled features).
        in_chans: input channels.
        head: ``'linear'`` (``nn.Linear`` with bias) or ``'cosine'`` (:class:`CosineLinear`, outputs in
            [-1, 1], for LDAM).
        widths: channels per stage.
        global_pool: only ``'avg'`` is supported (accepted so timm's scripts can pass it).
        drop_rate: dropout before the classifier (timm's ``--drop``); 0 in docs/method.md §5.
    """

    def __init__(
        self,
        layers: Sequence[int] = (5, 5, 5),
        num_classes: int = 10,
        in_chans: int = 3,
        head: str = "linear",
        widths: Sequence[int] = (16, 32, 64),
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__()
        if head not in _HEADS:
            raise ValueError(f"head must be one of {_HEADS}, got {head!r}.")
        if global_pool not in ("avg", ""):
            raise ValueError(f"CifarResNet supports global_pool='avg' only, got {global_pool!r}.")
        if len(layers) != len(widths) or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must give a positive block count per stage {tuple(widths)}, got {tuple(layers)}.")
        # timm's train script passes these; the architecture has no stochastic depth or DropBlock
        unsupported = {k: v for k, v in kwargs.items()
                       if k not in ("drop_path_rate", "drop_block_rate") or v not in (None, 0, 0.0)}
        if unsupported:
            raise TypeError(f"CifarResNet got unsupported arguments: {unsupported}.")
        self.num_classes = int(num_classes)
        self.head_type = head
        self.drop_rate = float(drop_rate)
        self.global_pool = global_pool
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info: List[Dict[str, Any]] = [dict(num_chs=widths[0], reduction=1, module="act1")]
        in_planes, reduction = widths[0], 1
        for i, (n, planes) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            blocks = [CifarBasicBlock(in_planes if j == 0 else planes, planes, stride if j == 0 else 1)
                      for j in range(int(n))]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=planes, reduction=reduction, module=f"layer{i + 1}"))
            in_planes = planes
        self.num_stages = len(layers)
        self.num_features = self.head_hidden_size = in_planes
        self.fc = _make_head(head, self.num_features, self.num_classes)

        for m in self.modules():
            # CosineLinear keeps its own unit-norm init (as LDAM's NormedLinear does)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    # ---- timm protocol ------------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r"^conv1|bn1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None, head: Optional[str] = None) -> None:
        """A fresh classifier with ``num_classes`` outputs (same head type unless ``head`` is given)."""
        if head is not None:
            if head not in _HEADS:
                raise ValueError(f"head must be one of {_HEADS}, got {head!r}.")
            self.head_type = head
        if global_pool is not None and global_pool not in ("avg", ""):
            raise ValueError(f"CifarResNet supports global_pool='avg' only, got {global_pool!r}.")
        ref = self.conv1.weight
        self.num_classes = int(num_classes)
        self.fc = _make_head(self.head_type, self.num_features, self.num_classes).to(ref.device, ref.dtype)

    def _stages(self) -> List[nn.Module]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map [B, 64, H/4, W/4] before pooling."""
        x = self.act1(self.bn1(self.conv1(x)))
        for stage in self._stages():
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, dropout, classifier (``pre_logits=True`` stops before the classifier)."""
        x = x.mean(dim=(2, 3))
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---- registration ------------------------------------------------------------------------------------
def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (8, 8),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR_MEAN,
        "std": CIFAR_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
        **kwargs,
    }


# read by timm.models.register_model (it looks up ``default_cfgs`` in the entry point's module)
default_cfgs: Dict[str, Dict[str, Any]] = {
    f"resnet{depth}_cifar": _cfg() for depth in CIFAR_DEPTHS
}


def _create_cifar_resnet(depth: int, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    n = CIFAR_DEPTHS[depth]
    return build_model_with_cfg(
        CifarResNet,
        f"resnet{depth}_cifar",
        pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3)),
        **dict(dict(layers=(n, n, n)), **kwargs),
    )


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 for CIFAR (3 blocks per stage, option-A shortcuts; docs/method.md §5)."""
    return _create_cifar_resnet(20, pretrained, **kwargs)


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 for CIFAR (5 blocks per stage, option-A shortcuts): the model of docs/method.md §5."""
    return _create_cifar_resnet(32, pretrained, **kwargs)


@register_model
def resnet44_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-44 for CIFAR (7 blocks per stage, option-A shortcuts; docs/method.md §5)."""
    return _create_cifar_resnet(44, pretrained, **kwargs)


@register_model
def resnet56_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 for CIFAR (9 blocks per stage, option-A shortcuts; docs/method.md §5)."""
    return _create_cifar_resnet(56, pretrained, **kwargs)


@register_model
def resnet110_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110 for CIFAR (18 blocks per stage, option-A shortcuts; docs/method.md §5)."""
    return _create_cifar_resnet(110, pretrained, **kwargs)
