#!/usr/bin/env python
"""The paper's ablation grid (Table 4: mixers x losses, per dataset and imbalance factor) in one command.

    python recipes/ablation.py --mix none mixup remix unimix --loss ce ldam bayias --dataset cifar10_lt \\
        --imb-factor 100 --seed 0 1 -- --epochs 200 --data-dir ../shared/data/cifar10-jpeg75
    python recipes/ablation.py --grid recipes/configs/ablation_table4.yaml --jobs 4
    python recipes/ablation.py --grid recipes/configs/ablation_table4.yaml --dry-run     # print the commands
    python recipes/ablation.py --grid recipes/configs/ablation_table4.yaml --report-only # tables from what finished
    python recipes/ablation.py --grid FILE.yaml --report-only --publish results/<name>  # copy them for committing
    python recipes/ablation.py --grid FILE.yaml --report-only --publish results/<name> --publish-models  # + weights

Every cell is an ordinary training run, ``recipes/train.py ... --output OUT/runs --experiment <cell>`` (or
``accelerate launch`` with ``--launcher accelerate``), so each leaves a full run folder. Arguments after ``--`` go
to every train.py call. The grid is resumable: a cell whose run folder has metrics.json is skipped, one with a
checkpoint but no metrics.json is continued with ``--resume``, anything else is (re)started. A failing cell is
reported (its log in OUT/logs/<cell>.log, its last error line in the summary) and does not stop the others.

Specs
  mixer  NAME[:PRESET]   none, mixup, remix, unimix (= unimix:paper), unimix:official
                         -> --mix NAME [--preset PRESET] (UniMix always gets its preset explicitly)
  loss   NAME[+drw]      ce, ldam, bayias, la, focal, cb, ...; ldam+drw -> --loss ldam --drw
Cell (run folder) names: <dataset>[-r<rho>]-<mixer>-<loss>-s<seed>[-<variant>], ':' written as '.',
e.g. cifar10_lt-r100-unimix.official-ldam+drw-s0.

Grid file (--grid FILE.yaml; flags given on the command line override its keys):
  name: table4                       # OUT = output/ablation/<name> (default: the file's stem)
  mix: [none, mixup, remix, unimix]  # axes: a value or a list
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
    - {mix: unimix:official, loss: bayias}                      # UniMix preset official vs paper
    - {mix: [none, unimix], loss: ldam+drw}                     # LDAM with DRW
    - {name: off180, mix: unimix, loss: bayias, train_args: [--mix-off-epoch, 180]}  # own row "UniMix [off180]"
  jobs: 2                            # also: launcher, launcher_args

Output (OUT): runs/<cell>/ (run folders), logs/<cell>.log, grid.json (command, git commit, hardware, wall time
per cell and in total, every invocation), results.csv (one row per cell), results.md (Table-4-shaped tables per
dataset / rho / epochs: top-1 with the gain over the no-mixing row, ECE / MCE, many / medium / few, mean ± std
over seeds; then a long-form table and the failed cells), results.png (grouped bars of top-1 and ECE).
The report covers every cell recorded in OUT/grid.json (all grids run into this OUT) and is rebuilt from the run
folders after every finished cell, at the end, and with --report-only.
Exit status: 0 when every cell of the grid finished, 1 when some failed or were interrupted, 2 for bad input.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "recipes" / "train.py"
GRID_KEYS = ("name", "description", "mix", "loss", "dataset", "imb_factor", "seed", "train_args", "train_config",
             "cells", "variants", "jobs", "launcher", "launcher_args")
DEFAULTS = {"mix": ["none", "mixup", "remix", "unimix"], "loss": ["ce", "ldam", "bayias"], "dataset": ["digits_lt"],
            "imb_factor": [None], "seed": [0]}
# train.py options that do not change a run's result: a finished cell is not flagged when only these differ
_RESULT_NEUTRAL = {"output", "experiment", "resume", "config", "workers", "no_progress", "eval_interval", "log_with",
                   "checkpoint_keep", "push_to_hub", "hub_model_id", "hub_private"}


class GridError(ValueError):
    """Bad grid input: printed as one line, exit status 2."""


def say(*a: Any) -> None:
    print(*a, flush=True)


# ---- arguments --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ablation.py", description=__doc__.split("\n\n")[0].strip(), epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [--grid FILE.yaml] [--mix SPEC ...] [--loss SPEC ...] [--dataset D ...] [--imb-factor R ...]"
              " [--seed S ...] [options] [-- TRAIN.PY ARGS ...]")
    g = p.add_argument_group("the grid")
    g.add_argument("--grid", metavar="FILE.yaml", help="grid file (keys below); flags override its keys")
    g.add_argument("--mix", nargs="+", metavar="SPEC", help=f"mixer specs (default: {' '.join(DEFAULTS['mix'])})")
    g.add_argument("--loss", nargs="+", metavar="SPEC", help=f"loss specs (default: {' '.join(DEFAULTS['loss'])})")
    g.add_argument("--dataset", nargs="+", metavar="NAME", help="datasets (default: digits_lt, embedded)")
    g.add_argument("--imb-factor", nargs="+", type=float, metavar="RHO", help="imbalance factors (default: the dataset's)")
    g.add_argument("--seed", nargs="+", type=int, metavar="S", help="seeds (default: 0)")
    g.add_argument("--train-config", metavar="TEMPLATE",
                   help="train.py --config per cell, a path template with {dataset} {imb_factor} {mix} {loss} {seed}; "
                        "'paper' = recipes/configs/{dataset}_r{imb_factor}.yaml (the paper's protocol)")
    g = p.add_argument_group("running")
    g.add_argument("--name", help="grid name: OUT = output/ablation/<name> (default: grid file stem, or dataset-rho)")
    g.add_argument("--out", metavar="DIR", help="output folder (overrides --name's default)")
    g.add_argument("-j", "--jobs", type=int, default=None, help="cells run at once (default 1)")
    g.add_argument("--threads-per-job", type=int, default=None,
                   help="OMP/MKL threads per job (default: CPU count // (jobs x processes per job))")
    g.add_argument("--launcher", choices=["python", "accelerate"], default=None,
                   help="python recipes/train.py (default) or accelerate launch recipes/train.py")
    g.add_argument("--launcher-args", default=None, metavar="'ARGS'",
                   help="arguments for accelerate launch, e.g. '--num_processes 2 --multi_gpu'")
    g.add_argument("--devices", nargs="+", metavar="ID",
                   help="CUDA devices to spread jobs over (CUDA_VISIBLE_DEVICES per job slot, round robin)")
    g.add_argument("--cell-timeout", type=float, default=None, metavar="S", help="stop a cell after S seconds (failed)")
    g.add_argument("--dry-run", action="store_true", help="print the commands and the number of cells, run nothing")
    g.add_argument("--report-only", action="store_true", help="rebuild results.csv/.md/.png from the run folders")
    g.add_argument("--publish", metavar="DIR",
                   help="also copy the report (results.md/.csv/.png, grid.json) and each finished cell's small files "
                        f"({', '.join(PUBLISHED_RUN_FILES)}) into DIR, e.g. results/<name>, to commit them")
    g.add_argument("--publish-models", action="store_true",
                   help="with --publish: copy each finished cell's whole run folder except checkpoints/ (weights, "
                        "config.json, model card, plots), ready for evaluate.py, timm local-dir: and push_to_hub.py")
    return p


def split_argv(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def load_grid_file(path: str) -> Dict[str, Any]:
    from lt_registry.run import read_yaml_mapping
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


def _as_list(v: Any) -> List[Any]:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def resolve_settings(args: argparse.Namespace, extra: List[str]) -> Dict[str, Any]:
    """Flags over the grid file over the defaults."""
    from lt_registry.ablation import format_rho, train_args_from_yaml

    cfg = load_grid_file(args.grid) if args.grid else {}
    s: Dict[str, Any] = {}
    given = False
    for k in ("mix", "loss", "dataset", "imb_factor", "seed"):
        flag = getattr(args, k)
        if flag is not None:
            s[k], given = list(flag), True
        elif k in cfg and cfg[k] is not None:
            s[k], given = _as_list(cfg[k]), True
        else:
            s[k] = list(DEFAULTS[k])
    s["grid_given"] = given or bool(args.grid)
    s["imb_factor"] = [None if v is None else float(v) for v in s["imb_factor"]]
    try:
        s["train_args"] = train_args_from_yaml(cfg.get("train_args"), "train_args") + list(extra)
    except ValueError as e:
        raise GridError(str(e)) from None
    s["train_config"] = args.train_config or cfg.get("train_config")
    if s["train_config"] == "paper":  # the paper's protocol per dataset and rho (SPEC 4-5)
        s["train_config"] = _display(ROOT / "recipes" / "configs") + "/{dataset}_r{imb_factor}.yaml"
    s["cells"] = cfg.get("cells") or []
    s["variants"] = cfg.get("variants") or []
    s["jobs"] = args.jobs if args.jobs is not None else int(cfg.get("jobs") or 1)
    s["launcher"] = args.launcher or cfg.get("launcher") or "python"
    if s["launcher"] not in ("python", "accelerate"):
        raise GridError(f"launcher must be 'python' or 'accelerate', got {s['launcher']!r}")
    la = args.launcher_args if args.launcher_args is not None else cfg.get("launcher_args") or ""
    s["launcher_args"] = shlex.split(la) if isinstance(la, str) else [str(a) for a in la]
    if s["jobs"] < 1:
        raise GridError(f"--jobs must be >= 1, got {s['jobs']}")
    name = args.name or cfg.get("name")
    if not name:
        if args.grid:
            name = Path(args.grid).stem
        else:
            rhos = [format_rho(r) for r in s["imb_factor"] if r is not None]
            name = "+".join(map(str, s["dataset"])) + (f"-r{'+'.join(rhos)}" if rhos else "")
    if not re.match(r"^[A-Za-z0-9._+-]+$", str(name)):
        raise GridError(f"grid name {name!r} may hold only letters, digits and . _ + -")
    s["name"] = str(name)
    s["out"] = Path(args.out) if args.out else Path("output") / "ablation" / s["name"]
    return s


# ---- cells ------------------------------------------------------------------------------------------------
def _canonical() -> Dict[str, Any]:
    from lt_registry import LOSSES, MIXERS
    from lt_registry.data import DATASETS
    return {"mix": lambda n: MIXERS.get(n).name, "loss": lambda n: LOSSES.get(n).name,
            "dataset": lambda n: DATASETS.get(n).name}


@functools.lru_cache(maxsize=1)
def _train_module() -> Any:
    """recipes/train.py, imported once (its parse_args builds a new parser per call, so reuse is safe)."""
    try:
        spec = importlib.util.spec_from_file_location("_lt_train_recipe", TRAIN)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001  (whatever breaks train.py's import breaks every cell)
        raise GridError(f"cannot load {TRAIN} to check the cells' arguments: {type(e).__name__}: {e}") from None
    return mod


def _train_parse(argv: Sequence[str]) -> Dict[str, Any]:
    """train.py's own parse_args on a cell's arguments. Returns the resolved options; raises GridError with
    train.py's message."""
    mod = _train_module()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return vars(mod.parse_args(list(argv)))
    except SystemExit:
        lines = [ln for ln in err.getvalue().strip().splitlines() if ln.strip()]
        raise GridError(lines[-1] if lines else "train.py rejected the arguments") from None
    except mod.RunError as e:
        raise GridError(str(e)) from None


