"""What the own-data builders (``folder``, ``csv``) share (docs/method.md §4.3): option checks, the validation
hold-out, the optional long-tail subsample (``imb_factor``), the empty-class check, the image check and the
:class:`~lt_registry.data.builder.LTDataset` they return.

Order of the steps, for a training listing with natural class counts:

1. validation: an explicit validation split when the data has one; else a stratified hold-out of ``val_fraction``
   of every class (:func:`~lt_registry.data.holdout.stratified_holdout`, seeded by ``seed``); ``val_fraction=0``:
   no validation split. The hold-out comes first, from the natural counts, so the validation set is the same
   for every ``imb_factor`` at one seed.
2. ``imb_factor`` (optional): the remaining training images are subsampled by the docs/method.md §4 rule
   (:func:`long_tail_subsample`); without it the data's own counts are the training prior.
3. classes left with no training image are an error unless ``prior_smoothing > 0``.
4. the image check (``check_images='header'``) of every file the splits use.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..prior import long_tail_counts
from .builder import LTDataset
from .cifar_lt import cifar_lt_indices
from .files import CHECK_MODES, ImageFileDataset, bad_images_message
from .holdout import stratified_holdout

__all__ = ["SplitFiles", "natural_key", "long_tail_subsample", "build_own_dataset", "check_own_options"]

Transform = Optional[Callable[[Any], Any]]
_DIGITS = re.compile(r"(\d+)")


def natural_key(s: str) -> Tuple[Any, ...]:
    """Sort key: case-insensitive, digit runs compared as numbers (``class2`` before ``class10``), as timm's
    ImageFolder orders class folders; ties (names equal but for case) fall back to the exact name."""
    parts = _DIGITS.split(s.lower())
    return tuple(int(t) if i % 2 else t for i, t in enumerate(parts)) + (s,)


@dataclass
class SplitFiles:
    """One split as the builders found it: absolute ``paths``, int64 ``labels``, ``rel`` (the paths as recorded in
    ``meta``: relative to the data root where possible, '/'-separated) and ``where`` (for messages)."""

    paths: List[str]
    labels: np.ndarray
    rel: List[str]
    where: str

    def take(self, idx: np.ndarray) -> "SplitFiles":
        return SplitFiles([self.paths[i] for i in idx], self.labels[idx], [self.rel[i] for i in idx], self.where)


def check_own_options(val_fraction: Any, seed: Any, imb_factor: Any, n_max: Any, prior_smoothing: Any,
                      check_images: Any) -> None:
    """One-line ValueErrors for the options the own-data builders share."""
    def number(x: Any) -> bool:
        return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)

    if not (number(val_fraction) and 0.0 <= float(val_fraction) < 1.0):
        raise ValueError(f"val_fraction must be a number in [0, 1) (share of each class held out for validation; 0: "
                         f"no validation split), got {val_fraction!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if imb_factor is not None and not (number(imb_factor) and float(imb_factor) >= 1.0):
        raise ValueError(f"imb_factor must be a number >= 1 (n_max / n_min of the subsampled training set) or None "
                         f"(the data's own counts), got {imb_factor!r}.")
    if n_max is not None and (isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1):
        raise ValueError(f"n_max must be a positive integer or None (the largest class), got {n_max!r}.")
    if n_max is not None and imb_factor is None:
        raise ValueError("n_max only applies with imb_factor (it sets the largest class of the subsample).")
    if not (number(prior_smoothing) and float(prior_smoothing) >= 0.0):
        raise ValueError(f"prior_smoothing must be a number >= 0, got {prior_smoothing!r}.")
    if check_images not in CHECK_MODES:
        raise ValueError(f"check_images must be one of {CHECK_MODES}, got {check_images!r}.")


def long_tail_subsample(labels: Any, num_classes: int, imb_factor: float, n_max: Optional[int] = None, seed: int = 0,
                        class_names: Optional[Sequence[str]] = None) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Subsample a training set to the docs/method.md §4 profile ``n_r = int(n_max * (1/rho)^(r/(K-1)))``.

    Own data has no "class 0 is the head" convention, so the profile follows the data: the K classes that have
    images are ranked by their count, largest first (ties: lower class index first), rank r is asked for
    ``n_r`` images, with ``n_max`` the largest class's count unless given. Within each class the images are
    drawn exactly as :func:`~lt_registry.data.cifar_lt.cifar_lt_indices` draws them (one ``RandomState(seed)``,
    classes in rank order). A class never gives more images than it has: a shortfall is a ValueError naming
    the class and the smallest ``imb_factor`` that would fit. Classes without images stay empty.

    Returns ``(indices, info)``: sorted indices into ``labels``; ``info`` = ``{"n_max", "class_order",
    "counts"}`` (class order: class indices, largest first; counts: per class after subsampling).

    >>> idx, info = long_tail_subsample([0] * 3 + [1] * 10 + [2] * 6, 3, 4)
    >>> info["class_order"], info["counts"]
    ([1, 2, 0], [2, 10, 5])
    """
    y = np.asarray(labels, dtype=np.int64)
    avail = np.bincount(y, minlength=num_classes)
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    order = [int(c) for c in np.argsort(-avail, kind="stable") if avail[c] > 0]
    if not order:
        raise ValueError("cannot subsample an empty training set.")
    K = len(order)
    top = int(avail[order[0]])
    n_max = top if n_max is None else int(n_max)
    rho = float(imb_factor)
    targets = long_tail_counts(n_max, K, rho)
    short = [(r, c) for r, c in enumerate(order) if targets[r] > avail[c]]
    if short:
        r, c = short[0]
        need = [(n_max / (avail[c2] + 1)) ** ((K - 1) / r2) for r2, c2 in enumerate(order) if r2 > 0]
        fit = f"; at n_max={n_max} imb_factor > {max(need):.4g} fits" if r > 0 and need else ""
        raise ValueError(
            f"imb_factor={rho:g} asks class {names[c]!r} (rank {r + 1} of {K} by size) for {targets[r]} training "
            f"images but it has {int(avail[c])} ({len(short)} class(es) fall short, n_max={n_max}){fit}. Use a "
            f"larger imb_factor or a smaller n_max, or leave imb_factor unset to train on the data's own counts.")
    rank = np.full(num_classes, -1, dtype=np.int64)
    rank[order] = np.arange(K)
    sel, _ = cifar_lt_indices(rank[y], K, rho, n_max=n_max, seed=seed)
    sel = np.sort(sel)
    return sel, {"n_max": n_max, "class_order": order,
                 "counts": np.bincount(y[sel], minlength=num_classes).tolist()}


