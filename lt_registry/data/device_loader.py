"""The fast path for datasets that fit in device memory (CIFAR scale).

The uint8 training set lives on the device; each batch is gathered there and augmented in one batched
call of the *same* transform the standard path applies per sample (``CifarTrainTransform``: pad-4 crop,
flip, normalise), then laid out channels-last. Batches follow the same registry sampler as the standard
path, so every epoch visits the same indices with the same class frequencies; only the per-sample Python
work and the host-to-device copies disappear.

Distributed: the sampler draws one global sequence (seed + epoch) on every process; batch ``k`` goes to
process ``k % world_size``, which is how accelerate shards a prepared DataLoader. Evaluation loaders are
``replicated``: every process sees the whole (small) test set, so no gather is needed and every test
sample counts exactly once.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch

from .arrays import TensorImageDataset
from .transforms import CifarTestTransform, CifarTrainTransform

__all__ = ["DeviceTensorLoader", "fits_on_device"]


def fits_on_device(dataset: Any) -> bool:
    """True for in-memory image arrays (``TensorImageDataset``) whose transform the fast path reproduces."""
    return isinstance(dataset, TensorImageDataset) and isinstance(dataset.transform, (CifarTestTransform,))


class DeviceTensorLoader:
    """Iterate ``(x, y)`` batches of a :class:`TensorImageDataset` held on ``device``.

    Args:
        dataset: in-memory dataset; its uint8 images and labels are copied to ``device`` once.
        batch_size: per-process batch size.
        device: where images, labels and the augmentation live.
        sampler: a registry sampler (``set_epoch`` + ``global_indices``) for training; ``None`` iterates
            the dataset in order (evaluation).
        transform: batched transform (default: the dataset's own); train transforms get ``generator``.
        generator: ``torch.Generator`` on ``device`` for the crop/flip draws (saved with checkpoints).
        num_processes, process_index: batch ``k`` of the global sequence goes to process ``k % num_processes``.
        drop_last: drop a final incomplete batch (and any batches that cannot go to every process).
        channels_last: return ``torch.channels_last`` batches.
        replicated: evaluation mode for several processes: every process iterates the whole dataset.
    """

    def __init__(self, dataset: TensorImageDataset, batch_size: int, device: torch.device, *,
                 sampler: Any = None, transform: Optional[Callable] = None,
                 generator: Optional[torch.Generator] = None, num_processes: int = 1, process_index: int = 0,
                 drop_last: bool = False, channels_last: bool = True, replicated: bool = False):
        if not isinstance(dataset, TensorImageDataset):
            raise ValueError(f"the fast path needs an in-memory TensorImageDataset, got {type(dataset).__name__}; "
                             "use the standard DataLoader path for list-file or streamed datasets.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)  # uint8 [N, H, W, C]
        self.labels = torch.as_tensor(dataset.labels, dtype=torch.long).to(self.device)
        self.batch_size = int(batch_size)
        self.sampler = sampler
        self.transform = transform if transform is not None else dataset.transform
        self.generator = generator
        if isinstance(self.transform, CifarTrainTransform):
            self.transform = CifarTrainTransform(self.transform.mean, self.transform.std, self.transform.padding,
                                                 self.transform.flip_p, generator=generator)
        self.num_processes, self.process_index = int(num_processes), int(process_index)
        self.drop_last, self.channels_last, self.replicated = drop_last, channels_last, replicated
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _order(self) -> torch.Tensor:
        if self.sampler is None:
            return torch.arange(len(self.labels))
        if hasattr(self.sampler, "global_indices"):
            return self.sampler.global_indices(self.epoch)
        return torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)

    def _world(self) -> int:
        return 1 if self.replicated else self.num_processes

    def _my_batches(self) -> Iterator[torch.Tensor]:
        order = self._order().to(self.device)
        B, world = self.batch_size, self._world()
        step = B * world
        if self.drop_last:
            order = order[: len(order) // step * step]
        elif world > 1 and len(order) % step:
            # every process must run the same number of full steps: wrap around, as accelerate pads
            order = torch.cat([order, order[: step - len(order) % step]])
        for start in range(self.process_index * B if world > 1 else 0, len(order), step):
            yield order[start:start + B]

    def skip_first_batches(self, n: int) -> "_Skipped":
        """This epoch's batches from the ``n``-th on (a mid-epoch resume): the skipped batches are neither
        gathered nor augmented, so the augmentation generator (restored from the checkpoint) continues where
        it stopped."""
        return _Skipped(self, int(n))

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        return self._iter_from(0)

    def _iter_from(self, first: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for k, idx in enumerate(self._my_batches()):
            if k < first:
                continue
            x = self.transform(self.images[idx])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.labels)
        step = self.batch_size * self._world()
        return n // step if self.drop_last else math.ceil(n / step)

    def state_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch}


class _Skipped:
    """A :class:`DeviceTensorLoader` epoch without its first ``n`` batches (``len`` counts what is left)."""

    def __init__(self, loader: DeviceTensorLoader, n: int):
        self.loader, self.n = loader, n
        self.replicated = loader.replicated

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        return self.loader._iter_from(self.n)

    def __len__(self) -> int:
        return max(len(self.loader) - self.n, 0)
