"""The paper's ablation grid (Table 4: mixer x loss) as data: cells, result rows, tables and one figure.

``recipes/ablation.py`` runs the cells (one ordinary ``recipes/train.py`` run each); this module knows what a
cell is and turns the run folders' ``metrics.json`` into ``results.csv``, ``results.md`` and ``results.png``.
Nothing here starts a process or prints.

Cell specs (the grid's axis values):

- mixer ``name[:preset]``: ``none``, ``mixup``, ``remix``, ``unimix`` (= ``unimix:paper``), ``unimix:official``
  (SPEC 1.3). A preset is only meaningful for UniMix.
- loss ``name[+drw]``: ``ce``, ``ldam``, ``bayias``, ... ; ``ldam+drw`` is ``--loss ldam --drw`` (deferred
  re-weighting at 80% of the epochs).

>>> MixSpec.parse("unimix:official").train_flags()
['--mix', 'unimix', '--preset', 'official']
>>> LossSpec.parse("ldam+drw").train_flags()
['--loss', 'ldam', '--drw']
>>> make_cell("cifar10_lt", 100, "unimix", "bayias", 0).name
'cifar10_lt-r100-unimix-bayias-s0'
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = [
    "MixSpec", "LossSpec", "Cell", "make_cell", "format_rho", "expand_grid", "check_names", "cell_matches",
    "train_args_from_yaml", "cell_from_run_dir", "canonical_order", "collect_results", "aggregate", "results_markdown",
    "write_results_csv", "plot_results", "RESULT_COLUMNS", "PAPER_TOP1", "PAPER_CALIBRATION", "paper_reference",
]

PRESETS = ("paper", "official")
MIX_LABELS = {"none": "None", "mixup": "mixup", "remix": "Remix", "unimix": "UniMix"}
LOSS_LABELS = {"ce": "CE", "ldam": "LDAM", "bayias": "Bayias", "la": "LA", "focal": "Focal", "cb": "CB"}
#: the axes of a grid (YAML keys, CSV columns)
AXES = ("mix", "loss", "dataset", "imb_factor", "seed")
_TOKEN = re.compile(r"^[A-Za-z0-9._+-]+$")


def format_rho(rho: Optional[float]) -> str:
    """``100.0 -> '100'``, ``0.5 -> '0.5'`` (folder names and table headings)."""
    if rho is None:
        return ""
    return f"{float(rho):g}"


# ---- specs ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MixSpec:
    """A mixer and, for UniMix, its preset (SPEC 1.3). ``unimix`` means the ``paper`` preset."""

    name: str
    preset: Optional[str] = None

    @classmethod
    def parse(cls, spec: Union[str, "MixSpec"]) -> "MixSpec":
        if isinstance(spec, MixSpec):
            return spec
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"mixer spec must be a non-empty string like 'unimix:official', got {spec!r}")
        name, _, preset = spec.strip().lower().partition(":")
        name = name.replace("-", "_")
        if name == "unimix":
            preset = preset or "paper"
            if preset not in PRESETS:
                raise ValueError(f"mixer spec {spec!r}: unknown UniMix preset {preset!r}; presets: {', '.join(PRESETS)}")
            return cls(name, preset)
        if preset:
            raise ValueError(f"mixer spec {spec!r}: a preset (':{preset}') applies to unimix only")
        return cls(name, None)

    @property
    def spec(self) -> str:
        return self.name if self.preset in (None, "paper") else f"{self.name}:{self.preset}"

    @property
    def token(self) -> str:
        return self.spec.replace(":", ".")

    @property
    def label(self) -> str:
        base = MIX_LABELS.get(self.name, self.name)
        return base if self.preset in (None, "paper") else f"{base} ({self.preset})"

    def train_flags(self) -> List[str]:
        return ["--mix", self.name] + (["--preset", self.preset] if self.preset else [])


@dataclass(frozen=True)
class LossSpec:
    """A loss, optionally with deferred re-weighting (``ldam+drw``)."""

    name: str
    drw: bool = False

    @classmethod
    def parse(cls, spec: Union[str, "LossSpec"]) -> "LossSpec":
        if isinstance(spec, LossSpec):
            return spec
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"loss spec must be a non-empty string like 'ldam+drw', got {spec!r}")
        name, *mods = spec.strip().lower().split("+")
        bad = [m for m in mods if m != "drw"]
        if bad or len(mods) > 1 or not name:
            raise ValueError(f"loss spec {spec!r}: expected NAME or NAME+drw (e.g. 'ldam+drw')")
        return cls(name.replace("-", "_"), bool(mods))

    @property
    def spec(self) -> str:
        return self.name + ("+drw" if self.drw else "")

    @property
    def token(self) -> str:
        return self.spec

    @property
    def label(self) -> str:
        return LOSS_LABELS.get(self.name, self.name) + ("+DRW" if self.drw else "")

    def train_flags(self) -> List[str]:
        return ["--loss", self.name] + (["--drw"] if self.drw else [])


@dataclass(frozen=True)
class Cell:
    """One training run of the grid. ``args`` is the complete ``train.py`` argument list except
    ``--output``/``--experiment``/``--resume``, which the runner adds."""

    name: str
    dataset: str
    imb_factor: Optional[float]
    mix: MixSpec
    loss: LossSpec
    seed: int
    variant: str = ""
    args: Tuple[str, ...] = ()
    epochs: Optional[int] = None  # as train.py will resolve it (flags + config); None when unknown

    @property
    def row_label(self) -> str:
        return self.mix.label + (f" [{self.variant}]" if self.variant else "")

    @property
    def col_label(self) -> str:
        return self.loss.label

    def axis_value(self, key: str) -> Any:
        return {"mix": self.mix.spec, "loss": self.loss.spec, "dataset": self.dataset, "imb_factor": self.imb_factor,
                "seed": self.seed, "variant": self.variant}[key]

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "dataset": self.dataset, "imb_factor": self.imb_factor, "mix": self.mix.name,
                "preset": self.mix.preset, "mix_spec": self.mix.spec, "loss": self.loss.name, "drw": self.loss.drw,
                "loss_spec": self.loss.spec, "seed": self.seed, "variant": self.variant, "args": list(self.args),
                "epochs": self.epochs}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Cell":
        mix = MixSpec(d["mix"], d.get("preset"))
        loss = LossSpec(d["loss"], bool(d.get("drw")))
        imb = d.get("imb_factor")
        return cls(name=d["name"], dataset=d["dataset"], imb_factor=None if imb is None else float(imb), mix=mix,
                   loss=loss, seed=int(d.get("seed", 0)), variant=d.get("variant") or "",
                   args=tuple(d.get("args") or ()), epochs=d.get("epochs"))


def cell_name(dataset: str, imb_factor: Optional[float], mix: MixSpec, loss: LossSpec, seed: int,
              variant: str = "") -> str:
    """Deterministic run-folder name: ``<dataset>[-r<rho>]-<mixer>-<loss>-s<seed>[-<variant>]``."""
    parts = [dataset] + ([f"r{format_rho(imb_factor)}"] if imb_factor is not None else [])
    parts += [mix.token, loss.token, f"s{seed}"] + ([variant] if variant else [])
    return "-".join(parts)


def make_cell(dataset: str, imb_factor: Optional[float], mix: Union[str, MixSpec], loss: Union[str, LossSpec],
              seed: int, *, variant: str = "", args: Sequence[str] = (), epochs: Optional[int] = None) -> Cell:
    m, lo = MixSpec.parse(mix), LossSpec.parse(loss)
    if variant and not _TOKEN.match(variant):
        raise ValueError(f"variant name {variant!r} may hold only letters, digits and . _ + -")
    imb = None if imb_factor is None else float(imb_factor)
    return Cell(cell_name(dataset, imb, m, lo, int(seed), variant), dataset, imb, m, lo, int(seed), variant,
                tuple(str(a) for a in args), epochs)


# ---- grid expansion ---------------------------------------------------------------------------------------

#: train.py flags the grid sets itself; extra arguments may not set them (the table would mislabel the cell)
RESERVED_FLAGS = ("--mix", "--loss", "--dataset", "--imb-factor", "--seed", "--preset", "--drw", "--output",
                  "--experiment", "--resume")


def check_extra_args(args: Sequence[str], where: str) -> None:
    for a in args:
        flag = a.split("=", 1)[0]
        if flag in RESERVED_FLAGS:
            hint = {"--drw": " (use a loss spec such as 'ldam+drw')",
                    "--preset": " (use a mixer spec such as 'unimix:official')"}.get(flag, "")
            raise ValueError(f"{where} may not set {flag}: the grid sets it for every cell{hint}")


def train_args_from_yaml(value: Any, where: str = "train_args") -> List[str]:
    """``train_args`` in a grid file: a list of strings (``[--epochs, 20]``), one string (shell-split) or a
    mapping (``{epochs: 20, no-progress: true, decay-milestones: [16, 18]}``)."""
    import shlex

    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, Mapping):
        out: List[str] = []
        for k, v in value.items():
            flag = "--" + str(k).lstrip("-").replace("_", "-")
            if v is True:
                out.append(flag)
            elif v is False or v is None:
                continue
            elif isinstance(v, (list, tuple)):
                out += [flag, *map(str, v)]
            else:
                out += [flag, str(v)]
        return out
    raise ValueError(f"{where} must be a list of arguments, a string or a mapping, got {type(value).__name__}")


def _as_list(v: Any) -> List[Any]:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def cell_matches(cell: Cell, match: Mapping[str, Any]) -> bool:
    """Does ``cell`` satisfy every ``key: value-or-list`` of ``match``? A bare mixer or loss name matches
    every spec of that name (``unimix`` matches ``unimix:official``; ``ldam`` matches ``ldam+drw``)."""
    for key, want in match.items():
        values = _as_list(want)
        if key == "mix":
            ok = any(MixSpec.parse(v) == cell.mix or (":" not in str(v) and MixSpec.parse(v).name == cell.mix.name)
                     for v in values)
        elif key == "loss":
            ok = any(LossSpec.parse(v) == cell.loss or ("+" not in str(v) and LossSpec.parse(v).name == cell.loss.name)
                     for v in values)
        elif key == "imb_factor":
            ok = any((v is None and cell.imb_factor is None) or
                     (v is not None and cell.imb_factor is not None and float(v) == cell.imb_factor) for v in values)
        elif key == "seed":
            ok = any(int(v) == cell.seed for v in values)
        elif key in ("dataset", "variant"):
            ok = any(str(v) == cell.axis_value(key) for v in values)
        else:
            raise ValueError(f"unknown match key {key!r}; use {', '.join(AXES + ('variant',))}")
        if not ok:
            return False
    return True


def expand_grid(mix: Sequence[str], loss: Sequence[str], dataset: Sequence[str],
                imb_factor: Sequence[Optional[float]] = (None,), seed: Sequence[int] = (0,), *,
                common_args: Sequence[str] = (), train_config: Optional[str] = None,
                variants: Sequence[Mapping[str, Any]] = (), cells: Sequence[Mapping[str, Any]] = (),
                canonical: Optional[Mapping[str, Any]] = None) -> List[Cell]:
    """The grid's cells in run order (seed, dataset, rho, mixer, loss; then the variants).

    Args:
        mix, loss, dataset, imb_factor, seed: the axes (specs as in the module docstring; ``None`` rho = the
            dataset's default).
        common_args: ``train.py`` arguments for every cell (``--epochs 20 --data-dir ...``).
        train_config: a ``--config`` path template with ``{dataset}``, ``{imb_factor}``, ``{mix}``, ``{loss}``,
            ``{seed}`` (e.g. ``recipes/configs/{dataset}_r{imb_factor}.yaml``); flags still override it.
        variants: extra sub-grids: each mapping sets some axes (value or list; the others take the grid's
            values), optionally ``name`` (a label shown as its own table row and appended to the cell name) and
            ``train_args``.
        cells: per-cell overrides: each mapping has match keys (axes, ``variant``) plus ``train_args`` (appended
            for the matching cells) and/or ``skip: true`` (drop them).
        canonical: optional ``{"mix": fn, "loss": fn, "dataset": fn}`` mapping a name to its canonical form.
    """
    check_extra_args(common_args, "extra train.py arguments")
    canon = dict(canonical or {})

    def norm_mix(s: Any) -> MixSpec:
        m = MixSpec.parse(str(s))
        return replace(m, name=canon["mix"](m.name)) if "mix" in canon else m

    def norm_loss(s: Any) -> LossSpec:
        lo = LossSpec.parse(str(s))
        return replace(lo, name=canon["loss"](lo.name)) if "loss" in canon else lo

    def norm_ds(s: Any) -> str:
        return canon["dataset"](str(s)) if "dataset" in canon else str(s)

    base = {"mix": list(mix), "loss": list(loss), "dataset": list(dataset), "imb_factor": list(imb_factor),
            "seed": list(seed)}
    for k, v in base.items():
        if not v:
            raise ValueError(f"the grid's {k} list is empty")
    subgrids: List[Tuple[Dict[str, List[Any]], str, List[str]]] = [(base, "", [])]
    for i, var in enumerate(variants):
        if not isinstance(var, Mapping):
            raise ValueError(f"variants[{i}] must be a mapping (axes, name, train_args), got {var!r}")
        unknown = set(var) - set(AXES) - {"name", "train_args"}
        if unknown:
            raise ValueError(f"variants[{i}] has unknown keys {sorted(unknown)}; allowed: "
                             f"{', '.join(AXES + ('name', 'train_args'))}")
        extra = train_args_from_yaml(var.get("train_args"), f"variants[{i}].train_args")
        check_extra_args(extra, f"variants[{i}].train_args")
        axes = {k: (_as_list(var[k]) if k in var else base[k]) for k in AXES}
        subgrids.append((axes, str(var.get("name") or ""), extra))

    out: Dict[str, Cell] = {}
    for axes, variant, extra in subgrids:
        for s, ds, rho, m, lo in itertools.product(axes["seed"], axes["dataset"], axes["imb_factor"], axes["mix"],
                                                   axes["loss"]):
            ms, ls, dsn = norm_mix(m), norm_loss(lo), norm_ds(ds)
            rho = None if rho is None else float(rho)
            args: List[str] = []
            if train_config:
                if rho is None and "{imb_factor}" in train_config:
                    raise ValueError(f"train_config {train_config!r} uses {{imb_factor}} but the grid has no --imb-factor")
                args += ["--config", train_config.format(dataset=dsn, imb_factor=format_rho(rho), mix=ms.name,
                                                         loss=ls.name, seed=int(s))]
            args += ["--dataset", dsn] + (["--imb-factor", format_rho(rho)] if rho is not None else [])
            args += ms.train_flags() + ls.train_flags() + ["--seed", str(int(s))]
            args += list(common_args) + extra
            cell = make_cell(dsn, rho, ms, ls, int(s), variant=variant, args=args)
            drop = False
            for j, ov in enumerate(cells):
                if not isinstance(ov, Mapping):
                    raise ValueError(f"cells[{j}] must be a mapping (match keys, train_args, skip), got {ov!r}")
                match = {k: v for k, v in ov.items() if k not in ("train_args", "skip")}
                if not match:
                    raise ValueError(f"cells[{j}] names no cell: give at least one of {', '.join(AXES + ('variant',))}")
                if cell_matches(cell, match):
                    if ov.get("skip"):
                        drop = True
                        break
                    more = train_args_from_yaml(ov.get("train_args"), f"cells[{j}].train_args")
                    check_extra_args(more, f"cells[{j}].train_args")
                    cell = replace(cell, args=cell.args + tuple(more))
            if drop:
                continue
            if cell.name in out:
                if out[cell.name].args != cell.args:
                    raise ValueError(f"two cells named {cell.name} with different arguments; give the variant a name")
                continue
            out[cell.name] = cell
    return list(out.values())


def check_names(cells: Iterable[Cell]) -> None:
    """Every mixer, loss and dataset is registered (ValueError with close matches otherwise)."""
    from ._registry import LOSSES, MIXERS
    from .data import DATASETS

    for c in cells:
        MIXERS.get(c.mix.name)
        LOSSES.get(c.loss.name)
        DATASETS.get(c.dataset)


# ---- results ----------------------------------------------------------------------------------------------

METRICS = ("top1", "many", "medium", "few", "ece", "mce", "ace", "sce", "brier", "nll", "head", "mid", "tail")
RESULT_COLUMNS = ["name", "status", "dataset", "imb_factor", "mix", "preset", "mix_spec", "loss", "drw", "loss_spec",
                  "variant", "seed", "epochs", *METRICS, "wall_s", "train_s", "peak_gpu_memory_mb", "peak_host_rss_mb",
                  "commit", "error", "run_dir", "log"]


def cell_from_run_dir(run_dir: Union[str, Path]) -> Optional[Cell]:
    """Rebuild a cell from a run folder's train_args.yaml (for a report without grid.json)."""
    import yaml

    run_dir = Path(run_dir)
    f = run_dir / "train_args.yaml"
    if not f.is_file():
        return None
    try:
        a = yaml.safe_load(f.read_text()) or {}
        mix = MixSpec(str(a["mix"]), a.get("preset") if a["mix"] == "unimix" else None)
        loss = LossSpec(str(a["loss"]), bool(a.get("drw") or a.get("drw_epoch") is not None))
        imb = a.get("imb_factor")
        return Cell(run_dir.name, str(a["dataset"]), None if imb is None else float(imb), mix, loss, int(a["seed"]),
                    epochs=a.get("epochs"))
    except (KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


_MIX_ORDER = ("none", "mixup", "remix", "unimix")
_LOSS_ORDER = ("ce", "focal", "cb", "ldam", "la", "bayias")


def canonical_order(cells: Iterable[Cell]) -> List[Cell]:
    """Cells in the paper's order (None, mixup, Remix, UniMix; CE ... LDAM, LA, Bayias), for folders found on disk."""
    def rank(order: Sequence[str], name: str) -> Tuple[int, str]:
        return (order.index(name), "") if name in order else (len(order), name)

    return sorted(cells, key=lambda c: (c.dataset, c.imb_factor or 0.0, c.epochs or 0, c.seed,
                                        rank(_MIX_ORDER, c.mix.name), c.mix.preset or "", c.variant,
                                        rank(_LOSS_ORDER, c.loss.name), c.loss.drw))


def _read_metrics(path: Path) -> Tuple[Optional[Dict[str, Any]], str]:
    try:
        m = json.loads(path.read_text())
        if not isinstance(m.get("final"), dict):
            return None, f"{path} has no 'final' block"
        return m, ""
    except (OSError, ValueError) as e:
        return None, f"{path} unreadable: {e}"


def collect_results(cells: Sequence[Cell], runs_dir: Union[str, Path],
                    records: Optional[Mapping[str, Mapping[str, Any]]] = None,
                    logs_dir: Optional[Union[str, Path]] = None) -> List[Dict[str, Any]]:
    """One row per cell, read from ``runs_dir/<cell>/metrics.json`` (numbers in percent, as stored).

    ``status``: ``ok`` (metrics.json present), else the runner's record (``failed``, ``interrupted``),
    else ``incomplete`` (a checkpoint but no metrics) or ``pending`` (never run). ``records`` are grid.json's
    per-cell entries (status, error, wall_s).
    """
    records = records or {}
    rows = []
    for c in cells:
        run = Path(runs_dir) / c.name
        rec = records.get(c.name, {})
        row: Dict[str, Any] = {k: None for k in RESULT_COLUMNS}
        d = c.to_dict()
        row.update({k: d[k] for k in ("name", "dataset", "imb_factor", "mix", "preset", "mix_spec", "loss", "drw",
                                      "loss_spec", "variant", "seed", "epochs")})
        row["run_dir"] = str(run)
        log = rec.get("log") or (str(Path(logs_dir) / f"{c.name}.log") if logs_dir else None)
        row["log"] = log if log and Path(log).is_file() else None
        row["wall_s"] = rec.get("wall_s")
        row["error"] = ""
        m, err = _read_metrics(run / "metrics.json") if (run / "metrics.json").is_file() else (None, "")
        if m is not None:
            row["status"] = "ok"
            fin = m["final"]
            for k in METRICS:
                v = fin.get(k)
                row[k] = None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)
            lt = m.get("lt") or {}
            if lt.get("epochs") is not None:
                row["epochs"] = int(lt["epochs"])
            if row["imb_factor"] is None and lt.get("imb_factor") is not None:
                row["imb_factor"] = float(lt["imb_factor"])
            row["commit"] = (lt.get("versions") or {}).get("lt_registry_commit")
            times = [e.get("epoch_time_s") for e in m.get("epochs") or [] if isinstance(e, dict)]
            times = [t for t in times if isinstance(t, (int, float))]
            row["train_s"] = round(sum(times), 2) if times else None
            res = m.get("resources") if isinstance(m.get("resources"), dict) else {}
            if isinstance(res.get("wall_time_s"), (int, float)):
                row["train_s"] = float(res["wall_time_s"])  # the run's own clock, evaluation included
            for k in ("peak_gpu_memory_mb", "peak_host_rss_mb"):
                row[k] = res.get(k) if isinstance(res.get(k), (int, float)) else None
        elif err:
            row["status"], row["error"] = "failed", err
        elif rec.get("status") in ("failed", "interrupted"):
            row["status"], row["error"] = rec["status"], rec.get("error") or ""
        elif (run / "checkpoints" / "latest").is_file():
            row["status"] = "incomplete"
        else:
            row["status"] = "pending"
        rows.append(row)
    return rows


def write_results_csv(rows: Sequence[Mapping[str, Any]], path: Union[str, Path]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in RESULT_COLUMNS})
    return path


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
        return [r for r in self.rows if r["status"] == "ok"]

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
        return self.mix_spec == "none" and not self.variant

    @property
    def block(self) -> Tuple[str, Optional[float], Optional[int]]:
        return (self.dataset, self.imb_factor, self.epochs)


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


