"""The label distribution a mixer actually trains on (its *effective label prior*).

A mixed sample carries the target triple ``(y_a, y_b, lam)`` (paper Eq. 11): weight ``lam`` on the anchor's
class and ``1 - lam`` on the partner's. Summed over training, these weights form the label distribution the
loss sees. Without mixing, and with mixup or Remix on random partners, it stays close to the training prior
pi. UniMix moves it on purpose (Eq. 6-9): the factor ``xi = (Beta(alpha, alpha) + c_ij) mod 1`` gives the tail
member of a pair most of the label, and a partner drawn with class probability ``∝ pi^tau`` (tau < 1) is more
often a tail image. Bayias (Eq. 14) then adds ``log pi`` for the *original* prior on top, so the effective
prior tells how much the two compensations overlap.

:func:`effective_label_prior` measures it by running the real mixer on label batches drawn by the real
samplers (anchors: one shuffled pass per epoch, as the ``random`` sampler; partners: the ``prior_power``
sampler when the mixer uses the dataset-level form, else the mixer's own in-batch draw).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..labels import check_labels

__all__ = ["effective_label_prior"]


def effective_label_prior(mixer: Any, labels: Any, *, batches: int = 400, batch_size: int = 128,
                          seed: int = 0, partner: Optional[str] = None) -> torch.Tensor:
    """Share of the label weight each class receives under ``mixer`` (a registry mixer), shape [C], sum 1.

    Args:
        mixer: a mixer from :func:`lt_registry.create_mixer`, built on the class counts of ``labels``.
        labels: training labels [N] (integers in 0..C-1).
        batches: number of mixed batches to average over (the estimate's noise falls as 1/sqrt(batches)).
        batch_size: anchors per batch.
        seed: seeds the anchor sampler, the partner sampler (seed + 1) and the mixer's generator.
        partner: ``'dataset'`` (partners from the ``prior_power`` sampler with the mixer's tau, paper
            Algorithm 1) or ``'batch'`` (the mixer's in-batch draw); default: the mixer's ``partner``
            attribute, ``'batch'`` when it has none.
    """
    from .._registry import create_sampler

    prior = getattr(mixer, "prior", None)
    num_classes = prior.num_classes if prior is not None else None
    y = check_labels(labels, num_classes, what="labels").cpu()
    if y.numel() == 0:
        raise ValueError("labels is empty: nothing to mix")
    num_classes = num_classes or int(y.max()) + 1
    counts = torch.bincount(y, minlength=num_classes)
    if len(counts) != num_classes or (counts == 0).any():
        raise ValueError(f"labels must cover each of the mixer's {num_classes} classes at least once; counts "
                         f"{counts.tolist()}")
    if not (isinstance(batches, int) and batches >= 1 and isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batches and batch_size must be positive integers, got {batches!r} and {batch_size!r}")
    mode = partner or getattr(mixer, "partner", None) or "batch"
    if mode not in ("dataset", "batch"):
        raise ValueError(f"partner must be 'dataset' or 'batch', got {partner!r}")
    anchors = create_sampler("random", labels=y, seed=seed)
    partners = create_sampler("prior_power", labels=y, tau=mixer.tau, seed=seed + 1) if mode == "dataset" else None
    gen = torch.Generator().manual_seed(seed)
    mass = torch.zeros(num_classes, dtype=torch.float64)
    x = torch.zeros(batch_size, 1)
    epoch, a_idx, p_idx, done = 0, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), 0
    while done < batches:
        if len(a_idx) < batch_size:  # a new epoch of anchors (and partners), as the training loop draws them
            a_idx = torch.cat([a_idx, anchors.global_indices(epoch)])
            if partners is not None:
                p_idx = torch.cat([p_idx, partners.global_indices(epoch)])
            epoch += 1
            continue
        ya, a_idx = y[a_idx[:batch_size]], a_idx[batch_size:]
        pair = None
        if partners is not None:
            pair, p_idx = (x, y[p_idx[:batch_size]]), p_idx[batch_size:]
        _, target = mixer(x, ya, partner=pair, generator=gen)
        lam = target.lam.double()
        mass.index_add_(0, target.y_a, lam)
        mass.index_add_(0, target.y_b, 1.0 - lam)
        done += 1
    return (mass / mass.sum()).float()
