"""timm interop: :class:`LTMixup`, any registry mixer behind the call signature of timm's ``Mixup``.

timm's ``train.py`` pattern works unchanged::

    mixup_fn = LTMixup("unimix", class_counts=counts, label_smoothing=0.1)
    loss_fn = create_loss("bayias", class_counts=counts)
    x, soft_target = mixup_fn(x, y)             # soft_target: float [B, C], rows summing to 1
    loss = loss_fn(model(x), soft_target)

The soft target is timm's: ``(1 - eps) * (lam * onehot(y_a) + (1 - lam) * onehot(y_b)) + eps / C``, built
from the mixer's own target triple (docs/method.md §3.1). Every registry loss takes it and gives the same
value and gradient as the :class:`~lt_registry.MixedTarget` with ``label_smoothing=eps`` on the loss.
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Tuple

import torch

from .._registry import create_mixer
from ..labels import check_labels
from ..losses.base import _check_smoothing, soft_target
from ..mixers.base import MixedTarget
from ..prior import as_prior

__all__ = ["LTMixup"]


class LTMixup:
    """A registry mixer as a drop-in for ``timm.data.Mixup``: ``x, soft_target = mixup_fn(x, target)``.

    Args:
        mixer: a registry name (``'none'``, ``'mixup'``, ``'remix'``, ``'unimix'``, or any registered mixer) or
            a built mixer (a callable ``mixer(x, y, *, partner=None, generator=None) -> (x, MixedTarget)``).
        num_classes: C, the width of the soft target; may be left out when ``class_counts`` (or the built
            mixer) gives it.
        label_smoothing: epsilon of timm's smoothing, ``(1 - eps) * t + eps / C``; 0.1 as in timm's ``Mixup``.
        class_counts: training counts per class or a ClassPrior (needed by ``remix`` and ``unimix``).
        generator: a ``torch.Generator`` on the batch's device that all draws come from (reproducible mixing).
        **mixer_opts: options of the named mixer (``alpha``, ``preset``, ``tau``, ``kappa``, ...).

    Attributes:
        mixup_enabled: ``False`` switches mixing off (the soft target is then the smoothed one-hot); timm's
            ``train.py`` sets it at ``--mixup-off-epoch``, which is how UniMix's ``mix_off_epoch`` is applied.
        validate_labels: range-check the labels also on accelerators (one host sync per call); CPU labels are
            always checked. Set it to ``False`` when the labels were validated where they entered.

    UniMix's partner: the paper's dataset-level partner (Algorithm 1) is a second batch drawn by a
    ``prior_power`` sampler; timm's loop has no such batch, so by default the adapter uses UniMix's in-batch
    partner draw (the authors' released code, docs/method.md §1.2). Pass ``partner=(x2, y2)`` to the call to
    use a partner batch instead.
    """

    validate_labels = True

    def __init__(self, mixer: Any = "mixup", *, num_classes: Optional[int] = None, label_smoothing: float = 0.1,
                 class_counts: Any = None, generator: Optional[torch.Generator] = None, **mixer_opts: Any):
        if isinstance(mixer, str):
            mixer = create_mixer(mixer, class_counts=class_counts, **mixer_opts)
            mixer.validate_labels = False  # the adapter checks the labels against C (see validate_labels)
        elif mixer_opts:
            raise ValueError(f"mixer options {sorted(mixer_opts)} only apply to a mixer given by name; "
                             f"got a built {type(mixer).__name__}: build it with these options instead.")
        elif not callable(mixer):
            raise TypeError(f"mixer must be a registry mixer name or a mixer (callable x, y -> (x, MixedTarget)), "
                            f"got {type(mixer).__name__}.")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
        known = {}
        if num_classes is not None:
            if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
                raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
            known["num_classes"] = int(num_classes)
        if class_counts is not None:
            known["class_counts"] = as_prior(class_counts, smoothing=1.0).num_classes
        if getattr(mixer, "num_classes", None) is not None:
            known["the mixer's classes"] = int(mixer.num_classes)
        if not known:
            raise ValueError("LTMixup needs the number of classes: pass num_classes=C (or class_counts).")
        if len(set(known.values())) > 1:
            raise ValueError("LTMixup got different class counts: "
                             + ", ".join(f"{k} = {v}" for k, v in known.items()) + "; they must agree.")
        self.mixer = mixer
        self.num_classes = next(iter(known.values()))
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.generator = generator
        self.mixup_enabled = True

    def mix(self, x: torch.Tensor, target: torch.Tensor, *,
            partner: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Tuple[torch.Tensor, MixedTarget]:
        """The mixer's output: mixed ``x`` and its :class:`MixedTarget` (no smoothing, no soft target)."""
        if not torch.is_tensor(x) or x.ndim < 1:
            raise TypeError(f"x must be a batch tensor [B, ...], got {type(x).__name__}.")
        y = check_labels(target, self.num_classes, what="target", n=x.shape[0], sync=self.validate_labels)
        if partner is not None and isinstance(partner, (tuple, list)) and len(partner) == 2:
            x2, y2 = partner
            partner = (x2, check_labels(y2, self.num_classes, what="partner labels y2", n=x.shape[0],
                                        sync=self.validate_labels))
        if not self.mixup_enabled:
            return x, MixedTarget(y, y, torch.ones(y.shape, dtype=torch.float32, device=y.device))
        return self.mixer(x, y, partner=partner, generator=self.generator)

    def soft_target(self, target: Any) -> torch.Tensor:
        """timm's soft target [B, C] (float32, on the target's device) of class indices or a MixedTarget."""
        return soft_target(target, self.num_classes, label_smoothing=self.label_smoothing)

    def __call__(self, x: torch.Tensor, target: torch.Tensor, *,
                 partner: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x_mixed, soft_target)`` as timm's ``Mixup`` returns them (any batch size, x is not changed in place)."""
        x, mixed = self.mix(x, target, partner=partner)
        return x, self.soft_target(mixed)

    def __repr__(self) -> str:
        return (f"LTMixup({self.mixer!r}, num_classes={self.num_classes}, label_smoothing={self.label_smoothing}, "
                f"mixup_enabled={self.mixup_enabled})")
