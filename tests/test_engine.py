"""lt_registry.engine: the optimiser the recipe's options build (docs/method.md §5)."""
import pytest
import timm
import torch

import lt_registry  # noqa: F401  (registers the CIFAR ResNets)
from lt_registry.config import parse_args
from lt_registry.engine import build_optimizer

PAPER_CONFIG = "recipes/configs/cifar10_lt_r100.yaml"


def _decay_by_param(opt):
    return {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}


@pytest.mark.parametrize("config", ["cifar10_lt_r100", "cifar10_lt_r10", "cifar100_lt_r100", "imagenet_lt"])
def test_paper_configs_build_the_papers_optimiser(config):
    """The released code's torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=...): classical
    momentum (no Nesterov) and the same weight decay on every parameter, BN and biases included."""
    args = parse_args(["--config", f"recipes/configs/{config}.yaml"])
    model = timm.create_model("resnet20_cifar", num_classes=10)
    opt = build_optimizer(model, args)
    assert type(opt) is torch.optim.SGD
    assert all(g["nesterov"] is False and g["momentum"] == 0.9 for g in opt.param_groups)
    decay = _decay_by_param(opt)
    assert len(decay) == len(list(model.parameters()))
    assert set(decay.values()) == {args.weight_decay} and args.weight_decay > 0


def test_timm_convention_is_one_flag_away():
    """``--opt sgd --no-wd-norm-bias``: timm's Nesterov SGD, no decay on normalisation and bias parameters."""
    args = parse_args(["--config", PAPER_CONFIG, "--opt", "sgd", "--no-wd-norm-bias"])
    model = timm.create_model("resnet20_cifar", num_classes=10)
    opt = build_optimizer(model, args)
    assert all(g["nesterov"] is True for g in opt.param_groups)
    decay = _decay_by_param(opt)
    for name, p in model.named_parameters():
        assert decay[id(p)] == (0.0 if p.ndim <= 1 else 2e-4), name
