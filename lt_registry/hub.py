"""Run folders on the Hugging Face Hub: timm layout, model card, push and download.

A run folder holds ``config.json`` (timm's format plus an ``lt`` block with the class counts, prior, mixer,
loss and preset) and ``model.safetensors``, so it loads with ``timm.create_model("local-dir:<folder>")``
and, once pushed, with ``timm.create_model("hf-hub:<id>", pretrained=True)`` (after ``import lt_registry``).
Weights are only ever read with safetensors; the Hub token is used for the request and written nowhere.
Every user-facing problem (Hub unreachable or offline, repo or revision missing, token missing or refused,
not a run folder, weights that do not match config.json, a corrupt weights file) raises :class:`HubError`
with a one-line message.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import torch

from .prior import ClassPrior

__all__ = ["save_model_folder", "write_model_card", "build_model_card", "is_run_folder", "from_pretrained",
           "load_run", "LoadedRun", "assumed_test_prior", "check_push_args", "push_to_hub", "HubError", "CARD_TEMPLATE"]

PathLike = Union[str, os.PathLike]
_CARD_NAME = "lt_model_card.md"


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


def _read_config(folder: Path, name: Optional[str] = None) -> Dict[str, Any]:
    name = name or str(folder)
    if not folder.is_dir():
        raise HubError(f"{name} is not a folder; expected a run folder with config.json and model.safetensors")
    missing = [n for n in ("config.json", "model.safetensors") if not (folder / n).is_file()]
    if missing:
        raise HubError(f"{name} is not a run folder: missing {', '.join(missing)} (a finished "
                       "`recipes/train.py` run writes both)")
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HubError(f"{name}: config.json is not valid JSON: {e}") from None
    if not isinstance(cfg, dict) or "architecture" not in cfg:
        raise HubError(f"{name}: config.json has no 'architecture': not a timm model config")
    return cfg


# ---- model card ----------------------------------------------------------------------------------------
_DATASET_LABELS = {"cifar10_lt": "CIFAR-10-LT", "cifar100_lt": "CIFAR-100-LT", "digits_lt": "Digits-LT (embedded)",
                   "imagenet_lt": "ImageNet-LT", "inat2018": "iNaturalist 2018", "places_lt": "Places-LT"}


def _hub_dataset(dataset: str) -> Optional[str]:
    """The Hub dataset the loader downloads for ``dataset`` when no ``--data-dir`` is given (CIFAR only)."""
    from .data.cifar_lt import CIFAR_SPECS

    spec = CIFAR_SPECS.get(dataset[:-3] if dataset.endswith("_lt") else dataset)
    return spec["hub_id"] if spec else None


_DATA_NOTES = {
    "digits_lt": "this is the embedded demo set (scikit-learn's 8x8 handwritten digits upsampled to 32x32), "
                 "not natural images: use it to check the pipeline, not as a pretrained backbone.",
    "cifar10_lt": "32x32 natural images of 10 classes; not suitable for other resolutions or label sets.",
    "cifar100_lt": "32x32 natural images of 100 classes; not suitable for other resolutions or label sets.",
}


#: losses whose logits are trained for a uniform test prior (the training prior is taken out: SPEC 2-3)
PRIOR_FREE_LOSSES = ("bayias", "la")


def assumed_test_prior(loss: Optional[str]) -> str:
    """The test prior a model's raw logits assume: ``"uniform"`` after a prior-compensating loss (``bayias``,
    ``la`` and their aliases), ``"train"`` (the training prior) otherwise. The ``assumed_prior`` of
    :func:`lt_registry.adapt_logits_to_prior`: ``None`` for uniform, the run's ClassPrior for train."""
    if not loss:
        return "train"
    from . import LOSSES
    try:
        name = LOSSES.get(loss).name
    except ValueError:
        name = loss
    return "uniform" if name in PRIOR_FREE_LOSSES else "train"


