#!/usr/bin/env python
"""Print the label distribution each mixer trains on (its effective label prior) next to the training prior.

    python recipes/effective_prior.py                                   # CIFAR-10-LT rho=100, the five mixers
    python recipes/effective_prior.py --dataset cifar100_lt --mix unimix:paper unimix:official --output prior.md

Runs the registry's mixers on label batches drawn by the registry's samplers (no images, a few seconds):
see :mod:`lt_registry.mixers.effective_prior`. Bayias (paper Eq. 14) compensates the *training* prior pi; a
mixer whose effective prior already leans to the tail is compensated twice, and the raw logits then favour
the tail on a balanced test set.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lt_registry import create_mixer  # noqa: E402
from lt_registry.grid.cells import MixSpec  # noqa: E402
from lt_registry.mixers import effective_label_prior  # noqa: E402
from lt_registry.data.cifar_lt import CIFAR_SPECS  # noqa: E402
from lt_registry.prior import long_tail_counts  # noqa: E402

#: (n_max, C) of the CIFAR-LT profiles (docs/method.md §4): both balanced train sets hold 50,000 images
N_MAX = {f"{k}_lt": (50000 // v["num_classes"], v["num_classes"]) for k, v in CIFAR_SPECS.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar10_lt", choices=sorted(N_MAX),
                   help="class counts of this dataset's long-tailed profile (docs/method.md §4); UniMix presets pick tau by it")
    p.add_argument("--imb-factor", type=float, default=100.0, help="rho = n_max / n_min")
    p.add_argument("--counts", type=int, nargs="+", default=None, metavar="N",
                   help="explicit class counts instead of --dataset / --imb-factor")
    p.add_argument("--mix", nargs="+", default=["none", "mixup", "remix", "unimix:paper", "unimix:official"],
                   metavar="SPEC", help="mixer specs as in the ablation grid (unimix alone = the default 'official' "
                                        "preset)")
    p.add_argument("--batches", type=int, default=400, help="mixed batches averaged per mixer")
    p.add_argument("-b", "--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="also write the table to this Markdown file")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.counts:
        counts = list(args.counts)
        if any(c < 1 for c in counts):
            print(f"error: --counts must all be >= 1 (every class needs an image), got {counts}", file=sys.stderr)
            return 2
        where = f"class counts {counts}"
    else:
        n_max, C = N_MAX[args.dataset]
        counts = long_tail_counts(n_max, C, args.imb_factor)
        where = f"{args.dataset}, rho = {args.imb_factor:g}"
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    prior = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    rows = [("training prior pi", prior.float())]
    try:
        for spec in args.mix:
            ms = MixSpec.parse(spec)
            kw = {"preset": ms.preset, "dataset": args.dataset} if ms.name == "unimix" else {}
            mixer = create_mixer(ms.name, class_counts=counts, **kw)
            share = effective_label_prior(mixer, labels, batches=args.batches, batch_size=args.batch_size,
                                          seed=args.seed)
            rows.append((f"{ms.label}: {mixer!r}", share))
    except (KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    C = len(counts)
    cols = list(range(C)) if C <= 10 else None
    if cols is not None:
        head = "| label distribution | " + " | ".join(f"class {c} (n={counts[c]})" for c in cols) + " | first / last |"
        sep = "|---|" + "---:|" * (C + 1)
        body = [f"| {name} | " + " | ".join(f"{100 * float(p[c]):.1f}" for c in cols) +
                f" | {float(p[0] / p[-1]):.2f} |" for name, p in rows]
    else:  # many classes: the mass of each third of the class index range (head / mid / tail)
        thirds = [range(0, C // 3), range(C // 3, 2 * C // 3), range(2 * C // 3, C)]
        head = "| label distribution | head third | mid third | tail third | first / last |"
        sep = "|---|---:|---:|---:|---:|"
        body = [f"| {name} | " + " | ".join(f"{100 * float(p[list(t)].sum()):.1f}" for t in thirds) +
                f" | {float(p[0] / p[-1]):.2f} |" for name, p in rows]
    text = "\n".join([f"Effective label prior (% of the label weight per class), {where}; {args.batches} batches of "
                      f"{args.batch_size}, seed {args.seed}. first / last: share of class 0 over the last class "
                      f"(the training prior's is the imbalance factor).", "", head, sep, *body])
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
