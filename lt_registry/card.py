"""The model card (the run folder's ``README.md``), built from the run folder alone.

It reads ``config.json`` (its ``lt`` block: dataset, class counts, mixer, loss, the resolved schedule),
``metrics.json`` and ``train_args.yaml``; labels come from the registries (``label=`` on each entry) and the
metric rows from :data:`lt_registry.metrics.table.METRICS`, so a new loss, mixer, dataset or metric shows
up here without an edit. The template is ``model_cards/lt_model_card.md``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ._registry import LOSSES, MIXERS
from .config import TRAIN_ARGS_FILE, read_yaml_mapping
from .data.builder import DATASETS
from .losses import assumed_test_prior
from .metrics.table import METRICS
from .provenance import describe_segments

__all__ = ["build_model_card", "write_model_card", "CARD_TEMPLATE", "CardError"]

PathLike = Union[str, os.PathLike]
_CARD_NAME = "lt_model_card.md"


class CardError(RuntimeError):
    """The folder is not a finished run folder (no config.json / metrics.json, or unreadable ones)."""


def _card_template() -> Path:
    """The model-card template: ``model_cards/`` beside the package in a clone or editable install, else the
    copy a regular ``pip install`` puts under ``<prefix>/share/lt_registry/model_cards`` (setup.cfg data_files)."""
    candidates = [Path(__file__).resolve().parent.parent / "model_cards" / _CARD_NAME,
                  Path(sys.prefix) / "share" / "lt_registry" / "model_cards" / _CARD_NAME]
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


CARD_TEMPLATE = _card_template()


def _read_json(path: Path, what: str) -> Dict[str, Any]:
    if not path.is_file():
        raise CardError(f"{path.parent} has no {path.name}: {what}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CardError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CardError(f"{path} must hold a JSON object")
    return data


def _dataset_facts(name: str) -> Tuple[str, Optional[str], Optional[str]]:
    """(label, Hub dataset id, card note) of a dataset from its registry entry; unknown names as they are."""
    if name in DATASETS:
        entry = DATASETS.get(name)
        return entry.display, entry.meta.get("hub_dataset"), entry.meta.get("note")
    return name, None, None


def _schedule_text(sched: Dict[str, Any]) -> str:
    steps = ", ".join(str(m) for m in sched.get("decay_milestones", [])) or "none"
    return (f"linear warmup over {sched['warmup_epochs']} epoch(s), then x{sched.get('decay_rate', 0.01):g} at "
            f"epoch(s) {steps} (0-indexed)")


def _optimizer_text(args: Dict[str, Any]) -> Optional[str]:
    if not args:
        return None
    decay_all = args.get("wd_norm_bias")
    return (f"{args.get('opt', 'sgd')} lr {args.get('lr')} momentum {args.get('momentum')} weight decay "
            f"{args.get('weight_decay')}" + ("" if decay_all is None else
                                             " on every parameter" if decay_all else
                                             " (not on norm and bias parameters)"))


_CALIBRATED_DIAGRAM = "calibration/reliability_calibrated.png"


def _calibration_section(cal: Any, fmt: Any) -> str:
    """The card's "Calibration" section from metrics.json's ``calibration`` block (``recipes/calibrate.py``);
    empty without one."""
    if not isinstance(cal, dict):
        return ""
    cols = [(split, when) for split in ("val", "test") if isinstance(cal.get(split), dict)
            for when in ("before", "after")]
    head = " | ".join(f"{split} {when}" for split, when in cols)
    rows = "\n".join(f"| {m.heading} | " + " | ".join(fmt((cal[s].get(w) or {}).get(m.key)) for s, w in cols) + " |"
                      for m in METRICS if m.in_card)
    n_test = cal.get("num_test_samples")
    return (f"## Calibration\n\nA post-hoc **{cal.get('calibrator')}** calibrator (docs/method.md §6.1) was fitted on "
            f"the validation split only ({cal.get('num_val_samples')} images) and is stored in "
            "`calibrator.safetensors` (its settings in `config.json`, `lt.calibration`); "
            + (f"the test split ({n_test} images) was read only afterwards. " if n_test else "the dataset has no "
               "test split. ")
            + "`lt_registry.load_classifier` applies it.\n\n"
            f"| metric | {head} |\n|---|" + "---|" * len(cols) + f"\n{rows}\n\n"
            f"![Reliability before and after calibration]({cal.get('diagram') or _CALIBRATED_DIAGRAM})\n")


def build_model_card(run_dir: PathLike, repo_id: Optional[str] = None):
    """A ``huggingface_hub.ModelCard`` for a finished run folder (metadata: model-index with the metrics of
    :data:`~lt_registry.metrics.table.METRICS` that have a ``card_type``, as ``EvalResult`` s)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    run_dir = Path(run_dir)
    cfg = _read_json(run_dir / "config.json", "not a run folder (a finished `recipes/train.py` run writes it)")
    metrics = _read_json(run_dir / "metrics.json", "the run did not finish")
    final, lt = metrics.get("final", {}), cfg.get("lt", metrics.get("lt", {}))
    ds = lt.get("dataset", "unknown")
    rho = lt.get("imb_factor")
    label, hub_dataset, note = _dataset_facts(ds)
    ds_name = f"{label}, imbalance factor {rho:g}" if isinstance(rho, (int, float)) else label
    ds_args = {"imb_factor": rho} if rho is not None else None
    results = [EvalResult(task_type="image-classification", dataset_type=ds, dataset_name=ds_name,
                          dataset_split=metrics.get("evaluated_on", "test"), dataset_args=ds_args, metric_type=m.card_type,
                          metric_value=float(final[m.key]), metric_name=m.heading)
               for m in METRICS if m.card_type and final.get(m.key) is not None]
    name = repo_id.split("/")[-1] if repo_id else run_dir.name
    pcfg = cfg.get("pretrained_cfg", {})
    args_path = run_dir / TRAIN_ARGS_FILE
    args = read_yaml_mapping(args_path, "train arguments", "option: value", CardError) if args_path.is_file() else {}
    # Trained on local files (--data-dir): the card names the folder (not its full path) and does not claim a Hub
    # dataset, since the copy may differ from it (e.g. a re-encoded copy of CIFAR-10).
    local_data = Path(str(args["data_dir"])).name if args.get("data_dir") else None
    mixer, loss = lt.get("mixer"), lt.get("loss")
    mix_label = MIXERS.label(mixer) if mixer else None
    loss_label = LOSSES.label(loss) if loss else None
    data = ModelCardData(
        library_name="timm", license=pcfg.get("license"), pipeline_tag="image-classification", model_name=name,
        eval_results=results,
        tags=["image-classification", "timm", "lt_registry", "long-tailed", "calibration",
              f"mixer-{mixer}", f"loss-{loss}"],
        datasets=None if local_data or hub_dataset is None else [hub_dataset],
        metrics=["accuracy", "ece"])

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    metrics_table = "| metric | value |\n|---|---|\n" + "\n".join(
        f"| {m.heading} | {fmt(final.get(m.key))} |" for m in METRICS if m.in_card)
    versions = lt.get("versions", {})
    counts = lt.get("class_counts", [])
    evaluated_on = metrics.get("evaluated_on", "test")
    val = lt.get("val") or {}
    val_text = {"holdout": f"a stratified hold-out of {val.get('fraction', 0) * 100:g}% of each class's training "
                           "images (listed in `val_split.json`)",
                "split": f"the dataset's own `{val.get('split')}` split",
                "left-out": f"{val.get('per_class')} images per class that the long-tailed selection left out"
                            + (" (the head class, which keeps all its images, lends its validation images from its "
                               "training images)" if val.get("overlap_with_train") else "")}.get(val.get("source"))
    if evaluated_on == "test":
        evaluation_text = (f"All figures are final-epoch numbers on the {'imbalanced' if lt.get('test_imb_factor') else 'balanced'} "
                           f"test set ({final.get('num_test_samples', '?')} images), read once after training; nothing "
                           "was selected on it.")
    else:
        evaluation_text = (f"The dataset has no test split: the figures are final-epoch numbers on the validation "
                           f"split ({final.get('num_test_samples', '?')} images), which also served for monitoring.")
    if val_text:
        evaluation_text += f" Validation data: {val_text}."
    best, ema = metrics.get("best"), metrics.get("ema")
    rows = [("`model.safetensors`", "the final epoch's weights (the figures above)")]
    if isinstance(best, dict):
        t = best.get("test") or {}
        rows.append(("`best/model.safetensors`",
                     f"best on validation by {best.get('metric')} ({fmt(best.get('value'))} at epoch "
                     f"{best.get('epoch')}, 0-indexed)" + (f"; test top-1 {fmt(t.get('top1'))}%, ECE "
                                                           f"{fmt(t.get('ece'))}%" if t else "")))
    if isinstance(ema, dict):
        e = ema.get(evaluated_on) or {}
        rows.append(("`ema/model.safetensors`", f"moving average of the weights (decay {ema.get('decay')})"
                     + (f"; {evaluated_on} top-1 {fmt(e.get('top1'))}%, ECE {fmt(e.get('ece'))}%" if e else "")))
    weights_table = "| file | what |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    if len(rows) > 1:
        weights_table += ("\n\nEach subfolder loads like the run folder itself: "
                          "`timm.create_model(\"local-dir:<run>/best\")`.")
    sched: Dict[str, Any] = lt.get("schedule") or {}
    recipe: List[Tuple[str, Any]] = [
        ("training data", f"local files `{local_data}` (--data-dir)" if local_data else
         f"Hub dataset {hub_dataset}" if hub_dataset else None),
        ("mixer", lt.get("mixer_repr") or mix_label), ("loss", loss_label),
        ("UniMix preset", lt.get("preset")), ("sampler", lt.get("sampler")),
        ("validation", val_text),
        ("initialised from", "timm pretrained weights" if args.get("pretrained") or args.get("pretrained_path")
         else "`--initial-checkpoint`" if args.get("initial_checkpoint") else None),
        ("epochs", lt.get("epochs")), ("batch size (per process)", args.get("batch_size")),
        ("optimizer", _optimizer_text(args)),
        ("LR schedule", _schedule_text(sched) if sched else None),
        ("DRW from epoch (0-indexed)", sched.get("drw_epoch")),
        ("mixing stops at epoch (0-indexed)", sched.get("mix_off_epoch")),
        ("seed", lt.get("seed")),
        ("trained in", describe_segments(metrics.get("segments")))]
    recipe_table = "\n".join(f"| {k} | {v} |" for k, v in recipe if v is not None)
    uniform = assumed_test_prior(loss) == "uniform"
    calibration_section = _calibration_section(metrics.get("calibration"), fmt)
    class_names = lt.get("class_names", [])
    return ModelCard.from_template(
        data, template_path=str(CARD_TEMPLATE),
        title=f"{cfg.get('architecture')} on {ds_name}: {mix_label} + {loss_label}",
        architecture=cfg.get("architecture"), dataset_label=label,
        imb_factor_text=f"{rho:g}" if isinstance(rho, (int, float)) else (
            f"{max(counts) / min(counts):.1f}, from its own class counts" if counts and min(counts) > 0
            else "from its own class counts"),
        mix=mix_label, loss=loss_label,
        mix_text="no mixing" if mixer in (None, "none") else f"the **{mix_label}** mixer",
        assumed_note=("this model's raw logits assume a uniform test prior" if uniform else
                      "this model's raw logits carry its training prior"),
        adapt_call=("adapt_logits_to_prior(logits, new_prior)" if uniform else
                    "adapt_logits_to_prior(logits, new_prior, assumed_prior=prior)"),
        evaluation_text=evaluation_text, calibration_section=calibration_section,
        weights_table=weights_table, metrics_table=metrics_table, recipe_table=recipe_table,
        num_classes=len(counts), total_train=sum(counts), class_counts=counts,
        repo_id=repo_id or "<user>/<repo>", input_size=tuple(pcfg.get("input_size", ())),
        mean=tuple(round(m, 4) for m in pcfg.get("mean", ())), std=tuple(round(s, 4) for s in pcfg.get("std", ())),
        data_note=(note or "check that your data matches its domain and label set.") + (
            f" The training images were read from the local folder `{local_data}`, not downloaded from the Hub: "
            "if that copy was altered (for example re-encoded), absolute numbers are not those of the original "
            "dataset." if local_data else ""),
        class_names=", ".join(class_names[:20]) + (" ..." if len(class_names) > 20 else ""),
        versions=", ".join(f"{k} {v}" for k, v in versions.items()))


def write_model_card(run_dir: PathLike, repo_id: Optional[str] = None) -> Path:
    """Write the run folder's ``README.md`` (the model card); returns its path."""
    card = build_model_card(run_dir, repo_id)
    path = Path(run_dir) / "README.md"
    path.write_text(str(card))
    return path