def _resolved_schedule(args: Dict[str, Any]) -> Dict[str, Any]:
    """The epochs the run actually used (unset flags scale with --epochs), from its train_args.yaml."""
    if not args:
        return {}
    from types import SimpleNamespace

    from .run import resolve_schedule
    try:
        return resolve_schedule(SimpleNamespace(**{"drw": False, **args}))
    except Exception:  # an older/newer train_args.yaml: the card still gets written, without these rows
        return {}


def _schedule_text(args: Dict[str, Any], sched: Dict[str, Any]) -> str:
    if not sched:
        return "linear warmup, then step decay"
    steps = ", ".join(str(m) for m in sched["decay_milestones"]) or "none"
    return (f"linear warmup over {sched['warmup_epochs']} epoch(s), then x{args.get('decay_rate', 0.01):g} at "
            f"epoch(s) {steps} (0-indexed)")


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
    ds_name = f"{label}, imbalance factor {rho:g}" if isinstance(rho, (int, float)) else label
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
    pcfg = cfg.get("pretrained_cfg", {})
    args = {}
    args_path = run_dir / "train_args.yaml"
    if args_path.is_file():
        import yaml
        args = yaml.safe_load(args_path.read_text()) or {}
    # Trained on local files (--data-dir): the card names the folder (not its full path) and does not claim a Hub
    # dataset, since the copy may differ from it (e.g. the JPEG q75 CIFAR-10 copy of ../shared/data).
    local_data = Path(str(args["data_dir"])).name if args.get("data_dir") else None
    hub_dataset = _hub_dataset(ds)
    data = ModelCardData(
        library_name="timm", license=pcfg.get("license"), pipeline_tag="image-classification", model_name=name,
        eval_results=results,
        tags=["image-classification", "timm", "lt_registry", "long-tailed", "calibration",
              f"mixer-{lt.get('mixer')}", f"loss-{lt.get('loss')}"],
        datasets=None if local_data or hub_dataset is None else [hub_dataset],
        metrics=["accuracy", "ece"])

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    rows = [("Top-1 (%)", "top1"), ("Many-shot (%)", "many"), ("Medium-shot (%)", "medium"), ("Few-shot (%)", "few"),
            ("ECE (%)", "ece"), ("MCE (%)", "mce"), ("ACE (%)", "ace"), ("SCE (%)", "sce"),
            ("Brier (x100)", "brier"), ("NLL (x100)", "nll")]
    metrics_table = "| metric | value |\n|---|---|\n" + "\n".join(f"| {n} | {fmt(final.get(k))} |" for n, k in rows)
    sched = _resolved_schedule(args)
    recipe = [("training data", f"local files `{local_data}` (--data-dir)" if local_data else
               f"Hub dataset {hub_dataset}" if hub_dataset else None),
              ("mixer", lt.get("mixer_repr") or lt.get("mixer")), ("loss", lt.get("loss")),
              ("UniMix preset", lt.get("preset")), ("sampler", lt.get("sampler")),
              ("epochs", lt.get("epochs")), ("batch size (per process)", args.get("batch_size")),
              ("optimizer", f"{args.get('opt', 'sgd')} lr {args.get('lr')} momentum {args.get('momentum')} "
                            f"weight decay {args.get('weight_decay')}" if args else None),
              ("LR schedule", _schedule_text(args, sched)),
              ("DRW from epoch (0-indexed)", sched.get("drw_epoch")),
              ("mixing stops at epoch (0-indexed)", sched.get("mix_off_epoch")),
              ("seed", lt.get("seed"))]
    recipe_table = "\n".join(f"| {k} | {v} |" for k, v in recipe if v is not None)
    versions = lt.get("versions", {})
    counts = lt.get("class_counts", [])
    uniform = assumed_test_prior(lt.get("loss")) == "uniform"
    return ModelCard.from_template(
        data, template_path=str(CARD_TEMPLATE),
        title=f"{cfg['architecture']} on {ds_name}: {lt.get('mixer')} + {lt.get('loss')}",
        architecture=cfg["architecture"], dataset_label=label,
        imb_factor_text=f"{rho:g}" if isinstance(rho, (int, float)) else "as in its list file",
        mix=lt.get("mixer"), loss=lt.get("loss"),
        mix_text="no mixing" if lt.get("mixer") in (None, "none") else f"the **{lt.get('mixer')}** mixer",
        assumed_note=("this model's raw logits assume a uniform test prior" if uniform else
                      "this model's raw logits carry its training prior"),
        adapt_call=("adapt_logits_to_prior(logits, new_prior)" if uniform else
                    "adapt_logits_to_prior(logits, new_prior, assumed_prior=prior)"),
        test_label="imbalanced" if lt.get("test_imb_factor") else "balanced",
        num_test=final.get("num_test_samples", "?"), metrics_table=metrics_table, recipe_table=recipe_table,
        num_classes=len(counts), total_train=sum(counts), class_counts=counts,
        repo_id=repo_id or "<user>/<repo>", input_size=tuple(pcfg.get("input_size", ())),
        mean=tuple(round(m, 4) for m in pcfg.get("mean", ())), std=tuple(round(s, 4) for s in pcfg.get("std", ())),
        data_note=_DATA_NOTES.get(ds, "check that your data matches its domain and label set.") + (
            f" The training images were read from the local folder `{local_data}`, not downloaded from the Hub: "
            "if that copy was altered (for example re-encoded), absolute numbers are not those of the original "
            "dataset." if local_data else ""),
        class_names=", ".join(lt.get("class_names", [])[:20]) + (" ..." if len(lt.get("class_names", [])) > 20 else ""),
        versions=", ".join(f"{k} {v}" for k, v in versions.items()))


