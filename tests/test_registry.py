import pytest
import torch

import lt_registry as L
from lt_registry._registry import Registry


def test_public_api_lists_every_family():
    assert L.list_losses() == ["bayias", "cb", "ce", "focal", "la", "ldam"]
    assert L.list_mixers() == ["mixup", "none", "remix", "unimix"]
    assert {"random", "class_balanced", "sqrt", "prior_power", "progressive", "drs"} <= set(L.list_samplers())
    assert L.list_losses("l*") == ["la", "ldam"]
    assert L.is_loss("Bayias") and L.is_loss("cross-entropy") and not L.is_loss("nope")
    assert L.is_mixer("unimix") and not L.is_mixer("cutmix")


def test_unknown_name_names_close_matches_and_all_entries():
    with pytest.raises(ValueError) as e:
        L.create_loss("bayas", class_counts=[3, 2])
    msg = str(e.value)
    assert "Unknown loss 'bayas'" in msg and "'bayias'" in msg and "Available losses: bayias, cb, ce" in msg
    with pytest.raises(ValueError, match="Unknown mixer 'unimx'.*'unimix'"):
        L.create_mixer("unimx", class_counts=[3, 2])
    with pytest.raises(ValueError, match="Available samplers"):
        L.create_sampler("balanced_clas", labels=[0, 1])


def test_register_custom_entry_and_duplicates():
    reg = Registry("widget")

    @reg.register("foo", aliases=("bar",), size=3)
    def make(size, extra=0):
        return size + extra

    assert reg.create("BAR") == 3 and reg.create("foo", size=5, extra=1) == 6
    assert reg.list(include_aliases=True) == ["bar", "foo"]
    with pytest.raises(ValueError, match="already registered"):
        reg.register("foo")(make)
    reg.register("foo", override=True)(lambda size=1: -size)
    assert reg.create("foo") == -1
    obj = object()
    assert reg.create(obj) is obj  # built components pass through


def test_user_registered_loss_is_created_through_the_public_facade():
    @L.register_loss("my_sq_margin_test", override=True)
    class MyLoss(L.LTLoss):
        def per_sample(self, logits, target):
            return (1 - logits.gather(1, target[:, None]).squeeze(1)).clamp_min(0) ** 2

    loss = L.create_loss("my_sq_margin_test", reduction="none")
    z = torch.tensor([[2.0, 0.0], [0.5, 0.0]])
    assert torch.allclose(loss(z, torch.tensor([0, 0])), torch.tensor([0.0, 0.25]))
    mixed = loss(z, L.MixedTarget(torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([0.5, 0.5])))
    assert torch.allclose(mixed, torch.tensor([0.5, 0.625]))
    L.LOSSES._entries.pop("my_sq_margin_test")