def schedule_warnings(cell: Any, opts: Dict[str, Any]) -> List[str]:
    """Schedule epochs a config gave explicitly (not scaled with --epochs) that fall outside the run."""
    E = int(opts["epochs"])
    out = []
    ms = [m for m in (opts.get("decay_milestones") or []) if m >= E]
    if ms:
        out.append(f"--decay-milestones {ms} >= --epochs {E}: that LR decay never happens")
    for k in ("drw_epoch", "mix_off_epoch", "warmup_epochs"):
        v = opts.get(k)
        if v is not None and v >= E:
            out.append(f"--{k.replace('_', '-')} {v} >= --epochs {E}")
    return out


def collect_warnings(cells: List[Any], resolved: Dict[str, Dict[str, Any]]) -> List[str]:
    by: Dict[str, List[str]] = {}
    for c in cells:
        for w in schedule_warnings(c, resolved[c.name]):
            by.setdefault(w, []).append(c.name)
    return [f"{w} ({len(names)} cell(s): {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
            for w, names in by.items()]


def build_cells(s: Dict[str, Any]) -> Tuple[List[Any], Dict[str, Dict[str, Any]]]:
    """The grid's cells with train.py's resolved options (epochs, ...) per cell."""
    from dataclasses import replace

    from lt_registry.ablation import check_names, expand_grid

    try:
        cells = expand_grid(s["mix"], s["loss"], s["dataset"], s["imb_factor"], s["seed"],
                            common_args=s["train_args"], train_config=s["train_config"], variants=s["variants"],
                            cells=s["cells"], canonical=_canonical())
        check_names(cells)
    except (ValueError, KeyError) as e:
        raise GridError(str(e).strip("'\"")) from None
    resolved = {}
    out = []
    for c in cells:
        try:
            opts = _train_parse(c.args)
        except GridError as e:
            raise GridError(f"cell {c.name}: train.py rejects its arguments: {e}") from None
        resolved[c.name] = opts
        out.append(replace(c, epochs=int(opts["epochs"])))
    return out, resolved


