"""The calibrator registry (lt_registry/calibration.py, docs/method.md §6.1): temperature, vector, BCTS, prior shift,
EM and BBSE prior estimation, chains, state round trips, errors.

Synthetic data with known answers:
* calibrated logits: ``z ~ N(0, s^2)`` per entry, labels ``y ~ softmax(z)``; a calibrator is given ``k * z``.
* label shift: class-conditional Gaussians ``x | y ~ N(m e_y, I)`` in C dimensions; the Bayes logits under a prior
  ``p`` are ``log p_c + m x_c`` (up to a per-row constant), i.e. exactly calibrated under ``p``.
"""
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lt_registry
from lt_registry import (CALIBRATORS, Calibrator, CalibratorChain, ClassPrior, adapt_logits_to_prior,
                         create_calibrator, is_calibrator, list_calibrators, long_tail_counts)

scipy_optimize = pytest.importorskip("scipy.optimize")
scipy_special = pytest.importorskip("scipy.special")


def calibrated(n, c, scale=2.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    y = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)
    return z.to(dtype), y


def shifted(prior_logits_under, draw_prior, n, seed, margin=2.0):
    """(Bayes logits under the prior ``prior_logits_under``, labels) for n samples with labels ~ ``draw_prior``."""
    g = torch.Generator().manual_seed(seed)
    p_draw = torch.as_tensor(draw_prior, dtype=torch.float64)
    c = p_draw.numel()
    y = torch.multinomial(p_draw / p_draw.sum(), n, replacement=True, generator=g)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) + margin * F.one_hot(y, c).double()
    p = torch.as_tensor(prior_logits_under, dtype=torch.float64)
    return (p / p.sum()).log() + margin * x, y


def nll(z, y):
    return float(F.cross_entropy(z.double(), y))


def tv(p, q):
    p, q = torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(q, dtype=torch.float64)
    return 0.5 * float((p / p.sum() - q / q.sum()).abs().sum())


def scipy_temperature(z, y):
    """Independent oracle: bounded scalar minimisation of the NLL of softmax(z / T) over log T (numpy/scipy)."""
    z, y = z.double().numpy(), y.numpy()

    def f(log_t):
        s = z / math.exp(log_t)
        return float(np.mean(scipy_special.logsumexp(s, axis=1) - s[np.arange(len(y)), y]))

    r = scipy_optimize.minimize_scalar(f, bounds=(math.log(1e-3), math.log(1e3)), method="bounded",
                                       options={"xatol": 1e-10})
    return math.exp(r.x), r.fun


# ---- registry -------------------------------------------------------------------------------------------------------

def test_registry_lists_and_names():
    assert set(list_calibrators()) >= {"temperature", "vector", "bcts", "prior_shift", "prior_em", "prior_bbse"}
    assert list_calibrators("prior_*") == ["prior_bbse", "prior_em", "prior_shift"]
    assert lt_registry.CALIBRATORS is CALIBRATORS
    assert is_calibrator("temperature") and is_calibrator("Temperature-Scaling") and is_calibrator("bbse")
    assert is_calibrator("temperature+prior_em") and not is_calibrator("temperature+nope")
    assert not is_calibrator("nope") and not is_calibrator(3)
    with pytest.raises(ValueError, match=r"Unknown calibrator 'temprature'.*Did you mean 'temperature'.*Available"):
        create_calibrator("temprature")
    with pytest.raises(ValueError, match="Unknown calibrator 'nope'.*Available calibrators: bcts, prior_bbse"):
        create_calibrator("temperature+nope")
    with pytest.raises(ValueError, match="empty stage"):
        create_calibrator("temperature+")
    assert isinstance(create_calibrator("ts"), Calibrator)
    t = create_calibrator("temperature")
    assert create_calibrator(t) is t


