import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def lt_counts():
    """CIFAR-10-LT rho 100 counts (SPEC 4)."""
    return [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
