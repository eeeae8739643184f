"""The grid's results: one row per cell read from its run folder's ``metrics.json``, the rows grouped over seeds,
and the report files ``results.csv``, ``results.md`` (tables shaped like the paper's Table 4, next to the paper's
own numbers from ``paper_tables.yaml``) and ``results.png`` (:mod:`lt_registry.grid.figure`).

Metric columns come from the one metric table (:mod:`lt_registry.metrics.table`, ``in_grid``); mixer and loss
labels from the registries. Nothing here starts a process or prints.
"""
from __future__ import annotations

import csv
import functools
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from ..config import TRAIN_ARGS_FILE, read_yaml_mapping
from ..metrics.table import metric_keys
from ..paths import repository_root, run_paths, scrub_file, structure_paths
from ..provenance import describe_segments, format_duration, hardware_line
from .cells import (FAILED, INCOMPLETE, INTERRUPTED, OK, PENDING, STATUSES, Cell, GridError, LossSpec, MixSpec,
                    cell_status, folder_status, format_rho)

__all__ = ["RESULT_COLUMNS", "collect_results", "write_results_csv", "Group", "aggregate", "PaperTables",
           "paper_tables", "paper_reference", "format_duration", "results_markdown", "report_header",
           "publish", "PUBLISHED_RUN_FILES", "PUBLISHED_REPORT_FILES", "timestamp", "read_grid_json", "recorded_cells",
           "summary_lines"]

PathLike = Union[str, Path]
#: the columns of results.csv, one row per cell
RESULT_COLUMNS = ["name", "status", "dataset", "imb_factor", "mix", "preset", "mix_spec", "loss", "drw", "loss_spec",
                  "variant", "seed", "epochs", *metric_keys("grid"), "wall_s", "train_s", "peak_gpu_memory_mb",
                  "peak_host_rss_mb", "commit", "trained_in", "error", "run_dir", "log"]
_CELL_COLUMNS = ("name", "dataset", "imb_factor", "mix", "preset", "mix_spec", "loss", "drw", "loss_spec", "variant",
                 "seed", "epochs")


# ---- rows -----------------------------------------------------------------------------------------------------
def _read_metrics(path: Path) -> Tuple[Optional[Dict[str, Any]], str]:
    try:
        m = json.loads(path.read_text())
        if not isinstance(m.get("final"), dict):
            return None, f"{path} has no 'final' block"
        return m, ""
    except (OSError, ValueError) as e:
        return None, f"{path} unreadable: {e}"


def _number(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def collect_results(cells: Sequence[Cell], runs_dir: PathLike, records: Optional[Mapping[str, Mapping[str, Any]]] = None,
                    logs_dir: Optional[PathLike] = None, path_str: Callable[[Path], str] = str) -> List[Dict[str, Any]]:
    """One row per cell (:data:`RESULT_COLUMNS`), read from ``runs_dir/<cell>/metrics.json`` (numbers in percent,
    as stored).

    ``status`` is the cell's (:func:`~lt_registry.grid.cells.cell_status`; ``failed`` also for an unreadable
    metrics.json). ``records`` are grid.json's per-cell entries (status, error, wall_s, log). ``path_str`` writes
    the ``run_dir`` and ``log`` columns (the recipe records them relative to the repository).
    """
    records = records or {}
    rows = []
    for c in cells:
        run = Path(runs_dir) / c.name
        rec = records.get(c.name, {})
        row: Dict[str, Any] = {k: None for k in RESULT_COLUMNS}
        d = c.to_dict()
        row.update({k: d[k] for k in _CELL_COLUMNS})
        row["run_dir"] = path_str(run)
        log = Path(logs_dir) / f"{c.name}.log" if logs_dir else (Path(rec["log"]) if rec.get("log") else None)
        row["log"] = path_str(log) if log is not None and log.is_file() else None
        row["wall_s"] = rec.get("wall_s")
        row["status"], row["error"] = cell_status(run, rec), ""
        if row["status"] in (FAILED, INTERRUPTED):
            row["error"] = rec.get("error") or ""
        if row["status"] != OK:
            rows.append(row)
            continue
        m, err = _read_metrics(run / "metrics.json")
        if m is None:
            row["status"], row["error"] = FAILED, err
            rows.append(row)
            continue
        for k in metric_keys("grid"):
            row[k] = _number(m["final"].get(k))
        lt = m.get("lt") or {}
        if lt.get("epochs") is not None:
            row["epochs"] = int(lt["epochs"])
        if row["imb_factor"] is None and lt.get("imb_factor") is not None:
            row["imb_factor"] = float(lt["imb_factor"])
        row["commit"] = (lt.get("versions") or {}).get("lt_registry_commit")
        segments = m.get("segments") if isinstance(m.get("segments"), list) else []
        commits = [seg["git_commit"] for seg in segments if isinstance(seg, dict) and seg.get("git_commit")]
        if commits:  # every commit that trained part of the run, in order
            row["commit"] = "+".join(dict.fromkeys(commits))
        row["trained_in"] = describe_segments(segments)
        times = [e.get("epoch_time_s") for e in m.get("epochs") or [] if isinstance(e, dict)]
        times = [t for t in times if isinstance(t, (int, float))]
        row["train_s"] = round(sum(times), 2) if times else None
        res = m.get("resources") if isinstance(m.get("resources"), dict) else {}
        if isinstance(res.get("wall_time_s"), (int, float)):
            row["train_s"] = float(res["wall_time_s"])  # the run's own clock, evaluation included
        for k in ("peak_gpu_memory_mb", "peak_host_rss_mb"):
            row[k] = res.get(k) if isinstance(res.get(k), (int, float)) else None
        rows.append(row)
    return rows


def write_results_csv(rows: Sequence[Mapping[str, Any]], path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in RESULT_COLUMNS})
    return path


