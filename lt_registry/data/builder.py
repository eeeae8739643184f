"""``build_dataset(name, ...)``: the dataset registry (docs/method.md §4).

Registered names: ``cifar10_lt``, ``cifar100_lt`` (docs/method.md §4 selection from any CIFAR source), ``digits_lt``
(embedded, no download), ``imagenet_lt``, ``inat2018``, ``places_lt`` (list files), and ``hfds/<id or path>`` (any
Hugging Face dataset, :mod:`lt_registry.data.hfds`). Each builder returns an :class:`LTDataset`; a new dataset is
one function with ``@register_dataset("name")``. A builder registered with ``meta={"name_arg": ...}`` is a prefix
(:class:`DatasetRegistry`): ``hfds/user/set`` builds ``hfds`` with ``name_or_path="user/set"``.

    >>> ds = build_dataset("digits_lt", imb_factor=10)
    >>> ds.num_classes, ds.class_counts[0], ds.class_counts[-1]
    (10, 124, 12)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from torch.utils.data import Dataset

from .._registry import Registry, RegistryEntry
from .arrays import ImageArrays, TensorImageDataset
from .cifar_lt import CIFAR_SPECS, cifar_lt_indices, load_cifar
from .embedded import load_digits_arrays
from .holdout import left_out_validation
from .imbalanced_test import imbalanced_test_indices
from .lists import LIST_SETS, ListFileDataset, find_list_file
from .transforms import CifarTestTransform, CifarTrainTransform

__all__ = [
    "DATASETS", "LTDataset", "build_dataset", "register_dataset", "list_datasets", "is_dataset",
    "DEFAULT_IMB_FACTOR", "DatasetRegistry",
]

PathLike = Union[str, os.PathLike]
Transform = Optional[Callable[[Any], Any]]

class DatasetRegistry(Registry):
    """The dataset registry, which also takes names of the form ``prefix/rest`` (timm's ``hfds/<id>``).

    An entry registered with ``meta={"name_arg": "name_or_path", "name_form": "<id or path>"}`` is a prefix: the
    name ``prefix/<rest>`` builds it with ``rest`` (verbatim: case and dashes kept) as the keyword ``name_arg``.
    :meth:`list` shows such an entry as ``prefix/<name_form>``, so an unknown-name error names the form too.
    """

    def split_name(self, name: Any) -> Tuple[Any, Optional[str]]:
        """``(entry key, rest)`` for a ``prefix/rest`` name of a prefix entry; ``(name, None)`` for anything else."""
        if isinstance(name, str):
            head, sep, rest = name.partition("/")
            if sep and super().__contains__(head):
                key = super()._resolve(head)
                if self._entries[key].meta.get("name_arg"):
                    if not rest.strip():
                        form = self._entries[key].meta.get("name_form", "<name>")
                        raise ValueError(f"dataset name {name!r} ends at the slash; expected {key}/{form}.")
                    return key, rest
        return name, None

    def _resolve(self, name: str) -> str:
        key, rest = self.split_name(name)
        return key if rest is not None else super()._resolve(name)

    def get(self, name: str) -> RegistryEntry:
        """The entry for ``name``; for ``prefix/rest`` the prefix's entry named and labelled ``prefix/rest``."""
        key, rest = self.split_name(name)
        if rest is None:
            return super().get(name)
        return replace(self._entries[key], name=f"{key}/{rest}", label=f"{key}/{rest}")

    def canonical(self, name: str) -> str:
        key, rest = self.split_name(name)
        return f"{key}/{rest}" if rest is not None else super().canonical(name)

    def label(self, name: str) -> str:
        key, rest = self.split_name(name)
        return f"{key}/{rest}" if rest is not None else super().label(name)

    def create(self, name: Any, *args: Any, **kwargs: Any) -> Any:
        key, rest = self.split_name(name)
        if rest is None:
            return super().create(name, *args, **kwargs)
        entry = self._entries[key]
        arg = entry.meta["name_arg"]
        if kwargs.get(arg) is not None:
            raise ValueError(f"dataset {name!r} already names its {arg} after the slash; do not pass {arg}= too.")
        return entry.factory(*args, **{**entry.defaults, **kwargs, arg: rest})

    def list(self, filter: str = "", include_aliases: bool = False) -> List[str]:
        names = super().list(filter, include_aliases)
        return [f"{n}/{self._entries[n].meta.get('name_form', '<name>')}"
                if n in self._entries and self._entries[n].meta.get("name_arg") else n for n in names]

    def __contains__(self, name: object) -> bool:
        try:
            return self.split_name(name)[1] is not None or super().__contains__(name)
        except ValueError:
            return False


DATASETS = DatasetRegistry("dataset")
register_dataset = DATASETS.register

#: rho used by the CIFAR-style builders when none is given (the paper's headline setting).
DEFAULT_IMB_FACTOR = 100.0
#: validation images per class the CIFAR-style builders draw from the left-out training images (docs/method.md §4.3).
DEFAULT_VAL_PER_CLASS = {"cifar10_lt": 100, "cifar100_lt": 10, "digits_lt": 10}


@dataclass
class LTDataset:
    """A built long-tailed benchmark.

    Attributes:
        train / test: ``torch.utils.data.Dataset`` s yielding ``(image, label)``; ``test`` is ``None`` for an
            own dataset without a test split.
        val: the validation split (docs/method.md §4.3) or ``None``: monitoring, ``--eval-metric`` selection and
            post-hoc calibration read it, never ``test``.
        class_counts: training images per class (the input of :class:`~lt_registry.ClassPrior`).
        num_classes / class_names: the label space.
        name: registry name; imb_factor: rho of the training set (``None`` for list-file sets, whose
            tail is fixed by the list).
        meta: provenance for run records: source, ``n_max``, ``seed``, ``train_indices`` (into the
            balanced train split), test counts and ``test_prior`` when ``test_imb_factor`` was given.
    """

    train: Dataset
    test: Optional[Dataset]
    class_counts: List[int]
    num_classes: int
    class_names: List[str]
    name: str = ""
    imb_factor: Optional[float] = None
    meta: Dict[str, Any] = field(default_factory=dict)
    val: Optional[Dataset] = None

    def splits(self) -> Dict[str, Dataset]:
        """The splits that exist, by name: ``train``, then ``val`` and ``test`` where present."""
        return {k: v for k, v in (("train", self.train), ("val", self.val), ("test", self.test)) if v is not None}

    def set_transforms(self, train: Transform = None, eval: Transform = None) -> None:
        """Replace the per-sample transforms: ``train`` on the training split, ``eval`` on validation and test
        (the recipe builds them with timm's data config once the model exists)."""
        if train is not None:
            self.train.transform = train
        if eval is not None:
            for d in (self.val, self.test):
                if d is not None:
                    d.transform = eval


def list_datasets(filter: str = "") -> List[str]:
    """Registered dataset names, optionally fnmatch-filtered (``'cifar*'``)."""
    return DATASETS.list(filter)


def is_dataset(name: str) -> bool:
    return name in DATASETS


def build_dataset(name: str, data_dir: Optional[PathLike] = None, **kwargs: Any) -> LTDataset:
    """Build a registered long-tailed dataset; an unknown name raises a ValueError listing the names.

    Common keyword arguments (each builder documents its own):
        imb_factor: training rho (CIFAR-style sets; default 100).
        split: evaluation split, ``'test'`` (default) or ``'val'`` where the set has one.
        test_imb_factor: build an imbalanced test set (docs/method.md §2) with this rho' instead of the balanced one.
        train_transform / test_transform: override the defaults.
        seed: seed of the long-tailed selection (0 in docs/method.md §4).
    """
    return DATASETS.create(name, data_dir=data_dir, **kwargs)


# ---- CIFAR-style builders (in-memory arrays) ------------------------------------------------------------
def _from_arrays(
    name: str,
    train: ImageArrays,
    test: ImageArrays,
    num_classes: int,
    imb_factor: Optional[float],
    n_max: Optional[int],
    seed: int,
    test_imb_factor: Optional[float],
    train_transform: Transform,
    test_transform: Transform,
    val_per_class: Optional[int] = None,
) -> LTDataset:
    rho = DEFAULT_IMB_FACTOR if imb_factor is None else float(imb_factor)
    idx, counts = cifar_lt_indices(train.labels, num_classes, rho, n_max=n_max, seed=seed)
    names = list(train.class_names)
    tr = TensorImageDataset(train.images[idx], train.labels[idx],
                            train_transform if train_transform is not None else CifarTrainTransform(),
                            names, num_classes)
    te_tf = test_transform if test_transform is not None else CifarTestTransform()
    meta: Dict[str, Any] = dict(source_train=train.source, source_test=test.source, seed=seed,
                                n_max=max(counts), train_indices=idx)
    if test_imb_factor is None:
        te = TensorImageDataset(test.images, test.labels, te_tf, names, num_classes)
    else:
        sel = imbalanced_test_indices(test.labels, num_classes, float(test_imb_factor), seed=seed)
        te = TensorImageDataset(test.images[sel.indices], test.labels[sel.indices], te_tf, names, num_classes)
        meta.update(test_imb_factor=float(test_imb_factor), test_indices=sel.indices,
                    test_prior=sel.prior.tolist())
    meta["test_counts"] = te.class_counts
    # validation (docs/method.md §4.3): balanced, from the images the selection left out; training set unchanged
    k = DEFAULT_VAL_PER_CLASS.get(name, 0) if val_per_class is None else val_per_class
    va = None
    if k == 0:
        meta["val"] = {"source": "none"}
    else:
        v_idx, overlap = left_out_validation(train.labels, idx, k, num_classes, seed)
        va = TensorImageDataset(train.images[v_idx], train.labels[v_idx], te_tf, names, num_classes)
        meta.update(val={"source": "left-out", "per_class": int(k), "overlap_with_train": overlap},
                    val_indices=v_idx, val_counts=va.class_counts)
    return LTDataset(tr, te, list(counts), num_classes, names, name, rho, meta, va)


def _check_split(split: str, allowed: tuple) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}.")


