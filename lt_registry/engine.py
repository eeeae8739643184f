"""One training loop for CPU, one GPU and many GPUs (accelerate), plus evaluation and checkpoints.

The flow of data: ``batch -> mixer -> (x_mixed, MixedTarget) -> model -> logits -> loss``. Every
process draws its own mixing randomness from a ``torch.Generator`` on its device; the sampler draws the
same global sequence everywhere and accelerate shards it. Non-finite losses are tracked on the device
(no host sync per step) and checked every ``check_every`` steps and at the end of the epoch.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

__all__ = ["NonFiniteLossError", "TrainState", "train_one_epoch", "evaluate", "CheckpointManager", "build_optimizer",
           "clip_gradients", "skip_batches"]


def build_optimizer(model: nn.Module, args: Any) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2`` from the recipe's options (``opt``, ``lr``, ``weight_decay``, ``momentum``,
    ``wd_norm_bias``, and timm's ``opt_eps``, ``opt_betas``, ``opt_kwargs``, ``layer_decay``). The paper's protocol
    (docs/method.md §5) is ``opt: momentum`` (classical momentum; timm's ``sgd`` is Nesterov) with
    ``wd_norm_bias: true`` (weight decay on every parameter, as ``torch.optim.SGD(model.parameters(), ...)``);
    timm's convention exempts normalisation and bias parameters. ``layer_decay`` scales each layer group's LR by
    ``layer_decay ** (depth from the head)`` (timm's grouping of the model)."""
    from timm.optim import create_optimizer_v2

    kw: Dict[str, Any] = {}
    if getattr(args, "opt_eps", None) is not None:
        kw["eps"] = args.opt_eps
    if getattr(args, "opt_betas", None):
        kw["betas"] = tuple(args.opt_betas)
    if getattr(args, "opt_kwargs", None):
        from .config import parse_kv
        kw.update(parse_kv(args.opt_kwargs, "--opt-kwargs"))
    if getattr(args, "layer_decay", None) is not None:
        kw["layer_decay"] = args.layer_decay
    return create_optimizer_v2(model, args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum,
                               filter_bias_and_bn=not args.wd_norm_bias, **kw)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; ``epoch`` and ``step`` (0-indexed, within the epoch) say where."""

    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(f"non-finite loss ({value}) at epoch {epoch}, step {step} (0-indexed). Training stopped; "
                         "the last good checkpoint is kept. Lower --lr, check the data, or disable mixed precision.")


@dataclass
class TrainState:
    """What a resumed run needs beyond model/optimizer/scheduler/RNG (saved through accelerate):
    the next epoch, the per-epoch log, the device generators (mixing, on-device augmentation), the wall time
    spent so far (summed over the processes' lifetimes, so a resumed run reports its whole training time) and the
    best validation score so far (``best_epoch`` -1: none yet; the weights are in the run's ``best/``)."""

    epoch: int = 0  # next epoch to run (0-indexed)
    history: List[Dict[str, Any]] = field(default_factory=list)
    generators: Dict[str, torch.Generator] = field(default_factory=dict)
    elapsed_s: float = 0.0  # wall time of the finished epochs, over every segment of a resumed run
    best_epoch: int = -1
    best_value: float = float("nan")
    optimizer_steps: int = 0
    # mid-epoch position (--checkpoint-interval-steps): the next batch of epoch ``epoch`` and the epoch's running
    # loss sum and sample count so far, so the resumed epoch reports the same mean loss as an uninterrupted one
    step: int = 0
    epoch_loss_sum: float = 0.0
    epoch_seen: float = 0.0
    # one entry per process lifetime that trained the run (provenance.run_segment): when it started and from which
    # checkpoint, the library commit, the machine, and how far it got (``to_epoch`` / ``to_step``) in what wall time;
    # saved in every checkpoint, so a killed segment is still on record when the run resumes
    segments: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def resumes(self) -> List[Dict[str, Any]]:
        """Where each resume of the run started (``{checkpoint, epoch, step}``), from :attr:`segments`."""
        return [seg["resumed_from"] for seg in self.segments if seg.get("resumed_from")]

    def begin_segment(self, segment: Dict[str, Any]) -> None:
        """Record a new process lifetime (``provenance.run_segment``) starting at the current position."""
        self.segments.append(dict(segment, from_epoch=self.epoch, from_step=self.step, to_epoch=self.epoch,
                                  to_step=self.step, wall_s=0.0))

    def end_segment_here(self, wall_s: float) -> None:
        """Move the current segment's end to the current position (called just before each checkpoint)."""
        if self.segments:
            self.segments[-1].update(to_epoch=self.epoch, to_step=self.step, wall_s=round(float(wall_s), 2))

    def state_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"epoch": self.epoch, "history": json.dumps(self.history), "elapsed_s": self.elapsed_s,
                             "best_epoch": self.best_epoch, "best_value": self.best_value,
                             "optimizer_steps": self.optimizer_steps, "step": self.step,
                             "epoch_loss_sum": self.epoch_loss_sum, "epoch_seen": self.epoch_seen,
                             "segments": json.dumps(self.segments)}
        for name, g in self.generators.items():
            d[f"generator.{name}"] = g.get_state()
        return d

    def load_state_dict(self, d: Dict[str, Any]) -> None:
        self.epoch = int(d["epoch"])
        self.history = json.loads(d["history"])
        self.elapsed_s = float(d.get("elapsed_s", 0.0))  # absent in checkpoints written before it existed
        self.best_epoch = int(d.get("best_epoch", -1))
        self.best_value = float(d.get("best_value", float("nan")))
        self.optimizer_steps = int(d.get("optimizer_steps", 0))
        self.step = int(d.get("step", 0))
        self.epoch_loss_sum = float(d.get("epoch_loss_sum", 0.0))
        self.epoch_seen = float(d.get("epoch_seen", 0.0))
        if "segments" in d:
            self.segments = json.loads(d["segments"])
        else:  # checkpoints written before segments were recorded kept only the resume points
            self.segments = [{"resumed_from": None}] + [{"resumed_from": r} for r in json.loads(d.get("resumes", "[]"))]
        for name, g in self.generators.items():
            if f"generator.{name}" in d:
                g.set_state(d[f"generator.{name}"].cpu())

    def is_better(self, value: float, lower_is_better: bool) -> bool:
        """Whether ``value`` beats the best validation score so far (the first score always does)."""
        if self.best_epoch < 0 or self.best_value != self.best_value:
            return True
        return value < self.best_value if lower_is_better else value > self.best_value


def skip_batches(loader: Any, n: int, accelerator: Any = None) -> Any:
    """``loader`` without its first ``n`` batches of the current epoch, without loading them: the fast path's
    loader slices its batch list; a (prepared) DataLoader goes through ``accelerator.skip_first_batches``."""
    if n <= 0:
        return loader
    if hasattr(loader, "skip_first_batches"):
        return loader.skip_first_batches(n)
    if accelerator is None:
        raise ValueError("skipping the batches of a DataLoader needs the accelerator")
    return accelerator.skip_first_batches(loader, n)


def _cycle(loader: Any, epoch: int, skip: int = 0, accelerator: Any = None) -> Iterator[Any]:
    """Endless iterator over a partner loader (its sampler advances its epoch each pass), starting ``skip``
    batches in (a resumed mid-epoch run: the partner batches the finished steps already used)."""
    n = 0
    try:
        per_pass = len(loader)
    except TypeError:
        per_pass = 0
    if skip and per_pass:
        n, skip = divmod(skip, per_pass)
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch * 1000 + n)
        for batch in skip_batches(loader, skip, accelerator):
            yield batch
        skip = 0
        n += 1


