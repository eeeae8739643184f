"""The run folder: what a training run leaves behind, written in one place.

    run_dir/
      train_args.yaml      every option of the run (reloaded by --resume, read by the grid and the card)
      config.json          timm's format + an ``lt`` block (dataset, class counts, prior, mixer, loss, preset,
                           the resolved schedule, versions)
      model.safetensors    final weights
      metrics.json         ``final`` (the metric table x100) + ``epochs`` (per-epoch log) + protocol + resources
      calibration/         reliability.png, bins.csv (15 equal-width bins)
      confusion.png        log-scaled confusion matrix
      per_class.png        per-class test accuracy against the training counts
      best/                the best-on-validation model (config.json + model.safetensors; --eval-metric)
      ema/                 the weights' moving average with --model-ema (config.json + model.safetensors)
      val_split.json       the validation hold-out of a dataset without a validation split
      README.md            model card (:mod:`lt_registry.card`)
      checkpoints/         resume state (accelerate), newest complete one named by ``latest``

The same folder loads with ``timm.create_model("local-dir:<run_dir>")`` and :func:`lt_registry.hub.load_run`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
import yaml

from . import report
from .card import write_model_card
from .config import TRAIN_ARGS_FILE
from .metrics import confusion_matrix, report_metrics
from .prior import ClassPrior

__all__ = ["write_train_args", "save_model_folder", "save_model_subfolder", "lt_block_of_run", "write_eval_report",
           "finalize_run", "TRAIN_ARGS_FILE"]

PathLike = Union[str, os.PathLike]
#: options of a run that do not belong to its record (where it was read from, how it was continued)
_NOT_RECORDED = ("resume", "config")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_train_args(run_dir: PathLike, args: Any) -> Path:
    """``train_args.yaml``: every option of the run (a namespace or a mapping), sorted, written atomically."""
    opts = vars(args) if not isinstance(args, Mapping) else dict(args)
    saved = {k: v for k, v in opts.items() if k not in _NOT_RECORDED}
    path = Path(run_dir) / TRAIN_ARGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, yaml.safe_dump(saved, sort_keys=True))
    return path


def save_model_folder(model: torch.nn.Module, run_dir: PathLike, lt_block: Dict[str, Any],
                      data_config: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in timm's layout (``timm.models.save_for_hf``), with the
    ``lt`` block, the class names as timm ``label_names`` and ``data_config`` (the input size, mean, std,
    interpolation and crop_pct the run used: :func:`lt_registry.data.pipeline.configure_transforms`) as the
    ``pretrained_cfg``, so ``timm.data.resolve_data_config(model=timm.create_model("local-dir:..."))`` rebuilds
    the evaluation transform. Written into a temporary folder first when ``run_dir`` is a subfolder that is
    replaced whole (``best/``, ``ema/``), so a kill never leaves half a model."""
    from timm.models import save_for_hf

    run_dir = Path(run_dir)
    cfg: Dict[str, Any] = {"lt": lt_block}
    if lt_block.get("class_names"):
        cfg["label_names"] = list(lt_block["class_names"])
    # channels-last (fast path) weights are strided views safetensors will not write: pack them first
    model = model.to(memory_format=torch.contiguous_format)
    kw: Dict[str, Any] = {"data_config": dict(data_config)} if data_config else {}
    # the architecture's default pretrained_cfg names a source checkpoint (tag, paper, origin) that these weights
    # are not: keep what describes the model, drop what describes someone else's weights (lt.init says where
    # training started)
    source_cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(source_cfg, dict):
        model.pretrained_cfg = {k: v for k, v in source_cfg.items() if k not in _SOURCE_KEYS}
    try:
        save_for_hf(model, str(run_dir), model_config=cfg, safe_serialization=True, **kw)
    finally:
        if isinstance(source_cfg, dict):
            model.pretrained_cfg = source_cfg
    return run_dir


#: pretrained_cfg keys that describe a source checkpoint rather than the architecture and its preprocessing
_SOURCE_KEYS = ("tag", "origin_url", "paper_ids", "paper_name", "notes", "description", "hf_hub_id", "url", "file",
                "state_dict", "source", "test_input_size", "test_crop_pct")


