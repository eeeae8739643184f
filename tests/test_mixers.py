"""Mixers against their formulas (docs/method.md §1, 3) and the paper's Corollaries 1-3 as simulations."""
import pytest
import torch
from scipy import stats

import lt_registry as L
from lt_registry.mixers import UNIMIX_PRESETS, resolve_unimix_preset, tau_from_code
from lt_registry.mixers.base import sample_beta

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_sample_beta_matches_beta_distribution():
    b = sample_beta(0.5, 0.5, 20000, device=torch.device("cpu"), generator=_gen())
    assert stats.kstest(b.numpy(), stats.beta(0.5, 0.5).cdf).pvalue > 0.01
    b2 = sample_beta(2.0, 5.0, 20000, device=torch.device("cpu"), generator=_gen(1))
    assert stats.kstest(b2.numpy(), stats.beta(2.0, 5.0).cdf).pvalue > 0.01
    assert stats.kstest(b2.numpy(), stats.beta(5.0, 2.0).cdf).pvalue < 1e-6  # the test can fail


def test_none_is_identity():
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    xm, t = L.create_mixer("none")(x, y)
    assert xm is x and torch.equal(t.y_a, y) and torch.all(t.lam == 1)


def test_mixup_one_lambda_per_batch_with_permuted_partner():
    x, y = torch.randn(32, 3, 4, 4), torch.arange(32)
    xm, t = L.create_mixer("mixup")(x, y, generator=_gen())
    lam = t.lam[0]
    assert torch.all(t.lam == lam) and torch.equal(t.y_a, y)
    assert sorted(t.y_b.tolist()) == list(range(32))  # a permutation of the batch
    assert torch.allclose(xm, lam * x + (1 - lam) * x[t.y_b], atol=1e-6)
    lams = torch.stack([L.create_mixer("mixup")(x, y, generator=_gen(s))[1].lam[0] for s in range(400)])
    assert stats.kstest(lams.numpy(), stats.uniform.cdf).pvalue > 0.01  # Beta(1, 1)


def test_mixers_reproducible_from_generator_and_partner_mode():
    x, y = torch.randn(16, 3, 4, 4), torch.randint(0, 10, (16,))
    for name in ("mixup", "remix", "unimix"):
        m = L.create_mixer(name, class_counts=COUNTS)
        a, b = m(x, y, generator=_gen(3)), m(x, y, generator=_gen(3))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1].lam, b[1].lam) and torch.equal(a[1].y_b, b[1].y_b)
        x2, y2 = torch.randn_like(x), torch.randint(0, 10, (16,))
        xm, t = m(x, y, partner=(x2, y2), generator=_gen(4))
        assert torch.equal(t.y_b, y2)
        w = t.lam if name != "remix" else None
        if w is not None:
            assert torch.allclose(xm, w.view(-1, 1, 1, 1) * x + (1 - w.view(-1, 1, 1, 1)) * x2, atol=1e-6)


def _remix_factors(monkeypatch, counts, lam_val, ya, yb, **opts):
    import lt_registry.mixers.standard as std

    monkeypatch.setattr(std, "sample_beta", lambda *a, **k: torch.tensor([lam_val]))
    return L.create_mixer("remix", class_counts=counts, **opts).factors(torch.tensor(ya), torch.tensor(yb), None)


def test_remix_label_rule_cases(monkeypatch):
    counts = [900, 300, 100]  # count ratios 3 and 9 reach kappa = 3
    ya, yb = [0, 0, 2, 2, 0, 1, 0], [2, 2, 0, 0, 1, 0, 0]
    for lam_val, expected in [
        (0.3, [0.0, 0.0, 0.3, 0.3, 0.0, 0.3, 0.3]),  # head anchor, lam < t: the label goes to the minority partner
        (0.8, [0.8, 0.8, 1.0, 1.0, 0.8, 1.0, 0.8]),  # minority anchor, 1 - lam < t: the label stays with it
    ]:
        lam_x, lam_y = _remix_factors(monkeypatch, counts, lam_val, ya, yb, kappa=3.0, t=0.5)
        assert torch.allclose(lam_x, torch.full((7,), lam_val))  # images always mixed with lam
        assert torch.allclose(lam_y, torch.tensor(expected)), (lam_val, lam_y)
    # count ratio below kappa, or lam not past the threshold t: the plain mixup label
    assert torch.allclose(_remix_factors(monkeypatch, [200, 100], 0.1, [0], [1], kappa=3.0)[1], torch.tensor([0.1]))
    assert torch.allclose(_remix_factors(monkeypatch, [900, 100], 0.6, [0], [1], t=0.5)[1], torch.tensor([0.6]))