def cell_state(run_dir: Path) -> str:
    if (run_dir / "metrics.json").is_file():
        return "done"
    if (run_dir / "checkpoints" / "latest").is_file():
        return "resume"
    return "run"


def _display(path: Path) -> str:
    """A path as short as it can be while still right from the current directory."""
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else str(path)
    except ValueError:
        return str(path)


def _launcher_prefix(launcher: str, launcher_args: List[str], port: Optional[int]) -> List[str]:
    if launcher == "python":
        return [sys.executable]
    exe = Path(sys.executable).parent / "accelerate"
    prefix = [str(exe), "launch"] if exe.is_file() else [sys.executable, "-m", "accelerate.commands.launch"]
    return prefix + launcher_args + (["--main_process_port", str(port)] if port is not None else [])


def _processes_per_job(launcher: str, launcher_args: List[str]) -> int:
    if launcher != "accelerate":
        return 1
    for i, a in enumerate(launcher_args):
        if a.startswith("--num_processes"):
            v = a.split("=", 1)[1] if "=" in a else (launcher_args[i + 1] if i + 1 < len(launcher_args) else "1")
            try:
                return max(int(v), 1)
            except ValueError:
                return 1
    return 2 if "--multi_gpu" in launcher_args else 1


def _port_for(slot: int, s: Dict[str, Any]) -> Optional[int]:
    """Parallel multi-process launches each need their own rendezvous port."""
    la = s["launcher_args"]
    if s["launcher"] != "accelerate" or s["jobs"] < 2 or _processes_per_job("accelerate", la) < 2:
        return None
    if any(a.startswith("--main_process_port") for a in la):
        return None
    return 29500 + 7 * slot


