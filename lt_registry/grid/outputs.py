"""The grid's report files in one call: ``results.csv``, ``results.md`` (:mod:`.results`) and ``results.png``
(:mod:`.figure`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Sequence

from .cells import Cell
from .figure import plot_results
from .results import PathLike, aggregate, collect_results, report_header, results_markdown, write_results_csv

__all__ = ["write_report"]


def write_report(out: PathLike, cells: Sequence[Cell], records: Mapping[str, Mapping[str, Any]],
                 record: Mapping[str, Any], title: str, path_str: Callable[[Path], str] = str) -> Dict[str, Any]:
    """Write ``results.csv``, ``results.md`` and ``results.png`` into ``out`` from the run folders in
    ``out/runs`` (logs in ``out/logs``) and grid.json's ``record``. Returns ``{"rows": ..., "groups": ...}``."""
    out = Path(out)
    rows = collect_results(cells, out / "runs", records, logs_dir=out / "logs", path_str=path_str)
    groups = aggregate(rows)
    header = report_header(record, records, path_str(out / "runs"))
    write_results_csv(rows, out / "results.csv")
    (out / "results.md").write_text(results_markdown(rows, title=title, header=header, groups=groups))
    plot_results(groups, out / "results.png", title=title.replace("`", ""))
    return {"rows": rows, "groups": groups}
