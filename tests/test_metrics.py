"""Tests for lt_registry.metrics (docs/method.md §6): accuracy splits, the confusion matrix and calibration metrics.

Expected numbers in the hand-computed cases are written out from the definitions; ECE/MCE are also
checked against torchmetrics as an independent oracle, and ACE/SCE against naive loop references.
"""
import json
import math

import pytest
import torch

from lt_registry import ClassPrior
from lt_registry.metrics import (
    adaptive_calibration_error,
    brier_score,
    calibration_errors_from_bins,
    calibration_metrics,
    confusion_matrix,
    evaluate_predictions,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    per_class_accuracy,
    reliability_bins,
    split_accuracy,
    static_calibration_error,
    top1_accuracy,
)

tm_cls = pytest.importorskip("torchmetrics.functional.classification")

# 4 samples, 3 classes, distinct values within each column (no ties at range boundaries)
P = torch.tensor([[0.7, 0.2, 0.1],
                  [0.5, 0.3, 0.2],
                  [0.2, 0.5, 0.3],
                  [0.1, 0.1, 0.8]])
Y = torch.tensor([0, 1, 1, 2])


def _random_case(seed, n, c, temperature, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * temperature
    labels = torch.randint(0, c, (n,), generator=g)
    return logits.softmax(dim=1).to(dtype), labels


# ---- ECE / MCE against torchmetrics -----------------------------------------------------------------

@pytest.mark.parametrize("seed,n,c,temperature,dtype", [
    (0, 500, 10, 3.0, torch.float32),
    (1, 1000, 100, 5.0, torch.float32),
    (2, 64, 3, 1.0, torch.float32),
    (3, 300, 7, 0.3, torch.float64),
])
def test_ece_mce_match_torchmetrics(seed, n, c, temperature, dtype):
    probs, labels = _random_case(seed, n, c, temperature, dtype)
    ref_ece = tm_cls.multiclass_calibration_error(probs, labels, c, n_bins=15, norm="l1").item()
    ref_mce = tm_cls.multiclass_calibration_error(probs, labels, c, n_bins=15, norm="max").item()
    assert ref_ece > 0.01 and ref_mce > 0.01  # a non-trivial comparison
    assert expected_calibration_error(probs, labels, n_bins=15) == pytest.approx(ref_ece, abs=1e-5)
    assert maximum_calibration_error(probs, labels, n_bins=15) == pytest.approx(ref_mce, abs=1e-5)
    m = calibration_metrics(probs, labels, n_bins=15)
    assert m["ece"] == pytest.approx(ref_ece, abs=1e-5)
    assert m["mce"] == pytest.approx(ref_mce, abs=1e-5)


def test_ece_mce_hand_case():
    # confidences 0.7 (ok), 0.5 (wrong: label 1, pred 0), 0.5 (ok), 0.8 (ok); 5 bins (0.2 wide, right-closed):
    # 0.5 -> bin 2 (0.4, 0.6], 0.7 -> bin 3, 0.8 -> bin 3 (0.6, 0.8]
    # bin 2: acc 1/2, conf 0.5 -> gap 0; bin 3: acc 1, conf 0.75 -> gap 0.25 (weight 2/4)
    assert expected_calibration_error(P, Y, n_bins=5) == pytest.approx(0.5 * 0.25)
    assert maximum_calibration_error(P, Y, n_bins=5) == pytest.approx(0.25)


@pytest.mark.parametrize("seed,n,c,temperature,n_bins", [(0, 500, 10, 3.0, 15), (3, 300, 7, 0.3, 10),
                                                         (5, 40, 4, 8.0, 20)])
def test_calibration_errors_from_bins_agree_with_ece_mce(seed, n, c, temperature, n_bins):
    probs, labels = _random_case(seed, n, c, temperature, torch.float64)
    bins = reliability_bins(probs, labels, n_bins=n_bins)
    ece, mce = calibration_errors_from_bins(bins)
    assert ece > 0.01 and mce > ece  # a non-trivial comparison
    assert ece == pytest.approx(expected_calibration_error(probs, labels, n_bins=n_bins), abs=1e-12)
    assert mce == pytest.approx(maximum_calibration_error(probs, labels, n_bins=n_bins), abs=1e-12)


def test_calibration_errors_from_bins_hand_case_and_bad_bins():
    # ECE = 2/8 * |0.5 - 0.25| + 6/8 * |0.5 - 0.9| = 0.0625 + 0.3 = 0.3625; MCE = 0.4; the empty bin is ignored
    bins = {"count": [2, 0, 6], "accuracy": [0.5, float("nan"), 0.5], "confidence": [0.25, float("nan"), 0.9]}
    ece, mce = calibration_errors_from_bins(bins)
    assert ece == pytest.approx(0.3625) and mce == pytest.approx(0.4)
    with pytest.raises(ValueError, match="'count', 'accuracy' and 'confidence'"):
        calibration_errors_from_bins({"count": [1]})
    with pytest.raises(ValueError, match="at least one sample"):
        calibration_errors_from_bins({"count": [0, 0], "accuracy": [0, 0], "confidence": [0, 0]})
    with pytest.raises(ValueError, match="n >= 1 counts"):
        calibration_errors_from_bins({"count": [1, 2], "accuracy": [0.5], "confidence": [0.5, 0.5]})


# ---- bins and their convention -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_confidence_exactly_one_fifteenth_lands_in_first_bin(dtype):
    probs = torch.full((1, 15), 1 / 15, dtype=dtype)  # max prob == 1/15 in the input precision
    bins = reliability_bins(probs, torch.tensor([3]), n_bins=15)
    assert bins["count"] == [1] + [0] * 14
    # argmax of a tie is class 0: wrong for label 3
    assert bins["accuracy"][0] == 0.0
    assert bins["confidence"][0] == pytest.approx(1 / 15, rel=1e-3)


def test_bin_boundaries_are_right_closed():
    # max prob exactly 2/15 -> bin 1 (1/15, 2/15]; just above 2/15 -> bin 2; 1.0 -> last bin
    p_edge = torch.tensor([[2 / 15] * 7 + [1 / 15]], dtype=torch.float64)
    p_above = torch.tensor([[2 / 15 + 1e-6] * 7 + [1 / 15 - 7e-6]], dtype=torch.float64)
    p_one = torch.tensor([[0.0] * 7 + [1.0]], dtype=torch.float64)
    probs = torch.cat([p_edge, p_above, p_one])
    counts = reliability_bins(probs, torch.tensor([0, 0, 7]), n_bins=15)["count"]
    expected = [0] * 15
    expected[1] = expected[2] = expected[14] = 1
    assert counts == expected
    # with 2 bins, a confidence of exactly 0.5 belongs to (0, 0.5]
    half = torch.tensor([[0.5, 0.5]])
    assert reliability_bins(half, torch.tensor([0]), n_bins=2)["count"] == [1, 0]


def test_reliability_bins_content_and_scheme():
    bins = reliability_bins(P, Y, n_bins=5)
    assert bins["edges"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert bins["count"] == [0, 0, 2, 2, 0]
    assert bins["accuracy"][2:4] == pytest.approx([0.5, 1.0])
    assert bins["confidence"][2:4] == pytest.approx([0.5, 0.75])
    for b in (0, 1, 4):  # empty bins are NaN, not 0
        assert math.isnan(bins["accuracy"][b]) and math.isnan(bins["confidence"][b])
    assert "equal-width" in bins["scheme"] and "(b/5, (b+1)/5]" in bins["scheme"]
    # the dict is plain python data, so it can go into metrics.json as is
    json.dumps(bins)


# ---- ACE / TACE / SCE / Brier / NLL by hand ------------------------------------------------------------

def test_ace_hand_case():
    # R = 2 ranges of 2 per class, |acc - conf| per range:
    # class 0 sorted .1 .2 | .5 .7(hit): |0 - .15|, |.5 - .6|   -> .15, .10
    # class 1 sorted .1 .2 | .3(hit) .5(hit): |0 - .15|, |1 - .4| -> .15, .60
    # class 2 sorted .1 .2 | .3 .8(hit): |0 - .15|, |.5 - .55|  -> .15, .05
    expected = (0.15 + 0.10 + 0.15 + 0.60 + 0.15 + 0.05) / 6
    assert adaptive_calibration_error(P, Y, n_bins=2) == pytest.approx(expected)
    assert calibration_metrics(P, Y, n_bins=2)["ace"] == pytest.approx(expected)


def test_ace_unequal_ranges_follow_tensor_split():
    # 3 samples, R = 2 -> ranges of sizes 2 and 1 per class
    p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    y = torch.tensor([0, 0, 1])
    # class 0 sorted .2 .6(hit) | .9(hit): |.5 - .4| = .1, |1 - .9| = .1
    # class 1 sorted .1 .4 | .8(hit): |0 - .25| = .25, |1 - .8| = .2
    assert adaptive_calibration_error(p, y, n_bins=2) == pytest.approx((0.1 + 0.1 + 0.25 + 0.2) / 4)


def test_tace_hand_case():
    # threshold 0.2 drops the 0.1 of each class and keeps the 0.2s (only p < threshold is ignored);
    # 3 values per class into R = 2 ranges of sizes 2, 1
    # class 0 kept .2 .5 | .7(hit): |0 - .35|, |1 - .7|  -> .35, .30
    # class 1 kept .2 .3(hit) | .5(hit): |.5 - .25|, |1 - .5| -> .25, .50
    # class 2 kept .2 .3 | .8(hit): |0 - .25|, |1 - .8|  -> .25, .20
    expected = (0.35 + 0.30 + 0.25 + 0.50 + 0.25 + 0.20) / 6
    assert adaptive_calibration_error(P, Y, n_bins=2, threshold=0.2) == pytest.approx(expected)
    assert calibration_metrics(P, Y, n_bins=2, tace_threshold=0.2)["tace"] == pytest.approx(expected)


def test_tace_default_threshold_ignores_tiny_probabilities():
    p = torch.tensor([[0.9999, 0.0001], [0.3, 0.7]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    # one range per class (R = 1)
    # ACE: class 0 {.9999 hit, .3}: |.5 - .64995|; class 1 {.0001, .7 hit}: |.5 - .35005|
    ace = (0.14995 + 0.14995) / 2
    # TACE drops p = .0001: class 1 {.7 hit}: |1 - .7| = .3
    tace = (0.14995 + 0.3) / 2
    m = calibration_metrics(p, y, n_bins=1)
    assert m["ace"] == pytest.approx(ace)
    assert m["tace"] == pytest.approx(tace)


def test_sce_hand_case():
    # 2 bins (0, .5], (.5, 1]; per class sum_b |hits_b - sum p_b|, then / (N C):
    # class 0: bin0 {.5, .2, .1} no hit -> .8 ; bin1 {.7 hit} -> .3     => 1.1
    # class 1: bin0 {.2, .3 hit, .5 hit, .1} -> |2 - 1.1| = .9          => 0.9
    # class 2: bin0 {.1, .2, .3} -> .6 ; bin1 {.8 hit} -> .2             => 0.8
    expected = (1.1 + 0.9 + 0.8) / (4 * 3)
    assert static_calibration_error(P, Y, n_bins=2) == pytest.approx(expected)
    assert calibration_metrics(P, Y, n_bins=2)["sce"] == pytest.approx(expected)


def test_brier_hand_case():
    # rows: (.3^2 + .2^2 + .1^2), (.5^2 + .7^2 + .2^2), (.2^2 + .5^2 + .3^2), (.1^2 + .1^2 + .2^2)
    expected = (0.14 + 0.78 + 0.38 + 0.06) / 4  # the 1/N form of docs/method.md §6, not 1/(N C)
    assert brier_score(P, Y) == pytest.approx(expected)
    assert calibration_metrics(P, Y)["brier"] == pytest.approx(expected)


def test_nll_hand_case_and_zero_probability():
    expected = -(math.log(0.7) + math.log(0.3) + math.log(0.5) + math.log(0.8)) / 4
    assert negative_log_likelihood(P, Y) == pytest.approx(expected)
    assert calibration_metrics(P, Y)["nll"] == pytest.approx(expected)
    # a zero probability on the true class is clamped: large but finite
    v = negative_log_likelihood(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert math.isfinite(v) and v > 50
    assert negative_log_likelihood(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), eps=1e-12) == \
        pytest.approx(-math.log(1e-12))


@pytest.mark.parametrize("n_bins", [1, 2, 15])
def test_perfect_confident_predictions_score_zero(n_bins):
    probs = torch.eye(5)[torch.tensor([0, 1, 2, 3, 4, 0, 2, 4])]
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 2, 4])
    m = calibration_metrics(probs, labels, n_bins=n_bins)
    for k in ("ece", "mce", "ace", "tace", "sce", "brier", "nll"):
        assert m[k] == pytest.approx(0.0, abs=1e-12), k
    assert top1_accuracy(probs, labels) == 1.0


# ---- vectorised ACE / SCE against naive loop references ---------------------------------------------

def _ace_reference(p, y, R, thr):
    errs = []
    for c in range(p.shape[1]):
        col = p[:, c]
        hits = (y == c).double()
        keep = col >= thr
        col, hits = col[keep], hits[keep]
        order = torch.sort(col, stable=True).indices
        for idx in torch.tensor_split(order, R):
            if len(idx):
                errs.append(abs(hits[idx].mean().item() - col[idx].mean().item()))
    return sum(errs) / len(errs)


def _sce_reference(p, y, n_bins):
    n, c = p.shape
    total = 0.0
    for k in range(c):
        for i_bin in range(n_bins):
            lo, hi = i_bin / n_bins, (i_bin + 1) / n_bins
            sel = ((p[:, k] > lo) | (i_bin == 0)) & (p[:, k] <= hi)
            if sel.any():
                acc = (y[sel] == k).double().mean().item()
                conf = p[sel, k].mean().item()
                total += sel.sum().item() / n * abs(acc - conf)
    return total / c


@pytest.mark.parametrize("seed,n,c,R", [(0, 60, 4, 15), (1, 37, 5, 15), (2, 10, 3, 4), (3, 6, 3, 15)])
def test_ace_tace_sce_match_loop_reference(seed, n, c, R):
    probs, labels = _random_case(seed, n, c, 4.0, torch.float64)
    m = calibration_metrics(probs, labels, n_bins=R)
    assert m["ace"] == pytest.approx(_ace_reference(probs, labels, R, 0.0), abs=1e-12)
    assert m["tace"] == pytest.approx(_ace_reference(probs, labels, R, 1e-3), abs=1e-12)
    assert m["sce"] == pytest.approx(_sce_reference(probs, labels, R), abs=1e-12)


# ---- accuracy -----------------------------------------------------------------------------------------

# 6 classes; counts chosen so that the count split and the index thirds differ
COUNTS = [500, 100, 150, 20, 1, 19]   # many {0, 2}; medium {1, 3}; few {4, 5}; thirds {0,1} {2,3} {4,5}
LABELS = torch.tensor([0, 0, 1, 1, 2, 3, 3, 3, 5, 5, 5, 5])
PREDS = torch.tensor([0, 0, 1, 0, 0, 3, 0, 1, 5, 0, 0, 0])
# per class: 2/2, 1/2, 0/1, 1/3, absent, 1/4


def test_per_class_accuracy_hand_case():
    acc = per_class_accuracy(PREDS, LABELS, 6)
    assert acc.shape == (6,)
    assert math.isnan(acc[4].item())
    torch.testing.assert_close(acc[[0, 1, 2, 3, 5]], torch.tensor([1.0, 0.5, 0.0, 1 / 3, 0.25], dtype=acc.dtype))
    # scores [N, C] give the same answer through their argmax
    logits = torch.nn.functional.one_hot(PREDS, 6).float() * 3.0
    torch.testing.assert_close(per_class_accuracy(logits, LABELS, 6), acc, equal_nan=True)
    assert top1_accuracy(logits, LABELS) == pytest.approx(5 / 12)


def test_split_accuracy_hand_case():
    acc = per_class_accuracy(PREDS, LABELS, 6)
    expected = {"many": (1.0 + 0.0) / 2, "medium": (0.5 + 1 / 3) / 2, "few": 0.25,  # class 4 (NaN) skipped
                "head": (1.0 + 0.5) / 2, "mid": (0.0 + 1 / 3) / 2, "tail": 0.25}
    for counts in (COUNTS, ClassPrior(COUNTS), torch.tensor(COUNTS)):
        got = split_accuracy(acc, counts)
        assert set(got) == set(expected)
        for k, v in expected.items():
            assert got[k] == pytest.approx(v), k
    # thresholds are arguments: with few=21 class 3 (20 images) moves from medium to few
    got = split_accuracy(acc, COUNTS, few=21)
    assert got["medium"] == pytest.approx(0.5) and got["few"] == pytest.approx((1 / 3 + 0.25) / 2)


def test_split_accuracy_empty_group_is_nan_and_zero_counts_allowed():
    got = split_accuracy([1.0, 0.5, 0.0], [300, 200, 0])
    assert got["many"] == pytest.approx(0.75) and got["few"] == pytest.approx(0.0)
    assert math.isnan(got["medium"])


def test_evaluate_predictions_consistent():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(200, 6, generator=g) * 2
    labels = torch.randint(0, 6, (200,), generator=g)
    out = evaluate_predictions(logits, labels, COUNTS)
    probs = logits.double().softmax(dim=1)
    assert out["top1"] == pytest.approx(top1_accuracy(logits, labels))
    assert out["per_class_accuracy"] == pytest.approx(per_class_accuracy(logits, labels, 6).tolist())
    split = split_accuracy(out["per_class_accuracy"], COUNTS)
    for k in ("many", "medium", "few", "head", "mid", "tail"):
        assert out[k] == pytest.approx(split[k])
    cal = calibration_metrics(probs, labels)
    for k in ("ece", "mce", "ace", "tace", "sce", "brier", "nll"):
        assert out[k] == pytest.approx(cal[k]), k
    assert out["nll"] == pytest.approx(torch.nn.functional.cross_entropy(logits.double(), labels).item())
    assert out["bins"]["count"] == cal["bins"]["count"] and sum(out["bins"]["count"]) == 200
    json.dumps(out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    probs, labels = _random_case(7, 300, 10, 3.0)
    cpu = calibration_metrics(probs, labels)
    gpu = calibration_metrics(probs.cuda(), labels.cuda())
    for k in ("ece", "mce", "ace", "tace", "sce", "brier", "nll"):
        assert gpu[k] == pytest.approx(cpu[k], abs=1e-9), k
    assert gpu["bins"]["count"] == cpu["bins"]["count"]
    out = evaluate_predictions(probs.log().cuda(), labels.cuda(), [100] * 10)
    assert out["top1"] == pytest.approx(top1_accuracy(probs, labels))


# ---- confusion matrix ---------------------------------------------------------------------------------

def test_confusion_matrix_hand_example():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    preds = torch.tensor([0, 1, 1, 1, 0, 2, 1, 3])
    cm = confusion_matrix(preds, labels, 4)
    expected = torch.tensor([[1, 1, 0, 0],
                             [1, 2, 0, 0],
                             [0, 1, 1, 0],
                             [0, 0, 0, 1]])
    assert cm.dtype == torch.int64 and torch.equal(cm, expected)
    # rows are true classes: row sums are the label counts, column sums the prediction counts
    assert cm.sum(1).tolist() == [2, 3, 2, 1] and cm.sum(0).tolist() == [2, 4, 1, 1]


def test_confusion_matrix_scores_and_loop_reference():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(500, 7, generator=g)
    labels = torch.randint(0, 7, (500,), generator=g)
    cm = confusion_matrix(scores, labels, 7)
    ref = torch.zeros(7, 7, dtype=torch.int64)
    for t, p in zip(labels.tolist(), scores.argmax(1).tolist()):
        ref[t, p] += 1
    assert torch.equal(cm, ref) and int(cm.sum()) == 500
    assert torch.equal(confusion_matrix(scores.argmax(1).int(), labels, 7), ref)


def test_confusion_matrix_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"preds: class index 3 is out of range for num_classes=3"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match=r"labels: class index -1 is out of range for num_classes=3"):
        confusion_matrix(torch.tensor([0, 2]), torch.tensor([-1, 1]), 3)
    with pytest.raises(ValueError, match=r"labels must be 1-D with shape \[N\] = \[3\]"):
        confusion_matrix(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="scores"):
        confusion_matrix(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]), 3)


