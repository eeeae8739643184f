r"""Calibration metrics: ECE, MCE, ACE, TACE, SCE, Brier score, NLL and reliability-diagram bins (docs/method.md §6).

Conventions (docs/method.md §6; Guo et al. 2017, "On Calibration of Modern Neural Networks"; Nixon et al. 2019,
"Measuring Calibration in Deep Learning"):

* ``probs`` is [N, C] (rows sum to 1), ``labels`` is [N]; confidence ``conf_i = max_c p_ic``,
  prediction ``argmax_c p_ic`` (ties to the lowest index).
* Equal-width bins are right-closed: bin ``b`` (``b = 0..n-1``) holds values ``v`` with
  ``b/n < v <= (b+1)/n``; ``v = 0`` falls in bin 0. Boundaries are ``k/n`` rounded to the input dtype, so a
  value equal to ``1/15`` in the input's precision lands in bin 0.
* All results are fractions (not percent), returned as python floats. Sums are accumulated in float64
  (float32 on MPS) on the inputs' device; there is no Python loop over samples or bins.

Every public function validates its inputs and raises ValueError naming what was wrong; the private
``_*`` helpers are the single home of each formula and assume checked inputs.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from ._checks import check_n_bins, check_probs, work_dtype

__all__ = [
    "calibration_metrics",
    "expected_calibration_error",
    "maximum_calibration_error",
    "adaptive_calibration_error",
    "static_calibration_error",
    "brier_score",
    "negative_log_likelihood",
    "reliability_bins",
    "binning_scheme",
    "calibration_errors_from_bins",
]


def binning_scheme(n_bins: int) -> str:
    """The human-readable description of the equal-width binning, recorded with every set of bins."""
    return (f"equal-width, {n_bins} bins, bin b = (b/{n_bins}, (b+1)/{n_bins}] for b = 0..{n_bins - 1} "
            f"(right-closed; confidence 0 falls in bin 0)")


# ---- private helpers: one home per formula ---------------------------------------------------------

def _edges(n_bins: int, in_dtype: torch.dtype, device: torch.device, dtype: torch.dtype) -> Tensor:
    # k/n computed exactly in float64, rounded to the input precision, then widened (exactly) for comparison:
    # comparing in the widened dtype is then identical to comparing in the input dtype.
    return torch.arange(n_bins + 1, dtype=torch.float64).div(n_bins).to(in_dtype).to(dtype).to(device)


def _bin_index(values: Tensor, n_bins: int, in_dtype: torch.dtype) -> Tensor:
    """Right-closed equal-width bin of each value: ``b`` with ``b/n < v <= (b+1)/n``; ``v <= 1/n`` -> 0."""
    inner = _edges(n_bins, in_dtype, values.device, values.dtype)[1:-1].contiguous()
    # bucketize(right=False) returns i with inner[i-1] < v <= inner[i]: exactly the right-closed bin.
    return torch.bucketize(values, inner, right=False)


def _group_sums(group: Tensor, num_groups: int, conf: Tensor, hit: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-group (count, sum of confidences, sum of hits) via index_add (vectorised, any device)."""
    z = torch.zeros(num_groups, dtype=conf.dtype, device=conf.device)
    count = z.clone().index_add_(0, group, torch.ones_like(conf))
    conf_sum = z.clone().index_add_(0, group, conf)
    hit_sum = z.index_add_(0, group, hit)
    return count, conf_sum, hit_sum


