"""Paths in files written for other people: published results, recorded commands, Hub uploads (docs/method.md §5.2).

A run records the paths it was given exactly (``train_args.yaml`` is what ``--resume`` reloads). A copy meant for
someone else names only paths inside the repository: paths inside it are written relative to it, a data folder or
list file outside it as ``data/<its name>`` (the repository's ``data/`` folder, where the README's commands expect
datasets to be placed or linked), any other file outside it as ``PATH/TO/<its name>``. Relative paths are read
from the working directory, as the runs read them.

    from lt_registry.paths import published_path, scrub_paths, scrub_file
    published_path("../shared/data/cifar10-jpeg75", root)      # 'data/cifar10-jpeg75' (root: the repository)
    scrub_paths(text, [("../shared/data/cifar10-jpeg75", True)], root)  # every mention rewritten
"""
from __future__ import annotations

import json
import os
import re
import shlex
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import yaml

__all__ = ["DATA_FOLDER", "DATA_PATH_OPTIONS", "FILE_PATH_OPTIONS", "PATH_OPTIONS", "repository_root",
           "published_path", "run_paths", "command_paths", "structure_paths", "scrub_paths", "scrub_file",
           "same_path"]

PathLike = Union[str, os.PathLike]

#: the repository's folder for datasets (ignored by git): ``data/cifar10-jpeg75`` in the README's commands
DATA_FOLDER = "data"

#: train.py options naming data a run reads: published outside the repository as ``data/<name>``
DATA_PATH_OPTIONS = ("data_dir", "train_list", "val_list", "test_list")
#: train.py options naming other files or folders: published outside the repository as ``PATH/TO/<name>``
FILE_PATH_OPTIONS = ("pretrained_path", "initial_checkpoint", "config", "resume", "output")
PATH_OPTIONS = DATA_PATH_OPTIONS + FILE_PATH_OPTIONS
#: the same options as command-line flags, for paths found in recorded commands
_DATA_FLAGS = tuple("--" + k.replace("_", "-") for k in DATA_PATH_OPTIONS)

_HFDS = "hfds/"
_LOCAL_PREFIXES = ("local-dir:",)
#: characters a path token is made of in commands, tables and logs
_PATH_CHARS = r"[^\s\"'`,;|()\[\]{}<>=]"
#: an absolute or home-relative path token not inside a longer token or a URL (``../`` tokens are left to the
#: known paths: in Markdown they are relative links)
_PATH_TOKEN = re.compile(r"(?<![\w.:/~%-])(?:/|~/)" + _PATH_CHARS + r"*")

PathItem = Union[PathLike, Tuple[PathLike, bool]]


def repository_root(start: Optional[PathLike] = None) -> Path:
    """The git work tree holding ``start`` (default: the working directory), else ``start`` itself."""
    here = Path(os.path.abspath(start if start is not None else os.getcwd()))
    for d in (here, *here.parents):
        if (d / ".git").exists():
            return d
    return here


def _absolute(path: PathLike, base: Optional[Path] = None) -> Path:
    """``path`` made absolute without following links (a relative path is relative to ``base``, default the
    working directory)."""
    p = Path(os.path.expanduser(str(path)))
    return Path(os.path.normpath(p if p.is_absolute() else (base or Path.cwd()) / p))


def published_path(path: PathLike, root: PathLike, *, data: bool = True) -> str:
    """``path`` as a published file names it: relative to the repository ``root`` when inside it, else
    ``data/<name>`` (``data``: a dataset folder or list file) or ``PATH/TO/<name>``. Links are not followed, so a
    dataset linked into ``data/`` keeps its name there. Hub references (``hf-hub:``) are returned unchanged."""
    s = str(path)
    if not s or s.startswith("hf-hub:"):
        return s
    for prefix in _LOCAL_PREFIXES:
        if s.startswith(prefix):
            return prefix + published_path(s[len(prefix):], root, data=data)
    root = Path(os.path.abspath(root))
    p = _absolute(s)
    if p == root:
        return "."
    if p.is_relative_to(root):
        return p.relative_to(root).as_posix()
    return f"{DATA_FOLDER}/{p.name}" if data else f"PATH/TO/{p.name}"