def _cifar_builder(key: str, C: int, registry_name: str) -> Callable[..., LTDataset]:
    def build(
        data_dir: Optional[PathLike] = None,
        imb_factor: Optional[float] = None,
        split: str = "test",
        n_max: Optional[int] = None,
        seed: int = 0,
        test_imb_factor: Optional[float] = None,
        train_transform: Transform = None,
        test_transform: Transform = None,
        hub_id: Optional[str] = None,
        val_per_class: Optional[int] = None,
    ) -> LTDataset:
        _check_split(split, ("test",))
        train = load_cifar(key, data_dir, "train", hub_id=hub_id)
        test = load_cifar(key, data_dir, "test", hub_id=hub_id)
        return _from_arrays(registry_name, train, test, C, imb_factor, n_max, seed, test_imb_factor,
                            train_transform, test_transform, val_per_class)

    build.__name__ = f"build_{registry_name}"
    build.__doc__ = (f"CIFAR-{C}-LT (docs/method.md §4): {key} from ``data_dir`` (or the Hub), long-tailed at ``imb_factor`` "
                     f"(default {DEFAULT_IMB_FACTOR:g}), balanced test set unless ``test_imb_factor``; validation: "
                     f"``val_per_class`` (default {DEFAULT_VAL_PER_CLASS[registry_name]}, 0: none) images per class "
                     f"from the training images the selection left out (docs/method.md §4.3).")
    return build