# ---- the paper's numbers (SPEC 7: ResNet-32, 200 epochs, balanced test, percent) -------------------------

def _ref_table() -> Dict[Tuple[str, float, str, str], float]:
    t: Dict[Tuple[str, float, str, str], float] = {}
    table1 = {  # rho 10 / 50 / 100 / 200 for CIFAR-10-LT then CIFAR-100-LT
        ("none", "ce"): (86.39, 74.94, 70.36, 66.21, 55.70, 44.02, 38.32, 34.56),
        ("mixup", "ce"): (87.10, 77.82, 73.06, 67.73, 58.02, 44.99, 39.54, 34.97),
        ("remix", "ce"): (88.15, 79.20, 75.36, 67.08, 59.36, 46.21, 41.94, 36.99),
        ("none", "ldam+drw"): (88.16, 81.27, 77.03, 74.74, 58.71, 47.97, 42.04, 38.45),
        ("none", "la"): (89.26, 83.38, 79.91, 75.13, 59.87, 49.76, 43.89, 40.87),
        ("unimix", "bayias"): (89.66, 84.32, 82.75, 78.48, 61.25, 51.11, 45.45, 42.07),
    }
    for (m, lo), vals in table1.items():
        for (ds, rho), v in zip(itertools.product(("cifar10_lt", "cifar100_lt"), (10.0, 50.0, 100.0, 200.0)), vals):
            t[(ds, rho, m, lo)] = v
    table4 = {  # rho 100 / 200 for CIFAR-10-LT then CIFAR-100-LT
        ("unimix", "ce"): (76.47, 68.42, 41.46, 37.63),
        ("none", "bayias"): (78.70, 74.21, 43.52, 38.83),
        ("mixup", "bayias"): (81.75, 76.69, 44.56, 41.19),
        ("remix", "bayias"): (81.55, 75.81, 45.01, 41.44),
        ("none", "ldam"): (74.47, 69.50, 41.76, 37.73),
        ("unimix", "ldam"): (75.35, 70.77, 41.67, 37.83),
    }
    for (m, lo), vals in table4.items():
        for (ds, rho), v in zip(itertools.product(("cifar10_lt", "cifar100_lt"), (100.0, 200.0)), vals):
            t[(ds, rho, m, lo)] = v
    return t


