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

__all__ = ["git_commit", "describe_versions", "hardware_info", "hardware_line", "peak_memory", "cpus_available"]

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
