"""The one label check (lt_registry.labels.check_labels) and every component that uses it: losses, mixers,
ClassPrior.from_labels, the samplers and the metrics give one ValueError form naming the bad value and C."""
import re
import warnings

import numpy as np
import pytest
import torch

from lt_registry import ClassPrior, create_loss, create_mixer, create_sampler, list_losses, list_mixers
from lt_registry.labels import check_labels
from lt_registry.losses import LTLoss
from lt_registry.metrics import (
    calibration_metrics,
    confusion_matrix,
    evaluate_predictions,
    per_class_accuracy,
    top1_accuracy,
)
from lt_registry.mixers import MixedTarget, Mixer
from lt_registry.mixers.effective_prior import effective_label_prior

COUNTS = [50, 30, 20, 12, 8]
C = len(COUNTS)
BAD = (C, -1)  # one past the end, and negative


def _range_error(bad, num_classes=C):
    """The one out-of-range message (after the ``what:`` prefix)."""
    return (rf"class index {bad} is out of range for num_classes={num_classes}; "
            rf"class indices must lie in \[0, {num_classes}\)")


def _batch(b=6):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, C, generator=g), torch.arange(b) % C


def _with(y, pos, value):
    y = y.clone()
    y[pos] = value
    return y


# ---- the check itself -----------------------------------------------------------------------------------

def test_valid_labels_come_back_as_int64_on_their_device():
    for labels in ([0, 4, 2], np.array([0, 4, 2], dtype=np.int32), torch.tensor([0, 4, 2], dtype=torch.uint8)):
        y = check_labels(labels, C)
        assert y.dtype == torch.int64 and y.tolist() == [0, 4, 2] and y.device.type == "cpu"
    t = torch.tensor([1, 2])
    assert check_labels(t, C) is t  # int64 stays the same tensor (no copy)
    assert check_labels([], C, n=0).dtype == torch.int64  # an empty list has no dtype: taken as int64
    assert check_labels(torch.tensor([0, 7]), None).tolist() == [0, 7]  # C unknown: only >= 0


@pytest.mark.parametrize("bad", BAD)
def test_out_of_range_names_the_value_and_c(bad):
    with pytest.raises(ValueError, match=r"^target: " + _range_error(bad) + rf" \(found values in \[{min(bad, 0)}, "):
        check_labels(torch.tensor([0, bad, 1]), C, what="target")


def test_unknown_c_still_rejects_negative_labels():
    with pytest.raises(ValueError, match=r"^labels: class index -3 is out of range; class indices must be >= 0"):
        check_labels([0, -3], None)


@pytest.mark.parametrize("labels,match", [
    (torch.tensor([0.0, 1.0]), r"labels must be integer class indices .*got dtype torch.float32; pass class indices, "
                               r"not one-hot or soft targets"),
    (torch.tensor([True, False]), r"labels must be integer class indices .*got dtype torch.bool"),
    (torch.zeros(2, dtype=torch.complex64), r"labels must be integer class indices .*got dtype torch.complex64"),
    (torch.eye(3, dtype=torch.long), r"labels must be 1-D with shape \[N\] \(one class index per sample\), "
                                     r"got shape \(3, 3\)"),
    (torch.tensor(1), r"labels must be 1-D with shape \[N\]"),
    (None, r"labels are missing: pass integer class indices"),
    ("abc", r"labels must be integer class indices \(an integer tensor, array or list\), got"),
    (object(), r"labels must be integer class indices \(an integer tensor, array or list\), got object"),
])
def test_bad_dtype_or_shape_say_what_is_accepted(labels, match):
    with pytest.raises(ValueError, match=match):
        check_labels(labels, C)


def test_wrong_length_and_bad_num_classes():
    with pytest.raises(ValueError, match=r"target must be 1-D with shape \[N\] = \[4\] .*got shape \(3,\)"):
        check_labels(torch.tensor([0, 1, 2]), C, what="target", n=4)
    for bad in (0, -2, 2.5, True, "5"):
        with pytest.raises(ValueError, match="num_classes must be a positive integer"):
            check_labels([0], bad)


def test_cpu_tensors_are_range_checked_even_without_sync():
    with pytest.raises(ValueError, match=_range_error(C)):
        check_labels(torch.tensor([C]), C, sync=False)


def test_sync_false_reads_no_values_off_the_cpu():
    # meta tensors have no data: any read of a value raises, so passing proves the range was not read
    y = torch.zeros(4, dtype=torch.long, device="meta")
    assert check_labels(y, C, sync=False).device.type == "meta"
    with pytest.raises((NotImplementedError, RuntimeError)):
        check_labels(y, C, sync=True)
    with pytest.raises(ValueError, match="integer class indices"):  # dtype and shape are still checked
        check_labels(y.float(), C, sync=False)