def write_model_card(run_dir: PathLike, repo_id: Optional[str] = None) -> Path:
    """Write the run folder's ``README.md`` (the model card)."""
    card = build_model_card(run_dir, repo_id)
    path = Path(run_dir) / "README.md"
    path.write_text(str(card))
    return path


# ---- loading -------------------------------------------------------------------------------------------
_DOWNLOAD_PATTERNS = ["config.json", "model.safetensors", "README.md", "metrics.json"]


def _endpoint() -> str:
    from huggingface_hub import constants
    return constants.ENDPOINT


def _offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.is_offline_mode())


def _network_errors() -> Tuple[type, ...]:
    """Connection-level exception classes of whichever HTTP stack huggingface_hub runs on (requests in 0.x,
    httpx / httpx2 in later versions); only modules it already imported are looked at."""
    import sys

    errors: List[type] = [OSError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            errors.append(cls)
    return tuple(errors)


def _split_hub_id(ref: str, revision: Optional[str]) -> Tuple[str, Optional[str]]:
    """``user/repo@rev`` (timm's form) -> (``user/repo``, ``rev``); an explicit ``revision`` wins."""
    repo_id, _, rev = ref.partition("@")
    return repo_id, revision or rev or None


def _resolve_source(source: PathLike, revision: Optional[str] = None) -> Tuple[Path, str]:
    s = str(source)
    if s.startswith("hf-hub:"):
        repo_id, revision = _split_hub_id(s[len("hf-hub:"):], revision)
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError, RevisionNotFoundError)
        try:
            folder = snapshot_download(repo_id, revision=revision, allow_patterns=_DOWNLOAD_PATTERNS)
        except HFValidationError as e:
            raise HubError(f"{repo_id!r} is not a valid Hub repo id ({e})") from None
        except RepositoryNotFoundError:
            raise HubError(f"Hub repo {repo_id!r} not found at {_endpoint()} (check the id, or pass a token / "
                           "log in for a private repo)") from None
        except RevisionNotFoundError:
            raise HubError(f"revision {revision!r} of Hub repo {repo_id!r} not found") from None
        except LocalEntryNotFoundError:
            if _offline():
                raise HubError(f"{repo_id!r} is not in the local Hub cache and HF_HUB_OFFLINE is set; unset it to "
                               "download, or use a local run folder") from None
            raise HubError(f"Hub unreachable at {_endpoint()} while downloading {repo_id!r}; check the connection "
                           "or HF_ENDPOINT, or use a local run folder") from None
        except HfHubHTTPError as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            raise HubError(f"downloading {repo_id!r} from {_endpoint()} failed: HTTP {status}") from None
        except _network_errors() as e:
            raise HubError(f"Hub unreachable at {_endpoint()} while downloading {repo_id!r} "
                           f"({type(e).__name__}); check the connection or HF_ENDPOINT") from None
        return Path(folder), f"hf-hub:{repo_id}"
    if s.startswith("local-dir:"):
        s = s[len("local-dir:"):]
    return Path(s).expanduser(), s


