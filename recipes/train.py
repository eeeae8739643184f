#!/usr/bin/env python
"""Train, evaluate and report a long-tailed classifier: one flat script for CPU, one GPU and many GPUs.

    accelerate launch recipes/train.py --mix unimix --loss bayias
    accelerate launch recipes/train.py --config recipes/configs/cifar10_lt_r100.yaml --data-dir ../shared/data/cifar10-jpeg75
    accelerate launch --multi_gpu --num_processes 2 recipes/train.py --mix unimix --loss bayias
    accelerate launch recipes/train.py --resume output/train/<run>

Without ``--config`` the defaults are a quick offline demo: the embedded ``digits_lt`` set (scikit-learn's
bundled 8x8 digits, upsampled to 32x32 and made long-tailed, no download), ResNet-32 for CIFAR, 20 epochs.
The YAML configs in ``recipes/configs/`` hold the paper's protocol (SPEC 5). Flags given on the command
line override the config file. Schedule epochs not given explicitly scale with ``--epochs`` from the
200-epoch protocol: LR decays at 80% and 90%, DRW/DRS at 80%, UniMix ('paper' preset) stops at 60%.

The run folder (DESIGN.md): ``train_args.yaml``, ``config.json`` + ``model.safetensors`` (timm layout),
``metrics.json`` (final-epoch numbers and a per-epoch log), ``calibration/`` (reliability diagram and its
per-bin table), ``confusion.png``, ``README.md`` (model card) and ``checkpoints/`` (resume state).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml

import lt_registry
from lt_registry import (ClassPrior, DeferredReweighting, create_loss, create_mixer, create_sampler, is_loss,
                         is_mixer, is_sampler, list_losses, list_mixers, list_samplers)
from lt_registry.hub import HubError
from lt_registry.run import (RunError, build_model, check_model_classes, describe_versions, finalize_run,
                             read_yaml_mapping, resolve_schedule, user_input_errors, peak_memory)

# ---- arguments -----------------------------------------------------------------------------------------
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
    g.add_argument("--test-imb-factor", type=float, default=None, help="imbalanced test set rho' (SPEC 2)")
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
    g = parser.add_argument_group("method")
    g.add_argument("--mix", default="none", help=f"mixer: {', '.join(list_mixers())}")
    g.add_argument("--loss", default="ce", help=f"loss: {', '.join(list_losses())}")
    g.add_argument("--preset", default="paper", choices=["paper", "official"], help="UniMix preset (SPEC 1.3)")
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
    g.add_argument("--opt", default="sgd")
    g.add_argument("--lr", type=float, default=0.1)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=2e-4)
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
    g.add_argument("--eval-interval", type=int, default=10, help="epochs between monitoring evaluations (0: last only)")
    g.add_argument("--checkpoint-keep", type=int, default=1)
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
    cfg_files = [Path(resume) / "train_args.yaml"] if resume else []
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


def _kv(pairs: List[str], what: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for p in pairs or []:
        if "=" not in p:
            raise RunError(f"{what} takes key=value pairs, got {p!r}")
        k, v = p.split("=", 1)
        out[k.replace("-", "_")] = yaml.safe_load(v)
    return out


# ---- the training function ----------------------------------------------------------------------------
def training_function(args: argparse.Namespace) -> int:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from torch.utils.data import DataLoader

    from lt_registry.data import build_dataset, is_dataset, list_datasets
    from lt_registry.data.device_loader import DeviceTensorLoader, fits_on_device
    from lt_registry.engine import (CheckpointManager, NonFiniteLossError, TrainState, evaluate, spec_lr_scheduler,
                                    train_one_epoch)

    # validate names before anything expensive
    for kind, name, ok, avail in (("dataset", args.dataset, is_dataset, list_datasets),
                                  ("mixer", args.mix, is_mixer, list_mixers), ("loss", args.loss, is_loss, list_losses),
                                  ("sampler", args.sampler, is_sampler, list_samplers)):
        if not ok(name):
            raise RunError(f"unknown {kind} {name!r}; available: {', '.join(avail())}")

    if args.push_to_hub:  # fail before training, not after it
        if not args.hub_model_id:
            raise RunError("--push-to-hub needs --hub-model-id USER/NAME")
        from lt_registry.hub import check_push_args
        check_push_args(args.hub_model_id)

    run_dir = Path(args.resume) if args.resume else Path(args.output) / (args.experiment or "-".join(
        [time.strftime("%Y%m%d-%H%M%S"), args.dataset, args.mix, args.loss]))
    # several processes on a machine without an accelerator: accelerate uses gloo only when told cpu=True
    on_cpu_only = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()
    accelerator = Accelerator(cpu=on_cpu_only, mixed_precision=args.mixed_precision, log_with=args.log_with,
                              project_config=ProjectConfiguration(project_dir=str(run_dir)))
    say = accelerator.print
    set_seed(args.seed)

    with user_input_errors():  # bad data, names or options: one line, no traceback
        ds = build_dataset(args.dataset, data_dir=args.data_dir, imb_factor=args.imb_factor,
                           test_imb_factor=args.test_imb_factor)
        prior = ClassPrior(ds.class_counts)
        C = ds.num_classes
        if args.num_classes is not None and args.num_classes != C:
            raise RunError(f"--num-classes {args.num_classes} disagrees with dataset {args.dataset!r}, which has {C} "
                           "classes; drop the flag or pick the matching dataset")
        sched = resolve_schedule(args)
        head = ("cosine" if args.loss == "ldam" else "linear") if args.head == "auto" else args.head
        model = build_model(args.model, C, head=head, **_kv(args.model_kwargs, "--model-kwargs"))
        check_model_classes(model, C, args.model)

        mixer_opts = _kv(args.mixer_kwargs, "--mixer-kwargs")
        if args.mix_alpha is not None:
            mixer_opts["alpha"] = args.mix_alpha
        if args.mix == "unimix":
            mixer_opts.setdefault("preset", args.preset)
            mixer_opts.setdefault("dataset", args.dataset)
            if args.mix_tau is not None:
                mixer_opts["tau"] = args.mix_tau
        mixer = create_mixer(args.mix, class_counts=prior, **mixer_opts)
        loss_fn = create_loss(args.loss, class_counts=prior, **_kv(args.loss_kwargs, "--loss-kwargs"))
        drw = DeferredReweighting(prior, start_epoch=sched["drw_epoch"], beta=args.drw_beta) \
            if sched["drw_epoch"] is not None else None

        train_labels = torch.as_tensor(ds.train.labels)
        sampler_opts: Dict[str, Any] = {"seed": args.seed}
        if args.sampler == "progressive":
            sampler_opts["total_epochs"] = args.epochs
        if args.sampler == "drs":
            sampler_opts["start_epoch"] = sched["drs_epoch"]
        sampler = create_sampler(args.sampler, labels=train_labels, **sampler_opts)
    partner_sampler = None
    if args.mix != "none" and getattr(mixer, "partner", None) == "dataset":
        partner_sampler = create_sampler("prior_power", labels=train_labels, tau=mixer.tau, seed=args.seed + 1)
    dev = accelerator.device
    fast = args.fast_path == "on" or (args.fast_path == "auto" and dev.type == "cuda" and fits_on_device(ds.train))
    if fast and not (fits_on_device(ds.train) and fits_on_device(ds.test)):
        raise RunError(f"--fast-path on needs an in-memory dataset (CIFAR-style arrays); {args.dataset} is not")
    channels_last = fast if args.channels_last is None else args.channels_last
    generators = {"mix": torch.Generator(device=dev).manual_seed(args.seed * 1000 + accelerator.process_index)}
    eval_bs = max(args.batch_size, 256)
    if fast:
        def device_loader(data, smp, name):
            generators[name] = torch.Generator(device=dev).manual_seed(args.seed * 1000 + 7 + len(generators))
            return DeviceTensorLoader(data, args.batch_size, dev, sampler=smp, generator=generators[name],
                                      num_processes=accelerator.num_processes,
                                      process_index=accelerator.process_index, channels_last=channels_last)
        train_loader = device_loader(ds.train, sampler, "aug")
        partner_loader = device_loader(ds.train, partner_sampler, "partner_aug") if partner_sampler else None
        test_loader = DeviceTensorLoader(ds.test, eval_bs, dev, channels_last=channels_last, replicated=True)
    else:
        loader_kw = dict(batch_size=args.batch_size, num_workers=args.workers, pin_memory=dev.type == "cuda",
                         persistent_workers=args.workers > 0, drop_last=False)
        train_loader = DataLoader(ds.train, sampler=sampler, **loader_kw)
        partner_loader = DataLoader(ds.train, sampler=partner_sampler, **loader_kw) if partner_sampler else None
        test_loader = DataLoader(ds.test, batch_size=eval_bs, shuffle=False, num_workers=args.workers,
                                 persistent_workers=args.workers > 0)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    from timm.optim import create_optimizer_v2
    optimizer = create_optimizer_v2(model, args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum,
                                    filter_bias_and_bn=not args.wd_norm_bias)
    scheduler = spec_lr_scheduler(optimizer, epochs=args.epochs, lr=args.lr, warmup_epochs=sched["warmup_epochs"],
                                  milestones=tuple(sched["decay_milestones"]), decay_rate=args.decay_rate)
    model, optimizer = accelerator.prepare(model, optimizer)
    if not fast:
        train_loader, test_loader = accelerator.prepare(train_loader, test_loader)
        if partner_loader is not None:
            partner_loader = accelerator.prepare(partner_loader)
    if args.compile:
        model = torch.compile(model)
    loss_fn = loss_fn.to(dev)  # no parameters: nothing for DDP to wrap
    state = TrainState(generators=generators)
    accelerator.register_for_checkpointing(state)
    ckpt = CheckpointManager(run_dir, accelerator, keep=args.checkpoint_keep)

    if args.resume:
        if ckpt.load_latest() is None:
            raise RunError(f"--resume {run_dir}: no complete checkpoint in {run_dir / 'checkpoints'}")
        say(f"resumed {run_dir} at epoch {state.epoch}")
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved = {k: v for k, v in vars(args).items() if k not in ("resume", "config")}
        (run_dir / "train_args.yaml").write_text(yaml.safe_dump(saved, sort_keys=True))
    if args.log_with:
        accelerator.init_trackers(run_dir.name, config={k: v for k, v in vars(args).items()
                                                        if isinstance(v, (int, float, str, bool))})
    say(f"run folder: {run_dir}\n{args.dataset}: {len(ds.train)} train / {len(ds.test)} test images, {C} classes, "
        f"imbalance {prior.imbalance_factor:.1f}; model {args.model} ({head} head); mixer {mixer!r}; loss {args.loss}; "
        f"sampler {args.sampler}; {accelerator.num_processes} process(es) on {accelerator.device}"
        + ("; fast path (data on device)" if fast else "") + (f"; {accelerator.mixed_precision}" if
                                                               accelerator.mixed_precision != "no" else ""))
    if args.mix == "unimix":
        from lt_registry.mixers.unimix import UNIMIX_PRESETS
        preset_batch = UNIMIX_PRESETS[args.preset].batch_size
        if args.batch_size * accelerator.num_processes != preset_batch:
            say(f"note: the UniMix '{args.preset}' preset was run with batch {preset_batch} (SPEC 1.3); this run uses "
                f"{args.batch_size * accelerator.num_processes} (--batch-size {args.batch_size} x "
                f"{accelerator.num_processes} process(es)); pass --batch-size to match it")

    progress = not args.no_progress and accelerator.is_local_main_process
    t_start, elapsed_before = time.perf_counter(), state.elapsed_s
    try:
        for epoch in range(state.epoch, args.epochs):
            scheduler.step(epoch)
            train_loader.set_epoch(epoch)
            if drw is not None:
                drw.step(loss_fn, epoch)
            mixing = args.mix != "none" and (sched["mix_off_epoch"] is None or epoch < sched["mix_off_epoch"])
            stats = train_one_epoch(model, train_loader, loss_fn, optimizer, accelerator, epoch=epoch,
                                    mixer=mixer if mixing else None,
                                    partner_loader=partner_loader if mixing else None,
                                    generator=generators["mix"], progress=progress)
            row: Dict[str, Any] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "mixing": mixing, **stats}
            last = epoch == args.epochs - 1
            if not last and args.eval_interval and (epoch + 1) % args.eval_interval == 0:
                logits, labels = evaluate(model, test_loader, accelerator)
                row["test_top1_monitor"] = float((logits.argmax(1) == labels).float().mean())
            state.epoch = epoch + 1
            state.history.append(row)
            state.elapsed_s = elapsed_before + time.perf_counter() - t_start
            ckpt.save(epoch)
            accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=epoch)
            say(f"epoch {epoch + 1}/{args.epochs}  loss {row['train_loss']:.4f}  lr {row['lr']:.4g}"
                + (f"  test top1 {row['test_top1_monitor'] * 100:.2f}% (monitor only)" if "test_top1_monitor" in row else "")
                + f"  {row['epoch_time_s']:.1f}s")
    except NonFiniteLossError as e:
        kept = ckpt.latest()
        raise RunError(f"{e} Last good checkpoint: {kept if kept else 'none (failed in the first epoch)'}; "
                       f"resume with --resume {run_dir} after fixing the cause.") from None

    logits, labels = evaluate(model, test_loader, accelerator)
    args.logit_scale = getattr(loss_fn, "scale", 1.0) if head == "cosine" else 1.0  # LDAM scores s * cos
    if accelerator.is_main_process:
        finalize_run(run_dir, accelerator.unwrap_model(model, keep_torch_compile=False), logits, labels, ds, prior, args, state.history,
                     mixer=mixer, versions=describe_versions(),
                     resources={"wall_time_s": round(elapsed_before + time.perf_counter() - t_start, 2),
                                "wall_time_this_process_s": round(time.perf_counter() - t_start, 2), "device": str(dev),
                                "num_processes": accelerator.num_processes, "fast_path": fast,
                                "mixed_precision": accelerator.mixed_precision, "resumed": bool(args.resume),
                                **peak_memory(dev)})
        say(f"final (epoch {args.epochs}): " + json.dumps({k: round(v, 2) for k, v in
                                                            json.loads((run_dir / "metrics.json").read_text())["final"].items()
                                                            if isinstance(v, float)}))
    accelerator.wait_for_everyone()
    if args.push_to_hub and accelerator.is_main_process:
        from lt_registry.hub import push_to_hub
        if not args.hub_model_id:
            raise RunError("--push-to-hub needs --hub-model-id USER/NAME")
        url = push_to_hub(run_dir, args.hub_model_id, private=args.hub_private)
        say(f"pushed to {url}")
    accelerator.end_training()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = parse_args(argv)
        return training_function(args)
    except (RunError, HubError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
