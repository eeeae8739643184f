#!/usr/bin/env python
"""Fit a post-hoc calibrator on a trained run's validation split and store it in the run folder (docs/method.md §6.1).

    python recipes/calibrate.py output/train/<run>                                   # temperature scaling
    python recipes/calibrate.py output/train/<run> --calibrator bcts
    python recipes/calibrate.py hf-hub:<user>/<repo> --output runs/<repo>-calibrated --data-dir <data>

The run's dataset is rebuilt with its own options (``train_args.yaml``, else ``config.json``'s ``lt`` block;
``--data-dir`` replaces a moved data folder), so its validation split is the run's: the dataset's ``val`` split
for CIFAR-LT / digits, the recorded seeded hold-out for own data (checked against ``val_split.json``). The model
(``model.safetensors``) is evaluated on it with the run's evaluation transform (the in-memory CIFAR transform for
array datasets, timm's transform from ``config.json``'s ``pretrained_cfg`` for image files), logits times the run's
``logit_scale``. The calibrator is fitted on these validation logits only; the test split is read afterwards,
to report before/after numbers. Calibrators: ``temperature``, ``vector``, ``bcts`` and chains of them
(``temperature+vector``); prior moves (``prior_shift``, ``prior_em``) happen at prediction time
(``recipes/predict.py --test-prior``), for which ``prior_em``'s validation fit is stored here too.

Writes into the run folder (``--output``: a copy of it; required for ``hf-hub:``): ``calibrator.safetensors``,
``config.json`` (``lt.calibration``: name, extra state, what it was fitted on), ``metrics.json`` (a ``calibration``
block with before/after numbers on val and test), ``calibration/reliability_calibrated.png`` (before | after) and
``calibration/bins_calibrated.csv``, and the model card (a "Calibration" section).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

parser = argparse.ArgumentParser(description="fit a post-hoc calibrator on a run's validation split and store it",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("source", help="run folder, local-dir:<path> or hf-hub:<user>/<repo>[@rev]")
parser.add_argument("--calibrator", default="temperature",
                    help="temperature, vector, bcts, or stages joined with '+' (e.g. temperature+vector)")
parser.add_argument("--split", default="val", choices=["val"],
                    help="split the calibrator is fitted on (validation only: the test split is never fitted on)")
parser.add_argument("--output", default=None,
                    help="write into a copy of the run here (required for hf-hub:; default: the run folder itself)")
parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
parser.add_argument("--data-dir", default=None, help="the dataset folder, when it moved since training")
parser.add_argument("-b", "--batch-size", type=int, default=256)
parser.add_argument("-j", "--workers", type=int, default=0)
parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")

_HERE = Path(__file__).resolve().parent


def _recipe(name: str) -> Any:
    """Another recipe of this folder as a module (its pieces are reused, not rewritten)."""
    spec = importlib.util.spec_from_file_location(f"lt_recipe_{name}", _HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_evaluate = _recipe("evaluate")
EvalError = _evaluate.EvalError
predict_logits = _evaluate.predict


def run_options(folder: Path, lt: Dict[str, Any], data_dir: Optional[str]) -> argparse.Namespace:
    """The run's options (``train_args.yaml``; without it, the dataset options in the ``lt`` block)."""
    from lt_registry.config import TRAIN_ARGS_FILE, read_yaml_mapping

    path = folder / TRAIN_ARGS_FILE
    if path.is_file():
        opts = read_yaml_mapping(path, "the run's train arguments", "option: value", EvalError)
    else:
        val = lt.get("val") or {}
        opts = {"dataset": lt.get("dataset"), "imb_factor": lt.get("imb_factor"),
                "test_imb_factor": lt.get("test_imb_factor"), "seed": lt.get("seed", 0),
                "prior_smoothing": lt.get("prior_smoothing", 0.0)}
        if val.get("source") == "holdout":
            opts["val_fraction"] = val.get("fraction")
        if (lt.get("data_config") or {}).get("mean"):
            opts.update(mean=lt["data_config"]["mean"], std=lt["data_config"]["std"])
    if data_dir is not None:
        opts["data_dir"] = data_dir
    if not opts.get("dataset"):
        raise EvalError(f"{folder}: neither train_args.yaml nor config.json names the run's dataset")
    return argparse.Namespace(**opts)


