#!/usr/bin/env python
"""Trained models under a shifted test prior, known or estimated (docs/method.md §2, §6.1; the paper's App. D.4, Table D2).

    python recipes/prior_shift.py RUN [RUN ...] --data-dir data/cifar10-jpeg75 \\
        --test-imb-factor 100 10 1 0.1 0.01 --output results/<name>/prior_shift

Every model (a run folder, ``local-dir:<path>`` or ``hf-hub:<id>``) is evaluated with ``recipes/evaluate.py`` on
test sets of imbalance rho' drawn from the balanced test set (rho' < 1: the tail is reversed, the training
set's rare classes become the frequent ones), twice per test set:

* raw logits, as the model was trained (Bayias and LA predict for a uniform test prior, CE for the training
  prior);
* ``+ pi'``: the post-hoc form of docs/method.md §2, ``z + log pi'_test - log pi'_assumed``, i.e. Bayias with the known test
  prior. For CE the assumed prior is the training prior, for Bayias / LA the uniform one (``evaluate.py
  --adapt-prior``).

and then, for an unknown test prior (``--estimators``, default ``em bbse``; the flag without a value: none), with
the test prior estimated from the test images' logits, no test label used in the fit:

* ``EM``: ``prior_em`` (docs/method.md §6.1 Eq. C3 + C5): BCTS fitted on the run's validation split, EM on the
  test logits; scored on the BCTS-calibrated logits moved from the validation prior to the estimate;
* ``BBSE``: ``prior_bbse`` (Eq. C6): the validation confusion matrix and the test predictions; scored on the raw
  logits moved from the prior they assume (as for ``+ pi'``) to the estimate.

The validation split is the run's own, rebuilt with ``recipes/calibrate.py``'s functions (CIFAR-LT: the dataset's
``val`` split, drawn from training images the long-tailed selection left out). Each estimate is compared with the
test set's true prior by the total-variation distance ``TV = 1/2 sum_c |q_c - pi'_c|``.

Writes into ``--output``: ``table.md`` (top-1 and ECE per model and rho', the TV of every estimate and a summary),
``table.csv`` (one row per model x rho' x adaptation, ``adapted`` = False / True / em / bbse, with MCE,
many/medium/few and ``tv``), ``priors.json`` (the true and estimated test priors) and ``command.txt``, naming only
paths inside the repository (a data folder outside it as ``data/<name>``, docs/method.md §5.2); the full
evaluation report of every (model, rho', adaptation) goes to ``--reports`` (default ``output/prior_shift``).
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent
RHO_PRIME = [100.0, 10.0, 1.0, 0.1, 0.01]
CSV_KEYS = ("label", "source", "mixer", "loss", "test_imb_factor", "adapted", "num_test_samples", "top1", "ece",
            "mce", "nll", "many", "medium", "few", "tv")
METRIC_KEYS = CSV_KEYS[6:-1]
#: ``--estimators`` choice -> (registered calibrator, name in the tables)
ESTIMATORS = {"em": ("prior_em", "EM"), "bbse": ("prior_bbse", "BBSE")}


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
    p.add_argument("--estimators", nargs="*", default=list(ESTIMATORS), choices=list(ESTIMATORS),
                   help="test-prior estimators, fitted on the run's validation split and the unlabelled test logits "
                        "(default: em bbse; the flag alone: none)")
    p.add_argument("--output", required=True, help="folder for table.md / table.csv / command.txt")
    p.add_argument("--reports", default="output/prior_shift", help="folder for the per-evaluation reports")
    p.add_argument("-b", "--batch-size", type=int, default=256, help="batch size of the estimators' forward passes")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    return p


def _load_recipe(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"lt_{name}_recipe", ROOT / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_evaluate_recipe() -> Any:
    return _load_recipe("evaluate")


def rho_token(r: float) -> str:
    return f"{r:g}"


def model_label(lt: Dict[str, Any]) -> str:
    mixer = lt.get("mixer") or "none"
    preset = lt.get("preset")
    return f"{mixer}{'.' + preset if mixer == 'unimix' and preset else ''}-{lt.get('loss') or '?'}"


def total_variation(p: Any, q: Any) -> float:
    """``1/2 sum_c |p_c - q_c|`` of two distributions over the same classes (each renormalised to sum 1)."""
    import torch

    a = torch.as_tensor(p, dtype=torch.float64).flatten()
    b = torch.as_tensor(q, dtype=torch.float64).flatten()
    if a.numel() != b.numel():
        raise ValueError(f"total_variation: {a.numel()} vs {b.numel()} classes")
    return float(0.5 * (a / a.sum() - b / b.sum()).abs().sum())


class UnknownPrior:
    """The estimator rows of one model: its validation logits (computed once), then per rho' the logits of that
    test set, each estimator fitted on (labelled validation logits, unlabelled test logits) and scored on the test
    labels. The dataset is the run's own, rebuilt by ``recipes/calibrate.py`` (its validation split included)."""

    def __init__(self, src: str, args: argparse.Namespace, ev: Any):
        import torch

        from lt_registry.hub import load_run
        from lt_registry.losses import assumed_test_prior

        self.cal = _load_recipe("calibrate")
        self.src, self.args, self.ev = src, args, ev
        self.loader_args = argparse.Namespace(batch_size=args.batch_size, workers=0)
        self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.run = load_run(src, device=self.device)
        self.lt = self.run.config.get("lt") or {}
        try:
            self.opts = self.cal.run_options(self.run.folder, self.lt, args.data_dir)
        except self.cal.EvalError as e:
            raise ev.EvalError(str(e)) from None
        if args.dataset and args.dataset != self.opts.dataset:
            raise ev.EvalError(f"the estimators are fitted on the run's validation split, so they need the run's "
                               f"dataset {self.opts.dataset!r}, not --dataset {args.dataset!r}; pass --estimators "
                               "without a value to skip them")
        self.scale = float(self.lt.get("logit_scale", 1.0) or 1.0)  # cosine heads: s * cos, as evaluate.py
        self.assumed = assumed_test_prior(self.lt.get("loss"))
        self.val: Optional[tuple] = None

    def _logits(self, split: Any) -> Any:
        z, y = self.cal.predict_logits(self.run.model, self.cal._loader(split, self.loader_args, self.device), self.device)
        return z * self.scale, y

    def estimator(self, key: str) -> Any:
        from lt_registry import create_calibrator

        calib = ESTIMATORS[key][0]
        if calib == "prior_bbse":  # BBSE moves the raw logits: from the prior they encode, as + pi' does
            return create_calibrator(calib, train_prior="uniform" if self.assumed == "uniform" else
                                     self.run.prior.counts)
        return create_calibrator(calib)  # prior_em: BCTS absorbs the validation prior, the source prior

    def estimate(self, r: float, keys: Sequence[str], report_root: Path) -> List[Dict[str, Any]]:
        """Test set rho' = ``r``: per estimator ``{estimator, test_prior, estimate, tv, final}``; writes a report
        folder ``r<rho'>-<estimator>`` under ``report_root``."""
        import torch

        from lt_registry.run import write_eval_report

        opts = argparse.Namespace(**{**vars(self.opts), "test_imb_factor": float(r)})
        try:
            ds = self.cal.rebuild_dataset(self.run, opts)
        except self.cal.EvalError as e:  # calibrate.py's own copy of the error class
            raise self.ev.EvalError(str(e)) from None
        if ds.val is None:
            raise self.ev.EvalError(f"the run's dataset {opts.dataset!r} has no validation split: the estimators "
                                    "are fitted on validation data only (pass --estimators without a value)")
        if self.val is None:
            self.val = self._logits(ds.val)
        val_z, val_y = self.val
        test_z, test_y = self._logits(ds.test)
        true = torch.as_tensor(ds.meta["test_prior"], dtype=torch.float64)
        out = []
        for key in keys:
            est = self.estimator(key)
            est.fit(test_z.double(), val_logits=val_z.double(), val_labels=val_y)  # test labels never reach it
            with torch.no_grad():
                adapted = est.transform(test_z.double()).float()
            q = est.test_prior.detach().cpu().double()
            tv = total_variation(q, true)
            folder = report_root / f"r{rho_token(r)}-{key}"
            folder.mkdir(parents=True, exist_ok=True)
            title = f"{opts.dataset} {self.lt.get('mixer')}+{self.lt.get('loss')} ({ESTIMATORS[key][1]} prior)"
            res = write_eval_report(folder, adapted, test_y, self.run.prior, list(ds.class_names), title)
            evaluation = {
                "checkpoint": self.src, "dataset": opts.dataset, "test_imb_factor": float(r),
                "test_counts": torch.bincount(test_y, minlength=ds.num_classes).tolist(),
                "estimator": est.name, **{k: est.get_extra_state().get(k) for k in ("options", "results")},
                "fitted_on": {"labelled_validation_images": int(val_y.numel()),
                              "unlabelled_test_images": int(test_z.shape[0])},
                "test_prior": true.tolist(), "estimated_prior": q.tolist(), "tv": tv,
                "device": str(self.device), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (folder / "metrics.json").write_text(json.dumps({"final": res["final"], "evaluation": evaluation,
                                                             "lt": self.lt}, indent=2, allow_nan=False))
            out.append({"estimator": key, "test_prior": true.tolist(), "estimate": q.tolist(), "tv": tv,
                        "final": res["final"]})
        return out


def run_prior_shift(args: argparse.Namespace, argv: Sequence[str], ev: Any) -> List[Dict[str, Any]]:
    """Evaluate every model on every rho', raw, prior-adapted and with estimated priors; write the tables; return
    the rows."""
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
    estimators = list(dict.fromkeys(args.estimators or []))
    rows: List[Dict[str, Any]] = []
    priors: List[Dict[str, Any]] = []
    for src, label in zip(args.sources, labels):
        unknown = UnknownPrior(src, args, ev) if estimators else None
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
                             **{k: f.get(k) for k in METRIC_KEYS}, "tv": None})
                print(f"{label:>22}  rho'={rho_token(r):>5}  {'+ pi' if adapted else 'raw '}  top-1 {f['top1']:6.2f}  "
                      f"ECE {f['ece']:6.2f}  ({f['num_test_samples']} images)", flush=True)
            if unknown is None:
                continue
            for e in unknown.estimate(r, estimators, Path(args.reports) / label):
                f = e["final"]
                rows.append({"label": label, "source": src, "mixer": unknown.lt.get("mixer"),
                             "loss": unknown.lt.get("loss"), "test_imb_factor": r, "adapted": e["estimator"],
                             **{k: f.get(k) for k in METRIC_KEYS}, "tv": e["tv"]})
                priors.append({"label": label, "test_imb_factor": r, "estimator": ESTIMATORS[e["estimator"]][0],
                               "tv": e["tv"], "test_prior": e["test_prior"], "estimate": e["estimate"]})
                print(f"{label:>22}  rho'={rho_token(r):>5}  {ESTIMATORS[e['estimator']][1]:<4}  top-1 "
                      f"{f['top1']:6.2f}  ECE {f['ece']:6.2f}  TV {e['tv']:.4f}", flush=True)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    public = _public_paths(args)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=CSV_KEYS)
    w.writeheader()
    for row in rows:
        w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    with open(out / "table.csv", "w", newline="") as fh:
        fh.write(public(buf.getvalue()))
    (out / "table.md").write_text(public(table_markdown(rows, args.test_imb_factor)))
    if priors:
        (out / "priors.json").write_text(json.dumps(
            {"tv": "1/2 sum_c |estimate_c - test_prior_c|",
             "fitted_on": "the run's validation split (labelled) and the test set's logits (unlabelled)",
             "rows": priors}, indent=1) + "\n")
    cmd = shlex.join([Path(sys.executable).name, "recipes/prior_shift.py", *argv])
    (out / "command.txt").write_text(public(f"{cmd}\n# run {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"))
    return rows