# ---- groups ---------------------------------------------------------------------------------------------------
#: the no-mixing mixer: the row the gains are measured against
BASELINE_MIX = "none"


@dataclass
class Group:
    """The seeds of one (dataset, rho, epochs, mixer row, loss column) table cell."""

    dataset: str
    imb_factor: Optional[float]
    epochs: Optional[int]
    row: str
    col: str
    mix_spec: str
    loss_spec: str
    variant: str
    rows: List[Dict[str, Any]] = field(default_factory=list)
    gain: Optional[float] = None  # top-1 mean minus the no-mixing row's, same loss

    @property
    def ok(self) -> List[Dict[str, Any]]:
        return [r for r in self.rows if r["status"] == OK]

    @property
    def n(self) -> int:
        return len(self.ok)

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    def stat(self, key: str) -> Tuple[Optional[float], Optional[float]]:
        """(mean, sample std over seeds; None with fewer than two)."""
        vals = [r[key] for r in self.ok if r.get(key) is not None]
        if not vals:
            return None, None
        mean = sum(vals) / len(vals)
        if len(vals) < 2:
            return mean, None
        return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))

    @property
    def is_baseline(self) -> bool:
        return self.mix_spec == BASELINE_MIX and not self.variant

    @property
    def block(self) -> Tuple[str, Optional[float], Optional[int]]:
        return (self.dataset, self.imb_factor, self.epochs)

    @property
    def missing(self) -> str:
        """Why a group has no result: the worst status among its cells."""
        for s in (FAILED, INTERRUPTED, INCOMPLETE):
            if self.count(s):
                return s
        return PENDING


def baseline_label() -> str:
    return MixSpec(BASELINE_MIX).label


def aggregate(rows: Sequence[Mapping[str, Any]]) -> List[Group]:
    """Group the rows over seeds (first-appearance order) and set each group's gain over the no-mixing row."""
    groups: Dict[Tuple[Any, ...], Group] = {}
    for r in rows:
        row = MixSpec(r["mix"], r.get("preset")).label + (f" [{r['variant']}]" if r.get("variant") else "")
        col = LossSpec(r["loss"], bool(r.get("drw"))).label
        key = (r["dataset"], r["imb_factor"], r["epochs"], row, col)
        if key not in groups:
            groups[key] = Group(r["dataset"], r["imb_factor"], r["epochs"], row, col, r["mix_spec"], r["loss_spec"],
                                r.get("variant") or "")
        groups[key].rows.append(dict(r))
    # a cell without a result may not know its epochs or its rho (the dataset's default is only known once it
    # ran): file it under the one block it fits, when there is exactly one
    out = list(groups.values())
    for g in [g for g in out if g.epochs is None or g.imb_factor is None]:
        homes = {h.block for h in out if h.dataset == g.dataset and h.n and h.epochs is not None
                 and h.imb_factor is not None and g.epochs in (None, h.epochs) and g.imb_factor in (None, h.imb_factor)}
        if len(homes) == 1:
            _, g.imb_factor, g.epochs = homes.pop()
            twin = next((h for h in out if h is not g and (h.block, h.row, h.col) == (g.block, g.row, g.col)), None)
            if twin is not None:
                twin.rows += g.rows
                out.remove(g)
    for g in out:
        base = next((b for b in out if b.is_baseline and b.block == g.block and b.col == g.col), None)
        if base is not None and not g.is_baseline:
            a, b = g.stat("top1")[0], base.stat("top1")[0]
            g.gain = None if a is None or b is None else a - b
    return out


