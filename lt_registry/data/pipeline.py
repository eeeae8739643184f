"""The input pipeline of a training run: timm's data config (input size, mean, std, interpolation, crop_pct)
resolved from the options and the model, and the transforms built from it (docs/method.md §4.3).

Two kinds of datasets:

- in-memory arrays (CIFAR-LT, digits_lt): trained at their native size with the docs/method.md §4 transforms
  (pad-4 crop, flip, normalise), which the fast path reproduces on the device. The data config records what
  they do (input size of the arrays, their mean/std, crop_pct 1.0), so a saved model's ``pretrained_cfg``
  describes its real preprocessing; ``--mean`` / ``--std`` replace the normalisation.
- image files (folder, csv, hfds, list files): timm's ``resolve_data_config`` (options over the model's
  ``pretrained_cfg``) and ``create_transform`` (random-resized crop with ``--scale`` / ``--ratio``, ``--hflip``,
  ``--color-jitter``, ``--aa``, ``--reprob`` for training; resize + centre crop at ``crop_pct`` for evaluation).

Either way the returned data config is what ``config.json``'s ``pretrained_cfg`` records, so
``timm.data.resolve_data_config(model=timm.create_model("local-dir:RUN"))`` gives back the evaluation transform.
"""
from __future__ import annotations

from typing import Any, Dict

from .arrays import TensorImageDataset
from .transforms import CifarTestTransform, CifarTrainTransform

__all__ = ["is_in_memory", "configure_transforms", "data_config_args"]


def is_in_memory(ds: Any) -> bool:
    """Whether a built dataset holds its training images as in-memory uint8 arrays (CIFAR-style)."""
    return isinstance(ds.train, TensorImageDataset)


def data_config_args(args: Any) -> Dict[str, Any]:
    """The options timm's ``resolve_data_config`` reads, from the recipe's namespace (unset ones omitted)."""
    out: Dict[str, Any] = {}
    if getattr(args, "input_size", None):
        out["input_size"] = tuple(int(v) for v in args.input_size)
    if getattr(args, "img_size", None):
        out["img_size"] = int(args.img_size)
    for k in ("crop_pct", "interpolation"):
        v = getattr(args, k, None)
        if v not in (None, ""):
            out[k] = v
    for k in ("mean", "std"):
        v = getattr(args, k, None)
        if v:
            v = tuple(float(x) for x in v)
            out[k] = v * 3 if len(v) == 1 else v
    return out


def _check_channels(cfg: Dict[str, Any]) -> None:
    for k in ("mean", "std"):
        if k in cfg and len(cfg[k]) != 3:
            raise ValueError(f"--{k} takes 1 or 3 values (one per RGB channel), got {len(cfg[k])}")
    if "std" in cfg and any(s <= 0 for s in cfg["std"]):
        raise ValueError(f"--std values must be positive, got {cfg['std']}")


def configure_transforms(args: Any, model: Any, ds: Any) -> Dict[str, Any]:
    """Install the run's train and evaluation transforms on ``ds`` (``ds.set_transforms``) and return the data
    config (``input_size``, ``mean``, ``std``, ``interpolation``, ``crop_pct``, ``crop_mode``)."""
    opts = data_config_args(args)
    _check_channels(opts)
    if is_in_memory(ds):
        H, W = (int(s) for s in ds.train.images.shape[1:3])
        size = opts.get("input_size", (3, *([opts["img_size"]] * 2)) if "img_size" in opts else None)
        if size is not None and tuple(size[1:]) != (H, W):
            raise ValueError(f"{args.dataset} holds {H}x{W} images in memory and trains at that size; "
                             f"--img-size / --input-size ({size[1]}x{size[2]}) apply to image-file datasets "
                             "(folder, csv, hfds/..., list files)")
        base = ds.train.transform if isinstance(ds.train.transform, CifarTestTransform) else CifarTestTransform()
        mean, std = opts.get("mean", base.mean), opts.get("std", base.std)
        if "mean" in opts or "std" in opts:
            pad = getattr(base, "padding", 4)
            flip = getattr(base, "flip_p", 0.5)
            ds.set_transforms(CifarTrainTransform(mean, std, padding=pad, flip_p=flip), CifarTestTransform(mean, std))
        return {"input_size": (3, H, W), "mean": tuple(mean), "std": tuple(std), "interpolation": "bilinear",
                "crop_pct": 1.0, "crop_mode": "center"}

    from timm.data import create_transform, resolve_data_config

    cfg = resolve_data_config(args=opts, model=model)
    train_kw: Dict[str, Any] = dict(hflip=float(args.hflip), color_jitter=float(args.color_jitter),
                                    re_prob=float(args.reprob))
    if getattr(args, "scale", None):
        train_kw["scale"] = tuple(args.scale)
    if getattr(args, "ratio", None):
        train_kw["ratio"] = tuple(args.ratio)
    if getattr(args, "aa", None):
        train_kw["auto_augment"] = args.aa
    train_tf = create_transform(cfg["input_size"], is_training=True, interpolation=cfg["interpolation"],
                                mean=cfg["mean"], std=cfg["std"], **train_kw)
    eval_tf = create_transform(**cfg, is_training=False)
    ds.set_transforms(train_tf, eval_tf)
    out: Dict[str, Any] = {k: cfg[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
                           if k in cfg}
    out["input_size"] = tuple(out["input_size"])
    return out
