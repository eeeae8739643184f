"""timm's fine-tuning options in the training loop, each checked against its definition: gradient accumulation,
gradient clipping, the weights' moving average (EMA), layer-wise LR decay, timm schedules, the initial
checkpoint and local pretrained weights."""
import argparse
import copy
import math

import pytest
import torch
from torch import nn

from lt_registry import create_loss
from lt_registry.engine import TrainState, build_optimizer, clip_gradients, train_one_epoch
from lt_registry.models.factory import build_model, load_initial_checkpoint, read_state_dict
from lt_registry.schedule import build_lr_scheduler


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState, PartialState

    acc = Accelerator(cpu=True)
    yield acc
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    PartialState._reset_state()


def _opt_args(**kw):
    base = dict(opt="sgd", lr=0.1, weight_decay=0.0, momentum=0.0, wd_norm_bias=True, opt_eps=None, opt_betas=None,
                opt_kwargs=[], layer_decay=None)
    base.update(kw)
    return argparse.Namespace(**base)


def _data(n=16, d=5, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, C, (n,), generator=g)


def _train(model, batches, accelerator, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = create_loss("ce")
    state = TrainState()
    train_one_epoch(model, batches, loss, opt, accelerator, epoch=0, state=state, **kw)
    return state


def test_accumulating_two_batches_equals_one_double_batch(accelerator):
    """Definition: k accumulated batches of B give the update of one batch of k * B (mean loss, no BatchNorm)."""
    x, y = _data(16)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    sa = _train(a, [(x[:8], y[:8]), (x[8:], y[8:])], accelerator, accum_steps=2)
    sb = _train(b, [(x, y)], accelerator, accum_steps=1)
    assert sa.optimizer_steps == sb.optimizer_steps == 1
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    # and it is not the same as two separate steps
    c = copy.deepcopy(net)
    _train(c, [(x[:8], y[:8]), (x[8:], y[8:])], accelerator, accum_steps=1)
    assert not torch.allclose(next(a.parameters()), next(c.parameters()))


def test_accumulation_short_last_group_is_divided_by_its_own_size(accelerator):
    """3 batches with accum 2: steps after batch 2 (two-batch mean) and after batch 3 (its own loss alone)."""
    x, y = _data(24)
    net = nn.Linear(5, 3)
    a = copy.deepcopy(net)
    sa = _train(a, [(x[:8], y[:8]), (x[8:16], y[8:16]), (x[16:], y[16:])], accelerator, accum_steps=2)
    b = copy.deepcopy(net)
    _train(b, [(x[:16], y[:16]), (x[16:], y[16:])], accelerator, accum_steps=1)
    assert sa.optimizer_steps == 2
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_clip_grad_norm_and_value(accelerator):
    """norm: the update's global L2 norm is lr * clip; value: no entry of the update exceeds lr * clip."""
    torch.manual_seed(0)
    w = nn.Linear(4, 2)
    for p in w.parameters():
        p.grad = torch.full_like(p, 100.0)
    clip_gradients(w, accelerator, 1.0, "norm")
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in w.parameters()))
    assert abs(float(total) - 1.0) < 1e-4
    for p in w.parameters():
        p.grad = torch.linspace(-5, 5, p.numel()).view_as(p)
    clip_gradients(w, accelerator, 0.5, "value")
    assert max(float(p.grad.abs().max()) for p in w.parameters()) == pytest.approx(0.5)
    small = {n: torch.full_like(p, 1e-3) for n, p in w.named_parameters()}
    for n, p in w.named_parameters():
        p.grad = small[n].clone()
    clip_gradients(w, accelerator, 1.0, "norm")  # under the threshold: untouched
    for n, p in w.named_parameters():
        assert torch.equal(p.grad, small[n])
    with pytest.raises(ValueError, match="norm, value or agc"):
        clip_gradients(w, accelerator, 1.0, "bogus")


def test_ema_follows_its_recursion(accelerator):
    """ModelEmaV3 with a constant decay d, stepped with the optimizer-step count as in timm's train.py: the first
    update copies the weights, every later one is ema <- d * ema + (1 - d) * w."""
    from timm.utils import ModelEmaV3

    x, y = _data(24)
    net = nn.Linear(5, 3)
    ema = ModelEmaV3(net, decay=0.9)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    loss = create_loss("ce")
    state = TrainState()
    batches = [(x[i:i + 8], y[i:i + 8]) for i in (0, 8, 16)]
    for b in batches:  # the loop, one batch at a time, mirrored by the recursion
        train_one_epoch(net, [b], loss, opt, accelerator, epoch=0, ema=ema, state=state)
        d = 0.0 if state.optimizer_steps == 1 else 0.9
        for k, v in net.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, expected[k])
    assert state.optimizer_steps == 3


