"""Images per second of the lt_registry training loop against a minimal hand-written PyTorch loop.

Same model (timm ``resnet32_cifar``), same data (CIFAR-10-LT rho=100 from ``--data-dir``, or the embedded
digits when absent), same augmentation (``CifarTrainTransform``: pad-4 random crop, flip, normalise), same
batch size and worker count. Variants:

- ``minimal``: ``for x, y in DataLoader(shuffle=True): CE(model(x), y).backward(); opt.step()``
- ``lt none+ce``: ``lt_registry.engine.train_one_epoch`` through accelerate, ``random`` sampler, no mixing
- ``lt unimix+bayias (official)``: in-batch UniMix partner
- ``lt unimix+bayias (paper)``: dataset-level partner sampler (a second batch is loaded per step)

Each variant runs ``--steps`` steps per round; rounds are interleaved and the figure is the median over
rounds. The epoch time and the 200-epoch estimate follow from the images per second.

    python benchmarks/loop_throughput.py --data-dir ../shared/data/cifar10-jpeg75 --steps 20 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler

import lt_registry  # noqa: F401
from lt_registry import ClassPrior, create_loss, create_mixer, create_sampler
from lt_registry.data import build_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from accelerate import Accelerator
    from lt_registry.engine import train_one_epoch

    if args.data_dir:
        ds = build_dataset("cifar10_lt", data_dir=args.data_dir, imb_factor=100)
    else:
        ds = build_dataset("digits_lt")
    prior = ClassPrior(ds.class_counts)
    labels = torch.as_tensor(ds.train.labels)
    n = args.steps * args.batch_size
    acc = Accelerator(cpu=not torch.cuda.is_available())
    dev = acc.device

    def fresh_model():
        torch.manual_seed(0)
        m = timm.create_model("resnet32_cifar", num_classes=ds.num_classes).to(dev)
        return m, torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-4)

    kw = dict(batch_size=args.batch_size, num_workers=args.workers, persistent_workers=False, drop_last=True)

    def minimal():
        model, opt = fresh_model()
        model.train()
        loader = DataLoader(ds.train, sampler=RandomSampler(ds.train, replacement=True, num_samples=n), **kw)
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    def ours(mix: str, loss: str, preset: str = "official"):
        def run():
            model, opt = fresh_model()
            loader = DataLoader(ds.train, sampler=create_sampler("random", labels=labels, num_samples=n), **kw)
            mixer = create_mixer(mix, class_counts=prior, preset=preset) if mix != "none" else None
            partner = None
            if getattr(mixer, "partner", None) == "dataset":
                partner = DataLoader(ds.train, sampler=create_sampler("prior_power", labels=labels, tau=mixer.tau,
                                                                      num_samples=n, seed=1), **kw)
                partner = acc.prepare(partner)
            model_p, opt_p, loader_p = acc.prepare(model, opt, loader)
            loss_fn = create_loss(loss, class_counts=prior).to(dev)
            gen = torch.Generator(device=dev).manual_seed(0)
            t0 = time.perf_counter()
            train_one_epoch(model_p, loader_p, loss_fn, opt_p, acc, epoch=0, mixer=mixer, partner_loader=partner,
                            generator=gen)
            return time.perf_counter() - t0
        return run

    variants = {"minimal": minimal, "lt none+ce": ours("none", "ce"),
                "lt unimix+bayias (official)": ours("unimix", "bayias", "official"),
                "lt unimix+bayias (paper)": ours("unimix", "bayias", "paper")}
    times = {k: [] for k in variants}
    for _ in range(args.rounds):
        for k, fn in variants.items():
            times[k].append(fn())
    print(f"# loop_throughput: resnet32_cifar, {ds.name} ({len(ds.train)} train images), batch {args.batch_size}, "
          f"{args.steps} steps x {args.rounds} rounds (median), workers {args.workers}, threads {args.threads}, "
          f"device {dev}, torch {torch.__version__}, {platform.machine()} {os.cpu_count()} CPUs")
    base = statistics.median(times["minimal"])
    for k, ts in times.items():
        t = statistics.median(ts)
        ips = n / t
        epoch = len(ds.train) / ips
        print(f"{k:30s} {ips:8.1f} img/s   ratio to minimal {t / base:5.3f}   epoch {epoch:7.1f} s   "
              f"200 epochs ~ {200 * epoch / 3600:5.2f} h (training only)")


if __name__ == "__main__":
    main()
