"""``folder`` / ``imagefolder``: your own long-tailed data as an image folder (docs/method.md §4.3).

Layout::

    ROOT/train/<class>/<image>      required; one folder per class, any number of classes, any image size/mode
    ROOT/val/<class>/<image>        optional (``validation/`` is found too); else a stratified hold-out
    ROOT/test/<class>/<image>       optional

    ds = build_dataset("folder", data_dir="ROOT")            # natural counts, 10 % of each class held out
    ds.class_counts, ds.meta["val"]

Classes are the training split's class folders in natural order (case-insensitive, digit runs as numbers:
``class2`` before ``class10``), as timm's ImageFolder sorts them; label = position. Images are the files
with an image extension (:data:`~lt_registry.data.files.IMAGE_EXTENSIONS`, any case) anywhere below a class folder
(sub-folders included, symlinked folders followed); hidden files and folders (``.name``) and other files are
skipped and counted in ``meta["skipped_files"]``. Within a class, files are in code-point order of their
relative path.

Counting reads directory entries only (``os.scandir``), never an image: listing 100,000 files (100 class folders
x 1,000 files) took 0.34 s (median of 3; 0.32 s median of 5 in a second run) on the 2-core machine this was
written on, with both cores busy with training runs (load average ~4.5) (``python benchmarks/count_folder.py``).
The header check that follows by default (``check_images='header'``) opens each file's header: 0.11-0.16 ms per
small file there, so it dominates (~11-16 s per 100,000 files); ``check_images='none'`` skips it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np

from .builder import LTDataset, register_dataset
from .files import IMAGE_EXTENSIONS
from .own import SplitFiles, build_own_dataset, check_own_options, natural_key

__all__ = ["FolderListing", "list_image_folder", "build_folder"]

PathLike = Union[str, os.PathLike]
Transform = Optional[Callable[[Any], Any]]


@dataclass
class FolderListing:
    """What :func:`list_image_folder` found: ``classes`` (folder names, natural order), ``files`` (per class, paths
    relative to the split folder, '/'-separated, sorted), ``skipped`` (non-image and hidden files), ``loose``
    (image files directly in the split folder, outside any class folder)."""

    classes: List[str]
    files: List[List[str]]
    skipped: int
    loose: int

    @property
    def counts(self) -> List[int]:
        return [len(f) for f in self.files]


def _scan_class(top: str) -> Tuple[List[str], int]:
    """Image files below ``top`` (recursively, following symlinked folders once), relative, and the skipped count."""
    found: List[str] = []
    skipped = 0
    seen = set()
    stack = [(top, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop
            continue
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith("."):
                    skipped += not e.is_dir()
                    continue
                if e.is_dir():
                    stack.append((e.path, prefix + e.name + "/"))
                elif e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file():
                    found.append(prefix + e.name)
                else:
                    skipped += 1
    found.sort()
    return found, skipped


def list_image_folder(split_dir: PathLike) -> FolderListing:
    """List ``split_dir/<class>/<image>`` from directory entries alone (no image is opened)."""
    split_dir = os.fspath(split_dir)
    classes, loose, skipped = [], 0, 0
    with os.scandir(split_dir) as it:
        for e in it:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                classes.append(e.name)
            elif e.name.lower().endswith(IMAGE_EXTENSIONS):
                loose += 1
            else:
                skipped += 1
    classes.sort(key=natural_key)
    files = []
    for c in classes:
        f, s = _scan_class(os.path.join(split_dir, c))
        files.append(f)
        skipped += s
    return FolderListing(classes, files, skipped, loose)


def _subfolders(root: Path) -> List[str]:
    with os.scandir(root) as it:
        return sorted((e.name for e in it if e.is_dir() and not e.name.startswith(".")), key=natural_key)


def _holds_images(folder: Path) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(e.name.lower().endswith(IMAGE_EXTENSIONS) for e in it)
    except OSError:
        return False


def _listing(split_dir: Path, split: str, root: Path, train_classes: Optional[List[str]],
             prior_smoothing: float) -> FolderListing:
    found = list_image_folder(split_dir)
    where = f"{split} split folder {str(split_dir)!r}"
    if not found.classes:
        what = (f"{found.loose} image files directly in it" if found.loose else "no sub-folders")
        raise ValueError(f"the {where} has no class folders ({what}); expected {split_dir}/<class>/<image>, one "
                         f"folder per class.")
    empty = [c for c, n in zip(found.classes, found.counts) if n == 0]
    if empty and (train_classes is not None or float(prior_smoothing) == 0.0):
        keep = ("" if train_classes is not None else ", or pass prior_smoothing > 0 (--prior-smoothing) to keep a "
                "class without training images")
        raise ValueError(f"class folder(s) {empty[:10]} of the {where} hold no images (extensions "
                         f"{', '.join(IMAGE_EXTENSIONS)}, any case); add images or remove the folder{keep}.")
    if train_classes is not None:
        known = set(train_classes)
        unknown = [c for c in found.classes if c not in known]
        if unknown:
            raise ValueError(f"class folder(s) {unknown[:10]} appear in the {where} but not in the training split; "
                             f"the classes are the training split's class folders ({len(train_classes)} of them).")
    return found


def _split_files(found: FolderListing, split_dir: Path, split_rel: str, index: dict, where: str) -> SplitFiles:
    base = os.fspath(split_dir)
    paths, rel, labels = [], [], []
    for c, files in zip(found.classes, found.files):
        y = index[c]
        for f in files:
            paths.append(os.path.join(base, c, f))
            rel.append(f"{split_rel}/{c}/{f}")
        labels.append(np.full(len(files), y, dtype=np.int64))
    return SplitFiles(paths, np.concatenate(labels) if labels else np.zeros(0, np.int64), rel, where)


@register_dataset("folder", aliases=("imagefolder",), label="Image folder (own data)",
                  meta={"note": "your own images, ROOT/<split>/<class>/<image>, with their natural class counts "
                                "(docs/method.md §4.3)."})
def build_folder(
    data_dir: Optional[PathLike] = None,
    imb_factor: Optional[float] = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    train_split: str = "train",
    val_split: Optional[str] = "val",
    test_split: Optional[str] = None,
    prior_smoothing: float = 0.0,
    train_transform: Transform = None,
    test_transform: Transform = None,
    check_images: str = "header",
    n_max: Optional[int] = None,
    img_size: int = 224,
) -> LTDataset:
    """Own data from ``ROOT/<split>/<class>/<image>`` (docs/method.md §4.3; layout in the module docstring).

    Args:
        data_dir: ROOT.
        imb_factor: ``None`` (default): the data's own class counts are the training set and the prior. A number
            rho >= 1: subsample the training images to the docs/method.md §4 profile over the classes ranked by
            size (:func:`~lt_registry.data.own.long_tail_subsample`; ``n_max`` = the largest class unless given).
        seed: seed of the validation hold-out and of the ``imb_factor`` subsample.
        val_fraction: share of each training class held out when there is no validation folder (0: none).
        train_split / val_split / test_split: folder names under ROOT. ``val_split='val'`` also finds
            ``validation``; a missing default validation folder means a hold-out, a missing explicit one is an
            error; ``None``: always hold out. ``test_split=None``: ``test`` when that folder exists, else no test
            split; an explicit name must exist.
        prior_smoothing: > 0 allows classes with no training image (the run's ClassPrior smoothing).
        train_transform / test_transform: callables on PIL RGB images; default timm's ``create_transform`` at
            ``img_size`` (train: RandomResizedCrop + flip + colour jitter; eval: resize + centre crop).
        check_images: ``'header'`` (default), ``'full'`` or ``'none'`` (:meth:`ImageFileDataset.check_images`).

    ``meta``: ``source`` (``folder:ROOT``), ``root``, ``splits`` (folder names used, ``None`` where absent),
    ``skipped_files``, ``val`` (``{"source": "split", "split": name}`` or ``{"source": "holdout", "fraction",
    "seed", "paths"}`` with ROOT-relative paths, or ``{"source": "none"}``), ``counts_before_holdout``,
    ``counts_before_imb_factor`` and ``imb_factor_rule`` (with ``imb_factor``), ``prior_smoothing``,
    ``train_imb_factor`` (max / min of the training counts), ``image_check``, ``val_counts``, ``test_counts``.
    """
    if data_dir is None:
        raise ValueError("folder needs data_dir: the ROOT of ROOT/<split>/<class>/<image> (e.g. ROOT/train/cat/1.jpg).")
    check_own_options(val_fraction, seed, imb_factor, n_max, prior_smoothing, check_images)
    for key, value in (("train_split", train_split), ("val_split", val_split), ("test_split", test_split)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"{key} must be a folder name under ROOT, got {value!r}.")
    root = Path(os.path.abspath(Path(data_dir).expanduser()))
    if not root.is_dir():
        raise FileNotFoundError(f"folder dataset root {str(root)!r} does not exist or is not a folder; expected "
                                f"ROOT/train/<class>/<image>.")
    subs = _subfolders(root)
    train_dir = root / train_split
    if not train_dir.is_dir():
        hint = ""
        if subs and any(_holds_images(root / s) for s in subs[:20]):
            hint = (f" Its sub-folders hold images, so ROOT looks like ROOT/<class>/<image>: move them into "
                    f"{root / 'train'}/, or pass data_dir={str(root.parent)!r} with train_split={root.name!r}.")
        raise FileNotFoundError(f"no training split folder {train_split!r} in {str(root)!r} (sub-folders found: "
                                f"{subs[:20] or 'none'}); expected ROOT/{train_split}/<class>/<image>, or pass "
                                f"train_split=<folder name>.{hint}")
    # the other splits
    val_name: Optional[str] = None
    if val_split is not None:
        if (root / val_split).is_dir():
            val_name = val_split
        elif val_split == "val" and (root / "validation").is_dir():
            val_name = "validation"
        elif val_split != "val":
            raise FileNotFoundError(f"validation split folder {val_split!r} not found in {str(root)!r} (sub-folders: "
                                    f"{subs[:20]}); pass val_split=None to hold out val_fraction of the training "
                                    f"images instead.")
    if test_split is None:
        test_name = "test" if (root / "test").is_dir() else None
    elif (root / test_split).is_dir():
        test_name = test_split
    else:
        raise FileNotFoundError(f"test split folder {test_split!r} not found in {str(root)!r} (sub-folders: "
                                f"{subs[:20]}); pass test_split=None to use ROOT/test when it exists.")
    names = [train_split] + [n for n in (val_name, test_name) if n is not None]
    same = {os.path.normcase(os.path.realpath(root / n)) for n in names}
    if len(same) < len(names):
        raise ValueError(f"the train, validation and test splits must be different folders, got {names}.")

    tr = _listing(train_dir, "training", root, None, prior_smoothing)
    classes = tr.classes
    index = {c: i for i, c in enumerate(classes)}
    train = _split_files(tr, train_dir, train_split, index, str(train_dir))
    skipped = tr.skipped
    val = test = None
    for which, split_name in (("validation", val_name), ("test", test_name)):
        if split_name is None:
            continue
        found = _listing(root / split_name, which, root, classes, prior_smoothing)
        files = _split_files(found, root / split_name, split_name, index, str(root / split_name))
        skipped += found.skipped
        if which == "validation":
            val = files
        else:
            test = files
    meta = {"source": f"folder:{root}", "root": str(root),
            "splits": {"train": train_split, "val": val_name, "test": test_name}, "skipped_files": skipped}
    val_meta = {"source": "split", "split": val_name} if val is not None else None
    return build_own_dataset("folder", class_names=classes, train=train, val=val, test=test,
                             val_fraction=val_fraction, seed=seed, imb_factor=imb_factor, n_max=n_max,
                             prior_smoothing=prior_smoothing, train_transform=train_transform,
                             test_transform=test_transform, img_size=img_size, check_images=check_images,
                             meta=meta, val_meta=val_meta)
