"""``hfds/<hub id or local path>``: any Hugging Face image-classification dataset as a long-tailed set.

The name follows timm's convention (``--dataset hfds/user/my-lt-set``). What follows ``hfds/`` is read as:

* an existing local path (``hfds/./data/my_set``, ``hfds//abs/path``, ``hfds/~/sets/x``; a local path wins over a Hub
  id of the same spelling):

  - a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``datasets.load_from_disk``),
    or one holding a saved ``Dataset`` per split (``train/state.json``, ...);
  - a folder of parquet files: split names from the file names (``train-*.parquet``, ``train.parquet``,
    ``data/train-00000-of-00001.parquet``, ``train/0000.parquet``) or, when its ``README.md`` declares
    ``configs:``, as ``datasets.load_dataset(folder)`` reads it (the Hub layout); a single ``.parquet`` file is
    one split named after it;
  - a folder of image files in ``[split/]class/image`` layout through ``load_dataset("imagefolder")``. For a plain
    image folder the repository's own ``folder`` builder (``--dataset folder``) is the preferred route: it reads the
    files directly, without the ``datasets`` cache;

* otherwise a Hub dataset id (``user/name``, optionally ``user/name@revision``), loaded with
  ``datasets.load_dataset`` (``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_DATASETS_OFFLINE`` / ``HF_HUB_OFFLINE`` as usual;
  ``data_dir`` is the datasets cache folder, as ``--data-dir`` is for timm's ``hfds/``). The repo is asked for its
  info first, so an unreachable Hub, a missing repo or revision fails at once with one line (datasets itself
  retries for about half a minute); when the Hub is unreachable but the dataset is in the cache, the cache is used.

Columns: the image column is the one ``datasets.Image`` feature, the label column the one ``ClassLabel`` (else a
column named ``label``/``labels``/``target``/``class``); ``input_key`` / ``target_key`` (timm's ``--input-key`` /
``--target-key``) name them. Class names: the ``ClassLabel``'s names; an integer label column gives ``"0".."C-1"``
(C = largest training label + 1); a string label column gives its training values sorted naturally (``c2`` before
``c10``). With integer or string labels the training split defines the classes, so a label only validation or test
has is an error; a ``ClassLabel`` declares its classes, and one without training images is an error unless
``prior_smoothing > 0`` (as for the ``csv`` builder with ``classes``).

Splits: ``train_split`` (default ``train``); validation ``val_split`` (default ``validation``, also found as ``val`` or
``valid``), else a stratified hold-out of ``val_fraction`` of every class of the training split
(:func:`~lt_registry.data.holdout.stratified_holdout`, seeded with ``seed``); test ``test_split`` (default ``test``
when there is one). Class counts are the natural ones, read from the label column alone (no image is decoded);
``imb_factor`` subsamples the training split further by the own-data rule of docs/method.md §4.3 (the §4 profile over
the classes ranked by size, :func:`~lt_registry.data.own.long_tail_subsample`, as the ``folder`` builder does).

Images are decoded with PIL when a sample is drawn and converted to 8-bit RGB from any mode by
:func:`lt_registry.data.files.to_rgb` (L, P, CMYK, I;16, ...; alpha composited over white). An image that cannot be
decoded never stops a run: :class:`HFImageDataset` is an :class:`~lt_registry.data.files.ImageFileDataset` over rows,
so the next readable image of the same class (in dataset order, deterministically) stands in for it and the index
is marked in shared memory; :meth:`HFImageDataset.failed_indices` lists it in the main process even when DataLoader
workers did the reading.
"""
from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .builder import LTDataset, register_dataset
from .files import IMAGE_EXTENSIONS, ImageFileDataset, bad_images_message, to_rgb
from .holdout import stratified_holdout
from .imbalanced_test import imbalanced_test_indices
from .own import check_own_options, long_tail_subsample, natural_key

__all__ = ["build_hfds", "HFImageDataset", "DatasetSourceError", "load_hf_splits", "VAL_SPLIT_NAMES"]

PathLike = Union[str, os.PathLike]
Transform = Optional[Callable[[Any], Any]]
logger = logging.getLogger(__name__)

#: names a validation split goes by; ``val_split`` set to any of them finds whichever the dataset has
VAL_SPLIT_NAMES = ("validation", "val", "valid")
#: label column names tried when no ``ClassLabel`` column exists and ``target_key`` is not given
LABEL_COLUMN_NAMES = ("label", "labels", "target", "class")
_INT_DTYPES = {f"{p}int{b}" for p in ("", "u") for b in (8, 16, 32, 64)}
_STR_DTYPES = {"string", "large_string"}
#: seconds the Hub has to answer the repo-info request before it counts as unreachable
_HUB_TIMEOUT_S = 10.0


