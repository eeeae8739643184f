"""Hugging Face ``transformers`` interop (the optional extra ``pip install 'lt_registry[transformers]'``).

- :class:`LTTrainerLoss`: any registry loss as ``Trainer(compute_loss_func=...)``; takes class indices [B]
  or soft labels [B, C] and normalises by the Trainer's ``num_items_in_batch``;
- :class:`LTMixingCollator`: stacks ``pixel_values`` and the labels of the dataset's dicts, mixes them with
  any registry mixer and returns soft labels [B, C] (:class:`~lt_registry.interop.LTMixup` underneath);
- :class:`LTCollator`: the same stacking without mixing (class-index labels), for evaluation;
- ``LTTrainer``: ``transformers.Trainer`` whose evaluation and prediction batches go through the collator's
  ``eval_collator`` (no mixing), since the Trainer otherwise uses its one ``data_collator`` for both.

Only ``LTTrainer`` imports ``transformers`` (on first use); the loss and the collators are plain torch::

    from lt_registry.interop import LTMixingCollator, LTTrainerLoss, LTTrainer
    collator = LTMixingCollator("unimix", class_counts=counts)
    trainer = LTTrainer(model=model, args=args, train_dataset=train, eval_dataset=val, data_collator=collator,
                        compute_loss_func=LTTrainerLoss("bayias", class_counts=counts))
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import torch

from .._registry import create_loss
from ..data.seeding import sample_seed
from ..labels import check_labels
from .timm_mixup import LTMixup

# LTTrainer (module __getattr__) is left out of __all__: a star import must not need transformers
__all__ = ["LTTrainerLoss", "LTCollator", "LTMixingCollator", "require_transformers"]

_INSTALL = "pip install 'lt_registry[transformers]' (or pip install transformers)"


def require_transformers(what: str = "this feature") -> Any:
    """Import and return ``transformers``, or raise an ImportError naming the extra that installs it."""
    try:
        import transformers
    except ImportError as e:
        raise ImportError(f"{what} needs the optional dependency 'transformers', which is not installed: "
                          f"{_INSTALL}.") from e
    return transformers


def _logits(outputs: Any) -> torch.Tensor:
    """The logits of a model output: a ModelOutput / dict with ``logits``, a tuple (logits first) or a tensor."""
    if torch.is_tensor(outputs):
        return outputs
    if isinstance(outputs, Mapping):
        logits = outputs.get("logits")
    elif isinstance(outputs, (tuple, list)) and outputs:
        logits = outputs[0]
    else:
        logits = getattr(outputs, "logits", None)
    if not torch.is_tensor(logits):
        raise ValueError(f"LTTrainerLoss needs the model's logits: an output with a 'logits' tensor [B, C] (a "
                         f"transformers ModelOutput), a tuple whose first entry is the logits, or the logits tensor; "
                         f"got {type(outputs).__name__}.")
    return logits


class LTTrainerLoss:
    """A registry loss as ``compute_loss_func(outputs, labels, num_items_in_batch=None)`` of ``transformers.Trainer``.

    Args:
        loss: a registry name (``'ce'``, ``'focal'``, ``'cb'``, ``'ldam'``, ``'la'``, ``'bayias'``, ...) or a built
            loss (an :class:`~lt_registry.LTLoss`, any reduction).
        class_counts: training counts per class or a ClassPrior (for losses that need them).
        **loss_opts: options of the named loss (``label_smoothing``, ``gamma``, ``test_prior``, ...).

    The labels are what the collator gives: class indices [B] or soft labels [B, C] (:class:`LTMixingCollator`).
    The result is the sum of the per-sample losses over ``num_items_in_batch`` samples when the Trainer passes it
    (the count over all accumulated micro-batches, which is how the Trainer scales gradient accumulation), else
    the batch mean. The Trainer counts the entries of ``labels``, C per soft row, so for soft labels the count
    is divided by C.
    """

    def __init__(self, loss: Any = "ce", *, class_counts: Any = None, **loss_opts: Any):
        if isinstance(loss, str):
            loss = create_loss(loss, class_counts=class_counts, reduction="none", **loss_opts)
        elif loss_opts or class_counts is not None:
            raise ValueError("class_counts and loss options only apply to a loss given by name; got a built "
                             f"{type(loss).__name__}: build it with them instead.")
        elif not callable(loss):
            raise TypeError(f"loss must be a registry loss name or a loss module, got {type(loss).__name__}.")
        self.loss = loss
        self._device: Optional[torch.device] = None

    def __call__(self, outputs: Any, labels: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = _logits(outputs)
        if labels is None:
            raise ValueError("LTTrainerLoss got labels=None: every batch needs a 'labels' entry (class indices [B] "
                             "or soft labels [B, C]), as LTCollator and LTMixingCollator return.")
        if isinstance(self.loss, torch.nn.Module) and self._device != logits.device:
            self.loss.to(logits.device)  # its buffers (prior offsets, margins, class weights) follow the model
            self._device = logits.device
        value = self.loss(logits, labels)
        B = logits.shape[0]
        reduction = getattr(self.loss, "reduction", "none" if value.ndim else "mean")
        total = value.sum() if value.ndim else (value * B if reduction == "mean" else value)
        if num_items_in_batch is None:
            return total / B
        n = num_items_in_batch
        if torch.is_tensor(labels) and labels.is_floating_point() and labels.ndim == 2:
            n = n / labels.shape[1]  # the Trainer counted labels.ne(-100): every entry of a soft row
        return total / n

    def __repr__(self) -> str:
        return f"LTTrainerLoss({self.loss!r})"


class LTCollator:
    """Stacks a list of dataset dicts into ``{input_key: x [B, ...], "labels": y}``, without mixing.

    Args:
        input_key: the image tensor's key (``'pixel_values'``, what transformers' image processors return).
        label_key: the label's key; default ``'labels'``, else ``'label'`` (the usual name in Hub datasets).

    Labels are class indices (integers) or per-sample soft labels (float vectors [C]); they come back as
    int64 [B] or float [B, C].
    """

    def __init__(self, *, input_key: str = "pixel_values", label_key: Optional[str] = None):
        self.input_key, self.label_key = input_key, label_key

    def _key(self, first: Mapping) -> str:
        keys = (self.label_key,) if self.label_key else ("labels", "label")
        for k in keys:
            if k in first:
                return k
        raise ValueError(f"dataset items have no label key {' or '.join(repr(k) for k in keys)}; their keys are "
                         f"{sorted(first)}. Pass label_key= to the collator.")

    def stack(self, features: Sequence[Mapping]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x [B, ...], labels)`` from the dataset dicts."""
        if not isinstance(features, Sequence) or not features or not all(isinstance(f, Mapping) for f in features):
            raise ValueError("the collator expects a non-empty list of dataset items, each a dict with "
                             f"{self.input_key!r} and a label; got {type(features).__name__}.")
        first = features[0]
        if self.input_key not in first:
            raise ValueError(f"dataset items have no {self.input_key!r}; their keys are {sorted(first)}. "
                             "Pass input_key= to the collator.")
        lk = self._key(first)
        try:
            x = torch.stack([torch.as_tensor(f[self.input_key]) for f in features])
        except (RuntimeError, TypeError, ValueError, KeyError) as e:
            raise ValueError(f"cannot stack {self.input_key!r} of the batch: every item needs a tensor of the same "
                             f"shape ({e}).") from e
        labels = [f[lk] for f in features]
        y = torch.stack(labels) if all(torch.is_tensor(v) for v in labels) else torch.as_tensor(labels)
        if not (y.is_floating_point() and y.ndim == 2):
            y = check_labels(y, None, what=f"labels ({lk!r})", n=x.shape[0])
        return x, y

    def __call__(self, features: Sequence[Mapping]) -> Dict[str, torch.Tensor]:
        x, y = self.stack(features)
        return {self.input_key: x, "labels": y}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(input_key={self.input_key!r}, label_key={self.label_key!r})"


