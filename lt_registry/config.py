"""The training configuration: the recipe's argument parser (timm's argument names where they exist), YAML
configs on top of its defaults, and the one YAML reader. Every recipe that trains or describes a training run
(``recipes/train.py``, the ablation grid, the model card) parses options here.

    from lt_registry.config import parse_args
    args = parse_args(["--config", "recipes/configs/cifar10_lt_r100.yaml", "--epochs", "16"])
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import yaml

from ._registry import list_losses, list_mixers, list_samplers
from .mixers.unimix import DEFAULT_UNIMIX_PRESET, UNIMIX_PRESETS
from .paths import PATH_OPTIONS, same_path

__all__ = ["RunError", "user_input_errors", "read_yaml_mapping", "build_parser", "parse_args", "parse_kv",
           "TRAIN_ARGS_FILE", "RESULT_NEUTRAL_OPTIONS", "changed_options"]

#: every option of a run, written by the recipe and read back by ``--resume``, the grid and the model card
TRAIN_ARGS_FILE = "train_args.yaml"


#: options that do not change a run's final weights: a resume or a finished grid cell may differ in these. Data
#: loading workers are among them because augmentation is seeded per sample (lt_registry.data.seeding).
RESULT_NEUTRAL_OPTIONS = frozenset({
    "output", "experiment", "resume", "resume_override", "config", "workers", "no_progress", "eval_interval",
    "eval_metric", "log_with", "checkpoint_keep", "checkpoint_interval_steps", "push_to_hub", "hub_model_id",
    "hub_private"})


def changed_options(saved: Dict[str, Any], now: Dict[str, Any]) -> List[str]:
    """Result-affecting options whose value in ``now`` differs from ``saved`` (a run's train_args.yaml), as
    ``"lr: 0.1 -> 0.05"``; options missing from ``saved`` (added to the recipe later) are not compared, nor the UniMix
    preset of a run that does not use UniMix. Path options compare the files they name: the same dataset reached
    through another path (``data/cifar10`` linked to ``/mnt/cifar10``) is no change."""
    diffs = []
    uses_preset = "unimix" in (saved.get("mix"), now.get("mix"))
    for k, b in sorted(now.items()):
        if k in RESULT_NEUTRAL_OPTIONS or k not in saved or (k == "preset" and not uses_preset):
            continue
        a = saved[k]
        if k in PATH_OPTIONS:
            same = same_path(a, b)
        elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            same = float(a) == float(b)
        elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            same = list(a) == list(b)
        else:
            same = a == b
        if not same:
            diffs.append(f"{k}: {a!r} -> {b!r}")
    return diffs


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


# ---- the training parser -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The recipe's options (timm names where they exist). A new parser per call, so a --config applied by
    parse_args never leaks into a later parse in the same process."""
    parser = argparse.ArgumentParser(description="lt_registry training recipe (timm argument names where they exist)",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-c", "--config", default="", type=str, metavar="FILE", help="YAML config (flags override it)")
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default="digits_lt", help="registered dataset (lt_registry.data.list_datasets())")
    g.add_argument("--data-dir", default=None, help="dataset folder (CIFAR python folder, .npz files, image folder, "
                                                    "list files + image root); Hub download when absent for CIFAR")
    g.add_argument("--imb-factor", type=float, default=None, help="training imbalance rho = n_max / n_min")
    g.add_argument("--test-imb-factor", type=float, default=None, help="imbalanced test set rho' (docs/method.md §2)")
    g.add_argument("--train-split", default="train", help="own data: training split (folder name / dataset split)")
    g.add_argument("--val-split", default=None,
                   help="own data: validation split (default: 'val' or 'validation' when present, else a hold-out)")
    g.add_argument("--test-split", default=None, help="own data: test split (default: 'test' when present)")
    g.add_argument("--val-fraction", type=float, default=None,
                   help="own data without a validation split: stratified hold-out share of each class (builder "
                        "default 0.1; docs/method.md §4.3)")
    g.add_argument("--train-list", default=None, help="--dataset csv: 'path,label' file of the training images")
    g.add_argument("--val-list", default=None, help="--dataset csv: validation list")
    g.add_argument("--test-list", default=None, help="--dataset csv: test list")
    g.add_argument("--input-key", default=None, help="--dataset hfds/...: image column (default: the Image feature)")
    g.add_argument("--target-key", default=None, help="--dataset hfds/...: label column (default: the ClassLabel)")
    g.add_argument("--prior-smoothing", type=float, default=0.0,
                   help="pseudo-count added to every class's training count (allows classes with no training image)")
    g.add_argument("--sampler", default="random", help=f"training sampler: {', '.join(list_samplers())}")
    g.add_argument("--drs-epoch", type=int, default=None, help="with --sampler drs: epoch of the switch")
    g.add_argument("-j", "--workers", type=int, default=2, help="data loading workers per process")
    g.add_argument("--fast-path", default="auto", choices=["auto", "on", "off"],
                   help="keep the uint8 training set on the device and augment there in batch (auto: on GPU "
                        "for in-memory datasets such as CIFAR)")
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="resnet32_cifar", help="timm model name (our CIFAR ResNets or any timm model)")
    g.add_argument("--head", default="auto", choices=["auto", "linear", "cosine"],
                   help="classifier head; auto = cosine for LDAM, linear otherwise")
    g.add_argument("--num-classes", type=int, default=None, help="checked against the dataset when given")
    g.add_argument("--model-kwargs", nargs="*", default=[], metavar="K=V", help="extra timm.create_model kwargs")
    g.add_argument("--pretrained", action="store_true", help="start from the model's pretrained timm weights "
                                                              "(the classifier is reset to the dataset's classes)")
    g.add_argument("--pretrained-path", default=None, metavar="FILE",
                   help="use this local file as the pretrained weights (timm's pretrained_cfg_overlay file=..., with "
                        "the head adapted); implies --pretrained; the offline way to fine-tune")
    g.add_argument("--initial-checkpoint", default=None, metavar="FILE",
                   help="load these weights after building the model (a .safetensors/.pth state dict or a run "
                        "folder); classifier weights of another class count are skipped")
    g.add_argument("--drop", type=float, default=None, help="dropout rate before the classifier (timm drop_rate)")
    g.add_argument("--drop-path", type=float, default=None, help="stochastic depth rate (timm drop_path_rate)")
    g.add_argument("--grad-checkpointing", action="store_true", help="gradient checkpointing (timm models that have it)")
    g.add_argument("--sync-bn", action="store_true", help="synchronised BatchNorm across processes")
    g = parser.add_argument_group("input and augmentation (timm data config; own data and timm models)")
    g.add_argument("--img-size", type=int, default=None, help="square input size (default: the model's)")
    g.add_argument("--input-size", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                   help="input size, e.g. 3 224 224 (overrides --img-size)")
    g.add_argument("--crop-pct", type=float, default=None, help="evaluation centre-crop fraction")
    g.add_argument("--mean", type=float, nargs="+", default=None, metavar="MEAN", help="normalisation mean")
    g.add_argument("--std", type=float, nargs="+", default=None, metavar="STD", help="normalisation std")
    g.add_argument("--interpolation", default="", help="resize interpolation (default: the model's)")
    g.add_argument("--scale", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="random-resized-crop scale range (timm default 0.08 1)")
    g.add_argument("--ratio", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="random-resized-crop aspect ratio range (timm default 3/4 4/3)")
    g.add_argument("--hflip", type=float, default=0.5, help="horizontal flip probability")
    g.add_argument("--color-jitter", type=float, default=0.4, help="colour jitter strength")
    g.add_argument("--aa", default=None, help="AutoAugment policy, e.g. rand-m9-mstd0.5 (timm)")
    g.add_argument("--reprob", type=float, default=0.0, help="random erasing probability")
    g.add_argument("--smoothing", type=float, default=0.0,
                   help="label smoothing (timm's): the target t becomes (1 - eps) t + eps / C, mixed targets included")
    g = parser.add_argument_group("method")
    g.add_argument("--mix", default="none", help=f"mixer: {', '.join(list_mixers())}")
    g.add_argument("--loss", default="ce", help=f"loss: {', '.join(list_losses())}")
    g.add_argument("--preset", default=DEFAULT_UNIMIX_PRESET, choices=list(UNIMIX_PRESETS),
                   help="UniMix preset (docs/method.md §1.3): official (the released code's settings; the one that "
                        "reproduces the paper's gain in our 200-epoch runs) or paper (the settings of the paper's text)")
    g.add_argument("--mix-alpha", type=float, default=None, help="Beta concentration (mixer default if unset)")
    g.add_argument("--mix-tau", type=float, default=None, help="UniMix partner exponent, paper convention")
    g.add_argument("--mix-off-epoch", type=int, default=None,
                   help="epoch (0-indexed) from which mixing stops (UniMix 'paper': 60%% of --epochs)")
    g.add_argument("--mixer-kwargs", nargs="*", default=[], metavar="K=V", help="extra mixer options")
    g.add_argument("--loss-kwargs", nargs="*", default=[], metavar="K=V", help="extra loss options")
    g.add_argument("--drw", action="store_true", help="deferred re-weighting at 80%% of --epochs (160 of 200)")
    g.add_argument("--drw-epoch", type=int, default=None, help="deferred re-weighting from this epoch (0-indexed)")
    g.add_argument("--drw-beta", type=float, default=0.9999)
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=20)
    g.add_argument("-b", "--batch-size", type=int, default=64, help="per-process batch size (configs: 128)")
    g.add_argument("--opt", default="sgd", help="timm optimizer name: sgd (Nesterov), momentum (classical), adamw, ...")
    g.add_argument("--lr", type=float, default=0.1)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=2e-4)
    g.add_argument("--opt-eps", type=float, default=None, help="optimizer epsilon (adaptive optimizers)")
    g.add_argument("--opt-betas", type=float, nargs="+", default=None, help="optimizer betas")
    g.add_argument("--opt-kwargs", nargs="*", default=[], metavar="K=V", help="extra optimizer options")
    g.add_argument("--layer-decay", type=float, default=None, help="layer-wise LR decay (timm models that group layers)")
    g.add_argument("--clip-grad", type=float, default=None, help="gradient clipping threshold (off when unset)")
    g.add_argument("--clip-mode", default="norm", choices=["norm", "value", "agc"], help="gradient clipping mode")
    g.add_argument("--grad-accum-steps", type=int, default=1, help="batches accumulated per optimizer step")
    g.add_argument("--model-ema", action="store_true", help="keep an exponential moving average of the weights "
                                                            "(timm ModelEmaV3); evaluated and saved as ema/")
    g.add_argument("--model-ema-decay", type=float, default=0.9998)
    g.add_argument("--sched", default="multistep",
                   help="LR schedule: multistep (the paper's: warmup then x decay-rate at the milestones), or timm's "
                        "cosine, step, poly, tanh (plateau is refused: its metric-driven state does not resume)")
    g.add_argument("--min-lr", type=float, default=0.0, help="LR floor of cosine/poly/tanh schedules")
    g.add_argument("--warmup-lr", type=float, default=None,
                   help="LR at the start of warmup (default: lr / warmup-epochs, the paper's linear warmup)")
    g.add_argument("--decay-epochs", type=float, default=None, help="--sched step: epochs between decays")
    g.add_argument("--wd-norm-bias", default=False, action=argparse.BooleanOptionalAction,
                   help="weight decay on normalisation and bias parameters too, as plain torch SGD and the paper's "
                        "released code do (default: off, timm's create_optimizer_v2 convention)")
    g.add_argument("--warmup-epochs", type=int, default=None, help="linear warmup epochs (default 5, at most --epochs / 5)")
    g.add_argument("--decay-milestones", type=int, nargs="*", default=None, help="0-indexed epochs of LR decay")
    g.add_argument("--decay-rate", type=float, default=0.01)
    g.add_argument("--mixed-precision", default=None, choices=["no", "fp16", "bf16"],
                   help="overrides accelerate's launch setting")
    g.add_argument("--channels-last", default=None, action=argparse.BooleanOptionalAction,
                   help="channels-last memory format (default: on with the fast path)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g = parser.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--output", default="output/train", help="parent folder of run folders")
    g.add_argument("--experiment", default="", help="run folder name (default: time-dataset-mix-loss)")
    g.add_argument("--resume", default="", help="run folder to continue (its train_args.yaml is the base config)")
    g.add_argument("--eval-interval", type=int, default=10,
                   help="epochs between validation evaluations (0: last epoch only); the test split is read once, "
                        "after training")
    g.add_argument("--eval-metric", default="top1",
                   help="validation metric that picks the best checkpoint (best/): top1, ece, nll, brier, ...; "
                        "lower-is-better metrics are minimised")
    g.add_argument("--checkpoint-keep", type=int, default=1)
    g.add_argument("--checkpoint-interval-steps", type=int, default=0, metavar="N",
                   help="also checkpoint every N batches within an epoch (long epochs); a resume continues at the "
                        "next batch, exactly (0: at epoch ends only)")
    g.add_argument("--resume-override", action="store_true",
                   help="with --resume: accept options that differ from the run's own (another seed, batch size, "
                        "mixer, ...); without it such a resume is refused")
    g.add_argument("--log-with", default=None, help="accelerate tracker(s): tensorboard, wandb, ... or 'all'")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--push-to-hub", action="store_true", help="push the finished run folder to the Hub")
    g.add_argument("--hub-model-id", default=None, help="Hub repo id for --push-to-hub")
    g.add_argument("--hub-private", action="store_true")
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """timm's two-stage parse: YAML defaults first, explicit flags on top. ``--resume`` reads the run's
    own train_args.yaml as the config."""
    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("-c", "--config", default="")
    known, _ = pre.parse_known_args(argv)
    parser = build_parser()
    defaults = vars(parser.parse_args([]))
    resume = _peek(argv, "--resume")
    cfg_files = [Path(resume) / TRAIN_ARGS_FILE] if resume else []
    if known.config:
        cfg_files.append(Path(known.config))
    for f in cfg_files:
        cfg = read_yaml_mapping(f, "config file", "option: value", RunError)
        unknown = sorted(set(k.replace("-", "_") for k in cfg) - set(defaults))
        if unknown:
            raise RunError(f"config file {f} has unknown options {unknown}; see `recipes/train.py --help`")
        parser.set_defaults(**{k.replace("-", "_"): v for k, v in cfg.items()})
    args = parser.parse_args(argv)
    if resume:
        args.resume = resume
    return args


def _peek(argv: List[str], flag: str) -> str:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return ""


def parse_kv(pairs: List[str], what: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for p in pairs or []:
        if "=" not in p:
            raise RunError(f"{what} takes key=value pairs, got {p!r}")
        k, v = p.split("=", 1)
        out[k.replace("-", "_")] = yaml.safe_load(v)
    return out