class DatasetSourceError(ValueError):
    """A dataset that cannot be read as asked (unreachable Hub, missing split or column, bad labels), with what to do
    about it; the message is one line."""


# ---- images ------------------------------------------------------------------------------------------------------
def _decode(cell: Any, full: bool = True) -> Any:
    """A stored image cell (``{"bytes", "path"}``, or a PIL image) -> RGB PIL image (:func:`~lt_registry.data.files.to_rgb`);
    ``full=False`` parses the header only and returns ``None``. Raises on anything unreadable."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(cell, Image.Image):
        return to_rgb(cell) if full else None
    data, path = (cell or {}).get("bytes"), (cell or {}).get("path")
    if data is None and not path:
        raise ValueError("the image cell holds neither bytes nor a path")
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            return to_rgb(im) if full else None
    except UnidentifiedImageError:
        if data is None:
            raise
        raise ValueError(f"not an image PIL can read ({len(data)} bytes)") from None


class _RowNames:
    """``"<name> row <r>"`` for sample i: what :class:`ImageFileDataset` shows where it would show a path."""

    def __init__(self, name: str, rows: np.ndarray):
        self.name, self.rows = name, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> str:
        return f"{self.name} row {int(self.rows[int(i)])}"

    def tolist(self) -> List[str]:
        return [self[i] for i in range(len(self))]


class HFImageDataset(ImageFileDataset):
    """``(transform(RGB PIL image), int label)`` from rows of one split of a ``datasets.Dataset``.

    An :class:`~lt_registry.data.files.ImageFileDataset` whose samples are rows instead of files: the same RGB
    conversion from every mode, the same substitution of an image that fails to decode (the next readable image
    of its class, marked in shared memory), with rows where the file dataset has paths.

    Args:
        hf_split: the ``datasets.Dataset``; only its ``image_key`` column is read, undecoded, and decoded here
            with PIL.
        image_key: the image column.
        labels: int labels [N] of the rows used (in the label space).
        rows: row numbers into ``hf_split`` (default: all rows, in order), aligned with ``labels``.
        transform: applied to the PIL image; ``None`` returns the PIL image. Settable (``LTDataset.set_transforms``).
        class_names / num_classes: the label space.
        name: for messages (e.g. ``hfds/user/set[train]``).

    Attributes: ``labels`` (int64 [N]), ``rows``, ``class_counts``, ``class_names``, ``num_classes``, ``transform``;
    :meth:`failed_indices` (and :meth:`failed_paths`, as ``"<name> row <r>"``). Picklable for DataLoader workers.
    """

    def __init__(self, hf_split: Any, image_key: str, labels: Any, rows: Optional[Any] = None,
                 transform: Transform = None, class_names: Optional[Sequence[str]] = None,
                 num_classes: Optional[int] = None, name: str = ""):
        import datasets

        # not ImageFileDataset.__init__: no files to list; the attributes its reading methods use are set here
        self.labels: np.ndarray = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.rows: np.ndarray = (np.arange(len(self.labels), dtype=np.int64) if rows is None
                                 else np.asarray(rows, dtype=np.int64).reshape(-1))
        if len(self.rows) != len(self.labels):
            raise ValueError(f"{name}: {len(self.rows)} rows but {len(self.labels)} labels.")
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(hf_split)):
            raise ValueError(f"{name}: row numbers must be in [0, {len(hf_split)}).")
        self._images = hf_split.select_columns([image_key]).cast_column(image_key, datasets.Image(decode=False))
        self.image_key = image_key
        self.name = name or type(self).__name__
        self.num_classes = int(num_classes if num_classes is not None
                               else (len(class_names) if class_names is not None
                                     else (self.labels.max() + 1 if self.labels.size else 0)))
        self.class_names: List[str] = (list(class_names) if class_names is not None
                                       else [str(c) for c in range(self.num_classes)])
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise ValueError(f"{self.name}: labels must be in [0, {self.num_classes}).")
        self.transform = transform
        self.loader = None
        self.on_decode_error = "substitute"
        self._paths = _RowNames(self.name, self.rows)
        # 1 = failed to decode; in shared memory, so marks made in DataLoader workers reach the main process
        self._failed = torch.zeros(len(self.labels), dtype=torch.uint8).share_memory_()
        self._members: Optional[List[np.ndarray]] = None

    def _describe(self, index: int) -> str:
        return f"row {int(self.rows[index])} of {self.name}"

    def _load(self, index: int) -> Any:
        try:
            return _decode(self._images[int(self.rows[index])][self.image_key])
        except FileNotFoundError as e:  # an image stored as a path whose file is gone: not substituted
            raise FileNotFoundError(f"image {e.filename!r} ({self._describe(index)}) does not exist; the image files "
                                    "moved since the dataset was saved?") from None

    def failed_indices(self) -> List[int]:
        """Indices (into this dataset) whose image failed to decode, in any process, and was substituted."""
        return torch.nonzero(self._failed).flatten().tolist()

    def check_images(self, mode: str = "header", raise_error: bool = True, workers: Optional[int] = None,
                     what: str = "images") -> List[Tuple[str, str]]:
        """Rows whose image PIL cannot open (``'header'``) or decode (``'full'``); ``'none'`` checks nothing.
        Reads every image's bytes once. Returns ``[("<name> row <r>", reason), ...]``; raises with ``raise_error``."""
        if mode not in ("header", "full", "none"):
            raise ValueError(f"check_images must be one of ('header', 'full', 'none'), got {mode!r}.")
        bad: List[Tuple[str, str]] = []
        if mode == "none":
            return bad
        for i in range(len(self)):
            try:
                _decode(self._images[int(self.rows[i])][self.image_key], full=(mode == "full"))
            except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ...
                bad.append((self._paths[i], f"{type(e).__name__}: {e}"))
        if bad and raise_error:
            raise ValueError(bad_images_message(bad, len(self), what, mode))
        return bad

    def subset(self, indices: Any, transform: Transform = None) -> "HFImageDataset":
        """A new dataset with the samples ``indices`` (in that order), same split, label space and name."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return HFImageDataset(self._images, self.image_key, self.labels[idx], self.rows[idx],
                              transform if transform is not None else self.transform, self.class_names,
                              self.num_classes, self.name)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, n={len(self)}, num_classes={self.num_classes}, "
                f"image_key={self.image_key!r}, transform={self.transform!r})")


# ---- sources -----------------------------------------------------------------------------------------------------
def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _offline() -> bool:
    import datasets

    return bool(datasets.config.HF_HUB_OFFLINE)


def _local_copy_hint(repo_id: str) -> str:
    return (f"to use a local copy, save it once where the Hub is reachable (datasets.load_dataset({repo_id!r})"
            f".save_to_disk(DIR)) or download its parquet files into DIR, then pass hfds/DIR")


def _parquet_split_name(rel: Path) -> str:
    """Split name of a parquet file from its path relative to the dataset folder."""
    stem = rel.name[: -len(".parquet")]
    name = re.sub(r"(?:-\d+-of-\d+|[-_.]\d+)$", "", stem)
    if not name or name.isdigit():  # train/0000.parquet, default/train/0000.parquet
        name = rel.parent.name if rel.parent.name and rel.parent.name != "data" else "train"
    return name


def _readme_declares_configs(folder: Path) -> bool:
    readme = folder / "README.md"
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8", errors="replace")
    end = text.find("\n---", 3)
    return text.startswith("---") and end > 0 and re.search(r"^configs:", text[3:end], re.M) is not None


def _as_split_dict(obj: Any, default_split: str = "train") -> Dict[str, Any]:
    import datasets

    if isinstance(obj, datasets.DatasetDict):
        return dict(obj)
    if isinstance(obj, datasets.Dataset):
        return {str(obj.split) if obj.split is not None else default_split: obj}
    raise DatasetSourceError(f"expected a datasets Dataset or DatasetDict, got {type(obj).__name__}.")


def _load_local(root: Path, cache_dir: Optional[str]) -> Tuple[Dict[str, Any], str]:
    import datasets

    if root.is_file():
        if root.suffix != ".parquet":
            raise DatasetSourceError(f"hfds/{root}: a single file must be a .parquet file; for other data pass its "
                                     "folder (save_to_disk output, parquet files or an image folder).")
        split = _parquet_split_name(Path(root.name))
        return dict(datasets.load_dataset("parquet", data_files={split: [str(root)]}, cache_dir=cache_dir)), \
            f"parquet:{root}"
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        return _as_split_dict(datasets.load_from_disk(str(root))), f"saved-dataset:{root}"
    saved = sorted(d for d in root.iterdir() if d.is_dir() and (d / "state.json").is_file())
    if saved:  # a saved Dataset per split: train/, test/, ...
        return {d.name: datasets.load_from_disk(str(d)) for d in saved}, f"saved-dataset:{root}"
    parquet = sorted(root.rglob("*.parquet"))
    if parquet:
        if _readme_declares_configs(root):
            return dict(datasets.load_dataset(str(root), cache_dir=cache_dir)), f"parquet:{root}"
        groups: Dict[str, List[str]] = {}
        for f in parquet:
            groups.setdefault(_parquet_split_name(f.relative_to(root)), []).append(str(f))
        return dict(datasets.load_dataset("parquet", data_files=groups, cache_dir=cache_dir)), f"parquet:{root}"
    if any(f.suffix.lower() in IMAGE_EXTENSIONS for f in root.rglob("*") if f.is_file()):
        return dict(datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=cache_dir)), \
            f"imagefolder:{root}"
    raise DatasetSourceError(
        f"hfds/{root}: the folder holds no dataset; expected a datasets save_to_disk folder (dataset_dict.json or "
        f"state.json), parquet files (train-*.parquet, data/train-00000-of-00001.parquet, ...) or image files in "
        f"[split/]class/ folders.")


def _load_hub(repo_id: str, revision: Optional[str], cache_dir: Optional[str]) -> Tuple[Dict[str, Any], str, Optional[str]]:
    import datasets
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    endpoint = _hub_endpoint()
    at = f"@{revision}" if revision else ""
    sha: Optional[str] = None
    if not _offline():
        try:  # one request, no retries: fails fast where load_dataset would back off for ~25 s
            sha = HfApi().dataset_info(repo_id, revision=revision, timeout=_HUB_TIMEOUT_S).sha
        except HFValidationError:
            raise DatasetSourceError(f"hfds/{repo_id}: {repo_id!r} is neither an existing local path nor a valid Hub "
                                     "dataset id (user/name).") from None
        except RevisionNotFoundError:
            raise DatasetSourceError(f"hfds/{repo_id}{at}: revision {revision!r} of Hub dataset {repo_id!r} not found "
                                     f"at {endpoint}.") from None
        except RepositoryNotFoundError:
            raise DatasetSourceError(
                f"hfds/{repo_id}: Hub dataset {repo_id!r} not found at {endpoint}, and no local path of that name "
                f"exists (check the id; a private or gated dataset needs HF_TOKEN); {_local_copy_hint(repo_id)}."
            ) from None
        except Exception as e:  # noqa: BLE001 - connection refused, DNS, timeout, proxy: whatever the HTTP stack raises
            cached = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / repo_id.replace("/", "___")
            if not cached.is_dir():
                raise DatasetSourceError(
                    f"hfds/{repo_id}: Hub unreachable at {endpoint} ({type(e).__name__}) and {repo_id!r} is not in "
                    f"the datasets cache; check the connection or HF_ENDPOINT, or {_local_copy_hint(repo_id)}."
                ) from None
            logger.warning("Hub unreachable at %s (%s); loading %s from the datasets cache", endpoint,
                           type(e).__name__, repo_id)
    try:
        loaded = datasets.load_dataset(repo_id, revision=sha or revision, cache_dir=cache_dir)
    except DatasetNotFoundError:
        raise DatasetSourceError(f"hfds/{repo_id}: Hub dataset {repo_id!r} not found at {endpoint}; "
                                 f"{_local_copy_hint(repo_id)}.") from None
    except ConnectionError as e:
        if _offline():
            raise DatasetSourceError(
                f"hfds/{repo_id}: {repo_id!r} is not in the datasets cache and offline mode is on (HF_DATASETS_OFFLINE "
                f"or HF_HUB_OFFLINE); unset it to download from {endpoint}, or {_local_copy_hint(repo_id)}.") from None
        raise DatasetSourceError(f"hfds/{repo_id}: Hub unreachable at {endpoint} ({_first_line(e)}); "
                                 f"{_local_copy_hint(repo_id)}.") from None
    except Exception as e:  # noqa: BLE001 - no data files, a script-only repo, a corrupt file, ...
        raise DatasetSourceError(f"hfds/{repo_id}{at}: datasets could not load Hub dataset {repo_id!r} from {endpoint} "
                                 f"({_first_line(e)}).") from None
    return _as_split_dict(loaded), f"hub:{repo_id}{at}", sha


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_hf_splits(name_or_path: str, cache_dir: Optional[PathLike] = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The splits of ``name_or_path`` (local path or Hub id, see the module docstring) as ``{name: datasets.Dataset}``,
    and provenance (``source``, ``format``, and for the Hub ``hub_dataset`` and ``revision``, the commit read)."""
    try:
        import datasets  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("hfds/ datasets need the datasets package: pip install datasets") from e
    cache = str(Path(cache_dir).expanduser()) if cache_dir is not None else None
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    looks_local = text.startswith((".", "/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", text) is not None
    if path.exists():
        try:
            splits, source = _load_local(path, cache)
        except (DatasetSourceError, ImportError):
            raise
        except Exception as e:  # noqa: BLE001 - corrupt parquet/arrow files, bad dataset_info.json, ...
            raise DatasetSourceError(f"hfds/{text}: datasets could not read {str(path)!r} ({_first_line(e)}).") from None
        return splits, {"source": source, "format": source.split(":", 1)[0]}
    if looks_local:
        raise FileNotFoundError(f"hfds/{text}: local path {str(path)!r} does not exist (a Hub id is written user/name, "
                                "without a leading ./ or /).")
    repo_id, _, revision = text.partition("@")
    splits, source, sha = _load_hub(repo_id, revision or None, cache)
    return splits, {"source": source, "format": "hub", "hub_dataset": repo_id, "revision": sha or revision or None}


# ---- columns and labels ------------------------------------------------------------------------------------------
def _feature_text(feature: Any) -> str:
    """``Value('float32')``, ``ClassLabel``, ``Image``, ``List``, ...: a feature's type in one short word."""
    return f"Value({feature.dtype!r})" if type(feature).__name__ == "Value" else type(feature).__name__


def _columns_text(features: Any) -> str:
    return ", ".join(f"{k} ({_feature_text(v)})" for k, v in features.items())


def _pick_columns(title: str, split: str, features: Any, input_key: Optional[str],
                  target_key: Optional[str]) -> Tuple[str, str]:
    import datasets

    def check(key: str, flag: str) -> str:
        if key not in features:
            raise DatasetSourceError(f"{title}: {flag} {key!r} is not a column of split {split!r}; its columns are "
                                     f"{_columns_text(features)}.")
        return key

    if input_key is not None:
        image_key = check(input_key, "--input-key")
        if not isinstance(features[image_key], datasets.Image):
            raise DatasetSourceError(f"{title}: --input-key {image_key!r} is a {_feature_text(features[image_key])} "
                                     f"column, not an image column (datasets.Image); columns: {_columns_text(features)}.")
    else:
        images = [k for k, v in features.items() if isinstance(v, datasets.Image)]
        if len(images) != 1:
            what = "no image column (datasets.Image feature)" if not images else f"several image columns {images}"
            raise DatasetSourceError(f"{title}: split {split!r} has {what}; name the image column with --input-key "
                                     f"(input_key=) and the label column with --target-key (target_key=). Columns: "
                                     f"{_columns_text(features)}.")
        image_key = images[0]
    if target_key is not None:
        label_key = check(target_key, "--target-key")
    else:
        labels = [k for k, v in features.items() if isinstance(v, datasets.ClassLabel)]
        if not labels:
            labels = [k for k in LABEL_COLUMN_NAMES if k in features][:1]
        if len(labels) != 1:
            what = ("no label column (no ClassLabel feature, and none named " + "/".join(LABEL_COLUMN_NAMES) + ")"
                    if not labels else f"several ClassLabel columns {labels}")
            raise DatasetSourceError(f"{title}: split {split!r} has {what}; name it with --target-key (target_key=) "
                                     f"and the image column with --input-key (input_key=). Columns: "
                                     f"{_columns_text(features)}.")
        label_key = labels[0]
    return image_key, label_key


def _label_kind(title: str, split: str, key: str, feature: Any) -> str:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return "class_label"
    dtype = getattr(feature, "dtype", None) if type(feature).__name__ == "Value" else None
    if dtype in _INT_DTYPES:
        return "int"
    if dtype in _STR_DTYPES:
        return "string"
    raise DatasetSourceError(f"{title}: label column {key!r} of split {split!r} is {_feature_text(feature)}; a label "
                             "column must be a ClassLabel, integers or strings (name another one with --target-key).")


def _read_column(ds: Any, key: str) -> List[Any]:
    """One column's values without touching the others (no image is decoded); the dataset's row order."""
    return ds.select_columns([key]).with_format("arrow")[:].column(key).to_pylist()


def _nonempty_labels(title: str, split: str, key: str, values: List[Any], missing: Tuple[Any, ...]) -> None:
    bad = [i for i, v in enumerate(values) if v is None or v in missing]
    if bad:
        raise DatasetSourceError(f"{title}: {len(bad)} row(s) of split {split!r} have no label in column {key!r} "
                                 f"(e.g. row {bad[0]}: {values[bad[0]]!r}); drop or label them first.")


def _label_space(title: str, key: str, splits: Dict[str, Any],
                 roles: Dict[str, str]) -> Tuple[List[str], Dict[str, np.ndarray], str]:
    """Class names, the int labels of every used split (role -> labels), and the label kind of the training split.
    ``splits``: role (``train``/``val``/``test``) -> dataset; ``roles``: role -> split name, for messages."""
    feats = {role: ds.features[key] for role, ds in splits.items()}
    kinds = {role: _label_kind(title, roles[role], key, f) for role, f in feats.items()}
    raw = {role: _read_column(ds, key) for role, ds in splits.items()}
    kind = kinds["train"]
    for role, values in raw.items():
        _nonempty_labels(title, roles[role], key, values, (-1,) if kinds[role] == "class_label" else ())
        if kinds[role] == "int" and values and min(values) < 0:
            raise DatasetSourceError(f"{title}: split {roles[role]!r} has negative label {min(values)} in column {key!r}; "
                                     "integer labels must be 0..C-1.")
    if kind == "class_label":
        names = [str(n) for n in feats["train"].names]
        index = {n: i for i, n in enumerate(names)}
        out: Dict[str, np.ndarray] = {}
        for role, values in raw.items():
            if kinds[role] == "class_label" and [str(n) for n in feats[role].names] != names:
                values = [str(feats[role].names[v]) for v in values]  # its own ClassLabel: map through the names
            if kinds[role] == "string" or (values and isinstance(values[0], str)):
                unknown = sorted({str(v) for v in values} - set(index), key=natural_key)
                if unknown:
                    raise DatasetSourceError(f"{title}: split {roles[role]!r} has class(es) {unknown[:10]} that the training "
                                             f"split's ClassLabel does not name (it names {names[:10]}).")
                values = [index[str(v)] for v in values]
            arr = np.asarray(values, dtype=np.int64)
            if arr.size and arr.max() >= len(names):
                raise DatasetSourceError(f"{title}: split {roles[role]!r} has label {int(arr.max())} in column {key!r}, "
                                         f"outside the {len(names)} classes of the training split's ClassLabel.")
            out[role] = arr
        return names, out, kind
    if any(k != kind for k in kinds.values()):
        raise DatasetSourceError(f"{title}: label column {key!r} holds {kind} labels in split {roles['train']!r} "
                                 f"but {', '.join(f'{k} labels in {roles[r]!r}' for r, k in kinds.items() if k != kind)}; "
                                 "use one label type in every split.")
    # labels the data defines: the training split fixes the classes (as the csv builder does); a class that only
    # validation or test has cannot be learned and is an error
    if kind == "int":
        C = 1 + max(raw["train"], default=-1)
        names = [str(c) for c in range(C)]
        out = {r: np.asarray(v, dtype=np.int64) for r, v in raw.items()}
        for role, arr in out.items():
            if arr.size and arr.max() >= C:
                raise DatasetSourceError(f"{title}: split {roles[role]!r} has label {int(arr.max())} in column {key!r}, "
                                         f"which the training split {roles['train']!r} never uses (its labels go up "
                                         f"to {C - 1}); every class needs training images.")
        return names, out, kind
    names = sorted({str(v) for v in raw["train"]}, key=natural_key)
    index = {n: i for i, n in enumerate(names)}
    out = {}
    for role, values in raw.items():
        unknown = sorted({str(v) for v in values} - set(index), key=natural_key)
        if unknown:
            raise DatasetSourceError(f"{title}: class(es) {unknown[:10]} appear in split {roles[role]!r} but not in the "
                                     f"training split {roles['train']!r}; every class needs training images (the "
                                     f"training split has {len(names)} classes: {names[:10]}).")
        out[role] = np.asarray([index[str(v)] for v in values], dtype=np.int64)
    return names, out, kind


# ---- the builder -------------------------------------------------------------------------------------------------
def _pick_split(title: str, available: Sequence[str], wanted: str, what: str, flag: str) -> str:
    if wanted in available:
        return wanted
    raise DatasetSourceError(f"{title}: no {what} split {wanted!r}; the dataset has split(s) {list(available)} "
                             f"(choose one with {flag}).")


def _check_empty_classes(title: str, names: List[str], counts: np.ndarray, elsewhere: Dict[str, np.ndarray],
                         prior_smoothing: float, after: str) -> None:
    empty = np.flatnonzero(counts == 0).tolist()
    if not empty or prior_smoothing > 0:
        return
    parts = []
    for c in empty[:10]:
        where = [split for split, y in elsewhere.items() if np.any(y == c)]
        parts.append(f"{names[c]!r} (only in {' and '.join(where)})" if where else repr(names[c]))
    more = f" and {len(empty) - 10} more" if len(empty) > 10 else ""
    raise DatasetSourceError(
        f"{title}: {len(empty)} class(es) have no training images{after}: {', '.join(parts)}{more}. Their log-prior "
        f"would be -inf; add or relabel images, or pass prior_smoothing > 0 (--prior-smoothing, e.g. 1) to train "
        f"with classes that have no training images.")


@register_dataset("hfds", label="Hugging Face dataset",
                  meta={"name_arg": "name_or_path", "name_form": "<id or path>",
                        "note": "a user's own dataset read through Hugging Face datasets; its class counts are natural "
                                "unless an imb_factor was given."})
def build_hfds(
    name_or_path: Optional[str] = None,
    data_dir: Optional[PathLike] = None,
    imb_factor: Optional[float] = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    train_split: str = "train",
    val_split: Optional[str] = "validation",
    test_split: Optional[str] = None,
    prior_smoothing: float = 0.0,
    input_key: Optional[str] = None,
    target_key: Optional[str] = None,
    test_imb_factor: Optional[float] = None,
    train_transform: Transform = None,
    test_transform: Transform = None,
    check_images: str = "none",
    n_max: Optional[int] = None,
    img_size: int = 224,
) -> LTDataset:
    """A Hugging Face dataset (Hub id or local path, see the module docstring) as an :class:`LTDataset`.

    The steps after reading the labels are the own-data builders' (:mod:`lt_registry.data.own`): validation split or
    stratified hold-out, then the optional ``imb_factor`` subsample, then the empty-class check.

    Args:
        name_or_path: what follows ``hfds/`` in the dataset name (``build_dataset("hfds/user/set")`` passes it).
        data_dir: the ``datasets`` cache folder (default ``HF_DATASETS_CACHE``); local sources are read in place
            (parquet and image folders are converted into that cache by ``datasets``).
        imb_factor: ``None`` (default) keeps the data's own counts; rho >= 1 subsamples the training images to the
            docs/method.md §4 profile over the classes ranked by size, ``n_max`` = the largest class unless given
            (:func:`~lt_registry.data.own.long_tail_subsample`, the ``folder`` builder's rule).
        seed: seed of the validation hold-out and of the ``imb_factor`` subsample.
        val_fraction: share of each class held out for validation when there is no validation split (0: none).
        train_split / val_split / test_split: split names. ``val_split`` ``validation`` (default), ``val`` or
            ``valid`` finds whichever of them the data has, else the hold-out; another name must exist; ``None``
            always holds out. ``test_split=None``: ``test`` when present; a given name must exist.
        prior_smoothing: ``> 0`` allows classes with no training images (the run's ClassPrior smoothing).
        input_key / target_key: image and label columns (timm's ``--input-key`` / ``--target-key``; default: the
            ``datasets.Image`` and ``ClassLabel`` columns).
        test_imb_factor: rho' of an imbalanced subset of a balanced test split (docs/method.md §2).
        train_transform / test_transform: callables on PIL RGB images; default timm's
            ``create_transform(img_size, is_training=True / False)`` (the recipe replaces them with the model's).
        check_images: ``'none'`` (default: reading every image's bytes is a full pass over the data; an image
            that fails to decode while training is substituted anyway), ``'header'`` or ``'full'``
            (:meth:`HFImageDataset.check_images`; a failure stops the build with one error).
        n_max: with ``imb_factor``, the largest class of the subsample.

    ``meta``: ``source`` (``hub:ID[@rev]``, ``saved-dataset:PATH``, ``parquet:PATH``, ``imagefolder:PATH``),
    ``format``, ``hub_dataset`` and ``revision`` (the commit read; Hub only), ``splits`` (``train``/``val``/``test``
    -> split name, ``None`` where absent), ``input_key``, ``target_key``, ``label_type`` (``class_label``, ``int``,
    ``string``), ``val`` (``{"source": "split", "split": name}``, ``{"source": "holdout", "fraction": f, "seed": s,
    "indices": [...]}`` with row numbers of the training split, or ``{"source": "none"}``),
    ``counts_before_holdout``; with ``imb_factor`` ``counts_before_imb_factor``, ``imb_factor_rule`` (``n_max``,
    ``class_order``, ``seed``) and ``train_indices`` (training-split rows kept); ``prior_smoothing``,
    ``train_imb_factor`` (max / min of the training counts), ``image_check``, ``val_counts``, ``test_counts``, and
    ``test_imb_factor``, ``test_indices``, ``test_prior`` with ``test_imb_factor``.
    """
    if name_or_path is None or not str(name_or_path).strip():
        raise ValueError("the hfds dataset needs a Hub id or a local path: --dataset hfds/<id or path>.")
    check_own_options(val_fraction, seed, imb_factor, n_max, prior_smoothing, check_images)
    title = f"hfds/{name_or_path}"
    splits, meta = load_hf_splits(str(name_or_path), data_dir)
    available = list(splits)
    roles = {"train": _pick_split(title, available, train_split, "training", "--train-split")}
    if val_split is not None:
        found = [s for s in (VAL_SPLIT_NAMES if val_split in VAL_SPLIT_NAMES else (val_split,)) if s in available]
        if found:
            roles["val"] = found[0]
        elif val_split not in VAL_SPLIT_NAMES:
            _pick_split(title, available, val_split, "validation", "--val-split")
    if test_split is not None:
        roles["test"] = _pick_split(title, available, test_split, "test", "--test-split")
    elif "test" in available:
        roles["test"] = "test"
    if len(set(roles.values())) < len(roles):
        raise DatasetSourceError(f"{title}: one split serves two roles ({roles}); train, validation and test must "
                                 "be different splits.")
    used = {role: splits[name] for role, name in roles.items()}
    image_key, label_key = _pick_columns(title, roles["train"], used["train"].features, input_key, target_key)
    for role, ds in used.items():
        missing = [k for k in (image_key, label_key) if k not in ds.features]
        if missing:
            raise DatasetSourceError(f"{title}: split {roles[role]!r} lacks column(s) {missing}; its columns are "
                                     f"{_columns_text(ds.features)}.")
    names, labels, kind = _label_space(title, label_key, used, roles)
    C = len(names)
    y_all = labels["train"]
    if len(y_all) == 0:
        raise DatasetSourceError(f"{title}: the training split {roles['train']!r} has no rows.")
    meta["counts_before_holdout"] = np.bincount(y_all, minlength=C).tolist()

    # 1. validation: the data's own split, else a stratified hold-out of the training split
    train_rows = np.arange(len(y_all), dtype=np.int64)
    val_rows: Optional[np.ndarray] = None
    if "val" in roles:
        meta["val"] = {"source": "split", "split": roles["val"]}
    elif val_fraction > 0:
        train_rows, val_rows = stratified_holdout(y_all, float(val_fraction), int(seed))
        meta["val"] = {"source": "holdout", "fraction": float(val_fraction), "seed": int(seed),
                       "indices": val_rows.tolist()}
    else:
        meta["val"] = {"source": "none"}
    after = " after the validation hold-out" if val_rows is not None else ""
    # 2. imb_factor
    if imb_factor is not None:
        before = y_all[train_rows]
        try:
            sel, info = long_tail_subsample(before, C, float(imb_factor), n_max, int(seed), names)
        except ValueError as e:
            raise DatasetSourceError(f"{title}: {e}") from None
        train_rows = train_rows[sel]
        meta["counts_before_imb_factor"] = np.bincount(before, minlength=C).tolist()
        meta["imb_factor_rule"] = {"n_max": info["n_max"], "class_order": info["class_order"], "seed": int(seed)}
        meta["train_indices"] = train_rows.tolist()
        after = (after + " and" if after else " after") + f" the imb_factor={float(imb_factor):g} subsample"
    # 3. empty classes
    counts = np.bincount(y_all[train_rows], minlength=C)
    elsewhere = {roles[r]: y for r, y in labels.items() if r != "train"}
    _check_empty_classes(title, names, counts, elsewhere, float(prior_smoothing), after)
    meta["prior_smoothing"] = float(prior_smoothing)
    nonzero = counts[counts > 0]
    meta["train_imb_factor"] = float(nonzero.max() / nonzero.min()) if nonzero.size else None

    # 4. the datasets
    if train_transform is None or test_transform is None:
        from timm.data import create_transform

        if train_transform is None:
            train_transform = create_transform(img_size, is_training=True)
        if test_transform is None:
            test_transform = create_transform(img_size, is_training=False)

    def make(role: str, rows: Optional[np.ndarray], y: np.ndarray, tf: Transform, label: str) -> HFImageDataset:
        return HFImageDataset(used[role], image_key, y, rows, tf, names, C, f"{title}[{label}]")

    train = make("train", train_rows, y_all[train_rows], train_transform, roles["train"])
    val = None
    if "val" in roles:
        val = make("val", None, labels["val"], test_transform, roles["val"])
    elif val_rows is not None:
        val = make("train", val_rows, y_all[val_rows], test_transform, f"{roles['train']} held out")
    test = None
    if "test" in roles:
        y_te, rows_te = labels["test"], None
        if test_imb_factor is not None:
            sel_te = imbalanced_test_indices(y_te, C, float(test_imb_factor), seed=int(seed))
            y_te, rows_te = y_te[sel_te.indices], sel_te.indices
            meta.update(test_imb_factor=float(test_imb_factor), test_indices=sel_te.indices.tolist(),
                        test_prior=sel_te.prior.tolist())
        test = make("test", rows_te, y_te, test_transform, roles["test"])
    elif test_imb_factor is not None:
        raise DatasetSourceError(f"{title}: test_imb_factor needs a test split; the dataset has {available}.")
    meta["image_check"] = check_images
    if check_images != "none":
        bad: List[Tuple[str, str]] = []
        for d in (train, val, test):
            if d is not None:
                bad += d.check_images(check_images, raise_error=False)
        if bad:
            total = sum(len(d) for d in (train, val, test) if d is not None)
            raise DatasetSourceError(f"{title}: " + bad_images_message(bad, total, "images", check_images))
    meta.update(splits={r: roles.get(r) for r in ("train", "val", "test")}, input_key=image_key,
                target_key=label_key, label_type=kind,
                val_counts=val.class_counts if val is not None else None,
                test_counts=test.class_counts if test is not None else None)
    return LTDataset(train, test, counts.tolist(), C, names, title,
                     None if imb_factor is None else float(imb_factor), meta, val)