def test_options_are_checked():
    with pytest.raises(ValueError, match="calibrator 'temperature' has no option 'l2'. Options: temperature: "
                                         "min_temperature, max_temperature, tol, max_iter"):
        create_calibrator("temperature", l2=1.0)
    with pytest.raises(ValueError, match="'prior_em' is not a stage of 'temperature\\+prior_shift'"):
        create_calibrator("temperature+prior_shift", train_prior="uniform", prior_em__max_iter=3)
    with pytest.raises(ValueError, match="calibrator 'prior_em' has no option 'l2' \\(from 'prior_em__l2'\\)"):
        create_calibrator("prior_em", prior_em__l2=1.0)
    with pytest.raises(ValueError, match="max_iter must be a positive integer, got 0"):
        create_calibrator("temperature", max_iter=0)
    with pytest.raises(ValueError, match="min_temperature \\(2\\) must be below max_temperature \\(1\\)"):
        create_calibrator("temperature", min_temperature=2, max_temperature=1)
    with pytest.raises(ValueError, match="calibration must be one of 'bcts', 'temperature', 'vector', 'none'"):
        create_calibrator("prior_em", calibration="platt")
    with pytest.raises(ValueError, match="prior_shift needs train_prior=...: the prior the logits encode"):
        create_calibrator("prior_shift")
    with pytest.raises(ValueError, match="train_prior entries must be positive and finite.*smoothing=1"):
        create_calibrator("prior_shift", train_prior=[3, 0, 1])
    with pytest.raises(ValueError, match="train_prior must be per-class counts or probabilities.*got the string"):
        create_calibrator("prior_shift", train_prior="balanced")
    with pytest.raises(ValueError, match="train_prior has 3 classes but test_prior has 4"):
        create_calibrator("prior_shift", train_prior=[1, 2, 3], test_prior=[1, 1, 1, 1])


# ---- temperature scaling ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_temperature_recovers_known_overconfidence(seed):
    # N = 20000, C = 10: the fitted T is within 4 % of 2.5 (observed deviation about 1 %)
    z, y = calibrated(20000, 10, seed=seed)
    ts = create_calibrator("temperature").fit(2.5 * z, y)
    assert ts.converged and ts.n_iter < 30
    assert abs(float(ts.temperature) - 2.5) < 0.1
    assert torch.allclose(ts(2.5 * z), 2.5 * z / ts.temperature)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("factor", [1.0, 0.4, 2.5])
def test_temperature_never_worse_than_unscaled_and_matches_scipy(seed, factor):
    z, y = calibrated(3000, 7, scale=1.5, seed=seed)
    z = factor * z
    ts = create_calibrator("temperature").fit(z, y)
    assert nll(ts(z), y) <= nll(z, y) + 1e-12
    t_ref, f_ref = scipy_temperature(z, y)
    assert float(ts.temperature) == pytest.approx(t_ref, rel=1e-5)
    assert nll(ts(z), y) <= f_ref + 1e-10  # the Newton solve is at least as good as the bounded scalar search
    if factor == 1.0:  # already calibrated: T close to 1 (N = 3000: within 10 %)
        assert abs(float(ts.temperature) - 1.0) < 0.1


def test_temperature_bounds_and_degenerate_inputs():
    # perfectly separable data: the NLL keeps decreasing as T -> 0; the fit stops at min_temperature
    z = torch.eye(4).repeat(10, 1) * 3
    y = torch.arange(4).repeat(10)
    ts = create_calibrator("temperature", min_temperature=0.5).fit(z, y)
    assert float(ts.temperature) == 0.5
    # without a binding bound it goes on until the NLL is flat to tol
    ts = create_calibrator("temperature").fit(z, y)
    assert float(ts.temperature) < 0.2 and nll(ts(z), y) < 1e-9
    # constant logits: every T is optimal; T = 1 is kept
    ts = create_calibrator("temperature").fit(torch.zeros(20, 3), torch.arange(20) % 3)
    assert float(ts.temperature) == 1.0
    # labels independent of the logits: T at max_temperature (the flattest allowed)
    z, _ = calibrated(2000, 5, seed=3)
    y = torch.arange(2000) % 5
    ts = create_calibrator("temperature", max_temperature=50.0).fit(z, y)
    assert float(ts.temperature) > 10 and nll(ts(z), y) <= nll(z, y)