def ordered(names: Iterable[str], first: Optional[str] = None) -> List[str]:
    """Unique names in first-appearance order, ``first`` (the baseline row) moved to the front."""
    seen: List[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    if first in seen:
        seen.remove(first)
        seen.insert(0, first)
    return seen


def blocks_of(groups: Iterable[Group]) -> List[Tuple[str, Optional[float], Optional[int]]]:
    out: List[Tuple[str, Optional[float], Optional[int]]] = []
    for g in groups:
        if g.block not in out:
            out.append(g.block)
    return out


def block_title(block: Tuple[str, Optional[float], Optional[int]]) -> str:
    ds, rho, ep = block
    return ds + (f", ρ = {format_rho(rho)}" if rho is not None else "") + (f", {ep} epochs" if ep is not None else "")


# ---- the paper's numbers --------------------------------------------------------------------------------------
Key = Tuple[str, float, str, str]  # (dataset, rho, mixer name (no preset), loss spec)


@dataclass(frozen=True)
class PaperTables:
    """The paper's reference numbers (docs/method.md §7): top-1 from Tables 1 and 4, (ECE, MCE) from Table 2, in
    percent, keyed ``(dataset, rho, mixer name, loss spec)`` (the paper reports one UniMix: no preset)."""

    top1: Dict[Key, float]
    calibration: Dict[Key, Tuple[float, float]]


def _key(dataset: Any, rho: Any, mix: Any, loss: Any) -> Key:
    """The paper reports one UniMix: a cell of either preset is compared with it (the key drops the preset)."""
    return (str(dataset), float(rho), MixSpec.parse(str(mix)).name, LossSpec.parse(str(loss)).spec)


def load_paper_tables(text: str, where: str = "paper tables") -> PaperTables:
    """Parse a paper-tables YAML (the layout of ``lt_registry/grid/paper_tables.yaml``); ValueError naming what
    is wrong."""
    data = yaml.safe_load(text) or {}
    top1: Dict[Key, float] = {}
    try:
        for table in data.get("top1") or []:
            rhos = table["imb_factor"]
            for row in table["rows"]:
                for ds, values in row.items():
                    if ds in ("mix", "loss"):
                        continue
                    if len(values) != len(rhos):
                        raise ValueError(f"table {table.get('table')}, {row['mix']} / {row['loss']}, {ds}: "
                                         f"{len(values)} values for {len(rhos)} imbalance factors")
                    for rho, v in zip(rhos, values):
                        top1[_key(ds, rho, row["mix"], row["loss"])] = float(v)
        cal = {_key(r["dataset"], r["imb_factor"], r["mix"], r["loss"]): (float(r["ece"]), float(r["mce"]))
               for r in (data.get("calibration") or {}).get("rows") or []}
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{where}: malformed ({type(e).__name__}: {e})") from None
    return PaperTables(top1, cal)


@functools.lru_cache(maxsize=1)
def paper_tables() -> PaperTables:
    """The paper's numbers shipped with the package (``lt_registry/grid/paper_tables.yaml``)."""
    text = resources.files(__package__).joinpath("paper_tables.yaml").read_text(encoding="utf-8")
    return load_paper_tables(text, "lt_registry/grid/paper_tables.yaml")


def paper_reference(group: Group) -> Tuple[Optional[float], Optional[Tuple[float, float]]]:
    """(top-1, (ECE, MCE)) the paper reports for this group's setting, where it reports one."""
    if group.variant or group.imb_factor is None:
        return None, None
    key = _key(group.dataset, group.imb_factor, group.mix_spec, group.loss_spec)
    t = paper_tables()
    return t.top1.get(key), t.calibration.get(key)


# ---- markdown -------------------------------------------------------------------------------------------------
def _num(v: Optional[float], digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _stat(g: Group, key: str) -> str:
    mean, std = g.stat(key)
    if mean is None:
        return "n/a"
    return _num(mean) + (f" ± {_num(std)}" if std is not None else "")


def _signed(v: float) -> str:
    return f"{v:+.2f}"


def _note(g: Group, typical_n: int) -> str:
    bits = []
    if g.n != typical_n:
        bits.append(f"n={g.n}")
    bad = len(g.rows) - g.n
    if bad:
        bits.append(f"{bad} {g.missing}")
    return f" [{', '.join(bits)}]" if bits else ""


def _grid_table(groups: List[Group], rows: List[str], cols: List[str], cell_fn) -> List[str]:
    by = {(g.row, g.col): g for g in groups}
    lines = ["| Mixer \\ Loss | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in rows:
        cells = [cell_fn(by[(r, c)]) if (r, c) in by else "—" for c in cols]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return lines


#: the Table-4-shaped panels after top-1: (heading, metric keys shown "a / b / c")
_PANELS = (("**ECE / MCE** (15 bins)", ("ece", "mce")),
           ("**Many / Medium / Few** top-1", ("many", "medium", "few")),
           ("**Head / Mid / Tail** top-1 (class-index thirds, docs/method.md §6)", ("head", "mid", "tail")))


def results_markdown(rows: Sequence[Mapping[str, Any]], *, title: str = "Ablation grid",
                     header: Sequence[str] = (), groups: Optional[List[Group]] = None) -> str:
    """``results.md``: per (dataset, rho, epochs) tables shaped like the paper's Table 4 (rows = mixers,
    columns = losses) for top-1 with the gain over the no-mixing row, ECE / MCE, many / medium / few and
    head / mid / tail; then the same numbers in long form, the paper's reference values and the failed cells."""
    groups = aggregate(rows) if groups is None else groups
    n_status: Dict[str, int] = {}
    for r in rows:
        n_status[r["status"]] = n_status.get(r["status"], 0) + 1
    base = baseline_label()
    out = [f"# {title}", ""]
    out += [f"- {h}" for h in header]
    out.append(f"- cells: {len(rows)} (" + ", ".join(f"{n_status[k]} {k}" for k in sorted(
        n_status, key=lambda k: (STATUSES.index(k) if k in STATUSES else len(STATUSES), k))) + ")")
    out += ["", "Numbers in percent at the final epoch (no best-epoch selection); mean ± sample std over seeds. "
            f"Gain (in parentheses) = top-1 minus the *{base}* (no mixing) row with the same loss. Many / medium / few: "
            "classes with > 100, 20-100, < 20 training images.", ""]

    for block in blocks_of(groups):
        bg = [g for g in groups if g.block == block]
        row_names = ordered([g.row for g in bg], first=base)
        col_names = ordered([g.col for g in bg])
        ns = [g.n for g in bg if g.n]
        typical = max(set(ns), key=ns.count) if ns else 0
        seeds = sorted({r["seed"] for g in bg for r in g.ok})
        out += [f"## {block_title(block)}", ""]
        uneven = any(g.n != typical or len(g.rows) != g.n for g in bg)
        out.append(f"{typical} seed(s) per cell" + (f" (seeds {', '.join(map(str, seeds))})" if seeds else "")
                   + ("; [n=k] marks a cell with a different count, and cells without a result." if uneven else ".")
                   + " — : not in the grid.")
        out += ["", f"**Top-1 accuracy** (gain over {base})", ""]

        def top1_cell(g: Group) -> str:
            if not g.n:
                return g.missing
            s = _stat(g, "top1")
            if g.gain is not None:
                s += f" ({_signed(g.gain)})"
            return s + _note(g, typical)

        out += _grid_table(bg, row_names, col_names, top1_cell)
        for heading, keys in _PANELS:
            out += ["", heading, ""]
            out += _grid_table(bg, row_names, col_names,
                               lambda g, keys=keys: " / ".join(_stat(g, k) for k in keys) if g.n else g.missing)
        refs = {(g.row, g.col): paper_reference(g) for g in bg}
        if any(t is not None for t, _ in refs.values()):
            out += ["", "Paper (docs/method.md §7: Tables 1 and 4; ResNet-32, 200 epochs), top-1 for the same cells:",
                    ""]
            out += _grid_table(bg, row_names, col_names,
                               lambda g: _num(refs[(g.row, g.col)][0]) if refs[(g.row, g.col)][0] is not None else "—")
            if block[2] is not None and block[2] != 200:
                out += ["", f"These runs trained {block[2]} epochs, the paper 200: compare the ordering, not the values."]
        out.append("")

    with_ref = any(paper_reference(g) != (None, None) for g in groups)
    out += ["## Long form", "",
            "| dataset | ρ | epochs | mixer | loss | n | top-1 | gain | ECE | MCE | many | medium | few | "
            + ("paper top-1 | paper ECE / MCE | " if with_ref else "") + "wall / run | status |",
            "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if with_ref else "")
            + "---:|---|"]
    for g in groups:
        t, cal = paper_reference(g)
        status = ", ".join(f"{g.count(s)} {s}" for s in STATUSES if g.count(s))
        ref = [_num(t) if t is not None else "", f"{_num(cal[0])} / {_num(cal[1])}" if cal else ""] if with_ref else []
        out.append("| " + " | ".join([
            g.dataset, format_rho(g.imb_factor) or "default", str(g.epochs if g.epochs is not None else "?"), g.row,
            g.col, str(g.n), _stat(g, "top1"), _signed(g.gain) if g.gain is not None else "",
            _stat(g, "ece"), _stat(g, "mce"), _stat(g, "many"), _stat(g, "medium"), _stat(g, "few"), *ref,
            format_duration(g.stat("wall_s")[0], short=True), status]) + " |")

    done = [r for r in rows if r["status"] == OK]
    if done:
        out += ["", "## Provenance", "",
                "What trained each finished run: every process lifetime (a resumed run has several) with its epochs, "
                "library commit, machine and wall time, from the run's metrics.json.", ""]
        out += [f"- `{r['name']}`: " + (r.get("trained_in") or f"commit {r.get('commit') or 'unknown'} (the run "
                                        "predates per-segment records), " + format_duration(r.get("train_s")))
                for r in done]

    bad = [r for r in rows if r["status"] in (FAILED, INTERRUPTED)]
    if bad:
        out += ["", "## Failed cells", ""]
        for r in bad:
            err = (r.get("error") or "").replace("|", "\\|").strip() or "(no message)"
            out.append(f"- `{r['name']}` ({r['status']}): {err}" + (f" — log: `{r['log']}`" if r.get("log") else ""))
    return "\n".join(out) + "\n"


# ---- the report files -----------------------------------------------------------------------------------------
def timestamp() -> str:
    """Local time as grid.json and the report record it: ``2026-11-23T14:09:31+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_grid_json(out: PathLike) -> Dict[str, Any]:
    """``out/grid.json`` (written by ``recipes/ablation.py``) as a dict; ``{}`` when there is none."""
    f = Path(out) / "grid.json"
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise GridError(f"{f} is unreadable ({e}); move it away to start a fresh record") from None


def recorded_cells(cells: Sequence[Cell], record: Mapping[str, Any]) -> Tuple[List[Cell], Dict[str, Dict[str, Any]]]:
    """``cells`` (the current grid) first, then the other cells grid.json's ``record`` holds (earlier grids run
    into the same folder); and grid.json's per-cell records by name."""
    recs = {c["name"]: c for c in record.get("cells", []) if isinstance(c, dict) and "name" in c}
    out, names = list(cells), {c.name for c in cells}
    for name, rec in recs.items():
        if name not in names:
            try:
                out.append(Cell.from_dict(rec))
            except (KeyError, TypeError, ValueError):
                continue
    return out, recs


def summary_lines(rows: Sequence[Mapping[str, Any]], wall: Optional[float] = None) -> List[str]:
    """The console summary of a report: counts per status, then each failed or interrupted cell."""
    counts: Dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    out = [f"{len(rows)} cell{'s' if len(rows) != 1 else ''}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
           + (f"; wall time {format_duration(wall)}" if wall is not None else "")]
    out += [f"  {r['status']}: {r['name']}: {r['error']}" + (f" (log: {r['log']})" if r.get("log") else "")
            for r in rows if r["status"] in (FAILED, INTERRUPTED)]
    return out


def report_header(record: Mapping[str, Any], records: Mapping[str, Mapping[str, Any]], runs: str) -> List[str]:
    """The provenance lines at the top of results.md, from grid.json's ``record`` (its last invocation) and its
    per-cell ``records``; ``runs`` is the run folders' path as the report shows it."""
    header = []
    inv = [i for i in record.get("invocations", []) if isinstance(i, dict)]
    if inv:
        last = inv[-1]
        cwd = last.get("cwd")
        header.append(f"command: `{last.get('command')}`" + (f" (in `{cwd}`)" if cwd not in (None, "", ".") else ""))
        commit = last.get("git_commit") or "unknown (not a git checkout)"
        if last.get("git_dirty"):
            commit += " (with uncommitted changes)"
        header.append(f"git commit: {commit}")
        header.append(f"hardware: {hardware_line(last.get('hardware') or {})}")
        header.append(f"wall time: {format_duration(last.get('wall_s'))} for the last invocation "
                      f"({len(last.get('ran', []))} cells run, "
                      + (f"{len(last['resumed'])} resumed, " if last.get("resumed") else "")
                      + f"{len(last.get('skipped', []))} skipped as finished; "
                      f"{last.get('jobs')} job(s) at once, {last.get('threads_per_job')} thread(s) each); "
                      f"{format_duration(sum(r.get('wall_s') or 0 for r in records.values()))} summed over cells")
        header.append(f"started {last.get('started')}, finished {last.get('finished') or '(running)'}; "
                      f"{len(inv)} invocation(s) recorded in grid.json")
    header.append(f"report built {timestamp()} from the run folders in `{runs}`")
    return header


#: what --publish copies: the report files, and per finished cell its small files (or all but checkpoints/)
PUBLISHED_REPORT_FILES = ("results.md", "results.csv", "results.png", "grid.json")
PUBLISHED_RUN_FILES = ("metrics.json", "train_args.yaml", "calibration/bins.csv")
#: copied files whose paths :func:`publish` rewrites
_TEXT_SUFFIXES = (".md", ".csv", ".json", ".yaml", ".yml", ".txt", ".log", ".jsonl", ".tsv")


def publish(out: PathLike, dest: PathLike, cells: Sequence[Cell], models: bool = False,
            root: Optional[PathLike] = None) -> int:
    """Copy what a reader needs to check the grid's numbers from ``out`` to ``dest`` (e.g. ``results/<name>``, to
    commit): the report files and, per finished cell, its metrics, resolved arguments and reliability-diagram
    bins. With ``models``, each finished cell's whole run folder but ``checkpoints/`` (weights, config.json,
    model card and plots). Returns the number of cells copied.

    The copies name only paths inside the repository ``root`` (default: the git work tree of the working
    directory): in every text file copied, the paths the runs and the grid's commands were given, the grid's output
    folder and any other absolute path out of the repository are rewritten by :func:`lt_registry.paths.scrub_file`
    (a data folder outside the repository becomes ``data/<name>``, docs/method.md §5.2)."""
    out, dest = Path(out), Path(dest)
    root = Path(root) if root is not None else repository_root()
    if dest.resolve() == out.resolve():
        raise GridError(f"--publish needs a folder other than the grid's output {out}")
    dest.mkdir(parents=True, exist_ok=True)
    files: List[Tuple[Path, Path]] = [(out / n, dest / n) for n in PUBLISHED_REPORT_FILES if (out / n).is_file()]
    paths: List[Any] = [(str(out), False)]
    if (out / "grid.json").is_file():  # every cell's and invocation's command, finished or not
        try:
            paths += structure_paths(json.loads((out / "grid.json").read_text()))
        except ValueError:
            pass
    copied = 0
    for c in cells:
        src = out / "runs" / c.name
        if (src / TRAIN_ARGS_FILE).is_file():
            paths += run_paths(read_yaml_mapping(src / TRAIN_ARGS_FILE, "the run's train arguments", "option: value"))
        if folder_status(src) != OK:
            continue
        if models:
            rels = sorted(str(f.relative_to(src)) for f in src.rglob("*")
                          if f.is_file() and f.relative_to(src).parts[0] != "checkpoints" and f.suffix != ".tmp")
        else:
            rels = [rel for rel in PUBLISHED_RUN_FILES if (src / rel).is_file()]
        files += [(src / rel, dest / "runs" / c.name / rel) for rel in rels]
        copied += 1
    for src, dst in files:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix in _TEXT_SUFFIXES:
            scrub_file(src, dst, paths, root)
            shutil.copystat(src, dst)
        else:
            shutil.copy2(src, dst)
    return copied
