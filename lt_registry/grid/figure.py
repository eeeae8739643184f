"""The grid's figure, ``results.png``: per (dataset, rho, epochs) block, grouped bars of top-1 and ECE, drawn
with the report module's figure helpers."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

from matplotlib.patches import Patch

from ..metrics.table import metric
from ..report import _new_figure, _prepare_path, _save
from .results import Group, baseline_label, block_title, blocks_of, ordered

__all__ = ["plot_results"]

# Okabe-Ito (colour-blind safe); grey for the no-mixing baseline
_BASELINE_COLOUR = "#8C8C8C"
_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
#: the two panels per block: (metric key, axis label)
_PANELS = (("top1", f"{metric('top1').label.lower()} accuracy (%)"), ("ece", f"{metric('ece').label} (%, 15 bins)"))


def plot_results(groups: Sequence[Group], path: Union[str, Path], *, title: str = "", dpi: int = 130) -> Path:
    """``results.png``: per (dataset, rho, epochs) block, grouped bars of top-1 and ECE: one group per loss,
    one bar per mixer, error bars = std over seeds, the value above each bar; cells without a result are marked."""
    path = _prepare_path(path, ".png")
    blocks = blocks_of(groups)
    base = baseline_label()
    all_rows = ordered([g.row for g in groups], first=base)
    others = iter(_COLOURS * (len(all_rows) // len(_COLOURS) + 1))
    colour = {r: _BASELINE_COLOUR if r == base else next(others) for r in all_rows}
    n_bars = max((len({g.row for g in groups if g.block == b}) * len({g.col for g in groups if g.block == b})
                  for b in blocks), default=1)
    panel_w = min(11.0, max(4.5, 0.42 * n_bars + 1.5))
    fig = _new_figure((2 * panel_w, 3.4 * max(len(blocks), 1) + 0.8))
    axes = fig.subplots(max(len(blocks), 1), 2, squeeze=False)
    for bi, block in enumerate(blocks):
        bg = [g for g in groups if g.block == block]
        rows = [r for r in all_rows if any(g.row == r for g in bg)]
        cols = ordered([g.col for g in bg])
        by = {(g.row, g.col): g for g in bg}
        width = 0.8 / len(rows)
        many = len(rows) * len(cols) > 12
        for ax, (key, what) in zip(axes[bi], _PANELS):
            top = 0.0
            for ri, r in enumerate(rows):
                for ci, c in enumerate(cols):
                    x = ci - 0.4 + width * (ri + 0.5)
                    g = by.get((r, c))
                    mean, std = g.stat(key) if g is not None else (None, None)
                    if mean is None:
                        ax.annotate(g.missing if g is not None else "not in grid", (x, 0), xytext=(0, 3),
                                    textcoords="offset points", rotation=90, ha="center", va="bottom", fontsize=7,
                                    color="#555555")
                        continue
                    ax.bar(x, mean, width * 0.92, color=colour[r], edgecolor="white", linewidth=0.5,
                           yerr=std, capsize=2 if std else 0, error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
                    y = mean + (std or 0.0)
                    top = max(top, y)
                    ax.annotate(f"{mean:.1f}", (x, y), xytext=(0, 2), textcoords="offset points",
                                rotation=90 if many else 0, ha="center", va="bottom", fontsize=7 if many else 8)
            ax.set_xticks(range(len(cols)), cols)
            ax.set_xlim(-0.55, len(cols) - 0.45)
            limit = max(top * (1.22 if many else 1.14), 5.0)
            ax.set_ylim(0, min(100.0, limit) if key == "top1" else limit)
            ax.set_ylabel(what)
            ax.set_title(f"{block_title(block)}: {what.split(' (')[0]}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            ax.set_axisbelow(True)
            ax.tick_params(axis="x", labelsize=9)
    if not blocks:
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no cells", ha="center", va="center", transform=ax.transAxes)
    handles = [Patch(facecolor=colour[r], label=r) for r in all_rows]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False,
                   title="bars: mixer; groups: loss", fontsize=9, title_fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path, dpi)