def _default_transforms(train_transform: Transform, test_transform: Transform, img_size: int) -> Tuple[Any, Any]:
    if train_transform is None or test_transform is None:
        from timm.data import create_transform

        # the list-file builders' recipe: RandomResizedCrop + flip + colour jitter / resize + centre crop
        if train_transform is None:
            train_transform = create_transform(img_size, is_training=True, interpolation="bilinear")
        if test_transform is None:
            test_transform = create_transform(img_size, is_training=False, interpolation="bilinear")
    return train_transform, test_transform


def build_own_dataset(
    name: str,
    *,
    class_names: List[str],
    train: SplitFiles,
    val: Optional[SplitFiles],
    test: Optional[SplitFiles],
    val_fraction: float,
    seed: int,
    imb_factor: Optional[float],
    n_max: Optional[int],
    prior_smoothing: float,
    train_transform: Transform,
    test_transform: Transform,
    img_size: int,
    check_images: str,
    meta: Dict[str, Any],
    val_meta: Optional[Dict[str, Any]] = None,
) -> LTDataset:
    """Steps 1-4 of the module docstring on listings whose labels index ``class_names``; returns the LTDataset.

    ``val_meta`` describes an explicit validation split (``{"source": "split", ...}``); it is required when
    ``val`` is given. ``meta`` (source, root, ...) is extended with the keys of docs/method.md §4.3.
    """
    C = len(class_names)
    if len(train.labels) == 0:
        raise ValueError(f"{name}: no training images in {train.where}.")
    counts_all = np.bincount(train.labels, minlength=C)
    meta = dict(meta)
    meta["counts_before_holdout"] = counts_all.tolist()
    # 1. validation
    if val is not None:
        meta["val"] = dict(val_meta or {"source": "split"})
    elif val_fraction > 0:
        tr_idx, va_idx = stratified_holdout(train.labels, float(val_fraction), int(seed))
        val = train.take(va_idx)
        train = train.take(tr_idx)
        meta["val"] = {"source": "holdout", "fraction": float(val_fraction), "seed": int(seed), "paths": val.rel}
    else:
        meta["val"] = {"source": "none"}
    after = " after the validation hold-out" if meta["val"]["source"] == "holdout" else ""
    # 2. imb_factor
    if imb_factor is not None:
        before = np.bincount(train.labels, minlength=C)
        sel, info = long_tail_subsample(train.labels, C, float(imb_factor), n_max, int(seed), class_names)
        train = train.take(sel)
        meta["counts_before_imb_factor"] = before.tolist()
        meta["imb_factor_rule"] = {"n_max": info["n_max"], "class_order": info["class_order"], "seed": int(seed)}
        after = (after + " and" if after else " after") + f" the imb_factor={float(imb_factor):g} subsample"
    # 3. empty classes
    counts = np.bincount(train.labels, minlength=C)
    empty = [class_names[c] for c in np.flatnonzero(counts == 0)]
    if empty and float(prior_smoothing) == 0.0:
        shown = ", ".join(repr(n) for n in empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        raise ValueError(f"{len(empty)} class(es) have no training images{after}: {shown}. Their log-prior would be "
                         f"-inf; add images, lower imb_factor, or pass prior_smoothing > 0 (--prior-smoothing, e.g. 1) "
                         f"to train with classes that have no training images.")
    meta["prior_smoothing"] = float(prior_smoothing)
    nonzero = counts[counts > 0]
    meta["train_imb_factor"] = float(nonzero.max() / nonzero.min()) if nonzero.size else None
    # 4. datasets and the image check
    train_tf, test_tf = _default_transforms(train_transform, test_transform, img_size)
    splits = {"train": (train, train_tf), "val": (val, test_tf), "test": (test, test_tf)}
    built: Dict[str, Optional[ImageFileDataset]] = {}
    for key, (files, tf) in splits.items():
        built[key] = None if files is None else ImageFileDataset(files.paths, files.labels, class_names, C, tf)
    meta["image_check"] = check_images
    if check_images != "none":
        bad: List[Tuple[str, str]] = []
        total = 0
        for ds in built.values():
            if ds is not None:
                bad += ds.check_images(check_images, raise_error=False)
                total += len(ds)
        if bad:
            raise ValueError(bad_images_message(bad, total, f"image files of {name} ({meta.get('source', '')})",
                                                check_images))
    for key in ("val", "test"):
        if built[key] is not None:
            meta[f"{key}_counts"] = built[key].class_counts
    return LTDataset(built["train"], built["test"], counts.tolist(), C, list(class_names), name,
                     None if imb_factor is None else float(imb_factor), meta, built["val"])