def run_paths(args: Mapping[str, Any]) -> List[Tuple[str, bool]]:
    """``(value, is_data)`` for every path a run's options (``train_args.yaml``) name: the path options, the local
    folder of a ``hfds/<path>`` dataset (a Hub id such as ``hfds/user/name`` has none) and a ``local-dir:`` model."""
    out = [(str(args[k]), k in DATA_PATH_OPTIONS) for k in PATH_OPTIONS if args.get(k)]
    ds = str(args.get("dataset") or "")
    if ds.startswith(_HFDS):
        local = ds[len(_HFDS):]
        if local.startswith(("/", ".", "~")) or os.path.exists(local):
            out.append((local, True))
    model = str(args.get("model") or "")
    if model.startswith("local-dir:"):
        out.append((model[len("local-dir:"):], False))
    return out


#: flags of the recipes whose value is a path: ``--data-dir`` and the list files (data), the others (files)
_FILE_FLAGS = tuple("--" + k.replace("_", "-") for k in FILE_PATH_OPTIONS) + (
    "--out", "--grid", "--publish", "--reports", "--train-config")


def command_paths(argv: Iterable[Any]) -> List[Tuple[str, bool]]:
    """``(value, is_data)`` for every path flag's value in a recorded command (``--data-dir X``, ``--out=Y``)."""
    tokens = [str(t) for t in argv]
    out = []
    for i, t in enumerate(tokens):
        flag, eq, value = t.partition("=")
        if not eq:
            value = tokens[i + 1] if i + 1 < len(tokens) else ""
        if flag in _DATA_FLAGS + _FILE_FLAGS and value and not value.startswith("-"):
            out.append((value, flag in _DATA_FLAGS))
    return out


def structure_paths(data: Any) -> List[Tuple[str, bool]]:
    """:func:`command_paths` of every command recorded in a JSON / YAML structure (``grid.json``): lists of
    arguments and command strings."""
    if isinstance(data, dict):
        return [p for v in data.values() for p in structure_paths(v)]
    if isinstance(data, list):
        if data and all(isinstance(v, str) for v in data):
            return command_paths(data)
        return [p for v in data for p in structure_paths(v)]
    if isinstance(data, str) and " --" in data:
        try:
            return command_paths(shlex.split(data))
        except ValueError:
            return []
    return []


def _warn_clashes(outside: Mapping[Path, str]) -> None:
    """Warn when different folders outside the repository publish under one name (``/a/cifar`` and ``/b/cifar``
    both as ``data/cifar``): the published files can no longer tell them apart."""
    by_name: Dict[str, Dict[str, Path]] = {}
    for a, name in outside.items():
        if not any(a.is_relative_to(p) for p in outside if p != a):  # a file under a published folder keeps its place
            by_name.setdefault(name, {})[os.path.realpath(a)] = a
    for name, sources in by_name.items():
        if len(sources) > 1:
            listed = ", ".join(sorted(str(a) for a in sources.values()))
            warnings.warn(f"different folders outside the repository are published under the one name {name!r}: "
                          f"{listed}; give them different names (or place them in the repository's "
                          f"{DATA_FOLDER}/ folder) to tell them apart in published files", stacklevel=3)


def _substitutions(paths: Iterable[PathItem], root: Path) -> Dict[str, str]:
    """Every written form of ``paths`` (as given, without a trailing slash, absolute) -> its published form; a data
    path under another data path outside the repository keeps its place under that one's published name."""
    items: List[Tuple[str, bool]] = []
    for item in paths:
        value, data = item if isinstance(item, tuple) else (item, True)
        value = str(value) if value is not None else ""
        for prefix in _LOCAL_PREFIXES:
            value = value[len(prefix):] if value.startswith(prefix) else value
        if value and not value.startswith("hf-hub:"):
            items.append((value, bool(data)))
    outside = {_absolute(v): published_path(v, root, data=d) for v, d in items
               if d and not _absolute(v).is_relative_to(root)}
    _warn_clashes(outside)
    subs: Dict[str, str] = {}
    for value, data in items:
        a = _absolute(value)
        new = published_path(value, root, data=data)
        parents = [p for p in outside if p != a and a.is_relative_to(p)] if data else []
        if parents:  # /mnt/places/lists/train.txt under data_dir /mnt/places -> data/places/lists/train.txt
            top = min(parents, key=lambda p: len(p.parts))
            new = f"{outside[top]}/{a.relative_to(top).as_posix()}"
        for form in {value, value.rstrip("/"), str(a)}:
            if form and form != new and form not in (".", "..", "/"):
                subs[form] = new
    return subs