#: top-1 (%) from the paper's Tables 1 and 4, keyed (dataset, rho, mixer spec, loss spec)
PAPER_TOP1 = _ref_table()
#: (ECE, MCE) in % from the paper's Table 2 (15 bins)
PAPER_CALIBRATION = {
    ("cifar10_lt", 100.0, "none", "ce"): (20.53, 73.91), ("cifar100_lt", 10.0, "none", "ce"): (22.85, 34.50),
    ("cifar100_lt", 100.0, "none", "ce"): (38.23, 87.22), ("cifar10_lt", 10.0, "unimix", "bayias"): (4.74, 13.67),
    ("cifar10_lt", 100.0, "unimix", "bayias"): (10.19, 25.47),
    ("cifar100_lt", 10.0, "unimix", "bayias"): (15.24, 23.67),
    ("cifar100_lt", 100.0, "unimix", "bayias"): (23.04, 37.36),
}


def paper_reference(group: Group) -> Tuple[Optional[float], Optional[Tuple[float, float]]]:
    """(top-1, (ECE, MCE)) the paper reports for this group's setting, where it reports one."""
    if group.variant or group.imb_factor is None:
        return None, None
    key = (group.dataset, float(group.imb_factor), group.mix_spec, group.loss_spec)
    return PAPER_TOP1.get(key), PAPER_CALIBRATION.get(key)


