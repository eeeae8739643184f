"""Metrics of docs/method.md §6: accuracy splits (many/medium/few, head/mid/tail) and calibration (ECE, MCE, ACE, TACE,
SCE, Brier, NLL, reliability bins), as functions on torch tensors.

    from lt_registry.metrics import evaluate_predictions, calibration_metrics
"""
from .accuracy import confusion_matrix, per_class_accuracy, split_accuracy, top1_accuracy
from .calibration import (
    adaptive_calibration_error,
    binning_scheme,
    brier_score,
    calibration_errors_from_bins,
    calibration_metrics,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    static_calibration_error,
)
from .evaluate import evaluate_predictions, report_metrics
from .table import METRICS, MetricSpec, metric, metric_keys, to_report_units

__all__ = [
    "top1_accuracy", "per_class_accuracy", "split_accuracy", "confusion_matrix",
    "calibration_metrics", "expected_calibration_error", "maximum_calibration_error",
    "adaptive_calibration_error", "static_calibration_error", "brier_score", "negative_log_likelihood",
    "reliability_bins", "binning_scheme", "calibration_errors_from_bins",
    "evaluate_predictions", "report_metrics",
    "METRICS", "MetricSpec", "metric", "metric_keys", "to_report_units",
]
