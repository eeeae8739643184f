import importlib.util
import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def load_recipe(name: str):
    """A recipe script (``recipes/<name>.py``) as a module, to call its ``main(argv)`` in this process."""
    spec = importlib.util.spec_from_file_location(f"lt_recipe_{name}", RECIPES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def lt_counts():
    """CIFAR-10-LT rho 100 counts (SPEC 4)."""
    return [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
