"""List-file long-tailed sets: ImageNet-LT, iNaturalist 2018, Places-LT (docs/method.md §4).

These benchmarks ship as text files with one ``relative/path.jpg label`` per line, resolved against an
image root (the field's layout, e.g. ``ImageNet_LT_train.txt`` with ``train/n01440764/n01440764_10026.JPEG 0``).
The list fixes the long tail, so the class counts come from the list itself.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np

from .files import ImageFileDataset, _PathTable, pil_loader

__all__ = ["read_list_file", "ListFileDataset", "pil_loader", "LIST_SETS", "find_list_file"]

PathLike = Union[str, os.PathLike]

#: name -> (num_classes, list-file prefix, folder name in the field's layout, default evaluation split).
LIST_SETS = {
    "imagenet_lt": (1000, "ImageNet_LT", "ImageNet_LT", "test"),
    "inat2018": (8142, "iNaturalist18", "iNaturalist18", "val"),
    "places_lt": (365, "Places_LT", "Places_LT", "test"),
}


def read_list_file(path: PathLike, num_classes: Optional[int] = None) -> Tuple[List[str], np.ndarray]:
    """Parse ``relative/path label`` lines -> (paths, int64 labels).

    Blank lines are skipped; the label is the last whitespace-separated field, so paths may contain
    spaces. Malformed lines raise a ValueError naming the file and the 1-based line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file {str(path)!r} does not exist.")
    paths: List[str] = []
    labels: List[int] = []
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: expected '<relative/path> <label>', got {text!r}.")
            rel, lab = parts
            try:
                y = int(lab)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: label {lab!r} is not an integer (line {text!r}).") from None
            if y < 0 or (num_classes is not None and y >= num_classes):
                bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
                raise ValueError(f"{path}:{lineno}: label {y} is out of range {bound}.")
            paths.append(rel)
            labels.append(y)
    if not paths:
        raise ValueError(f"list file {str(path)!r} has no entries.")
    return paths, np.asarray(labels, dtype=np.int64)


def find_list_file(name: str, split: str, list_dir: PathLike) -> Path:
    """``<Prefix>_<split>.txt`` in ``list_dir`` or ``list_dir/<Prefix>/`` (the field's layout)."""
    _, prefix, folder, _ = LIST_SETS[name]
    fname = f"{prefix}_{split}.txt"
    candidates = [Path(list_dir) / fname, Path(list_dir) / folder / fname]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"{name}: no list file for split {split!r}; looked for "
                            f"{', '.join(str(c) for c in candidates)}.")


def _class_names_from_paths(paths: List[str], labels: np.ndarray, num_classes: int) -> List[str]:
    """The parent folder of each class's images when it is the same for all of them, else the label."""
    names: List[Optional[str]] = [None] * num_classes
    clash = [False] * num_classes
    for rel, y in zip(paths, labels.tolist()):
        parent = Path(rel).parent.name
        if names[y] is None:
            names[y] = parent
        elif names[y] != parent:
            clash[y] = True
    return [n if (n and not k) else str(c) for c, (n, k) in enumerate(zip(names, clash))]


class ListFileDataset(ImageFileDataset):
    """Images listed in a ``relative/path label`` file under ``root`` (docs/method.md §4: ImageNet-LT, iNat 2018, Places-LT).

    An :class:`~lt_registry.data.files.ImageFileDataset` (RGB reading of every mode, bad-image substitution,
    :meth:`check_images`, :meth:`failed_paths`) built from a list file.

    Args:
        list_file: the list.
        root: image root the relative paths resolve against.
        transform: applied to the PIL image (e.g. ``timm.data.create_transform``); ``None`` returns PIL.
        num_classes: label space size (1000 / 8142 / 365); default ``max(label) + 1``.
        loader: path -> image (default :func:`~lt_registry.data.files.load_rgb`).

    Attributes:
        samples: list of ``(absolute path, label)``; ``labels``: int64 [N]; ``class_counts``: list [C];
        ``class_names``: the class's folder name when its images share one, else the label as a string;
        ``rel_paths``: the paths as the list file writes them.
    """

    def __init__(
        self,
        list_file: PathLike,
        root: PathLike,
        transform: Optional[Callable[[Any], Any]] = None,
        num_classes: Optional[int] = None,
        loader: Callable[[PathLike], Any] = pil_loader,
    ):
        self.list_file = Path(list_file)
        self.root = Path(root)
        rel_paths, labels = read_list_file(self.list_file, num_classes)
        C = int(num_classes if num_classes is not None else labels.max() + 1)
        super().__init__(rel_paths, labels, _class_names_from_paths(rel_paths, labels, C), C, transform, loader,
                         root=self.root)
        self._rel = _PathTable(rel_paths)

    @property
    def rel_paths(self) -> List[str]:
        return self._rel.tolist()

    def _describe(self, index: int) -> str:
        return f"entry {index} of {self.list_file}; image root {str(self.root)!r}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(list_file={str(self.list_file)!r}, root={str(self.root)!r}, n={len(self)}, "
                f"num_classes={self.num_classes})")