_CIFAR_NOTE = "32x32 natural images of {} classes; not suitable for other resolutions or label sets."
register_dataset("cifar10_lt", aliases=("cifar10",), label="CIFAR-10-LT",
                 meta={"hub_dataset": CIFAR_SPECS["cifar10"]["hub_id"], "note": _CIFAR_NOTE.format(10)})(
    _cifar_builder("cifar10", 10, "cifar10_lt"))
register_dataset("cifar100_lt", aliases=("cifar100",), label="CIFAR-100-LT",
                 meta={"hub_dataset": CIFAR_SPECS["cifar100"]["hub_id"], "note": _CIFAR_NOTE.format(100)})(
    _cifar_builder("cifar100", 100, "cifar100_lt"))


@register_dataset("digits_lt", aliases=("digits",), label="Digits-LT (embedded)",
                  meta={"note": "this is the embedded demo set (scikit-learn's 8x8 handwritten digits upsampled to "
                                "32x32), not natural images: use it to check the pipeline, not as a pretrained "
                                "backbone."})
def build_digits_lt(
    data_dir: Optional[PathLike] = None,
    imb_factor: Optional[float] = None,
    split: str = "test",
    n_max: Optional[int] = None,
    seed: int = 0,
    test_imb_factor: Optional[float] = None,
    train_transform: Transform = None,
    test_transform: Transform = None,
    test_per_class: int = 50,
    val_per_class: Optional[int] = None,
) -> LTDataset:
    """Embedded digits made long-tailed by the docs/method.md §4 rule (no download; see :mod:`lt_registry.data.embedded`).

    ``imb_factor`` defaults to 10 here (124 down to 12 training images per class): at rho = 100 the
    smallest digit class would keep a single image of ~130. Validation: ``val_per_class`` (default 10, 0: none)
    images per class from the pool images the selection left out (docs/method.md §4.3).
    """
    if data_dir is not None:
        raise ValueError("digits_lt is embedded (scikit-learn's bundled digits) and takes no data_dir.")
    _check_split(split, ("test",))
    train = load_digits_arrays("train", test_per_class)
    test = load_digits_arrays("test", test_per_class)
    return _from_arrays("digits_lt", train, test, 10, 10.0 if imb_factor is None else imb_factor, n_max, seed,
                        test_imb_factor,
                        train_transform, test_transform, val_per_class)


