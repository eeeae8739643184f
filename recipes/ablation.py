#!/usr/bin/env python
"""The paper's ablation grid (Table 4: mixers x losses, per dataset and imbalance factor) in one command.

    python recipes/ablation.py --mix none mixup remix unimix --loss ce ldam bayias --dataset cifar10_lt \\
        --imb-factor 100 --seed 0 1 -- --epochs 200 --data-dir data/cifar10-jpeg75
    python recipes/ablation.py --grid recipes/configs/ablation_table4.yaml --jobs 4
    python recipes/ablation.py --grid recipes/configs/ablation_table4.yaml --dry-run     # print the commands
    python recipes/ablation.py --grid recipes/configs/ablation_table4.yaml --report-only # tables from what finished
    python recipes/ablation.py --grid FILE.yaml --report-only --publish results/<name>  # copy them for committing
    python recipes/ablation.py --grid FILE.yaml --report-only --publish results/<name> --publish-models  # + weights

Every cell is an ordinary ``recipes/train.py`` run (or ``accelerate launch`` with ``--launcher accelerate``) into
OUT/runs/<cell>, its log in OUT/logs/<cell>.log; arguments after ``--`` go to every cell. Resumable: a finished cell
is skipped, an incomplete one (a checkpoint) continued with ``--resume``, a pending or failed one (re)started; a
failing cell does not stop the others. Mixer specs NAME[:PRESET] (unimix:paper, unimix:official; unimix alone =
train.py's default preset, official), loss specs NAME[+drw] (ldam+drw); cells are named
<dataset>[-r<rho>]-<mixer>-<loss>-s<seed>[-<variant>] (mixer part unimix.official; the paper preset's is plain unimix).
OUT also gets grid.json (every invocation and cell: commands, git commit, hardware, wall times, status: ok,
failed, interrupted, incomplete, running, pending) and the report, rebuilt after every cell and by --report-only:
results.csv, results.md (Table-4-shaped tables next to the paper's numbers) and results.png (lt_registry.grid).
Exit status: 0 when every cell of the grid finished, 1 when some failed or were interrupted, 2 for bad input.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from lt_registry.grid import cells as C
from lt_registry.grid.gridfile import (DEFAULTS, GRID_FILE_HELP, GridSettings, build_cells, describe_grid, plan_grid,
                                       resolve_grid)
from lt_registry.grid.results import (PUBLISHED_RUN_FILES, format_duration, publish, read_grid_json, recorded_cells,
                                      summary_lines, timestamp)
from lt_registry.grid.outputs import write_report
from lt_registry.provenance import cpus_available, git_commit, hardware_info

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "recipes" / "train.py"
GridError = C.GridError
say = functools.partial(print, flush=True)


def _display(path: Path) -> str:
    """A path as short as it can be while still right from the current directory (commands, messages)."""
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


def _rel(path: Path) -> str:
    """A path as grid.json and the report record it: relative to the repository when inside it."""
    p = Path(os.path.abspath(path))
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


# ---- the command line -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    about, more = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(
        prog="ablation.py", description=about.strip(), formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"{more}\nGrid file (--grid FILE.yaml; flags override its keys):\n{GRID_FILE_HELP}",
        usage="%(prog)s [--grid FILE.yaml] [--mix SPEC ...] [--loss SPEC ...] [--dataset D ...] [--imb-factor R ...]"
              " [--seed S ...] [options] [-- TRAIN.PY ARGS ...]")
    g = p.add_argument_group("the grid")
    g.add_argument("--grid", metavar="FILE.yaml", help="grid file (keys below); flags override its keys")
    g.add_argument("--mix", nargs="+", metavar="SPEC", help=f"mixer specs (default: {' '.join(DEFAULTS['mix'])})")
    g.add_argument("--loss", nargs="+", metavar="SPEC", help=f"loss specs (default: {' '.join(DEFAULTS['loss'])})")
    g.add_argument("--dataset", nargs="+", metavar="NAME", help="datasets (default: digits_lt, embedded)")
    g.add_argument("--imb-factor", nargs="+", type=float, metavar="RHO",
                   help="imbalance factors (default: the dataset's)")
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


# ---- the job pool -----------------------------------------------------------------------------------------
def _command(s: GridSettings, cell: C.Cell, resume: bool, slot: int) -> List[str]:
    return s.command(cell, _display(TRAIN), Path(_display(s.out / "runs")), resume, slot)


_ERR_LINE = re.compile(r"^(error: |[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b)")


class Job:
    """One cell's train.py process, its log and its slot."""

    def __init__(self, cell: C.Cell, resume: bool, slot: int, cmd: List[str], log: Path, env: Dict[str, str]):
        self.cell, self.resume, self.slot, self.cmd, self.log = cell, resume, slot, cmd, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self.fh = log.open("ab")
        self.offset = self.fh.tell()
        self.fh.write(f"\n===== {timestamp()} {'resume' if resume else 'start'}: {shlex.join(cmd)}\n".encode())
        self.fh.flush()
        self.start, self.started = time.monotonic(), timestamp()
        self.proc = subprocess.Popen(cmd, stdout=self.fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.timed_out, self.term_at = False, None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # the job's own process group (accelerate's workers included)

    def error(self, rc: int, timeout: Optional[float]) -> str:
        """Why the cell failed: the timeout or signal, and the log's last error line."""
        try:
            with self.log.open("rb") as f:
                f.seek(self.offset)
                lines = [ln.strip() for ln in re.split(r"[\r\n]+", f.read().decode("utf-8", "replace")) if ln.strip()]
        except OSError:
            lines = []
        msg = next((ln for ln in reversed(lines) if _ERR_LINE.match(ln)), lines[-1] if lines else "")
        why = (f"timed out after {format_duration(timeout)}" if self.timed_out else
               f"killed by signal {signal.Signals(-rc).name}" if rc < 0 else
               "exited 0 but wrote no metrics.json" if rc == 0 else "")
        return f"{why}; last line: {msg}" if why and msg else why or msg


def run_grid(todo: List[Tuple[C.Cell, str]], s: GridSettings, grid: "GridRecord", threads: int,
             timeout: Optional[float], devices: Optional[List[str]]) -> bool:
    """Run the cells, ``s.jobs`` at a time, recording each in grid.json. Returns False when interrupted."""
    runs, logs = s.out / "runs", s.out / "logs"
    pending, running, free = list(todo), [], list(range(s.jobs))
    done, width = 0, len(str(len(todo)))
    base_env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")

    def finish(job: Job, rc: int, interrupted: bool = False) -> None:
        nonlocal done
        job.fh.close()
        free.append(job.slot)
        free.sort()
        wall, done = time.monotonic() - job.start, done + 1
        if rc == 0 and C.folder_status(runs / job.cell.name) == C.OK:
            status, error = C.OK, ""
        elif interrupted:
            status, error = C.INTERRUPTED, "interrupted by the user (resumable)"
        else:
            status, error = C.FAILED, job.error(rc, timeout)
        grid.finished(job, rc, wall, status, error)
        tag = f"[{done:>{width}}/{len(todo)}]"
        if status == C.OK:
            nums = ""
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                fin = json.loads((runs / job.cell.name / "metrics.json").read_text())["final"]
                nums = f"top1 {fin.get('top1', float('nan')):.2f}  ECE {fin.get('ece', float('nan')):.2f}"
            say(f"{tag} ok      {job.cell.name}  {nums}  ({format_duration(wall)})")
        else:
            how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
            say(f"{tag} {status.upper():<7} {job.cell.name} ({how}, {format_duration(wall)}): {error}\n"
                f"{' ' * len(tag)} log: {_display(job.log)}")
        grid.refresh()

    try:
        while pending or running:
            while pending and free:
                (cell, status), slot = pending.pop(0), free.pop(0)
                env = dict(base_env, **({"CUDA_VISIBLE_DEVICES": devices[slot % len(devices)]} if devices else {}))
                resume = status == C.INCOMPLETE
                cmd = _command(s, cell, resume, slot)
                grid.cells[cell.name].update(status=C.RUNNING, command=GridRecord.command(cmd))
                running.append(Job(cell, resume, slot, cmd, logs / f"{cell.name}.log", env))
                say(f"{'resume' if resume else 'start '}  {cell.name}" + (f"  (slot {slot})" if s.jobs > 1 else ""))
            time.sleep(0.2)
            for job in list(running):
                if timeout and not job.timed_out and time.monotonic() - job.start > timeout:
                    job.timed_out, job.term_at = True, time.monotonic()
                    job.stop(signal.SIGTERM)
                if job.term_at is not None and time.monotonic() - job.term_at > 20:
                    job.stop(signal.SIGKILL)
                if job.proc.poll() is not None:
                    running.remove(job)
                    finish(job, job.proc.returncode)
    except KeyboardInterrupt:
        say(f"\ninterrupted: stopping {len(running)} running cell(s); they resume from their last checkpoint next time")
        deadline = time.monotonic() + 20
        for job in running:
            job.stop(signal.SIGTERM)
        for job in running:
            try:
                job.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                job.stop(signal.SIGKILL)
                job.proc.wait()
            finish(job, job.proc.returncode, interrupted=True)
        return False
    return True


@contextlib.contextmanager
def grid_lock(out: Path):
    """One runner per OUT at a time (an OS lock: released when the process ends, however it ends)."""
    with (out / ".ablation.lock").open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise GridError(f"another ablation is running in {_display(out)}; wait for it to finish") from None
        yield


# ---- grid.json --------------------------------------------------------------------------------------------
class GridRecord:
    """OUT/grid.json: every invocation (command, git commit, hardware, wall time) and every cell's record
    (arguments, status, error, attempts), rewritten atomically after each change; the report follows it."""

    def __init__(self, s: GridSettings, cells: List[C.Cell], title: str):
        self.s, self.out, self.title, self.t0 = s, s.out, title, time.monotonic()
        self.record = read_grid_json(self.out)
        self.all_cells, old = recorded_cells(cells, self.record)
        self.cells: Dict[str, Dict[str, Any]] = {}
        for c in self.all_cells:
            rec = dict(old.get(c.name, {}), **c.to_dict(), run_dir=_rel(self.out / "runs" / c.name),
                       log=_rel(self.out / "logs" / f"{c.name}.log"))
            rec.setdefault("attempts", [])
            folder = C.folder_status(self.out / "runs" / c.name)
            if folder == C.OK or rec.get("status") in (None, C.RUNNING, C.OK):
                rec["status"], rec["error"] = folder, ""
            self.cells[c.name] = rec

    @staticmethod
    def command(cmd: Sequence[str]) -> str:
        """A command as recorded: the program by its name, not its path on this machine."""
        return shlex.join([Path(cmd[0]).name, *cmd[1:]])

    def start(self, argv: List[str], cells: List[C.Cell], status: Dict[str, str], threads: int) -> None:
        todo = [c.name for c in cells if status[c.name] != C.OK]
        self.invocation = {
            "command": self.command([sys.executable, _display(Path(__file__).resolve()), *argv]),
            "argv": [Path(sys.executable).name, _rel(Path(__file__)), *argv], "cwd": _rel(Path.cwd()),
            "started": timestamp(), "finished": None, "wall_s": None, **git_commit(ROOT, dirty=True),
            "hardware": hardware_info(), "jobs": self.s.jobs, "threads_per_job": threads,
            "launcher": self.s.launcher, "launcher_args": self.s.launcher_args, "grid": [c.name for c in cells],
            "ran": [n for n in todo if status[n] != C.INCOMPLETE],
            "resumed": [n for n in todo if status[n] == C.INCOMPLETE],
            "skipped": [c.name for c in cells if status[c.name] == C.OK], "interrupted": False}
        self.record["invocations"] = [*self.record.get("invocations", []), self.invocation]
        self.save()

    def finished(self, job: Job, rc: int, wall: float, status: str, error: str) -> None:
        rec = self.cells[job.cell.name]
        rec["attempts"].append({"started": job.started, "wall_s": round(wall, 2), "returncode": rc,
                                "resumed": job.resume, "command": self.command(job.cmd)})
        rec.update(wall_s=round(sum(a["wall_s"] for a in rec["attempts"]), 2), returncode=rc, status=status,
                   error=error)

    def save(self) -> None:
        inv = self.invocation
        inv["wall_s"] = round(time.monotonic() - self.t0, 2)
        self.record.update({"name": self.s.name, "out": _rel(self.out), "updated": timestamp(),
                            "command": inv["command"], "git_commit": inv["git_commit"], "git_dirty": inv["git_dirty"],
                            "hardware": inv["hardware"], "total_wall_s": inv["wall_s"],
                            "cells_wall_s": round(sum(r.get("wall_s") or 0 for r in self.cells.values()), 2),
                            "cells": [self.cells[c.name] for c in self.all_cells]})
        tmp = self.out / "grid.json.tmp"
        tmp.write_text(json.dumps(self.record, indent=2, default=str))
        os.replace(tmp, self.out / "grid.json")

    def report(self) -> Dict[str, Any]:
        return write_report(self.out, self.all_cells, self.cells, self.record, self.title, path_str=_rel)

    def refresh(self) -> None:
        self.save()
        try:
            self.report()
        except Exception as e:  # a report problem must not stop the grid
            say(f"warning: report not rebuilt: {type(e).__name__}: {e}")


# ---- main -------------------------------------------------------------------------------------------------
TITLE = "Ablation grid `{}`: mixers x losses (paper Table 4)"


def report_only(args: argparse.Namespace, s: GridSettings) -> List[C.Cell]:
    record = read_grid_json(s.out)
    title = TITLE.format(record["name"] if record.get("name") and not (s.given or args.name) else s.name)
    cells, records = recorded_cells(build_cells(s)[0] if s.given else [], record)
    if not cells:  # no grid and no grid.json: whatever run folders there are
        cells = C.canonical_order(c for c in map(C.cell_from_run_dir, sorted((s.out / "runs").glob("*"))) if c)
    if not cells:
        raise GridError(f"nothing to report in {_display(s.out)}: no grid.json and no run folders")
    _print_summary(write_report(s.out, cells, records, record, title, path_str=_rel)["rows"], s.out)
    return cells


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(own)
    t0 = time.monotonic()
    try:
        if args.dry_run and args.report_only:
            raise GridError("--dry-run and --report-only exclude each other")
        if args.publish_models and not args.publish:
            raise GridError("--publish-models goes with --publish DIR (the folder to copy the run folders into)")
        flags = {k: getattr(args, k) for k in ("mix", "loss", "dataset", "imb_factor", "seed", "train_config", "name",
                                               "out", "jobs", "launcher", "launcher_args")}
        s = resolve_grid(flags, args.grid, extra, paper_configs=_display(ROOT / "recipes" / "configs"))
        if args.report_only:
            _publish(args, s.out, report_only(args, s))
            return 0
        out, runs, plan = s.out, s.out / "runs", plan_grid(s)
        cells, status, warnings, drift = plan.cells, plan.status, plan.warnings, plan.drift
        threads = s.threads_per_job(cpus_available(), args.threads_per_job)
        if args.dry_run:
            say(f"# {describe_grid(s, cells, status)}")
            say(f"# output: {_display(out)}   jobs: {s.jobs}   per job: OMP_NUM_THREADS={threads} "
                f"MKL_NUM_THREADS={threads}" + (f"   CUDA_VISIBLE_DEVICES: {' '.join(args.devices)} by slot"
                                                 if args.devices else ""))
            for w in warnings:
                say(f"# warning: {w}")
            for i, c in enumerate(cells):
                if status[c.name] == C.OK:
                    say(f"# finished, skipped: {c.name}" + (f" (differs now: {'; '.join(drift[c.name])})"
                                                            if c.name in drift else ""))
                else:
                    say(shlex.join(_command(s, c, status[c.name] == C.INCOMPLETE, i % s.jobs)))
            say(f"# {len(cells)} cells")
            return 0

        out.mkdir(parents=True, exist_ok=True)
        with grid_lock(out):
            grid = GridRecord(s, cells, TITLE.format(s.name))
            say(describe_grid(s, cells, status))
            say(f"output: {_display(out)}; {s.jobs} job(s) at once, {threads} thread(s) each; launcher: {s.launcher}")
            for w in warnings:
                say(f"warning: {w}")
            for name, d in drift.items():
                grid.cells[name]["warning"] = "finished with other settings than the grid now asks for: " + "; ".join(d)
                say(f"warning: {name} finished with other settings than the grid now asks for ({'; '.join(d)}); "
                    f"kept. Use a new --name (or remove {_display(runs / name)}) to rerun it.")
            grid.start(argv, cells, status, threads)
            todo = [(c, status[c.name]) for c in cells if status[c.name] != C.OK]
            old_handler = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM acts as Ctrl-C
            try:
                completed = run_grid(todo, s, grid, threads, args.cell_timeout, args.devices)
            finally:
                signal.signal(signal.SIGTERM, old_handler)
            grid.invocation.update(finished=timestamp(), interrupted=not completed,
                                   failed=[c.name for c, _ in todo if grid.cells[c.name]["status"] != C.OK])
            grid.save()
            rows = [r for r in grid.report()["rows"] if r["name"] in {c.name for c in cells}]
        _print_summary(rows, out, wall=time.monotonic() - t0)
        _publish(args, out, grid.all_cells)
        return 130 if not completed else 0 if all(r["status"] == C.OK for r in rows) else 1
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _publish(args: argparse.Namespace, out: Path, cells: List[C.Cell]) -> None:
    if args.publish:
        n = publish(out, Path(args.publish), cells, args.publish_models, root=ROOT)
        say(f"published the report and {n} finished cell(s) to {_display(Path(args.publish))}")


def _print_summary(rows: List[Dict[str, Any]], out: Path, wall: Optional[float] = None) -> None:
    for line in summary_lines(rows, wall):
        say(line)
    say(f"results: {_display(out / 'results.md')}, {_display(out / 'results.csv')}, {_display(out / 'results.png')}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `ablation.py --dry-run | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
