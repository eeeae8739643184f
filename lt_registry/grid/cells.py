"""The grid's cells: the axis specs, one cell per training run, the expansion of a grid into cells, and the one
status vocabulary every part of the grid uses.

Axis specs:

- mixer ``name[:preset]``: any registered mixer (``none``, ``mixup``, ``remix``, ``unimix``, ...); a preset
  (``lt_registry.UNIMIX_PRESETS``, docs/method.md §1.3) applies to UniMix only, and ``unimix`` alone means the
  training recipe's default preset (``official``). Cells always pass ``--preset``; run-folder names leave out
  the ``paper`` preset (:data:`UNNAMED_PRESET`) and name every other one.
- loss ``name[+drw]``: any registered loss; ``ldam+drw`` is ``--loss ldam --drw`` (deferred re-weighting).

Labels and table order come from the registries (``MIXERS.label``, ``LOSSES.sort_key``), so a component
registered anywhere shows up in the grid under its own label.

>>> MixSpec.parse("unimix:official").train_flags()
['--mix', 'unimix', '--preset', 'official']
>>> LossSpec.parse("ldam+drw").train_flags()
['--loss', 'ldam', '--drw']
>>> make_cell("cifar10_lt", 100, "unimix:paper", "bayias", 0).name
'cifar10_lt-r100-unimix-bayias-s0'
>>> make_cell("cifar10_lt", 100, "unimix", "bayias", 0).name
'cifar10_lt-r100-unimix.official-bayias-s0'
"""
from __future__ import annotations

import functools
import itertools
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .._registry import LOSSES, MIXERS
from ..mixers.unimix import UNIMIX_PRESETS

__all__ = [
    "GridError", "OK", "FAILED", "INTERRUPTED", "INCOMPLETE", "RUNNING", "PENDING", "STATUSES", "folder_status",
    "cell_status", "MixSpec", "LossSpec", "Cell", "cell_name", "make_cell", "format_rho", "check_token", "as_list",
    "AXES", "RESERVED_FLAGS", "check_extra_args", "train_args_from_yaml", "cell_matches", "expand_grid",
    "cell_from_run_dir", "canonical_order",
]


class GridError(ValueError):
    """Bad grid input (a grid file, an axis value, a cell's train.py arguments): one line for the user."""


# ---- the status of a cell -------------------------------------------------------------------------------------
# One vocabulary for the runner, grid.json, results.csv and the tables. A run folder alone tells OK, INCOMPLETE
# or PENDING (folder_status); grid.json's record adds FAILED, INTERRUPTED and RUNNING.
OK = "ok"                    #: metrics.json written: finished; a rerun of the grid skips it
FAILED = "failed"            #: the last attempt ended without metrics.json (the error is in grid.json and the log)
INTERRUPTED = "interrupted"  #: stopped by the user (Ctrl-C, SIGTERM); resumable
INCOMPLETE = "incomplete"    #: a checkpoint but no metrics.json: the next run continues it with --resume
RUNNING = "running"          #: being trained now (grid.json only)
PENDING = "pending"          #: never started
#: every status, in the order reports list them
STATUSES = (OK, FAILED, INTERRUPTED, INCOMPLETE, RUNNING, PENDING)


def folder_status(run_dir: Union[str, Path]) -> str:
    """What a run folder alone says: ``ok`` (metrics.json), ``incomplete`` (a checkpoint) or ``pending``."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").is_file():
        return OK
    if (run_dir / "checkpoints" / "latest").is_file():
        return INCOMPLETE
    return PENDING


def cell_status(run_dir: Union[str, Path], record: Optional[Mapping[str, Any]] = None) -> str:
    """A cell's status for a report: the folder's ``ok`` first, then the runner's record (``failed``,
    ``interrupted``), then the folder's ``incomplete`` / ``pending``."""
    status = folder_status(run_dir)
    if status != OK and (record or {}).get("status") in (FAILED, INTERRUPTED):
        return str(record["status"])
    return status


# ---- names ----------------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"^[A-Za-z0-9._+-]+$")


def check_token(value: Any, what: str) -> str:
    """``value`` as a string fit for a folder name (letters, digits and ``. _ + -``); GridError otherwise."""
    if not _TOKEN.match(str(value)):
        raise GridError(f"{what} {value!r} may hold only letters, digits and . _ + -")
    return str(value)


def as_list(v: Any) -> List[Any]:
    """An axis value from a grid file or a match key: a list as it is, anything else as a one-item list."""
    return list(v) if isinstance(v, (list, tuple)) else [v]