def clip_gradients(model: nn.Module, accelerator: Any, clip_grad: Optional[float], mode: str = "norm") -> None:
    """timm's ``--clip-grad`` / ``--clip-mode``: ``norm`` rescales the gradient so that its global L2 norm is at
    most ``clip_grad``; ``value`` clamps every entry to ``[-clip_grad, clip_grad]``; ``agc`` is adaptive gradient
    clipping (Brock et al. 2021) with clip factor ``clip_grad``. Through accelerate, so fp16 gradients are
    unscaled first."""
    if clip_grad is None:
        return
    params = [p for p in model.parameters() if p.grad is not None]
    if mode == "norm":
        accelerator.clip_grad_norm_(params, clip_grad)
    elif mode == "value":
        accelerator.clip_grad_value_(params, clip_grad)
    elif mode == "agc":
        from timm.utils import adaptive_clip_grad
        accelerator.unscale_gradients()
        adaptive_clip_grad(params, clip_grad)
    else:
        raise ValueError(f"clip mode must be norm, value or agc, got {mode!r}")


def train_one_epoch(model: nn.Module, loader: Any, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                    accelerator: Any, *, epoch: int, mixer: Optional[Callable] = None, partner_loader: Any = None,
                    generator: Optional[torch.Generator] = None, check_every: int = 50,
                    progress: bool = False, batch_transform: Optional[Callable] = None, accum_steps: int = 1,
                    clip_grad: Optional[float] = None, clip_mode: str = "norm", ema: Any = None,
                    state: Any = None, start_step: int = 0, checkpoint_every: int = 0,
                    on_checkpoint: Optional[Callable[[int, float, float], None]] = None) -> Dict[str, float]:
    """One epoch. ``mixer=None`` trains on plain labels. ``partner_loader`` supplies the dataset-level
    UniMix partners (paper Algorithm 1). ``batch_transform(x) -> x`` runs on the device before mixing
    (the fast path's augmentation).

    ``accum_steps`` batches are accumulated per optimizer step (each batch's loss divided by the number of
    batches in its group, so ``k`` batches of ``B`` give the gradient of one batch of ``k * B`` when the loss is a
    mean; the epoch's last group may be shorter and is divided by its own size, as in timm). ``clip_grad`` /
    ``clip_mode``: :func:`clip_gradients` before each step. ``ema``: a timm ``ModelEmaV3`` updated after each
    optimizer step. ``state`` (a :class:`TrainState`) counts the optimizer steps.

    Mid-epoch checkpoints: every ``checkpoint_every`` batches (at an optimizer-step boundary, never with a
    non-finite loss pending) ``on_checkpoint(next_step, loss_sum, seen)`` is called on every process (it saves
    the state). ``start_step`` resumes such an epoch: the first ``start_step`` batches (and as many partner
    batches) are skipped without being loaded, and ``state.epoch_loss_sum`` / ``state.epoch_seen`` carry the
    finished part's loss. Returns the mean loss and the number of samples (all processes)."""
    import contextlib

    model.train()
    device = accelerator.device
    start_step = max(int(start_step), 0)
    resumed = start_step > 0 and state is not None
    loss_sum = torch.full((), state.epoch_loss_sum if resumed else 0.0, device=device, dtype=torch.float64)
    seen = torch.full((), state.epoch_seen if resumed else 0.0, device=device, dtype=torch.float64)
    bad_step = torch.full((), -1, device=device, dtype=torch.long)
    partners = (_cycle(partner_loader, epoch, skip=start_step if mixer is not None else 0, accelerator=accelerator)
                if partner_loader is not None else None)
    accum_steps = max(int(accum_steps), 1)
    try:
        n_batches = len(loader)
    except TypeError:
        n_batches = None
    last_group = (n_batches - n_batches % accum_steps) if (n_batches and accum_steps > 1) else None
    loader = skip_batches(loader, start_step, accelerator)
    it = loader
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(loader, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)
    t0 = time.perf_counter()
    step = start_step - 1
    for step, (x, y) in enumerate(it, start=start_step):
        if batch_transform is not None:
            x = batch_transform(x)
        target: Any = y
        if mixer is not None:
            partner = None
            if partners is not None:
                x2, y2 = next(partners)
                if batch_transform is not None:
                    x2 = batch_transform(x2)
                partner = (x2[: x.shape[0]], y2[: y.shape[0]])
            x, target = mixer(x, y, partner=partner, generator=generator)
        group = accum_steps
        if last_group is not None and step >= last_group:
            group = n_batches - last_group
        update = accum_steps == 1 or (step + 1) % accum_steps == 0 or (n_batches is not None and step + 1 == n_batches)
        sync = contextlib.nullcontext() if update or accelerator.num_processes == 1 else accelerator.no_sync(model)
        with sync:
            with accelerator.autocast():
                logits = model(x)
            loss = loss_fn(logits.float(), target)
            finite = torch.isfinite(loss.detach())
            bad_step = torch.where(~finite & (bad_step < 0), torch.full_like(bad_step, step), bad_step)
            accelerator.backward(loss / group if group > 1 else loss)
        if update:
            clip_gradients(model, accelerator, clip_grad, clip_mode)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if state is not None:
                state.optimizer_steps += 1
            if ema is not None:
                ema.update(accelerator.unwrap_model(model), step=state.optimizer_steps if state is not None else None)
        loss_sum += loss.detach().double() * y.shape[0]
        seen += y.shape[0]
        if check_every and (step + 1) % check_every == 0:
            _raise_if_bad(accelerator, bad_step, loss_sum, epoch)
        if (on_checkpoint is not None and checkpoint_every and update and (step + 1) % checkpoint_every == 0
                and (n_batches is None or step + 1 < n_batches)):
            _raise_if_bad(accelerator, bad_step, loss_sum, epoch)
            on_checkpoint(step + 1, float(loss_sum), float(seen))
    if accum_steps > 1 and n_batches is None and (step + 1) % accum_steps:  # unsized loader: step on what is left
        clip_gradients(model, accelerator, clip_grad, clip_mode)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _raise_if_bad(accelerator, bad_step, loss_sum, epoch)
    total = accelerator.reduce(torch.stack([loss_sum, seen]), reduction="sum")
    return {"train_loss": float(total[0] / total[1].clamp_min(1)), "train_samples": int(total[1]),
            "train_steps": step + 1, "epoch_time_s": time.perf_counter() - t0}



