"""One call for the training recipe: logits + labels + train counts -> every docs/method.md §6 number."""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor

from ..labels import check_labels
from ..prior import ClassPrior
from ._checks import check_n_bins, check_scores, work_dtype
from .accuracy import per_class_accuracy, split_accuracy, top1_accuracy
from .calibration import calibration_metrics
from .table import to_report_units

__all__ = ["evaluate_predictions", "report_metrics"]


def evaluate_predictions(logits: Tensor, labels: Tensor, class_counts: Any, *, n_bins: int = 15,
                         many: int = 100, few: int = 20, tace_threshold: float = 1e-3) -> Dict[str, Any]:
    """Accuracy splits and calibration metrics of docs/method.md §6 from raw logits (softmax taken here, in float64).

    Args:
        logits: float [N, C] model outputs (pre-softmax; passing probabilities would softmax them again).
        labels: integer [N] in [0, C).
        class_counts: training counts [C] or a :class:`ClassPrior` (for the many/medium/few split).
        n_bins, tace_threshold: see :func:`calibration_metrics`; many, few: see :func:`split_accuracy`.

    Returns:
        A JSON-friendly dict, all values fractions: ``num_samples``, ``num_classes``, ``top1``,
        ``per_class_accuracy`` (list, NaN for classes absent from ``labels``), ``many``, ``medium``, ``few``,
        ``head``, ``mid``, ``tail``, ``ece``, ``mce``, ``ace``, ``tace``, ``sce``, ``brier``, ``nll`` and
        ``bins`` (reliability-diagram data with its ``scheme``).
    """
    s = check_scores(logits, "logits")
    N, C = s.shape
    y = check_labels(labels, C, n=N).to(s.device)
    n_bins = check_n_bins(n_bins)
    try:
        n_counts = class_counts.num_classes if isinstance(class_counts, ClassPrior) else len(class_counts)
    except TypeError as e:
        raise ValueError("class_counts must be a sequence of per-class training counts or a ClassPrior, "
                         f"got {type(class_counts).__name__}.") from e
    if n_counts != C:
        raise ValueError(f"class_counts has {n_counts} entries but logits have C = {C} columns; "
                         "one training count per class is needed.")
    pcs = per_class_accuracy(s, y, C)
    out: Dict[str, Any] = {"num_samples": N, "num_classes": C, "top1": top1_accuracy(s, y),
                           "per_class_accuracy": pcs.cpu().tolist()}
    out.update(split_accuracy(pcs, class_counts, many=many, few=few))
    probs = torch.softmax(s.to(work_dtype(s.device)), dim=1)
    out.update(calibration_metrics(probs, y, n_bins=n_bins, tace_threshold=tace_threshold))
    return out


def report_metrics(logits: Tensor, labels: Tensor, class_counts: Any, *, n_bins: int = 15) -> Dict[str, Any]:
    """The ``final`` block of ``metrics.json`` (every metric of :data:`~lt_registry.metrics.table.METRICS`
    x100, the per-class accuracies in percent, the number of samples) and the reliability ``bins``."""
    m = evaluate_predictions(logits, labels, class_counts, n_bins=n_bins)
    final: Dict[str, Any] = to_report_units(m)
    final["per_class_accuracy"] = [None if v != v else round(100.0 * float(v), 4) for v in m["per_class_accuracy"]]
    final["num_test_samples"] = int(m["num_samples"])
    return {"final": final, "bins": m["bins"]}