def format_rho(rho: Optional[float]) -> str:
    """``100.0 -> '100'``, ``0.5 -> '0.5'`` (folder names and table headings)."""
    if rho is None:
        return ""
    return f"{float(rho):g}"


@functools.lru_cache(maxsize=1)
def _default_preset() -> str:
    from ..config import build_parser  # the training recipe's default, so that `unimix` means what train.py runs
    return str(build_parser().get_default("preset"))


#: the UniMix preset that run-folder names leave out (``...-unimix-bayias-s0``); every other preset is named
#: (``...-unimix.official-bayias-s0``). Fixed, not the recipe's default, so that a folder name always says which
#: preset trained it, in the published grids (written when ``paper`` was the default) and in new ones alike.
UNNAMED_PRESET = "paper"


# ---- specs ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MixSpec:
    """A mixer and, for UniMix, its preset (docs/method.md §1.3). ``unimix`` alone means the training recipe's
    default preset (``official``); ``unimix:paper`` and ``unimix:official`` name one."""

    name: str
    preset: Optional[str] = None

    @classmethod
    def parse(cls, spec: Union[str, "MixSpec"]) -> "MixSpec":
        if isinstance(spec, MixSpec):
            return spec
        if not isinstance(spec, str) or not spec.strip():
            raise GridError(f"mixer spec must be a non-empty string like 'unimix:official', got {spec!r}")
        name, _, preset = spec.strip().lower().partition(":")
        name = name.replace("-", "_")
        if name == "unimix":
            preset = preset or _default_preset()
            if preset not in UNIMIX_PRESETS:
                raise GridError(f"mixer spec {spec!r}: unknown UniMix preset {preset!r}; presets: "
                                f"{', '.join(UNIMIX_PRESETS)}")
            return cls(name, preset)
        if preset:
            raise GridError(f"mixer spec {spec!r}: a preset (':{preset}') applies to unimix only")
        return cls(name, None)

    @property
    def spec(self) -> str:
        """``unimix:paper``, ``unimix:official``, ``mixup``: explicit, whatever the recipe's default."""
        return self.name if self.preset is None else f"{self.name}:{self.preset}"

    @property
    def token(self) -> str:
        """The run-folder name part (:data:`UNNAMED_PRESET` left out)."""
        return self.name if self.preset in (None, UNNAMED_PRESET) else f"{self.name}.{self.preset}"

    @property
    def label(self) -> str:
        base = MIXERS.label(self.name)
        return base if self.preset is None else f"{base} ({self.preset})"

    @property
    def sort_key(self) -> Tuple[Any, ...]:
        presets = list(UNIMIX_PRESETS)
        return (MIXERS.sort_key(self.name), presets.index(self.preset) if self.preset in presets else -1)

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
            raise GridError(f"loss spec must be a non-empty string like 'ldam+drw', got {spec!r}")
        name, *mods = spec.strip().lower().split("+")
        if any(m != "drw" for m in mods) or len(mods) > 1 or not name:
            raise GridError(f"loss spec {spec!r}: expected NAME or NAME+drw (e.g. 'ldam+drw')")
        return cls(name.replace("-", "_"), bool(mods))

    @property
    def spec(self) -> str:
        return self.name + ("+drw" if self.drw else "")

    @property
    def token(self) -> str:
        return self.spec

    @property
    def label(self) -> str:
        return LOSSES.label(self.name) + ("+DRW" if self.drw else "")

    @property
    def sort_key(self) -> Tuple[Any, ...]:
        return (LOSSES.sort_key(self.name), self.drw)

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
    epochs: Optional[int] = None  # as train.py resolves it (flags + config); None when unknown

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
        imb = d.get("imb_factor")
        return cls(name=d["name"], dataset=d["dataset"], imb_factor=None if imb is None else float(imb),
                   mix=MixSpec(d["mix"], d.get("preset")), loss=LossSpec(d["loss"], bool(d.get("drw"))),
                   seed=int(d.get("seed", 0)), variant=d.get("variant") or "", args=tuple(d.get("args") or ()),
                   epochs=d.get("epochs"))


def cell_name(dataset: str, imb_factor: Optional[float], mix: MixSpec, loss: LossSpec, seed: int,
              variant: str = "") -> str:
    """Deterministic run-folder name: ``<dataset>[-r<rho>]-<mixer>-<loss>-s<seed>[-<variant>]``; a dataset name
    with other characters (``hfds/user/my-set``) is flattened to one folder-name part (``hfds_user_my_set``)."""
    parts = [re.sub(r"[^A-Za-z0-9._+]+", "_", dataset)] + ([f"r{format_rho(imb_factor)}"] if imb_factor is not None else [])
    parts += [mix.token, loss.token, f"s{seed}"] + ([variant] if variant else [])
    return "-".join(parts)


