"""Soft targets [B, C] and label smoothing for every loss (docs/method.md §3.1), the timm adapter LTMixup and the
transformers interop (LTTrainerLoss, LTMixingCollator, LTTrainer)."""
import math
import sys

import pytest
import torch
import torch.nn.functional as F

import lt_registry as L
from lt_registry import MixedTarget, soft_target
from lt_registry.interop import LTCollator, LTMixingCollator, LTMixup, LTTrainerLoss
from lt_registry.labels import check_soft_targets

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
C = len(COUNTS)

# every registered loss with its defaults, the other CB bases, focal gamma 2, and DRW weights on two of them
CASES = ([(name, {}, False) for name in L.list_losses()]
         + [("cb", {"base": "sigmoid"}, False), ("cb", {"base": "focal", "gamma": 2.0}, False),
            ("focal", {"gamma": 2.0}, False), ("ldam", {}, True), ("bayias", {}, True)])
IDS = [f"{n}{''.join(f'-{k}={v}' for k, v in o.items())}{'-drw' if d else ''}" for n, o, d in CASES]


def _loss(name, opts, drw, **kw):
    loss = L.create_loss(name, class_counts=COUNTS, **opts, **kw)
    if drw:
        L.DeferredReweighting(COUNTS, start_epoch=0).step(loss, 0)
        assert loss.class_weight is not None
    return loss


def _batch(name, B=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, C, generator=g) * 3
    z = z.tanh() if name == "ldam" else z  # cosine logits
    y_a = torch.randint(0, C, (B,), generator=g)
    y_b = torch.randint(0, C, (B,), generator=g)
    y_b[:4] = y_a[:4]  # pairs of one class
    lam = torch.rand(B, generator=g)
    lam[4], lam[5] = 0.0, 1.0
    return z, y_a, y_b, lam


def _value_and_grad(loss, z, target):
    z = z.clone().requires_grad_(True)
    v = loss(z, target)
    (g,) = torch.autograd.grad(v.sum(), z)
    return v.detach(), g


def _close(a, b, rtol=1e-5, atol=1e-6):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name,opts,drw", CASES, ids=IDS)
def test_two_hot_soft_target_equals_mixed_target_in_value_and_gradient(name, opts, drw):
    z, y_a, y_b, lam = _batch(name)
    loss = _loss(name, opts, drw, reduction="none")
    mixed = MixedTarget(y_a, y_b, lam)
    two_hot = lam[:, None] * F.one_hot(y_a, C) + (1 - lam[:, None]) * F.one_hot(y_b, C)
    vm, gm = _value_and_grad(loss, z, mixed)
    vs, gs = _value_and_grad(loss, z, two_hot)
    _close(vs, vm)
    _close(gs, gm)
    # the mean reduction too
    mean = _loss(name, opts, drw)
    _close(_value_and_grad(mean, z, two_hot)[1], _value_and_grad(mean, z, mixed)[1])


@pytest.mark.parametrize("name,opts,drw", CASES, ids=IDS)
def test_one_hot_equals_class_index_and_per_class_is_per_sample_for_every_class(name, opts, drw):
    z, y, _, _ = _batch(name, seed=1)
    loss = _loss(name, opts, drw, reduction="none")
    vi, gi = _value_and_grad(loss, z, y)
    vo, go = _value_and_grad(loss, z, F.one_hot(y, C).float())
    _close(vo, vi)
    _close(go, gi)
    P = loss.per_class(z)
    assert P.shape == (z.shape[0], C)
    for c in range(C):  # the contract: column c is the loss with label c
        _close(P[:, c], loss.per_sample(z, torch.full_like(y, c)))


@pytest.mark.parametrize("name,opts,drw", CASES, ids=IDS)
def test_label_smoothing_equals_the_explicit_soft_target(name, opts, drw):
    eps = 0.1
    z, y_a, y_b, lam = _batch(name, seed=2)
    plain = _loss(name, opts, drw, reduction="none")
    smooth = _loss(name, opts, drw, reduction="none", label_smoothing=eps)
    mixed = MixedTarget(y_a, y_b, lam)
    soft = torch.softmax(torch.randn(z.shape[0], C), dim=1)
    for target in (y_a, mixed, soft, MixedTarget(y_a, y_a, torch.ones_like(lam))):
        explicit = soft_target(target, C, label_smoothing=eps)
        _close(explicit.sum(1), torch.ones(z.shape[0]))
        vs, gs = _value_and_grad(smooth, z, target)
        ve, ge = _value_and_grad(plain, z, explicit)
        _close(vs, ve)
        _close(gs, ge)


