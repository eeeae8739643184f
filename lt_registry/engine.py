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

__all__ = ["NonFiniteLossError", "TrainState", "train_one_epoch", "evaluate", "CheckpointManager", "build_optimizer"]


def build_optimizer(model: nn.Module, args: Any) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2`` from the recipe's options (``opt``, ``lr``, ``weight_decay``, ``momentum``,
    ``wd_norm_bias``). The paper's protocol (docs/method.md §5) is ``opt: momentum`` (classical momentum; timm's
    ``sgd`` is Nesterov) with ``wd_norm_bias: true`` (weight decay on every parameter, as
    ``torch.optim.SGD(model.parameters(), ...)``); timm's convention exempts normalisation and bias parameters."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum,
                               filter_bias_and_bn=not args.wd_norm_bias)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; ``epoch`` and ``step`` (0-indexed, within the epoch) say where."""

    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(f"non-finite loss ({value}) at epoch {epoch}, step {step} (0-indexed). Training stopped; "
                         "the last good checkpoint is kept. Lower --lr, check the data, or disable mixed precision.")


@dataclass
class TrainState:
    """What a resumed run needs beyond model/optimizer/scheduler/RNG (saved through accelerate):
    the next epoch, the per-epoch log, the device generators (mixing, on-device augmentation) and the wall time
    spent so far (summed over the processes' lifetimes, so a resumed run reports its whole training time)."""

    epoch: int = 0  # next epoch to run (0-indexed)
    history: List[Dict[str, Any]] = field(default_factory=list)
    generators: Dict[str, torch.Generator] = field(default_factory=dict)
    elapsed_s: float = 0.0  # wall time of the finished epochs, over every segment of a resumed run

    def state_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"epoch": self.epoch, "history": json.dumps(self.history), "elapsed_s": self.elapsed_s}
        for name, g in self.generators.items():
            d[f"generator.{name}"] = g.get_state()
        return d

    def load_state_dict(self, d: Dict[str, Any]) -> None:
        self.epoch = int(d["epoch"])
        self.history = json.loads(d["history"])
        self.elapsed_s = float(d.get("elapsed_s", 0.0))  # absent in checkpoints written before it existed
        for name, g in self.generators.items():
            if f"generator.{name}" in d:
                g.set_state(d[f"generator.{name}"].cpu())


def _cycle(loader: Any, epoch: int) -> Iterator[Any]:
    """Endless iterator over a partner loader (its sampler advances its epoch each pass)."""
    n = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch * 1000 + n)
        for batch in loader:
            yield batch
        n += 1


def train_one_epoch(model: nn.Module, loader: Any, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                    accelerator: Any, *, epoch: int, mixer: Optional[Callable] = None, partner_loader: Any = None,
                    generator: Optional[torch.Generator] = None, check_every: int = 50,
                    progress: bool = False, batch_transform: Optional[Callable] = None) -> Dict[str, float]:
    """One epoch. ``mixer=None`` trains on plain labels. ``partner_loader`` supplies the dataset-level
    UniMix partners (paper Algorithm 1). ``batch_transform(x) -> x`` runs on the device before mixing
    (the fast path's augmentation). Returns the mean loss and the number of samples (all processes)."""
    model.train()
    device = accelerator.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    seen = torch.zeros((), device=device, dtype=torch.float64)
    bad_step = torch.full((), -1, device=device, dtype=torch.long)
    partners = _cycle(partner_loader, epoch) if partner_loader is not None else None
    it = loader
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(loader, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)
    t0 = time.perf_counter()
    step = -1
    for step, (x, y) in enumerate(it):
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
        with accelerator.autocast():
            logits = model(x)
        loss = loss_fn(logits.float(), target)
        finite = torch.isfinite(loss.detach())
        bad_step = torch.where(~finite & (bad_step < 0), torch.full_like(bad_step, step), bad_step)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach().double() * y.shape[0]
        seen += y.shape[0]
        if check_every and (step + 1) % check_every == 0:
            _raise_if_bad(accelerator, bad_step, loss_sum, epoch)
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

    def save(self, epoch: int) -> Path:
        acc = self.accelerator
        name = f"epoch_{epoch:04d}"
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