def cell_command(cell: Any, state: str, runs: Path, s: Dict[str, Any], slot: int = 0) -> List[str]:
    args = list(cell.args) + ["--output", _display(runs), "--experiment", cell.name]
    if state == "resume":
        args += ["--resume", _display(runs / cell.name)]
    return _launcher_prefix(s["launcher"], s["launcher_args"], _port_for(slot, s)) + [_display(TRAIN)] + args


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_job(s: Dict[str, Any], override: Optional[int]) -> int:
    if override:
        return max(int(override), 1)
    return max(1, cpu_count() // (s["jobs"] * _processes_per_job(s["launcher"], s["launcher_args"])))


def settings_drift(run_dir: Path, opts: Dict[str, Any]) -> List[str]:
    """Result-affecting options where a finished run differs from what the grid would run now."""
    f = run_dir / "train_args.yaml"
    try:
        saved = yaml.safe_load(f.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    diffs = []
    for k, v in sorted(opts.items()):
        if k in _RESULT_NEUTRAL or k not in saved:
            continue
        a, b = saved[k], v
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            same = float(a) == float(b)
        else:
            same = a == b
        if not same:
            diffs.append(f"{k}: {a!r} -> {b!r}")
    return diffs


# ---- provenance -------------------------------------------------------------------------------------------
def git_info() -> Dict[str, Any]:
    out: Dict[str, Any] = {"git_commit": None, "git_dirty": None}
    try:
        p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if p.returncode == 0 and p.stdout.strip():
            out["git_commit"] = p.stdout.strip()
            d = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT, capture_output=True, timeout=30)
            out["git_dirty"] = d.returncode == 1
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def hardware_info() -> Dict[str, Any]:
    import torch

    hw: Dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                          "processor": platform.processor() or None, "cpu_count": os.cpu_count(),
                          "cpus_available": cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__, "cuda_devices": []}
    # ask in a child process: touching CUDA here would hold a context (and GPU memory) for the whole grid
    if torch.cuda.is_available():
        try:
            p = subprocess.run([sys.executable, "-c", "import json, torch; print(json.dumps([torch.cuda.get_device_name(i)"
                                " for i in range(torch.cuda.device_count())]))"],
                               capture_output=True, text=True, timeout=120)
            hw["cuda_devices"] = json.loads(p.stdout.strip().splitlines()[-1])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            hw["cuda_devices"] = ["(query failed)"]
    return hw


def _hardware_line(hw: Dict[str, Any]) -> str:
    gpus = hw.get("cuda_devices") or []
    if gpus:
        names: Dict[str, int] = {}
        for g in gpus:
            names[g] = names.get(g, 0) + 1
        gpu = ", ".join(f"{n} x {k}" for k, n in names.items())
    else:
        gpu = "no CUDA device"
    return (f"{hw.get('platform')}, {hw.get('cpus_available') or hw.get('cpu_count')} CPUs, {gpu}; "
            f"python {hw.get('python')}, torch {hw.get('torch')}")