def make_cell(dataset: str, imb_factor: Optional[float], mix: Union[str, MixSpec], loss: Union[str, LossSpec],
              seed: int, *, variant: str = "", args: Sequence[str] = (), epochs: Optional[int] = None) -> Cell:
    m, lo = MixSpec.parse(mix), LossSpec.parse(loss)
    if variant:
        check_token(variant, "variant name")
    imb = None if imb_factor is None else float(imb_factor)
    return Cell(cell_name(dataset, imb, m, lo, int(seed), variant), dataset, imb, m, lo, int(seed), variant,
                tuple(str(a) for a in args), epochs)


# ---- expansion ------------------------------------------------------------------------------------------------
#: the axes of a grid (grid-file keys, CSV columns)
AXES = ("mix", "loss", "dataset", "imb_factor", "seed")
#: train.py flags the grid sets itself; extra arguments may not set them (the table would mislabel the cell)
RESERVED_FLAGS = ("--mix", "--loss", "--dataset", "--imb-factor", "--seed", "--preset", "--drw", "--output",
                  "--experiment", "--resume")


def check_extra_args(args: Sequence[str], where: str) -> None:
    for a in args:
        flag = a.split("=", 1)[0]
        if flag in RESERVED_FLAGS:
            hint = {"--drw": " (use a loss spec such as 'ldam+drw')",
                    "--preset": " (use a mixer spec such as 'unimix:official')"}.get(flag, "")
            raise GridError(f"{where} may not set {flag}: the grid sets it for every cell{hint}")


def train_args_from_yaml(value: Any, where: str = "train_args") -> List[str]:
    """``train_args`` in a grid file: a list of strings (``[--epochs, 20]``), one string (shell-split) or a
    mapping (``{epochs: 20, no-progress: true, decay-milestones: [16, 18]}``)."""
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
    raise GridError(f"{where} must be a list of arguments, a string or a mapping, got {type(value).__name__}")


def cell_matches(cell: Cell, match: Mapping[str, Any]) -> bool:
    """Does ``cell`` satisfy every ``key: value-or-list`` of ``match``? A bare mixer or loss name matches
    every spec of that name (``unimix`` matches ``unimix:official``; ``ldam`` matches ``ldam+drw``)."""
    for key, want in match.items():
        values = as_list(want)
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
            raise GridError(f"unknown match key {key!r}; use {', '.join(AXES + ('variant',))}")
        if not ok:
            return False
    return True


def _canonical_mix(s: Any) -> MixSpec:
    m = MixSpec.parse(str(s))
    return replace(m, name=MIXERS.canonical(m.name))


def _canonical_loss(s: Any) -> LossSpec:
    lo = LossSpec.parse(str(s))
    return replace(lo, name=LOSSES.canonical(lo.name))


def _canonical_dataset(s: Any) -> str:
    from ..data import DATASETS
    return DATASETS.canonical(str(s))


def expand_grid(mix: Sequence[str], loss: Sequence[str], dataset: Sequence[str],
                imb_factor: Sequence[Optional[float]] = (None,), seed: Sequence[int] = (0,), *,
                common_args: Sequence[str] = (), train_config: Optional[str] = None,
                variants: Sequence[Mapping[str, Any]] = (), cells: Sequence[Mapping[str, Any]] = ()) -> List[Cell]:
    """The grid's cells in run order (seed, dataset, rho, mixer, loss; then the variants).

    Mixers, losses and datasets must be registered; their names (or aliases) become the canonical names.

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

    Raises:
        GridError: bad input, an unknown mixer / loss / dataset (with the close matches).
    """
    try:
        return _expand(mix, loss, dataset, imb_factor, seed, common_args, train_config, variants, cells)
    except GridError:
        raise
    except ValueError as e:  # the registries' "Unknown mixer 'unimx'. Did you mean 'unimix'? ..."
        raise GridError(str(e)) from None


