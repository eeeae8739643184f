"""The one table of reported metrics: key, label, unit and direction, used by ``metrics.json``, the grid's
tables, the report and the model card (docs/method.md, "Metrics").

Every value is stored x100 in ``metrics.json``'s ``final`` block: rates (accuracies, calibration errors)
as percent, the Brier score and NLL as "x100" so that all columns read on one scale. A new metric is one
row here plus its computation in :func:`lt_registry.metrics.evaluate_predictions`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = ["MetricSpec", "METRICS", "metric", "metric_keys", "to_report_units"]


@dataclass(frozen=True)
class MetricSpec:
    """One reported metric.

    Attributes:
        key: name in :func:`~lt_registry.metrics.evaluate_predictions` and in ``metrics.json``.
        label: short column label (``"Top-1"``).
        rate: a fraction stored as percent (accuracy, calibration error); otherwise a score stored x100.
        higher_is_better: direction, for tables that mark the best value.
        card_type: model-index ``metric_type`` on the model card (``None``: not in the card's metadata).
        in_card: shown in the model card's metric table.
        in_grid: a column of the ablation grid's results.
    """

    key: str
    label: str
    rate: bool = True
    higher_is_better: bool = True
    card_type: Optional[str] = None
    in_card: bool = True
    in_grid: bool = True

    @property
    def unit(self) -> str:
        return "%" if self.rate else "x100"

    @property
    def heading(self) -> str:
        """Label with its unit: ``"Top-1 (%)"``, ``"NLL (x100)"``."""
        return f"{self.label} ({self.unit})"


METRICS: Tuple[MetricSpec, ...] = (
    MetricSpec("top1", "Top-1", card_type="accuracy"),
    MetricSpec("many", "Many-shot", card_type="accuracy_many"),
    MetricSpec("medium", "Medium-shot", card_type="accuracy_medium"),
    MetricSpec("few", "Few-shot", card_type="accuracy_few"),
    MetricSpec("head", "Head", in_card=False),
    MetricSpec("mid", "Mid", in_card=False),
    MetricSpec("tail", "Tail", in_card=False),
    MetricSpec("ece", "ECE", higher_is_better=False, card_type="ece"),
    MetricSpec("mce", "MCE", higher_is_better=False, card_type="mce"),
    MetricSpec("ace", "ACE", higher_is_better=False),
    MetricSpec("tace", "TACE", higher_is_better=False, in_card=False, in_grid=False),
    MetricSpec("sce", "SCE", higher_is_better=False),
    MetricSpec("brier", "Brier", rate=False, higher_is_better=False, card_type="brier"),
    MetricSpec("nll", "NLL", rate=False, higher_is_better=False, card_type="nll"),
)

_BY_KEY: Dict[str, MetricSpec] = {m.key: m for m in METRICS}


def metric(key: str) -> MetricSpec:
    """The :class:`MetricSpec` of ``key``; an unknown key raises a ValueError listing the known ones."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise ValueError(f"unknown metric {key!r}; known metrics: {', '.join(_BY_KEY)}") from None


def metric_keys(where: str = "all") -> Tuple[str, ...]:
    """Keys in table order: ``"all"``, ``"card"`` (the model card's rows) or ``"grid"`` (the grid's columns)."""
    if where == "all":
        return tuple(_BY_KEY)
    if where in ("card", "grid"):
        return tuple(m.key for m in METRICS if getattr(m, f"in_{where}"))
    raise ValueError(f"where must be 'all', 'card' or 'grid', got {where!r}")


def to_report_units(values: Mapping[str, Any]) -> Dict[str, Optional[float]]:
    """Fractions from :func:`~lt_registry.metrics.evaluate_predictions` -> the table's metrics x100 (rounded to
    4 decimals), ``None`` where a value is missing or NaN (e.g. a few-shot split with no class)."""
    out: Dict[str, Optional[float]] = {}
    for m in METRICS:
        if m.key not in values:
            continue
        v = values[m.key]
        out[m.key] = None if v is None or v != v else round(100.0 * float(v), 4)
    return out