# ---- every registered loss and mixer --------------------------------------------------------------------

@pytest.mark.parametrize("name", list_losses())
@pytest.mark.parametrize("bad", BAD)
def test_every_loss_rejects_out_of_range_labels(name, bad):
    loss = create_loss(name, class_counts=COUNTS)
    z, y = _batch()
    assert torch.isfinite(loss(z, y))
    with pytest.raises(ValueError, match=r"^target: " + _range_error(bad)):
        loss(z, _with(y, 2, bad))
    lam = torch.full((len(y),), 0.7)
    with pytest.raises(ValueError, match=r"^target.y_a: " + _range_error(bad)):
        loss(z, MixedTarget(_with(y, 0, bad), y.flip(0), lam))
    with pytest.raises(ValueError, match=r"^target.y_b: " + _range_error(bad)):
        loss(z, MixedTarget(y, _with(y, 5, bad), lam))
    # a loss built without counts takes C from the logits
    if not loss.needs_prior:
        with pytest.raises(ValueError, match=r"^target: " + _range_error(bad)):
            create_loss(name)(z, _with(y, 1, bad))


@pytest.mark.parametrize("name", list_mixers())
@pytest.mark.parametrize("bad", BAD)
def test_every_mixer_rejects_out_of_range_labels(name, bad):
    mixer = create_mixer(name, class_counts=COUNTS)
    assert mixer.num_classes == C
    x, y = torch.randn(6, 3), torch.arange(6) % C
    mixer(x, y, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"^mixer labels y: " + _range_error(bad)):
        mixer(x, _with(y, 3, bad), generator=torch.Generator().manual_seed(0))
    if name != "none":  # the identity ignores the partner
        with pytest.raises(ValueError, match=r"^partner labels y2: " + _range_error(bad)):
            mixer(x, y, partner=(x.flip(0), _with(y, 4, bad)), generator=torch.Generator().manual_seed(0))


def test_mixers_without_counts_still_reject_negative_labels():
    for name in ("none", "mixup"):
        m = create_mixer(name)
        assert m.num_classes is None
        with pytest.raises(ValueError, match=r"^mixer labels y: class index -1 is out of range"):
            m(torch.randn(3, 2), torch.tensor([0, -1, 1]))


# ---- the same message from every other entry point ------------------------------------------------------

def _entry_points():
    z, y = _batch(8)
    probs = torch.softmax(z, dim=1)
    return {
        "ClassPrior.from_labels": lambda lab: ClassPrior.from_labels(lab, C),
        "sampler random": lambda lab: create_sampler("random", labels=lab, num_classes=C),
        "sampler prior_power": lambda lab: create_sampler("prior_power", labels=lab, num_classes=C, tau=0.5),
        "sampler drs": lambda lab: create_sampler("drs", labels=lab, num_classes=C),
        "effective_label_prior": lambda lab: effective_label_prior(create_mixer("unimix", class_counts=COUNTS),
                                                                   lab, batches=1),
        "top1_accuracy": lambda lab: top1_accuracy(z, lab),
        "per_class_accuracy": lambda lab: per_class_accuracy(z, lab),
        "calibration_metrics": lambda lab: calibration_metrics(probs, lab),
        "evaluate_predictions": lambda lab: evaluate_predictions(z, lab, COUNTS),
        "confusion_matrix": lambda lab: confusion_matrix(z.argmax(1), lab, C),
        "loss": lambda lab: create_loss("ce", class_counts=COUNTS)(z, lab),
        "mixer": lambda lab: create_mixer("unimix", class_counts=COUNTS)(torch.randn(8, 2), lab),
    }, y


@pytest.mark.parametrize("bad", BAD)
def test_one_message_everywhere(bad):
    calls, y = _entry_points()
    messages = {}
    for where, call in calls.items():
        call(y)  # valid labels pass
        with pytest.raises(ValueError) as info:
            call(_with(y, 6, bad))
        messages[where] = str(info.value)
    for where, msg in messages.items():
        assert re.search(r"^[\w. ]+: " + _range_error(bad), msg), (where, msg)
    # after the name of what was checked, the messages are identical
    assert len({m.split(": ", 1)[1] for m in messages.values()}) == 1, messages