def test_fits_are_deterministic():
    z, y = calibrated(2000, 6, seed=5)
    for name in ("temperature", "vector", "bcts"):
        a = create_calibrator(name).fit(2 * z, y)(z)
        b = create_calibrator(name).fit(2 * z, y)(z)
        assert torch.equal(a, b), name


# ---- vector scaling and BCTS ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_vector_and_bcts_nll_not_above_temperature(seed):
    z, y = calibrated(4000, 8, seed=seed)
    w = torch.linspace(1.5, 3.0, 8, dtype=torch.float64)
    zz = z * w + torch.linspace(-1, 1, 8, dtype=torch.float64)
    ts = create_calibrator("temperature").fit(zz, y)
    vs = create_calibrator("vector").fit(zz, y)
    bc = create_calibrator("bcts").fit(zz, y)
    assert nll(vs(zz), y) <= nll(ts(zz), y) + 1e-10
    assert nll(bc(zz), y) <= nll(ts(zz), y) + 1e-10
    assert nll(vs(zz), y) < nll(ts(zz), y) - 1e-3  # the per-class model helps on per-class distortions
    assert float(vs.temperature) == pytest.approx(float(ts.temperature), rel=1e-6)  # the shrinkage target


def test_vector_recovers_per_class_scales_and_biases():
    # true calibrated logits w * g + b; the calibrator sees g. N = 60000, C = 5: each w within 0.05 and each
    # centred b within 0.05 (observed errors about 0.01; b is identified only up to an additive constant)
    c = 5
    g = torch.Generator().manual_seed(11)
    raw = torch.randn(60000, c, generator=g, dtype=torch.float64) * 2
    w_true = torch.tensor([0.5, 0.8, 1.0, 1.3, 1.6], dtype=torch.float64)
    b_true = torch.tensor([1.0, -0.5, 0.0, 0.4, -0.9], dtype=torch.float64)
    y = torch.multinomial((raw * w_true + b_true).softmax(1), 1, generator=g).squeeze(1)
    vs = create_calibrator("vector").fit(raw, y)
    assert (vs.weight - w_true).abs().max() < 0.05
    assert ((vs.bias - vs.bias.mean()) - (b_true - b_true.mean())).abs().max() < 0.05


def test_bcts_recovers_temperature_and_biases():
    # true logits z / 2.5 + b with the calibrator given z: T within 0.1, centred b within 0.1 (N = 60000;
    # observed errors about 0.01 for T and up to 0.06 for b, the rarest class)
    c = 6
    g = torch.Generator().manual_seed(12)
    z = torch.randn(60000, c, generator=g, dtype=torch.float64) * 5
    b_true = torch.linspace(-1, 1, c, dtype=torch.float64)
    y = torch.multinomial((z / 2.5 + b_true).softmax(1), 1, generator=g).squeeze(1)
    bc = create_calibrator("bcts").fit(z, y)
    assert abs(float(bc.temperature) - 2.5) < 0.1
    assert ((bc.bias - bc.bias.mean()) - (b_true - b_true.mean())).abs().max() < 0.1


def test_vector_l2_keeps_empty_classes_finite():
    z, y = calibrated(500, 6, seed=4)
    y = y.clamp_max(4)  # class 5 never labelled
    vs = create_calibrator("vector").fit(z, y)
    assert torch.isfinite(vs.weight).all() and torch.isfinite(vs.bias).all()
    assert float(vs.bias[5]) < float(vs.bias[:5].min())


# ---- prior shift --------------------------------------------------------------------------------------------------

def test_prior_shift_equals_adapt_logits_to_prior(lt_counts):
    z = torch.randn(50, 10)
    ps = create_calibrator("prior_shift", train_prior=lt_counts)
    assert ps.fitted and ps.fit(z) is ps  # nothing to fit
    assert torch.equal(ps(z), adapt_logits_to_prior(z, None, lt_counts))
    test = long_tail_counts(5000, 10, 0.01)
    ps = create_calibrator("prior_shift", train_prior=ClassPrior(lt_counts), test_prior=test)
    assert torch.equal(ps(z), adapt_logits_to_prior(z, test, lt_counts))
    ps = create_calibrator("prior_shift", train_prior="uniform", test_prior=torch.tensor(test) / sum(test))
    assert torch.allclose(ps(z), adapt_logits_to_prior(z, test, None))
    assert torch.equal(create_calibrator("prior_shift", train_prior="uniform")(z), z)  # both uniform: identity
    with pytest.raises(ValueError, match="logits have 4 classes .* but this calibrator has 10 classes"):
        ps(torch.randn(3, 4))


