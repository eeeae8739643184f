import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
#: real data for the slow tests: the repository's data/ folder (README "Data"), else the project's copy beside it
DATA = ROOT / "data" if (ROOT / "data" / "cifar10-jpeg75").exists() else ROOT.parent / "shared" / "data"
RECIPES = ROOT / "recipes"
TRAIN = RECIPES / "train.py"
#: a 2-epoch run of the smallest CIFAR ResNet on the embedded digits (seconds on a CPU)
TINY_TRAIN = ["--model", "resnet20_cifar", "--epochs", "2", "-b", "64", "--workers", "0", "--no-progress",
              "--eval-interval", "1"]


def load_recipe(name: str):
    """A recipe script (``recipes/<name>.py``) as a module, to call its ``main(argv)`` in this process."""
    spec = importlib.util.spec_from_file_location(f"lt_recipe_{name}", RECIPES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def lt_counts():
    """CIFAR-10-LT rho 100 counts (docs/method.md §4)."""
    return [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def offline_env(**extra: str) -> dict:
    """The environment for a recipe run in a child process: Hub offline, no token, a fixed hash seed."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0", **extra)
    env.pop("HF_TOKEN", None)
    return env


def fake_metrics(top1, ece=10.0, mce=30.0, many=90.0, medium=70.0, few=40.0, epochs=200, imb=100.0) -> dict:
    """A run folder's metrics.json with made-up numbers (percent), as the ablation grid reads it."""
    return {"final": {"top1": top1, "ece": ece, "mce": mce, "many": many, "medium": medium, "few": few, "nll": 80.0,
                      "head": top1 + 10, "mid": top1, "tail": top1 - 10},
            "epochs": [{"epoch": e, "epoch_time_s": 1.5} for e in range(epochs)],
            "lt": {"dataset": "cifar10_lt", "imb_factor": imb, "epochs": epochs, "versions": {"lt_registry_commit": "abc"}}}


def fake_grid(root: Path):
    """A finished grid under ``root/runs``: mixers none / unimix:paper x losses ce / bayias x seeds 0 / 1 at cifar10_lt
    rho 100 with made-up top-1 (None-CE 70 / 72, None-Bayias 78 / 80, UniMix-CE 76 / -, UniMix-Bayias 82 / 83);
    UniMix-CE seed 1 has no run folder and a grid.json record saying it failed.
    Returns ``(cells, runs_dir, records)``."""
    import json

    from lt_registry.grid import expand_grid

    cells = expand_grid(["none", "unimix:paper"], ["ce", "bayias"], ["cifar10_lt"], [100.0], [0, 1])
    runs = Path(root) / "runs"
    top1 = {("none", "ce"): (70.0, 72.0), ("none", "bayias"): (78.0, 80.0), ("unimix", "ce"): (76.0, None),
            ("unimix", "bayias"): (82.0, 83.0)}
    for c in cells:
        v = top1[(c.mix.name, c.loss.name)][c.seed]
        if v is not None:
            (runs / c.name).mkdir(parents=True)
            (runs / c.name / "metrics.json").write_text(json.dumps(fake_metrics(v, ece=20.0 - c.seed * 2)))
    records = {"cifar10_lt-r100-unimix-ce-s1": {"status": "failed", "error": "error: CUDA out of memory", "wall_s": 3.0}}
    return cells, runs, records


def run_train(output, *args, name: str = "run", check: bool = True, timeout: int = 600):
    """``recipes/train.py --output OUTPUT --experiment NAME ARGS`` in a child process (offline, 2 threads)."""
    cmd = [sys.executable, str(TRAIN), "--output", str(output), "--experiment", name, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=offline_env(OMP_NUM_THREADS="2"),
                       cwd=ROOT)
    if check and p.returncode != 0:
        raise AssertionError(f"train.py failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


#: the shared finished run: 4 epochs of resnet20_cifar on digits_lt with the Bayias loss
TINY_RUN_ARGS = ["--model", "resnet20_cifar", "--epochs", "4", "-b", "64", "--workers", "0", "--no-progress",
                 "--loss", "bayias"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run folder (:data:`TINY_RUN_ARGS`), trained once per pytest session; copy it before changing it."""
    run = tmp_path_factory.getbasetemp() / "shared_tiny_run" / "run"
    if not (run / "README.md").is_file():
        run_train(run.parent, *TINY_RUN_ARGS, name="run")
    return run


@pytest.fixture
def outside_components():
    """A loss (``outside_ce``: CE under another name, label "OutsideCE", table order 4.5, between LA and Bayias) and
    a mixer (``outside_mix``: mixup, label "OutsideMix", order 0.5, after None) registered from outside the package,
    as a user would; removed again afterwards."""
    from lt_registry import LOSSES, MIXERS, register_loss, register_mixer
    from lt_registry.losses import CrossEntropy
    from lt_registry.mixers.standard import Mixup

    register_loss("outside_ce", label="OutsideCE", order=4.5)(type("OutsideCE", (CrossEntropy,), {}))
    register_mixer("outside_mix", label="OutsideMix", order=0.5)(type("OutsideMix", (Mixup,), {}))
    yield
    LOSSES._entries.pop("outside_ce")
    MIXERS._entries.pop("outside_mix")


def make_image_folder(root: Path, counts, *, splits=("train",), test_per_class: int = 4, seed: int = 0,
                      class_names=None) -> Path:
    """An own-data image folder ``root/<split>/<class>/<i>.<ext>`` with ``counts[c]`` training images of class c
    in mixed sizes (non-square among them) and modes (RGB, L, RGBA, P, CMYK), each class a different mean
    colour so a model can learn it; every other split gets ``test_per_class`` images per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = list(class_names or [f"class_{c}" for c in range(len(counts))])
    sizes = [(40, 30), (36, 36), (52, 44), (30, 48)]
    modes = ["RGB", "L", "RGBA", "P", "CMYK"]
    for split in splits:
        for c, name in enumerate(names):
            d = Path(root) / split / name
            d.mkdir(parents=True, exist_ok=True)
            n = counts[c] if split == "train" else test_per_class
            for i in range(n):
                w, h = sizes[(i + c) % len(sizes)]
                base = np.array([(c * 53) % 256, (c * 97 + 60) % 256, (255 - c * 41) % 256], dtype=np.float64)
                arr = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
                img = Image.fromarray(arr, "RGB")
                mode = modes[(i + 2 * c) % len(modes)]
                if mode == "P":
                    img = img.convert("P", palette=Image.Palette.ADAPTIVE)
                elif mode != "RGB":
                    img = img.convert(mode)
                ext = "jpg" if mode in ("L", "CMYK") else "png"
                img.save(d / f"{i:04d}.{ext}")
    return Path(root)
