"""``csv``: your own long-tailed data as CSV lists of ``path,label`` rows (docs/method.md §4.3).

    ds = build_dataset("csv", data_dir="ROOT", train_list="train.csv", val_list="val.csv", test_list="test.csv")

A list is one ``path,label`` row per image (tab-separated for ``.tsv`` files), read with Python's ``csv`` module,
so quoted paths may hold commas. Blank rows and rows starting with ``#`` are skipped. An optional first row names
the columns: a path column (``path``, ``image``, ``filepath``, ``file``, ``filename``, ``image_path``, ``img``,
...) and a label column (``label``, ``class``, ``class_name``, ``target``, ``category``, ...), in any order and
among other columns; without it the first two columns are the path and the label.

Paths resolve against ``data_dir`` (default: the list file's folder); absolute paths are used as they are. Every
row must point at an existing file (checked before training, with the header check of the images after it).

Labels are either all integers (class indices; class names are the integers as strings, unless ``classes``
names them) or all class names (indices in natural order of the training list's names, or the order of
``classes``); mixing them, or any other value (``1.5``, empty), is an error naming the file, line and value.
A label that appears in the validation or test list but not in the training list is an error, too.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .builder import LTDataset, register_dataset
from .own import SplitFiles, build_own_dataset, check_own_options, natural_key

__all__ = ["read_csv_list", "CsvList", "build_csv", "PATH_COLUMNS", "LABEL_COLUMNS"]

PathLike = Union[str, os.PathLike]
Transform = Optional[Callable[[Any], Any]]

#: Header names of the path column and of the label column (compared in lower case).
PATH_COLUMNS = ("path", "image", "filepath", "file_path", "file", "filename", "file_name", "image_path", "img",
                "img_path", "image_file", "relative_path", "image_id")
LABEL_COLUMNS = ("label", "class", "class_name", "classname", "target", "category", "label_name", "class_id",
                 "label_id", "y")
_INT = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


@dataclass
class CsvList:
    """A parsed list: ``file``; ``rows`` of ``(line number, path as written, label text)``; ``kind`` ``'int'`` or
    ``'name'``; ``header`` (the header line's number, or ``None``)."""

    file: Path
    rows: List[Tuple[int, str, str]]
    kind: str
    header: Optional[int]


def _kind(value: str) -> str:
    if _INT.fullmatch(value):
        return "int"
    if _NUMBER.fullmatch(value):
        return "number"
    return "name" if value else "empty"


def read_csv_list(path: PathLike) -> CsvList:
    """Parse one ``path,label`` list (module docstring); malformed rows raise a ValueError naming file:line."""
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    sep = "tab" if delimiter == "\t" else "comma"
    rows: List[Tuple[int, str, str]] = []
    header: Optional[int] = None
    cols: Optional[Tuple[int, int]] = None
    kind: Optional[str] = None
    first: Optional[Tuple[int, str]] = None
    with open(path, "r", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            for fields in reader:
                lineno = reader.line_num
                if not fields or all(not x.strip() for x in fields) or fields[0].lstrip().startswith("#"):
                    continue
                if cols is None:
                    low = [x.strip().lower() for x in fields]
                    p = next((i for i, x in enumerate(low) if x in PATH_COLUMNS), None)
                    y = next((i for i, x in enumerate(low) if x in LABEL_COLUMNS), None)
                    if p is not None and y is not None and p != y:
                        cols, header = (p, y), lineno
                        continue
                    cols = (0, 1)
                need = max(cols) + 1
                if len(fields) < need:
                    raise ValueError(f"{path}:{lineno}: expected {need} {sep}-separated fields (path and label), got "
                                     f"{delimiter.join(fields)!r}.")
                rel, label = fields[cols[0]].strip(), fields[cols[1]].strip()
                if not rel:
                    raise ValueError(f"{path}:{lineno}: empty path.")
                k = _kind(label)
                if k == "empty":
                    raise ValueError(f"{path}:{lineno}: empty label; labels are class indices (integers) or class "
                                     f"names.")
                if k == "number":
                    raise ValueError(f"{path}:{lineno}: label {label!r} is a number but not an integer; labels are "
                                     f"all class indices (integers) or all class names.")
                if kind is None:
                    kind, first = k, (lineno, label)
                elif k != kind:
                    what = {"int": "an integer", "name": "a class name"}
                    hint = (f" (is line {first[0]} a header? name its columns, e.g. path,label)"
                            if header is None and first[0] == rows[0][0] and len(rows) == 1 else "")
                    raise ValueError(f"{path}:{lineno}: label {label!r} is {what[k]} but line {first[0]}'s label "
                                     f"{first[1]!r} is {what[kind]}{hint}; labels are all class indices (integers) "
                                     f"or all class names.")
                if k == "int" and int(label) < 0:
                    raise ValueError(f"{path}:{lineno}: label {label} is negative; class indices start at 0.")
                rows.append((lineno, rel, label))
        except csv.Error as e:
            raise ValueError(f"{path}:{reader.line_num}: not a readable CSV row ({e}).") from None
    if not rows:
        raise ValueError(f"list {str(path)!r} has no rows; expected one 'path,label' row per image.")
    return CsvList(path, rows, str(kind), header)


def _find_list(value: PathLike, key: str, base: Optional[Path]) -> Path:
    p = Path(value).expanduser()
    cands = [p] if p.is_absolute() or base is None else [p, base / p]
    for c in cands:
        if c.is_file():
            return Path(os.path.abspath(c))
    raise FileNotFoundError(f"{key} {str(value)!r} not found (looked at {', '.join(str(c) for c in cands)}).")


def _read_classes(classes: Any) -> List[str]:
    if isinstance(classes, (str, os.PathLike)):
        p = Path(classes).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"classes file {str(p)!r} not found; pass a list of names or a text file with "
                                    f"one class name per line.")
        names = [line.strip() for line in p.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    elif isinstance(classes, Sequence) and all(isinstance(c, str) for c in classes):
        names = [c.strip() for c in classes]
    else:
        raise ValueError(f"classes must be a list of class names or a path to a file with one name per line, got "
                         f"{type(classes).__name__}.")
    dup = sorted({c for c in names if names.count(c) > 1})
    if not names or dup or any(not c for c in names):
        raise ValueError(f"classes must be non-empty, distinct names; got {len(names)} names"
                         f"{f', repeated: {dup[:5]}' if dup else ''}.")
    return names


def _label_space(lists: Dict[str, CsvList], classes: Optional[List[str]]) -> Tuple[List[str], Dict[str, np.ndarray]]:
    """Class names and per-split int64 labels; every error names the file, line and value."""
    train = lists["train"]
    for key, lst in lists.items():
        if lst.kind != train.kind:
            line, _, label = lst.rows[0]
            what = {"int": "integers", "name": "class names"}
            raise ValueError(f"{lst.file}:{line}: labels are {what[lst.kind]} (e.g. {label!r}) but the training list "
                             f"{train.file} has {what[train.kind]}; all lists must use the same kind.")
    out: Dict[str, np.ndarray] = {}
    if train.kind == "name":
        names = classes if classes is not None else sorted({r[2] for r in train.rows}, key=natural_key)
        index = {n: i for i, n in enumerate(names)}
        for key, lst in lists.items():
            ys = []
            for line, _, label in lst.rows:
                if label not in index:
                    where = ("is not in classes" if classes is not None
                             else "appears in this list but not in the training list")
                    raise ValueError(f"{lst.file}:{line}: class {label!r} {where}; the classes are "
                                     f"{names[:10]}{'...' if len(names) > 10 else ''} ({len(names)}).")
                ys.append(index[label])
            out[key] = np.asarray(ys, dtype=np.int64)
        return list(names), out
    for key, lst in lists.items():
        out[key] = np.asarray([int(r[2]) for r in lst.rows], dtype=np.int64)
    C = len(classes) if classes is not None else int(out["train"].max()) + 1
    for key, lst in lists.items():
        bad = np.flatnonzero(out[key] >= C)
        if bad.size:
            line, _, label = lst.rows[int(bad[0])]
            why = (f"out of range for the {C} names in classes" if classes is not None
                   else f"not in the training list, whose labels go up to {C - 1}")
            raise ValueError(f"{lst.file}:{line}: class {label} is {why}.")
    return (list(classes) if classes is not None else [str(c) for c in range(C)]), out


def _resolve(lst: CsvList, base: Path) -> List[str]:
    paths = [rel if os.path.isabs(rel) else os.path.normpath(os.path.join(base, rel)) for _, rel, _ in lst.rows]
    missing = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
    if missing:
        line, rel, _ = lst.rows[missing[0]]
        hint = (" (if that line is a header, name its columns, e.g. path,label)"
                if missing[0] == 0 and lst.header is None else "")
        raise FileNotFoundError(f"{lst.file}:{line}: image {rel!r} not found (resolved to {paths[missing[0]]!r}); "
                                f"{len(missing)} of {len(paths)} rows point at missing files. Relative paths resolve "
                                f"against data_dir ({str(base)!r}), absolute ones are used as they are{hint}.")
    return paths


@register_dataset("csv", aliases=("csv_list",), label="CSV lists (own data)",
                  meta={"note": "your own images listed in path,label CSV files, with their natural class counts "
                                "(docs/method.md §4.3)."})
def build_csv(
    data_dir: Optional[PathLike] = None,
    train_list: Optional[PathLike] = None,
    val_list: Optional[PathLike] = None,
    test_list: Optional[PathLike] = None,
    classes: Any = None,
    imb_factor: Optional[float] = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    prior_smoothing: float = 0.0,
    train_transform: Transform = None,
    test_transform: Transform = None,
    check_images: str = "header",
    n_max: Optional[int] = None,
    img_size: int = 224,
) -> LTDataset:
    """Own data from ``path,label`` lists (docs/method.md §4.3; format in the module docstring).

    Args:
        data_dir: the root relative paths resolve against (default: each list file's folder). List paths that
            are relative and not found from the working directory are looked up under it too.
        train_list: required; val_list / test_list: optional. Without ``val_list``, ``val_fraction`` of every
            class is held out of the training list (stratified, seeded by ``seed``; 0: no validation split).
        classes: class names (a list, or a text file with one name per line): with integer labels they name
            the indices (and fix the number of classes); with name labels they fix the order and the label space.
        imb_factor, n_max, seed, val_fraction, prior_smoothing, train_transform, test_transform, check_images,
            img_size: as for the ``folder`` builder (:func:`~lt_registry.data.folder.build_folder`).

    ``meta``: ``source`` (``csv:<train list>``), ``root``, ``lists`` (absolute list paths, ``None`` where
    absent), ``label_kind`` (``'int'`` / ``'name'``), ``val`` (``{"source": "split", "split": "val", "list":
    path}`` or the hold-out record ``{"source": "holdout", "fraction", "seed", "paths"}`` with the paths as
    the list writes them, or ``{"source": "none"}``), and the keys the ``folder`` builder records
    (``counts_before_holdout``, ``counts_before_imb_factor``, ``imb_factor_rule``, ``prior_smoothing``,
    ``train_imb_factor``, ``image_check``, ``val_counts``, ``test_counts``).
    """
    if train_list is None:
        raise ValueError("csv needs train_list: a CSV file of 'path,label' rows (--train-list), optionally "
                         "val_list and test_list.")
    check_own_options(val_fraction, seed, imb_factor, n_max, prior_smoothing, check_images)
    root: Optional[Path] = None
    if data_dir is not None:
        root = Path(os.path.abspath(Path(data_dir).expanduser()))
        if not root.is_dir():
            raise FileNotFoundError(f"csv data_dir {str(root)!r} does not exist or is not a folder (it is the root "
                                    f"the lists' relative paths resolve against).")
    names = _read_classes(classes) if classes is not None else None
    files = {"train": _find_list(train_list, "train_list", root)}
    for key, value in (("val", val_list), ("test", test_list)):
        if value is not None:
            files[key] = _find_list(value, f"{key}_list", root)
    if len(set(files.values())) < len(files):
        raise ValueError(f"train_list, val_list and test_list must be different files, got "
                         f"{[str(v) for v in files.values()]}.")
    lists = {key: read_csv_list(f) for key, f in files.items()}
    class_names, labels = _label_space(lists, names)
    splits: Dict[str, SplitFiles] = {}
    owner: Dict[str, Tuple[str, int]] = {}
    for key, lst in lists.items():
        base = root if root is not None else lst.file.parent
        paths = _resolve(lst, base)
        splits[key] = SplitFiles(paths, labels[key], [r[1] for r in lst.rows], str(lst.file))
        if key == "train":
            owner = {p: (str(lst.file), r[0]) for p, r in zip(paths, lst.rows)}
        else:
            both = [(p, r[0]) for p, r in zip(paths, lst.rows) if p in owner]
            if both:
                p, line = both[0]
                raise ValueError(f"{len(both)} image(s) of the {key} list are in the training list too, e.g. {p!r} "
                                 f"({lst.file}:{line} and {owner[p][0]}:{owner[p][1]}); an image belongs to one "
                                 f"split.")
    meta = {"source": f"csv:{files['train']}", "root": str(root) if root is not None else None,
            "lists": {k: (str(files[k]) if k in files else None) for k in ("train", "val", "test")},
            "label_kind": lists["train"].kind}
    val_meta = {"source": "split", "split": "val", "list": str(files["val"])} if "val" in files else None
    return build_own_dataset("csv", class_names=class_names, train=splits["train"], val=splits.get("val"),
                             test=splits.get("test"), val_fraction=val_fraction, seed=seed, imb_factor=imb_factor,
                             n_max=n_max, prior_smoothing=prior_smoothing, train_transform=train_transform,
                             test_transform=test_transform, img_size=img_size, check_images=check_images,
                             meta=meta, val_meta=val_meta)
