"""In-memory image sets: the ``ImageArrays`` a loader returns and the ``TensorImageDataset`` that serves them.

CIFAR (docs/method.md §4) and the embedded digits fit in memory as one uint8 array ``[N, H, W, C]``; the dataset hands
out ``(transform(image), label)`` with the image as a uint8 HWC tensor, which is what the transforms in
:mod:`lt_registry.data.transforms` take.
"""
from __future__ import annotations

from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ImageArrays", "TensorImageDataset", "check_image_arrays"]


class ImageArrays(NamedTuple):
    """A split held in memory: ``images`` uint8 [N, H, W, 3], ``labels`` int64 [N], ``class_names``, ``source``.

    ``source`` says where the arrays came from (format and path), for run records.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: List[str]
    source: str


def check_image_arrays(images: Any, labels: Any, num_classes: Optional[int] = None, *,
                       size: Optional[Tuple[int, int]] = None, what: str = "images") -> Tuple[np.ndarray, np.ndarray]:
    """Validate and convert to (uint8 [N, H, W, 3], int64 [N]); errors name ``what`` and the problem."""
    images = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if images.dtype != np.uint8:
        raise ValueError(f"{what}: images must be uint8, got {images.dtype}.")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{what}: images must have shape [N, H, W, 3], got {images.shape}.")
    if size is not None and tuple(images.shape[1:3]) != tuple(size):
        raise ValueError(f"{what}: images must be {size[0]}x{size[1]}, got {images.shape[1]}x{images.shape[2]}.")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{what}: need one label per image: {len(images)} images, labels of shape {labels.shape}.")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: labels must be integers, got {labels.dtype}.")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and labels.min() < 0:
        raise ValueError(f"{what}: labels must be >= 0, found {int(labels.min())}.")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise ValueError(f"{what}: label {int(labels.max())} is out of range for {num_classes} classes.")
    return images, labels


class LabelledDataset(Dataset):
    """Shared label views of the in-memory and list-file datasets (both hold ``labels`` and ``num_classes``)."""

    labels: np.ndarray
    num_classes: int

    @property
    def targets(self) -> List[int]:
        """Labels as a list (torchvision's attribute name)."""
        return self.labels.tolist()

    @property
    def class_counts(self) -> List[int]:
        """Images per class, length ``num_classes``."""
        return np.bincount(self.labels, minlength=self.num_classes).tolist()


class TensorImageDataset(LabelledDataset):
    """``(transform(image), label)`` pairs from a uint8 array ``[N, H, W, C]`` and integer labels.

    Args:
        images: uint8 ``[N, H, W, C]`` (numpy or torch; numpy memory is shared, not copied).
        labels: integer labels ``[N]``.
        transform: callable on one uint8 HWC tensor (e.g. :class:`~lt_registry.data.transforms.CifarTrainTransform`);
            ``None`` returns the uint8 HWC tensor.
        class_names: optional names, index = label.
        num_classes: size of the label space (defaults to ``len(class_names)`` or ``max(label) + 1``).
    """

    def __init__(
        self,
        images: Any,
        labels: Any,
        transform: Optional[Callable[[torch.Tensor], Any]] = None,
        class_names: Optional[Sequence[str]] = None,
        num_classes: Optional[int] = None,
    ):
        if num_classes is None and class_names is not None:
            num_classes = len(class_names)
        if isinstance(images, torch.Tensor):
            images = images.cpu().numpy()
        images, labels = check_image_arrays(images, labels, num_classes, what=type(self).__name__)
        self._images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels: np.ndarray = labels
        self.transform = transform
        self.num_classes = int(num_classes if num_classes is not None else (labels.max() + 1 if labels.size else 0))
        self.class_names: List[str] = list(class_names) if class_names is not None else [str(c) for c in range(self.num_classes)]

    @property
    def images(self) -> torch.Tensor:
        """All images, uint8 ``[N, H, W, C]`` (for batched transforms on the device)."""
        return self._images

    def subset(self, indices: Any, transform: Optional[Callable[[torch.Tensor], Any]] = None) -> "TensorImageDataset":
        """A new dataset with the rows ``indices`` (copied, in that order), same names and label space."""
        idx = np.asarray(indices, dtype=np.int64)
        return TensorImageDataset(self._images.numpy()[idx], self.labels[idx],
                                  transform if transform is not None else self.transform,
                                  self.class_names, self.num_classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        img = self._images[index]
        return (self.transform(img) if self.transform is not None else img), int(self.labels[index])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, num_classes={self.num_classes}, "
                f"image_shape={tuple(self._images.shape[1:])}, transform={self.transform!r})")
