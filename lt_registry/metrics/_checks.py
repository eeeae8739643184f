"""Input checks shared by the metric functions.

Every check raises a ValueError that says what was wrong and what is accepted. Checks run once per public
call; the private ``_compute`` helpers in the sibling modules assume checked inputs. Labels (and hard
predictions) go through the package's one label check, :func:`lt_registry.labels.check_labels`.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from ..labels import check_labels

__all__ = ["work_dtype", "check_scores", "check_probs", "check_n_bins", "check_preds"]

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def work_dtype(device: torch.device) -> torch.dtype:
    """float64 for accumulation, except on backends without float64 (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _as_tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach()
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name} must be a torch.Tensor (or array-like convertible to one), "
                         f"got {type(x).__name__}.") from e


def check_scores(scores: Any, name: str = "logits") -> Tensor:
    """A floating [N, C] tensor with N > 0, C > 0 and finite entries (logits or probabilities)."""
    s = _as_tensor(scores, name)
    if s.ndim != 2:
        hint = " For a binary problem with one probability per sample, pass torch.stack([1 - p, p], dim=1)." \
            if s.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D with shape [N, C] (one row per sample, one column per class), "
                         f"got shape {tuple(s.shape)}.{hint}")
    if not s.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor [N, C], got dtype {s.dtype}; "
                         "for hard predictions use per_class_accuracy with an integer tensor [N].")
    if s.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0 samples): metrics need at least one sample.")
    if s.shape[1] == 0:
        raise ValueError(f"{name} has no classes (C = 0): need shape [N, C] with C >= 1.")
    if not torch.isfinite(s).all():
        raise ValueError(f"{name} contains NaN or infinite values; all entries must be finite.")
    return s


def check_probs(probs: Any, labels: Any, atol: Optional[float] = None) -> Tuple[Tensor, Tensor]:
    """Probabilities [N, C] (entries in [0, 1], rows summing to 1) and labels [N].

    ``atol`` on the row sums defaults to 1e-3 (1e-2 for float16/bfloat16, whose softmax is coarser).
    """
    p = check_scores(probs, "probs")
    if atol is None:
        atol = 1e-2 if p.dtype in (torch.float16, torch.bfloat16) else 1e-3
    pw = p.to(work_dtype(p.device))
    lo, hi = float(pw.min()), float(pw.max())
    row_err = (pw.sum(dim=1) - 1).abs()
    worst = int(row_err.argmax())
    if lo < -atol or hi > 1 + atol or float(row_err[worst]) > atol:
        raise ValueError(
            "probs must be probabilities: entries in [0, 1] and each row summing to 1 "
            f"(tolerance {atol:g}); got entries in [{lo:.4g}, {hi:.4g}] and row {worst} summing to "
            f"{float(pw[worst].sum()):.6g}. If these are logits, pass torch.softmax(logits, dim=1).")
    y = check_labels(labels, p.shape[1], n=p.shape[0]).to(p.device)
    return p, y


def check_n_bins(n_bins: Any, name: str = "n_bins") -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"{name} must be a positive integer (for example 15), got {n_bins!r}.")
    return int(n_bins)


def check_preds(preds: Any, labels: Any, num_classes: Optional[int]) -> Tuple[Tensor, Tensor, int]:
    """Hard predictions [N] (integers) or scores [N, C] (argmax taken); returns (preds, labels, C)."""
    p = _as_tensor(preds, "preds_or_logits")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    if p.ndim == 2:
        s = check_scores(p, "preds_or_logits")
        if num_classes is None:
            num_classes = s.shape[1]
        elif s.shape[1] != num_classes:
            raise ValueError(f"preds_or_logits has {s.shape[1]} columns but num_classes={num_classes}; "
                             "they must match.")
        p = s.argmax(dim=1)
    elif p.ndim == 1:
        if p.dtype not in _INT_DTYPES:
            raise ValueError(f"1-D preds_or_logits must hold integer class predictions, got dtype {p.dtype}; "
                             "pass scores as a 2-D tensor [N, C].")
        if p.numel() == 0:
            raise ValueError("preds_or_logits is empty (N = 0 samples): metrics need at least one sample.")
        if num_classes is None:
            raise ValueError("num_classes is required when preds_or_logits holds hard predictions of shape [N].")
        p = check_labels(p, num_classes, what="predicted classes")
    else:
        raise ValueError("preds_or_logits must be integer predictions [N] or scores [N, C], "
                         f"got shape {tuple(p.shape)}.")
    y = check_labels(labels, num_classes, n=p.shape[0]).to(p.device)
    return p, y, num_classes