# ---- prior estimation -----------------------------------------------------------------------------------------------

C = 5
P_TRAIN = torch.tensor(long_tail_counts(1000, C, 10), dtype=torch.float64)
P_TRAIN = P_TRAIN / P_TRAIN.sum()
Q_TEST = torch.tensor(long_tail_counts(1000, C, 0.1), dtype=torch.float64)  # reversed tail
Q_TEST = Q_TEST / Q_TEST.sum()


def test_prior_em_recovers_shifted_prior_from_calibrated_logits():
    # exactly calibrated logits under P_TRAIN, drawn under Q_TEST (N = 20000): TV(estimate, Q_TEST) < 0.03
    z, y = shifted(P_TRAIN, Q_TEST, 20000, seed=1)
    em = create_calibrator("prior_em", train_prior=P_TRAIN, calibration="none").fit(z)
    assert em.converged and 1 < em.n_iter < 1000
    assert tv(em.test_prior, Q_TEST) < 0.03
    assert tv(P_TRAIN, Q_TEST) > 0.3  # the shift is large
    # the adapted logits are the Bayes logits under Q_TEST (up to the estimate) and predict better
    assert torch.allclose(em(z), adapt_logits_to_prior(z, em.test_prior, P_TRAIN))
    acc = lambda s: float((s.argmax(1) == y).double().mean())  # noqa: E731
    assert acc(em(z)) > acc(z) + 0.02


def test_prior_em_with_bcts_on_overconfident_logits():
    # the default path: BCTS on labelled validation logits (drawn under P_TRAIN), EM on the deployment logits;
    # the model is over-confident by 2.5 and the source prior is the validation label frequencies.
    zv, yv = shifted(P_TRAIN, P_TRAIN, 20000, seed=2)
    zd, _ = shifted(P_TRAIN, Q_TEST, 20000, seed=3)
    em = create_calibrator("prior_em").fit(2.5 * zd, val_logits=2.5 * zv, val_labels=yv)
    assert tv(em.test_prior, Q_TEST) < 0.03
    freq = torch.bincount(yv, minlength=C).double() / len(yv)
    assert torch.allclose(em.train_prior, freq)
    assert isinstance(em.calibrator, Calibrator) and em.calibrator.name == "bcts"
    assert abs(float(em.calibrator.temperature) - 2.5) < 0.15
    # two-call form, same result
    em2 = create_calibrator("prior_em").fit_calibration(2.5 * zv, yv).fit(2.5 * zd)
    assert torch.equal(em2.test_prior, em.test_prior)
    # transform = calibrated logits moved from the source prior to the estimate
    ref = adapt_logits_to_prior(em.calibrator(2.5 * zd), em.test_prior, freq)
    assert torch.allclose(em(2.5 * zd), ref)
    # the options: tolerance and iteration cap are honoured and recorded
    capped = create_calibrator("prior_em", max_iter=2).fit(2.5 * zd, val_logits=2.5 * zv, val_labels=yv)
    assert capped.n_iter == 2 and not capped.converged


def test_prior_em_stays_at_the_training_prior_without_shift():
    zv, yv = shifted(P_TRAIN, P_TRAIN, 10000, seed=4)
    zd, _ = shifted(P_TRAIN, P_TRAIN, 20000, seed=5)
    em = create_calibrator("prior_em", train_prior=P_TRAIN).fit(zd, val_logits=zv, val_labels=yv)
    assert tv(em.test_prior, P_TRAIN) < 0.02
    em = create_calibrator("prior_em", train_prior=P_TRAIN, calibration="none").fit(zd)
    assert tv(em.test_prior, P_TRAIN) < 0.02


