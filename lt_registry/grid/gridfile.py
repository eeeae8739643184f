"""The grid-file schema: reading and checking a grid YAML, command-line values over its keys over the defaults,
and the cells it describes with the options ``train.py`` will run each with.

Grid file (``recipes/ablation.py --grid FILE.yaml``; flags given on the command line override its keys)::

    name: table4                       # OUT = output/ablation/<name> (default: the file's stem)
    description: ...                   # free text, not used
    mix: [none, mixup, remix, unimix]  # axes: a value or a list; unimix = unimix:official (train.py's default)
    loss: [ce, ldam, bayias]
    dataset: [cifar10_lt, cifar100_lt]
    imb_factor: [100, 200]             # omitted: the dataset's default
    seed: [0]
    train_config: paper                # --config per cell: recipes/configs/{dataset}_r{imb_factor}.yaml; or any
                                       # path template with {dataset} {imb_factor} {mix} {loss} {seed}
    train_args: [--epochs, 200]        # every cell; also a string or a mapping {epochs: 200, no-progress: true}
    cells:                             # per-cell overrides: match keys (axes, variant) + train_args and/or skip
      - {dataset: cifar100_lt, train_args: [--data-dir, ../data/cifar100]}
      - {mix: [mixup, remix], loss: ldam, skip: true}
    variants:                          # extra sub-grids; unset axes take the grid's values
      - {mix: unimix:paper, loss: bayias}                         # the paper preset next to the official one
      - {mix: [none, unimix], loss: ldam+drw}                     # LDAM with DRW
      - {name: off180, mix: unimix:paper, loss: bayias, train_args: [--mix-off-epoch, 180]}  # row "UniMix (paper) [off180]"
    jobs: 2                            # also: launcher, launcher_args
"""
from __future__ import annotations

import contextlib
import io
import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..config import RESULT_NEUTRAL_OPTIONS, TRAIN_ARGS_FILE, RunError, changed_options, parse_args, read_yaml_mapping
from .cells import (INCOMPLETE, OK, PENDING, GridError, as_list, check_token, expand_grid, folder_status, format_rho,
                    train_args_from_yaml)

__all__ = ["GRID_KEYS", "DEFAULTS", "GRID_FILE_HELP", "GridSettings", "load_grid_file", "resolve_grid",
           "build_cells", "train_options", "schedule_warnings", "settings_drift", "describe_grid",
           "GridPlan", "plan_grid"]

GRID_KEYS = ("name", "description", "mix", "loss", "dataset", "imb_factor", "seed", "train_args", "train_config",
             "cells", "variants", "jobs", "launcher", "launcher_args")
#: axis values when neither the command line nor the grid file sets them
DEFAULTS: Dict[str, List[Any]] = {"mix": ["none", "mixup", "remix", "unimix"], "loss": ["ce", "ldam", "bayias"],
                                  "dataset": ["digits_lt"], "imb_factor": [None], "seed": [0]}
LAUNCHERS = ("python", "accelerate")
#: the grid file's keys as the command's --help shows them
GRID_FILE_HELP = (__doc__ or "::\n").split("::\n", 1)[1].rstrip()  # (no docstrings under python -OO)
# train.py options that do not change a run's result: a finished cell is not flagged when only these differ
_RESULT_NEUTRAL = RESULT_NEUTRAL_OPTIONS


def load_grid_file(path: Any) -> Dict[str, Any]:
    """A grid file's keys (``-`` in a key read as ``_``); GridError for a missing file, bad YAML or unknown keys."""
    f = Path(path)
    cfg = read_yaml_mapping(f, "grid file", f"keys: {', '.join(GRID_KEYS)}", GridError)
    cfg = {str(k).replace("-", "_"): v for k, v in cfg.items()}
    unknown = sorted(set(cfg) - set(GRID_KEYS))
    if unknown:
        raise GridError(f"grid file {f} has unknown keys {unknown}; allowed: {', '.join(GRID_KEYS)}")
    for k in ("cells", "variants"):
        if cfg.get(k) is not None and not isinstance(cfg[k], list):
            raise GridError(f"grid file {f}: '{k}' must be a list of mappings")
    return cfg


