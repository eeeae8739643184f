"""Each loss against its formula (docs/method.md §2-3), the MixedTarget rule, DRW, and bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

import lt_registry as L
from lt_registry import MixedTarget
from lt_registry.losses import class_balanced_weights, ldam_margins

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def _batch(B=16, C=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, generator=g) * 3, torch.randint(0, C, (B,), generator=g)


def _log_pi(counts=COUNTS):
    n = torch.tensor(counts, dtype=torch.float64)
    return torch.log(n / n.sum()).float()


def _value_and_grad(loss, z, y):
    z = z.clone().requires_grad_(True)
    v = loss(z, y)
    (g,) = torch.autograd.grad(v, z)
    return v.detach(), g


def test_bayias_equals_logit_adjustment_tau1_under_uniform_test_prior():
    z, y = _batch()
    bay = L.create_loss("bayias", class_counts=COUNTS)
    la = L.create_loss("la", class_counts=COUNTS, tau=1.0)
    vb, gb = _value_and_grad(bay, z, y)
    vl, gl = _value_and_grad(la, z, y)
    assert torch.allclose(vb, vl, atol=1e-6) and torch.allclose(gb, gl, atol=1e-7)
    # and both are CE(z + log pi): the + log C of Bayias is invisible to softmax
    assert torch.allclose(vb, F.cross_entropy(z + _log_pi(), y), atol=1e-6)


def test_bayias_equals_ce_on_a_balanced_train_prior():
    z, y = _batch()
    vb, gb = _value_and_grad(L.create_loss("bayias", class_counts=[7] * 10), z, y)
    vc, gc = _value_and_grad(L.create_loss("ce"), z, y)
    assert torch.allclose(vb, vc, atol=1e-6) and torch.allclose(gb, gc, atol=1e-7)


def test_bayias_with_non_uniform_test_prior():
    z, y = _batch()
    pt = torch.tensor(L.long_tail_counts(100, 10, 0.1), dtype=torch.float)  # reversed long tail
    pt = pt / pt.sum()
    loss = L.create_loss("bayias", class_counts=COUNTS, test_prior=pt, reduction="none")
    expected = F.cross_entropy(z + _log_pi() - torch.log(pt), y, reduction="none")
    assert torch.allclose(loss(z, y), expected, atol=1e-5)
    # differs from the uniform-prior loss (the test prior is used)
    assert not torch.allclose(loss(z, y), L.create_loss("bayias", class_counts=COUNTS, reduction="none")(z, y))


def test_ce_label_smoothing_matches_torch():
    z, y = _batch()
    assert torch.allclose(L.create_loss("ce", label_smoothing=0.1)(z, y),
                          F.cross_entropy(z, y, label_smoothing=0.1), atol=1e-6)


def test_focal_formula_and_gamma_zero_is_ce():
    z, y = _batch()
    ce = F.cross_entropy(z, y, reduction="none")
    assert torch.allclose(L.create_loss("focal", gamma=0)(z, y), ce.mean(), atol=1e-6)
    p = torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    expected = (1 - p) ** 2 * ce
    assert torch.allclose(L.create_loss("focal", gamma=2, reduction="none")(z, y), expected, atol=1e-5)


def test_class_balanced_weights_sum_to_C_and_agree_with_timm():
    from timm.loss import compute_class_weights

    w = class_balanced_weights(COUNTS, beta=0.9999)
    assert math.isclose(float(w.sum()), 10, rel_tol=1e-6)
    n = torch.tensor(COUNTS, dtype=torch.float64)
    direct = (1 - 0.9999) / (1 - 0.9999 ** n)
    assert torch.allclose(w.double(), direct / direct.sum() * 10, rtol=1e-6)
    _, tw = compute_class_weights(COUNTS, sum(COUNTS), method="effective_num", beta=0.9999)
    assert torch.allclose(w / w.mean(), tw, rtol=1e-5)  # timm normalises to mean 1: same up to scale
    assert torch.allclose(class_balanced_weights(COUNTS, beta=0.0), torch.ones(10))


def test_cb_softmax_sigmoid_and_focal_bases():
    z, y = _batch()
    w = class_balanced_weights(COUNTS)
    soft = L.create_loss("cb", class_counts=COUNTS, reduction="none")
    assert torch.allclose(soft(z, y), w[y] * F.cross_entropy(z, y, reduction="none"), atol=1e-5)
    onehot = F.one_hot(y, 10).float()
    bce = F.binary_cross_entropy_with_logits(z, onehot, reduction="none")
    sig = L.create_loss("cb", class_counts=COUNTS, base="sigmoid", reduction="none")
    assert torch.allclose(sig(z, y), w[y] * bce.sum(1), atol=1e-5)
    # sigmoid focal written out with p_t
    p = torch.sigmoid(z)
    p_t = onehot * p + (1 - onehot) * (1 - p)
    foc = L.create_loss("cb", class_counts=COUNTS, base="focal", gamma=2.0, reduction="none")
    assert torch.allclose(foc(z, y), w[y] * ((1 - p_t) ** 2 * bce).sum(1), atol=1e-5)


def test_ldam_margins_and_scale():
    m = ldam_margins(COUNTS)
    n = torch.tensor(COUNTS, dtype=torch.float)
    assert math.isclose(float(m.max()), 0.5, rel_tol=1e-6) and int(m.argmax()) == 9
    ratio = m * n.pow(0.25)
    assert torch.allclose(ratio, ratio[0].expand(10), rtol=1e-5)  # m_c ∝ n_c^(-1/4)
    cos = torch.rand(8, 10) * 2 - 1
    y = torch.arange(8)
    loss = L.create_loss("ldam", class_counts=COUNTS, reduction="none")
    zm = cos.clone()
    zm[torch.arange(8), y] -= m[y]
    assert torch.allclose(loss(cos, y), F.cross_entropy(30 * zm, y, reduction="none"), atol=1e-4)
    s10 = L.create_loss("ldam", class_counts=COUNTS, scale=10, reduction="none")
    assert torch.allclose(s10(cos, y), F.cross_entropy(10 * zm, y, reduction="none"), atol=1e-4)


def test_cosine_head_for_ldam():
    from lt_registry.models.heads import CosineLinear

    head = CosineLinear(16, 10)
    x = torch.randn(4, 16) * 5
    z = head(x)
    assert z.shape == (4, 10) and z.abs().max() <= 1 + 1e-6
    w = head.weight
    assert torch.allclose(z, F.normalize(x, dim=1) @ F.normalize(w, dim=1).T, atol=1e-6)


def test_posthoc_adjustments():
    z, _ = _batch()
    assert torch.allclose(L.posthoc_logit_adjustment(z, COUNTS, tau=1.0), z - _log_pi(), atol=1e-6)
    new = torch.tensor(L.long_tail_counts(100, 10, 10), dtype=torch.float)
    adapted = L.adapt_logits_to_prior(z, new)
    assert torch.allclose(adapted, z + torch.log(new / new.sum()) + math.log(10), atol=1e-5)
    # adapting to the uniform prior it was trained for changes nothing
    assert torch.allclose(L.adapt_logits_to_prior(z, None), z)


@pytest.mark.parametrize("name,opts", [("ce", {}), ("ce", {"label_smoothing": 0.2}), ("focal", {"gamma": 1.0}),
                                       ("cb", {}), ("cb", {"base": "sigmoid"}), ("cb", {"base": "focal"}),
                                       ("ldam", {}), ("la", {}), ("bayias", {})])
def test_mixed_target_is_per_sample_lam_weighting(name, opts):
    z, ya = _batch(seed=1)
    yb = torch.roll(ya, 1)
    lam = torch.rand(ya.shape[0])
    z = z.tanh() if name == "ldam" else z
    per = L.create_loss(name, class_counts=COUNTS, reduction="none", **opts)
    expected = lam * per(z, ya) + (1 - lam) * per(z, yb)
    got = per(z, MixedTarget(ya, yb, lam))
    assert got.shape == ya.shape and torch.allclose(got, expected, atol=1e-5)
    # the mean is the mean of the per-sample mix, not lam.mean() * L(y_a) + ...
    mean = L.create_loss(name, class_counts=COUNTS, **opts)(z, MixedTarget(ya, yb, lam))
    assert torch.allclose(mean, expected.mean(), atol=1e-5)
    collapsed = lam.mean() * per(z, ya).mean() + (1 - lam.mean()) * per(z, yb).mean()
    assert not torch.allclose(mean, collapsed, atol=1e-4)
    total = L.create_loss(name, class_counts=COUNTS, reduction="sum", **opts)(z, MixedTarget(ya, yb, lam))
    assert torch.allclose(total, expected.sum(), atol=1e-4)


def test_drw_schedule_works_with_any_loss():
    z, y = _batch()
    drw = L.DeferredReweighting(COUNTS, start_epoch=160)
    for name in ("ce", "ldam", "bayias"):
        loss = L.create_loss(name, class_counts=COUNTS, reduction="none")
        base = loss(z, y)
        assert drw.step(loss, 159) is None and torch.allclose(loss(z, y), base)
        w = drw.step(loss, 160)
        assert torch.allclose(w, class_balanced_weights(COUNTS, 0.9999))
        assert torch.allclose(loss(z, y), w[y] * base, atol=1e-5)
        assert drw.step(loss, 199) is not None


def test_losses_follow_the_device_and_dtype_of_logits():
    loss = L.create_loss("bayias", class_counts=COUNTS)
    z, y = _batch()
    assert loss(z.double(), y).dtype in (torch.float32, torch.float64)
    assert L.create_loss("ce")(z.bfloat16(), y).isfinite()


def test_bad_inputs_give_clear_errors():
    z, y = _batch()
    with pytest.raises(ValueError, match="needs class_counts"):
        L.create_loss("bayias")
    with pytest.raises(ValueError, match="reduction must be one of"):
        L.create_loss("ce", reduction="avg")
    with pytest.raises(ValueError, match="logits have 10 classes but the loss was built for 5"):
        L.create_loss("la", class_counts=[5, 4, 3, 2, 1])(z, y)
    with pytest.raises(ValueError, match="integer class indices"):
        L.create_loss("ce")(z, y.float())
    with pytest.raises(ValueError, match="target must be 1-D with shape \\[N\\] = \\[16\\]"):
        L.create_loss("ce")(z, y[:3])
    with pytest.raises(ValueError, match="logits must be a tensor \\[B, C\\]"):
        L.create_loss("ce")(z[0], y)
    with pytest.raises(ValueError, match="gamma must be a non-negative"):
        L.create_loss("focal", gamma=-1)
    with pytest.raises(ValueError, match="cb base must be one of"):
        L.create_loss("cb", class_counts=COUNTS, base="tanh")
    with pytest.raises(ValueError, match="test_prior must have one entry per class"):
        L.create_loss("bayias", class_counts=COUNTS, test_prior=[0.5, 0.5])
    with pytest.raises(ValueError, match="class_weight must be 1-D with one entry per class \\(10\\)"):
        L.create_loss("ce", class_counts=COUNTS, class_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="no training samples"):
        L.create_loss("bayias", class_counts=[5, 0, 1])
    with pytest.raises(TypeError, match="MixedTarget"):
        L.create_loss("ce")(z, [1, 2])
    with pytest.raises(ValueError, match="start_epoch must be a non-negative integer"):
        L.DeferredReweighting(COUNTS, start_epoch=-1)
