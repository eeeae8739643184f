"""The run folder (DESIGN.md): what a finished training run leaves behind, and the recipe's helpers.

    run_dir/
      train_args.yaml      every argument of the run (reloaded by --resume)
      config.json          timm's format + an ``lt`` block (dataset, class counts, prior, mixer, loss, preset)
      model.safetensors    final weights
      metrics.json         ``final`` (percent) + ``epochs`` (per-epoch log) + protocol
      calibration/         reliability.png, bins.csv (15 equal-width bins)
      confusion.png        log-scaled confusion matrix
      README.md            model card
      checkpoints/         resume state (accelerate), newest complete one named by ``latest``
"""
from __future__ import annotations

import contextlib
import json
import math
import platform
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch

from .prior import ClassPrior

__all__ = ["RunError", "resolve_schedule", "build_model", "check_model_classes", "describe_versions",
           "final_metrics", "write_eval_report", "finalize_run", "peak_memory", "PERCENT_KEYS", "user_input_errors",
           "read_yaml_mapping"]

#: final metrics stored in percent in metrics.json (SPEC 6 names)
PERCENT_KEYS = ("top1", "many", "medium", "few", "head", "mid", "tail", "ece", "mce", "ace", "tace", "sce",
                "brier", "nll")


class RunError(RuntimeError):
    """A user-facing problem with a run's inputs: printed as one line, no traceback."""


@contextlib.contextmanager
def user_input_errors() -> Iterator[None]:
    """Turn the library's input errors (ValueError, missing files) raised while a run is being set up into
    :class:`RunError`. Errors during training keep their traceback: they are bugs, not bad input."""
    try:
        yield
    except (ValueError, FileNotFoundError, NotADirectoryError, ImportError) as e:
        raise RunError(str(e)) from None


