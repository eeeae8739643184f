"""Everything about epochs: the LR schedule (warmup, step decay through timm's scheduler factory) and the
epochs at which DRW, DRS and the end of mixing switch on (docs/method.md §5).

Epochs are 0-indexed throughout. Schedule epochs a run does not set scale with ``--epochs`` from the 200-epoch
protocol; :func:`resolve_schedule` fixes them once and the run folder records the result in ``config.json``'s
``lt.schedule`` block, so nothing downstream recomputes them.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from .mixers.unimix import UNIMIX_PRESETS

__all__ = ["resolve_schedule", "lr_at_epoch", "spec_lr_scheduler", "build_lr_scheduler", "scale_epoch"]


def scale_epoch(epochs: int, at_200: int) -> int:
    """The epoch of a ``--epochs`` run that corresponds to epoch ``at_200`` of the 200-epoch protocol."""
    return int(round(epochs * at_200 / 200))


def resolve_schedule(args: Any) -> Dict[str, Any]:
    """Epoch numbers of the schedule (0-indexed). Unset ones follow the 200-epoch protocol (docs/method.md §5), scaled to
    ``--epochs``: LR decay at 160 and 180, DRW/DRS at 160, UniMix 'paper' mixing off at 120. Warmup stays 5
    epochs (at most a fifth of the run): it is about the first steps, not the length of training."""
    E = int(args.epochs)
    if E < 1:
        raise ValueError(f"--epochs must be >= 1, got {E}")
    warmup = args.warmup_epochs if args.warmup_epochs is not None else max(1, min(5, E // 5))
    milestones = list(args.decay_milestones) if args.decay_milestones else [scale_epoch(E, 160), scale_epoch(E, 180)]
    drw = args.drw_epoch
    if drw is None and getattr(args, "drw", False):
        drw = scale_epoch(E, 160)
    drs = args.drs_epoch if args.drs_epoch is not None else scale_epoch(E, 160)
    mix_off = args.mix_off_epoch
    if mix_off is None and args.mix == "unimix":
        off = UNIMIX_PRESETS[args.preset].mix_off_epoch
        mix_off = None if off is None else scale_epoch(E, off)
    for name, v in (("--warmup-epochs", warmup), ("--drw-epoch", drw), ("--mix-off-epoch", mix_off)):
        if v is not None and v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    return {"warmup_epochs": warmup, "decay_milestones": milestones,
            "decay_rate": float(getattr(args, "decay_rate", 0.01)), "drw_epoch": drw, "drs_epoch": drs,
            "mix_off_epoch": mix_off}


def lr_at_epoch(epoch: int, lr: float, warmup_epochs: int = 5, milestones: Tuple[int, ...] = (160, 180),
                decay_rate: float = 0.01) -> float:
    """docs/method.md §5 schedule for 0-indexed ``epoch``: linear warmup ``lr * (e+1) / warmup``, then ``x decay_rate``
    at each milestone (lr * 0.01 after 160, lr * 1e-4 after 180)."""
    if epoch < warmup_epochs:
        return lr * (epoch + 1) / warmup_epochs
    return lr * decay_rate ** sum(epoch >= m for m in milestones)


def spec_lr_scheduler(optimizer: torch.optim.Optimizer, *, epochs: int, lr: float, warmup_epochs: int = 5,
                      milestones: Tuple[int, ...] = (160, 180), decay_rate: float = 0.01):
    """docs/method.md §5 through timm's scheduler factory (multistep + warmup), stepped once per epoch.

    timm's warmup reaches the base LR at ``warmup_t``; docs/method.md §5's 1-indexed ``lr * e / 5`` for ``e <= 5`` is
    timm's warmup with ``warmup_t = warmup_epochs - 1`` starting from ``lr / warmup_epochs``. timm's multistep
    decays once ``t + 1`` reaches a milestone, so the milestones are passed shifted by one.
    """
    from timm.scheduler import create_scheduler_v2

    sched, _ = create_scheduler_v2(
        optimizer, sched="multistep", num_epochs=epochs, decay_milestones=[m + 1 for m in milestones], decay_rate=decay_rate,
        warmup_epochs=max(warmup_epochs - 1, 0), warmup_lr=lr / max(warmup_epochs, 1), warmup_prefix=False,
        min_lr=0.0, step_on_epochs=True)
    return sched


_SCHEDULES_NO_PLATEAU = "cosine, tanh, step, multistep, poly"


def build_lr_scheduler(optimizer: torch.optim.Optimizer, args: Any, schedule: Dict[str, Any]):
    """The run's LR scheduler, stepped once per epoch: ``--sched multistep`` (the default) is the paper's
    schedule (:func:`spec_lr_scheduler`, docs/method.md §5) unless ``--warmup-lr`` / ``--min-lr`` change it; any
    other ``--sched`` (``cosine``, ``step``, ``poly``, ``tanh``, ...) is timm's ``create_scheduler_v2`` with
    ``--epochs``, ``--warmup-epochs``, ``--warmup-lr``, ``--min-lr``, ``--decay-epochs``, ``--decay-rate`` and the
    schedule's milestones. Every one is a function of the epoch, so a resumed run continues exactly. timm's
    ``plateau`` is refused: it decays on a metric, keeps state (best value, patience counter) that checkpoints do not
    carry, and timm itself deprecates it."""
    from timm.scheduler import create_scheduler_v2

    name = getattr(args, "sched", "multistep") or "multistep"
    warmup = int(schedule["warmup_epochs"])
    warmup_lr = getattr(args, "warmup_lr", None)
    min_lr = float(getattr(args, "min_lr", 0.0) or 0.0)
    if name == "multistep" and warmup_lr is None and min_lr == 0.0:
        return spec_lr_scheduler(optimizer, epochs=args.epochs, lr=args.lr, warmup_epochs=warmup,
                                 milestones=tuple(schedule["decay_milestones"]), decay_rate=schedule["decay_rate"])
    if name == "plateau":
        raise ValueError("--sched plateau is not supported: it decays on a validation metric and its state (best "
                         f"value, patience counter) is not checkpointed, so a resumed run would not continue exactly "
                         f"(timm deprecates it too); use {_SCHEDULES_NO_PLATEAU}")
    decay_epochs = getattr(args, "decay_epochs", None)
    try:
        sched, _ = create_scheduler_v2(
            optimizer, sched=name, num_epochs=int(args.epochs),
            decay_epochs=decay_epochs if decay_epochs is not None else max(1, int(args.epochs) // 3),
            decay_milestones=[m + 1 for m in schedule["decay_milestones"]], decay_rate=schedule["decay_rate"],
            min_lr=min_lr, warmup_lr=warmup_lr if warmup_lr is not None else args.lr / max(warmup, 1),
            warmup_epochs=warmup, step_on_epochs=True)
    except (AssertionError, ValueError, KeyError) as e:
        raise ValueError(f"--sched {name!r} could not be built by timm ({e}); timm's schedules: "
                         f"{_SCHEDULES_NO_PLATEAU}") from None
    if sched is None:
        raise ValueError(f"unknown --sched {name!r}; timm's schedules: {_SCHEDULES_NO_PLATEAU}")
    return sched
