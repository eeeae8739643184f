r"""Figures and tables for a run folder (docs/method.md §6): reliability diagrams, the per-bin
calibration table, confusion matrices and per-class accuracy. The numbers themselves come from
:mod:`lt_registry.metrics` (docs/method.md §6); this module only draws and writes them.

    from lt_registry.metrics import confusion_matrix
    from lt_registry.report import plot_confusion, reliability_diagram, write_bins_table
    reliability_diagram(metrics["bins"], run_dir / "calibration" / "reliability.png", ece=..., mce=...)
    write_bins_table(metrics["bins"], run_dir / "calibration" / "bins.csv")
    plot_confusion(confusion_matrix(preds, labels, C), run_dir / "confusion.png")

Every figure is drawn on a :class:`matplotlib.figure.Figure` with its own
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`: no ``pyplot``, no backend switch, no change to
``rcParams``, so the functions are safe inside training processes (no GUI, no global figure registry) and
the figures are freed when they go out of scope.

The ``bins`` argument is the reliability-bin dict of :func:`lt_registry.metrics.reliability_bins` (also the
``'bins'`` entry of :func:`~lt_registry.metrics.calibration_metrics` and
:func:`~lt_registry.metrics.evaluate_predictions`): ``edges`` (``n + 1``), ``count``, ``accuracy`` and
``confidence`` (``n`` each; accuracy/confidence are fractions, NaN for empty bins). ECE and MCE are taken
as fractions (as the metrics return them) and shown in percent; when not given they are computed from the
bins by :func:`lt_registry.metrics.calibration_errors_from_bins`. Metric names shown in the figures are the
labels of :data:`lt_registry.metrics.table.METRICS`.
"""
from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, PercentFormatter
from torch import Tensor

from .metrics.calibration import calibration_errors_from_bins
from .metrics.table import metric

__all__ = [
    "reliability_diagram",
    "reliability_diagrams_side_by_side",
    "write_bins_table",
    "read_bins_table",
    "plot_confusion",
    "plot_per_class_accuracy",
    "BINS_TABLE_COLUMNS",
]

_logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Columns of the per-bin CSV written by :func:`write_bins_table`.
BINS_TABLE_COLUMNS: Tuple[str, ...] = ("bin", "lower", "upper", "count", "fraction", "accuracy", "confidence",
                                       "gap")

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies
_C_ACC = "#0072B2"      # accuracy bars
_C_OVER = "#D55E00"     # over-confident gap (confidence > accuracy)
_C_UNDER = "#009E73"    # under-confident gap (accuracy > confidence)
_C_HIST = "#7F7F7F"
# (fill, edge/hatch colour, hatch) of the gap bars: opaque tints of the two gap colours
_GAP_OVER = ("#F3BE9C", _C_OVER, "//")
_GAP_UNDER = ("#9ED8C6", _C_UNDER, "\\\\")
_C_MANY, _C_MEDIUM, _C_FEW = "#0072B2", "#E69F00", "#CC79A7"
_DPI = 150


# ---- small helpers -----------------------------------------------------------------------------------

def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        x = x.double() if x.is_floating_point() else x
        return x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a tensor, array or sequence of numbers, got {type(x).__name__}.") from e


