"""CIFAR-10-LT / CIFAR-100-LT (docs/method.md §4): the standard long-tailed selection and readers for CIFAR in any form.

Selection (:func:`cifar_lt_indices`), bit-exact with the field's shared code (LDAM-DRW, MiSLAS, the released
UniMix code): ``n_c = int(n_max * (1/rho)^(c/(C-1)))`` (:func:`lt_registry.prior.long_tail_counts`); numpy's
RNG seeded with 0 once; for c = 0..C-1 the indices of class c in the official order are shuffled and the
first ``n_c`` kept. The reference seeds numpy's *global* RNG (``np.random.seed(0)``) and calls
``np.random.shuffle``; the global RNG is a ``RandomState``, so a private ``np.random.RandomState(0)`` draws the
identical sequence without touching global state.

Readers (:func:`load_cifar`), picked by what ``data_dir`` holds:

* ``None``: the Hugging Face Hub through ``datasets.load_dataset("uoft-cs/cifar10")`` (columns
  ``img``/``label``; CIFAR-100: ``uoft-cs/cifar100``, ``img``/``fine_label``);
* the original python folders ``cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``,
  ``batches.meta``) / ``cifar-100-python`` (``train``, ``test``, ``meta``), ``data_dir`` itself or a child;
* ``{split}.npz`` with arrays ``images`` [N, 32, 32, 3] uint8 and ``labels`` (optional ``class_names``);
* an image folder ``{split}/<class_name>/*.png`` (torchvision ImageFolder layout);
* a ``datasets`` ``save_to_disk`` folder (a DatasetDict, or ``{split}/`` holding a saved Dataset).

The python pickles are the format CIFAR is distributed in; they are read with an unpickler that only
rebuilds numpy arrays, and only from local files (nothing is downloaded and unpickled).
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ..prior import long_tail_counts
from .arrays import ImageArrays, check_image_arrays

__all__ = [
    "cifar_lt_indices", "load_cifar", "CIFAR_SPECS", "IMAGE_EXTENSIONS", "read_image_folder",
    "labels_to_numpy",
]

PathLike = Union[str, os.PathLike]

#: Per dataset: classes, Hub id and columns, python-folder layout.
CIFAR_SPECS: Dict[str, Dict[str, Any]] = {
    "cifar10": dict(
        num_classes=10, hub_id="uoft-cs/cifar10", image_column="img", label_column="label",
        folder="cifar-10-batches-py", train_files=[f"data_batch_{i}" for i in range(1, 6)],
        test_files=["test_batch"], meta_file="batches.meta", label_key=b"labels", names_key=b"label_names",
    ),
    "cifar100": dict(
        num_classes=100, hub_id="uoft-cs/cifar100", image_column="img", label_column="fine_label",
        folder="cifar-100-python", train_files=["train"], test_files=["test"], meta_file="meta",
        label_key=b"fine_labels", names_key=b"fine_label_names",
    ),
}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
_SPLITS = ("train", "test")


# ---- the long-tailed selection (docs/method.md §4) ----------------------------------------------------------------
def labels_to_numpy(labels: Any, num_classes: Optional[int] = None, what: str = "labels") -> np.ndarray:
    """Integer labels (list, numpy, torch) -> int64 numpy [N], checked against ``[0, num_classes)``."""
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {y.shape}.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what} must be integers, got dtype {y.dtype}.")
    y = y.astype(np.int64, copy=False)
    if y.size and y.min() < 0:
        raise ValueError(f"{what} must be >= 0, found {int(y.min())}.")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise ValueError(f"{what}: label {int(y.max())} is out of range for num_classes={num_classes}.")
    return y


def cifar_lt_indices(
    labels: Any,
    num_classes: int,
    imb_factor: float,
    n_max: Optional[int] = None,
    seed: int = 0,
) -> Tuple[np.ndarray, List[int]]:
    """Indices of the long-tailed subset of docs/method.md §4 and its per-class counts.

    Args:
        labels: labels of the balanced set, in its official order (int [N]).
        num_classes: C.
        imb_factor: rho = n_max / n_min; ``rho < 1`` gives the reversed tail, ``1`` a balanced subset.
        n_max: images of the largest class; default the smallest class size in ``labels`` (5000 for the
            CIFAR-10 train set, 500 for CIFAR-100), which equals the reference's ``len(data) / C`` on a
            balanced set.
        seed: seed of the one ``RandomState`` all shuffles draw from (0 in docs/method.md §4).

    Returns:
        ``(indices, counts)``: int64 indices into ``labels``, class by class (class 0 first) in shuffled
        order, exactly the reference's order; ``counts`` = ``long_tail_counts(n_max, C, rho)``.

    >>> idx, counts = cifar_lt_indices([0] * 5 + [1] * 5, 2, 5)
    >>> counts
    [5, 1]
    """
    y = labels_to_numpy(labels, num_classes)
    available = np.bincount(y, minlength=num_classes)
    if n_max is None:
        n_max = int(available.min())
        if n_max == 0:
            empty = np.flatnonzero(available == 0).tolist()
            raise ValueError(f"classes {empty[:10]} have no images; cannot build a long-tailed subset.")
    counts = long_tail_counts(n_max, num_classes, imb_factor)
    short = [c for c in range(num_classes) if counts[c] > available[c]]
    if short:
        c = short[0]
        raise ValueError(f"class {c} has {int(available[c])} images but the profile asks for {counts[c]} "
                         f"(n_max={n_max}, imb_factor={imb_factor}); lower n_max.")
    rng = np.random.RandomState(seed)
    chosen = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)  # official order, as np.where(targets == c)[0]
        rng.shuffle(idx)
        chosen.append(idx[: counts[c]])
    return np.concatenate(chosen).astype(np.int64, copy=False), counts


# ---- readers ----------------------------------------------------------------------------------------------
class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Rebuilds the dicts of numpy arrays, lists and bytes CIFAR's pickles hold, and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR batch files hold only numpy arrays; refusing {module}.{name}.")
        return super().find_class(module, name)


def _load_batch(path: Path) -> Dict[bytes, Any]:
    with open(path, "rb") as f:
        try:
            d = _ArrayOnlyUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise ValueError(f"{path} is not a readable CIFAR python batch: {e}") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a CIFAR python batch (expected a dict, got {type(d).__name__}).")
    return d


def _find_python_folder(data_dir: Path, spec: Dict[str, Any]) -> Optional[Path]:
    for cand in (data_dir, data_dir / spec["folder"]):
        if all((cand / f).is_file() for f in spec["train_files"] + spec["test_files"]):
            return cand
    return None


def _read_python_folder(folder: Path, spec: Dict[str, Any], split: str) -> ImageArrays:
    images, labels = [], []
    for fname in spec[f"{split}_files"]:
        d = _load_batch(folder / fname)
        if b"data" not in d or spec["label_key"] not in d:
            raise ValueError(f"{folder / fname} lacks the keys b'data' and {spec['label_key']!r}.")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{folder / fname}: b'data' must be [N, 3072] (32x32 RGB, channel planes), got {data.shape}.")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(d[spec["label_key"]], dtype=np.int64))
    names = [str(c) for c in range(spec["num_classes"])]
    meta = folder / spec["meta_file"]
    if meta.is_file():
        raw = _load_batch(meta).get(spec["names_key"])
        if raw is not None:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    return ImageArrays(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), names,
                       f"python:{folder}")


def _read_npz(path: Path, spec: Dict[str, Any]) -> ImageArrays:
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("images", "labels") if k not in z.files]
        if missing:
            raise ValueError(f"{path} lacks array(s) {missing}; it holds {z.files}. Expected 'images' "
                             "[N, 32, 32, 3] uint8 and 'labels' [N].")
        images, labels = z["images"], z["labels"]
        names = [str(n) for n in z["class_names"]] if "class_names" in z.files else None
    if names is None:
        names = [str(c) for c in range(spec["num_classes"])]
    return ImageArrays(images, labels, names, f"npz:{path}")


def _natural_key(s: str) -> Tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


def read_image_folder(root: PathLike, size: Optional[Tuple[int, int]] = None) -> ImageArrays:
    """Read ``root/<class_name>/<image>`` into uint8 arrays (RGB), torchvision ImageFolder layout.

    Classes are the sub-folders in sorted order (numerically when all names are integers); images within
    a class in natural order (``2.png`` before ``10.png``). ``size`` = (H, W) every image must have.
    """
    from PIL import Image

    root = Path(root)
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.name)
    if not class_dirs:
        raise FileNotFoundError(f"{root} has no class sub-folders (expected {root}/<class_name>/*.png).")
    if all(d.name.isdigit() for d in class_dirs):
        class_dirs.sort(key=lambda d: int(d.name))
    images, labels = [], []
    for label, d in enumerate(class_dirs):
        files = sorted((f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS), key=lambda f: _natural_key(f.name))
        for f in files:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB"))
            if size is not None and arr.shape[:2] != tuple(size):
                raise ValueError(f"{f}: expected a {size[0]}x{size[1]} image, got {arr.shape[0]}x{arr.shape[1]}.")
            images.append(arr)
            labels.append(label)
    if not images:
        raise FileNotFoundError(f"{root}: class folders hold no images with extensions {IMAGE_EXTENSIONS}.")
    if len({a.shape for a in images}) > 1:
        raise ValueError(f"{root}: images differ in size; pass size=(H, W) to locate the odd one.")
    return ImageArrays(np.stack(images), np.asarray(labels, dtype=np.int64), [d.name for d in class_dirs],
                       f"folder:{root}")


def _hf_to_arrays(ds: Any, spec: Dict[str, Any], source: str) -> ImageArrays:
    img_col, lab_col = spec["image_column"], spec["label_column"]
    missing = [c for c in (img_col, lab_col) if c not in ds.column_names]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; columns are {ds.column_names}.")
    feature = ds.features[lab_col]
    names = list(feature.names) if hasattr(feature, "names") else [str(c) for c in range(spec["num_classes"])]
    cols = ds.select_columns([img_col, lab_col]).with_format("numpy")[:]
    images = cols[img_col]
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3):
        # mixed modes or sizes: decode one by one through PIL
        images = np.stack([np.asarray(im.convert("RGB")) for im in ds[img_col]])
    return ImageArrays(images, np.asarray(cols[lab_col], dtype=np.int64), names, source)


def _find_saved_dataset(data_dir: Path, split: str) -> Optional[Any]:
    if (data_dir / "dataset_dict.json").is_file() or (data_dir / split / "state.json").is_file():
        import datasets

        if (data_dir / "dataset_dict.json").is_file():
            dd = datasets.load_from_disk(str(data_dir))
            if split not in dd:
                raise ValueError(f"{data_dir} (a saved DatasetDict) has no split {split!r}; it has {list(dd)}.")
            return dd[split]
        return datasets.load_from_disk(str(data_dir / split))
    return None


def _canonical_cifar(name: str) -> str:
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key.endswith("lt"):
        key = key[:-2]
    if key not in CIFAR_SPECS:
        raise ValueError(f"unknown CIFAR variant {name!r}; expected one of {sorted(CIFAR_SPECS)}.")
    return key


def load_cifar(
    name: str,
    data_dir: Optional[PathLike] = None,
    split: str = "train",
    hub_id: Optional[str] = None,
) -> ImageArrays:
    """Load one CIFAR split as uint8 images [N, 32, 32, 3] and int64 labels (docs/method.md §4).

    Args:
        name: ``'cifar10'`` or ``'cifar100'`` (``'cifar-10'``, ``'cifar10_lt'`` are accepted too).
        data_dir: a local folder in any of the layouts of the module docstring; ``None`` reads the Hub.
        split: ``'train'`` or ``'test'``.
        hub_id: Hub dataset id for ``data_dir=None`` (default ``uoft-cs/cifar10`` / ``uoft-cs/cifar100``).

    Returns:
        :class:`ImageArrays` ``(images, labels, class_names, source)``; the train split in the official order
        for the python, npz (if written in that order) and Hub formats.

    Raises:
        FileNotFoundError: ``data_dir`` is missing or holds none of the layouts (the message lists them).
        ValueError: a file is malformed (wrong keys, shapes, labels out of range), or bad ``name``/``split``.
    """
    key = _canonical_cifar(name)
    spec = CIFAR_SPECS[key]
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}.")
    C = spec["num_classes"]
    if data_dir is None:
        import datasets

        repo = hub_id or spec["hub_id"]
        arrays = _hf_to_arrays(datasets.load_dataset(repo, split=split), spec, f"hub:{repo}[{split}]")
    else:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{key} data_dir {str(root)!r} does not exist or is not a folder.")
        folder = _find_python_folder(root, spec)
        saved = None if folder is not None else _find_saved_dataset(root, split)
        if folder is not None:
            arrays = _read_python_folder(folder, spec, split)
        elif saved is not None:
            arrays = _hf_to_arrays(saved, spec, f"saved-dataset:{root}[{split}]")
        elif (root / f"{split}.npz").is_file():
            arrays = _read_npz(root / f"{split}.npz", spec)
        elif (root / split).is_dir():
            arrays = read_image_folder(root / split, size=(32, 32))
        else:
            files = spec["train_files"] + spec["test_files"]
            raise FileNotFoundError(
                f"no {key} {split} split found in {str(root)!r}. Looked for: the python folder "
                f"{spec['folder']}/ ({', '.join(files)}) in it or as it; {split}.npz (arrays 'images', 'labels'); "
                f"an image folder {split}/<class_name>/*.png; a datasets save_to_disk folder "
                f"(dataset_dict.json, or {split}/state.json). Pass data_dir=None to read {spec['hub_id']} from the Hub."
            )
    images, labels = check_image_arrays(arrays.images, arrays.labels, C, size=(32, 32), what=arrays.source)
    names = arrays.class_names
    if len(names) != C:
        raise ValueError(f"{arrays.source}: found {len(names)} classes ({names[:5]}...), but {key} has {C}.")
    return ImageArrays(images, labels, list(names), arrays.source)
