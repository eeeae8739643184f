"""Loading and pushing run folders: from a local folder, ``local-dir:`` or ``hf-hub:``, and to the Hub.

A run folder (written by :mod:`lt_registry.run`) holds ``config.json`` (timm's format plus an ``lt`` block with the class counts, prior, mixer,
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
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import torch

from .card import write_model_card
from .prior import ClassPrior

__all__ = ["is_run_folder", "read_config", "from_pretrained", "load_run", "LoadedRun", "check_push_args", "push_to_hub",
           "HubError"]

PathLike = Union[str, os.PathLike]
_PUSH_IGNORE = ["checkpoints/*", "checkpoints/**", "*.tmp", "**/*.tmp", ".cache/**"]


class HubError(RuntimeError):
    """A Hub or run-folder problem, with what to do about it."""


def is_run_folder(path: PathLike) -> bool:
    p = Path(path)
    return (p / "config.json").is_file() and (p / "model.safetensors").is_file()


def read_config(folder: Path, name: Optional[str] = None) -> Dict[str, Any]:
    """``config.json`` of a run folder, checked: the folder, its weights file and a timm ``architecture``."""
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


# ---- loading -------------------------------------------------------------------------------------------
#: what a Hub download fetches: the model, its card and metrics, the calibrator recipes/calibrate.py stores, and
#: the run's options and validation hold-out (so the dataset and its validation split can be rebuilt)
_DOWNLOAD_PATTERNS = ["config.json", "model.safetensors", "README.md", "metrics.json", "calibrator.safetensors",
                      "train_args.yaml", "val_split.json"]


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

    cfg = read_config(folder, name)
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
    :func:`lt_registry.adapt_logits_to_prior` it moves predictions to a new test prior (docs/method.md §2, post-hoc).
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


def _push_operations(run_dir: Path) -> List[Any]:
    """One commit's files: the run folder without ``checkpoints/`` and temporary files; ``train_args.yaml`` names
    only paths inside the git work tree of the working directory (a data folder elsewhere as ``data/<name>``,
    docs/method.md §5.2), so a push does not publish where the data lived on the machine that trained."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.utils import filter_repo_objects

    from .config import TRAIN_ARGS_FILE, read_yaml_mapping
    from .paths import repository_root, run_paths, scrub_paths

    rels = sorted(f.relative_to(run_dir).as_posix() for f in run_dir.rglob("*") if f.is_file())
    ops = []
    for rel in filter_repo_objects(rels, ignore_patterns=_PUSH_IGNORE):
        content: Any = str(run_dir / rel)
        if rel == TRAIN_ARGS_FILE:
            args = read_yaml_mapping(run_dir / rel, "the run's train arguments", "option: value")
            content = scrub_paths((run_dir / rel).read_text(), run_paths(args), repository_root()).encode()
        ops.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=content))
    return ops


def push_to_hub(run_dir: PathLike, repo_id: str, *, private: bool = False, token: Optional[str] = None,
                commit_message: Optional[str] = None) -> str:
    """Upload a finished run folder (without ``checkpoints/``) to ``repo_id``; returns the repo URL.

    The folder is checked first (it must load: config, lt block, safetensors weights that match the config),
    then the model card is rewritten with ``repo_id`` in its usage snippet. The uploaded ``train_args.yaml`` names
    only paths inside the repository (docs/method.md §5.2); the local one is left as it is. The token comes from ``token``,
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
        api.create_commit(repo_id=repo_id, repo_type="model", operations=_push_operations(run_dir),
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


_MOVED = {"build_model_card": "lt_registry.card", "write_model_card": "lt_registry.card",
          "CARD_TEMPLATE": "lt_registry.card", "save_model_folder": "lt_registry.run",
          "assumed_test_prior": "lt_registry.losses"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        raise AttributeError(f"lt_registry.hub.{name} moved to {_MOVED[name]}.{name}; import it from there")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
