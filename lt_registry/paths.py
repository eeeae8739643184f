"""Paths in files written for other people: published results, recorded commands, Hub uploads (docs/method.md §5.2).

A run records the paths it was given exactly (``train_args.yaml`` is what ``--resume`` reloads). A copy meant for
someone else names only paths inside the repository: paths inside it are written relative to it, a data folder or
list file outside it as ``data/<its name>`` (the repository's ``data/`` folder, where the README's commands expect
datasets to be placed or linked), any other file outside it as ``PATH/TO/<its name>``.

    from lt_registry.paths import published_path, scrub_paths
    published_path("../shared/data/cifar10-jpeg75", root)      # 'data/cifar10-jpeg75'
    scrub_paths(text, ["../shared/data/cifar10-jpeg75"], root)  # every mention rewritten
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Union

__all__ = ["DATA_FOLDER", "DATA_PATH_OPTIONS", "FILE_PATH_OPTIONS", "PATH_OPTIONS", "published_path",
           "run_paths", "scrub_paths", "same_path"]

PathLike = Union[str, os.PathLike]

#: the repository's folder for datasets (ignored by git): ``data/cifar10-jpeg75`` in the README's commands
DATA_FOLDER = "data"

#: train.py options naming data a run reads: published outside the repository as ``data/<name>``
DATA_PATH_OPTIONS = ("data_dir", "train_list", "val_list", "test_list")
#: train.py options naming other files or folders: published outside the repository as ``PATH/TO/<name>``
FILE_PATH_OPTIONS = ("pretrained_path", "initial_checkpoint", "config", "resume", "output")
PATH_OPTIONS = DATA_PATH_OPTIONS + FILE_PATH_OPTIONS

_HFDS = "hfds/"


def _absolute(path: PathLike, root: Path) -> Path:
    """``path`` made absolute without following links (a relative path is relative to ``root``)."""
    p = Path(os.path.expanduser(str(path)))
    return Path(os.path.normpath(p if p.is_absolute() else root / p))


def published_path(path: PathLike, root: PathLike, *, data: bool = True) -> str:
    """``path`` as a published file names it: relative to the repository ``root`` when inside it, else
    ``data/<name>`` (``data``: a dataset folder or list file) or ``PATH/TO/<name>``. Links are not followed, so a
    dataset linked into ``data/`` keeps its name there. Hub references (``hf-hub:``) are returned unchanged."""
    s = str(path)
    if not s or s.startswith("hf-hub:"):
        return s
    root = Path(os.path.abspath(root))
    p = _absolute(s, root)
    if p == root:
        return "."
    if p.is_relative_to(root):
        return p.relative_to(root).as_posix()
    return f"{DATA_FOLDER}/{p.name}" if data else f"PATH/TO/{p.name}"


def run_paths(args: Mapping[str, Any]) -> List[tuple]:
    """``(value, is_data)`` for every path a run's options (``train_args.yaml``) name: the path options, and the
    local folder of a ``hfds/<path>`` dataset (a Hub id such as ``hfds/user/name`` has no local folder)."""
    out = [(str(args[k]), k in DATA_PATH_OPTIONS) for k in PATH_OPTIONS if args.get(k)]
    ds = str(args.get("dataset") or "")
    if ds.startswith(_HFDS):
        local = ds[len(_HFDS):]
        if local.startswith(("/", ".", "~")) or os.path.exists(local):
            out.append((local, True))
    return out


def scrub_paths(text: str, paths: Iterable[Any], root: PathLike) -> str:
    """``text`` with every mention of ``paths`` (strings, or ``(path, is_data)`` pairs; as given and as absolute
    paths) and of the repository's absolute location rewritten by :func:`published_path`."""
    root = Path(os.path.abspath(root))
    subs = {}
    for item in paths:
        value, data = item if isinstance(item, tuple) else (item, True)
        value = str(value)
        if not value or value.startswith("hf-hub:"):
            continue
        new = published_path(value, root, data=data)
        for form in {value, value.rstrip("/"), str(_absolute(value, root))}:
            if form and form != new and form not in (".", ".."):
                subs[form] = new
    for old in sorted(subs, key=len, reverse=True):  # longest first: a folder's files before the folder
        text = re.sub(r"(?<![\w.~/-])" + re.escape(old) + r"(?![\w.-])", lambda m, new=subs[old]: new, text)
    return re.sub(r"(?<![\w.~/-])" + re.escape(str(root)) + r"/", "", text)


def same_path(a: Any, b: Any) -> bool:
    """Whether two path option values name the same file (links followed; relative to the working directory)."""
    if a == b:
        return True
    if not (isinstance(a, (str, os.PathLike)) and isinstance(b, (str, os.PathLike))) or not str(a) or not str(b):
        return False
    return os.path.realpath(os.path.expanduser(str(a))) == os.path.realpath(os.path.expanduser(str(b)))