def test_soft_target_formula_is_timms():
    from timm.data.mixup import mixup_target

    y = torch.randint(0, C, (16,))
    lam = 0.3
    mixed = MixedTarget(y, y.flip(0), torch.full((16,), lam))
    _close(soft_target(mixed, C, label_smoothing=0.1), mixup_target(y, C, lam=lam, smoothing=0.1))
    _close(soft_target(y, C, label_smoothing=0.1), mixup_target(y, C, smoothing=0.1))
    t = soft_target(mixed, C)
    assert torch.equal(t, lam * F.one_hot(y, C) + (1 - lam) * F.one_hot(y.flip(0), C))


def test_ce_and_bayias_on_soft_targets_are_torchs_and_timms():
    from timm.loss import SoftTargetCrossEntropy

    z, y_a, y_b, lam = _batch("ce")
    t = soft_target(MixedTarget(y_a, y_b, lam), C, label_smoothing=0.1)
    _close(L.create_loss("ce")(z, t), SoftTargetCrossEntropy()(z, t))
    log_pi = torch.log(torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)).float()
    _close(L.create_loss("bayias", class_counts=COUNTS)(z, t), F.cross_entropy(z + log_pi, t))
    # class weights with smoothing: torch's meaning, sum_c t_c w_c (-log p_c) per sample
    w = L.class_balanced_weights(COUNTS)
    ours = L.create_loss("ce", class_counts=COUNTS, class_weight=w, label_smoothing=0.2, reduction="none")
    _close(ours(z, y_a), F.cross_entropy(z, y_a, weight=w, label_smoothing=0.2, reduction="none"))
    _close(L.create_loss("ce", class_counts=COUNTS, class_weight=w, reduction="none")(z, t),
           F.cross_entropy(z, t, weight=w, reduction="none"))


def test_focal_and_ldam_per_class_formulas():
    z, _, _, _ = _batch("focal")
    p = torch.softmax(z, 1)
    t = torch.softmax(torch.randn_like(z), 1)
    expected = (t * (1 - p) ** 2 * -torch.log_softmax(z, 1)).sum(1)
    _close(L.create_loss("focal", gamma=2.0, reduction="none")(z, t), expected)
    # LDAM: the margin follows the label, L_c = CE(s (z - m_c e_c), c); also where the loss is ~1e-20
    loss = L.create_loss("ldam", class_counts=COUNTS, reduction="none")
    cos = -torch.ones(C, C) + 2 * torch.eye(C)
    cos[: C // 2] = torch.rand(C // 2, C) * 2 - 1
    m = L.ldam_margins(COUNTS).double()
    a = 30 * cos.double()
    ref = torch.stack([F.softplus(torch.logsumexp(torch.cat([a[:, :c], a[:, c + 1:]], 1), 1) - (a[:, c] - 30 * m[c]))
                       for c in range(C)], 1)
    torch.testing.assert_close(loss.per_class(cos).double(), ref, rtol=1e-5, atol=0)
    assert (ref.min() < 1e-15) and torch.isfinite(torch.autograd.functional.jacobian(
        lambda x: loss(x, torch.softmax(torch.randn(C, C), 1)), cos)).all()


def test_user_loss_with_only_per_sample_takes_soft_targets():
    class Hinge(L.LTLoss):
        def per_sample(self, logits, target):
            return (1 - logits.gather(1, target[:, None]).squeeze(1)).clamp_min(0) ** 2

    loss = Hinge(reduction="none")
    z, y_a, y_b, lam = _batch("ce")
    two_hot = soft_target(MixedTarget(y_a, y_b, lam), C)
    _close(loss(z, two_hot), loss(z, MixedTarget(y_a, y_b, lam)))
    _close(Hinge(reduction="none", label_smoothing=0.1)(z, y_a), loss(z, soft_target(y_a, C, label_smoothing=0.1)))


def test_bad_soft_targets_and_smoothing_give_clear_errors():
    z, y, _, _ = _batch("ce", B=8)
    z, y = z[:4], y[:4]
    loss = L.create_loss("bayias", class_counts=COUNTS)
    t = F.one_hot(y, C).float()
    with pytest.raises(ValueError, match=r"row 2 sums to 2, not 1 .*whose rows are class probabilities summing to 1"):
        loss(z, t * torch.tensor([1.0, 1, 2, 1])[:, None])
    with pytest.raises(ValueError, match=r"row 1 has the negative entry -0.5"):
        bad = t.clone()
        bad[1] = bad[1] * 1.5
        bad[1, (y[1] + 1) % C] = -0.5
        loss(z, bad)
    with pytest.raises(ValueError, match="NaN or infinite"):
        loss(z, t * float("nan"))
    with pytest.raises(ValueError, match=r"float tensor of shape \(4, 11\): pass soft targets as a float tensor "
                                         r"\[B, C\] = \[4, 10\]"):
        loss(z, torch.cat([t, torch.zeros(4, 1)], 1))
    with pytest.raises(ValueError, match=r"shape \(4,\).*integer class indices \[B\] = \[4\]"):
        loss(z, y.float())
    with pytest.raises(ValueError, match=r"shape \(5, 10\)"):
        loss(z, torch.cat([t, t[:1]]))
    with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\)"):
        L.create_loss("focal", label_smoothing=1.0)
    with pytest.raises(TypeError, match="soft targets"):
        loss(z, [[1.0] * C] * 4)
    # rows within the tolerance pass (float rounding of mixed, smoothed targets)
    loss(z, t * (1 + 1e-5))


