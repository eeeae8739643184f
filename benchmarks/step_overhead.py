"""Overhead of every mixer x loss pair on one training step, relative to plain CE without mixing.

One step = mixer -> forward -> loss -> backward -> SGD step of a CIFAR ResNet-32 (timm
``resnet32_cifar``, linear head for every pair so only the mixer and loss differ) at batch 128 on
CIFAR-10-LT rho=100 class counts. Steps of all configurations are interleaved round by round so machine
noise hits them alike; each configuration's figure is the median over rounds of its mean step time, and
the ratio is to the median of plain CE without mixing.

    python benchmarks/step_overhead.py --rounds 7 --steps 3 --threads 2
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import timm
import torch

import lt_registry  # noqa: F401  (registers models, losses, mixers)
import lt_registry.models  # noqa: F401
from lt_registry import create_loss, create_mixer, list_losses, list_mixers, long_tail_counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=3, help="steps per configuration per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="resnet32_cifar")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    counts = long_tail_counts(5000, 10, 100)
    model = timm.create_model(args.model, num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    prior = lt_registry.ClassPrior(counts)
    y = torch.multinomial(prior.probs.to(device), args.batch_size, replacement=True, generator=g)

    configs = {("none", "ce"): None}
    for m in list_mixers():
        for lname in list_losses():
            configs[(m, lname)] = None
    built = {k: (create_mixer(k[0], class_counts=counts), create_loss(k[1], class_counts=counts).to(device))
             for k in configs}

    def step(mixer, loss):
        xm, target = mixer(x, y, generator=g)
        out = model(xm)
        if isinstance(loss, lt_registry.losses.LDAMLoss):
            out = out.tanh()  # LDAM expects cosine logits; the squashing costs nothing measurable
        loss(out, target).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for k in built:  # warm-up
        step(*built[k])
    times = {k: [] for k in built}
    for _ in range(args.rounds):
        for k, (mixer, loss) in built.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(mixer, loss)
            sync()
            times[k].append((time.perf_counter() - t0) / args.steps)

    base = statistics.median(times[("none", "ce")])
    print(f"# step_overhead: {args.model}, batch {args.batch_size}, device {device}, threads {args.threads}, "
          f"{args.rounds} rounds x {args.steps} steps, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"# baseline none+ce median step: {base * 1000:.1f} ms")
    print(f"{'mixer':8s} " + " ".join(f"{n:>7s}" for n in list_losses()))
    for m in list_mixers():
        row = [statistics.median(times[(m, n)]) / base for n in list_losses()]
        print(f"{m:8s} " + " ".join(f"{r:7.3f}" for r in row))
    u = statistics.median(times[("unimix", "bayias")]) / base
    print(f"# unimix+bayias / none+ce = {u:.3f} (target <= 1.05)")

    # The whole-step ratios sit within machine noise, so also time the mixer + loss alone (forward and
    # backward on the logits, no model): their cost added to a step, in ms and as a fraction of the step.
    logits = torch.randn(args.batch_size, 10, device=device)
    iso = {}
    for k, (mixer, loss) in built.items():
        samples = []
        for _ in range(args.rounds):
            sync()
            t0 = time.perf_counter()
            for _ in range(50):
                _, target = mixer(x, y, generator=g)
                z = logits.clone().requires_grad_(True)
                loss(z.tanh() if isinstance(loss, lt_registry.losses.LDAMLoss) else z, target).backward()
            sync()
            samples.append((time.perf_counter() - t0) / 50)
        iso[k] = statistics.median(samples)
    print("# mixer + loss alone (ms per step; in parentheses: added fraction of the none+ce step)")
    print(f"{'mixer':8s} " + " ".join(f"{n:>15s}" for n in list_losses()))
    for m in list_mixers():
        cells = [f"{iso[(m, n)] * 1000:6.2f} ({(iso[(m, n)] - iso[('none', 'ce')]) / base:+.4f})" for n in list_losses()]
        print(f"{m:8s} " + " ".join(f"{c:>15s}" for c in cells))
    extra = (iso[("unimix", "bayias")] - iso[("none", "ce")]) / base
    print(f"# unimix+bayias adds {extra * 100:.2f}% to a none+ce step (mixing the batch included)")


if __name__ == "__main__":
    main()