def _public_paths(args: argparse.Namespace) -> Callable[[str], str]:
    """The tables and command are written to be shared (results/): they name only paths inside the repository
    (docs/method.md §5.2; a data folder outside it as data/<name>)."""
    from lt_registry.paths import scrub_paths

    paths = [(s[len("local-dir:"):] if s.startswith("local-dir:") else s, False) for s in args.sources]
    paths += [(args.data_dir, True)] if args.data_dir else []
    paths += [(args.output, False), (args.reports, False)]
    return lambda text: scrub_paths(text, paths, ROOT.parent)


def _row_name(adapted: Any) -> str:
    if adapted is True:
        return "+ pi'"
    if adapted is False:
        return "raw"
    return f"+ {ESTIMATORS[adapted][1]}"


def summary(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per (model, estimator), over the rho' != 1 of the table: the mean TV, and the share of the known prior's
    top-1 gain over raw logits that the estimate recovers, ``sum (top1_est - top1_raw) / sum (top1_known -
    top1_raw)`` (None when the known prior gains nothing)."""
    by = {(r["label"], r["adapted"], r["test_imb_factor"]): r for r in rows}
    out = []
    seen = []
    for r in rows:
        key = (r["label"], r["adapted"])
        if isinstance(r["adapted"], bool) or key in seen:
            continue
        seen.append(key)
        rhos = [x["test_imb_factor"] for x in rows if (x["label"], x["adapted"]) == key and x["test_imb_factor"] != 1]
        if not rhos:
            continue
        tvs = [by[(*key, rho)]["tv"] for rho in rhos]
        gain_known = sum(by[(key[0], True, rho)]["top1"] - by[(key[0], False, rho)]["top1"] for rho in rhos)
        gain_est = sum(by[(*key, rho)]["top1"] - by[(key[0], False, rho)]["top1"] for rho in rhos)
        out.append({"label": key[0], "estimator": key[1], "rhos": rhos, "mean_tv": sum(tvs) / len(tvs),
                    "gain_known": gain_known / len(rhos), "gain_estimated": gain_est / len(rhos),
                    "recovered": gain_est / gain_known if abs(gain_known) > 1e-9 else None})
    return out


def table_markdown(rows: Sequence[Dict[str, Any]], rhos: Sequence[float]) -> str:
    labels: List[str] = []
    kinds: List[Any] = []
    for r in rows:
        if r["label"] not in labels:
            labels.append(r["label"])
        if r["adapted"] not in kinds:
            kinds.append(r["adapted"])
    kinds = [k for k in (False, True, *ESTIMATORS) if k in kinds]
    estimated = [k for k in kinds if not isinstance(k, bool)]
    by = {(r["label"], r["adapted"], r["test_imb_factor"]): r for r in rows}
    counts = {r["test_imb_factor"]: r["num_test_samples"] for r in rows}
    title = "Known and estimated test prior" if estimated else "Known test prior"
    lines = [f"# {title} (docs/method.md §2, paper Table D2)", "",
             "Test sets of imbalance rho' drawn from the balanced test set (rho' < 1: reversed tail). "
             "`raw`: the model's logits as trained; `+ pi'`: post-hoc prior adaptation "
             "z + log pi'_test - log pi'_assumed (assumed: uniform for bayias/la, the training prior for the others)."]
    if estimated:
        lines[-1] += (" Unknown prior, estimated from the test logits (no test label) with the run's validation "
                      "split: `+ EM`: prior_em (BCTS on validation, then EM; BCTS-calibrated logits moved to the "
                      "estimate); `+ BBSE`: prior_bbse (validation confusion matrix; raw logits moved from the "
                      "assumed prior to the estimate).")
    lines += ["", "Test images per rho': " + ", ".join(f"{rho_token(k)}: {v}" for k, v in counts.items()), ""]
    for key, title in (("top1", "Top-1 (%)"), ("ece", "ECE (%)")):
        lines += [f"## {title}", "", "| model | logits | " + " | ".join(f"rho'={rho_token(r)}" for r in rhos) + " |",
                  "|---|---|" + "---:|" * len(rhos)]
        for lab in labels:
            for adapted in kinds:
                vals = []
                for r in rhos:
                    row = by.get((lab, adapted, r))
                    vals.append("" if row is None or row.get(key) is None else f"{row[key]:.2f}")
                lines.append(f"| {lab} | {_row_name(adapted)} | " + " | ".join(vals) + " |")
        lines.append("")
    if estimated:
        lines += ["## TV distance of the estimated prior to the true test prior", "",
                  "TV = 1/2 sum_c |q_c - pi'_c| (0: exact, 1: disjoint).", "",
                  "| model | estimator | " + " | ".join(f"rho'={rho_token(r)}" for r in rhos) + " |",
                  "|---|---|" + "---:|" * len(rhos)]
        for lab in labels:
            for adapted in estimated:
                vals = []
                for r in rhos:
                    row = by.get((lab, adapted, r))
                    vals.append("" if row is None or row.get("tv") is None else f"{row['tv']:.4f}")
                lines.append(f"| {lab} | {ESTIMATORS[adapted][1]} | " + " | ".join(vals) + " |")
        lines.append("")
        summ = summary(rows)
        if summ:
            lines += ["## Summary over rho' != 1", "",
                      "Mean TV; mean top-1 gain over raw logits of the known prior (`+ pi'`) and of the estimate; "
                      "recovered = sum of the estimate's gains / sum of the known prior's gains.", "",
                      "| model | estimator | rho' | mean TV | gain + pi' (points) | gain estimate (points) | recovered |",
                      "|---|---|---|---:|---:|---:|---:|"]
            for s in summ:
                rec = "" if s["recovered"] is None else f"{100 * s['recovered']:.0f} %"
                lines.append(f"| {s['label']} | {ESTIMATORS[s['estimator']][1]} | "
                             f"{', '.join(rho_token(r) for r in s['rhos'])} | {s['mean_tv']:.4f} | "
                             f"{s['gain_known']:+.2f} | {s['gain_estimated']:+.2f} | {rec} |")
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
