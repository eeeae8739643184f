"""``digits_lt``: a long-tailed set that needs no download, so a training run works on a fresh offline machine.

What it is: the UCI "Optical Recognition of Handwritten Digits" test set as bundled with scikit-learn
(``sklearn.datasets.load_digits``): 1,797 grey 8x8 images of the digits 0-9 (pixel values 0..16), 174 to
183 per class. Here each image is scaled to 0..255, enlarged 4x by pixel repetition to 32x32 and copied
to three channels, so it has CIFAR's shape ``[32, 32, 3]`` uint8 and goes through the CIFAR transforms and
models unchanged (docs/method.md §4-5). It is a smoke-test and tutorial set, not a benchmark.

Split: a fixed stratified split, ``test_per_class`` images of each class (default 50) drawn with
``np.random.RandomState(split_seed)`` form a balanced test set (500 images); the rest (124 to 133 per class)
is the balanced pool. The long tail is the CIFAR rule of docs/method.md §4 (:func:`~lt_registry.data.cifar_lt.cifar_lt_indices`)
with ``n_max`` = the smallest class of the pool (124): rho 10 -> 124 ... 12 images, 503 in all.

Needs scikit-learn (for its bundled copy of the data); nothing is fetched from the network.
"""
from __future__ import annotations

import numpy as np

from .arrays import ImageArrays

__all__ = ["load_digits_arrays", "DIGITS_CLASS_NAMES"]

DIGITS_CLASS_NAMES = [str(d) for d in range(10)]
_SPLITS = ("train", "test")


def _digits_raw() -> tuple:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("digits_lt reads scikit-learn's bundled copy of the UCI digits; install scikit-learn "
                          "(pip install scikit-learn).") from e
    bunch = load_digits()
    return np.asarray(bunch.images), np.asarray(bunch.target, dtype=np.int64)


def load_digits_arrays(split: str = "train", test_per_class: int = 50, split_seed: int = 0) -> ImageArrays:
    """One split of the embedded digits as uint8 ``[N, 32, 32, 3]`` images and int64 labels.

    Args:
        split: ``'train'`` (the balanced pool the long tail is drawn from) or ``'test'`` (balanced).
        test_per_class: test images per class (1..173).
        split_seed: seed of the stratified split.

    Both splits keep the original order of scikit-learn's array.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}.")
    raw, labels = _digits_raw()
    per_class = np.bincount(labels, minlength=10)
    if not 1 <= test_per_class < per_class.min():
        raise ValueError(f"test_per_class must be in [1, {int(per_class.min()) - 1}], got {test_per_class}.")
    rng = np.random.RandomState(split_seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        is_test[rng.permutation(idx)[:test_per_class]] = True
    keep = is_test if split == "test" else ~is_test
    grey = np.rint(raw[keep] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # [N, 8, 8]
    big = grey.repeat(4, axis=1).repeat(4, axis=2)  # nearest-neighbour 8x8 -> 32x32
    images = np.ascontiguousarray(np.repeat(big[..., None], 3, axis=3))
    return ImageArrays(images, labels[keep], list(DIGITS_CLASS_NAMES), f"sklearn-digits[{split}]")