def _prepare_path(path: PathLike, suffix: Optional[str] = None) -> Path:
    p = Path(path)
    if suffix is not None and p.suffix.lower() != suffix:
        raise ValueError(f"{p} must end in '{suffix}' (the file is written in that format).")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _new_figure(figsize: Tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas: Agg rendering without pyplot or a backend switch
    return fig


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    # "tight" on top of the constrained layout: long tick labels can never push a title or label off the canvas
    fig.savefig(path, dpi=dpi, format="png", facecolor="white", bbox_inches="tight", pad_inches=0.08)
    _logger.debug("wrote %s", path)
    return path


def _tick_step(n: int, max_ticks: int = 10) -> int:
    """The smallest 1-2-5 x 10^k step that puts at most ``max_ticks`` ticks on ``range(n)``."""
    step, k = 1, 0
    while math.ceil(n / step) > max_ticks:
        k, step = k + 1, (1, 2, 5)[(k + 1) % 3] * 10 ** ((k + 1) // 3)
    return step


def _check_fraction(value: Optional[float], name: str) -> Optional[float]:
    if value is None:
        return None
    v = float(value)
    if not (math.isnan(v) or 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be a fraction in [0, 1] (as calibration_metrics returns it; it is shown "
                         f"in percent), got {value!r}.")
    return v


# ---- reliability bins ----------------------------------------------------------------------------------

class _Bins:
    """Checked numpy view of a reliability-bin dict (empty bins: accuracy/confidence NaN)."""

    def __init__(self, bins: Mapping[str, Any]) -> None:
        if not isinstance(bins, Mapping):
            raise ValueError(f"bins must be a dict with 'edges', 'count', 'accuracy', 'confidence' (see "
                             f"lt_registry.metrics.reliability_bins), got {type(bins).__name__}.")
        missing = [k for k in ("edges", "count", "accuracy", "confidence") if k not in bins]
        if missing:
            raise ValueError(f"bins is missing {missing}; expected the dict of lt_registry.metrics.reliability_bins "
                             "(keys 'edges', 'count', 'accuracy', 'confidence').")
        edges = _to_numpy(bins["edges"], "bins['edges']").astype(np.float64).reshape(-1)
        count = _to_numpy(bins["count"], "bins['count']").astype(np.float64).reshape(-1)
        acc = _to_numpy(bins["accuracy"], "bins['accuracy']").astype(np.float64).reshape(-1)
        conf = _to_numpy(bins["confidence"], "bins['confidence']").astype(np.float64).reshape(-1)
        n = count.size
        if n == 0 or edges.size != n + 1 or acc.size != n or conf.size != n:
            raise ValueError(f"bins must hold n >= 1 counts, accuracies and confidences and n + 1 edges; got "
                             f"{edges.size} edges, {count.size} counts, {acc.size} accuracies, "
                             f"{conf.size} confidences.")
        if not (np.all(np.isfinite(edges)) and np.all(np.diff(edges) > 0) and edges[0] >= 0 and edges[-1] <= 1):
            raise ValueError(f"bins['edges'] must increase strictly within [0, 1], got {edges.tolist()}.")
        if not np.all(np.isfinite(count)) or np.any(count < 0) or np.any(count != np.round(count)):
            raise ValueError(f"bins['count'] must hold non-negative integers, got {count.tolist()}.")
        if count.sum() == 0:
            raise ValueError("bins hold no samples (all counts are 0); nothing to draw.")
        full = count > 0
        for name, v in (("accuracy", acc), ("confidence", conf)):
            if not np.all(np.isfinite(v[full])) or np.any(v[full] < 0) or np.any(v[full] > 1):
                raise ValueError(f"bins['{name}'] must be fractions in [0, 1] for every non-empty bin, "
                                 f"got {v.tolist()}.")
        acc[~full] = np.nan
        conf[~full] = np.nan
        self.edges, self.count, self.accuracy, self.confidence = edges, count.astype(np.int64), acc, conf
        self.full = full

    @property
    def n(self) -> int:
        return int(self.count.size)

    @property
    def total(self) -> int:
        return int(self.count.sum())

    @property
    def fraction(self) -> np.ndarray:
        return self.count / self.total

    @property
    def gap(self) -> np.ndarray:
        """accuracy - confidence per bin (negative: over-confident); NaN for empty bins."""
        return self.accuracy - self.confidence

    def errors(self) -> Tuple[float, float]:
        """(ECE, MCE) of these bins, from :func:`lt_registry.metrics.calibration_errors_from_bins`."""
        return calibration_errors_from_bins({"count": self.count, "accuracy": self.accuracy,
                                             "confidence": self.confidence})

    def mean_accuracy(self) -> float:
        return float(np.nansum(self.count * self.accuracy) / self.total)

    def mean_confidence(self) -> float:
        return float(np.nansum(self.count * self.confidence) / self.total)


def _calibration_errors(b: _Bins, ece: Optional[float], mce: Optional[float], what: str = "") -> Tuple[float, float]:
    """The given ECE/MCE (checked fractions), else those of the bins."""
    if ece is None or mce is None:
        from_bins = b.errors()
        ece = from_bins[0] if ece is None else ece
        mce = from_bins[1] if mce is None else mce
    return _check_fraction(ece, f"{what}ece"), _check_fraction(mce, f"{what}mce")


def _calibration_line(ece: Optional[float], mce: Optional[float]) -> str:
    return f"{metric('ece').label} = {100 * ece:.2f}%   {metric('mce').label} = {100 * mce:.2f}%"


def _draw_reliability(ax: Axes, ax_hist: Axes, b: _Bins, *, legend: bool = True) -> None:
    """Guo et al. (2017, Fig. 1) reliability diagram on ``ax`` and the confidence histogram on ``ax_hist``."""
    left, width = b.edges[:-1], np.diff(b.edges)
    f = b.full
    # Bars: blue up to min(accuracy, confidence), then the gap up to max(accuracy, confidence) in an opaque
    # tint (no alpha blending, so the colours match the legend); a black outline marks the accuracy.
    # The gap runs to the bin's mean confidence, the quantity whose count-weighted mean is ECE.
    low = np.fmin(b.accuracy, b.confidence)
    ax.bar(left[f], low[f], width=width[f], align="edge", color=_C_ACC, linewidth=0, zorder=2)
    over = f & (b.confidence > b.accuracy)
    under = f & (b.confidence < b.accuracy)
    for mask, (face, edge, hatch) in ((over, _GAP_OVER), (under, _GAP_UNDER)):
        if mask.any():
            ax.bar(left[mask], np.abs(b.gap[mask]), bottom=low[mask], width=width[mask], align="edge",
                   facecolor=face, edgecolor=edge, hatch=hatch, linewidth=0.6, zorder=3)
    ax.bar(left[f], b.accuracy[f], width=width[f], align="edge", fill=False, edgecolor="black", linewidth=0.8,
           zorder=4)
    ax.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1.2, zorder=5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Accuracy")
    ax.tick_params(labelbottom=False)
    ax.grid(True, linestyle=":", linewidth=0.5, alpha=0.7, zorder=0)
    ax.set_axisbelow(True)
    if legend:
        # explicit handles: both gap kinds are always listed, so side-by-side panels read the same
        handles = [Patch(facecolor=_C_ACC, edgecolor="black", linewidth=0.8, label="Accuracy (outlined bar)"),
                   Patch(facecolor=_GAP_OVER[0], edgecolor=_GAP_OVER[1], hatch=_GAP_OVER[2], linewidth=0.6,
                         label="Gap: over-confident"),
                   Patch(facecolor=_GAP_UNDER[0], edgecolor=_GAP_UNDER[1], hatch=_GAP_UNDER[2], linewidth=0.6,
                         label="Gap: under-confident"),
                   Line2D([0, 1], [0, 1], linestyle="--", color="black", linewidth=1.2,
                          label="Perfect calibration")]
        ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.9)

    ax_hist.bar(left, b.fraction, width=width, align="edge", color=_C_HIST, edgecolor="black", linewidth=0.5,
                zorder=2)
    ax_hist.axvline(b.mean_accuracy(), color=_C_ACC, linestyle="-", linewidth=1.4,
                    label=f"Avg. accuracy {100 * b.mean_accuracy():.1f}%", zorder=3)
    ax_hist.axvline(b.mean_confidence(), color="#333333", linestyle="--", linewidth=1.4,
                    label=f"Avg. confidence {100 * b.mean_confidence():.1f}%", zorder=3)
    ax_hist.set_xlim(0, 1)
    ax_hist.set_ylim(0, max(1e-9, float(b.fraction.max())) * 1.15)
    ax_hist.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    ax_hist.set_xlabel("Confidence (max softmax probability)")
    ax_hist.set_ylabel("% of samples")
    ax_hist.grid(True, axis="y", linestyle=":", linewidth=0.5, alpha=0.7, zorder=0)
    ax_hist.set_axisbelow(True)
    ax_hist.legend(loc="upper left", fontsize=7, framealpha=0.9)


def _reliability_figure(bins: Mapping[str, Any], title: Optional[str], ece: Optional[float],
                        mce: Optional[float]) -> Figure:
    """Build the figure of :func:`reliability_diagram` (not saved)."""
    b = _Bins(bins)
    ece, mce = _calibration_errors(b, ece, mce)
    fig = _new_figure((5.0, 6.2))
    ax, ax_hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    _draw_reliability(ax, ax_hist, b)
    line = _calibration_line(ece, mce)
    ax.set_title(line if title is None else f"{title}\n{line}", fontsize=10)
    return fig


def reliability_diagram(bins: Mapping[str, Any], path: PathLike, *, title: Optional[str] = None,
                        ece: Optional[float] = None, mce: Optional[float] = None, dpi: int = _DPI) -> Path:
    r"""Draw a reliability diagram (Guo et al. 2017, Fig. 1) and save it as a PNG.

    Top panel: per confidence bin, a black-outlined bar whose height is the accuracy; the gap between
    accuracy and the bin's mean confidence is shaded (vermillion ``//``: over-confident, confidence >
    accuracy, above the bar; green ``\\``: under-confident, the top of the bar down to the confidence), the
    rest of the bar is blue; the dashed identity line is perfect calibration. Bottom panel: the fraction of
    samples per bin, with the average accuracy and average confidence marked. The title carries ECE and MCE
    in percent.

    Args:
        bins: reliability-bin dict (``edges``, ``count``, ``accuracy``, ``confidence``), e.g.
            ``calibration_metrics(probs, labels)['bins']`` (15 equal-width bins by default there).
        path: the ``.png`` file to write (parent folders are created).
        title: first title line (e.g. the run name); the ECE/MCE line follows it.
        ece, mce: fractions as returned by the metrics; when omitted they are computed from ``bins``
            (``ECE = sum_b |B_b|/N |acc_b - conf_b|``, ``MCE = max_b |acc_b - conf_b|``, docs/method.md §6)
            by :func:`lt_registry.metrics.calibration_errors_from_bins`.
        dpi: resolution of the PNG.

    Returns:
        The path written.
    """
    fig = _reliability_figure(bins, title, ece, mce)
    return _save(fig, _prepare_path(path, ".png"), dpi)


def _side_by_side_figure(panels: Sequence[Tuple[str, Mapping[str, Any], Optional[float], Optional[float]]],
                         title: Optional[str]) -> Figure:
    """Build the figure of :func:`reliability_diagrams_side_by_side` (not saved)."""
    if isinstance(panels, (str, bytes)) or not isinstance(panels, Sequence) or len(panels) == 0:
        raise ValueError("panels must be a non-empty list of (label, bins, ece, mce) tuples.")
    checked: List[Tuple[str, _Bins, float, float]] = []
    for i, item in enumerate(panels):
        if not isinstance(item, (tuple, list)) or len(item) != 4:
            raise ValueError(f"panels[{i}] must be a (label, bins, ece, mce) tuple, got {item!r:.80}.")
        label, bins, ece, mce = item
        b = _Bins(bins)
        checked.append((str(label), b, *_calibration_errors(b, ece, mce, f"panels[{i}] ")))
    k = len(checked)
    fig = _new_figure((4.6 * k, 6.2))
    axes = fig.subplots(2, k, sharex=True, sharey="row", gridspec_kw={"height_ratios": [3, 1]}, squeeze=False)
    for j, (label, b, ece, mce) in enumerate(checked):
        _draw_reliability(axes[0, j], axes[1, j], b, legend=j == 0)  # one legend: every panel reads the same
        axes[0, j].set_title(f"{label}\n{_calibration_line(ece, mce)}", fontsize=10)
        if j > 0:
            axes[0, j].set_ylabel("")
            axes[1, j].set_ylabel("")
    # sharey="row" ties the histogram limits; use the largest fraction of all panels
    top = max(float(b.fraction.max()) for _, b, _, _ in checked)
    axes[1, 0].set_ylim(0, top * 1.15)
    if title is not None:
        fig.suptitle(title, fontsize=11)
    return fig


def reliability_diagrams_side_by_side(
        panels: Sequence[Tuple[str, Mapping[str, Any], Optional[float], Optional[float]]], path: PathLike, *,
        title: Optional[str] = None, dpi: int = _DPI) -> Path:
    """Reliability diagrams of several runs next to each other (shared axes), e.g. None-CE vs UniMix-Bayias.

    Args:
        panels: ``(label, bins, ece, mce)`` per run, left to right; ``ece``/``mce`` are fractions or ``None``
            (then computed from ``bins``), see :func:`reliability_diagram`.
        path: the ``.png`` file to write.
        title: an overall title above the panels.
        dpi: resolution of the PNG.

    Returns:
        The path written.
    """
    fig = _side_by_side_figure(panels, title)
    return _save(fig, _prepare_path(path, ".png"), dpi)


# ---- per-bin table -------------------------------------------------------------------------------------

def _fmt(v: float) -> str:
    # repr of a python float is the shortest string that reads back to the same double: exact round trip
    return "" if math.isnan(v) else repr(float(v))


def write_bins_table(bins: Mapping[str, Any], path: PathLike) -> Path:
    """Write the per-bin reliability table as CSV (the run folder's ``calibration/bins.csv``).

    Columns (:data:`BINS_TABLE_COLUMNS`): ``bin`` (index), ``lower``, ``upper`` (edges; bins are right-closed
    ``(lower, upper]`` as in docs/method.md §6), ``count``, ``fraction`` (count / N), ``accuracy``, ``confidence`` and
    ``gap = accuracy - confidence`` (negative: over-confident). Empty bins leave accuracy, confidence and
    gap blank (NaN when read). Floats are written exactly (shortest round-trip repr).

    Returns:
        The path written.
    """
    b = _Bins(bins)
    p = _prepare_path(path)
    frac, gap = b.fraction, b.gap
    with p.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(BINS_TABLE_COLUMNS)
        for i in range(b.n):
            w.writerow([i, _fmt(b.edges[i]), _fmt(b.edges[i + 1]), int(b.count[i]), _fmt(frac[i]),
                        _fmt(b.accuracy[i]), _fmt(b.confidence[i]), _fmt(gap[i])])
    return p


def read_bins_table(path: PathLike) -> Dict[str, Any]:
    """Load a table written by :func:`write_bins_table` back into a reliability-bin dict.

    Returns:
        ``{'edges', 'count', 'accuracy', 'confidence', 'fraction', 'gap'}`` as python lists (NaN for empty
        bins), so ``read_bins_table(p)`` can be passed wherever ``bins`` is accepted. The binning scheme
        string is not stored in the CSV (``metrics.json`` keeps it).
    """
    p = Path(path)
    with p.open("r", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
        header = tuple(rows[0].keys()) if rows else ()
    if not rows:
        raise ValueError(f"{p} holds no bins (expected a header {','.join(BINS_TABLE_COLUMNS)} and one row per bin).")
    if header != BINS_TABLE_COLUMNS:
        raise ValueError(f"{p} has columns {list(header)}; expected {list(BINS_TABLE_COLUMNS)}.")

    def num(s: str) -> float:
        return math.nan if s == "" else float(s)

    if [int(r["bin"]) for r in rows] != list(range(len(rows))):
        raise ValueError(f"{p}: the 'bin' column must run 0..{len(rows) - 1} in order.")
    lower = [num(r["lower"]) for r in rows]
    upper = [num(r["upper"]) for r in rows]
    if lower[1:] != upper[:-1]:
        raise ValueError(f"{p}: bins are not contiguous (each 'lower' must equal the previous 'upper').")
    return {
        "edges": lower + [upper[-1]],
        "count": [int(r["count"]) for r in rows],
        "accuracy": [num(r["accuracy"]) for r in rows],
        "confidence": [num(r["confidence"]) for r in rows],
        "fraction": [num(r["fraction"]) for r in rows],
        "gap": [num(r["gap"]) for r in rows],
    }


# ---- confusion matrix (counts from lt_registry.metrics.confusion_matrix) -------------------------------

def _confusion_figure(cm: Any, class_names: Optional[Sequence[str]], title: Optional[str],
                      annotate: Optional[bool]) -> Figure:
    """Build the figure of :func:`plot_confusion` (not saved)."""
    m = _to_numpy(cm, "cm").astype(np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"cm must be a square [C, C] matrix, got shape {m.shape}.")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("cm must hold finite non-negative counts.")
    C = m.shape[0]
    if class_names is not None and len(class_names) != C:
        raise ValueError(f"class_names has {len(class_names)} entries for a {C}-class matrix.")
    small = C <= 20
    annotate = small if annotate is None else bool(annotate)

    side = min(11.0, max(5.0, 0.42 * C + 2.5)) if small else 8.0
    fig = _new_figure((side + 1.2, side))
    ax = fig.subplots()
    cmap = colormaps["viridis"].with_extremes(bad="#EDEDED")  # a new colormap: the registered one is untouched
    vmax = max(2.0, float(m.max()))
    norm = LogNorm(vmin=1.0, vmax=vmax)
    masked = np.ma.masked_less(m, 1.0)  # 0 counts -> "bad" colour (grey), not -inf on the log scale
    im = ax.imshow(masked, cmap=cmap, norm=norm, interpolation="nearest" if small else "antialiased",
                   origin="upper", aspect="equal")
    cbar = fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
    cbar.set_label("Count (log scale; grey = 0)")
    # 1-2-5 ticks with plain integers: a range of one or two decades would otherwise get only 10^0, 10^1
    cbar.ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}"))
    cbar.ax.yaxis.set_minor_formatter(NullFormatter())

    if small:
        ticks = np.arange(C)
        names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in ticks]
        ax.set_xticks(ticks, labels=names)
        ax.set_yticks(ticks, labels=names)
        if class_names is not None and max(len(n) for n in names) > 2:
            for lab in ax.get_xticklabels():
                lab.set_rotation(45)
                lab.set_horizontalalignment("right")
                lab.set_rotation_mode("anchor")
        fs = 9 if C <= 10 else 7
        ax.tick_params(labelsize=fs)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
    else:
        step = _tick_step(C)
        ticks = np.arange(0, C, step)
        ax.set_xticks(ticks, labels=[str(t) for t in ticks])
        ax.set_yticks(ticks, labels=[str(t) for t in ticks])
        ax.set_xlabel("Predicted class (index)")
        ax.set_ylabel("True class (index)")
    if annotate:
        rgba = cmap(norm(np.clip(m, 1.0, vmax)))
        lum = 0.299 * rgba[..., 0] + 0.587 * rgba[..., 1] + 0.114 * rgba[..., 2]
        fs = 8 if C <= 10 else 6
        for t in range(C):
            for q in range(C):
                if m[t, q] > 0:
                    ax.text(q, t, f"{m[t, q]:.0f}", ha="center", va="center", fontsize=fs,
                            color="white" if lum[t, q] < 0.5 else "black")
    ax.set_title("Confusion matrix" if title is None else title, fontsize=11)
    return fig


def plot_confusion(cm: Any, path: PathLike, class_names: Optional[Sequence[str]] = None, *,
                   title: Optional[str] = None, annotate: Optional[bool] = None, dpi: int = _DPI) -> Path:
    """Plot a confusion matrix (rows: true class, columns: predicted class) with a logarithmic colour scale.

    Counts are coloured with ``LogNorm`` from 1 to the largest count; zero cells are masked and drawn in
    light grey, so the log scale never sees a 0. Up to 20 classes every class is ticked (with
    ``class_names`` when given) and, by default, each non-zero cell is annotated with its count; above 20
    classes ticks are sparse class indices on a 1-2-5 step (e.g. every 10th of 100, every 100th of 1000).

    Args:
        cm: [C, C] counts (tensor or array), e.g. from :func:`lt_registry.metrics.confusion_matrix`.
        path: the ``.png`` file to write.
        class_names: C names for the ticks (used when C <= 20).
        title: figure title (default "Confusion matrix").
        annotate: write counts in the cells; default: when C <= 20.
        dpi: resolution of the PNG.

    Returns:
        The path written.
    """
    fig = _confusion_figure(cm, class_names, title, annotate)
    return _save(fig, _prepare_path(path, ".png"), dpi)


# ---- per-class accuracy ------------------------------------------------------------------------------

def _per_class_figure(per_class_acc: Any, class_counts: Any, class_names: Optional[Sequence[str]],
                      many: int, few: int, percent: bool, title: Optional[str]) -> Figure:
    """Build the figure of :func:`plot_per_class_accuracy` (not saved)."""
    acc = _to_numpy(per_class_acc, "per_class_acc").astype(np.float64).reshape(-1)
    counts = _to_numpy(class_counts, "class_counts").astype(np.float64).reshape(-1)
    C = acc.size
    if C == 0 or counts.size != C:
        raise ValueError(f"per_class_acc and class_counts must both have C >= 1 entries, got {acc.size} and "
                         f"{counts.size}.")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("class_counts must be finite and non-negative.")
    top = 100.0 if percent else 1.0
    ok = ~np.isnan(acc)
    if np.any(acc[ok] < 0) or np.any(acc[ok] > top):
        raise ValueError(f"per_class_acc must lie in [0, {top:g}] ({'percent' if percent else 'fractions'}"
                         f"{'' if percent else '; pass percent=True for values in percent'}).")
    if class_names is not None and len(class_names) != C:
        raise ValueError(f"class_names has {len(class_names)} entries for {C} classes.")

    order = np.argsort(-counts, kind="stable")
    a, n = acc[order], counts[order]
    colours = np.where(n > many, _C_MANY, np.where(n < few, _C_FEW, _C_MEDIUM))
    x = np.arange(C)
    small = C <= 20
    fig = _new_figure((max(6.0, min(12.0, 0.45 * C + 3.0)) if small else 10.0, 4.6))
    ax = fig.subplots()
    okc = ~np.isnan(a)
    ax.bar(x[okc], a[okc], width=0.8 if small else 1.0, color=colours[okc],
           edgecolor="black" if small else "none", linewidth=0.5 if small else 0.0, zorder=2)
    ax.set_ylim(0, top * 1.02)
    ax.set_xlim(-0.6, C - 0.4)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=top, decimals=0))
    ax.set_ylabel("Test accuracy")
    ax.grid(True, axis="y", linestyle=":", linewidth=0.5, alpha=0.7, zorder=0)
    ax.set_axisbelow(True)
    if small:
        names = ([str(class_names[i]) for i in order] if class_names is not None else [str(i) for i in order])
        ax.set_xticks(x, labels=names)
        if max(len(s) for s in names) > 2:
            for lab in ax.get_xticklabels():
                lab.set_rotation(45)
                lab.set_horizontalalignment("right")
                lab.set_rotation_mode("anchor")
        ax.set_xlabel("Class (ordered by training count)")
    else:
        step = _tick_step(C)
        ax.set_xticks(np.arange(0, C, step))
        ax.set_xlabel("Class rank by training count (0 = most frequent)")

    ax2 = ax.twinx()
    pos = np.maximum(n, 0.5)  # a log axis cannot show 0; a class with no training image sits at 0.5
    ax2.plot(x, pos, color="black", marker="o" if small else None, markersize=3.5, linewidth=1.3, zorder=3)
    ax2.set_yscale("log")
    ax2.set_ylim(max(0.4, pos.min() / 2), pos.max() * 2)
    ax2.yaxis.set_major_locator(LogLocator(base=10))
    ax2.set_ylabel("Training images per class (log)")

    handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.5, label=lab)
               for c, lab in ((_C_MANY, f"{metric('many').label} (> {many})"),
                              (_C_MEDIUM, f"{metric('medium').label} ({few}-{many})"),
                              (_C_FEW, f"{metric('few').label} (< {few})"))]
    handles.append(ax2.lines[0])
    handles[-1].set_label("Training count")
    # below the axes: never over the bars or the count line, and clear of the title
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    if title is not None:
        ax.set_title(title, fontsize=11)
    return fig


