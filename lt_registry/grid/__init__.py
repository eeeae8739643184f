"""The ablation grid (the paper's Table 4: mixers x losses, per dataset and imbalance factor) as data.

- :mod:`~lt_registry.grid.cells`: the axis specs (mixer ``name[:preset]``, loss ``name[+drw]``), one
  :class:`Cell` per training run, the expansion of a grid into cells, and the cells' status vocabulary;
- :mod:`~lt_registry.grid.gridfile`: the grid-file schema and the options ``train.py`` resolves per cell;
- :mod:`~lt_registry.grid.results`: rows from the run folders, groups over seeds, ``results.csv`` / ``results.md``
  next to the paper's numbers (``paper_tables.yaml``);
- :mod:`~lt_registry.grid.figure`: ``results.png``; :mod:`~lt_registry.grid.outputs`: all three report files.

``recipes/ablation.py`` runs the cells (one ordinary ``recipes/train.py`` run each) and records them in
``grid.json``. A new grid axis value is a registered mixer, loss or dataset: the grid picks up its name, label
and table order from the registry.
"""
from .cells import (FAILED, INCOMPLETE, INTERRUPTED, OK, PENDING, RUNNING, STATUSES, Cell, GridError, LossSpec,
                    MixSpec, canonical_order, cell_from_run_dir, cell_matches, cell_status, expand_grid,
                    folder_status, format_rho, make_cell)
from .gridfile import GRID_KEYS, GridSettings, build_cells, load_grid_file, resolve_grid
from .results import (RESULT_COLUMNS, Group, aggregate, collect_results, format_duration, paper_reference,
                      paper_tables, results_markdown, write_results_csv)

__all__ = [
    "Cell", "MixSpec", "LossSpec", "GridError", "make_cell", "expand_grid", "cell_matches", "format_rho",
    "cell_from_run_dir", "canonical_order", "folder_status", "cell_status",
    "OK", "FAILED", "INTERRUPTED", "INCOMPLETE", "RUNNING", "PENDING", "STATUSES",
    "GRID_KEYS", "GridSettings", "load_grid_file", "resolve_grid", "build_cells",
    "RESULT_COLUMNS", "Group", "collect_results", "aggregate", "write_results_csv", "results_markdown",
    "write_report", "paper_tables", "paper_reference", "format_duration", "plot_results",
]


def __getattr__(name):  # the figure needs matplotlib: imported on first use
    if name == "plot_results":
        from .figure import plot_results
        return plot_results
    if name == "write_report":
        from .outputs import write_report
        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