def test_non_integer_labels_same_form_everywhere():
    calls, y = _entry_points()
    for where, call in calls.items():
        if where == "loss":  # losses also take soft targets, and say how a float target must look
            with pytest.raises(ValueError, match=r"float tensor of shape \(8,\): pass soft targets as a float tensor "
                                                 r"\[B, C\] = \[8, 5\].*or integer class indices \[B\] = \[8\]"):
                call(y.float())
            continue
        with pytest.raises(ValueError, match=r"must be integer class indices \(an integer tensor, array or list\), "
                                             r"got dtype torch.float32"):
            call(y.float())


# ---- validate_labels: the per-step host sync is the caller's choice ---------------------------------------

def test_validate_labels_defaults_to_true_everywhere():
    assert LTLoss.validate_labels is True and Mixer.validate_labels is True
    for name in list_losses():
        assert create_loss(name, class_counts=COUNTS).validate_labels is True
    for name in list_mixers():
        assert create_mixer(name, class_counts=COUNTS).validate_labels is True


@pytest.mark.parametrize("name", list_losses())
def test_loss_validate_labels_false_skips_the_value_read_off_the_cpu(name):
    loss = create_loss(name, class_counts=COUNTS).to("meta")
    z, y = torch.randn(6, C, device="meta"), torch.zeros(6, dtype=torch.long, device="meta")
    with pytest.raises((NotImplementedError, RuntimeError)):  # validate_labels=True reads the (absent) values
        loss(z, y)
    loss.validate_labels = False
    assert loss(z, y).device.type == "meta"
    assert loss(z, MixedTarget(y, y.clone(), torch.ones(6, device="meta"))).device.type == "meta"
    with pytest.raises(ValueError, match="pass soft targets as a float tensor"):  # the free shape checks stay
        loss(z, y.float())
    # CPU labels are always checked: there is no sync to save
    cpu_loss = create_loss(name, class_counts=COUNTS)
    cpu_loss.validate_labels = False
    with pytest.raises(ValueError, match=_range_error(C)):
        cpu_loss(*_batch()[:1], torch.full((6,), C))


@pytest.mark.parametrize("name", list_mixers())
def test_mixer_validate_labels_false_skips_the_value_read_off_the_cpu(name):
    mixer = create_mixer(name, class_counts=COUNTS)
    x, y = torch.randn(6, 3, device="meta"), torch.zeros(6, dtype=torch.long, device="meta")
    with pytest.raises((NotImplementedError, RuntimeError)):
        mixer(x, y)
    mixer.validate_labels = False
    x_mixed, target = mixer(x, y)
    assert x_mixed.device.type == "meta" and target.y_a.device.type == "meta"
    with pytest.raises(ValueError, match=_range_error(C)):  # CPU labels: always checked
        mixer(torch.randn(6, 3), torch.full((6,), C))


# ---- on CUDA: a ValueError instead of a device-side assert; no sync when switched off ----------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_bad_label_is_a_value_error_with_one_sync():
    y = torch.tensor([0, C, 1], device="cuda")
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with pytest.raises(ValueError, match=_range_error(C)):
                check_labels(y, C)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) == 1, [str(w.message) for w in caught]
    z = torch.randn(3, C, device="cuda")
    for name in list_losses():
        with pytest.raises(ValueError, match=_range_error(C)):
            create_loss(name, class_counts=COUNTS).cuda()(z, y)
    for name in list_mixers():
        with pytest.raises(ValueError, match=_range_error(C)):
            create_mixer(name, class_counts=COUNTS)(torch.randn(3, 2, device="cuda"), y)
    torch.cuda.synchronize()  # nothing was launched with a bad index: no pending device-side assert


@cuda
@pytest.mark.parametrize("mixer_name", ["none", "mixup", "remix", "unimix"])
@pytest.mark.parametrize("loss_name", ["ce", "la", "bayias", "ldam"])
def test_cuda_step_without_validation_has_no_host_sync(mixer_name, loss_name):
    """validate_labels = False: a training step (dataset-level partner, paper Algorithm 1) reads nothing
    back to the host; switched on, the label check is the step's sync."""
    loss = create_loss(loss_name, class_counts=COUNTS).cuda()
    mixer = create_mixer(mixer_name, class_counts=COUNTS)
    loss.validate_labels = mixer.validate_labels = False
    x, y = torch.randn(8, 3, device="cuda"), (torch.arange(8) % C).cuda()
    partner = (x.flip(0), y.flip(0))
    w = torch.randn(3, C, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)

    def step():
        x_mixed, target = mixer(x, y, partner=partner, generator=gen)
        return loss(x_mixed @ w, target)

    step()  # the first call caches the mixer's per-device tables (one copy each)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = step()
        loss.validate_labels = True
        with pytest.raises(RuntimeError, match="synchroniz"):
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out).item()
