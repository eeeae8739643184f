"""Run folders on the Hugging Face Hub: timm layout, model card, push and download.

A run folder holds ``config.json`` (timm's format plus an ``lt`` block with the class counts, prior, mixer,
loss and preset) and ``model.safetensors``, so it loads with ``timm.create_model("local-dir:<folder>")``
and, once pushed, with ``timm.create_model("hf-hub:<id>", pretrained=True)`` (after ``import lt_registry``).
Weights are only ever read with safetensors; the Hub token is used for the request and written nowhere.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from .prior import ClassPrior

__all__ = ["save_model_folder", "write_model_card", "build_model_card", "is_run_folder", "from_pretrained",
           "push_to_hub", "HubError", "CARD_TEMPLATE"]

PathLike = Union[str, os.PathLike]
CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "model_cards" / "lt_model_card.md"
_PUSH_IGNORE = ["checkpoints/*", "checkpoints/**", "*.tmp", "**/*.tmp", ".cache/**"]


class HubError(RuntimeError):
    """A Hub or run-folder problem, with what to do about it."""


# ---- saving --------------------------------------------------------------------------------------------
def save_model_folder(model: torch.nn.Module, run_dir: PathLike, lt_block: Dict[str, Any]) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in timm's layout (``timm.models.save_for_hf``), with the
    ``lt`` block and the class names as timm ``label_names``."""
    from timm.models import save_for_hf

    run_dir = Path(run_dir)
    cfg: Dict[str, Any] = {"lt": lt_block}
    if lt_block.get("class_names"):
        cfg["label_names"] = list(lt_block["class_names"])
    # channels-last (fast path) weights are strided views safetensors will not write: pack them first
    model = model.to(memory_format=torch.contiguous_format)
    save_for_hf(model, str(run_dir), model_config=cfg, safe_serialization=True)
    return run_dir


def is_run_folder(path: PathLike) -> bool:
    p = Path(path)
    return (p / "config.json").is_file() and (p / "model.safetensors").is_file()


def _read_config(folder: Path) -> Dict[str, Any]:
    if not folder.is_dir():
        raise HubError(f"{folder} is not a folder; expected a run folder with config.json and model.safetensors")
    missing = [n for n in ("config.json", "model.safetensors") if not (folder / n).is_file()]
    if missing:
        raise HubError(f"{folder} is not a run folder: missing {', '.join(missing)} (a finished "
                       "`recipes/train.py` run writes both)")
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise HubError(f"{folder / 'config.json'} is not valid JSON: {e}") from None
    if "architecture" not in cfg:
        raise HubError(f"{folder / 'config.json'} has no 'architecture': not a timm model config")
    return cfg


# ---- model card ----------------------------------------------------------------------------------------
_DATASET_LABELS = {"cifar10_lt": "CIFAR-10-LT", "cifar100_lt": "CIFAR-100-LT", "digits_lt": "Digits-LT (embedded)",
                   "imagenet_lt": "ImageNet-LT", "inat2018": "iNaturalist 2018", "places_lt": "Places-LT"}
_DATA_NOTES = {
    "digits_lt": "this is the embedded demo set (scikit-learn's 8x8 handwritten digits upsampled to 32x32), "
                 "not natural images: use it to check the pipeline, not as a pretrained backbone.",
    "cifar10_lt": "32x32 natural images of 10 classes; not suitable for other resolutions or label sets.",
    "cifar100_lt": "32x32 natural images of 100 classes; not suitable for other resolutions or label sets.",
}


