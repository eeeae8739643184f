#!/usr/bin/env python
"""Train, evaluate and report a long-tailed classifier: one flat script for CPU, one GPU and many GPUs.

    accelerate launch recipes/train.py --mix unimix --loss bayias
    accelerate launch recipes/train.py --config recipes/configs/cifar10_lt_r100.yaml --data-dir ../shared/data/cifar10-jpeg75
    accelerate launch --multi_gpu --num_processes 2 recipes/train.py --mix unimix --loss bayias
    accelerate launch recipes/train.py --resume output/train/<run>

Without ``--config`` the defaults are a quick offline demo: the embedded ``digits_lt`` set (scikit-learn's
bundled 8x8 digits, upsampled to 32x32 and made long-tailed, no download), ResNet-32 for CIFAR, 20 epochs.
The YAML configs in ``recipes/configs/`` hold the paper's protocol (docs/method.md §5). Flags given on the command
line override the config file. Schedule epochs not given explicitly scale with ``--epochs`` from the
200-epoch protocol: LR decays at 80% and 90%, DRW/DRS at 80%, UniMix ('paper' preset) stops at 60%.

The run folder (lt_registry/run.py): ``train_args.yaml``, ``config.json`` + ``model.safetensors`` (timm layout),
``metrics.json`` (final-epoch numbers and a per-epoch log), ``calibration/`` (reliability diagram and its
per-bin table), ``confusion.png``, ``README.md`` (model card) and ``checkpoints/`` (resume state).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from lt_registry import (UNIMIX_PRESETS, ClassPrior, DeferredReweighting, create_loss, create_mixer, create_sampler, is_loss,
                         is_mixer, is_sampler, list_losses, list_mixers, list_samplers)
from lt_registry.config import RunError, parse_args, parse_kv, user_input_errors
from lt_registry.hub import HubError
from lt_registry.models.factory import build_model, check_model_classes
from lt_registry.provenance import describe_versions, peak_memory
from lt_registry.run import finalize_run, write_train_args
from lt_registry.schedule import resolve_schedule, spec_lr_scheduler

# ---- the training function ----------------------------------------------------------------------------
def training_function(args: argparse.Namespace) -> int:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from torch.utils.data import DataLoader

    from lt_registry.data import build_dataset, is_dataset, list_datasets
    from lt_registry.data.device_loader import DeviceTensorLoader, fits_on_device
    from lt_registry.engine import (CheckpointManager, NonFiniteLossError, TrainState, build_optimizer, evaluate,
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
        model = build_model(args.model, C, head=head, **parse_kv(args.model_kwargs, "--model-kwargs"))
        check_model_classes(model, C, args.model)

        mixer_opts = parse_kv(args.mixer_kwargs, "--mixer-kwargs")
        if args.mix_alpha is not None:
            mixer_opts["alpha"] = args.mix_alpha
        if args.mix == "unimix":
            mixer_opts.setdefault("preset", args.preset)
            mixer_opts.setdefault("dataset", args.dataset)
            if args.mix_tau is not None:
                mixer_opts["tau"] = args.mix_tau
        mixer = create_mixer(args.mix, class_counts=prior, **mixer_opts)
        loss_fn = create_loss(args.loss, class_counts=prior, **parse_kv(args.loss_kwargs, "--loss-kwargs"))
        # the labels were checked where they entered (dataset build, ClassPrior, sampler): no per-step host sync
        loss_fn.validate_labels = False
        if hasattr(mixer, "validate_labels"):
            mixer.validate_labels = False
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

    optimizer = build_optimizer(model, args)
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
        write_train_args(run_dir, args)
    if args.log_with:
        accelerator.init_trackers(run_dir.name, config={k: v for k, v in vars(args).items()
                                                        if isinstance(v, (int, float, str, bool))})
    say(f"run folder: {run_dir}\n{args.dataset}: {len(ds.train)} train / {len(ds.test)} test images, {C} classes, "
        f"imbalance {prior.imbalance_factor:.1f}; model {args.model} ({head} head); mixer {mixer!r}; loss {args.loss}; "
        f"sampler {args.sampler}; {accelerator.num_processes} process(es) on {accelerator.device}"
        + ("; fast path (data on device)" if fast else "") + (f"; {accelerator.mixed_precision}" if
                                                               accelerator.mixed_precision != "no" else ""))
    if args.mix == "unimix":
        preset_batch = UNIMIX_PRESETS[args.preset].batch_size
        if args.batch_size * accelerator.num_processes != preset_batch:
            say(f"note: the UniMix '{args.preset}' preset was run with batch {preset_batch} (docs/method.md §1.3); "
                f"this run uses "
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
                     schedule=sched, mixer=mixer, versions=describe_versions(),
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