def test_layer_decay_scales_each_group_lr():
    """Layer decay: the head's group keeps the base LR, each layer group further from it a factor
    ``layer_decay`` less; timm's scheduler applies the scales."""
    model = build_model("resnet20_cifar", 4)
    opt = build_optimizer(model, _opt_args(opt="momentum", momentum=0.9, layer_decay=0.5, lr=0.2))
    scales = sorted({round(g["lr_scale"], 14) for g in opt.param_groups}, reverse=True)
    assert scales[0] == 1.0 and len(scales) >= 3
    for a, b in zip(scales, scales[1:]):
        assert b == pytest.approx(a * 0.5)
    fc = {id(p) for p in model.fc.parameters()}
    for g in opt.param_groups:
        if any(id(p) in fc for p in g["params"]):
            assert g["lr_scale"] == 1.0
        if any(p is model.conv1.weight for p in g["params"]):
            assert g["lr_scale"] == pytest.approx(min(scales))
    sched = build_lr_scheduler(opt, argparse.Namespace(sched="cosine", epochs=10, lr=0.2, warmup_lr=None, min_lr=0.0,
                                                       decay_epochs=None),
                               {"warmup_epochs": 0, "decay_milestones": [8, 9], "decay_rate": 0.1})
    sched.step(0)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.2 * g["lr_scale"])


def test_opt_options_reach_the_optimizer():
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, _opt_args(opt="adamw", lr=1e-3, opt_eps=1e-6, opt_betas=[0.8, 0.95],
                                           opt_kwargs=["amsgrad=true"]))
    g = opt.param_groups[0]
    assert type(opt).__name__ == "AdamW" and g["eps"] == 1e-6 and tuple(g["betas"]) == (0.8, 0.95) and g["amsgrad"]


def test_cosine_schedule_matches_its_formula():
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    E, lr, lo = 10, 0.1, 0.001
    sched = build_lr_scheduler(opt, argparse.Namespace(sched="cosine", epochs=E, lr=lr, warmup_lr=None, min_lr=lo,
                                                       decay_epochs=None),
                               {"warmup_epochs": 0, "decay_milestones": [8, 9], "decay_rate": 0.1})
    for e in range(E):
        sched.step(e)
        assert opt.param_groups[0]["lr"] == pytest.approx(lo + 0.5 * (lr - lo) * (1 + math.cos(math.pi * e / E)))
    with pytest.raises(ValueError, match="cosine, tanh, step"):
        build_lr_scheduler(opt, argparse.Namespace(sched="nope", epochs=E, lr=lr, warmup_lr=None, min_lr=0.0,
                                                   decay_epochs=None),
                           {"warmup_epochs": 0, "decay_milestones": [8, 9], "decay_rate": 0.1})
    with pytest.raises(ValueError, match="plateau is not supported.*not checkpointed.*use cosine"):
        build_lr_scheduler(opt, argparse.Namespace(sched="plateau", epochs=E, lr=lr, warmup_lr=None, min_lr=0.0,
                                                   decay_epochs=None),
                           {"warmup_epochs": 0, "decay_milestones": [8, 9], "decay_rate": 0.1})


def test_initial_checkpoint_and_local_pretrained_weights(tmp_path):
    """A local file as timm's pretrained weights (pretrained_cfg_overlay file=...) and as --initial-checkpoint:
    the backbone starts from it, the classifier has the new class count."""
    from safetensors.torch import save_file

    src = build_model("resnet20_cifar", 10)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(src.state_dict(), tmp_path / "w.pth")

    m = build_model("resnet20_cifar", 6, pretrained_path=tmp_path / "w.safetensors")
    assert torch.equal(m.conv1.weight, src.conv1.weight) and m.fc.weight.shape[0] == 6
    assert not torch.equal(m.fc.weight[:6], src.fc.weight[:6])  # a fresh head

    m2 = build_model("resnet20_cifar", 6)
    info = load_initial_checkpoint(m2, tmp_path / "w.pth")
    assert torch.equal(m2.conv1.weight, src.conv1.weight)
    assert set(info["skipped"]) == {"fc.weight", "fc.bias"} and m2.fc.weight.shape[0] == 6

    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model("resnet20_cifar", 6, pretrained_path=tmp_path / "missing.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        read_state_dict(tmp_path / "bad.safetensors")
    save_file({"other.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="shares no parameter"):
        load_initial_checkpoint(build_model("resnet20_cifar", 6), tmp_path / "other.safetensors")


def test_pretrained_download_failure_says_how_to_pass_a_local_file(monkeypatch):
    import timm

    def refuse(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(timm, "create_model", refuse)
    with pytest.raises(ValueError, match="--pretrained-path FILE"):
        build_model("resnet18", 5, pretrained=True)