@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_unimix_factor_is_shifted_beta_mod_1(alpha):
    """docs/method.md §1.1: for fixed classes, xi = (Beta(alpha, alpha) + c_ij) mod 1, one draw per pair."""
    m = L.create_mixer("unimix", class_counts=COUNTS, alpha=alpha, tau=1.0)
    n = 20000
    # anchor class 1 (2997 images), partner class 3 (1077): c = 1077 / (2997 + 1077) = 0.264
    ya, yb = torch.full((n,), 1, dtype=torch.long), torch.full((n,), 3, dtype=torch.long)
    xi, lam_y = m.factors(ya, yb, _gen(7))
    assert torch.equal(xi, lam_y) and xi.std() > 0.1  # per pair, not one per batch
    c = 1077 / (2997 + 1077)
    shifted = torch.remainder(xi - c, 1.0).numpy()
    assert stats.kstest(shifted, stats.beta(alpha, alpha).cdf).pvalue > 0.01
    # the wrong shift (c_ji) or no shift is rejected: the test has power
    assert stats.kstest(torch.remainder(xi - (1 - c), 1.0).numpy(), stats.beta(alpha, alpha).cdf).pvalue < 1e-6
    assert stats.kstest(xi.numpy(), stats.beta(alpha, alpha).cdf).pvalue < 1e-6
    # head anchor + tail partner: the head image's expected weight E[(B + c) mod 1] = 1/2 + c - P(B >= 1 - c)
    # is below 1/2, so on average the sample is more the tail image
    xi_ht, _ = m.factors(torch.zeros(n, dtype=torch.long), torch.full((n,), 9, dtype=torch.long), _gen(8))
    c_ht = 50 / (5000 + 50)
    expected = 0.5 + c_ht - stats.beta(alpha, alpha).sf(1 - c_ht)
    assert expected < 0.5 and abs(float(xi_ht.mean()) - expected) < 0.01


def _chi2_pvalue(observed_counts, expected_probs):
    obs = observed_counts.double()
    exp = expected_probs.double() / expected_probs.sum() * obs.sum()
    return stats.chisquare(obs.numpy(), exp.numpy()).pvalue


@pytest.mark.parametrize("tau", [1.0, 0.0, -1.0])
def test_unimix_in_batch_partner_classes_follow_pi_tau(tau):
    """In-batch form: in a batch whose class counts follow pi, partners' classes follow pi^tau."""
    counts = [400, 200, 100, 50, 25]
    y = torch.repeat_interleave(torch.arange(5), torch.tensor([16, 8, 4, 2, 1]))  # batch composition ∝ pi
    m = L.create_mixer("unimix", class_counts=counts, tau=tau)
    g = _gen(11)
    partner_classes = torch.cat([y[m.pair_index(y, g)] for _ in range(2000)])
    obs = torch.bincount(partner_classes, minlength=5)
    pi = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    assert _chi2_pvalue(obs, pi ** tau) > 0.001
    if tau != 1.0:
        assert _chi2_pvalue(obs, pi) < 1e-6  # differs from random pairing


@pytest.mark.parametrize("tau", [1.0, 0.0, -1.0])
def test_unimix_dataset_partner_sampler_classes_follow_pi_tau(tau):
    """Dataset-level form (Algorithm 1): a prior_power sampler supplies partner=(x2, y2)."""
    counts = [400, 200, 100, 50, 25]
    labels = torch.repeat_interleave(torch.arange(5), torch.tensor(counts))
    sampler = L.create_sampler("prior_power", labels=labels, tau=tau, num_samples=20000, seed=1)
    idx = torch.tensor(list(iter(sampler)))
    m = L.create_mixer("unimix", class_counts=counts, tau=tau, partner="dataset")
    assert m.partner == "dataset"
    y2 = labels[idx[:256]]
    _, t = m(torch.zeros(256, 1), labels[:256], partner=(torch.ones(256, 1), y2), generator=_gen())
    assert torch.equal(t.y_b, y2)
    pi = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    assert _chi2_pvalue(torch.bincount(labels[idx], minlength=5), pi ** tau) > 0.001


def _dominant_class_histogram(pi, y_a, y_b, lam_x):
    """Class each mixed sample mostly belongs to (lam >= 0.5 -> its first image), as frequencies."""
    dom = torch.where(lam_x >= 0.5, y_a, y_b)
    return torch.bincount(dom, minlength=pi.numel()).double() / dom.numel()