def rebuild_dataset(run: Any, opts: argparse.Namespace) -> Any:
    """The run's dataset with the run's evaluation transform on its val and test splits."""
    from lt_registry.data import is_dataset, list_datasets
    from lt_registry.data.pipeline import configure_transforms, is_in_memory

    if not is_dataset(opts.dataset):
        raise EvalError(f"the run's dataset {opts.dataset!r} is not registered here; available: "
                        f"{', '.join(list_datasets())}")
    train = _recipe("train")
    try:
        ds = train.build_run_dataset(opts)
    except train.RunError as e:
        raise EvalError(str(e)) from None
    if ds.num_classes != run.prior.num_classes:
        raise EvalError(f"dataset {opts.dataset!r} has {ds.num_classes} classes but the run was trained on "
                        f"{run.prior.num_classes}")
    names = (run.config.get("lt") or {}).get("class_names")
    if names and list(names) != list(ds.class_names):
        raise EvalError(f"dataset {opts.dataset!r} names its classes differently from the run "
                        f"({list(ds.class_names)[:5]}... vs {list(names)[:5]}...): not the same label space")
    if is_in_memory(ds):
        configure_transforms(opts, run.model, ds)  # the in-memory CIFAR transforms, with the run's mean/std
    else:
        from timm.data import create_transform, resolve_data_config

        ds.set_transforms(eval=create_transform(**resolve_data_config(model=run.model), is_training=False))
    saved = run.folder / "val_split.json"
    val_meta = (ds.meta or {}).get("val")
    if saved.is_file() and isinstance(val_meta, dict):
        if json.loads(json.dumps(val_meta)) != json.loads(saved.read_text()):
            raise EvalError(f"the rebuilt validation split differs from the run's {saved.name} (the data changed "
                            "since training?): calibrating on other images would not be the run's validation split")
    return ds


def build_calibrator(name: str) -> Any:
    from lt_registry import create_calibrator
    from lt_registry.calibration import CalibratorChain

    try:
        cal = create_calibrator(name)
    except (ValueError, KeyError) as e:
        raise EvalError(str(e).strip("'\"")) from None
    stages = list(cal.stages) if isinstance(cal, CalibratorChain) else [cal]
    other = [s.name for s in stages if not s.needs_labels]
    if other:
        raise EvalError(f"--calibrator {name!r}: {', '.join(other)} is not fitted on labelled validation logits; "
                        "this recipe stores temperature, vector, bcts or chains of them. Prior moves happen at "
                        "prediction time: recipes/predict.py --test-prior uniform|train|estimate|FILE")
    return cal


def _loader(split: Any, args: argparse.Namespace, device: torch.device) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(split, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                      pin_memory=device.type == "cuda")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _working_folder(src: str, folder: Path, output: Optional[str]) -> Path:
    """The folder written to: the run folder itself, or a copy of it at ``--output`` (always for hf-hub:)."""
    if output is None:
        if src.startswith("hf-hub:"):
            raise EvalError("a Hub run is calibrated in a local copy: pass --output DIR")
        return folder
    out = Path(output).expanduser()
    if out.resolve() == folder.resolve():
        return folder
    if out.exists() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise EvalError(f"--output {out} exists and is not a run folder; pass an empty or new folder")
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns("checkpoints", "*.tmp", ".cache"), dirs_exist_ok=True)
    return out


