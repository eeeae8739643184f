#!/usr/bin/env python
"""Train, evaluate and report a long-tailed classifier: one flat script for CPU, one GPU and many GPUs.

    accelerate launch recipes/train.py --mix unimix --loss bayias
    accelerate launch recipes/train.py --config recipes/configs/cifar10_lt_r100.yaml --data-dir data/cifar10-jpeg75
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
import copy
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
from lt_registry.provenance import describe_versions, peak_memory, run_segment
from lt_registry.run import finalize_run, write_train_args
from lt_registry.schedule import build_lr_scheduler, resolve_schedule

# ---- options handed to the dataset builders ------------------------------------------------------------------
#: recipe option -> builder keyword; passed only when set, and refused clearly by a builder that lacks it
_DATASET_OPTIONS = {"data_dir": "data_dir", "imb_factor": "imb_factor", "test_imb_factor": "test_imb_factor",
                    "train_split": "train_split", "val_split": "val_split", "test_split": "test_split",
                    "val_fraction": "val_fraction", "train_list": "train_list", "val_list": "val_list",
                    "test_list": "test_list", "input_key": "input_key", "target_key": "target_key",
                    "prior_smoothing": "prior_smoothing"}
_OPTION_DEFAULTS = {"train_split": "train", "prior_smoothing": 0.0}


def dataset_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """The dataset options the user set (unset and default ones omitted, so a builder that does not take an
    option only hears of it when the user asked for it)."""
    out = {}
    for opt, kw in _DATASET_OPTIONS.items():
        v = getattr(args, opt, None)
        if v is None or (opt in _OPTION_DEFAULTS and v == _OPTION_DEFAULTS[opt]):
            continue
        out[kw] = v
    return out


def build_run_dataset(args: argparse.Namespace) -> Any:
    from lt_registry.data import build_dataset

    kw = dataset_kwargs(args)
    try:
        return build_dataset(args.dataset, **kw)
    except TypeError as e:
        bad = next((k for k in kw if f"'{k}'" in str(e)), None)
        if bad is None:
            raise
        flag = "--" + next(o for o, k in _DATASET_OPTIONS.items() if k == bad).replace("_", "-")
        raise RunError(f"dataset {args.dataset!r} does not take {flag}; it applies to own data (folder, csv, "
                       "hfds/...) or the datasets whose documentation names it") from None


def _lower_is_better(metric_key: str) -> bool:
    from lt_registry.metrics.table import metric
    return not metric(metric_key).higher_is_better


def _failed_samples(dataset: Any) -> List[str]:
    """Images a dataset could not decode during training (substituted, never fatal), if it tracks them."""
    for attr in ("failed_paths", "failed_indices"):
        fn = getattr(dataset, attr, None)
        if callable(fn):
            return [str(v) for v in fn()]
    return []


def check_resume_options(args: argparse.Namespace) -> None:
    """A resume continues the run its folder describes: options given on the command line that change the result
    (another seed, batch size, mixer, loss, dataset, ...) are refused, naming them, unless --resume-override."""
    from lt_registry.config import TRAIN_ARGS_FILE, changed_options, read_yaml_mapping

    saved = read_yaml_mapping(Path(args.resume) / TRAIN_ARGS_FILE, "the run's train arguments", "option: value")
    diffs = changed_options(saved, vars(args))
    if diffs and not args.resume_override:
        raise RunError(f"--resume {args.resume}: these options differ from the run's own and would change its result: "
                       f"{'; '.join(diffs)}. Drop them to continue the run as it was, or pass --resume-override to "
                       "continue with them anyway (recorded in train_args.yaml)")


# ---- the training function ----------------------------------------------------------------------------
def training_function(args: argparse.Namespace) -> int:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from torch.utils.data import DataLoader

    from lt_registry.data import is_dataset, list_datasets
    from lt_registry.data.device_loader import DeviceTensorLoader, fits_on_device
    from lt_registry.data.pipeline import configure_transforms
    from lt_registry.data.seeding import SeededDataset, SeededSampler
    from lt_registry.engine import (CheckpointManager, NonFiniteLossError, TrainState, build_optimizer, evaluate,
                                    train_one_epoch)
    from lt_registry.metrics import report_metrics
    from lt_registry.models.factory import load_initial_checkpoint
    from lt_registry.run import lt_block_of_run, save_model_subfolder

    # validate names and cheap options before anything expensive
    for kind, name, ok, avail in (("dataset", args.dataset, is_dataset, list_datasets),
                                  ("mixer", args.mix, is_mixer, list_mixers), ("loss", args.loss, is_loss, list_losses),
                                  ("sampler", args.sampler, is_sampler, list_samplers)):
        if not ok(name):
            more = " (or hfds/<Hub id or local path> for a Hugging Face dataset)" if kind == "dataset" else ""
            raise RunError(f"unknown {kind} {name!r}; available: {', '.join(avail())}{more}")
    with user_input_errors():
        lower_is_better = _lower_is_better(args.eval_metric)
    if args.grad_accum_steps < 1:
        raise RunError(f"--grad-accum-steps must be >= 1, got {args.grad_accum_steps}")
    parse_kv(args.opt_kwargs, "--opt-kwargs")  # malformed pairs fail here, before anything is built

    if args.resume:
        check_resume_options(args)
    if args.checkpoint_interval_steps < 0:
        raise RunError(f"--checkpoint-interval-steps must be >= 0, got {args.checkpoint_interval_steps}")

    if args.push_to_hub:  # fail before training, not after it
        if not args.hub_model_id:
            raise RunError("--push-to-hub needs --hub-model-id USER/NAME")
        from lt_registry.hub import check_push_args
        check_push_args(args.hub_model_id)

    run_dir = Path(args.resume) if args.resume else Path(args.output) / (args.experiment or "-".join(
        [time.strftime("%Y%m%d-%H%M%S"), args.dataset.replace("/", "_"), args.mix, args.loss]))
    # several processes on a machine without an accelerator: accelerate uses gloo only when told cpu=True
    on_cpu_only = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()
    accelerator = Accelerator(cpu=on_cpu_only, mixed_precision=args.mixed_precision, log_with=args.log_with,
                              project_config=ProjectConfiguration(project_dir=str(run_dir)))
    say = accelerator.print
    set_seed(args.seed)

    with user_input_errors():  # bad data, names or options: one line, no traceback
        ds = build_run_dataset(args)
        prior = ClassPrior(ds.class_counts, smoothing=args.prior_smoothing)
        C = ds.num_classes
        if args.num_classes is not None and args.num_classes != C:
            raise RunError(f"--num-classes {args.num_classes} disagrees with dataset {args.dataset!r}, which has {C} "
                           "classes; drop the flag or pick the matching dataset")
        sched = resolve_schedule(args)
        head = ("cosine" if args.loss == "ldam" else "linear") if args.head == "auto" else args.head
        model = build_model(args.model, C, head=head, pretrained=args.pretrained, pretrained_path=args.pretrained_path,
                            drop_rate=args.drop, drop_path_rate=args.drop_path,
                            **parse_kv(args.model_kwargs, "--model-kwargs"))
        check_model_classes(model, C, args.model)
        if args.initial_checkpoint and not args.resume:
            info = load_initial_checkpoint(model, args.initial_checkpoint)
            say(f"initial checkpoint {args.initial_checkpoint}: {info['loaded']} tensors loaded"
                + (f", {len(info['skipped'])} skipped for their shape ({', '.join(info['skipped'][:4])})"
                   if info["skipped"] else ""))
        if args.grad_checkpointing:
            if not hasattr(model, "set_grad_checkpointing"):
                raise RunError(f"model {args.model!r} has no gradient checkpointing (timm's set_grad_checkpointing)")
            model.set_grad_checkpointing(True)
        data_config = configure_transforms(args, model, ds)

        mixer_opts = parse_kv(args.mixer_kwargs, "--mixer-kwargs")
        if args.mix_alpha is not None:
            mixer_opts["alpha"] = args.mix_alpha
        if args.mix == "unimix":
            mixer_opts.setdefault("preset", args.preset)
            mixer_opts.setdefault("dataset", args.dataset)
            if args.mix_tau is not None:
                mixer_opts["tau"] = args.mix_tau
        mixer = create_mixer(args.mix, class_counts=prior, **mixer_opts)
        loss_opts = parse_kv(args.loss_kwargs, "--loss-kwargs")
        if args.smoothing:
            loss_opts.setdefault("label_smoothing", args.smoothing)
        loss_fn = create_loss(args.loss, class_counts=prior, **loss_opts)
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
    if args.sync_bn and accelerator.num_processes > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    dev = accelerator.device
    eval_sets = [d for d in (ds.val, ds.test) if d is not None]
    fast = args.fast_path == "on" or (args.fast_path == "auto" and dev.type == "cuda" and fits_on_device(ds.train))
    if fast and not (fits_on_device(ds.train) and all(fits_on_device(d) for d in eval_sets)):
        raise RunError(f"--fast-path on needs an in-memory dataset (CIFAR-style arrays); {args.dataset} is not")
    channels_last = fast if args.channels_last is None else args.channels_last
    generators = {"mix": torch.Generator(device=dev).manual_seed(args.seed * 1000 + accelerator.process_index)}
    eval_bs = max(args.batch_size, 256)

    def eval_loader(data):  # built when first needed: the test split is read once, after training
        if data is None:
            return None
        if fast:
            return DeviceTensorLoader(data, eval_bs, dev, channels_last=channels_last, replicated=True)
        return accelerator.prepare(DataLoader(data, batch_size=eval_bs, shuffle=False, num_workers=args.workers,
                                              persistent_workers=False))

    if fast:
        def device_loader(data, smp, name):
            generators[name] = torch.Generator(device=dev).manual_seed(args.seed * 1000 + 7 + len(generators))
            return DeviceTensorLoader(data, args.batch_size, dev, sampler=smp, generator=generators[name],
                                      num_processes=accelerator.num_processes,
                                      process_index=accelerator.process_index, channels_last=channels_last)
        train_loader = device_loader(ds.train, sampler, "aug")
        partner_loader = device_loader(ds.train, partner_sampler, "partner_aug") if partner_sampler else None
    else:
        # augmentation seeded per sample from (seed, epoch, position): the same in every worker, process and
        # resumed run (lt_registry/data/seeding.py); the loaders' own generator keeps worker start-up from
        # drawing on the global RNG that dropout uses
        loader_kw = dict(batch_size=args.batch_size, num_workers=args.workers, pin_memory=dev.type == "cuda",
                         persistent_workers=args.workers > 0, drop_last=False)
        train_loader = DataLoader(SeededDataset(ds.train, args.seed), sampler=SeededSampler(sampler, args.seed),
                                  generator=torch.Generator().manual_seed(args.seed), **loader_kw)
        partner_loader = DataLoader(SeededDataset(ds.train, args.seed + 1),
                                    sampler=SeededSampler(partner_sampler, args.seed + 1),
                                    generator=torch.Generator().manual_seed(args.seed + 1),
                                    **loader_kw) if partner_sampler else None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    optimizer = build_optimizer(model, args)
    with user_input_errors():
        scheduler = build_lr_scheduler(optimizer, args, sched)
    model, optimizer = accelerator.prepare(model, optimizer)
    if not fast:
        train_loader = accelerator.prepare(train_loader)
        if partner_loader is not None:
            partner_loader = accelerator.prepare(partner_loader)
    val_loader = eval_loader(ds.val)
    if args.compile:
        model = torch.compile(model)
    loss_fn = loss_fn.to(dev)  # no parameters: nothing for DDP to wrap
    ema = None
    if args.model_ema:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(accelerator.unwrap_model(model), decay=args.model_ema_decay)
        accelerator.register_for_checkpointing(ema)
    state = TrainState(generators=generators)
    accelerator.register_for_checkpointing(state)
    ckpt = CheckpointManager(run_dir, accelerator, keep=args.checkpoint_keep)

    resumed_from = None
    if args.resume:
        loaded = ckpt.load_latest()
        if loaded is None:
            raise RunError(f"--resume {run_dir}: no complete checkpoint in {run_dir / 'checkpoints'}")
        resumed_from = {"checkpoint": loaded.name, "epoch": state.epoch, "step": state.step}
        say(f"resumed {run_dir} from checkpoint {loaded.name}: epoch {state.epoch} (0-indexed), "
            + (f"batch {state.step} of it" if state.step else "at its start"))
    state.begin_segment(run_segment(dev, accelerator.num_processes, resumed_from))
    lt_block = lt_block_of_run(ds, prior, args, schedule=sched, mixer=mixer, versions=describe_versions(),
                               data_config=data_config)
    if accelerator.is_main_process:
        write_train_args(run_dir, args)
        val_meta = (ds.meta or {}).get("val")
        if isinstance(val_meta, dict) and ("paths" in val_meta or "indices" in val_meta):
            (run_dir / "val_split.json").write_text(json.dumps(val_meta, indent=1))
    if args.log_with:
        accelerator.init_trackers(run_dir.name, config={k: v for k, v in vars(args).items()
                                                        if isinstance(v, (int, float, str, bool))})
    n_val = len(ds.val) if ds.val is not None else 0
    n_test = len(ds.test) if ds.test is not None else 0
    say(f"run folder: {run_dir}\n{args.dataset}: {len(ds.train)} train / {n_val} val / {n_test} test images, {C} "
        f"classes, imbalance {prior.imbalance_factor:.1f}; input {data_config['input_size'][1]}x"
        f"{data_config['input_size'][2]}; model {args.model} ({head} head"
        + (", pretrained" if args.pretrained or args.pretrained_path else "") + f"); mixer {mixer!r}; loss {args.loss}; "
        f"sampler {args.sampler}; {accelerator.num_processes} process(es) on {accelerator.device}"
        + ("; fast path (data on device)" if fast else "") + (f"; {accelerator.mixed_precision}" if
                                                               accelerator.mixed_precision != "no" else ""))
    if ds.val is None:
        say("note: no validation split: nothing is monitored or selected during training (the test split is read "
            "once, at the end)")
    if args.mix == "unimix":
        preset_batch = UNIMIX_PRESETS[args.preset].batch_size
        if args.batch_size * accelerator.num_processes != preset_batch:
            say(f"note: the UniMix '{args.preset}' preset was run with batch {preset_batch} (docs/method.md §1.3); "
                f"this run uses "
                f"{args.batch_size * accelerator.num_processes} (--batch-size {args.batch_size} x "
                f"{accelerator.num_processes} process(es)); pass --batch-size to match it")

    scale = getattr(loss_fn, "scale", 1.0) if head == "cosine" else 1.0  # LDAM scores s * cos
    args.logit_scale = scale
    lt_block["logit_scale"] = float(scale)

    def score(logits, labels):
        return report_metrics(logits * scale, labels, prior)["final"]

    progress = not args.no_progress and accelerator.is_local_main_process
    t_start, elapsed_before = time.perf_counter(), state.elapsed_s
    first_epoch, first_step = state.epoch, state.step

    def checkpoint_mid_epoch(next_step: int, loss_sum: float, seen: float) -> None:
        state.step, state.epoch_loss_sum, state.epoch_seen = next_step, loss_sum, seen
        state.elapsed_s = elapsed_before + time.perf_counter() - t_start
        state.end_segment_here(time.perf_counter() - t_start)
        ckpt.save(state.epoch, step=next_step)

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
                                    generator=generators["mix"], progress=progress,
                                    accum_steps=args.grad_accum_steps, clip_grad=args.clip_grad,
                                    clip_mode=args.clip_mode, ema=ema, state=state,
                                    start_step=first_step if epoch == first_epoch else 0,
                                    checkpoint_every=args.checkpoint_interval_steps,
                                    on_checkpoint=checkpoint_mid_epoch)
            row: Dict[str, Any] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "mixing": mixing, **stats}
            last = epoch == args.epochs - 1
            if val_loader is not None and (last or (args.eval_interval and (epoch + 1) % args.eval_interval == 0)):
                val = score(*evaluate(model, val_loader, accelerator))
                row.update({f"val_{k}": val[k] for k in ("top1", "ece", "nll", "brier") if k in val})
                value = val.get(args.eval_metric)
                if value is not None and state.is_better(value, lower_is_better):
                    state.best_epoch, state.best_value = epoch, float(value)
                    if accelerator.is_main_process:
                        save_model_subfolder(accelerator.unwrap_model(model, keep_torch_compile=False),
                                             run_dir / "best", dict(lt_block, selected={
                                                 "on": "val", "metric": args.eval_metric, "value": float(value),
                                                 "epoch": epoch}), data_config)
                    accelerator.wait_for_everyone()
            state.epoch = epoch + 1
            state.step, state.epoch_loss_sum, state.epoch_seen = 0, 0.0, 0.0
            state.history.append(row)
            state.elapsed_s = elapsed_before + time.perf_counter() - t_start
            state.end_segment_here(time.perf_counter() - t_start)
            ckpt.save(epoch)
            accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=epoch)
            say(f"epoch {epoch + 1}/{args.epochs}  loss {row['train_loss']:.4f}  lr {row['lr']:.4g}"
                + (f"  val top1 {row['val_top1']:.2f}% ECE {row['val_ece']:.2f}%" if "val_top1" in row else "")
                + f"  {row['epoch_time_s']:.1f}s")
    except NonFiniteLossError as e:
        kept = ckpt.latest()
        raise RunError(f"{e} Last good checkpoint: {kept if kept else 'none (failed in the first epoch)'}; "
                       f"resume with --resume {run_dir} after fixing the cause.") from None

    # ---- after training: validation numbers of the final model, then the test split, read once ----------------
    state.end_segment_here(time.perf_counter() - t_start)
    extra: Dict[str, Any] = {"segments": state.segments}
    if state.resumes:
        extra["resumed_from"] = state.resumes
    final_model = accelerator.unwrap_model(model, keep_torch_compile=False)
    if val_loader is not None:
        extra["val"] = {k: v for k, v in score(*evaluate(model, val_loader, accelerator)).items()
                        if k != "per_class_accuracy"}
    test_loader = eval_loader(ds.test)
    report_loader, evaluated_on = (test_loader, "test") if test_loader is not None else (val_loader, "val")
    if report_loader is None:
        raise RunError(f"dataset {args.dataset!r} has neither a validation nor a test split: nothing to evaluate")
    logits, labels = evaluate(model, report_loader, accelerator)
    if state.best_epoch >= 0 and (run_dir / "best" / "model.safetensors").is_file():
        from safetensors.torch import load_file
        best_model = copy.deepcopy(final_model)
        best_model.load_state_dict(load_file(str(run_dir / "best" / "model.safetensors")))
        best = {"selected_on": "val", "metric": args.eval_metric, "value": state.best_value,
                "epoch": state.best_epoch, "folder": "best"}
        if test_loader is not None:
            best["test"] = {k: v for k, v in score(*evaluate(best_model.to(dev), test_loader, accelerator)).items()
                            if k != "per_class_accuracy"}
        extra["best"] = best
    if ema is not None:
        ema_model = ema.module
        extra["ema"] = {"decay": args.model_ema_decay, "folder": "ema",
                        evaluated_on: {k: v for k, v in score(*evaluate(ema_model, report_loader, accelerator)).items()
                                       if k != "per_class_accuracy"}}
    failed = _failed_samples(ds.train)
    extra["skipped_images"] = {"count": len(failed), "examples": failed[:20]}
    if accelerator.is_main_process:
        if ema is not None:
            save_model_subfolder(ema.module, run_dir / "ema", dict(lt_block, ema_decay=args.model_ema_decay), data_config)
        finalize_run(run_dir, final_model, logits, labels, ds, prior, args, state.history,
                     lt_block=lt_block, data_config=data_config, evaluated_on=evaluated_on, extra=extra,
                     resources={"wall_time_s": round(elapsed_before + time.perf_counter() - t_start, 2),
                                "wall_time_this_process_s": round(time.perf_counter() - t_start, 2), "device": str(dev),
                                "num_processes": accelerator.num_processes, "fast_path": fast,
                                "mixed_precision": accelerator.mixed_precision, "resumed": bool(args.resume),
                                **peak_memory(dev)})
        say(f"final (epoch {args.epochs}, {evaluated_on}): " + json.dumps(
            {k: round(v, 2) for k, v in json.loads((run_dir / "metrics.json").read_text())["final"].items()
             if isinstance(v, float)}))
        if failed:
            say(f"note: {len(failed)} training image(s) could not be decoded and were replaced by another image of "
                f"their class; listed in metrics.json (skipped_images)")
    accelerator.wait_for_everyone()
    if args.push_to_hub and accelerator.is_main_process:
        from lt_registry.hub import push_to_hub
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