def read_yaml_mapping(path: Any, what: str, expected: str, error: type = RunError) -> Dict[str, Any]:
    """Read a YAML file that must hold a mapping (a recipe config, a grid file, a run's train_args.yaml).
    A missing file, invalid YAML or a non-mapping raises ``error`` naming the file, ``what`` it is and the
    ``expected`` content; an empty file is an empty mapping."""
    import yaml

    f = Path(path)
    if not f.is_file():
        raise error(f"{what} not found: {f}")
    try:
        cfg = yaml.safe_load(f.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{what} {f} is not valid YAML: {e}") from None
    if not isinstance(cfg, dict):
        raise error(f"{what} {f} must hold a mapping ({expected})")
    return cfg


def _scaled(epochs: int, at_200: int) -> int:
    return int(round(epochs * at_200 / 200))


def resolve_schedule(args: Any) -> Dict[str, Any]:
    """Epoch numbers of the schedule (0-indexed). Unset ones follow the 200-epoch protocol (SPEC 5), scaled to
    ``--epochs``: LR decay at 160 and 180, DRW/DRS at 160, UniMix 'paper' mixing off at 120. Warmup stays 5
    epochs (at most a fifth of the run): it is about the first steps, not the length of training."""
    E = int(args.epochs)
    if E < 1:
        raise RunError(f"--epochs must be >= 1, got {E}")
    warmup = args.warmup_epochs if args.warmup_epochs is not None else max(1, min(5, E // 5))
    milestones = list(args.decay_milestones) if args.decay_milestones else [_scaled(E, 160), _scaled(E, 180)]
    drw = args.drw_epoch
    if drw is None and getattr(args, "drw", False):
        drw = _scaled(E, 160)
    drs = args.drs_epoch if args.drs_epoch is not None else _scaled(E, 160)
    mix_off = args.mix_off_epoch
    if mix_off is None and args.mix == "unimix":
        from .mixers.unimix import UNIMIX_PRESETS
        off = UNIMIX_PRESETS[args.preset].mix_off_epoch
        mix_off = None if off is None else _scaled(E, off)
    for name, v in (("--warmup-epochs", warmup), ("--drw-epoch", drw), ("--mix-off-epoch", mix_off)):
        if v is not None and v < 0:
            raise RunError(f"{name} must be >= 0, got {v}")
    return {"warmup_epochs": warmup, "decay_milestones": milestones, "drw_epoch": drw, "drs_epoch": drs,
            "mix_off_epoch": mix_off}


def build_model(name: str, num_classes: int, head: str = "linear", **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model`` with our architectures registered; clear errors for unknown names and for a
    cosine head on a model that has none."""
    import timm

    from . import models  # noqa: F401  (registers the CIFAR ResNets and ResNet-10)

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0].split('_')[0]}*")[:12]
        raise RunError(f"unknown model {name!r}" + (f"; similar timm models: {', '.join(close)}" if close else "")
                       + "; our CIFAR ResNets: " + ", ".join(timm.list_models("*_cifar")))
    if head == "cosine":
        kwargs["head"] = "cosine"
    try:
        return timm.create_model(name, num_classes=num_classes, **kwargs)
    except TypeError as e:
        if head == "cosine" and "head" in str(e):
            raise RunError(f"model {name!r} has no cosine head option, which LDAM needs; use one of "
                           f"{', '.join(timm.list_models('*_cifar'))}, or pass --head linear") from None
        raise RunError(f"cannot build {name!r} with {kwargs}: {e}") from None


def check_model_classes(model: torch.nn.Module, num_classes: int, name: str = "") -> None:
    n = getattr(model, "num_classes", None)
    if n is not None and n != num_classes:
        raise RunError(f"model {name or type(model).__name__} has {n} output classes but the data has {num_classes}")


def describe_versions() -> Dict[str, str]:
    import accelerate
    import timm

    from . import __version__
    out = {"lt_registry": __version__, "torch": torch.__version__, "timm": timm.__version__,
           "accelerate": accelerate.__version__, "python": platform.python_version()}
    try:
        import subprocess
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip()
        if commit:
            out["lt_registry_commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def peak_memory(device: torch.device) -> Dict[str, Any]:
    """Peak memory of this process: accelerator memory allocated by torch on GPU, resident set size on CPU."""
    out: Dict[str, Any] = {}
    if device.type == "cuda":
        out["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["gpu"] = torch.cuda.get_device_name(device)
    try:
        import resource
        out["peak_host_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        pass
    return out


def _pct(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(100.0 * float(v), 4)


def final_metrics(logits: torch.Tensor, labels: torch.Tensor, prior: ClassPrior, n_bins: int = 15) -> Dict[str, Any]:
    """SPEC 6 metrics in percent (``final`` block of metrics.json) plus the reliability bins."""
    from .metrics import evaluate_predictions

    m = evaluate_predictions(logits, labels, prior, n_bins=n_bins)
    final = {k: _pct(m[k]) for k in PERCENT_KEYS if k in m}
    final["per_class_accuracy"] = [_pct(v) for v in m["per_class_accuracy"]]
    final["num_test_samples"] = int(m["num_samples"])
    return {"final": final, "bins": m["bins"]}


def write_eval_report(out_dir: Path, logits: torch.Tensor, labels: torch.Tensor, prior: ClassPrior,
                      class_names: List[str], title: str) -> Dict[str, Any]:
    """``final`` metrics plus ``calibration/`` (reliability.png, bins.csv) and ``confusion.png`` in ``out_dir``:
    the evaluation report of a training run and of ``recipes/evaluate.py`` alike."""
    from . import report

    out_dir = Path(out_dir)
    res = final_metrics(logits, labels, prior)
    final, bins = res["final"], res["bins"]
    cal = out_dir / "calibration"
    cal.mkdir(parents=True, exist_ok=True)
    report.reliability_diagram(bins, cal / "reliability.png", title=title, ece=final["ece"] / 100,
                               mce=final["mce"] / 100)
    report.write_bins_table(bins, cal / "bins.csv")
    cm = report.confusion_matrix(logits.argmax(1), labels, prior.num_classes)
    report.plot_confusion(cm, out_dir / "confusion.png", class_names=list(class_names))
    return res


def finalize_run(run_dir: Path, model: torch.nn.Module, logits: torch.Tensor, labels: torch.Tensor, ds: Any,
                 prior: ClassPrior, args: Any, history: List[Dict[str, Any]], *, mixer: Any = None,
                 versions: Optional[Dict[str, str]] = None, resources: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write metrics.json, calibration/, confusion.png, config.json + model.safetensors and the model card.

    ``logits`` are the model's raw outputs; a cosine head (LDAM) is scored as ``s * cos`` with the loss's
    scale ``s``, recorded as ``logit_scale`` in the ``lt`` block, since raw cosines in [-1, 1] would make
    every softmax near-uniform and the calibration numbers meaningless."""
    from .hub import save_model_folder

    run_dir = Path(run_dir)
    scale = float(getattr(args, "logit_scale", 1.0) or 1.0)
    res = write_eval_report(run_dir, logits * scale, labels, prior, list(ds.class_names),
                            f"{args.dataset} {args.mix}+{args.loss}")
    final, bins = res["final"], res["bins"]
    lt_block = {
        "dataset": args.dataset, "imb_factor": getattr(ds, "imb_factor", None),
        "test_imb_factor": getattr(args, "test_imb_factor", None),
        "class_counts": [int(c) for c in ds.class_counts], "prior": [float(p) for p in prior.probs.tolist()],
        "class_names": list(ds.class_names), "mixer": args.mix, "mixer_repr": repr(mixer) if mixer is not None else None,
        "loss": args.loss, "preset": args.preset if args.mix == "unimix" else None, "sampler": args.sampler,
        "seed": args.seed, "epochs": args.epochs, "logit_scale": scale, "versions": versions or {},
    }
    metrics = {
        "final": final,
        "epochs": history,
        "protocol": {"reported": "final epoch (no best-epoch selection on test)",
                     "calibration": {"n_bins": 15, "scheme": bins.get("scheme", "equal-width")},
                     "splits": "many > 100, medium 20-100, few < 20 training images; head/mid/tail by class-index thirds",
                     "units": "percent"},
        "lt": lt_block,
        "resources": resources or {},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    save_model_folder(model, run_dir, lt_block)
    from .hub import write_model_card
    write_model_card(run_dir)
    return metrics