def test_prior_bbse_recovers_shifted_prior():
    # BBSE from hard predictions (N_val = N_deploy = 20000): TV(estimate, Q_TEST) < 0.05 (observed about 0.01)
    zv, yv = shifted(P_TRAIN, P_TRAIN, 20000, seed=6)
    zd, _ = shifted(P_TRAIN, Q_TEST, 20000, seed=7)
    bb = create_calibrator("prior_bbse").fit(2.5 * zd, val_logits=2.5 * zv, val_labels=yv)
    assert tv(bb.test_prior, Q_TEST) < 0.05
    assert bb.confusion.shape == (C, C) and float(bb.confusion.sum()) == pytest.approx(1.0)
    assert torch.allclose(bb.confusion.sum(0), torch.bincount(yv, minlength=C).double() / len(yv))
    assert (bb.importance_weights >= 0).all()
    assert torch.allclose(bb(zd), adapt_logits_to_prior(zd, bb.test_prior, bb.train_prior))
    # no shift: stays near the training prior
    zd0, _ = shifted(P_TRAIN, P_TRAIN, 20000, seed=8)
    bb0 = create_calibrator("bbse", train_prior=P_TRAIN).fit(zd0, val_logits=zv, val_labels=yv)
    assert tv(bb0.test_prior, P_TRAIN) < 0.03
    assert torch.allclose(bb0.train_prior, P_TRAIN)


def test_prior_bbse_clips_negative_weights():
    # a deployment set that predicts only class 0: the solve gives negative weights, clipped to 0
    zv, yv = shifted(P_TRAIN, P_TRAIN, 5000, seed=9)
    zd = torch.zeros(100, C, dtype=torch.float64)
    zd[:, 0] = 10
    bb = create_calibrator("prior_bbse").fit(zd, val_logits=zv, val_labels=yv)
    assert (bb.test_prior >= 0).all() and float(bb.test_prior.sum()) == pytest.approx(1.0)
    assert float(bb.test_prior[0]) > 0.9
    assert torch.isfinite(bb(zd)).all()  # the transform floors the estimate at min_prior


@pytest.mark.parametrize("name", ["prior_em", "prior_bbse"])
def test_prior_estimators_reject_bad_inputs(name):
    zv, yv = shifted(P_TRAIN, P_TRAIN, 500, seed=10)
    zd, _ = shifted(P_TRAIN, Q_TEST, 500, seed=11)
    with pytest.raises(ValueError, match=f"{name} is not fitted: call fit\\(deploy_logits, val_logits=..."):
        create_calibrator(name)(zd)
    with pytest.raises(ValueError, match=f"{name} has no calibration yet: call fit_calibration"):
        create_calibrator(name).fit(zd)
    with pytest.raises(ValueError, match=f"{name}.fit takes unlabelled deployment logits"):
        create_calibrator(name).fit(zd, yv)
    with pytest.raises(ValueError, match="pass both val_logits and val_labels"):
        create_calibrator(name).fit(zd, val_logits=zv)
    fitted = create_calibrator(name).fit_calibration(zv, yv)
    with pytest.raises(ValueError, match="logits have 4 classes \\(columns\\) but this calibrator has 5 classes"):
        fitted.fit(zd[:, :4])
    with pytest.raises(ValueError, match="val_logits have 5 classes .* but this calibrator has 6 classes"):
        create_calibrator(name, train_prior=[1] * 6).fit_calibration(zv, yv)
    with pytest.raises(ValueError, match="logits have 5 classes .* but this calibrator has 3 classes"):
        create_calibrator(name, train_prior=[1, 2, 3], **({"calibration": "none"} if name == "prior_em" else {})
                          ).fit(zd)
    with pytest.raises(ValueError, match="val_labels: class index 7 is out of range for num_classes=5"):
        create_calibrator(name).fit_calibration(zv, yv.clone().index_fill_(0, torch.tensor([3]), 7))
    with pytest.raises(ValueError, match="logits are empty"):
        fitted.fit(zd[:0])
    with pytest.raises(ValueError, match="logits contain NaN or infinite values"):
        fitted.fit(zd.clone().index_fill_(0, torch.tensor([2]), float("nan")))
    with pytest.raises(ValueError, match="validation labels have no sample of classes \\[4\\]"):
        create_calibrator(name).fit_calibration(zv, yv.clamp_max(3))