def _raise_if_bad(accelerator: Any, bad_step: torch.Tensor, loss_sum: torch.Tensor, epoch: int) -> None:
    worst = accelerator.reduce(bad_step.clone(), reduction="max") if accelerator.num_processes > 1 else bad_step
    if int(worst) >= 0:
        raise NonFiniteLossError(epoch, int(worst), float("nan"))


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, accelerator: Any,
             batch_transform: Optional[Callable] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, C] and labels [N] over the whole loader, gathered from every process with
    ``gather_for_metrics`` so each sample counts exactly once (padding of the last batch dropped). A
    ``replicated`` loader (the fast path's) already gives every process the whole set."""
    model.eval()
    outs, ys = [], []
    replicated = getattr(loader, "replicated", False)  # every process saw the whole set: nothing to gather
    for x, y in loader:
        if batch_transform is not None:
            x = batch_transform(x)
        with accelerator.autocast():
            z = model(x)
        z, y = z.float().contiguous(), y.contiguous()
        if not replicated:
            z, y = accelerator.gather_for_metrics((z, y))
        outs.append(z.cpu())
        ys.append(y.cpu())
    model.train()
    return torch.cat(outs), torch.cat(ys)


class CheckpointManager:
    """Atomic per-epoch checkpoints through ``accelerator.save_state``.

    A checkpoint is written to ``checkpoints/epoch_XXXX.tmp`` and renamed when complete; ``checkpoints/latest``
    (written with ``os.replace``) names the newest complete one. A crash or SIGKILL mid-write leaves a
    ``.tmp`` folder that is ignored and the previous checkpoint intact. Only ``keep`` checkpoints are kept.
    """

    def __init__(self, run_dir: os.PathLike, accelerator: Any, keep: int = 1):
        self.dir = Path(run_dir) / "checkpoints"
        self.accelerator = accelerator
        self.keep = max(int(keep), 1)

    def latest(self) -> Optional[Path]:
        pointer = self.dir / "latest"
        if not pointer.is_file():
            return None
        target = self.dir / pointer.read_text().strip()
        if not (target.is_dir() and (target / "COMPLETE").is_file()):
            raise FileNotFoundError(f"checkpoint pointer {pointer} names {target.name}, which is missing or "
                                    "incomplete; remove the run folder's checkpoints/latest to start over.")
        return target

    def save(self, epoch: int, step: Optional[int] = None) -> Path:
        """Save the state after epoch ``epoch`` (``epoch_XXXX``) or, mid-epoch, before batch ``step`` of it
        (``epoch_XXXX_step_YYYYYYY``; names sort in training order)."""
        acc = self.accelerator
        name = f"epoch_{epoch:04d}" + (f"_step_{step:07d}" if step is not None else "")
        final, tmp = self.dir / name, self.dir / (name + ".tmp")
        if acc.is_main_process:
            self.dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / "COMPLETE").write_text(str(epoch))
            _fsync_dir(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            ptr_tmp = self.dir / "latest.tmp"
            ptr_tmp.write_text(name)
            os.replace(ptr_tmp, self.dir / "latest")
            _fsync_dir(self.dir)
            older = sorted(p for p in self.dir.glob("epoch_*") if p.is_dir() and p.name != name)
            for old in older[: max(len(older) - (self.keep - 1), 0)]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def load_latest(self) -> Optional[Path]:
        path = self.latest()
        if path is not None:
            self.accelerator.load_state(str(path))
        return path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
