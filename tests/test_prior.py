import math

import pytest
import torch

from lt_registry import ClassPrior, long_tail_counts


@pytest.mark.parametrize("C,n_max,rho,total", [(10, 5000, 100, 12406), (10, 5000, 50, 13996), (10, 5000, 10, 20431),
                                                (10, 5000, 200, 11203), (100, 500, 100, 10847), (100, 500, 50, 12608),
                                                (100, 500, 10, 19573), (100, 500, 200, 9502)])
def test_long_tail_counts_match_spec_totals(C, n_max, rho, total):
    assert sum(long_tail_counts(n_max, C, rho)) == total


def test_long_tail_profile_and_reversed():
    assert long_tail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert long_tail_counts(5000, 10, 0.01) == long_tail_counts(5000, 10, 100)[::-1]
    assert long_tail_counts(1000, 10, 1) == [1000] * 10
    with pytest.raises(ValueError, match="imb_factor"):
        long_tail_counts(10, 5, 0)


def test_prior_offset_and_from_labels():
    p = ClassPrior.from_labels(torch.tensor([0, 0, 0, 1, 2, 2]))
    assert torch.allclose(p.probs, torch.tensor([0.5, 1 / 6, 1 / 3]))
    assert torch.allclose(p.log_probs, torch.log(torch.tensor([0.5, 1 / 6, 1 / 3])))
    assert torch.allclose(p.offset(), p.log_probs + math.log(3))
    pt = torch.tensor([0.2, 0.3, 0.5])
    assert torch.allclose(p.offset(pt), p.log_probs - torch.log(pt))
    assert torch.allclose(p.offset([2.0, 3.0, 5.0]), p.offset(pt))  # normalised
    assert p.num_classes == 3 and p.imbalance_factor == 3.0
    assert ClassPrior.from_labels([1, 1], num_classes=4, smoothing=1).counts.tolist() == [1, 3, 1, 1]


def test_many_medium_few_split():
    p = ClassPrior([500, 101, 100, 20, 19, 1])
    s = p.split()
    assert s["many"].tolist() == [True, True, False, False, False, False]
    assert s["medium"].tolist() == [False, False, True, True, False, False]
    assert s["few"].tolist() == [False, False, False, False, True, True]
    t = ClassPrior([1] * 10).thirds()
    assert [int(v.sum()) for v in t.values()] == [4, 3, 3]


@pytest.mark.parametrize("bad,match", [([], "empty"), ([3, -1], "negative at class indices \\[1\\]"),
                                       ([3, 0, 2], "classes \\[1\\] have no training samples"),
                                       ([[1, 2]], "1-D"), ([1, float("nan")], "NaN"), ("abc", "1-D sequence")])
def test_bad_counts_are_rejected_with_reason(bad, match):
    with pytest.raises(ValueError, match=match):
        ClassPrior(bad)


def test_bad_labels_and_test_priors():
    with pytest.raises(ValueError, match="labels are empty"):
        ClassPrior.from_labels([])
    with pytest.raises(ValueError, match="labels: class index 2 is out of range for num_classes=2"):
        ClassPrior.from_labels([0, 2], num_classes=2)
    with pytest.raises(ValueError, match="labels: class index -1 is out of range"):
        ClassPrior.from_labels([0, -1])
    with pytest.raises(ValueError, match="labels must be integer class indices"):
        ClassPrior.from_labels([0.5, 1.0])
    with pytest.raises(ValueError, match=r"labels must be 1-D with shape \[N\]"):
        ClassPrior.from_labels([[0, 1]])
    with pytest.raises(ValueError, match="one entry per class \\(3\\)"):
        ClassPrior([1, 2, 3]).offset([0.5, 0.5])
    with pytest.raises(ValueError, match="positive and finite"):
        ClassPrior([1, 2, 3]).offset([0.5, 0.5, 0.0])
    assert ClassPrior([3, 0], smoothing=0.5).counts.tolist() == [3.5, 0.5]