def test_bbse_confusion_mismatch_is_reported():
    zv, yv = shifted(P_TRAIN, P_TRAIN, 500, seed=12)
    bb = create_calibrator("prior_bbse").fit_calibration(zv, yv)
    bb.num_classes = None  # as if the class count had not been recorded: the confusion matrix still guards
    with pytest.raises(ValueError, match="deployment logits have 4 classes but the validation confusion matrix is "
                                         "\\(5, 5\\)"):
        bb.fit(torch.randn(10, 4, dtype=torch.float64))


def test_prior_em_none_needs_a_train_prior_for_validation_default():
    zd, _ = shifted(P_TRAIN, Q_TEST, 200, seed=13)
    with pytest.raises(ValueError, match="prior_em has no calibration yet"):
        create_calibrator("prior_em", calibration="none").fit(zd)  # train_prior='validation' needs labels
    em = create_calibrator("prior_em", calibration="none", train_prior="uniform").fit(zd)
    assert em.test_prior.shape == (C,)


# ---- common errors --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["temperature", "vector", "bcts"])
def test_label_fitted_calibrators_reject_bad_inputs(name):
    z, y = calibrated(100, 4, seed=1)
    cal = create_calibrator(name)
    with pytest.raises(ValueError, match=f"{name} is not fitted: call fit\\(val_logits, val_labels\\)"):
        cal(z)
    with pytest.raises(ValueError, match=f"{name} is fitted on labelled validation logits: pass labels"):
        cal.fit(z)
    with pytest.raises(ValueError, match="logits are empty"):
        cal.fit(z[:0], y[:0])
    with pytest.raises(ValueError, match="logits contain NaN"):
        cal.fit(z.clone().fill_(float("nan")), y)
    with pytest.raises(ValueError, match="labels: class index 4 is out of range for num_classes=4"):
        cal.fit(z, y.clone().fill_(4))
    with pytest.raises(ValueError, match="labels must be 1-D with shape \\[N\\] = \\[100\\]"):
        cal.fit(z, y[:50])
    with pytest.raises(ValueError, match="logits must have shape \\[N, C\\]"):
        cal.fit(z[0], y)
    with pytest.raises(ValueError, match="must be a floating-point tensor"):
        cal.fit(y[:, None].repeat(1, 4), y)
    cal.fit(z, y)
    with pytest.raises(ValueError, match="logits have 3 classes .* but this calibrator has 4 classes"):
        cal(z[:, :3])
    with pytest.raises(ValueError, match="logits contain NaN"):
        cal(torch.full((2, 4), float("inf")))


# ---- composition ----------------------------------------------------------------------------------------------------

def test_chain_equals_manual_composition_and_order_matters(lt_counts):
    z, y = calibrated(3000, 10, seed=2)
    z = 2 * z + torch.tensor(lt_counts, dtype=torch.float64).log()  # over-confident, encodes the LT prior
    a = create_calibrator("temperature+prior_shift", train_prior=lt_counts).fit(z, y)
    b = create_calibrator("prior_shift+temperature", train_prior=lt_counts).fit(z, y)
    assert isinstance(a, CalibratorChain) and a.name == "temperature+prior_shift"
    ts = create_calibrator("temperature").fit(z, y)
    ps = create_calibrator("prior_shift", train_prior=lt_counts)
    assert torch.equal(a(z), ps(ts(z)))
    ts2 = create_calibrator("temperature").fit(ps(z), y)
    assert torch.equal(b(z), ts2(ps(z)))
    assert not torch.allclose(a(z), b(z))
    # a chain built from instances (or a list of names) is the same thing
    c = CalibratorChain([create_calibrator("temperature"), create_calibrator("prior_shift", train_prior=lt_counts)])
    assert torch.equal(c.fit(z, y)(z), a(z))
    assert create_calibrator(["temperature", "vector"]).name == "temperature+vector"