def save_model_subfolder(model: torch.nn.Module, folder: PathLike, lt_block: Dict[str, Any],
                         data_config: Optional[Dict[str, Any]] = None) -> Path:
    """:func:`save_model_folder` into ``folder`` (``RUN/best``, ``RUN/ema``), replacing it atomically: written
    to ``<folder>.tmp``, then swapped in with renames, so a kill leaves the previous complete folder (or, between
    the two renames, ``<folder>.old``, which :func:`lt_registry.hub.load_run` does not read)."""
    import shutil

    folder = Path(folder)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model_folder(model, tmp, lt_block, data_config)
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def lt_block_of_run(ds: Any, prior: ClassPrior, args: Any, *, schedule: Dict[str, Any], mixer: Any = None,
                    versions: Optional[Dict[str, str]] = None,
                    data_config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The ``lt`` block of ``config.json`` and ``metrics.json``: what the run trained on and with."""
    meta = getattr(ds, "meta", {}) or {}
    val = meta.get("val")
    return {
        "dataset": args.dataset, "imb_factor": getattr(ds, "imb_factor", None),
        "test_imb_factor": getattr(args, "test_imb_factor", None),
        "class_counts": [int(c) for c in ds.class_counts], "prior": [float(p) for p in prior.probs.tolist()],
        "prior_smoothing": float(getattr(prior, "smoothing", 0.0)),
        "class_names": list(ds.class_names), "mixer": args.mix, "mixer_repr": repr(mixer) if mixer is not None else None,
        "loss": args.loss, "preset": args.preset if args.mix == "unimix" else None, "sampler": args.sampler,
        "seed": args.seed, "epochs": args.epochs, "schedule": dict(schedule),
        "logit_scale": float(getattr(args, "logit_scale", 1.0) or 1.0),
        "splits": {k: len(v) for k, v in ds.splits().items()},
        "init": _init_record(args),
        "val": {k: v for k, v in val.items() if k not in ("paths", "indices")} if isinstance(val, dict) else None,
        "data_config": _jsonable(data_config) if data_config else None,
        "versions": versions or {},
    }


def _init_record(args: Any) -> Dict[str, Any]:
    """Where training started: random weights, timm's pretrained weights (a local file named by its file name
    only), or an initial checkpoint."""
    path = getattr(args, "pretrained_path", None)
    ckpt = getattr(args, "initial_checkpoint", None)
    return {"pretrained": bool(getattr(args, "pretrained", False) or path),
            "pretrained_file": Path(str(path)).name if path else None,
            "initial_checkpoint": Path(str(ckpt)).name if ckpt else None}


def _jsonable(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def write_eval_report(out_dir: PathLike, logits: torch.Tensor, labels: torch.Tensor, prior: ClassPrior,
                      class_names: List[str], title: str) -> Dict[str, Any]:
    """The evaluation report of a training run and of ``recipes/evaluate.py`` alike: returns ``final`` (the
    metric table x100) and the reliability ``bins``, and writes ``calibration/`` (reliability.png, bins.csv),
    ``confusion.png`` and ``per_class.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    res = report_metrics(logits, labels, prior)
    final, bins = res["final"], res["bins"]
    cal = out_dir / "calibration"
    cal.mkdir(parents=True, exist_ok=True)
    report.reliability_diagram(bins, cal / "reliability.png", title=title, ece=final["ece"] / 100,
                               mce=final["mce"] / 100)
    report.write_bins_table(bins, cal / "bins.csv")
    cm = confusion_matrix(logits.argmax(1), labels, prior.num_classes)
    report.plot_confusion(cm, out_dir / "confusion.png", class_names=list(class_names))
    per_class = [float("nan") if v is None else v for v in final["per_class_accuracy"]]
    report.plot_per_class_accuracy(per_class, prior.counts.tolist(), out_dir / "per_class.png",
                                   class_names=list(class_names), percent=True, title=title)
    return res


def finalize_run(run_dir: PathLike, model: torch.nn.Module, logits: torch.Tensor, labels: torch.Tensor, ds: Any,
                 prior: ClassPrior, args: Any, history: List[Dict[str, Any]], *, lt_block: Dict[str, Any],
                 data_config: Optional[Dict[str, Any]] = None, evaluated_on: str = "test",
                 extra: Optional[Dict[str, Any]] = None,
                 resources: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write metrics.json, the evaluation report, config.json + model.safetensors and the model card.

    ``lt_block`` is :func:`lt_block_of_run` (it records the resolved schedule, so readers never recompute it).
    ``logits`` are the final model's raw outputs on ``evaluated_on`` (the test split, or the validation split of
    a dataset without one); a cosine head (LDAM) is scored as ``s * cos`` with the loss's scale ``s``, recorded
    as ``logit_scale``, since raw cosines in [-1, 1] would make every softmax near-uniform and the calibration
    numbers meaningless. ``extra`` adds blocks to metrics.json (``val``, ``best``, ``ema``, ``skipped_images``)."""
    run_dir = Path(run_dir)
    scale = float(lt_block.get("logit_scale", 1.0) or 1.0)
    title = f"{args.dataset} {args.mix}+{args.loss}" + ("" if evaluated_on == "test" else f" ({evaluated_on})")
    res = write_eval_report(run_dir, logits * scale, labels, prior, list(ds.class_names), title)
    final, bins = res["final"], res["bins"]
    metrics = {
        "final": final,
        "evaluated_on": evaluated_on,
        "epochs": history,
        "protocol": {"reported": "final epoch (no selection on test; best/ is selected on validation)",
                     "calibration": {"n_bins": 15, "scheme": bins.get("scheme", "equal-width")},
                     "splits": "many > 100, medium 20-100, few < 20 training images; head/mid/tail by class-index thirds",
                     "units": "rates in percent, Brier and NLL x100"},
        **(extra or {}),
        "lt": lt_block,
        "resources": resources or {},
    }
    _write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False))
    save_model_folder(model, run_dir, lt_block, data_config)
    write_model_card(run_dir)
    return metrics


_MOVED = {"RunError": "lt_registry.config", "read_yaml_mapping": "lt_registry.config",
          "user_input_errors": "lt_registry.config", "resolve_schedule": "lt_registry.schedule",
          "build_model": "lt_registry.models.factory", "check_model_classes": "lt_registry.models.factory",
          "describe_versions": "lt_registry.provenance", "peak_memory": "lt_registry.provenance",
          "final_metrics": "lt_registry.metrics (report_metrics)", "PERCENT_KEYS": "lt_registry.metrics.table (METRICS)"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        raise AttributeError(f"lt_registry.run.{name} moved to {_MOVED[name]}; import it from there")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
