"""Per-sample augmentation seeds: the randomness of a training sample's augmentation is a pure function of
``(seed, epoch, position)``, whatever process or DataLoader worker loads it (docs/method.md §5.1).

PyTorch seeds each DataLoader worker from the main process's RNG when the workers start, and persistent workers
carry their RNG state from one epoch to the next; neither is in a checkpoint, so a resumed run (or the same
run with another ``--workers``) augmented differently. Here the sampler tags every index with its epoch and its
position in the epoch's global sequence, and the dataset reseeds Python's ``random``, NumPy and torch from those
before it loads the sample (restoring the caller's RNG state afterwards), so:

- a run resumed from any checkpoint, at an epoch boundary or mid-epoch, augments exactly as the uninterrupted one;
- the same seed gives the same augmented samples for ``--workers 0``, ``2`` or ``8``, and for any number of
  processes (the position is taken in the global sequence, before accelerate shards it).

    >>> from lt_registry.data.seeding import SeededSampler, sample_seed
    >>> s = SeededSampler([2, 0, 1], seed=5)
    >>> s.set_epoch(3)
    >>> [tuple(k) for k in s]
    [(3, 0, 2), (3, 1, 0), (3, 2, 1)]
    >>> sample_seed(5, 3, 0) == sample_seed(5, 3, 0) != sample_seed(5, 3, 1)
    True
"""
from __future__ import annotations

import random
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["SampleKey", "SeededSampler", "SeededDataset", "sample_seed"]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed from ``(seed, epoch, position)`` (SplitMix64 chained over the three, so nearby triples give
    unrelated seeds)."""
    h = _splitmix64(int(seed) & _MASK64)
    h = _splitmix64(h ^ (int(epoch) & _MASK64))
    h = _splitmix64(h ^ (int(position) & _MASK64))
    return h >> 1


class SampleKey(NamedTuple):
    """What a :class:`SeededSampler` yields: the epoch, the position in the epoch's global sequence, the index."""

    epoch: int
    position: int
    index: int


class SeededSampler:
    """Wraps an index sampler (a registry sampler or any iterable of indices): yields :class:`SampleKey` s and
    passes ``set_epoch`` on. ``len`` is the wrapped sampler's."""

    def __init__(self, sampler: Any, seed: int = 0):
        self.sampler = sampler
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[SampleKey]:
        e = self.epoch
        for pos, i in enumerate(self.sampler):
            yield SampleKey(e, pos, int(i))

    def __len__(self) -> int:
        return len(self.sampler)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sampler!r}, seed={self.seed})"


class SeededDataset(Dataset):
    """``dataset[key.index]`` loaded with Python's ``random``, NumPy's global RNG and torch's CPU RNG seeded from
    ``sample_seed(seed, key.epoch, key.position)``; the caller's RNG states are restored afterwards, so the
    main process's randomness (dropout, drop-path) is untouched with ``--workers 0``. A plain integer key loads
    the sample as the wrapped dataset would."""

    def __init__(self, dataset: Sequence[Any], seed: int = 0):
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        epoch, position, index = key
        s = sample_seed(self.seed, epoch, position)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(s)
            np.random.seed(s & 0xFFFFFFFF)
            torch.manual_seed(s)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)

    def __getattr__(self, name: str) -> Any:  # labels, class_counts, transform, ... of the wrapped dataset
        if name in ("dataset", "seed"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dataset!r}, seed={self.seed})"