def test_chain_with_prior_estimator_equals_manual_and_routes_options():
    zv, yv = shifted(P_TRAIN, P_TRAIN, 5000, seed=20)
    zd, _ = shifted(P_TRAIN, Q_TEST, 5000, seed=21)
    zv, zd = 2 * zv, 2 * zd
    ch = create_calibrator("temperature+prior_em", prior_em__calibration="none", prior_em__max_iter=400, tol=1e-9)
    ts_stage, em_stage = ch.stages
    assert em_stage.max_iter == 400 and em_stage.tol == 1e-9 and ts_stage.tol == 1e-9  # plain 'tol' to both
    assert ch.estimates_prior and ch.needs_labels
    with pytest.raises(ValueError, match="chain 'temperature\\+prior_em' is not fitted"):
        ch(zd)
    with pytest.raises(ValueError, match="chain 'temperature\\+prior_em' has no calibration yet"):
        ch.fit(zd)
    with pytest.raises(ValueError, match="prior estimator 'prior_em', whose fit takes unlabelled deployment logits"):
        ch.fit(zv, yv)
    ch.fit(zd, val_logits=zv, val_labels=yv)
    ts = create_calibrator("temperature", tol=1e-9).fit(zv, yv)
    em = create_calibrator("prior_em", calibration="none", max_iter=400, tol=1e-9)
    em.fit(ts(zd), val_logits=ts(zv), val_labels=yv)
    assert torch.equal(ch.test_prior, em.test_prior)
    assert torch.equal(ch(zd), em(ts(zd)))
    assert tv(ch.test_prior, Q_TEST) < 0.05
    # the prior_shift's train_prior and prior_em's both come from one plain option
    ch2 = create_calibrator("prior_shift+prior_em", train_prior=P_TRAIN, calibration="none")
    assert torch.allclose(ch2.stages[0].train_prior, P_TRAIN) and torch.allclose(ch2.stages[1].train_prior, P_TRAIN)


def test_chain_structure_is_checked():
    with pytest.raises(ValueError, match="temperature learns from labelled validation logits and cannot follow the "
                                         "prior estimator 'prior_em'"):
        create_calibrator("prior_em+temperature")
    with pytest.raises(ValueError, match="has 2 prior estimators"):
        create_calibrator("prior_em+prior_bbse")
    with pytest.raises(ValueError, match="CalibratorChain needs a non-empty list"):
        CalibratorChain([])
    with pytest.raises(ValueError, match="every chain stage must be a Calibrator"):
        CalibratorChain([torch.nn.Identity()])
    ch = create_calibrator("temperature+vector")
    with pytest.raises(ValueError, match="has no prior estimator: pass the labelled logits as fit\\(logits, labels\\)"):
        ch.fit(torch.randn(5, 3), val_logits=torch.randn(5, 3), val_labels=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="has no prior estimator, so no test_prior"):
        ch.test_prior


# ---- state, devices, dtypes -----------------------------------------------------------------------------------------

def _fitted_all(lt_counts):
    zv, yv = shifted(P_TRAIN, P_TRAIN, 3000, seed=30)
    zd, _ = shifted(P_TRAIN, Q_TEST, 3000, seed=31)
    zv, zd = 2 * zv, 2 * zd
    out = {
        "temperature": (create_calibrator("temperature").fit(zv, yv), {}),
        "vector": (create_calibrator("vector").fit(zv, yv), {}),
        "bcts": (create_calibrator("bcts").fit(zv, yv), {}),
        "prior_shift": (create_calibrator("prior_shift", train_prior=P_TRAIN, test_prior=Q_TEST),
                        {"train_prior": "uniform"}),
        "prior_em": (create_calibrator("prior_em", calibration="vector").fit(zd, val_logits=zv, val_labels=yv), {}),
        "prior_bbse": (create_calibrator("prior_bbse").fit(zd, val_logits=zv, val_labels=yv), {}),
        "temperature+prior_em": (create_calibrator("temperature+prior_em").fit(zd, val_logits=zv, val_labels=yv),
                                 {}),
    }
    return out, zd


