"""Wall time of one full training run through the recipe, evaluation and report included.

Runs ``recipes/train.py`` in a subprocess (the same command a user types), then reads the run folder's
``metrics.json``: process wall time, the median epoch time, the number of monitoring evaluations, peak
memory (GPU memory allocated by torch on CUDA, resident set size on CPU) and the final top-1 / ECE.

    # the paper protocol on one GPU, fast path, bf16, compiled (target on one H100: < 2 minutes)
    python benchmarks/full_run.py --data-dir ../shared/data/cifar10-jpeg75 -- --fast-path on --mixed-precision bf16 --compile
    # the standard path for comparison, or a shortened CPU run
    python benchmarks/full_run.py --data-dir ../shared/data/cifar10-jpeg75 -- --fast-path off
    python benchmarks/full_run.py --data-dir ../shared/data/cifar10-jpeg75 -- --epochs 2 --fast-path off
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "recipes/configs/cifar10_lt_r100.yaml"))
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--output", default=None, help="parent of the run folder (default: a temporary folder)")
    ap.add_argument("train_args", nargs="*", help="extra recipes/train.py arguments (after --)")
    args = ap.parse_args()
    out = Path(args.output or tempfile.mkdtemp(prefix="full_run_"))
    cmd = [sys.executable, str(ROOT / "recipes/train.py"), "--config", args.config, "--data-dir", args.data_dir,
           "--output", str(out), "--experiment", "run", "--no-progress", *args.train_args]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"run failed ({p.returncode}):\n{p.stderr[-3000:]}")
    m = json.loads((out / "run" / "metrics.json").read_text())
    epochs = m["epochs"]
    ep = statistics.median(r["epoch_time_s"] for r in epochs)
    evals = sum("test_top1_monitor" in r for r in epochs) + 1
    print(f"# full_run: {' '.join(cmd[1:])}")
    print(f"# host {platform.machine()} {platform.processor()}, python {platform.python_version()}")
    print(f"process wall time      {wall:8.1f} s  ({len(epochs)} epochs, {evals} evaluations, report and model card)")
    print(f"train loop wall time   {m['resources'].get('wall_time_s', float('nan')):8.1f} s")
    print(f"median epoch time      {ep:8.2f} s  (first epoch {epochs[0]['epoch_time_s']:.2f} s, includes warm-up/compile)")
    for k, v in m["resources"].items():
        if "memory" in k or "rss" in k or k in ("device", "gpu", "fast_path", "mixed_precision"):
            print(f"{k:22s} {v}")
    print(f"final top-1 {m['final']['top1']:.2f}%  ECE {m['final']['ece']:.2f}%  ({out / 'run'})")


if __name__ == "__main__":
    main()