@dataclass
class GridSettings:
    """A grid after command line, grid file and defaults are merged (:func:`resolve_grid`)."""

    name: str
    out: Path
    mix: List[Any]
    loss: List[Any]
    dataset: List[Any]
    imb_factor: List[Optional[float]]
    seed: List[Any]
    train_args: List[str] = field(default_factory=list)
    train_config: Optional[str] = None
    cells: List[Any] = field(default_factory=list)
    variants: List[Any] = field(default_factory=list)
    jobs: int = 1
    launcher: str = "python"
    launcher_args: List[str] = field(default_factory=list)
    given: bool = False  # axes or a grid file were given (not only the defaults)

    def axis(self, key: str) -> List[Any]:
        return getattr(self, key)

    @property
    def processes_per_job(self) -> int:
        """Processes one cell starts: 1 with python, accelerate's ``--num_processes`` (``--multi_gpu``: 2)."""
        la = self.launcher_args
        if self.launcher != "accelerate":
            return 1
        for i, a in enumerate(la):
            if a.startswith("--num_processes"):
                v = a.split("=", 1)[1] if "=" in a else (la[i + 1] if i + 1 < len(la) else "1")
                return max(int(v), 1) if v.isdigit() else 1
        return 2 if "--multi_gpu" in la else 1

    def threads_per_job(self, cpus: int, override: Optional[int] = None) -> int:
        """OMP/MKL threads per process: ``override``, else the CPUs shared by every process of every job."""
        return max(int(override), 1) if override else max(1, cpus // (self.jobs * self.processes_per_job))

    def command(self, cell: Any, train: str, runs: Path, resume: bool = False, slot: int = 0) -> List[str]:
        """The command line that runs ``cell`` (``train``: the path of recipes/train.py; ``runs``: OUT/runs) in
        job slot ``slot``, continuing its checkpoint when ``resume``."""
        prefix = [sys.executable]
        if self.launcher == "accelerate":
            exe = Path(sys.executable).parent / "accelerate"
            prefix = [str(exe), "launch"] if exe.is_file() else [sys.executable, "-m", "accelerate.commands.launch"]
            prefix += self.launcher_args
            if (self.jobs > 1 and self.processes_per_job > 1  # parallel multi-process launches: a port each
                    and not any(a.startswith("--main_process_port") for a in self.launcher_args)):
                prefix += ["--main_process_port", str(29500 + 7 * slot)]
        resume_args = ["--resume", str(runs / cell.name)] if resume else []
        return prefix + [train, *cell.args, "--output", str(runs), "--experiment", cell.name, *resume_args]


def resolve_grid(flags: Mapping[str, Any], grid_file: Optional[str] = None, extra_args: Sequence[str] = (), *,
                 paper_configs: str = "recipes/configs") -> GridSettings:
    """Command-line values (``flags``: the axes, ``name``, ``out``, ``train_config``, ``jobs``, ``launcher``,
    ``launcher_args``; None = not given) over the grid file's keys over :data:`DEFAULTS`. ``extra_args`` go to
    every cell after the file's ``train_args``. ``train_config: paper`` is ``<paper_configs>/{dataset}_r{imb_factor}.yaml``
    (the paper's protocol per dataset and rho, docs/method.md §4-5)."""
    cfg = load_grid_file(grid_file) if grid_file else {}
    axes: Dict[str, List[Any]] = {}
    given = bool(grid_file)
    for k in DEFAULTS:
        if flags.get(k) is not None:
            axes[k], given = list(flags[k]), True
        elif cfg.get(k) is not None:
            axes[k], given = as_list(cfg[k]), True
        else:
            axes[k] = list(DEFAULTS[k])
    axes["imb_factor"] = [None if v is None else float(v) for v in axes["imb_factor"]]
    train_config = flags.get("train_config") or cfg.get("train_config")
    if train_config == "paper":
        train_config = f"{paper_configs}/{{dataset}}_r{{imb_factor}}.yaml"
    jobs = flags["jobs"] if flags.get("jobs") is not None else int(cfg.get("jobs") or 1)
    if jobs < 1:
        raise GridError(f"--jobs must be >= 1, got {jobs}")
    launcher = flags.get("launcher") or cfg.get("launcher") or "python"
    if launcher not in LAUNCHERS:
        raise GridError(f"launcher must be 'python' or 'accelerate', got {launcher!r}")
    la = flags["launcher_args"] if flags.get("launcher_args") is not None else cfg.get("launcher_args") or ""
    name = flags.get("name") or cfg.get("name")
    if not name:
        if grid_file:
            name = Path(grid_file).stem
        else:
            rhos = [format_rho(r) for r in axes["imb_factor"] if r is not None]
            name = "+".join(map(str, axes["dataset"])) + (f"-r{'+'.join(rhos)}" if rhos else "")
    name = check_token(name, "grid name")
    return GridSettings(
        name=name, out=Path(flags["out"]) if flags.get("out") else Path("output") / "ablation" / name, **axes,
        train_args=train_args_from_yaml(cfg.get("train_args"), "train_args") + list(extra_args),
        train_config=train_config, cells=cfg.get("cells") or [], variants=cfg.get("variants") or [], jobs=jobs,
        launcher=launcher, launcher_args=shlex.split(la) if isinstance(la, str) else [str(a) for a in la],
        given=given)


def train_options(argv: Sequence[str]) -> Dict[str, Any]:
    """The options ``train.py`` resolves from a cell's arguments (its own parser, config files included);
    GridError with the parser's message when it rejects them."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return vars(parse_args(list(argv)))
    except SystemExit:
        lines = [ln for ln in err.getvalue().strip().splitlines() if ln.strip()]
        raise GridError(lines[-1] if lines else "train.py rejected the arguments") from None
    except RunError as e:
        raise GridError(str(e)) from None


def build_cells(s: GridSettings) -> Tuple[List[Any], Dict[str, Dict[str, Any]]]:
    """The grid's cells, each with the epochs train.py will run, and train.py's resolved options per cell."""
    cells = expand_grid(s.mix, s.loss, s.dataset, s.imb_factor, s.seed, common_args=s.train_args,
                        train_config=s.train_config, variants=s.variants, cells=s.cells)
    resolved, out = {}, []
    for c in cells:
        try:
            opts = train_options(c.args)
        except GridError as e:
            raise GridError(f"cell {c.name}: train.py rejects its arguments: {e}") from None
        resolved[c.name] = opts
        out.append(replace(c, epochs=int(opts["epochs"])))
    return out, resolved


@dataclass
class GridPlan:
    """What a run of the grid would do: its cells, train.py's options per cell, each cell's folder status,
    warnings about the schedule, and the finished cells whose settings differ from what the grid asks now."""

    cells: List[Any]
    options: Dict[str, Dict[str, Any]]
    status: Dict[str, str]
    warnings: List[str]
    drift: Dict[str, List[str]]


def plan_grid(s: GridSettings) -> GridPlan:
    cells, options = build_cells(s)
    runs = s.out / "runs"
    status = {c.name: folder_status(runs / c.name) for c in cells}
    drift = {c.name: d for c in cells if status[c.name] == OK for d in [settings_drift(runs / c.name, options[c.name])]
             if d}
    return GridPlan(cells, options, status, schedule_warnings(cells, options), drift)


def schedule_warnings(cells: Sequence[Any], resolved: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """Schedule epochs given explicitly (not scaled with --epochs) that fall outside the run, one line per
    problem with the cells it concerns."""
    by: Dict[str, List[str]] = {}
    for c in cells:
        opts = resolved[c.name]
        E = int(opts["epochs"])
        found = []
        ms = [m for m in (opts.get("decay_milestones") or []) if m >= E]
        if ms:
            found.append(f"--decay-milestones {ms} >= --epochs {E}: that LR decay never happens")
        for k in ("drw_epoch", "mix_off_epoch", "warmup_epochs"):
            v = opts.get(k)
            if v is not None and v >= E:
                found.append(f"--{k.replace('_', '-')} {v} >= --epochs {E}")
        for w in found:
            by.setdefault(w, []).append(c.name)
    return [f"{w} ({len(names)} cell(s): {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
            for w, names in by.items()]


def settings_drift(run_dir: Path, opts: Mapping[str, Any]) -> List[str]:
    """Result-affecting options where a finished run (its train_args.yaml) differs from what the grid would run
    now, as ``"lr: 0.1 -> 0.05"`` lines (:func:`lt_registry.config.changed_options`)."""
    try:
        saved = read_yaml_mapping(Path(run_dir) / TRAIN_ARGS_FILE, "train_args", "option: value", ValueError)
    except ValueError:
        return []
    return changed_options(saved, dict(opts))


def describe_grid(s: GridSettings, cells: Sequence[Any], status: Mapping[str, str]) -> str:
    """``"12 cells (4 mixers x 3 losses x ...): 11 to run, 0 to resume, 1 finished (skipped)"`` from each cell's
    :func:`~lt_registry.grid.cells.folder_status`."""
    n = {k: sum(v == k for v in status.values()) for k in (PENDING, INCOMPLETE, OK)}
    nouns = {"mix": ("mixer", "mixers"), "loss": ("loss", "losses"), "dataset": ("dataset", "datasets"),
             "imb_factor": ("imbalance factor", "imbalance factors"), "seed": ("seed", "seeds")}
    axes = " x ".join(f"{k} {nouns[key][k != 1]}" for key in nouns for k in [len(set(map(str, s.axis(key))))])
    return (f"{len(cells)} cell{'s' if len(cells) != 1 else ''} ({axes}"
            + (", plus variants / overrides" if s.variants or s.cells else "")
            + f"): {n[PENDING]} to run, {n[INCOMPLETE]} to resume, {n[OK]} finished (skipped)")