def test_state_dict_round_trip_gives_identical_transforms(lt_counts):
    cals, zd = _fitted_all(lt_counts)
    for name, (cal, fresh_kw) in cals.items():
        buf = io.BytesIO()
        torch.save(cal.state_dict(), buf)
        buf.seek(0)
        state = torch.load(buf, weights_only=True)  # tensors + a JSON-able dict: safe to load
        fresh = create_calibrator(name, **fresh_kw)  # defaults: prior_em here uses 'bcts', the state 'vector'
        fresh.load_state_dict(state)
        assert fresh.fitted, name
        assert torch.equal(fresh(zd), cal(zd)), name
    em = create_calibrator("prior_em")
    em.load_state_dict(cals["prior_em"][0].state_dict())
    assert em.calibration == "vector" and em.n_iter == cals["prior_em"][0].n_iter
    assert torch.equal(em.test_prior, cals["prior_em"][0].test_prior)
    with pytest.raises(ValueError, match="this state_dict is for calibrator 'temperature', not 'vector'"):
        create_calibrator("vector").load_state_dict(cals["temperature"][0].state_dict())
    with pytest.raises(ValueError, match="this state_dict is for calibrator 'temperature\\+prior_em', not 'prior_em'"):
        create_calibrator("prior_em").load_state_dict(cals["temperature+prior_em"][0].state_dict(), strict=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_outputs_keep_the_input_dtype(dtype, lt_counts):
    cals, zd = _fitted_all(lt_counts)
    x = zd.to(dtype)
    for name, (cal, _) in cals.items():
        out = cal(x)
        assert out.dtype == dtype and out.shape == x.shape and out.device == x.device, name
    # batched shapes [..., C] transform too
    assert cals["temperature"][0](x.reshape(3, 1000, C)).shape == (3, 1000, C)
    # fitting on float32 logits works and gives the float64 answer to float32 precision
    zv, yv = shifted(P_TRAIN, P_TRAIN, 3000, seed=30)
    t32 = create_calibrator("temperature").fit((2 * zv).float(), yv)
    assert float(t32.temperature) == pytest.approx(float(cals["temperature"][0].temperature), rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_everything_on_cuda(lt_counts):
    zv, yv = shifted(P_TRAIN, P_TRAIN, 3000, seed=30)
    zd, _ = shifted(P_TRAIN, Q_TEST, 3000, seed=31)
    cpu, _ = _fitted_all(lt_counts)
    dev = torch.device("cuda")
    for name in ("temperature", "vector", "bcts", "prior_em", "prior_bbse"):
        kw = {"calibration": "vector"} if name == "prior_em" else {}
        cal = create_calibrator(name, **kw)
        if cal.estimates_prior:
            cal.fit((2 * zd).to(dev), val_logits=(2 * zv).to(dev), val_labels=yv.to(dev))
        else:
            cal.fit((2 * zv).to(dev), yv.to(dev))
        out = cal((2 * zd).to(dev).float())
        assert out.device.type == "cuda" and out.dtype == torch.float32
        assert torch.allclose(out.cpu(), cpu[name][0]((2 * zd).float()), atol=1e-3), name
        assert all(b.device.type == "cuda" for b in cal.buffers() if b.numel()), name


def test_fit_under_inference_mode_and_reload():
    z, y = calibrated(400, 4, seed=40)
    with torch.inference_mode():
        zz = 2 * z.float()
        cals = [create_calibrator(n).fit(zz, y) for n in ("temperature", "vector", "bcts")]
        em = create_calibrator("prior_em", calibration="vector", calibration_options={"l2": 0.5})
        em.fit(zz, val_logits=zz, val_labels=y)
    assert em.calibrator.l2 == 0.5
    for cal in [*cals, em]:
        before = cal(2 * z.float())
        cal.load_state_dict(cal.state_dict())  # buffers fitted under inference_mode are replaced, not copied into
        assert torch.equal(cal(2 * z.float()), before)
    with torch.no_grad():
        assert create_calibrator("vector").fit(2 * z, y).n_iter > 0
