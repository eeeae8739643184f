#!/usr/bin/env python
"""Reliability diagrams of several runs side by side, on shared axes (e.g. None-CE vs UniMix-Bayias).

    python recipes/compare_calibration.py output/train/<run-a> output/train/<run-b> --output compare.png
    python recipes/compare_calibration.py results/<grid>/runs/<cell-a>=None-CE results/<grid>/runs/<cell-b>=UniMix-Bayias \\
        --title "CIFAR-10-LT rho 100" --output results/<grid>/reliability_side_by_side.png

Each argument is a folder with ``metrics.json`` and ``calibration/bins.csv``: a training run folder, an
``evaluate.py`` report folder, or a cell published by ``ablation.py --publish``. ``FOLDER=LABEL`` names its
panel (default: ``<mixer>-<loss>`` from the folder's metrics). ECE and MCE in each panel's title are the
run's own numbers (15 equal-width bins, docs/method.md §6), the bars are its stored bins: nothing is recomputed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple


def parse_source(arg: str) -> Tuple[Path, Optional[str]]:
    folder, sep, label = arg.partition("=")
    return Path(folder), (label if sep else None)


def panel(folder: Path, label: Optional[str]) -> Tuple[str, Dict[str, Any], Optional[float], Optional[float]]:
    """``(label, bins, ece, mce)`` of one run folder, fractions as :func:`reliability_diagrams_side_by_side` wants."""
    from lt_registry.report import read_bins_table

    metrics_file, bins_file = folder / "metrics.json", folder / "calibration" / "bins.csv"
    for f in (metrics_file, bins_file):
        if not f.is_file():
            raise ValueError(f"{folder} has no {f.relative_to(folder)}: expected a run folder, an evaluate.py report "
                             "or a published grid cell")
    try:
        m = json.loads(metrics_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{metrics_file} is not valid JSON: {e}") from None
    final = m.get("final") or {}
    if label is None:
        lt = m.get("lt") or {}
        label = f"{lt.get('mixer', '?')}-{lt.get('loss', '?')}"
        if "top1" in final:
            label += f" (top-1 {final['top1']:.2f}%)"
    ece, mce = final.get("ece"), final.get("mce")
    return (label, read_bins_table(bins_file), None if ece is None else ece / 100.0,
            None if mce is None else mce / 100.0)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="compare_calibration.py", description=__doc__.split("\n\n")[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("sources", nargs="+", metavar="FOLDER[=LABEL]")
    p.add_argument("--output", required=True, help="the .png to write")
    p.add_argument("--title", default=None, help="a title above the panels")
    args = p.parse_args(argv)
    from lt_registry.report import reliability_diagrams_side_by_side

    try:
        panels = [panel(*parse_source(s)) for s in args.sources]
        path = reliability_diagrams_side_by_side(panels, args.output, title=args.title)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