def test_soft_target_values_are_read_without_a_host_sync_when_validate_labels_is_off():
    t = torch.empty(4, C, device="meta")  # any host read of a meta tensor fails
    assert check_soft_targets(t, C, n=4, sync=False) is t
    with pytest.raises((NotImplementedError, RuntimeError)):
        check_soft_targets(t, C, n=4, sync=True)
    with pytest.raises(ValueError, match=r"shape \(4, 3\)"):  # shape still checked for free
        check_soft_targets(torch.empty(4, 3, device="meta"), C, sync=False)


# ---- timm adapter -----------------------------------------------------------------------------------------------
MIXERS = [("none", {}), ("mixup", {}), ("remix", {}), ("unimix", {"preset": "official"}), ("unimix", {})]


@pytest.mark.parametrize("mixer,opts", MIXERS, ids=[f"{m}{o}" for m, o in MIXERS])
def test_ltmixup_soft_targets_match_the_mixers_factors(mixer, opts):
    x = torch.randn(32, 3, 4, 4)
    y = torch.randint(0, C, (32,))
    eps = 0.1
    fn = LTMixup(mixer, class_counts=COUNTS, label_smoothing=eps, generator=torch.Generator().manual_seed(3), **opts)
    xm, t = fn(x, y)
    ref = L.create_mixer(mixer, class_counts=COUNTS, **opts)
    x_ref, mt = ref(x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(xm, x_ref)
    expected = (1 - eps) * (mt.lam[:, None] * F.one_hot(mt.y_a, C) + (1 - mt.lam[:, None]) * F.one_hot(mt.y_b, C)) + eps / C
    assert t.dtype == torch.float32 and t.shape == (32, C)
    _close(t, expected, rtol=0, atol=1e-7)
    _close(t.sum(1), torch.ones(32))
    # the partner classes are those of the mixer's draw (the image is the same mix), and the same seed repeats
    fn.generator.manual_seed(3)
    xm2, mt2 = fn.mix(x, y)
    assert torch.equal(xm2, xm) and torch.equal(mt2.y_b, mt.y_b) and torch.equal(mt2.lam, mt.lam)


def test_ltmixup_options_partner_batch_and_switch_off():
    x, y = torch.randn(8, 3), torch.randint(0, C, (8,))
    fn = LTMixup("unimix", class_counts=COUNTS, label_smoothing=0.0, generator=torch.Generator().manual_seed(0))
    assert fn.num_classes == C and repr(fn).startswith("LTMixup(UniMix(")
    x2, y2 = torch.randn(8, 3), torch.randint(0, C, (8,))
    _, t = fn(x, y, partner=(x2, y2))
    _, mt = L.create_mixer("unimix", class_counts=COUNTS)(x, y, partner=(x2, y2), generator=torch.Generator().manual_seed(0))
    _close(t, soft_target(mt, C), rtol=0, atol=0)
    fn.mixup_enabled = False  # timm's train.py at --mixup-off-epoch
    xo, t = fn(x, y)
    assert torch.equal(xo, x) and torch.equal(t, F.one_hot(y, C).float())
    assert LTMixup("mixup", num_classes=C, label_smoothing=0)(x, y)[1].shape == (8, C)
    with pytest.raises(ValueError, match="needs the number of classes"):
        LTMixup("mixup")
    with pytest.raises(ValueError, match="num_classes = 5, class_counts = 10"):
        LTMixup("mixup", num_classes=5, class_counts=COUNTS)
    with pytest.raises(ValueError, match="only apply to a mixer given by name"):
        LTMixup(L.create_mixer("mixup"), num_classes=C, alpha=0.2)
    with pytest.raises(ValueError, match="class index 10 is out of range for num_classes=10"):
        LTMixup("mixup", num_classes=C)(x, torch.full((8,), 10))
    with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\)"):
        LTMixup("mixup", num_classes=C, label_smoothing=-0.1)


