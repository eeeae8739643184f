#!/usr/bin/env python
"""Evaluate a trained checkpoint on a (possibly imbalanced) test set, with the same report as training.

    python recipes/evaluate.py hf-hub:<user>/<repo> --output output/eval/<name>
    python recipes/evaluate.py output/train/<run> --test-imb-factor 10 --adapt-prior --output output/eval/r10
    python recipes/evaluate.py local-dir:output/train/<run> --dataset cifar10_lt --data-dir <cifar10 folder>

The checkpoint is ``hf-hub:<id>[@revision]``, ``local-dir:<path>`` or a run-folder path; its ``config.json``
carries the training class counts, which define the many/medium/few splits (no ``--imb-factor``: the
checkpoint's own prior is used). ``--dataset`` defaults to the one it was trained on.

``--test-imb-factor R`` evaluates on an imbalanced test set drawn from the balanced one (docs/method.md §2; R < 1 is a
reversed tail). ``--adapt-prior`` applies the post-hoc form of docs/method.md §2 with the known test prior:
``z + log pi'_test - log pi'_assumed`` (:func:`lt_registry.adapt_logits_to_prior`), where the assumed prior
is uniform for models trained to remove the training prior (``bayias``, ``la``) and the training prior
otherwise (``--assumed-prior`` overrides).

Writes into ``--output``: ``metrics.json`` (``final`` block in percent, as training writes it, plus an
``evaluation`` block saying what was evaluated), ``calibration/reliability.png`` + ``calibration/bins.csv``
and ``confusion.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

parser = argparse.ArgumentParser(description="evaluate an lt_registry checkpoint (Hub id, local-dir: or run folder)",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("checkpoint", help="hf-hub:<user>/<repo>[@rev], local-dir:<path> or a run folder path")
parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
parser.add_argument("--dataset", default=None, help="registered dataset (default: the checkpoint's training set)")
parser.add_argument("--data-dir", default=None, help="dataset folder, as for recipes/train.py")
parser.add_argument("--test-imb-factor", type=float, default=None, help="imbalanced test set rho' (docs/method.md §2)")
parser.add_argument("--adapt-prior", action="store_true",
                    help="shift logits to the known test prior (docs/method.md §2 post-hoc form)")
parser.add_argument("--assumed-prior", default="auto", choices=["auto", "uniform", "train"],
                    help="prior the model's raw logits assume; auto: uniform for bayias/la, train otherwise")
parser.add_argument("--output", default="", help="output folder (default: output/eval/<time>-<dataset>)")
parser.add_argument("-b", "--batch-size", type=int, default=256)
parser.add_argument("-j", "--workers", type=int, default=0)
parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")

class EvalError(Exception):
    """A user-facing problem: printed as one line, exit code 2."""


def assumed_prior(choice: str, loss: Optional[str], train_prior: Any) -> Tuple[str, Any]:
    """``(name, prior)`` the raw logits are calibrated for (``None`` means uniform); ``auto`` asks
    :func:`lt_registry.losses.assumed_test_prior` (uniform after bayias / la, the training prior otherwise)."""
    if choice == "auto":
        from lt_registry.losses import assumed_test_prior
        choice = assumed_test_prior(loss)
    return (choice, None) if choice == "uniform" else (choice, train_prior)


@torch.no_grad()
def predict(model: torch.nn.Module, loader: Any, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, C] (float32, CPU) and labels [N] for every test sample, in order."""
    model.eval()
    logits: List[torch.Tensor] = []
    labels: List[torch.Tensor] = []
    for x, y in loader:
        logits.append(model(x.to(device, non_blocking=True)).float().cpu())
        labels.append(torch.as_tensor(y).cpu())
    return torch.cat(logits), torch.cat(labels).long()


def evaluate(args: argparse.Namespace) -> Dict[str, Any]:
    from torch.utils.data import DataLoader

    from lt_registry import adapt_logits_to_prior
    from lt_registry.data import build_dataset, is_dataset, list_datasets
    from lt_registry.hub import load_run
    from lt_registry.run import write_eval_report

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run = load_run(args.checkpoint, revision=args.revision, device=device)
    lt = run.config.get("lt", {})
    dataset = args.dataset or lt.get("dataset")
    if not dataset:
        raise EvalError("the checkpoint does not name its dataset; pass --dataset")
    if not is_dataset(dataset):
        raise EvalError(f"unknown dataset {dataset!r}; available: {', '.join(list_datasets())}")
    ds = build_dataset(dataset, data_dir=args.data_dir, test_imb_factor=args.test_imb_factor)
    if ds.num_classes != run.prior.num_classes:
        raise EvalError(f"dataset {dataset!r} has {ds.num_classes} classes but the checkpoint was trained on "
                        f"{run.prior.num_classes}")
    trained_names = lt.get("class_names")
    if trained_names and list(trained_names) != list(ds.class_names):
        raise EvalError(f"dataset {dataset!r} names its classes differently from the checkpoint "
                        f"({list(ds.class_names)[:5]}... vs {list(trained_names)[:5]}...): not the same label space")

    loader = DataLoader(ds.test, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                        pin_memory=device.type == "cuda")
    logits, labels = predict(run.model, loader, device)
    logits = logits * float(run.config.get("lt", {}).get("logit_scale", 1.0))  # cosine heads: s * cos

    test_counts = torch.bincount(labels, minlength=ds.num_classes)
    test_prior = ds.meta.get("test_prior") or (test_counts.double() / test_counts.sum()).tolist()
    evaluation: Dict[str, Any] = {
        "checkpoint": args.checkpoint, "revision": args.revision, "dataset": dataset,
        "test_imb_factor": args.test_imb_factor, "test_counts": test_counts.tolist(),
        "adapt_prior": bool(args.adapt_prior), "device": str(device),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if args.adapt_prior:
        name, assumed = assumed_prior(args.assumed_prior, lt.get("loss"), run.prior)
        logits = adapt_logits_to_prior(logits, test_prior, assumed_prior=assumed)
        evaluation.update(assumed_prior=name, test_prior=[float(p) for p in test_prior],
                          adjustment="z + log pi'_test - log pi'_assumed (docs/method.md §2, post-hoc)")

    out = Path(args.output) if args.output else Path("output/eval") / f"{time.strftime('%Y%m%d-%H%M%S')}-{dataset}"
    out.mkdir(parents=True, exist_ok=True)
    title = f"{dataset} {lt.get('mixer')}+{lt.get('loss')}" + (" (prior-adapted)" if args.adapt_prior else "")
    res = write_eval_report(out, logits, labels, run.prior, list(ds.class_names), title)
    metrics = {
        "final": res["final"],
        "evaluation": evaluation,
        "protocol": {"calibration": {"n_bins": 15, "scheme": res["bins"].get("scheme", "equal-width")},
                     "splits": "many > 100, medium 20-100, few < 20 training images (the checkpoint's class "
                               "counts); head/mid/tail by class-index thirds",
                     "units": "percent"},
        "lt": lt,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    return {"output": out, **metrics}


def main(argv: Optional[List[str]] = None) -> int:
    args = parser.parse_args(argv)
    from lt_registry.hub import HubError

    try:
        res = evaluate(args)
    except (EvalError, HubError, ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shown = {k: round(v, 2) for k, v in res["final"].items() if isinstance(v, float)}
    print(f"evaluated {args.checkpoint} on {res['evaluation']['dataset']} "
          f"({res['final']['num_test_samples']} test images): {json.dumps(shown)}")
    print(f"report: {res['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
