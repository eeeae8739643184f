"""Models (docs/method.md §5): CIFAR ResNets and ResNet-10 registered into timm."""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import lt_registry.models as M
from lt_registry.models import CifarResNet, CosineLinear
from lt_registry.models.cifar_resnet import _ShortcutA


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_resnet32_has_spec_parameter_count():
    assert n_params(timm.create_model("resnet32_cifar", num_classes=10)) == 464_154


@pytest.mark.parametrize("depth,n", sorted(M.CIFAR_DEPTHS.items()))
def test_depths_shapes_and_block_counts(depth, n):
    m = timm.create_model(f"resnet{depth}_cifar", num_classes=7).eval()
    assert [len(m.layer1), len(m.layer2), len(m.layer3)] == [n, n, n]
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) + 1 == depth  # 6n + 1 convs + the classifier
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert m.forward_features(x).shape == (2, 64, 8, 8)
        assert m(x).shape == (2, 7)
        assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (2, 64)


def test_parameter_count_formula_over_depths():
    # conv/BN params of a CIFAR ResNet with option-A shortcuts, plus a linear head: independent of the code
    def expected(n: int, C: int) -> int:
        total = 3 * 16 * 9 + 2 * 16
        cin = 16
        for w in (16, 32, 64):
            for j in range(n):
                total += (cin if j == 0 else w) * w * 9 + w * w * 9 + 4 * w
            cin = w
        return total + 64 * C + C

    for depth, n in M.CIFAR_DEPTHS.items():
        assert n_params(timm.create_model(f"resnet{depth}_cifar", num_classes=10)) == expected(n, 10)


def test_option_a_shortcut_is_parameter_free_and_subsamples_and_pads():
    m = timm.create_model("resnet32_cifar")
    shortcuts = [mod for mod in m.modules() if isinstance(mod, _ShortcutA)]
    assert len(shortcuts) == 2  # stage 2 and 3 entries
    for s in shortcuts:
        assert n_params(s) == 0 and len(list(s.buffers())) == 0
    x = torch.randn(2, 16, 32, 32)
    y = _ShortcutA(16, 32, 2)(x)
    assert y.shape == (2, 32, 16, 16)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, :8]) == 0 and torch.count_nonzero(y[:, 24:]) == 0
    # no 1x1 projection convs anywhere
    assert all(c.kernel_size == (3, 3) for c in m.modules() if isinstance(c, nn.Conv2d))


def test_cosine_head_outputs_cosines():
    m = timm.create_model("resnet32_cifar", num_classes=10, head="cosine").eval()
    assert isinstance(m.get_classifier(), CosineLinear)
    with torch.no_grad():
        z = m(torch.randn(8, 3, 32, 32) * 5)
    assert z.shape == (8, 10)
    assert z.abs().max() <= 1 + 1e-5
    assert n_params(m) == 464_154 - 10  # the cosine head has no bias
    with torch.no_grad():
        f = m.forward_head(m.forward_features(torch.ones(1, 3, 32, 32)), pre_logits=True)
        w = m.fc.weight
        ref = (f / f.norm()) @ (w / w.norm(dim=1, keepdim=True)).T
        assert torch.allclose(m.fc(f), ref, atol=1e-6)


def test_kaiming_normal_init():
    torch.manual_seed(0)
    m = timm.create_model("resnet110_cifar", num_classes=10)
    w = torch.cat([c.weight.flatten() for c in m.modules() if isinstance(c, nn.Conv2d) and c.in_channels == 64])
    fan_in = 64 * 9
    assert w.std().item() == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.03)
    assert abs(w.mean().item()) < 0.005


def test_timm_create_model_and_config():
    m = timm.create_model("resnet32_cifar", num_classes=100)
    assert isinstance(m, CifarResNet) and m.num_classes == 100 and m.num_features == 64
    cfg = m.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["classifier"] == "fc"
    assert tuple(cfg["mean"]) == (0.4914, 0.4822, 0.4465) and tuple(cfg["std"]) == (0.2023, 0.1994, 0.2010)
    assert m.default_cfg == cfg
    data_cfg = timm.data.resolve_data_config({}, model=m)
    assert data_cfg["input_size"] == (3, 32, 32)
    assert set(M.MODEL_NAMES) <= set(timm.list_models("*"))
    assert timm.create_model("resnet32_cifar").num_classes == 10  # default from the cfg


def test_reset_classifier_keeps_head_type_and_zero_gives_features():
    m = timm.create_model("resnet32_cifar", num_classes=10)
    m.reset_classifier(5)
    assert m.num_classes == 5 and isinstance(m.get_classifier(), nn.Linear) and m.fc.out_features == 5
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    m.reset_classifier(0)
    assert isinstance(m.get_classifier(), nn.Identity)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    c = timm.create_model("resnet20_cifar", head="cosine")
    c.reset_classifier(3)
    assert isinstance(c.fc, CosineLinear) and c.fc.out_features == 3
    assert m.get_classifier(name_only=True) == "fc"


def test_features_only_and_grad_checkpointing():
    f = timm.create_model("resnet20_cifar", features_only=True)
    outs = f(torch.randn(2, 3, 32, 32))
    assert [o.shape[1:] for o in outs] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
    m = timm.create_model("resnet20_cifar").train()
    m.set_grad_checkpointing(True)
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    assert m.conv1.weight.grad is not None


def test_local_dir_roundtrip(tmp_path):
    from timm.models import save_for_hf

    m = timm.create_model("resnet20_cifar", num_classes=4, head="cosine").eval()
    save_for_hf(m, tmp_path, model_args=dict(num_classes=4, head="cosine"), safe_serialization=True)
    m2 = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    assert isinstance(m2.fc, CosineLinear)
    assert torch.equal(m(x), m2(x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="head"):
        timm.create_model("resnet32_cifar", head="mlp")
    with pytest.raises(TypeError, match="drop_path_rate"):
        timm.create_model("resnet32_cifar", drop_path_rate=0.1)
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("resnet32_cifar", global_pool="max")


def test_resnet10_lt_is_plain_basicblock_resnet():
    from timm.models.resnet import BasicBlock, ResNet

    m = timm.create_model("resnet10_lt", num_classes=1000)
    assert isinstance(m, ResNet)
    assert [len(getattr(m, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert all(isinstance(getattr(m, f"layer{i}")[0], BasicBlock) for i in range(1, 5))
    assert m.conv1.kernel_size == (7, 7) and m.conv1.stride == (2, 2) and isinstance(m.maxpool, nn.MaxPool2d)
    assert m.num_features == 512
    # torchvision-style ResNet-10: 4,910,922 parameters at 10 classes (the OLTR/Decoupling model)
    assert n_params(timm.create_model("resnet10_lt", num_classes=10)) == 4_910_922
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