class LTMixingCollator(LTCollator):
    """A data collator that mixes: ``{input_key: x_mixed, "labels": soft [B, C]}`` from the dataset dicts.

    Args:
        mixer: registry mixer name or a built mixer (see :class:`~lt_registry.interop.LTMixup`).
        num_classes / class_counts: C, or the training counts (needed by ``remix`` and ``unimix``).
        label_smoothing: timm's smoothing of the soft labels, ``(1 - eps) * t + eps / C``; default 0 (the
            Trainer's ``label_smoothing_factor`` does not apply to a ``compute_loss_func``).
        generator: a CPU ``torch.Generator`` for the draws (reproducible mixing). In DataLoader workers each
            worker reseeds its copy once per worker start from the generator's seed and the worker's own seed
            (``get_worker_info().seed``: distinct per worker and per epoch, and reproducible when the loader's
            generator is seeded, as the Trainer does), so workers never repeat one another's draws.
        input_key / label_key: as for :class:`LTCollator`.
        **mixer_opts: options of the named mixer.

    Attributes:
        eval_collator: an :class:`LTCollator` with the same keys (no mixing, class-index labels), which
            ``LTTrainer`` uses for evaluation and prediction.
        mixup: the :class:`~lt_registry.interop.LTMixup` doing the work (``mixup.mixup_enabled = False`` stops
            mixing, e.g. at UniMix's ``mix_off_epoch``). UniMix draws its partner inside the batch.
    """

    def __init__(self, mixer: Any = "mixup", *, num_classes: Optional[int] = None, class_counts: Any = None,
                 label_smoothing: float = 0.0, generator: Optional[torch.Generator] = None,
                 input_key: str = "pixel_values", label_key: Optional[str] = None, **mixer_opts: Any):
        super().__init__(input_key=input_key, label_key=label_key)
        self.mixup = LTMixup(mixer, num_classes=num_classes, label_smoothing=label_smoothing,
                             class_counts=class_counts, generator=generator, **mixer_opts)
        self.eval_collator = LTCollator(input_key=input_key, label_key=label_key)
        self._base_seed = generator.initial_seed() if generator is not None else None
        self._worker_seed: Optional[int] = None

    @property
    def num_classes(self) -> int:
        return self.mixup.num_classes

    def _reseed_in_worker(self) -> None:
        """Give this worker's copy of the generator its own stream (see ``generator`` above)."""
        info = torch.utils.data.get_worker_info()
        if info is None or self.mixup.generator is None or self._worker_seed == info.seed:
            return
        self._worker_seed = info.seed
        self.mixup.generator.manual_seed(sample_seed(self._base_seed, info.seed, info.id))

    def __call__(self, features: Sequence[Mapping]) -> Dict[str, torch.Tensor]:
        x, y = self.stack(features)
        self._reseed_in_worker()
        x, soft = self.mixup(x, y)
        return {self.input_key: x, "labels": soft}

    def __repr__(self) -> str:
        return f"LTMixingCollator({self.mixup!r}, input_key={self.input_key!r})"


@contextlib.contextmanager
def _collating_with(trainer: Any, collator: Any) -> Iterator[None]:
    saved = trainer.data_collator
    trainer.data_collator = collator
    try:
        yield
    finally:
        trainer.data_collator = saved


@functools.lru_cache(maxsize=None)
def _trainer_class() -> type:
    transformers = require_transformers("lt_registry.interop.LTTrainer")

    class LTTrainer(transformers.Trainer):
        """``transformers.Trainer`` that evaluates and predicts with the data collator's ``eval_collator``
        (an :class:`LTMixingCollator` mixes training batches only); otherwise the Trainer unchanged."""

        def _plain(self) -> Any:
            return _collating_with(self, getattr(self.data_collator, "eval_collator", self.data_collator))

        def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
            with self._plain():
                return super().get_eval_dataloader(eval_dataset)

        def get_test_dataloader(self, test_dataset: Any) -> Any:
            with self._plain():
                return super().get_test_dataloader(test_dataset)

    LTTrainer.__module__, LTTrainer.__qualname__ = __name__, "LTTrainer"
    return LTTrainer


def __getattr__(name: str) -> Any:
    if name == "LTTrainer":
        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