def plot_per_class_accuracy(per_class_acc: Any, class_counts: Any, path: PathLike, *,
                            class_names: Optional[Sequence[str]] = None, many: int = 100, few: int = 20,
                            percent: bool = False, title: Optional[str] = None, dpi: int = _DPI) -> Path:
    """Bar chart of per-class test accuracy, classes ordered by training count, counts on a log twin axis.

    Bars are coloured by the docs/method.md §6 split: many-shot (count > ``many``), medium, few-shot (count < ``few``).
    Classes with an undefined accuracy (NaN: absent from the test set) get no bar.

    Args:
        per_class_acc: [C] accuracies, fractions (or percent with ``percent=True``), e.g.
            ``evaluate_predictions(...)['per_class_accuracy']``.
        class_counts: [C] training counts.
        path: the ``.png`` file to write.
        class_names: C names, used as tick labels when C <= 20 (else sparse ranks are ticked).
        many, few: split thresholds (docs/method.md §6: 100 and 20).
        percent: ``per_class_acc`` is in percent (0-100) rather than fractions.
        title: figure title.
        dpi: resolution of the PNG.

    Returns:
        The path written.
    """
    fig = _per_class_figure(per_class_acc, class_counts, class_names, many, few, percent, title)
    return _save(fig, _prepare_path(path, ".png"), dpi)