# ---- bad inputs ---------------------------------------------------------------------------------------

GOOD_P = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
GOOD_Y = torch.tensor([0, 2])


@pytest.mark.parametrize("probs,labels,match", [
    (torch.tensor([[2.0, -1.0, 0.5], [0.1, 3.0, -2.0]]), GOOD_Y, r"softmax"),           # logits
    (torch.tensor([[0.5, 0.4, 0.05], [0.2, 0.2, 0.6]]), GOOD_Y, r"summing to 1"),        # row sums 0.95
    (torch.tensor([0.6, 0.4]), GOOD_Y, r"2-D with shape \[N, C\]"),
    (torch.tensor([[1, 0, 0], [0, 0, 1]]), GOOD_Y, r"floating-point"),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), r"empty \(N = 0"),
    (torch.tensor([[float("nan"), 0.5, 0.5], [0.2, 0.2, 0.6]]), GOOD_Y, r"NaN or infinite"),
    (GOOD_P, torch.tensor([0.0, 2.0]), r"labels must be integer class indices .* got dtype torch.float32"),
    (GOOD_P, torch.tensor([0, 3]), r"labels: class index 3 is out of range for num_classes=3"),
    (GOOD_P, torch.tensor([-1, 2]), r"labels: class index -1 is out of range for num_classes=3"),
    (GOOD_P, torch.tensor([0, 1, 2]), r"labels must be 1-D with shape \[N\] = \[2\] .*got shape \(3,\)"),
    (GOOD_P, torch.tensor([[0], [2]]), r"labels must be 1-D"),
])
def test_bad_probs_or_labels_raise(probs, labels, match):
    for fn in (calibration_metrics, expected_calibration_error, maximum_calibration_error,
               adaptive_calibration_error, static_calibration_error, brier_score, negative_log_likelihood,
               reliability_bins):
        with pytest.raises(ValueError, match=match):
            fn(probs, labels)


