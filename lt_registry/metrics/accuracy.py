"""Top-1, per-class and group accuracies for long-tailed evaluation (docs/method.md §6).

The groups follow the field's convention: many / medium / few-shot classes have > 100, 20-100 and < 20
training images; for CIFAR also head / mid / tail by class-index thirds. The masks come from
:class:`lt_registry.prior.ClassPrior` (``split`` and ``thirds``), the one home of that convention.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch
from torch import Tensor

from ..labels import check_labels
from ..prior import ClassPrior
from ._checks import check_preds, check_scores, work_dtype

__all__ = ["top1_accuracy", "per_class_accuracy", "split_accuracy", "confusion_matrix"]


def top1_accuracy(logits_or_probs: Tensor, labels: Tensor) -> float:
    r"""Top-1 accuracy as a fraction in [0, 1].

    .. math:: \mathrm{acc} = \frac{1}{N}\sum_i \mathbb{1}[\arg\max_c s_{ic} = y_i]

    Logits and probabilities give the same answer (softmax keeps the argmax); ties go to the lowest index.

    Args:
        logits_or_probs: float tensor [N, C].
        labels: integer tensor [N] in [0, C).

    >>> top1_accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]]), torch.tensor([0, 1, 1]))
    0.6666666666666666
    """
    s = check_scores(logits_or_probs, "logits_or_probs")
    y = check_labels(labels, s.shape[1], n=s.shape[0]).to(s.device)
    return (s.argmax(dim=1) == y).sum().item() / y.numel()


def per_class_accuracy(preds_or_logits: Tensor, labels: Tensor, num_classes: Optional[int] = None) -> Tensor:
    r"""Accuracy of each class on the samples whose label is that class.

    .. math:: \mathrm{acc}_c = \frac{\sum_i \mathbb{1}[y_i = c,\ \hat y_i = c]}{\sum_i \mathbb{1}[y_i = c]}

    Args:
        preds_or_logits: hard predictions (integer [N]) or scores (float [N, C], argmax taken).
        labels: integer tensor [N] in [0, C).
        num_classes: C; required for hard predictions, checked against the columns of scores.

    Returns:
        Float tensor [C] on the inputs' device (float64, float32 on MPS); NaN for classes absent from
        ``labels`` (their accuracy is undefined, not zero).

    >>> per_class_accuracy(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 0, 1, 1]), 3)
    tensor([0.5000, 0.5000,    nan], dtype=torch.float64)
    """
    p, y, C = check_preds(preds_or_logits, labels, num_classes)
    dt = work_dtype(y.device)
    total = torch.zeros(C, dtype=dt, device=y.device).index_add_(0, y, torch.ones_like(y, dtype=dt))
    hits = torch.zeros(C, dtype=dt, device=y.device).index_add_(0, y, (p == y).to(dt))
    return hits / total  # 0/0 -> NaN for absent classes


def split_accuracy(per_class_acc: Any, class_counts: Any, many: int = 100, few: int = 20) -> Dict[str, float]:
    """Mean per-class accuracy over the many / medium / few-shot and head / mid / tail class groups (docs/method.md §6).

    ``many``: train count > ``many``; ``medium``: ``few`` <= count <= ``many``; ``few``: count < ``few``
    (masks from :meth:`ClassPrior.split`). ``head`` / ``mid`` / ``tail``: class-index thirds
    (:meth:`ClassPrior.thirds`; meaningful when classes are sorted by count, as in CIFAR-LT).

    A group's value is the unweighted mean of its classes' accuracies, skipping classes whose accuracy is
    NaN (absent from the test labels); it is NaN if the group has no class with a defined accuracy.

    Args:
        per_class_acc: [C] accuracies (tensor or sequence), e.g. from :func:`per_class_accuracy`.
        class_counts: training counts [C] or a :class:`ClassPrior`. Zero counts are allowed here
            (such classes are few-shot).
        many, few: the split thresholds.

    Returns:
        ``{'many', 'medium', 'few', 'head', 'mid', 'tail'}`` -> python float (fractions).

    >>> r = split_accuracy([1.0, 0.5, 0.0], [150, 50, 5])
    >>> r['many'], r['medium'], r['few']
    (1.0, 0.5, 0.0)
    """
    if isinstance(class_counts, ClassPrior):
        prior = class_counts
    else:
        if class_counts is None:
            raise ValueError("split_accuracy needs class_counts (per-class training counts or a ClassPrior).")
        try:
            counts = torch.as_tensor(class_counts, dtype=torch.float64).detach().cpu()
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError("class_counts must be a 1-D sequence of per-class training counts or a ClassPrior, "
                             f"got {type(class_counts).__name__}.") from e
        # split()/thirds() read the raw counts; smoothing only lets ClassPrior accept zero-count classes.
        prior = ClassPrior(counts, smoothing=1.0 if bool((counts == 0).any()) else 0.0)
    try:
        acc = torch.as_tensor(per_class_acc, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError("per_class_acc must be a 1-D tensor or sequence of per-class accuracies, "
                         f"got {type(per_class_acc).__name__}.") from e
    if acc.ndim != 1 or acc.numel() != prior.num_classes:
        raise ValueError(f"per_class_acc must have shape [C] with C = {prior.num_classes} (the number of "
                         f"class counts), got shape {tuple(acc.shape)}.")
    masks = {**prior.split(many=many, few=few), **prior.thirds()}
    out: Dict[str, float] = {}
    for name, mask in masks.items():
        vals = acc[mask]
        vals = vals[~torch.isnan(vals)]
        out[name] = float(vals.mean()) if vals.numel() else math.nan
    return out


def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Confusion counts ``cm[t, p]`` = number of samples of true class ``t`` predicted as ``p``.

    One ``bincount`` over ``t * C + p`` (vectorised, on the inputs' device).

    Args:
        preds: integer class predictions [N], or floating scores [N, C] (the argmax is taken).
        labels: integer true classes [N].
        num_classes: C; every prediction and label must lie in ``[0, C)``.

    Returns:
        int64 tensor [C, C]; rows are true classes, columns predicted classes; it sums to N.

    >>> confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    tensor([[1, 0, 0],
            [0, 1, 0],
            [0, 1, 1]])
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    p = preds.detach() if isinstance(preds, Tensor) else torch.as_tensor(preds)
    if p.is_floating_point():
        if p.ndim != 2 or p.shape[1] != num_classes:
            raise ValueError(f"floating preds are taken as scores and must have shape [N, {num_classes}], "
                             f"got {tuple(p.shape)}; pass integer class indices [N] otherwise.")
        p = p.argmax(dim=1)
    p = check_labels(p, num_classes, what="preds")
    y = check_labels(labels, num_classes, n=p.numel()).to(p.device)
    flat = torch.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)
