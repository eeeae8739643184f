#!/usr/bin/env python
"""Trained models under a shifted, known test prior (docs/method.md §2; the paper's App. D.4, Table D2).

    python recipes/prior_shift.py RUN [RUN ...] --data-dir ../shared/data/cifar10-jpeg75 \\
        --test-imb-factor 100 10 1 0.1 0.01 --output results/<name>/prior_shift

Every model (a run folder, ``local-dir:<path>`` or ``hf-hub:<id>``) is evaluated with ``recipes/evaluate.py`` on
test sets of imbalance rho' drawn from the balanced test set (rho' < 1: the tail is reversed, the training
set's rare classes become the frequent ones), twice per test set:

* raw logits, as the model was trained (Bayias and LA predict for a uniform test prior, CE for the training
  prior);
* ``+ pi'``: the post-hoc form of docs/method.md §2, ``z + log pi'_test - log pi'_assumed``, i.e. Bayias with the known test
  prior. For CE the assumed prior is the training prior, for Bayias / LA the uniform one (``evaluate.py
  --adapt-prior``).

Writes into ``--output``: ``table.md`` (top-1 and ECE per model and rho'), ``table.csv`` (one row per model x
rho' x adaptation, with MCE and many/medium/few) and ``command.txt``; the full evaluation report of every
(model, rho', adaptation) goes to ``--reports`` (default ``output/prior_shift``).
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent
RHO_PRIME = [100.0, 10.0, 1.0, 0.1, 0.01]
CSV_KEYS = ("label", "source", "mixer", "loss", "test_imb_factor", "adapted", "num_test_samples", "top1", "ece",
            "mce", "nll", "many", "medium", "few")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prior_shift.py", description=__doc__.split("\n\n")[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("sources", nargs="+", metavar="RUN", help="run folders, local-dir:<path> or hf-hub:<id>[@rev]")
    p.add_argument("--label", nargs="+", default=None,
                   help="a name per model for the table (default: <mixer>-<loss> from its config)")
    p.add_argument("--test-imb-factor", nargs="+", type=float, default=RHO_PRIME, metavar="RHO'",
                   help="test imbalance factors (default: the paper's 100 10 1 0.1 0.01)")
    p.add_argument("--dataset", default=None, help="registered dataset (default: each model's training set)")
    p.add_argument("--data-dir", default=None, help="dataset folder, as for recipes/train.py")
    p.add_argument("--output", required=True, help="folder for table.md / table.csv / command.txt")
    p.add_argument("--reports", default="output/prior_shift", help="folder for the per-evaluation reports")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    return p


def load_evaluate_recipe() -> Any:
    spec = importlib.util.spec_from_file_location("lt_evaluate_recipe", ROOT / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rho_token(r: float) -> str:
    return f"{r:g}"


def model_label(lt: Dict[str, Any]) -> str:
    mixer = lt.get("mixer") or "none"
    preset = lt.get("preset")
    return f"{mixer}{'.' + preset if mixer == 'unimix' and preset else ''}-{lt.get('loss') or '?'}"


def run_prior_shift(args: argparse.Namespace, argv: Sequence[str], ev: Any) -> List[Dict[str, Any]]:
    """Evaluate every model on every rho', raw and prior-adapted; write the tables; return the rows."""
    from lt_registry.hub import load_run

    if args.label is not None and len(args.label) != len(args.sources):
        raise ev.EvalError(f"--label needs one name per model: {len(args.sources)} models, {len(args.label)} labels")
    for r in args.test_imb_factor:
        if not r > 0:
            raise ev.EvalError(f"--test-imb-factor values must be > 0 (< 1 reverses the tail), got {r:g}")
    labels = list(args.label) if args.label else []
    if not labels:
        for src in args.sources:
            base = model_label(load_run(src).config.get("lt", {}))
            n = sum(1 for lab in labels if lab == base or lab.startswith(base + "#"))
            labels.append(base if n == 0 else f"{base}#{n + 1}")
    rows: List[Dict[str, Any]] = []
    for src, label in zip(args.sources, labels):
        for r in args.test_imb_factor:
            for adapted in (False, True):
                report = Path(args.reports) / label / (f"r{rho_token(r)}" + ("-adapted" if adapted else ""))
                ev_argv = [src, "--test-imb-factor", repr(float(r)), "--output", str(report)]
                for flag, v in (("--dataset", args.dataset), ("--data-dir", args.data_dir), ("--device", args.device)):
                    if v:
                        ev_argv += [flag, v]
                if adapted:
                    ev_argv.append("--adapt-prior")
                res = ev.evaluate(ev.parser.parse_args(ev_argv))
                f = res["final"]
                rows.append({"label": label, "source": src, "mixer": res["lt"].get("mixer"),
                             "loss": res["lt"].get("loss"), "test_imb_factor": r, "adapted": adapted,
                             **{k: f.get(k) for k in CSV_KEYS[6:]}})
                print(f"{label:>22}  rho'={rho_token(r):>5}  {'+ pi' if adapted else 'raw '}  top-1 {f['top1']:6.2f}  "
                      f"ECE {f['ece']:6.2f}  ({f['num_test_samples']} images)", flush=True)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "table.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_KEYS)
        w.writeheader()
        for row in rows:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    (out / "table.md").write_text(table_markdown(rows, args.test_imb_factor))
    cmd = shlex.join([Path(sys.executable).name, "recipes/prior_shift.py", *argv])
    (out / "command.txt").write_text(f"{cmd}\n# run {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    return rows


def table_markdown(rows: Sequence[Dict[str, Any]], rhos: Sequence[float]) -> str:
    labels: List[str] = []
    for r in rows:
        if r["label"] not in labels:
            labels.append(r["label"])
    by = {(r["label"], r["adapted"], r["test_imb_factor"]): r for r in rows}
    counts = {r["test_imb_factor"]: r["num_test_samples"] for r in rows}
    lines = ["# Known test prior (docs/method.md §2, paper Table D2)", "",
             "Test sets of imbalance rho' drawn from the balanced test set (rho' < 1: reversed tail). "
             "`raw`: the model's logits as trained; `+ pi'`: post-hoc prior adaptation "
             "z + log pi'_test - log pi'_assumed (assumed: uniform for bayias/la, the training prior for the others).",
             "", "Test images per rho': " + ", ".join(f"{rho_token(k)}: {v}" for k, v in counts.items()), ""]
    for key, title in (("top1", "Top-1 (%)"), ("ece", "ECE (%)")):
        lines += [f"## {title}", "", "| model | logits | " + " | ".join(f"rho'={rho_token(r)}" for r in rhos) + " |",
                  "|---|---|" + "---:|" * len(rhos)]
        for lab in labels:
            for adapted in (False, True):
                vals = []
                for r in rhos:
                    row = by.get((lab, adapted, r))
                    vals.append("" if row is None or row.get(key) is None else f"{row[key]:.2f}")
                lines.append(f"| {lab} | {'+ pi' + chr(39) if adapted else 'raw'} | " + " | ".join(vals) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from lt_registry.hub import HubError

    ev = load_evaluate_recipe()
    try:
        rows = run_prior_shift(args, argv, ev)
    except (ev.EvalError, HubError, ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(rows)} evaluations; table: {Path(args.output) / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