def calibrate(args: argparse.Namespace) -> Dict[str, Any]:
    from lt_registry import report
    from lt_registry.card import write_model_card
    from lt_registry.hub import load_run
    from lt_registry.metrics import report_metrics
    from lt_registry.predict import save_run_calibration

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cal = build_calibrator(args.calibrator)
    if args.output is None and str(args.source).startswith("hf-hub:"):
        raise EvalError("a Hub run is calibrated in a local copy: pass --output DIR")
    run = load_run(args.source, revision=args.revision, device=device)
    lt = run.config.get("lt") or {}
    ds = rebuild_dataset(run, run_options(run.folder, lt, args.data_dir))
    if ds.val is None:
        raise EvalError(f"the run's dataset {lt.get('dataset')!r} has no validation split (trained with "
                        "--val-fraction 0?): the calibrator is fitted on validation data only")
    scale = float(lt.get("logit_scale", 1.0) or 1.0)  # cosine heads: s * cos, as the run scored them

    # 1. validation only: logits, the fit, prior_em's validation fit
    val_logits, val_labels = predict_logits(run.model, _loader(ds.val, args, device), device)
    val_logits = val_logits * scale
    cal.fit(val_logits.double(), val_labels)
    from lt_registry import create_calibrator
    em, em_note = create_calibrator("prior_em"), None
    try:
        em.fit_calibration(val_logits.double(), val_labels)
    except ValueError as e:  # e.g. a class with no validation image
        em, em_note = None, str(e)
    cal.eval()

    def after(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return cal.transform(z.double()).float()

    blocks: Dict[str, Any] = {"val": {"before": report_metrics(val_logits, val_labels, run.prior),
                                      "after": report_metrics(after(val_logits), val_labels, run.prior)}}
    # 2. the test split, read only now that everything is fitted
    if ds.test is not None:
        test_logits, test_labels = predict_logits(run.model, _loader(ds.test, args, device), device)
        test_logits = test_logits * scale
        blocks["test"] = {"before": report_metrics(test_logits, test_labels, run.prior),
                          "after": report_metrics(after(test_logits), test_labels, run.prior)}

    out = _working_folder(str(args.source), run.folder, args.output)
    record = {"fitted_on": "val", "num_samples": int(val_labels.numel()), "weights": "model.safetensors",
              "logit_scale": scale, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if em_note:
        record["prior_em_note"] = em_note
    save_run_calibration(out, cal, record, prior_em=em)

    shown = "test" if "test" in blocks else "val"
    b, a = blocks[shown]["before"], blocks[shown]["after"]
    (out / "calibration").mkdir(exist_ok=True)
    diagram = out / "calibration" / "reliability_calibrated.png"
    report.reliability_diagrams_side_by_side(
        [("before (raw logits)", b["bins"], b["final"]["ece"] / 100, b["final"]["mce"] / 100),
         (f"after ({cal.name}, fitted on val)", a["bins"], a["final"]["ece"] / 100, a["final"]["mce"] / 100)],
        diagram, title=f"{lt.get('dataset')} {lt.get('mixer')}+{lt.get('loss')}: {shown} split")
    report.write_bins_table(a["bins"], out / "calibration" / "bins_calibrated.csv")

    calibration = {
        "calibrator": cal.name, "fitted_on": "val", "num_val_samples": int(val_labels.numel()),
        "num_test_samples": int(blocks["test"]["before"]["final"]["num_test_samples"]) if "test" in blocks else None,
        "val": {k: v["final"] for k, v in blocks["val"].items()},
        "test": {k: v["final"] for k, v in blocks["test"].items()} if "test" in blocks else None,
        "diagram": str(diagram.relative_to(out)), "diagram_split": shown, "prior_em": em is not None,
        "units": "rates in percent, Brier and NLL x100",
    }
    mpath = out / "metrics.json"
    metrics = json.loads(mpath.read_text()) if mpath.is_file() else {"lt": lt}
    metrics["calibration"] = calibration
    _write_atomic(mpath, json.dumps(metrics, indent=2, allow_nan=False))
    repo_id = str(args.source)[len("hf-hub:"):].partition("@")[0] if str(args.source).startswith("hf-hub:") else None
    write_model_card(out, repo_id)
    return {"output": out, "calibration": calibration}


def main(argv: Optional[List[str]] = None) -> int:
    args = parser.parse_args(argv)
    from lt_registry.card import CardError
    from lt_registry.hub import HubError

    try:
        res = calibrate(args)
    except (EvalError, HubError, CardError, ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    c = res["calibration"]
    parts = [f"val NLL {c['val']['before']['nll']:.2f} -> {c['val']['after']['nll']:.2f}, "
             f"ECE {c['val']['before']['ece']:.2f} -> {c['val']['after']['ece']:.2f}"]
    if c["test"]:
        parts.append(f"test NLL {c['test']['before']['nll']:.2f} -> {c['test']['after']['nll']:.2f}, "
                     f"ECE {c['test']['before']['ece']:.2f} -> {c['test']['after']['ece']:.2f}, "
                     f"top-1 {c['test']['before']['top1']:.2f} -> {c['test']['after']['top1']:.2f}")
    print(f"calibrated {args.source} with {c['calibrator']} on {c['num_val_samples']} validation images: "
          + "; ".join(parts))
    print(f"stored in {res['output']} (calibrator.safetensors, config.json lt.calibration, metrics.json, "
          f"{c['diagram']}, README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