def test_a_training_step_with_ltmixup_and_bayias_equals_the_step_with_the_mixed_target():
    x, y = torch.randn(32, 12), torch.randint(0, C, (32,))
    eps = 0.1

    def step(target_fn, loss):
        torch.manual_seed(0)
        model = torch.nn.Linear(12, C)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        xm, target = target_fn()
        loss(model(xm), target).backward()
        opt.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    fn = LTMixup("unimix", class_counts=COUNTS, label_smoothing=eps, generator=torch.Generator().manual_seed(1))
    w_soft = step(lambda: fn(x, y), L.create_loss("bayias", class_counts=COUNTS))
    mixer = L.create_mixer("unimix", class_counts=COUNTS)
    w_mixed = step(lambda: mixer(x, y, generator=torch.Generator().manual_seed(1)),
                   L.create_loss("bayias", class_counts=COUNTS, label_smoothing=eps))
    _close(w_soft, w_mixed, rtol=1e-6, atol=1e-7)
    assert not torch.equal(w_soft, step(lambda: (x, y), L.create_loss("bayias", class_counts=COUNTS)))


# ---- transformers interop ------------------------------------------------------------------------------------------
def test_trainer_loss_normalises_by_the_trainers_item_count():
    z, y_a, y_b, lam = _batch("ce", B=6)
    t = soft_target(MixedTarget(y_a, y_b, lam), C)
    fn = LTTrainerLoss("bayias", class_counts=COUNTS)
    per = L.create_loss("bayias", class_counts=COUNTS, reduction="none")
    outputs = {"logits": z}
    _close(fn(outputs, t), per(z, t).mean())
    _close(fn((z,), y_a), per(z, y_a).mean())
    # accumulated over 2 micro-batches of 6: the Trainer counts labels.ne(-100), C per soft row
    _close(fn(outputs, t, num_items_in_batch=torch.tensor(12 * C)), per(z, t).sum() / 12)
    _close(fn(z, y_a, num_items_in_batch=12), per(z, y_a).sum() / 12)
    built = LTTrainerLoss(L.create_loss("bayias", class_counts=COUNTS))  # a mean-reduced loss instance
    _close(built(outputs, t, num_items_in_batch=torch.tensor(12 * C)), per(z, t).sum() / 12)
    with pytest.raises(ValueError, match="needs the model's logits"):
        fn({"loss": z.sum()}, y_a)
    with pytest.raises(ValueError, match="labels=None"):
        fn(outputs, None)
    with pytest.raises(ValueError, match="only apply to a loss given by name"):
        LTTrainerLoss(per, class_counts=COUNTS)


