"""The model factory of the recipes: ``timm.create_model`` with lt_registry's architectures registered, timm's
fine-tuning options (``pretrained``, a local pretrained file, ``drop_rate``, ``drop_path_rate``), an initial
checkpoint, and clear errors for unknown names, a cosine head on a model without one, weights that cannot be
downloaded and a class-count mismatch."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from . import cifar_resnet, resnet10  # noqa: F401  (registers our architectures with timm)

__all__ = ["build_model", "check_model_classes", "load_initial_checkpoint", "read_state_dict"]

PathLike = Union[str, os.PathLike]


def build_model(name: str, num_classes: int, head: str = "linear", *, pretrained: bool = False,
                pretrained_path: Optional[PathLike] = None, drop_rate: Optional[float] = None,
                drop_path_rate: Optional[float] = None, **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model(name, num_classes=...)`` with our architectures registered.

    ``pretrained`` loads timm's pretrained weights (downloaded from the Hub) and resets the classifier to
    ``num_classes`` (timm adapts the head when the class count differs); ``pretrained_path`` takes them from a
    local file instead (timm's ``pretrained_cfg_overlay=dict(file=...)``), the way to fine-tune offline.
    """
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0].split('_')[0]}*")[:12]
        raise ValueError(f"unknown model {name!r}" + (f"; similar timm models: {', '.join(close)}" if close else "")
                         + "; our CIFAR ResNets: " + ", ".join(timm.list_models("*_cifar")))
    if head == "cosine":
        kwargs["head"] = "cosine"
    if drop_rate is not None:
        kwargs["drop_rate"] = float(drop_rate)
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = float(drop_path_rate)
    if pretrained_path is not None:
        p = Path(pretrained_path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"--pretrained-path {str(p)!r} does not exist (expected a .safetensors / .pth "
                                    "/ .bin file of the model's weights)")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(p), hf_hub_id=None, url=None)
        pretrained = True
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except TypeError as e:
        if head == "cosine" and "head" in str(e):
            raise ValueError(f"model {name!r} has no cosine head option, which LDAM needs; use one of "
                             f"{', '.join(timm.list_models('*_cifar'))}, or pass --head linear") from None
        raise ValueError(f"cannot build {name!r} with {kwargs}: {e}") from None
    except RuntimeError as e:
        if pretrained and ("No pretrained weights" in str(e) or "pretrained" in str(e).lower()):
            raise ValueError(f"model {name!r} has no pretrained weights in timm ({e}); drop --pretrained, or pass "
                             "--pretrained-path FILE with weights of this architecture") from None
        raise
    except OSError as e:  # download failed: offline, no route to the Hub, missing file in the repo
        if pretrained and pretrained_path is None:
            raise ValueError(f"could not download the pretrained weights of {name!r} ({type(e).__name__}: "
                             f"{(str(e).split('. ')[0] if str(e) else 'no detail')[:160]}); download them elsewhere and "
                             "pass --pretrained-path FILE (.safetensors or .pth), or drop --pretrained") from None
        raise


def check_model_classes(model: torch.nn.Module, num_classes: int, name: str = "") -> None:
    n = getattr(model, "num_classes", None)
    if n is not None and n != num_classes:
        raise ValueError(f"model {name or type(model).__name__} has {n} output classes but the data has {num_classes}")


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, a ``.pth``/``.bin``/``.pt`` file (read with
    ``torch.load(..., weights_only=True)``: tensors only, nothing unpickled) or a run folder (its
    ``model.safetensors``). A training checkpoint that nests the weights under ``state_dict`` / ``model`` /
    ``state_dict_ema`` is unwrapped."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "model.safetensors").is_file():
            raise FileNotFoundError(f"{str(p)!r} is a folder without model.safetensors (expected a run folder or a "
                                    "weights file)")
        p = p / "model.safetensors"
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            sd: Any = load_file(str(p))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"checkpoint {str(p)!r} is not a readable safetensors file ({e})") from None
    else:
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # pickle errors, zip errors, refused globals
            raise ValueError(f"checkpoint {str(p)!r} could not be read as a weights-only torch file "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); convert it to "
                             ".safetensors") from None
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(sd, dict) and isinstance(sd.get(key), dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise ValueError(f"checkpoint {str(p)!r} does not hold a state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_initial_checkpoint(model: torch.nn.Module, path: PathLike) -> Dict[str, Any]:
    """Load ``path`` (see :func:`read_state_dict`) into ``model`` before training (timm's
    ``--initial-checkpoint``). Tensors whose shape differs from the model's (the classifier of another class
    count) are skipped and reported; the returned dict lists ``loaded``, ``skipped`` (shape mismatch),
    ``missing`` (model keys the file lacks) and ``unexpected`` keys. A file that matches none of the model's
    parameters is an error."""
    sd = read_state_dict(path)
    own = model.state_dict()
    keep = {k: v for k, v in sd.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    skipped = sorted(k for k in sd if k in own and k not in keep)
    unexpected = sorted(k for k in sd if k not in own)
    if not keep:
        raise ValueError(f"--initial-checkpoint {str(path)!r} shares no parameter with {type(model).__name__} "
                         f"(first keys in the file: {', '.join(list(sd)[:4])}); is it a checkpoint of this "
                         "architecture?")
    model.load_state_dict(keep, strict=False)
    missing = sorted(k for k in own if k not in keep)
    return {"loaded": len(keep), "skipped": skipped, "missing": missing, "unexpected": unexpected}
