"""Classifier heads. ``CosineLinear`` is the normalised classifier LDAM needs (Cao et al. 2019)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CosineLinear"]


class CosineLinear(nn.Module):
    """Cosine classifier: ``z_c = <x / |x|, w_c / |w_c|>`` in [-1, 1].

    LDAM subtracts its margins from these cosines and multiplies by its scale ``s`` (docs/method.md §3), so this head
    has no scale of its own. Same call signature and ``weight`` shape [C, D] as ``nn.Linear``.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"CosineLinear needs positive sizes, got in={in_features}, out={out_features}.")
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.uniform_(self.weight, -1.0, 1.0)
        with torch.no_grad():
            self.weight.renorm_(2, 0, 1e-5).mul_(1e5)  # unit-norm rows, as in the LDAM release

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
