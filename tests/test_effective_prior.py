"""The effective label prior of the registry mixers, against an independent computation of paper Eq. 6-9."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from lt_registry import create_mixer
from lt_registry.mixers import effective_label_prior
from lt_registry.prior import long_tail_counts

C10 = long_tail_counts(5000, 10, 100)


def _labels(counts):
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def _reference(counts, alpha, tau, pairs=400_000, seed=0):
    """Monte Carlo of Eq. 6-9 in numpy, sharing no code with the library: anchor class ~ pi, partner class
    ~ pi^tau, xi = (Beta(alpha, alpha) + pi_j / (pi_i + pi_j)) mod 1; weight xi to y_i and 1 - xi to y_j."""
    rng = np.random.default_rng(seed)
    pi = np.asarray(counts, float) / sum(counts)
    q = pi ** tau / (pi ** tau).sum()
    yi = rng.choice(len(pi), pairs, p=pi)
    yj = rng.choice(len(pi), pairs, p=q)
    xi = (rng.beta(alpha, alpha, pairs) + pi[yj] / (pi[yi] + pi[yj])) % 1.0
    mass = np.bincount(yi, xi, len(pi)) + np.bincount(yj, 1 - xi, len(pi))
    return mass / mass.sum()


def test_no_mixing_over_one_epoch_is_exactly_the_training_prior():
    counts = [60, 30, 10]
    got = effective_label_prior(create_mixer("none", class_counts=counts), _labels(counts), batches=5, batch_size=20)
    assert torch.allclose(got, torch.tensor([0.6, 0.3, 0.1]), atol=1e-6)


@pytest.mark.parametrize("preset, alpha, tau", [("paper", 0.5, -1.0), ("official", 0.8, 0.5)])
def test_unimix_matches_the_formula(preset, alpha, tau):
    mixer = create_mixer("unimix", class_counts=C10, preset=preset, dataset="cifar10_lt")
    assert (mixer.alpha, mixer.tau) == (alpha, tau)
    got = effective_label_prior(mixer, _labels(C10), batches=600, batch_size=128).numpy()
    ref = _reference(C10, alpha, tau)
    assert np.abs(got - ref).max() < 0.012, (got.round(3), ref.round(3))
    # the two presets differ in kind: 'paper' (tau = -1) hands the tail most of the label weight
    if preset == "paper":
        assert got[-1] > got[0] and got[-1] > 40 * C10[-1] / sum(C10)
    else:
        assert got[0] > got[-1] and got[0] / got[-1] < 0.5 * C10[0] / C10[-1]


def test_mixup_keeps_the_prior_and_remix_moves_weight_to_the_tail():
    y = _labels(C10)
    pi = torch.tensor(C10, dtype=torch.float32) / sum(C10)
    mixup = effective_label_prior(create_mixer("mixup", class_counts=C10), y, batches=300)
    remix = effective_label_prior(create_mixer("remix", class_counts=C10), y, batches=300)
    assert torch.allclose(mixup, pi, atol=0.01)
    assert remix[0] < pi[0] - 0.01 and (remix[5:] > pi[5:]).all()


def test_bad_input_is_explained():
    counts = [5, 3, 2]
    mixer = create_mixer("unimix", class_counts=counts)
    with pytest.raises(ValueError, match="cover each of the mixer's 3 classes"):
        effective_label_prior(mixer, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="out of range for num_classes=3"):
        effective_label_prior(mixer, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="partner must be 'dataset' or 'batch'"):
        effective_label_prior(mixer, _labels(counts), partner="global")
    with pytest.raises(ValueError, match="positive integers"):
        effective_label_prior(mixer, _labels(counts), batches=0)


def _recipe():
    path = Path(__file__).resolve().parents[1] / "recipes" / "effective_prior.py"
    spec = importlib.util.spec_from_file_location("effective_prior_recipe", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recipe_writes_the_table(tmp_path, capsys):
    recipe = _recipe()
    out = tmp_path / "prior.md"
    assert recipe.main(["--mix", "none", "unimix:paper", "--batches", "50", "--output", str(out)]) == 0
    text = out.read_text()
    assert "| training prior pi | 40.3 | 24.2 |" in text and "UniMix(preset='paper'" in text
    assert len([ln for ln in text.splitlines() if ln.startswith("| ")]) == 4  # header + prior + 2 mixers
    assert recipe.main(["--mix", "unimx"]) == 2
    assert "Unknown mixer 'unimx'" in capsys.readouterr().err
    assert recipe.main(["--counts", "10", "0", "--mix", "none"]) == 2