# ---- markdown ---------------------------------------------------------------------------------------------

def _num(v: Optional[float], digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _stat(g: Group, key: str) -> str:
    mean, std = g.stat(key)
    if mean is None:
        return "n/a"
    return _num(mean) + (f" ± {_num(std)}" if std is not None else "")


def _duration(s: Optional[float]) -> str:
    if s is None:
        return ""
    if s < 60:
        return f"{s:.0f}s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


def _signed(v: float) -> str:
    return f"{v:+.2f}"


def _block_title(block: Tuple[str, Optional[float], Optional[int]]) -> str:
    ds, rho, ep = block
    return ds + (f", ρ = {format_rho(rho)}" if rho is not None else "") + (f", {ep} epochs" if ep is not None else "")


def _missing(g: Group) -> str:
    if g.count("failed"):
        return "failed"
    if g.count("interrupted"):
        return "interrupted"
    if g.count("incomplete"):
        return "incomplete"
    return "pending"


def _note(g: Group, typical_n: int) -> str:
    bits = []
    if g.n != typical_n:
        bits.append(f"n={g.n}")
    bad = len(g.rows) - g.n
    if bad:
        bits.append(f"{bad} {_missing(g)}")
    return f" [{', '.join(bits)}]" if bits else ""


def _grid_table(groups: List[Group], rows: List[str], cols: List[str], cell_fn) -> List[str]:
    by = {(g.row, g.col): g for g in groups}
    lines = ["| Mixer \\ Loss | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in rows:
        cells = [cell_fn(by[(r, c)]) if (r, c) in by else "—" for c in cols]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return lines


def results_markdown(rows: Sequence[Mapping[str, Any]], *, title: str = "Ablation grid",
                     header: Sequence[str] = (), groups: Optional[List[Group]] = None) -> str:
    """``results.md``: per (dataset, rho, epochs) a table shaped like the paper's Table 4 (rows = mixers,
    columns = losses) for top-1 with the gain over the no-mixing row, ECE / MCE, many / medium / few and
    head / mid / tail;
    then the same numbers in long form, the paper's reference values and the failed cells."""
    groups = aggregate(rows) if groups is None else groups
    n_status: Dict[str, int] = {}
    for r in rows:
        n_status[r["status"]] = n_status.get(r["status"], 0) + 1
    out = [f"# {title}", ""]
    out += [f"- {h}" for h in header]
    order = ("ok", "failed", "interrupted", "incomplete", "running", "pending")
    out.append(f"- cells: {len(rows)} (" + ", ".join(f"{n_status[k]} {k}" for k in sorted(
        n_status, key=lambda k: (order.index(k) if k in order else len(order), k))) + ")")
    out += ["", "Numbers in percent at the final epoch (no best-epoch selection); mean ± sample std over seeds. "
            "Gain (in parentheses) = top-1 minus the *None* (no mixing) row with the same loss. Many / medium / few: "
            "classes with > 100, 20-100, < 20 training images.", ""]

    blocks: List[Tuple[Any, ...]] = []
    for g in groups:
        if g.block not in blocks:
            blocks.append(g.block)
    for block in blocks:
        bg = [g for g in groups if g.block == block]
        row_names = _ordered([g.row for g in bg], first="None")
        col_names = _ordered([g.col for g in bg])
        ns = [g.n for g in bg if g.n]
        typical = max(set(ns), key=ns.count) if ns else 0
        seeds = sorted({r["seed"] for g in bg for r in g.ok})
        out += [f"## {_block_title(block)}", ""]
        uneven = any(g.n != typical or len(g.rows) != g.n for g in bg)
        out.append(f"{typical} seed(s) per cell" + (f" (seeds {', '.join(map(str, seeds))})" if seeds else "")
                   + ("; [n=k] marks a cell with a different count, and cells without a result." if uneven else ".")
                   + " — : not in the grid.")
        out += ["", "**Top-1 accuracy** (gain over None)", ""]

        def top1_cell(g: Group) -> str:
            if not g.n:
                return _missing(g)
            s = _stat(g, "top1")
            if g.gain is not None:
                s += f" ({_signed(g.gain)})"
            return s + _note(g, typical)

        out += _grid_table(bg, row_names, col_names, top1_cell)
        out += ["", "**ECE / MCE** (15 bins)", ""]
        out += _grid_table(bg, row_names, col_names,
                           lambda g: f"{_stat(g, 'ece')} / {_stat(g, 'mce')}" if g.n else _missing(g))
        out += ["", "**Many / Medium / Few** top-1", ""]
        out += _grid_table(bg, row_names, col_names,
                           lambda g: " / ".join(_stat(g, k) for k in ("many", "medium", "few")) if g.n else _missing(g))
        out += ["", "**Head / Mid / Tail** top-1 (class-index thirds, SPEC 6)", ""]
        out += _grid_table(bg, row_names, col_names,
                           lambda g: " / ".join(_stat(g, k) for k in ("head", "mid", "tail")) if g.n else _missing(g))
        refs = {(g.row, g.col): paper_reference(g) for g in bg}
        if any(t is not None for t, _ in refs.values()):
            out += ["", "Paper (SPEC 7: Tables 1 and 4; ResNet-32, 200 epochs), top-1 for the same cells:", ""]
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
        status = ", ".join(f"{g.count(s)} {s}" for s in ("ok", "failed", "interrupted", "incomplete", "pending")
                           if g.count(s))
        ref = [_num(t) if t is not None else "", f"{_num(cal[0])} / {_num(cal[1])}" if cal else ""] if with_ref else []
        out.append("| " + " | ".join([
            g.dataset, format_rho(g.imb_factor) or "default", str(g.epochs if g.epochs is not None else "?"), g.row,
            g.col, str(g.n), _stat(g, "top1"), _signed(g.gain) if g.gain is not None else "",
            _stat(g, "ece"), _stat(g, "mce"), _stat(g, "many"), _stat(g, "medium"), _stat(g, "few"), *ref,
            _duration(g.stat("wall_s")[0]), status]) + " |")

    bad = [r for r in rows if r["status"] in ("failed", "interrupted")]
    if bad:
        out += ["", "## Failed cells", ""]
        for r in bad:
            err = (r.get("error") or "").replace("|", "\\|").strip() or "(no message)"
            out.append(f"- `{r['name']}` ({r['status']}): {err}" + (f" — log: `{r['log']}`" if r.get("log") else ""))
    return "\n".join(out) + "\n"


def _ordered(names: Iterable[str], first: Optional[str] = None) -> List[str]:
    seen: List[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    if first in seen:
        seen.remove(first)
        seen.insert(0, first)
    return seen


# ---- figure -----------------------------------------------------------------------------------------------

# Okabe-Ito (colour-blind safe); grey for the no-mixing baseline
_BASELINE_COLOUR = "#8C8C8C"
_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def plot_results(groups: Sequence[Group], path: Union[str, Path], *, title: str = "") -> Path:
    """``results.png``: per (dataset, rho, epochs) block, grouped bars of top-1 and ECE: one group per loss,
    one bar per mixer, error bars = std over seeds, the value above each bar; cells without a result are marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blocks: List[Tuple[Any, ...]] = []
    for g in groups:
        if g.block not in blocks:
            blocks.append(g.block)
    all_rows = _ordered([g.row for g in groups], first="None")
    colour = {}
    k = 0
    for r in all_rows:
        if r == "None":
            colour[r] = _BASELINE_COLOUR
        else:
            colour[r] = _COLOURS[k % len(_COLOURS)]
            k += 1
    n_bars = max((len({g.row for g in groups if g.block == b}) * len({g.col for g in groups if g.block == b})
                  for b in blocks), default=1)
    panel_w = min(11.0, max(4.5, 0.42 * n_bars + 1.5))
    fig = Figure(figsize=(2 * panel_w, 3.4 * max(len(blocks), 1) + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(len(blocks), 1), 2, squeeze=False)
    for bi, block in enumerate(blocks):
        bg = [g for g in groups if g.block == block]
        rows = [r for r in all_rows if any(g.row == r for g in bg)]
        cols = _ordered([g.col for g in bg])
        by = {(g.row, g.col): g for g in bg}
        width = 0.8 / len(rows)
        many = len(rows) * len(cols) > 12
        for ax, key, what in ((axes[bi][0], "top1", "top-1 accuracy (%)"), (axes[bi][1], "ece", "ECE (%, 15 bins)")):
            top = 0.0
            for ri, r in enumerate(rows):
                for ci, c in enumerate(cols):
                    x = ci - 0.4 + width * (ri + 0.5)
                    g = by.get((r, c))
                    mean, std = g.stat(key) if g is not None else (None, None)
                    if mean is None:
                        label = _missing(g) if g is not None else "not in grid"
                        ax.annotate(label, (x, 0), xytext=(0, 3), textcoords="offset points", rotation=90,
                                    ha="center", va="bottom", fontsize=7, color="#555555")
                        continue
                    ax.bar(x, mean, width * 0.92, color=colour[r], edgecolor="white", linewidth=0.5,
                           yerr=std, capsize=2 if std else 0, error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
                    y = mean + (std or 0.0)
                    top = max(top, y)
                    ax.annotate(f"{mean:.1f}", (x, y), xytext=(0, 2), textcoords="offset points",
                                rotation=90 if many else 0, ha="center", va="bottom", fontsize=7 if many else 8)
            ax.set_xticks(range(len(cols)), cols)
            ax.set_xlim(-0.55, len(cols) - 0.45)
            headroom = 1.22 if many else 1.14
            ax.set_ylim(0, min(100.0, max(top * headroom, 5.0)) if key == "top1" else max(top * headroom, 5.0))
            ax.set_ylabel(what)
            ax.set_title(f"{_block_title(block)}: {what.split(' (')[0]}", fontsize=10)
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
    fig.savefig(path, dpi=130, format="png", facecolor="white")
    return path