def _expand(mix, loss, dataset, imb_factor, seed, common_args, train_config, variants, cells) -> List[Cell]:
    check_extra_args(common_args, "extra train.py arguments")
    base = {"mix": list(mix), "loss": list(loss), "dataset": list(dataset), "imb_factor": list(imb_factor),
            "seed": list(seed)}
    for k, v in base.items():
        if not v:
            raise GridError(f"the grid's {k} list is empty")
    subgrids: List[Tuple[Dict[str, List[Any]], str, List[str]]] = [(base, "", [])]
    for i, var in enumerate(variants):
        if not isinstance(var, Mapping):
            raise GridError(f"variants[{i}] must be a mapping (axes, name, train_args), got {var!r}")
        unknown = set(var) - set(AXES) - {"name", "train_args"}
        if unknown:
            raise GridError(f"variants[{i}] has unknown keys {sorted(unknown)}; allowed: "
                            f"{', '.join(AXES + ('name', 'train_args'))}")
        extra = train_args_from_yaml(var.get("train_args"), f"variants[{i}].train_args")
        check_extra_args(extra, f"variants[{i}].train_args")
        axes = {k: (as_list(var[k]) if k in var else base[k]) for k in AXES}
        subgrids.append((axes, str(var.get("name") or ""), extra))
    for j, ov in enumerate(cells):
        if not isinstance(ov, Mapping):
            raise GridError(f"cells[{j}] must be a mapping (match keys, train_args, skip), got {ov!r}")
        if not set(ov) - {"train_args", "skip"}:
            raise GridError(f"cells[{j}] names no cell: give at least one of {', '.join(AXES + ('variant',))}")

    out: Dict[str, Cell] = {}
    for axes, variant, extra in subgrids:
        for s, ds, rho, m, lo in itertools.product(axes["seed"], axes["dataset"], axes["imb_factor"], axes["mix"],
                                                   axes["loss"]):
            ms, ls, dsn = _canonical_mix(m), _canonical_loss(lo), _canonical_dataset(ds)
            rho = None if rho is None else float(rho)
            args: List[str] = []
            if train_config:
                if rho is None and "{imb_factor}" in train_config:
                    raise GridError(f"train_config {train_config!r} uses {{imb_factor}} but the grid has no --imb-factor")
                args += ["--config", train_config.format(dataset=dsn, imb_factor=format_rho(rho), mix=ms.name,
                                                         loss=ls.name, seed=int(s))]
            args += ["--dataset", dsn] + (["--imb-factor", format_rho(rho)] if rho is not None else [])
            args += ms.train_flags() + ls.train_flags() + ["--seed", str(int(s))]
            args += list(common_args) + extra
            cell: Optional[Cell] = make_cell(dsn, rho, ms, ls, int(s), variant=variant, args=args)
            for j, ov in enumerate(cells):
                if not cell_matches(cell, {k: v for k, v in ov.items() if k not in ("train_args", "skip")}):
                    continue
                if ov.get("skip"):
                    cell = None
                    break
                more = train_args_from_yaml(ov.get("train_args"), f"cells[{j}].train_args")
                check_extra_args(more, f"cells[{j}].train_args")
                cell = replace(cell, args=cell.args + tuple(more))
            if cell is None:
                continue
            if cell.name in out:
                if out[cell.name].args != cell.args:
                    raise GridError(f"two cells named {cell.name} with different arguments; give the variant a name")
                continue
            out[cell.name] = cell
    return list(out.values())


# ---- cells found on disk --------------------------------------------------------------------------------------
def cell_from_run_dir(run_dir: Union[str, Path]) -> Optional[Cell]:
    """Rebuild a cell from a run folder's train_args.yaml (for a report without grid.json); None if it has none
    or it does not describe a grid cell."""
    from ..config import TRAIN_ARGS_FILE, read_yaml_mapping

    run_dir = Path(run_dir)
    if not (run_dir / TRAIN_ARGS_FILE).is_file():
        return None
    try:
        a = read_yaml_mapping(run_dir / TRAIN_ARGS_FILE, "train_args", "option: value", ValueError)
        mix = MixSpec(str(a["mix"]), a.get("preset") if a["mix"] == "unimix" else None)
        loss = LossSpec(str(a["loss"]), bool(a.get("drw") or a.get("drw_epoch") is not None))
        imb = a.get("imb_factor")
        return Cell(run_dir.name, str(a["dataset"]), None if imb is None else float(imb), mix, loss, int(a["seed"]),
                    epochs=a.get("epochs"))
    except (KeyError, TypeError, ValueError):
        return None


def canonical_order(cells: Iterable[Cell]) -> List[Cell]:
    """Cells in the paper's table order (the registries' ``order``: None, mixup, Remix, UniMix; CE ... LDAM, LA,
    Bayias; unregistered names last), for folders found on disk."""
    return sorted(cells, key=lambda c: (c.dataset, c.imb_factor or 0.0, c.epochs or 0, c.seed, c.mix.sort_key,
                                        c.variant, c.loss.sort_key))