def _safetensors_shapes(path: Path, name: str) -> Dict[str, Tuple[int, ...]]:
    """Tensor name -> shape from the file's header; a truncated or foreign file raises HubError. Reads the
    header only (no tensor data, nothing unpickled)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise HubError(f"{name}: model.safetensors is corrupt or not a safetensors file ({e}); re-download it or "
                       "re-export the run") from None


def _mismatch(model: torch.nn.Module, stored: Dict[str, Tuple[int, ...]]) -> str:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    shapes = [f"{k} {list(stored[k])} in the file vs {list(expected[k])} in the model"
              for k in sorted(set(expected) & set(stored)) if expected[k] != stored[k]]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]}")
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing from the file, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}")
    return "; ".join(parts)


class LoadedRun(NamedTuple):
    """A loaded run: the model (eval mode), the training class prior, the folder's config.json (with its
    ``lt`` block) and where the files are (the run folder, or the Hub cache snapshot)."""

    model: torch.nn.Module
    prior: ClassPrior
    config: Dict[str, Any]
    folder: Path


def _load_folder(folder: Path, name: str) -> Tuple[torch.nn.Module, ClassPrior, Dict[str, Any]]:
    """Check and load a run folder with timm's ``local-dir:`` loader (safetensors only)."""
    import timm

    from . import models  # noqa: F401  (registers our architectures with timm)

    cfg = _read_config(folder, name)
    lt = cfg.get("lt")
    if not isinstance(lt, dict) or not lt.get("class_counts"):
        raise HubError(f"{name}: config.json has no 'lt' block with class_counts; not an lt_registry run folder")
    counts = lt["class_counts"]
    if len(counts) != cfg.get("num_classes"):
        raise HubError(f"{name}: config.json says num_classes={cfg.get('num_classes')} but its lt block has "
                       f"{len(counts)} class counts")
    if not timm.is_model(cfg["architecture"]):
        raise HubError(f"{name}: architecture {cfg['architecture']!r} is not registered with timm here (a newer "
                       "timm, or the package that registers it, is needed)")
    stored = _safetensors_shapes(folder / "model.safetensors", name)
    what = f"{cfg['architecture']}, {cfg.get('num_classes')} classes"
    try:
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    except RuntimeError as e:
        # explain the mismatch tensor by tensor (timm's message is a long key dump); other errors pass on
        try:
            diff = _mismatch(timm.create_model(f"local-dir:{folder}", pretrained=False), stored)
        except Exception:
            diff = ""
        if not diff and "state_dict" not in str(e):
            raise
        raise HubError(f"{name}: the weights in model.safetensors do not match config.json ({what}): "
                       f"{diff or str(e).splitlines()[0]}") from None
    n_out = getattr(model, "num_classes", None)
    if n_out is not None and n_out != len(counts):
        raise HubError(f"{name}: the weights in model.safetensors do not match config.json ({what}): the model "
                       f"built from config.json and these weights has {n_out} outputs (model_args disagree with "
                       "num_classes)")
    return model, ClassPrior(counts), cfg


