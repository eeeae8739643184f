"""Where a result came from: package versions, the git commit of the library, the hardware, peak memory.

One home for what a run folder's ``lt.versions`` block, ``metrics.json``'s ``resources`` and the grid's
``grid.json`` record about the machine and the code.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import torch

__all__ = ["git_commit", "describe_versions", "hardware_info", "hardware_line", "peak_memory", "cpus_available",
           "run_segment", "describe_segments", "format_duration"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def git_commit(cwd: Optional[Path] = None, *, dirty: bool = False) -> Dict[str, Any]:
    """``{"git_commit": short hash or None, "git_dirty": bool or None}`` of the checkout holding ``cwd`` (default:
    this package's source); ``git_dirty`` is looked up only when ``dirty`` (it diffs the tree)."""
    out: Dict[str, Any] = {"git_commit": None, "git_dirty": None}
    where = cwd or _PACKAGE_DIR
    try:
        p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True,
                           timeout=10)
        if p.returncode == 0 and p.stdout.strip():
            out["git_commit"] = p.stdout.strip()
            if dirty:
                d = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=where, capture_output=True,
                                   timeout=30)
                out["git_dirty"] = d.returncode == 1
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def describe_versions() -> Dict[str, str]:
    """Versions of lt_registry (plus its git commit in a checkout), torch, timm, accelerate and Python."""
    import accelerate
    import timm

    from ._version import __version__
    out = {"lt_registry": __version__, "torch": torch.__version__, "timm": timm.__version__,
           "accelerate": accelerate.__version__, "python": platform.python_version()}
    commit = git_commit()["git_commit"]
    if commit:
        out["lt_registry_commit"] = commit
    return out


def cpus_available() -> int:
    """CPUs this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def hardware_info() -> Dict[str, Any]:
    """Platform, CPUs, Python/torch versions and the CUDA devices (queried in a child process, so the caller
    holds no CUDA context)."""
    hw: Dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                          "processor": platform.processor() or None, "cpu_count": os.cpu_count(),
                          "cpus_available": cpus_available(), "python": platform.python_version(),
                          "torch": torch.__version__, "cuda_devices": []}
    if torch.cuda.is_available():
        try:
            p = subprocess.run([sys.executable, "-c", "import json, torch; print(json.dumps([torch.cuda.get_device_name(i)"
                                " for i in range(torch.cuda.device_count())]))"],
                               capture_output=True, text=True, timeout=120)
            hw["cuda_devices"] = json.loads(p.stdout.strip().splitlines()[-1])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            hw["cuda_devices"] = ["(query failed)"]
    return hw


def hardware_line(hw: Dict[str, Any]) -> str:
    """One line for a report: ``"Linux-..., 2 CPUs, no CUDA device; python 3.11.9, torch 2.14.1"``."""
    gpus = hw.get("cuda_devices") or []
    if gpus:
        names: Dict[str, int] = {}
        for g in gpus:
            names[g] = names.get(g, 0) + 1
        gpu = ", ".join(f"{n} x {k}" for k, n in names.items())
    else:
        gpu = "no CUDA device"
    return (f"{hw.get('platform')}, {hw.get('cpus_available') or hw.get('cpu_count')} CPUs, {gpu}; "
            f"python {hw.get('python')}, torch {hw.get('torch')}")


def peak_memory(device: torch.device) -> Dict[str, Any]:
    """Peak memory of this process: accelerator memory allocated by torch on GPU, resident set size on CPU."""
    out: Dict[str, Any] = {}
    if device.type == "cuda":
        out["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["gpu"] = torch.cuda.get_device_name(device)
    try:
        import resource
        out["peak_host_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        pass
    return out


def run_segment(device: torch.device, num_processes: int = 1,
                resumed_from: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The provenance of one process lifetime of a training run (``metrics.json`` ``segments``): start time, the
    checkpoint it resumed from (``None``: a fresh start), the library's git commit (and whether the checkout had
    uncommitted changes), and the machine in one line (CPUs, accelerator, processes). No paths, no host name."""
    import time

    if device.type == "cuda":
        machine = f"{num_processes} x {torch.cuda.get_device_name(device)}"
    else:
        machine = f"{num_processes} process(es) on {device.type}"
    machine += f"; {cpus_available()} CPUs; torch {torch.__version__}"
    return {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumed_from": resumed_from,
            **git_commit(dirty=True), "machine": machine}


def format_duration(s: Optional[float], short: bool = False) -> str:
    """``5.2 -> '5.2s'``, ``3725 -> '1h02m05s'``; ``short`` for tables: ``'5s'``, ``'1h02m'``, and ``''`` for None."""
    if s is None:
        return "" if short else "n/a"
    s = float(s)
    if s < 60:
        return f"{s:.0f}s" if short else f"{s:.1f}s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    if h:
        return f"{h}h{m:02d}m" if short else f"{h}h{m:02d}m{sec:02d}s"
    return f"{m}m{sec:02d}s"


def describe_segments(segments: Any) -> Optional[str]:
    """``metrics.json``'s ``segments`` in one line for cards and reports: per process lifetime the epochs it trained
    (1-indexed, inclusive, with the batch where a segment started or ended mid-epoch), the library commit, the
    machine and the wall time. Segments recorded before provenance was kept say so. ``None``: nothing to describe."""
    if not isinstance(segments, list) or not segments:
        return None
    parts = []
    for seg in segments:
        if not isinstance(seg, dict):
            continue
        a, b = seg.get("from_epoch"), seg.get("to_epoch")
        if a is None or b is None:
            parts.append("a segment written before segments were recorded (commit, machine and span unknown)")
            continue
        i, j = seg.get("from_step") or 0, seg.get("to_step") or 0
        if (a, i) == (b, j):
            span = "nothing trained"
        else:
            span = (f"epoch {a + 1}" + (f" batch {i + 1}" if i else "") + " to "
                    + (f"epoch {b + 1} batch {j}" if j else f"epoch {b}"))
        commit = seg.get("git_commit") or "commit unknown"
        if seg.get("git_dirty"):
            commit += " with uncommitted changes"
        parts.append(f"{span} at {commit} ({seg.get('machine', 'machine unknown')}, "
                     f"{format_duration(seg.get('wall_s'))}, started {seg.get('started', '?')})")
    return "; ".join(parts) or None