def scrub_paths(text: str, paths: Iterable[PathItem], root: PathLike) -> str:
    """``text`` naming only paths inside the repository ``root``: every mention of ``paths`` (strings, or
    ``(path, is_data)`` pairs; as given and as absolute paths) rewritten by :func:`published_path`, then any other
    absolute path that leads out of the repository (a folder that exists here) as ``PATH/TO/<name>``
    (``data/<name>`` after a data flag such as ``--data-dir``), and the repository's own location made relative."""
    root = Path(os.path.abspath(root))
    subs = _substitutions(paths, root)
    for old in sorted(subs, key=len, reverse=True):  # longest first: a folder's files before the folder
        text = re.sub(r"(?<![\w.~/%-])" + re.escape(old) + r"(?=/|(?![\w.%-]))", lambda m, n=subs[old]: n, text)

    def other(m: "re.Match[str]") -> str:
        token = m.group(0)
        a = _absolute(token)
        if a == root or a.is_relative_to(root):
            return published_path(a, root)
        first = Path(a.anchor) / a.parts[1] if len(a.parts) > 1 else None
        if first is None or not first.exists():  # not a path of this machine ("/epoch" in "s /epoch")
            return token
        before = text[max(0, m.start() - 16):m.start()].rstrip("= ")
        return published_path(a, root, data=before.endswith(_DATA_FLAGS))

    return _PATH_TOKEN.sub(other, text)


def _machine_path(value: str) -> bool:
    """Whether ``value`` as a whole is an absolute path of this machine (its first folder exists here)."""
    if "\n" in value or not value.startswith(("/", "~/")) or value.startswith("//"):
        return False
    a = _absolute(value)
    return len(a.parts) > 1 and (Path(a.anchor) / a.parts[1]).exists()


def _scrub_value(value: Any, paths: List[PathItem], root: PathLike, key: Optional[str] = None) -> Any:
    if isinstance(value, str):
        new = scrub_paths(value, paths, root)
        if new == value and _machine_path(value):  # a whole value, spaces and all: data-ness from its key
            return published_path(value, root, data=key in DATA_PATH_OPTIONS)
        return new
    if isinstance(value, list):
        return [_scrub_value(v, paths, root, key) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_value(v, paths, root, str(k)) for k, v in value.items()}
    return value


def scrub_file(src: PathLike, dst: PathLike, paths: Iterable[PathItem], root: PathLike) -> bool:
    """Copy the text file ``src`` to ``dst`` naming only paths inside ``root`` (:func:`scrub_paths`). JSON and YAML
    are rewritten value by value (so escaped and wrapped strings are seen whole; a value that is a path as a whole
    is rewritten whole, spaces included, and the paths of commands recorded in them are known paths) and
    re-serialised only when a value changed; other text keeps its line endings. Returns whether anything was
    rewritten."""
    src, dst = Path(src), Path(dst)
    paths = list(paths)
    with open(src, newline="") as f:
        raw = f.read()
    out = raw
    if src.suffix in (".json", ".yaml", ".yml"):
        loads = json.loads if src.suffix == ".json" else yaml.safe_load
        try:
            data = loads(raw)
        except (ValueError, yaml.YAMLError):
            data = None
        if isinstance(data, (dict, list)):
            new = _scrub_value(data, paths + structure_paths(data), root)
            if new != data:
                out = (json.dumps(new, indent=2) + "\n" if src.suffix == ".json"
                       else yaml.safe_dump(new, sort_keys=isinstance(new, dict) and list(new) == sorted(new)))
        else:
            out = scrub_paths(raw, paths, root)
    else:
        out = scrub_paths(raw, paths, root)
    with open(dst, "w", newline="") as f:
        f.write(out)
    return out != raw


def same_path(a: Any, b: Any) -> bool:
    """Whether two path option values name the same file or folder (links followed; relative to the working
    directory). A copy of the data elsewhere is another folder."""
    if a == b:
        return True
    if not (isinstance(a, (str, os.PathLike)) and isinstance(b, (str, os.PathLike))) or not str(a) or not str(b):
        return False
    return os.path.realpath(os.path.expanduser(str(a))) == os.path.realpath(os.path.expanduser(str(b)))