def test_corollaries_1_to_3_shapes():
    """Paper Corollaries 1-3 simulated at C = 100, rho = 200 (docs/method.md §1; paper Sec. 3.1).

    We report, per class-index third (head / middle / tail), the share of mixed samples that mostly belong
    there and the amplification h_k / pi_k (how much more often class k dominates a mixed sample than it
    occurs in the data).
    """
    C = 100
    counts = L.long_tail_counts(500, C, 200)
    pi = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    g = _gen(0)
    N = 400_000
    y_a = torch.multinomial(pi, N, replacement=True, generator=g)  # instance-balanced anchors
    thirds = (slice(0, 33), slice(33, 66), slice(66, 100))

    def shape(h):
        share = [float(h[s].sum()) for s in thirds]
        amp = [float((h[s] / pi[s]).mean()) for s in thirds]
        return share, amp

    # Corollary 1, mixup: random partner, lam ~ Beta(1, 1): the histogram follows the long tail
    y_b = torch.multinomial(pi, N, replacement=True, generator=g)
    lam = sample_beta(1.0, 1.0, N, device=torch.device("cpu"), generator=g)
    share, amp = shape(_dominant_class_histogram(pi, y_a, y_b, lam))
    assert share[0] > 0.8 and share[2] < 0.05
    assert all(abs(a - 1) < 0.05 for a in amp)

    # Corollary 2, UniMix factor with random partners (tau = 1): middle classes gain the most
    uf = L.create_mixer("unimix", class_counts=counts, alpha=0.5, tau=1.0)
    xi, _ = uf.factors(y_a, y_b, g)
    share2, amp2 = shape(_dominant_class_histogram(pi, y_a, y_b, xi))
    assert amp2[1] > amp2[2] > amp2[0] and amp2[1] > 1.15 and amp2[0] < 1.06
    assert share2[1] > share[1] + 0.02  # the middle third's share grows relative to mixup

    # Corollary 3, full UniMix with tau = -1 (tail-favoured partner): the tail third is the majority
    full = L.create_mixer("unimix", class_counts=counts, alpha=0.5, tau=-1.0)
    y_b3 = torch.multinomial(pi ** -1.0 / (pi ** -1.0).sum(), N, replacement=True, generator=g)
    xi3, _ = full.factors(y_a, y_b3, g)
    h3 = _dominant_class_histogram(pi, y_a, y_b3, xi3)
    share3, amp3 = shape(h3)
    assert share3[2] > max(share3[0], share3[1]) and share3[2] > 0.45
    assert int(h3.argmax()) >= 66


def test_unimix_presets_and_tau_conversion():
    assert tau_from_code(-0.5) == 0.5 and tau_from_code(-0.1) == pytest.approx(0.9)
    p = resolve_unimix_preset("paper", 10)
    assert (p["alpha"], p["tau"], p["partner"], p["mix_off_epoch"], p["batch_size"]) == (0.5, -1.0, "dataset", 120, 128)
    assert resolve_unimix_preset("paper", 100)["tau"] == 0.0
    o = resolve_unimix_preset("official", 100, dataset="cifar100_lt")
    assert (o["alpha"], o["tau"], o["partner"], o["mix_off_epoch"], o["batch_size"]) == (0.8, pytest.approx(0.9), "batch", None, 64)
    assert resolve_unimix_preset("official", 10, dataset="cifar10_lt")["tau"] == 0.5
    m = L.create_mixer("unimix", class_counts=COUNTS, preset="official", alpha=0.3)
    assert (m.alpha, m.tau, m.partner) == (0.3, 0.5, "batch")
    assert set(UNIMIX_PRESETS) == {"paper", "official"}


def test_mixers_keep_device_dtype_and_memory_format():
    x = torch.randn(8, 3, 8, 8).to(memory_format=torch.channels_last).bfloat16()
    y = torch.randint(0, 10, (8,))
    for name in L.list_mixers():
        xm, t = L.create_mixer(name, class_counts=COUNTS)(x, y, generator=_gen())
        assert xm.dtype == torch.bfloat16 and xm.shape == x.shape and t.lam.dtype == torch.float32
        assert xm.is_contiguous(memory_format=torch.channels_last)


def test_mixer_bad_inputs():
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="needs class_counts"):
        L.create_mixer("unimix")
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        L.create_mixer("mixup", alpha=0)
    with pytest.raises(ValueError, match="Unknown UniMix preset 'papr'.*paper, official"):
        L.create_mixer("unimix", class_counts=COUNTS, preset="papr")
    with pytest.raises(ValueError, match="partner must be 'dataset' or 'batch'"):
        L.create_mixer("unimix", class_counts=COUNTS, partner="global")
    m = L.create_mixer("mixup")
    with pytest.raises(ValueError, match="mixer labels y must be 1-D with shape \\[N\\] = \\[4\\]"):
        m(x, y[:2])
    with pytest.raises(ValueError, match="mixer labels y must be integer class indices"):
        m(x, y.float())
    with pytest.raises(ValueError, match="non-empty batch"):
        m(x[:0], y[:0])
    with pytest.raises(ValueError, match="partner batch must match"):
        m(x, y, partner=(x[:2], y[:2]))
    with pytest.raises(ValueError, match="kappa"):
        L.create_mixer("remix", class_counts=COUNTS, kappa=0.5)