@pytest.mark.parametrize("n_bins", [0, -3, 1.5, True, "15"])
def test_bad_n_bins_raise(n_bins):
    with pytest.raises(ValueError, match=r"n_bins must be a positive integer"):
        calibration_metrics(GOOD_P, GOOD_Y, n_bins=n_bins)
    with pytest.raises(ValueError, match=r"n_bins must be a positive integer"):
        expected_calibration_error(GOOD_P, GOOD_Y, n_bins=n_bins)


def test_bad_thresholds_raise():
    with pytest.raises(ValueError, match=r"tace_threshold must be a number in \[0, 1\)"):
        calibration_metrics(GOOD_P, GOOD_Y, tace_threshold=1.5)
    with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\)"):
        adaptive_calibration_error(GOOD_P, GOOD_Y, threshold=-0.1)
    with pytest.raises(ValueError, match=r"eps must be None or a number in \(0, 1\)"):
        negative_log_likelihood(GOOD_P, GOOD_Y, eps=0)


def test_bad_accuracy_inputs_raise():
    with pytest.raises(ValueError, match=r"num_classes is required"):
        per_class_accuracy(torch.tensor([0, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"1-D preds_or_logits must hold integer"):
        per_class_accuracy(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match=r"has 3 columns but num_classes=4"):
        per_class_accuracy(GOOD_P, GOOD_Y, 4)
    with pytest.raises(ValueError, match=r"predicted classes: class index 5 is out of range for num_classes=2"):
        per_class_accuracy(torch.tensor([0, 5]), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match=r"labels: class index 7 is out of range for num_classes=3"):
        top1_accuracy(GOOD_P, torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r"labels: class index 3 is out of range for num_classes=3"):
        evaluate_predictions(GOOD_P, torch.tensor([3, 0]), [10, 20, 30])
    with pytest.raises(ValueError, match=r"per_class_acc must have shape \[C\] with C = 3"):
        split_accuracy([1.0, 0.5], [300, 50, 5])
    with pytest.raises(ValueError, match=r"needs class_counts"):
        split_accuracy([1.0, 0.5], None)
    with pytest.raises(ValueError, match=r"class_counts has 2 entries but logits have C = 3"):
        evaluate_predictions(GOOD_P, GOOD_Y, [10, 20])
    with pytest.raises(ValueError, match=r"logits must be 2-D"):
        evaluate_predictions(torch.tensor([0.1, 0.2]), GOOD_Y, [10, 20])
