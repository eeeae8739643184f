"""The model factory of the recipes: ``timm.create_model`` with lt_registry's architectures registered, and
clear errors for unknown names, a cosine head on a model without one, and a class-count mismatch."""
from __future__ import annotations

from typing import Any

import torch

from . import cifar_resnet, resnet10  # noqa: F401  (registers our architectures with timm)

__all__ = ["build_model", "check_model_classes"]


def build_model(name: str, num_classes: int, head: str = "linear", **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model`` with our architectures registered; clear errors for unknown names and for a
    cosine head on a model that has none."""
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0].split('_')[0]}*")[:12]
        raise ValueError(f"unknown model {name!r}" + (f"; similar timm models: {', '.join(close)}" if close else "")
                       + "; our CIFAR ResNets: " + ", ".join(timm.list_models("*_cifar")))
    if head == "cosine":
        kwargs["head"] = "cosine"
    try:
        return timm.create_model(name, num_classes=num_classes, **kwargs)
    except TypeError as e:
        if head == "cosine" and "head" in str(e):
            raise ValueError(f"model {name!r} has no cosine head option, which LDAM needs; use one of "
                           f"{', '.join(timm.list_models('*_cifar'))}, or pass --head linear") from None
        raise ValueError(f"cannot build {name!r} with {kwargs}: {e}") from None


def check_model_classes(model: torch.nn.Module, num_classes: int, name: str = "") -> None:
    n = getattr(model, "num_classes", None)
    if n is not None and n != num_classes:
        raise ValueError(f"model {name or type(model).__name__} has {n} output classes but the data has {num_classes}")
