"""The one label check: class labels are integer indices ``y`` with ``0 <= y < C`` (docs/method.md §4, §6).

:class:`~lt_registry.prior.ClassPrior` (``from_labels``), the samplers, the losses, the mixers and the
metrics all validate labels with :func:`check_labels`, so a bad label gives the same ValueError wherever it
is caught, naming the offending value and C (instead of an IndexError from indexing or, on CUDA, a
device-side assert that kills the process). The module imports nothing from the package, so every
component can use it without an import cycle.

Host syncs. Reading the range of a tensor that lives on an accelerator copies two numbers to the host, a
sync that stalls the device queue; in the training step that would cost one sync per step. So the range is
always read for CPU tensors (nothing to save there), and for accelerator tensors only when ``sync=True``
(dtype and shape are checked either way: they are free). Losses and mixers pass their ``validate_labels``
attribute (class default True) as ``sync``. The training recipe sets ``validate_labels = False`` on its
loss and mixer because its labels were already validated where they enter (dataset build, ClassPrior,
sampler construction), so its hot loop has no per-step sync; metrics always check.

Soft targets (float [N, C], rows of class probabilities; docs/method.md §3.1) have their own check,
:func:`check_soft_targets`, with the same sync rule.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import torch

__all__ = ["check_labels", "check_soft_targets"]

_ACCEPTED = "integer class indices (an integer tensor, array or list)"


def _out_of_range(what: str, lo: int, hi: int, num_classes: Optional[int]) -> str:
    bad = lo if lo < 0 else hi
    if num_classes is None:
        return (f"{what}: class index {bad} is out of range; class indices must be >= 0 "
                f"(found values in [{lo}, {hi}]).")
    return (f"{what}: class index {bad} is out of range for num_classes={num_classes}; class indices must lie "
            f"in [0, {num_classes}) (found values in [{lo}, {hi}]).")


def check_labels(labels: Any, num_classes: Optional[int], *, what: str = "labels", n: Optional[int] = None,
                 sync: bool = True) -> torch.Tensor:
    """Validate class labels and return them as an int64 tensor [N] on their own device.

    Args:
        labels: integer class indices [N] (tensor, numpy array or list).
        num_classes: C; every label must lie in ``[0, C)``. ``None``: only ``y >= 0`` is checked.
        what: the name the errors use (``"target"``, ``"labels"``, ...).
        n: the required number of labels (e.g. the batch size), or ``None``.
        sync: read the value range of a tensor on an accelerator (one host sync, ``torch.aminmax``). With
            ``False`` only dtype and shape are checked there; CPU tensors are always range-checked.

    Raises:
        ValueError: missing or non-integer labels (float, bool, complex: one-hot or soft targets), a shape
            other than [N], or a value outside ``[0, C)``; the message names the bad value and C.

    >>> check_labels([0, 2, 1], 3)
    tensor([0, 2, 1])
    """
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    if isinstance(labels, torch.Tensor):
        y = labels  # integer tensors carry no autograd history; an int64 tensor comes back as it is
    else:
        if labels is None:
            raise ValueError(f"{what} are missing: pass {_ACCEPTED}, one per sample.")
        try:
            y = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{what} must be {_ACCEPTED}, got {type(labels).__name__}.") from e
        if y.numel() == 0:
            y = y.long()  # an empty list has no dtype of its own
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{what} must be {_ACCEPTED}, got dtype {y.dtype}; pass class indices, not one-hot "
                         "or soft targets (a mixed batch is a MixedTarget(y_a, y_b, lam)).")
    if y.ndim != 1 or (n is not None and y.shape[0] != n):
        shape = "[N]" if n is None else f"[N] = [{n}]"
        raise ValueError(f"{what} must be 1-D with shape {shape} (one class index per sample), "
                         f"got shape {tuple(y.shape)}.")
    y = y.long()
    if y.numel() and (sync or y.device.type == "cpu"):
        lo, hi = torch.stack(torch.aminmax(y)).tolist()  # the one host read
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            raise ValueError(_out_of_range(what, lo, hi, None if num_classes is None else int(num_classes)))
    return y


def check_soft_targets(target: torch.Tensor, num_classes: int, *, what: str = "target", n: Optional[int] = None,
                       sync: bool = True) -> torch.Tensor:
    """Validate soft targets: a float tensor [N, C] whose rows are class probabilities (non-negative, summing
    to 1). Returned as they are.

    The shape and dtype are always checked (free). The values (finite, ``>= -tol``, row sums within ``tol`` of 1,
    ``tol = max(1e-3, 2 * eps(dtype))``) are read with one host sync: always for CPU tensors, for accelerator
    tensors only when ``sync=True`` (the losses pass their ``validate_labels``, as for :func:`check_labels`).

    Raises:
        ValueError: a float tensor of another shape (e.g. float class indices [N]) or rows that are not
            probabilities; the message names the offending row and what is accepted.
    """
    shape = tuple(target.shape)
    n_txt = "B" if n is None else str(n)
    accepted = (f"pass soft targets as a float tensor [B, C] = [{n_txt}, {num_classes}] whose rows are class "
                f"probabilities summing to 1, or integer class indices [B] = [{n_txt}], or a MixedTarget")
    if not target.is_floating_point():
        raise ValueError(f"{what} must be a float tensor for soft targets, got dtype {target.dtype}; {accepted}.")
    if target.ndim != 2 or target.shape[1] != num_classes or (n is not None and target.shape[0] != n):
        raise ValueError(f"{what} is a float tensor of shape {shape}: {accepted}.")
    if target.numel() == 0 or not (sync or target.device.type == "cpu"):
        return target
    tol = max(1e-3, 2.0 * torch.finfo(target.dtype).eps)
    t = target.detach()
    acc = torch.float64 if t.dtype == torch.float64 else torch.float32
    dev = (t.sum(dim=1, dtype=acc) - 1.0).abs()  # NaN or inf anywhere in a row makes its sum non-finite
    worst = dev.argmax()  # max/argmax propagate NaN
    row_min = t.amin(dim=1)
    lo_row = row_min.argmin()
    stats = torch.stack([dev[worst], worst.to(acc), row_min[lo_row].to(acc), lo_row.to(acc)])
    max_dev, row, lo, lo_row = stats.tolist()  # the one host read
    if not math.isfinite(max_dev):
        raise ValueError(f"{what} (soft targets) contains NaN or infinite values; {accepted}.")
    if lo < -tol:
        raise ValueError(f"{what} (soft targets): row {int(lo_row)} has the negative entry {lo:.6g}; {accepted}.")
    if max_dev > tol:
        s = float(t[int(row)].sum(dtype=acc))
        raise ValueError(f"{what} (soft targets): row {int(row)} sums to {s:.6g}, not 1 (tolerance {tol:g}); "
                         f"{accepted}.")
    return target