def build_model_card(run_dir: PathLike, repo_id: Optional[str] = None):
    """A ``huggingface_hub.ModelCard`` for a finished run folder (metadata: model-index with top-1, ECE,
    MCE and many/medium/few as ``EvalResult`` s)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    run_dir = Path(run_dir)
    cfg = _read_config(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise HubError(f"{run_dir} has no metrics.json: the run did not finish")
    metrics = json.loads(metrics_path.read_text())
    final, lt = metrics["final"], cfg.get("lt", metrics.get("lt", {}))
    ds = lt.get("dataset", "unknown")
    rho = lt.get("imb_factor")
    label = _DATASET_LABELS.get(ds, ds)
    ds_name = f"{label} (imbalance factor {rho:g})" if isinstance(rho, (int, float)) else label
    ds_args = {"imb_factor": rho} if rho is not None else None
    results = []
    for key, mtype, mname in (("top1", "accuracy", "Top-1 accuracy (%)"), ("ece", "ece", "ECE (%, 15 bins)"),
                              ("mce", "mce", "MCE (%, 15 bins)"), ("many", "accuracy_many", "Many-shot accuracy (%)"),
                              ("medium", "accuracy_medium", "Medium-shot accuracy (%)"),
                              ("few", "accuracy_few", "Few-shot accuracy (%)"), ("nll", "nll", "NLL (x100)"),
                              ("brier", "brier", "Brier score (x100)")):
        v = final.get(key)
        if v is None:
            continue
        results.append(EvalResult(task_type="image-classification", dataset_type=ds, dataset_name=ds_name,
                                  dataset_split="test", dataset_args=ds_args, metric_type=mtype,
                                  metric_value=float(v), metric_name=mname))
    name = repo_id.split("/")[-1] if repo_id else run_dir.name
    data = ModelCardData(
        library_name="timm", pipeline_tag="image-classification", model_name=name, eval_results=results,
        tags=["image-classification", "timm", "lt_registry", "long-tailed", "calibration",
              f"mixer-{lt.get('mixer')}", f"loss-{lt.get('loss')}"],
        datasets=[{"cifar10_lt": "uoft-cs/cifar10", "cifar100_lt": "uoft-cs/cifar100"}.get(ds, ds)],
        metrics=["accuracy", "ece"])

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    rows = [("Top-1 (%)", "top1"), ("Many-shot (%)", "many"), ("Medium-shot (%)", "medium"), ("Few-shot (%)", "few"),
            ("ECE (%)", "ece"), ("MCE (%)", "mce"), ("ACE (%)", "ace"), ("SCE (%)", "sce"),
            ("Brier (x100)", "brier"), ("NLL (x100)", "nll")]
    metrics_table = "| metric | value |\n|---|---|\n" + "\n".join(f"| {n} | {fmt(final.get(k))} |" for n, k in rows)
    args = {}
    args_path = run_dir / "train_args.yaml"
    if args_path.is_file():
        import yaml
        args = yaml.safe_load(args_path.read_text()) or {}
    recipe = [("mixer", lt.get("mixer_repr") or lt.get("mixer")), ("loss", lt.get("loss")),
              ("UniMix preset", lt.get("preset")), ("sampler", lt.get("sampler")),
              ("epochs", lt.get("epochs")), ("batch size (per process)", args.get("batch_size")),
              ("optimizer", f"{args.get('opt', 'sgd')} lr {args.get('lr')} momentum {args.get('momentum')} "
                            f"weight decay {args.get('weight_decay')}" if args else None),
              ("LR schedule", "linear warmup, then x0.01 at 80% and 90% of training (SPEC 5)"),
              ("DRW epoch", args.get("drw_epoch")), ("mixing stops at epoch", args.get("mix_off_epoch")),
              ("seed", lt.get("seed"))]
    recipe_table = "\n".join(f"| {k} | {v} |" for k, v in recipe if v is not None)
    pcfg = cfg.get("pretrained_cfg", {})
    versions = lt.get("versions", {})
    counts = lt.get("class_counts", [])
    return ModelCard.from_template(
        data, template_path=str(CARD_TEMPLATE),
        title=f"{cfg['architecture']} on {ds_name}: {lt.get('mixer')} + {lt.get('loss')}",
        architecture=cfg["architecture"], dataset_label=label,
        imb_factor_text=f"{rho:g}" if isinstance(rho, (int, float)) else "as in its list file",
        mix=lt.get("mixer"), loss=lt.get("loss"),
        test_label="imbalanced" if lt.get("test_imb_factor") else "balanced",
        num_test=final.get("num_test_samples", "?"), metrics_table=metrics_table, recipe_table=recipe_table,
        num_classes=len(counts), total_train=sum(counts), class_counts=counts,
        repo_id=repo_id or "<user>/<repo>", input_size=tuple(pcfg.get("input_size", ())),
        mean=tuple(round(m, 4) for m in pcfg.get("mean", ())), std=tuple(round(s, 4) for s in pcfg.get("std", ())),
        data_note=_DATA_NOTES.get(ds, "check that your data matches its domain and label set."),
        class_names=", ".join(lt.get("class_names", [])[:20]) + (" ..." if len(lt.get("class_names", [])) > 20 else ""),
        versions=", ".join(f"{k} {v}" for k, v in versions.items()))


def write_model_card(run_dir: PathLike, repo_id: Optional[str] = None) -> Path:
    """Write the run folder's ``README.md`` (the model card)."""
    card = build_model_card(run_dir, repo_id)
    path = Path(run_dir) / "README.md"
    path.write_text(str(card))
    return path