def _top_label(p: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
    """Confidence (max prob, in the work dtype) and correctness (1.0 / 0.0) of each sample."""
    conf, pred = p.max(dim=1)
    dt = work_dtype(p.device)
    return conf.to(dt), (pred == y).to(dt)


def _reliability(p: Tensor, y: Tensor, n_bins: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Top-label (count, confidence sum, hit sum) per right-closed equal-width confidence bin, each [n_bins]."""
    conf, hit = _top_label(p, y)
    return _group_sums(_bin_index(conf, n_bins, p.dtype), n_bins, conf, hit)


def _ece(count: Tensor, conf_sum: Tensor, hit_sum: Tensor) -> Tensor:
    # sum_b |B_b|/N |acc_b - conf_b| = sum_b |hits_b - confs_b| / N; empty bins contribute 0.
    return (hit_sum - conf_sum).abs().sum() / count.sum()


def _mce(count: Tensor, conf_sum: Tensor, hit_sum: Tensor) -> Tensor:
    nonempty = count > 0
    return ((hit_sum[nonempty] - conf_sum[nonempty]).abs() / count[nonempty]).max()


def _onehot(y: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    return torch.nn.functional.one_hot(y, num_classes).to(dtype)


def _ace(p: Tensor, y: Tensor, n_ranges: int, threshold: float) -> Tensor:
    """Adaptive calibration error over all class probabilities (Nixon et al. 2019); see the public docstring."""
    N, C = p.shape
    dt = work_dtype(p.device)
    keep = p >= torch.tensor(threshold, dtype=torch.float64).to(p.dtype)  # compared in the input precision
    # class-major [C, N]; ignored probabilities sort to the end of their row; ties keep sample order
    key = torch.where(keep, p, torch.full_like(p, math.inf)).t().contiguous()
    p_s, order = torch.sort(key, dim=1, stable=True)
    keep_s = torch.isfinite(p_s)                                  # p itself is checked finite
    classes = torch.arange(C, device=p.device).unsqueeze(1)      # [C, 1]
    hit_s = (y[order] == classes).to(dt)
    # split the n_c kept values of class c into R ranges like torch.tensor_split / np.array_split:
    # the first (n_c mod R) ranges hold one extra value.
    n_kept = keep_s.sum(dim=1, keepdim=True)                      # [C, 1]
    q, r = n_kept // n_ranges, n_kept % n_ranges
    big = r * (q + 1)                                             # values held by the larger ranges
    rank = torch.arange(N, device=p.device).unsqueeze(0)          # [1, N]
    rng = torch.where(rank < big, rank // (q + 1), r + (rank - big) // q.clamp(min=1))
    # ignored entries go to one extra overflow group, dropped below (no boolean indexing, no host sync)
    group = torch.where(keep_s, rng + n_ranges * classes, C * n_ranges)
    conf = torch.where(keep_s, p_s, torch.zeros_like(p_s)).to(dt)
    count, conf_sum, hit_sum = (t[:-1] for t in _group_sums(group.reshape(-1), C * n_ranges + 1,
                                                              conf.reshape(-1), hit_s.reshape(-1)))
    nonempty = count > 0
    if not bool(nonempty.any()):
        return torch.tensor(math.nan, dtype=dt, device=p.device)
    return ((hit_sum[nonempty] - conf_sum[nonempty]).abs() / count[nonempty]).mean()


def _sce(p: Tensor, y: Tensor, n_bins: int) -> Tensor:
    N, C = p.shape
    dt = work_dtype(p.device)
    pw = p.to(dt)
    group = _bin_index(pw, n_bins, p.dtype) + n_bins * torch.arange(C, device=p.device)  # [N, C]
    _, conf_sum, hit_sum = _group_sums(group.reshape(-1), C * n_bins, pw.reshape(-1), _onehot(y, C, dt).reshape(-1))
    # (1/C) sum_c sum_b |B_bc|/N |acc_bc - conf_bc| = sum_{b,c} |hits_bc - confs_bc| / (N C)
    return (hit_sum - conf_sum).abs().sum() / (N * C)


def _brier(p: Tensor, y: Tensor) -> Tensor:
    dt = work_dtype(p.device)
    pw = p.to(dt)
    return (_onehot(y, p.shape[1], dt) - pw).pow(2).sum(dim=1).mean()


def _nll(p: Tensor, y: Tensor, eps: Optional[float]) -> Tensor:
    dt = work_dtype(p.device)
    p_true = p.to(dt).gather(1, y.unsqueeze(1)).squeeze(1)
    floor = torch.finfo(p.dtype).tiny if eps is None else eps
    return (0.0 - p_true.clamp(min=floor).log()).mean()  # 0 - x, not -x: a perfect score reads 0.0, not -0.0


def _check_threshold(threshold: Any, name: str) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
        raise ValueError(f"{name} must be a number in [0, 1) (probabilities below it are ignored), "
                         f"got {threshold!r}.")
    return float(threshold)


def _bins_dict(count: Tensor, conf_sum: Tensor, hit_sum: Tensor, n_bins: int) -> Dict[str, Any]:
    count_c, conf_c, hit_c = count.cpu(), conf_sum.cpu(), hit_sum.cpu()
    return {
        "edges": [k / n_bins for k in range(n_bins + 1)],
        "count": [int(c) for c in count_c.round().tolist()],
        "accuracy": (hit_c / count_c).tolist(),       # NaN for empty bins
        "confidence": (conf_c / count_c).tolist(),    # NaN for empty bins
        "scheme": binning_scheme(n_bins),
    }


# ---- public functional API ---------------------------------------------------------------------------

def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    r"""Expected calibration error (Guo et al. 2017; docs/method.md §6), a fraction.

    .. math:: \mathrm{ECE} = \sum_{b=0}^{n-1} \frac{|B_b|}{N}\,\bigl|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)\bigr|

    with ``B_b`` the samples whose confidence (max prob) lies in ``(b/n, (b+1)/n]``, ``acc`` the fraction of
    correct top-1 predictions and ``conf`` the mean confidence in the bin.

    >>> round(expected_calibration_error(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1])), 6)
    0.35
    """
    p, y = check_probs(probs, labels)
    return _ece(*_reliability(p, y, check_n_bins(n_bins))).item()


def maximum_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    r"""Maximum calibration error (Guo et al. 2017; docs/method.md §6): the largest bin gap over non-empty bins.

    .. math:: \mathrm{MCE} = \max_{b:\,|B_b|>0} \bigl|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)\bigr|

    Same right-closed equal-width confidence bins as :func:`expected_calibration_error`.

    >>> round(maximum_calibration_error(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1])), 6)
    0.6
    """
    p, y = check_probs(probs, labels)
    return _mce(*_reliability(p, y, check_n_bins(n_bins))).item()


def adaptive_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15, threshold: float = 0.0) -> float:
    r"""Adaptive calibration error (ACE; Nixon et al. 2019; docs/method.md §6), or TACE with ``threshold > 0``.

    For each class ``c``, the probabilities ``p_ic`` of all N samples (only those ``>= threshold``) are sorted
    and split into ``R = n_bins`` equal-mass ranges ``r`` (sizes differ by at most one: the first
    ``n_c mod R`` ranges hold one extra value, as ``torch.tensor_split``; ties keep sample order). Then

    .. math:: \mathrm{ACE} = \frac{1}{CR}\sum_{c}\sum_{r} \bigl|\mathrm{acc}(r, c) - \mathrm{conf}(r, c)\bigr|

    with ``acc(r, c)`` the fraction of samples in the range labelled ``c`` and ``conf(r, c)`` their mean
    ``p_ic``. The average runs over the non-empty (class, range) cells, which is all ``C R`` of them when
    every class keeps at least R probabilities. TACE (thresholded ACE) is this with ``threshold=1e-3``;
    if no probability passes the threshold, the result is NaN.

    >>> p = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    >>> round(adaptive_calibration_error(p, torch.tensor([0, 1, 1, 1]), n_bins=2), 6)
    0.2
    """
    p, y = check_probs(probs, labels)
    return _ace(p, y, check_n_bins(n_bins), _check_threshold(threshold, "threshold")).item()


def static_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    r"""Static calibration error (SCE; Nixon et al. 2019; docs/method.md §6): classwise ECE averaged over classes.

    Every class probability ``p_ic`` is binned with the right-closed equal-width bins; ``B_bc`` are the
    samples whose ``p_ic`` falls in bin ``b``:

    .. math::
        \mathrm{SCE} = \frac{1}{C}\sum_{c}\sum_{b} \frac{|B_{bc}|}{N}\,
        \bigl|\mathrm{acc}(b, c) - \mathrm{conf}(b, c)\bigr|

    with ``acc(b, c)`` the fraction of ``B_bc`` labelled ``c`` and ``conf(b, c)`` the mean ``p_ic`` over it.

    >>> round(static_calibration_error(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]), 15), 6)
    0.35
    """
    p, y = check_probs(probs, labels)
    return _sce(p, y, check_n_bins(n_bins)).item()


def brier_score(probs: Tensor, labels: Tensor) -> float:
    r"""Multiclass Brier score in the 1/N form (docs/method.md §6; matches the paper's Table D1 values).

    .. math:: \mathrm{Brier} = \frac{1}{N}\sum_i\sum_c \bigl(\mathbb{1}[y_i = c] - p_{ic}\bigr)^2

    >>> round(brier_score(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1])), 6)
    0.37
    """
    p, y = check_probs(probs, labels)
    return _brier(p, y).item()


def negative_log_likelihood(probs: Tensor, labels: Tensor, eps: Optional[float] = None) -> float:
    r"""Mean negative log-likelihood of the true class (docs/method.md §6).

    .. math:: \mathrm{NLL} = -\frac{1}{N}\sum_i \log \max(p_{i, y_i}, \epsilon)

    ``eps`` defaults to the smallest normal number of the input dtype (``torch.finfo(dtype).tiny``), so a zero
    probability gives a large finite value instead of ``inf``.

    >>> round(negative_log_likelihood(torch.tensor([[0.5, 0.5], [0.25, 0.75]]), torch.tensor([0, 1])), 6)
    0.490415
    """
    p, y = check_probs(probs, labels)
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1):
        raise ValueError(f"eps must be None or a number in (0, 1), got {eps!r}.")
    return _nll(p, y, eps).item()


def reliability_bins(probs: Tensor, labels: Tensor, n_bins: int = 15) -> Dict[str, Any]:
    """Per-bin data for a reliability diagram (docs/method.md §6: "always record bins and scheme").

    Returns a JSON-friendly dict of python lists:

    * ``edges``: ``n_bins + 1`` boundaries ``k / n_bins``;
    * ``count``: samples per bin (int);
    * ``accuracy``: fraction of correct top-1 predictions per bin, **NaN for empty bins**;
    * ``confidence``: mean confidence (max prob) per bin, **NaN for empty bins**;
    * ``scheme``: the binning description (:func:`binning_scheme`), right-closed ``(b/n, (b+1)/n]``.

    >>> b = reliability_bins(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]), n_bins=3)
    >>> b['count'], b['accuracy']
    ([0, 1, 1], [nan, 0.0, 1.0])
    """
    p, y = check_probs(probs, labels)
    n_bins = check_n_bins(n_bins)
    return _bins_dict(*_reliability(p, y, n_bins), n_bins)


def calibration_errors_from_bins(bins: Mapping[str, Any]) -> Tuple[float, float]:
    r"""ECE and MCE (fractions) from reliability bins alone (docs/method.md §6), with the same formulas as
    :func:`expected_calibration_error` and :func:`maximum_calibration_error`:

    .. math:: \mathrm{ECE} = \sum_b \frac{|B_b|}{N} |\mathrm{acc}_b - \mathrm{conf}_b|, \qquad
              \mathrm{MCE} = \max_{b:\,|B_b|>0} |\mathrm{acc}_b - \mathrm{conf}_b|

    Args:
        bins: a dict with ``count``, ``accuracy`` and ``confidence`` per bin (``n`` each; accuracy and
            confidence are fractions, NaN or anything for empty bins), e.g. :func:`reliability_bins`' dict or
            :func:`lt_registry.report.read_bins_table` of a run folder's ``bins.csv``.

    >>> calibration_errors_from_bins({"count": [2, 6], "accuracy": [0.5, 0.5], "confidence": [0.25, 0.75]})
    (0.25, 0.25)
    """
    if not isinstance(bins, Mapping) or any(k not in bins for k in ("count", "accuracy", "confidence")):
        raise ValueError("bins must be a dict with 'count', 'accuracy' and 'confidence' per bin "
                         "(see reliability_bins).")
    try:
        count, acc, conf = (torch.as_tensor(bins[k], dtype=torch.float64).detach().cpu().reshape(-1)
                            for k in ("count", "accuracy", "confidence"))
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError("bins['count'], bins['accuracy'] and bins['confidence'] must be sequences of numbers.") from e
    if not (count.numel() == acc.numel() == conf.numel() >= 1):
        raise ValueError(f"bins must hold n >= 1 counts, accuracies and confidences; got {count.numel()}, "
                         f"{acc.numel()} and {conf.numel()}.")
    full = count > 0
    if not bool(torch.isfinite(count).all()) or bool((count < 0).any()) or not bool(full.any()):
        raise ValueError(f"bins['count'] must be non-negative with at least one sample, got {count.tolist()}.")
    # per-bin sums of confidences and hits, as _reliability gives them (empty bins: 0)
    conf_sum = torch.where(full, count * conf, torch.zeros_like(count))
    hit_sum = torch.where(full, count * acc, torch.zeros_like(count))
    return _ece(count, conf_sum, hit_sum).item(), _mce(count, conf_sum, hit_sum).item()


def calibration_metrics(probs: Tensor, labels: Tensor, n_bins: int = 15,
                        tace_threshold: float = 1e-3) -> Dict[str, Any]:
    """All calibration metrics of docs/method.md §6 in one pass over checked inputs.

    Returns ``{'ece', 'mce', 'ace', 'tace', 'sce', 'brier', 'nll'}`` as python floats (fractions) and ``'bins'``
    (:func:`reliability_bins`' dict). ACE/TACE use ``n_bins`` equal-mass ranges per class; TACE ignores
    probabilities below ``tace_threshold``. Each value comes from the same private helper as its own public
    function (:func:`expected_calibration_error`, ...), so the two always agree.
    """
    p, y = check_probs(probs, labels)
    n_bins = check_n_bins(n_bins)
    thr = _check_threshold(tace_threshold, "tace_threshold")
    rel = _reliability(p, y, n_bins)
    return {
        "ece": _ece(*rel).item(),
        "mce": _mce(*rel).item(),
        "ace": _ace(p, y, n_bins, 0.0).item(),
        "tace": _ace(p, y, n_bins, thr).item(),
        "sce": _sce(p, y, n_bins).item(),
        "brier": _brier(p, y).item(),
        "nll": _nll(p, y, None).item(),
        "bins": _bins_dict(*rel, n_bins),
    }
