"""CIFAR transforms on uint8 HWC images (docs/method.md §4), per sample or for a whole batch at once.

Train: random crop 32 from the image zero-padded by 4 pixels, horizontal flip with p = 0.5, then
normalise with mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010). Test: normalise only.
The padding is zero in pixel space (black), as torchvision's ``RandomCrop(32, padding=4)`` on the raw
image does in the field's code; normalisation comes after.

Both transforms take ``[H, W, C]`` (one image, numpy or torch, as a ``Dataset`` hands it out) or
``[B, H, W, C]`` (a batch, e.g. already on the GPU) and return float32 ``[C, H, W]`` / ``[B, C, H, W]``.
The batched path draws one crop offset and one flip per image without a Python loop.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "CIFAR_MEAN", "CIFAR_STD", "CifarTrainTransform", "CifarTestTransform", "to_float_chw", "normalize",
]

#: docs/method.md §4 normalisation constants.
CIFAR_MEAN: Tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR_STD: Tuple[float, float, float] = (0.2023, 0.1994, 0.2010)


def _as_uint8_batch(img: Any) -> Tuple[torch.Tensor, bool]:
    """``[H,W,C]`` or ``[B,H,W,C]`` uint8 (numpy or torch) -> (uint8 tensor ``[B,H,W,C]``, was_single)."""
    t = torch.from_numpy(np.ascontiguousarray(img)) if isinstance(img, np.ndarray) else torch.as_tensor(img)
    if t.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images (HWC or BHWC), got dtype {t.dtype}.")
    if t.ndim == 3:
        return t.unsqueeze(0), True
    if t.ndim == 4:
        return t, False
    raise ValueError(f"expected an image [H, W, C] or a batch [B, H, W, C], got shape {tuple(t.shape)}.")


def to_float_chw(img: Any) -> torch.Tensor:
    """uint8 HWC / BHWC -> float32 CHW / BCHW in [0, 1] (what ``ToTensor`` does)."""
    x, single = _as_uint8_batch(img)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    return x[0] if single else x


def normalize(x: torch.Tensor, mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD) -> torch.Tensor:
    """``(x - mean) / std`` per channel for float CHW / BCHW tensors."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


class CifarTestTransform:
    """Test transform of docs/method.md §4: uint8 HWC -> normalised float CHW (also batched)."""

    def __init__(self, mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, img: Any) -> torch.Tensor:
        return normalize(to_float_chw(img), self.mean, self.std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


class CifarTrainTransform(CifarTestTransform):
    """Train transform of docs/method.md §4: pad 4 with zeros, random 32x32 crop, flip p = 0.5, normalise.

    Args:
        padding: zero padding on each side before the crop (4 in docs/method.md §4); the crop keeps the input size.
        flip_p: probability of a horizontal flip.
        generator: optional ``torch.Generator`` for the crop/flip draws (on the images' device); the global
            RNG otherwise, which DataLoader workers seed per worker.
    """

    def __init__(
        self,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
        padding: int = 4,
        flip_p: float = 0.5,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__(mean, std)
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}.")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p}.")
        self.padding, self.flip_p, self.generator = int(padding), float(flip_p), generator

    def __call__(self, img: Any) -> torch.Tensor:
        x, single = _as_uint8_batch(img)
        B, H, W, _ = x.shape
        p, dev = self.padding, x.device
        if p:
            padded = x.new_zeros((B, H + 2 * p, W + 2 * p, x.shape[3]))
            padded[:, p:p + H, p:p + W] = x
            oy = torch.randint(0, 2 * p + 1, (B,), generator=self.generator, device=dev)
            ox = torch.randint(0, 2 * p + 1, (B,), generator=self.generator, device=dev)
            rows = (oy[:, None] + torch.arange(H, device=dev))[:, :, None]  # [B, H, 1]
            cols = (ox[:, None] + torch.arange(W, device=dev))[:, None, :]  # [B, 1, W]
            x = padded[torch.arange(B, device=dev)[:, None, None], rows, cols]  # [B, H, W, C]
        flip = torch.rand((B,), generator=self.generator, device=dev) < self.flip_p
        x = torch.where(flip[:, None, None, None], x.flip(2), x)
        out = normalize(x.permute(0, 3, 1, 2).float().div_(255.0), self.mean, self.std)
        return out[0] if single else out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(padding={self.padding}, flip_p={self.flip_p}, "
                f"mean={self.mean}, std={self.std})")