def load_run(source: PathLike, *, revision: Optional[str] = None,
             device: Union[str, torch.device] = "cpu") -> LoadedRun:
    """Like :func:`from_pretrained`, plus the run's config (``lt`` block: dataset, loss, class names, ...)."""
    folder, name = _resolve_source(source, revision)
    model, prior, cfg = _load_folder(folder, name)
    return LoadedRun(model.to(device).eval(), prior, cfg, folder)


def from_pretrained(source: PathLike, *, revision: Optional[str] = None,
                    device: Union[str, torch.device] = "cpu") -> Tuple[torch.nn.Module, ClassPrior]:
    """Load a trained run: ``("hf-hub:<id>[@rev]" | "local-dir:<path>" | <path>) -> (model in eval mode, ClassPrior)``.

    The prior is the training class prior from the ``lt`` block; with
    :func:`lt_registry.adapt_logits_to_prior` it moves predictions to a new test prior (SPEC 2, post-hoc).
    Every problem (Hub unreachable, repo missing, not a run folder, weights that do not match the config,
    a corrupt weights file) raises :class:`HubError` with one line saying what is wrong.
    """
    run = load_run(source, revision=revision, device=device)
    return run.model, run.prior


# ---- pushing -------------------------------------------------------------------------------------------
def _token(token: Optional[str]) -> str:
    from huggingface_hub import get_token
    tok = token or os.environ.get("HF_TOKEN") or get_token()
    if not tok:
        raise HubError("no Hub token for the push: pass token=... (--token), set HF_TOKEN, or run `hf auth login`")
    return tok


def check_push_args(repo_id: str, token: Optional[str] = None) -> str:
    """Fail fast, before a long training run: a malformed ``repo_id`` or no token raises HubError. Returns
    the token to use (``token``, else ``HF_TOKEN``, else the saved login). No network."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"repo_id must look like 'user/name', got {repo_id!r}")
    return _token(token)


def push_to_hub(run_dir: PathLike, repo_id: str, *, private: bool = False, token: Optional[str] = None,
                commit_message: Optional[str] = None) -> str:
    """Upload a finished run folder (without ``checkpoints/``) to ``repo_id``; returns the repo URL.

    The folder is checked first (it must load: config, lt block, safetensors weights that match the config),
    then the model card is rewritten with ``repo_id`` in its usage snippet. The token comes from ``token``,
    ``HF_TOKEN`` or the saved login; it is sent in the request header only and written to no file.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    run_dir = Path(run_dir)
    _load_folder(run_dir, str(run_dir))
    tok = check_push_args(repo_id, token)
    if (run_dir / "metrics.json").is_file():
        write_model_card(run_dir, repo_id)
    api = HfApi(token=tok)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(run_dir), repo_id=repo_id, repo_type="model",
                          ignore_patterns=list(_PUSH_IGNORE),
                          commit_message=commit_message or f"Upload lt_registry run {run_dir.name}")
    except HfHubHTTPError as e:
        resp = getattr(e, "response", None)
        status = getattr(resp, "status_code", None)
        if status == 401:
            raise HubError(f"the Hub at {_endpoint()} rejected the token (HTTP 401) for the push to {repo_id!r}: "
                           "check HF_TOKEN / `hf auth login`; nothing was pushed") from None
        if status == 403:
            raise HubError(f"the token has no write access to {repo_id.split('/')[0]!r} (HTTP 403); push to your "
                           "own namespace or an organisation you can write to") from None
        detail = (resp.headers.get("X-Error-Message") if resp is not None else None) or ""
        raise HubError(f"push to {repo_id!r} failed: HTTP {status}" + (f" ({detail})" if detail else "")) from None
    except OfflineModeIsEnabled:
        raise HubError("HF_HUB_OFFLINE is set: pushing needs the network; unset it to push") from None
    except ValueError as e:  # e.g. the Hub rejected the model card's metadata (validate-yaml)
        raise HubError(f"push to {repo_id!r} refused: {' '.join(str(e).split())}") from None
    except _network_errors() as e:
        raise HubError(f"Hub unreachable at {_endpoint()} ({type(e).__name__}); nothing was pushed") from None
    return str(url)
