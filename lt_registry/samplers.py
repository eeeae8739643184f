"""Training-set samplers: which dataset indices an epoch visits (docs/method.md §1.2 and docs/method.md §3, Samplers).

Every sampler here is a ``torch.utils.data.Sampler`` over dataset indices built from the training
``labels`` (one integer class per index). The class prior ``pi_c = n_c / N`` comes from
:class:`~lt_registry.ClassPrior` (one prior object; no part re-counts labels).

Registered names (``create_sampler(name, labels=..., **options)``):

========================  ======================================================================
``random``                instance-balanced shuffling: one permutation per epoch (no replacement)
``prior_power`` (``tau``) with replacement, class ``c`` drawn with probability ``~ pi_c^tau``
                          (per-sample weight ``pi_y^tau / n_y``): the dataset-level UniMix partner
                          sampler, paper Eq. 9 / Algorithm 1, docs/method.md §1.2 (paper convention for tau)
``class_balanced``        ``prior_power`` with ``tau = 0``
``sqrt``                  ``prior_power`` with ``tau = 0.5`` (square-root sampling)
``progressive``           Kang et al. 2020 (Decoupling): ``p_c(t) = (1 - t/T) pi_c + (t/T) / C``
``drs``                   deferred re-sampling (Cao et al. 2019): ``before`` until ``start_epoch``,
                          then ``after``
========================  ======================================================================

Reproducibility and distributed training. A draw is a function of ``(seed, epoch)`` only: every
``__iter__`` re-seeds ``self.generator`` (a CPU ``torch.Generator``) with ``seed + epoch`` (the convention
of ``torch.utils.data.DistributedSampler``), so every process computes the identical *global* sequence.
That is what ``accelerate`` expects: ``Accelerator.prepare(dataloader)`` wraps the batch sampler in a
``BatchSamplerShard`` that hands batch ``i`` to process ``i % num_processes``, synchronises
``sampler.generator`` from process 0 at each epoch and forwards ``DataLoaderShard.set_epoch`` to
``sampler.set_epoch``. Under accelerate, call ``set_epoch`` on the *prepared loader* (or let it count
epochs itself, one per full pass): the prepared loader re-sends its own epoch counter to the sampler at
the start of every pass, which overrides a direct ``sampler.set_epoch``. (The samplers deliberately do
not subclass ``RandomSampler``: accelerate would swap one for its own ``SeedableRandomSampler`` under
``use_seedable_sampler=True``.) A sampler that drew from the global RNG with rank-dependent seeds would
cover only part of the data (the sampler contract in the README).

For plain ``torch.distributed`` without accelerate, pass ``num_replicas`` and ``rank``: the sampler then
yields only this rank's interleaved shard of the global sequence, padded (by wrapping around) to a
multiple of ``num_replicas``, exactly like ``DistributedSampler``. Do not combine this with
``accelerate``, which shards a second time.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple, Union

import torch
from torch.utils.data import Sampler

from ._registry import SAMPLERS, register_sampler
from .labels import check_labels
from .prior import ClassPrior

__all__ = [
    "LabelSampler", "RandomSampler", "PriorPowerSampler", "ProgressiveSampler", "DeferredResampler",
]


# ---- validation helpers ---------------------------------------------------------------------------------
def _check_int(value: Any, name: str, *, minimum: Optional[int] = None, accepted: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer{accepted}, got {value!r} ({type(value).__name__}).")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}{accepted}, got {value}.")
    return value


# ---- base class ----------------------------------------------------------------------------------------
class LabelSampler(Sampler[int]):
    """Base class: labels -> class counts, a seeded CPU generator, epochs, optional manual sharding.

    Args:
        labels: one integer class label per dataset index (list, numpy array or tensor), values in
            ``[0, num_classes)``.
        num_samples: indices drawn per epoch over all processes (default ``len(labels)``).
        seed: base seed; epoch ``e`` is drawn from ``torch.Generator().manual_seed(seed + e)``.
        num_classes: size of the label space (default ``max(labels) + 1``). Classes without samples are
            allowed; they are never drawn and class-balanced schemes spread their mass over the others.
        num_replicas, rank: only for plain ``torch.distributed`` without accelerate; see the module doc.

    Attributes:
        generator: the CPU ``torch.Generator`` every draw comes from (accelerate synchronises it).
        counts: float64 [C] training counts ``n_c``; ``prior``: float64 [C] ``pi_c = n_c / N``.
        epoch: the epoch set by :meth:`set_epoch` (0 initially).
    """

    def __init__(
        self,
        labels: Any,
        *,
        num_samples: Optional[int] = None,
        seed: int = 0,
        num_classes: Optional[int] = None,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
    ) -> None:
        if num_classes is not None:
            num_classes = _check_int(num_classes, "num_classes", minimum=1,
                                     accepted=" (the size of the label space)")
        y = check_labels(labels, num_classes, what="labels").cpu()
        # smoothing=1 only switches off ClassPrior's "empty class" rejection (an empty class is harmless for
        # sampling); the raw counts are what the samplers use.
        cp = ClassPrior.from_labels(y, num_classes, smoothing=1.0)
        self.labels: torch.Tensor = y
        self.counts: torch.Tensor = cp.raw_counts.to(torch.float64)
        self.prior: torch.Tensor = self.counts / self.counts.sum()
        self.num_classes: int = cp.num_classes
        self.num_samples: int = (len(y) if num_samples is None else
                                 _check_int(num_samples, "num_samples", minimum=1,
                                            accepted=" (indices drawn per epoch; None means len(labels))"))
        self.seed: int = _check_int(seed, "seed")
        self.epoch: int = 0
        self.generator: torch.Generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.seed)
        self.num_replicas, self.rank = self._check_sharding(num_replicas, rank)

    @staticmethod
    def _check_sharding(num_replicas: Optional[int], rank: Optional[int]) -> Tuple[Optional[int], Optional[int]]:
        if num_replicas is None and rank is None:
            return None, None
        dist_ready = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            if not dist_ready:
                raise ValueError("rank was given without num_replicas and torch.distributed is not initialised; "
                                 "pass both num_replicas and rank, or neither (accelerate shards by itself).")
            num_replicas = torch.distributed.get_world_size()
        if rank is None:
            if not dist_ready:
                raise ValueError("num_replicas was given without rank and torch.distributed is not initialised; "
                                 "pass both num_replicas and rank, or neither (accelerate shards by itself).")
            rank = torch.distributed.get_rank()
        num_replicas = _check_int(num_replicas, "num_replicas", minimum=1, accepted=" (number of processes)")
        rank = _check_int(rank, "rank")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas - 1] = [0, {num_replicas - 1}], got {rank}.")
        return num_replicas, rank

    # ---- epochs and draws -------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose sequence the next ``__iter__`` yields (draws depend on seed + epoch)."""
        self.epoch = _check_int(epoch, "epoch", minimum=0)

    def _draw(self, epoch: int) -> torch.Tensor:
        """The global index sequence [num_samples] (int64) for ``epoch``, drawn from ``self.generator``."""
        raise NotImplementedError

    def global_indices(self, epoch: Optional[int] = None) -> torch.Tensor:
        """The full sequence all processes together visit in ``epoch`` (default: the current epoch).

        Re-seeds ``self.generator`` with ``seed + epoch`` first, so the result depends on nothing else.
        """
        epoch = self.epoch if epoch is None else _check_int(epoch, "epoch", minimum=0)
        self.generator.manual_seed(self.seed + epoch)
        return self._draw(epoch)

    def _shard(self, idx: torch.Tensor) -> torch.Tensor:
        if self.num_replicas is None:
            return idx
        total = math.ceil(len(idx) / self.num_replicas) * self.num_replicas
        if total > len(idx):  # pad by wrapping around, as torch's DistributedSampler does
            reps = math.ceil(total / len(idx))
            idx = idx.repeat(reps)[:total]
        return idx[self.rank:total:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        yield from self._shard(self.global_indices()).tolist()

    def __len__(self) -> int:
        if self.num_replicas is None:
            return self.num_samples
        return math.ceil(self.num_samples / self.num_replicas)

    # ---- class-weighted draws (shared by prior_power and progressive) -------------------------------------
    def _draw_by_class_probs(self, class_probs: torch.Tensor) -> torch.Tensor:
        """Draw ``num_samples`` indices with replacement so that the class of each draw follows
        ``class_probs`` and indices within a class are uniform: per-sample weight ``p_y / n_y``."""
        per_class = torch.where(self.counts > 0, class_probs / self.counts.clamp_min(1.0),
                                torch.zeros_like(class_probs))
        weights = per_class[self.labels]
        return torch.multinomial(weights, self.num_samples, replacement=True, generator=self.generator)

    def _present(self) -> torch.Tensor:
        return self.counts > 0

    def class_probs(self, epoch: Optional[int] = None) -> torch.Tensor:
        """Probability (float64 [C]) that a draw of ``epoch`` belongs to each class."""
        return self.prior.clone()

    def __repr__(self) -> str:
        shard = "" if self.num_replicas is None else f", num_replicas={self.num_replicas}, rank={self.rank}"
        return (f"{type(self).__name__}(num_samples={self.num_samples}, num_classes={self.num_classes}, "
                f"seed={self.seed}, epoch={self.epoch}{shard})")


# ---- entries -------------------------------------------------------------------------------------------
@register_sampler("random", aliases=("instance_balanced", "ib", "shuffle"))
class RandomSampler(LabelSampler):
    """Instance-balanced shuffling (docs/method.md §3, ``random``): a fresh permutation of the dataset every epoch.

    Without replacement; class ``c`` appears with frequency ``pi_c``. When ``num_samples > len(labels)``
    successive independent permutations are concatenated (and the last one cut), so each index appears
    ``floor`` or ``ceil`` of ``num_samples / N`` times.
    """

    def _draw(self, epoch: int) -> torch.Tensor:
        n = len(self.labels)
        reps = math.ceil(self.num_samples / n)
        perms = [torch.randperm(n, generator=self.generator) for _ in range(reps)]
        return torch.cat(perms)[: self.num_samples]


@register_sampler("sqrt", aliases=("square_root",), tau=0.5)
@register_sampler("class_balanced", aliases=("cb", "balanced", "class_aware"), tau=0.0)
@register_sampler("prior_power", aliases=("power", "unimix_partner"))
class PriorPowerSampler(LabelSampler):
    """Class ``c`` drawn with probability ``pi_c^tau / sum_k pi_k^tau`` (paper Eq. 9; docs/method.md §1.2).

    The dataset-level UniMix partner sampler (paper Algorithm 1): with replacement, per-sample weight
    ``pi_y^tau / n_y``. ``tau`` uses the **paper's** convention: ``tau = 1`` is random sampling with
    replacement, ``tau = 0.5`` square-root sampling (``sqrt``), ``tau = 0`` class-balanced
    (``class_balanced``), ``tau < 0`` tail-favoured (the paper's CIFAR-10 preset is ``tau = -1``).
    The authors' released code writes the exponent as ``tau_code`` with per-sample weight ``n^tau_code``,
    so ``tau = tau_code + 1`` (docs/method.md §1.2). Classes with no samples are never drawn.

    Args:
        labels: training labels (see :class:`LabelSampler`).
        tau: the exponent on the class prior; any finite real number.
        num_samples, seed, num_classes, num_replicas, rank: see :class:`LabelSampler`.
    """

    def __init__(self, labels: Any, *, tau: Optional[float] = None, **kwargs: Any) -> None:
        if tau is None:
            raise ValueError("prior_power needs tau (paper convention, docs/method.md §1.2): class probability ~ pi^tau; "
                             "1 = random with replacement, 0.5 = sqrt, 0 = class-balanced, < 0 tail-favoured.")
        if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not math.isfinite(float(tau)):
            raise ValueError(f"tau must be a finite real number (class probability ~ pi^tau; 1 = random, "
                             f"0 = class-balanced, < 0 tail-favoured), got {tau!r}.")
        super().__init__(labels, **kwargs)
        self.tau: float = float(tau)
        # log space: pi^tau overflows for very negative tau on rare classes
        logw = torch.where(self._present(), self.tau * torch.log(self.prior.clamp_min(1e-300)),
                           torch.full_like(self.prior, -math.inf))
        w = torch.exp(logw - logw.max())
        self._class_probs: torch.Tensor = w / w.sum()

    def class_probs(self, epoch: Optional[int] = None) -> torch.Tensor:
        """``pi^tau`` normalised over the classes that have samples (float64 [C]); independent of epoch."""
        return self._class_probs.clone()

    def _draw(self, epoch: int) -> torch.Tensor:
        return self._draw_by_class_probs(self._class_probs)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", tau={self.tau:g})"


@register_sampler("progressive", aliases=("progressively_balanced", "pb"))
class ProgressiveSampler(LabelSampler):
    """Progressively-balanced sampling (Kang et al. 2020, "Decoupling", Sec. 3; docs/method.md §3).

    ``p_c(t) = (1 - t/T) * pi_c + (t/T) * 1/C'`` with ``t`` the epoch, ``T = total_epochs`` and ``C'`` the
    number of classes that have samples: instance-balanced at ``t = 0``, class-balanced at ``t >= T``
    (``t/T`` is clipped to 1). With replacement, per-sample weight ``p_y(t) / n_y``.

    Args:
        labels: training labels (see :class:`LabelSampler`).
        total_epochs: ``T``, a positive integer (the length of training).
        num_samples, seed, num_classes, num_replicas, rank: see :class:`LabelSampler`.
    """

    def __init__(self, labels: Any, *, total_epochs: Optional[int] = None, **kwargs: Any) -> None:
        if total_epochs is None:
            raise ValueError("progressive needs total_epochs (T in p_c(t) = (1 - t/T) p_IB + (t/T) p_CB), "
                             "a positive integer such as 200.")
        self.total_epochs: int = _check_int(total_epochs, "total_epochs", minimum=1,
                                            accepted=" (T, the number of training epochs)")
        super().__init__(labels, **kwargs)

    def class_probs(self, epoch: Optional[int] = None) -> torch.Tensor:
        """``p_c(t)`` (float64 [C]) for ``epoch`` (default: the current epoch)."""
        t = self.epoch if epoch is None else _check_int(epoch, "epoch", minimum=0)
        a = min(t / self.total_epochs, 1.0)
        present = self._present()
        balanced = present.to(torch.float64) / present.sum()
        return (1.0 - a) * self.prior + a * balanced

    def _draw(self, epoch: int) -> torch.Tensor:
        return self._draw_by_class_probs(self.class_probs(epoch))

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", total_epochs={self.total_epochs})"


SamplerLike = Union[str, Sampler]


@register_sampler("drs", aliases=("deferred_resampling", "deferred"))
class DeferredResampler(Sampler[int]):
    """Deferred re-sampling, DRS (Cao et al. 2019, LDAM-DRW Sec. 3.3; docs/method.md §3).

    Yields ``before`` for epochs ``< start_epoch`` and ``after`` from ``start_epoch`` on (160 of 200 in the
    CIFAR recipe). ``before``/``after`` are registry names (built here with the same labels, num_samples,
    seed, num_classes, num_replicas, rank, plus ``before_kwargs``/``after_kwargs``) or sampler instances
    (used as they are; they must have ``set_epoch``). :meth:`set_epoch` forwards to both.

    ``generator`` is shared with the samplers this class builds from names, so the generator accelerate
    synchronises is the one the draws come from.
    """

    def __init__(
        self,
        labels: Any = None,
        *,
        before: SamplerLike = "random",
        after: SamplerLike = "class_balanced",
        start_epoch: int = 160,
        before_kwargs: Optional[Mapping[str, Any]] = None,
        after_kwargs: Optional[Mapping[str, Any]] = None,
        num_samples: Optional[int] = None,
        seed: int = 0,
        num_classes: Optional[int] = None,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
    ) -> None:
        self.start_epoch: int = _check_int(start_epoch, "start_epoch", minimum=0,
                                           accepted=" (the epoch at which to switch to the `after` sampler)")
        self.seed: int = _check_int(seed, "seed")
        self.generator: torch.Generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.seed)
        self.epoch: int = 0
        common: Dict[str, Any] = dict(labels=labels, num_samples=num_samples, seed=seed, num_classes=num_classes,
                                      num_replicas=num_replicas, rank=rank)
        self.before: Sampler = self._build(before, "before", common, before_kwargs)
        self.after: Sampler = self._build(after, "after", common, after_kwargs)

    def _build(self, spec: SamplerLike, which: str, common: Dict[str, Any],
               extra: Optional[Mapping[str, Any]]) -> Sampler:
        if isinstance(spec, str):
            entry = SAMPLERS.get(spec)  # unknown: ValueError naming close matches and every available sampler
            if entry.factory is DeferredResampler:
                raise ValueError(f"{which}={spec!r}: drs cannot nest another drs; use a plain sampler name "
                                 f"({', '.join(n for n in SAMPLERS.list() if n != 'drs')}).")
            sampler = SAMPLERS.create(spec, **{**common, **dict(extra or {})})
            if isinstance(getattr(sampler, "generator", None), torch.Generator):
                sampler.generator = self.generator  # one generator: the one accelerate synchronises
            return sampler
        if isinstance(spec, Sampler) and callable(getattr(spec, "set_epoch", None)):
            if extra:
                raise ValueError(f"{which}_kwargs only apply when {which} is a sampler name, not an instance.")
            return spec
        raise ValueError(f"{which} must be a registered sampler name ({', '.join(SAMPLERS.list())}) or a "
                         f"torch Sampler with set_epoch, got {type(spec).__name__}.")

    @property
    def active(self) -> Sampler:
        """The sampler in use for the current epoch."""
        return self.after if self.epoch >= self.start_epoch else self.before

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch here and on both samplers (each draws as a function of its seed and epoch)."""
        self.epoch = _check_int(epoch, "epoch", minimum=0)
        self.before.set_epoch(self.epoch)
        self.after.set_epoch(self.epoch)

    def global_indices(self, epoch: Optional[int] = None) -> torch.Tensor:
        """The global sequence of ``epoch`` (default: current) from whichever sampler that epoch uses."""
        epoch = self.epoch if epoch is None else _check_int(epoch, "epoch", minimum=0)
        sampler = self.after if epoch >= self.start_epoch else self.before
        if not callable(getattr(sampler, "global_indices", None)):
            raise ValueError(f"{type(sampler).__name__} has no global_indices(); only LabelSampler subclasses do.")
        return sampler.global_indices(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(self.active)

    def __len__(self) -> int:
        return len(self.active)

    def __repr__(self) -> str:
        return (f"DeferredResampler(before={self.before!r}, after={self.after!r}, "
                f"start_epoch={self.start_epoch}, epoch={self.epoch})")