def test_collators_stack_mix_and_explain_bad_items():
    items = [{"pixel_values": torch.randn(3, 4, 4), "label": int(i % C)} for i in range(6)]
    plain = LTCollator()(items)
    assert plain["pixel_values"].shape == (6, 3, 4, 4) and plain["labels"].tolist() == [0, 1, 2, 3, 4, 5]
    col = LTMixingCollator("mixup", num_classes=C, label_smoothing=0.1, generator=torch.Generator().manual_seed(0))
    out = col(items)
    assert out["labels"].shape == (6, C) and out["labels"].dtype == torch.float32
    _close(out["labels"].sum(1), torch.ones(6))
    assert col.eval_collator(items)["labels"].dtype == torch.int64
    with pytest.raises(ValueError, match=r"no label key 'labels' or 'label'; their keys are \['pixel_values', 'y'\]"):
        col([{"pixel_values": torch.zeros(3), "y": 1}])
    with pytest.raises(ValueError, match=r"no 'pixel_values'; their keys are \['image', 'labels'\]"):
        col([{"image": torch.zeros(3), "labels": 1}])
    with pytest.raises(ValueError, match="non-empty list of dataset items"):
        col([])


def _soft_labels_per_batch(collator, epochs, workers=2, seed=0):
    """The collator's soft labels, batch by batch, through a DataLoader with ``workers`` worker processes; every
    batch holds labels 0..3, so its soft labels show the mixing draws (factors and partners) directly."""
    items = [{"pixel_values": torch.zeros(2), "labels": i % 4} for i in range(16)]
    loader = torch.utils.data.DataLoader(items, batch_size=4, num_workers=workers, collate_fn=collator,
                                         generator=torch.Generator().manual_seed(seed))
    return [[b["labels"] for b in loader] for _ in range(epochs)]


def test_mixing_collator_gives_each_worker_its_own_reproducible_stream():
    make = lambda: LTMixingCollator("mixup", num_classes=4, generator=torch.Generator().manual_seed(3))  # noqa: E731
    run = _soft_labels_per_batch(make(), epochs=2)
    first, second = run
    # batches 0 and 1 come from workers 0 and 1: with one copied stream they would carry the same draws
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first[0], second[0])            # workers restart every epoch: new streams
    again = _soft_labels_per_batch(make(), epochs=2)        # same seeds -> the same draws
    assert all(torch.equal(a, b) for e, f in zip(run, again) for a, b in zip(e, f))
    other = _soft_labels_per_batch(make(), epochs=1, seed=1)[0]
    assert not torch.equal(first[0], other[0])              # the loader's seed moves the workers' streams


def test_lttrainer_needs_transformers_and_names_the_extra(monkeypatch):
    from lt_registry.interop import hf_transformers

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    hf_transformers._trainer_class.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install 'lt_registry\[transformers\]'"):
            L.interop.LTTrainer
    finally:
        hf_transformers._trainer_class.cache_clear()


def test_transformers_trainer_trains_a_tiny_model_with_the_collator_and_the_loss(tmp_path):
    transformers = pytest.importorskip("transformers")
    from lt_registry.interop import LTTrainer

    torch.manual_seed(0)
    cfg = transformers.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                    layer_type="basic", num_labels=C)
    model = transformers.ResNetForImageClassification(cfg)  # random init, nothing downloaded
    before = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(0)
    labels = torch.repeat_interleave(torch.arange(C), torch.tensor([8, 6, 4, 3, 3, 2, 2, 2, 1, 1]))
    data = [{"pixel_values": torch.randn(3, 16, 16, generator=g) + y.item() / C, "labels": int(y)} for y in labels]
    counts = torch.bincount(labels, minlength=C).tolist()

    seen = []
    loss_fn = LTTrainerLoss("bayias", class_counts=counts)

    def compute_loss_func(outputs, labels, num_items_in_batch=None):
        seen.append((tuple(labels.shape), labels.dtype, num_items_in_batch))
        return loss_fn(outputs, labels, num_items_in_batch=num_items_in_batch)

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=8, per_device_eval_batch_size=16,
        gradient_accumulation_steps=2, max_steps=3, learning_rate=0.05, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, seed=0)
    trainer = LTTrainer(model=model, args=args, train_dataset=data, eval_dataset=data,
                        data_collator=LTMixingCollator("unimix", class_counts=counts, preset="official",
                                                       label_smoothing=0.1),
                        compute_loss_func=compute_loss_func)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    train_calls = list(seen)
    assert all(s == (8, C) and d == torch.float32 for s, d, _ in train_calls)
    assert all(float(n) == 16 * C for _, _, n in train_calls)  # 2 micro-batches of 8, C entries per soft row
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"])
    assert [s for s, _, _ in seen[len(train_calls):]] == [(16,), (16,)]  # evaluation: class indices, not mixed