def fmt_duration(s: Optional[float]) -> str:
    if s is None:
        return "n/a"
    s = float(s)
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---- grid.json --------------------------------------------------------------------------------------------
def read_grid_json(out: Path) -> Dict[str, Any]:
    f = out / "grid.json"
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise GridError(f"{f} is unreadable ({e}); move it away to start a fresh record") from None


def write_json_atomic(path: Path, data: Dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def merged_cells(cells: List[Any], record: Dict[str, Any]) -> Tuple[List[Any], Dict[str, Dict[str, Any]]]:
    """The current grid's cells first, then cells earlier invocations recorded in grid.json."""
    from lt_registry.ablation import Cell

    recs = {c["name"]: c for c in record.get("cells", []) if isinstance(c, dict) and "name" in c}
    names = {c.name for c in cells}
    out = list(cells)
    for name, rec in recs.items():
        if name not in names:
            try:
                out.append(Cell.from_dict(rec))
            except (KeyError, TypeError, ValueError):
                continue
    return out, recs


# ---- report -----------------------------------------------------------------------------------------------
def write_report(out: Path, cells: List[Any], records: Dict[str, Dict[str, Any]], record: Dict[str, Any],
                 title: str) -> Dict[str, Any]:
    from lt_registry.ablation import aggregate, collect_results, plot_results, results_markdown, write_results_csv

    rows = collect_results(cells, out / "runs", records, logs_dir=out / "logs")
    groups = aggregate(rows)
    header = []
    inv = [i for i in record.get("invocations", []) if isinstance(i, dict)]
    if inv:
        last = inv[-1]
        header.append(f"command: `{last.get('command')}` (in `{last.get('cwd')}`)")
        commit = last.get("git_commit") or "unknown (not a git checkout)"
        if last.get("git_dirty"):
            commit += " (with uncommitted changes)"
        header.append(f"git commit: {commit}")
        header.append(f"hardware: {_hardware_line(last.get('hardware') or {})}")
        header.append(f"wall time: {fmt_duration(last.get('wall_s'))} for the last invocation ({len(last.get('ran', []))} "
                      f"cells run, {len(last.get('skipped', []))} skipped as finished; {last.get('jobs')} job(s) at once, "
                      f"{last.get('threads_per_job')} thread(s) each); "
                      f"{fmt_duration(sum(r.get('wall_s') or 0 for r in records.values()))} summed over cells")
        header.append(f"started {last.get('started')}, finished {last.get('finished') or '(running)'}; "
                      f"{len(inv)} invocation(s) recorded in grid.json")
    header.append(f"report built {_now()} from the run folders in `{_display(out / 'runs')}`")
    write_results_csv(rows, out / "results.csv")
    (out / "results.md").write_text(results_markdown(rows, title=title, header=header, groups=groups))
    plot_results(groups, out / "results.png", title=title.replace("`", ""))
    return {"rows": rows, "groups": groups}


PUBLISHED_RUN_FILES = ("metrics.json", "train_args.yaml", "calibration/bins.csv")
PUBLISHED_REPORT_FILES = ("results.md", "results.csv", "results.png", "grid.json")


def publish(out: Path, dest: Path, cells: List[Any], models: bool = False) -> Path:
    """Copy what a reader needs to check the grid's numbers from OUT to ``dest``: the report files and, per
    finished cell, its metrics (final numbers, per-class accuracy, calibration bins, per-epoch history), its
    resolved arguments and its reliability-diagram bins. With ``models``, each finished cell's whole run folder
    but ``checkpoints/`` (the weights, config.json, model card and plots: what push_to_hub uploads)."""
    if dest.resolve() == out.resolve():
        raise GridError(f"--publish needs a folder other than the grid's output {_display(out)}")
    dest.mkdir(parents=True, exist_ok=True)
    for name in PUBLISHED_REPORT_FILES:
        if (out / name).is_file():
            shutil.copy2(out / name, dest / name)
    copied = 0
    for c in cells:
        src = out / "runs" / c.name
        if not (src / "metrics.json").is_file():
            continue
        if models:
            rels = sorted(str(f.relative_to(src)) for f in src.rglob("*")
                          if f.is_file() and f.relative_to(src).parts[0] != "checkpoints" and f.suffix != ".tmp")
        else:
            rels = [rel for rel in PUBLISHED_RUN_FILES if (src / rel).is_file()]
        for rel in rels:
            (dest / "runs" / c.name / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dest / "runs" / c.name / rel)
        copied += 1
    say(f"published the report and {copied} finished cell(s) to {_display(dest)}")
    return dest


# ---- running ----------------------------------------------------------------------------------------------
_ERR_LINE = re.compile(r"^(error: |[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b)")


def last_error_line(log: Path, offset: int = 0) -> str:
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]
    for ln in reversed(lines):
        if _ERR_LINE.match(ln):
            return ln
    return lines[-1] if lines else ""