# ---- list-file builders -------------------------------------------------------------------------------------
def _list_builder(name: str) -> Callable[..., LTDataset]:
    C, prefix, folder, default_split = LIST_SETS[name]

    def build(
        data_dir: Optional[PathLike] = None,
        imb_factor: Optional[float] = None,
        split: Optional[str] = None,
        list_dir: Optional[PathLike] = None,
        train_transform: Transform = None,
        test_transform: Transform = None,
        img_size: int = 224,
    ) -> LTDataset:
        if data_dir is None:
            raise ValueError(f"{name} needs data_dir: the image root the list files' relative paths start from.")
        if imb_factor is not None:
            raise ValueError(f"{name} has the fixed long tail of its list file; imb_factor does not apply.")
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{name} image root {str(root)!r} does not exist or is not a folder.")
        lists = Path(list_dir) if list_dir is not None else root
        eval_split = split or default_split
        if train_transform is None or test_transform is None:
            from timm.data import create_transform

            # RandomResizedCrop + flip + colour jitter 0.4 / resize 256 + centre crop 224: the field's recipe
            if train_transform is None:
                train_transform = create_transform(img_size, is_training=True, interpolation="bilinear")
            if test_transform is None:
                test_transform = create_transform(img_size, is_training=False, interpolation="bilinear")
        tr = ListFileDataset(find_list_file(name, "train", lists), root, train_transform, C)
        te = ListFileDataset(find_list_file(name, eval_split, lists), root, test_transform, C)
        counts = tr.class_counts
        meta = dict(train_list=str(tr.list_file), test_list=str(te.list_file), image_root=str(root),
                    split=eval_split, test_counts=te.class_counts)
        return LTDataset(tr, te, counts, C, tr.class_names, name, None, meta)

    build.__name__ = f"build_{name}"
    build.__doc__ = (f"{prefix} from list files ``{prefix}_train.txt`` / ``{prefix}_<split>.txt`` (in ``list_dir`` or "
                     f"``list_dir/{folder}``, default ``data_dir``) and images under ``data_dir`` (docs/method.md §4). "
                     f"Evaluation split default {default_split!r}.")
    return build


register_dataset("imagenet_lt", label="ImageNet-LT")(_list_builder("imagenet_lt"))
register_dataset("inat2018", aliases=("inaturalist2018", "inat18"), label="iNaturalist 2018")(_list_builder("inat2018"))
register_dataset("places_lt", label="Places-LT")(_list_builder("places_lt"))