# ---- loading -------------------------------------------------------------------------------------------
def _resolve_source(source: PathLike, revision: Optional[str] = None) -> Tuple[Path, str]:
    s = str(source)
    if s.startswith("hf-hub:"):
        repo_id = s[len("hf-hub:"):]
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                            RevisionNotFoundError)
        try:
            folder = snapshot_download(repo_id, revision=revision,
                                       allow_patterns=["config.json", "model.safetensors", "README.md", "metrics.json"])
        except RepositoryNotFoundError:
            raise HubError(f"Hub repo {repo_id!r} not found at {_endpoint()} (check the id, or log in for a "
                           "private repo)") from None
        except RevisionNotFoundError:
            raise HubError(f"revision {revision!r} of {repo_id!r} not found") from None
        except (LocalEntryNotFoundError, EntryNotFoundError, OSError) as e:
            raise HubError(f"Hub unreachable at {_endpoint()} while downloading {repo_id!r} ({type(e).__name__}); "
                           "check the connection or HF_ENDPOINT, or use a local folder") from None
        return Path(folder), repo_id
    if s.startswith("local-dir:"):
        s = s[len("local-dir:"):]
    return Path(s).expanduser(), s


def _endpoint() -> str:
    from huggingface_hub import constants
    return constants.ENDPOINT


def from_pretrained(source: PathLike, *, revision: Optional[str] = None,
                    device: Union[str, torch.device] = "cpu") -> Tuple[torch.nn.Module, ClassPrior]:
    """Load a trained run: ``("hf-hub:<id>" | "local-dir:<path>" | <path>) -> (model in eval mode, ClassPrior)``.

    The prior is the training class prior from the ``lt`` block; with
    :func:`lt_registry.adapt_logits_to_prior` it moves predictions to a new test prior (SPEC 2, post-hoc).
    """
    import timm

    from . import models  # noqa: F401  (registers our architectures with timm)

    folder, name = _resolve_source(source, revision)
    cfg = _read_config(folder)
    lt = cfg.get("lt")
    if not lt or "class_counts" not in lt:
        raise HubError(f"{name}: config.json has no 'lt' block with class_counts; not an lt_registry run folder")
    if len(lt["class_counts"]) != cfg.get("num_classes"):
        raise HubError(f"{name}: config.json says num_classes={cfg.get('num_classes')} but its lt block has "
                       f"{len(lt['class_counts'])} class counts")
    try:
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    except RuntimeError as e:
        if "state_dict" in str(e) or "size mismatch" in str(e) or "Missing key" in str(e):
            raise HubError(f"{name}: the weights in model.safetensors do not match config.json "
                           f"({cfg['architecture']}, {cfg.get('num_classes')} classes): {str(e).splitlines()[0]}") from None
        raise
    except Exception as e:  # safetensors header errors and the like
        if type(e).__name__ in ("SafetensorError", "HeaderTooLarge") or "safetensors" in str(e).lower():
            raise HubError(f"{name}: model.safetensors is corrupt or not a safetensors file ({e})") from None
        raise
    return model.to(device).eval(), ClassPrior(lt["class_counts"])


# ---- pushing -------------------------------------------------------------------------------------------
def _token(token: Optional[str]) -> str:
    from huggingface_hub import get_token
    tok = token or os.environ.get("HF_TOKEN") or get_token()
    if not tok:
        raise HubError("no Hub token for the push: pass token=..., set HF_TOKEN, or run `hf auth login`")
    return tok


def push_to_hub(run_dir: PathLike, repo_id: str, *, private: bool = False, token: Optional[str] = None,
                commit_message: Optional[str] = None) -> str:
    """Upload a finished run folder (without ``checkpoints/``) to ``repo_id``; returns the repo URL.

    The model card is rewritten with ``repo_id`` in its usage snippet before the upload. The token comes
    from ``token``, ``HF_TOKEN`` or the saved login and is never written to any file.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    run_dir = Path(run_dir)
    _read_config(run_dir)
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"repo_id must look like 'user/name', got {repo_id!r}")
    tok = _token(token)
    if (run_dir / "metrics.json").is_file():
        write_model_card(run_dir, repo_id)
    api = HfApi(token=tok)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(run_dir), repo_id=repo_id, repo_type="model",
                          ignore_patterns=_PUSH_IGNORE,
                          commit_message=commit_message or f"Upload lt_registry run {run_dir.name}")
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubError(f"the Hub refused the push to {repo_id!r} (HTTP {status}): the token lacks write "
                           "access to this namespace") from None
        raise HubError(f"push to {repo_id!r} failed: HTTP {status}") from None
    except OSError as e:
        raise HubError(f"Hub unreachable at {_endpoint()} ({type(e).__name__}); nothing was pushed") from None
    return str(url)