class Job:
    def __init__(self, cell: Any, state: str, slot: int, cmd: List[str], log: Path, env: Dict[str, str]):
        self.cell, self.state, self.slot, self.cmd, self.log = cell, state, slot, cmd, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self.fh = log.open("ab")
        self.offset = self.fh.tell()
        self.fh.write(f"\n===== {_now()} {'resume' if state == 'resume' else 'start'}: {shlex.join(cmd)}\n".encode())
        self.fh.flush()
        self.start = time.monotonic()
        self.started = _now()
        self.proc = subprocess.Popen(cmd, stdout=self.fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.timed_out = False
        self.term_at: Optional[float] = None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the job's own process group (accelerate's workers included)
        except (ProcessLookupError, PermissionError):
            pass


def run_grid(todo: List[Tuple[Any, str]], s: Dict[str, Any], out: Path, records: Dict[str, Dict[str, Any]],
             threads: int, on_change, timeout: Optional[float], devices: Optional[List[str]]) -> bool:
    """Run the cells, ``s['jobs']`` at a time. Returns False when interrupted."""
    runs, logs = out / "runs", out / "logs"
    pending = list(todo)
    running: List[Job] = []
    free = list(range(s["jobs"]))
    total, done = len(todo), 0
    base_env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    width = len(str(total))

    def finish(job: Job, rc: int, interrupted: bool = False) -> None:
        nonlocal done
        job.fh.close()
        free.append(job.slot)
        free.sort()
        wall = time.monotonic() - job.start
        rec = records[job.cell.name]
        rec.setdefault("attempts", []).append({"started": job.started, "wall_s": round(wall, 2), "returncode": rc,
                                               "resumed": job.state == "resume", "command": shlex.join(job.cmd)})
        rec["wall_s"] = round(sum(a["wall_s"] for a in rec["attempts"]), 2)
        rec["returncode"] = rc
        has_metrics = (runs / job.cell.name / "metrics.json").is_file()
        if rc == 0 and has_metrics:
            rec["status"], rec["error"] = "ok", ""
        elif interrupted:
            rec["status"], rec["error"] = "interrupted", "interrupted by the user (resumable)"
        else:
            rec["status"] = "failed"
            msg = last_error_line(job.log, job.offset)
            if job.timed_out:
                msg = f"timed out after {fmt_duration(timeout)}" + (f"; last line: {msg}" if msg else "")
            elif rc < 0:
                msg = f"killed by signal {signal.Signals(-rc).name}" + (f"; last line: {msg}" if msg else "")
            elif rc == 0:
                msg = "exited 0 but wrote no metrics.json" + (f"; last line: {msg}" if msg else "")
            rec["error"] = msg
        done += 1
        tag = f"[{done:>{width}}/{total}]"
        if rec["status"] == "ok":
            try:
                fin = json.loads((runs / job.cell.name / "metrics.json").read_text())["final"]
                nums = f"top1 {fin.get('top1', float('nan')):.2f}  ECE {fin.get('ece', float('nan')):.2f}"
            except (OSError, ValueError, KeyError, TypeError):
                nums = ""
            say(f"{tag} ok      {job.cell.name}  {nums}  ({fmt_duration(wall)})")
        else:
            how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
            say(f"{tag} {rec['status'].upper():<7} {job.cell.name} ({how}, {fmt_duration(wall)}): {rec['error']}\n"
                f"{' ' * len(tag)} log: {_display(job.log)}")
        on_change()

    try:
        while pending or running:
            while pending and free:
                cell, state = pending.pop(0)
                slot = free.pop(0)
                env = dict(base_env)
                if devices:
                    env["CUDA_VISIBLE_DEVICES"] = devices[slot % len(devices)]
                cmd = cell_command(cell, state, runs, s, slot)
                rec = records[cell.name]
                rec.update({"status": "running", "command": shlex.join(cmd), "log": str(logs / f"{cell.name}.log")})
                job = Job(cell, state, slot, cmd, logs / f"{cell.name}.log", env)
                running.append(job)
                say(f"{'resume' if state == 'resume' else 'start '}  {cell.name}" + (f"  (slot {slot})" if s["jobs"] > 1 else ""))
            time.sleep(0.2)
            for job in list(running):
                if timeout and not job.timed_out and time.monotonic() - job.start > timeout:
                    job.timed_out, job.term_at = True, time.monotonic()
                    job.stop(signal.SIGTERM)
                if job.term_at is not None and time.monotonic() - job.term_at > 20:
                    job.stop(signal.SIGKILL)
                rc = job.proc.poll()
                if rc is not None:
                    running.remove(job)
                    finish(job, rc)
    except KeyboardInterrupt:
        say(f"\ninterrupted: stopping {len(running)} running cell(s); they resume from their last checkpoint next time")
        for job in running:
            job.stop(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for job in running:
            try:
                job.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                job.stop(signal.SIGKILL)
                job.proc.wait()
        for job in running:
            finish(job, job.proc.returncode, interrupted=True)
        return False
    return True


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def grid_lock(out: Path):
    lock = out / ".ablation.lock"
    if lock.is_file():
        try:
            pid = int(lock.read_text().split()[0])
            if pid != os.getpid():
                os.kill(pid, 0)
                raise GridError(f"another ablation (pid {pid}) is running in {out}; wait for it or remove {lock} "
                                "if that process is gone")
        except (ValueError, IndexError, ProcessLookupError):
            pass
        except PermissionError:
            raise GridError(f"another ablation holds {lock}") from None
    lock.write_text(f"{os.getpid()} {platform.node()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()


# ---- main -------------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = split_argv(argv)
    args = build_parser().parse_args(own)
    t0 = time.monotonic()
    try:
        if args.dry_run and args.report_only:
            raise GridError("--dry-run and --report-only exclude each other")
        if args.publish_models and not args.publish:
            raise GridError("--publish-models goes with --publish DIR (the folder to copy the run folders into)")
        s = resolve_settings(args, extra)
        out = s["out"]
        title = f"Ablation grid `{s['name']}`: mixers x losses (paper Table 4)"
        if args.report_only:
            record = read_grid_json(out)
            if record.get("name") and not (s["grid_given"] or args.name):
                title = f"Ablation grid `{record['name']}`: mixers x losses (paper Table 4)"
            cells: List[Any] = []
            if s["grid_given"]:
                cells, _ = build_cells(s)
            cells, records = merged_cells(cells, record)
            if not cells:  # no grid and no grid.json: whatever run folders there are
                from lt_registry.ablation import canonical_order, cell_from_run_dir
                cells = canonical_order(c for c in (cell_from_run_dir(d) for d in sorted((out / "runs").glob("*"))
                                                    if d.is_dir()) if c)
            if not cells:
                raise GridError(f"nothing to report in {out}: no grid.json and no run folders")
            rep = write_report(out, cells, records, record, title)
            _print_summary(rep["rows"], out)
            if args.publish:
                publish(out, Path(args.publish), cells, args.publish_models)
            return 0

        cells, resolved = build_cells(s)
        runs = out / "runs"
        states = {c.name: cell_state(runs / c.name) for c in cells}
        threads = threads_per_job(s, args.threads_per_job)
        n = {k: sum(v == k for v in states.values()) for k in ("run", "resume", "done")}
        nouns = {"mix": ("mixer", "mixers"), "loss": ("loss", "losses"), "dataset": ("dataset", "datasets"),
                 "imb_factor": ("imbalance factor", "imbalance factors"), "seed": ("seed", "seeds")}
        axes = " x ".join(f"{k} {nouns[key][k != 1]}" for key in nouns for k in [len(set(map(str, s[key])))])
        summary = (f"{len(cells)} cell{'s' if len(cells) != 1 else ''} ({axes}" + (", plus variants / overrides" if s["variants"] or s["cells"] else "")
                   + f"): {n['run']} to run, {n['resume']} to resume, {n['done']} finished (skipped)")
        warnings = collect_warnings(cells, resolved)
        drift = {}
        for c in cells:
            if states[c.name] == "done":
                d = settings_drift(runs / c.name, resolved[c.name])
                if d:
                    drift[c.name] = d

        if args.dry_run:
            say(f"# {summary}")
            say(f"# output: {_display(out)}   jobs: {s['jobs']}   per job: OMP_NUM_THREADS={threads} "
                f"MKL_NUM_THREADS={threads}" + (f"   CUDA_VISIBLE_DEVICES: {' '.join(args.devices)} by slot"
                                                 if args.devices else ""))
            for w in warnings:
                say(f"# warning: {w}")
            for i, c in enumerate(cells):
                st = states[c.name]
                if st == "done":
                    say(f"# finished, skipped: {c.name}" + (f" (differs now: {'; '.join(drift[c.name])})"
                                                            if c.name in drift else ""))
                else:
                    say(shlex.join(cell_command(c, st, runs, s, i % s["jobs"])))
            say(f"# {len(cells)} cells")
            return 0

        out.mkdir(parents=True, exist_ok=True)
        with grid_lock(out):
            record = read_grid_json(out)
            all_cells, old = merged_cells(cells, record)
            records: Dict[str, Dict[str, Any]] = {}
            for c in all_cells:
                rec = dict(old.get(c.name, {}))
                rec.update(c.to_dict())
                rec["run_dir"] = str(runs / c.name)
                rec.setdefault("log", str(out / "logs" / f"{c.name}.log"))
                rec.setdefault("attempts", [])
                if (runs / c.name / "metrics.json").is_file():
                    rec["status"], rec["error"] = "ok", ""
                elif rec.get("status") in (None, "running", "ok"):
                    rec["status"] = "pending"
                records[c.name] = rec
            for name, d in drift.items():
                records[name]["warning"] = "finished with other settings than the grid now asks for: " + "; ".join(d)
            todo = [(c, states[c.name]) for c in cells if states[c.name] != "done"]
            invocation: Dict[str, Any] = {
                "command": shlex.join([Path(sys.executable).name, _display(Path(__file__).resolve()), *argv]),
                "argv": [sys.executable, str(Path(__file__).resolve()), *argv], "cwd": os.getcwd(),
                "started": _now(), "finished": None, "wall_s": None, **git_info(), "hardware": hardware_info(),
                "jobs": s["jobs"], "threads_per_job": threads, "launcher": s["launcher"],
                "launcher_args": s["launcher_args"], "grid": [c.name for c in cells],
                "ran": [c.name for c, st in todo if st == "run"], "resumed": [c.name for c, st in todo if st == "resume"],
                "skipped": [c.name for c in cells if states[c.name] == "done"], "interrupted": False,
            }
            record["invocations"] = [*record.get("invocations", []), invocation]

            def save() -> None:
                invocation["wall_s"] = round(time.monotonic() - t0, 2)
                record.update({"name": s["name"], "out": str(out), "updated": _now(),
                               "command": invocation["command"], "git_commit": invocation["git_commit"],
                               "git_dirty": invocation["git_dirty"], "hardware": invocation["hardware"],
                               "total_wall_s": invocation["wall_s"],
                               "cells_wall_s": round(sum(r.get("wall_s") or 0 for r in records.values()), 2),
                               "cells": [records[c.name] for c in all_cells]})
                write_json_atomic(out / "grid.json", record)

            def refresh() -> None:
                save()
                try:
                    write_report(out, all_cells, records, record, title)
                except Exception as e:  # a report problem must not stop the grid
                    say(f"warning: report not rebuilt: {type(e).__name__}: {e}")

            say(summary)
            say(f"output: {_display(out)}; {s['jobs']} job(s) at once, {threads} thread(s) each; "
                f"launcher: {s['launcher']}")
            for w in warnings:
                say(f"warning: {w}")
            for name, d in drift.items():
                say(f"warning: {name} finished with other settings than the grid now asks for ({'; '.join(d)}); "
                    f"kept. Use a new --name (or remove {_display(runs / name)}) to rerun it.")
            save()
            old_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
            try:
                completed = run_grid(todo, s, out, records, threads, refresh, args.cell_timeout, args.devices)
            finally:
                signal.signal(signal.SIGTERM, old_handler)
            invocation["finished"] = _now()
            invocation["interrupted"] = not completed
            invocation["failed"] = [c.name for c, _ in todo if records[c.name]["status"] != "ok"]
            save()
            rep = write_report(out, all_cells, records, record, title)
        grid_rows = [r for r in rep["rows"] if r["name"] in {c.name for c in cells}]
        _print_summary(grid_rows, out, wall=time.monotonic() - t0)
        if args.publish:
            publish(out, Path(args.publish), all_cells, args.publish_models)
        if not completed:
            return 130
        return 0 if all(r["status"] == "ok" for r in grid_rows) else 1
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _print_summary(rows: List[Dict[str, Any]], out: Path, wall: Optional[float] = None) -> None:
    counts: Dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    say(f"{len(rows)} cell{'s' if len(rows) != 1 else ''}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        + (f"; wall time {fmt_duration(wall)}" if wall is not None else ""))
    for r in rows:
        if r["status"] in ("failed", "interrupted"):
            say(f"  {r['status']}: {r['name']}: {r['error']}" + (f" (log: {_display(Path(r['log']))})" if r.get("log") else ""))
    say(f"results: {_display(out / 'results.md')}, {_display(out / 'results.csv')}, {_display(out / 'results.png')}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `ablation.py --dry-run | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
