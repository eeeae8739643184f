"""Samplers (docs/method.md §1.2 and docs/method.md §3): class frequencies, determinism in (seed, epoch), schedules, sharding
(manual and under accelerate), and the errors bad input raises."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader, TensorDataset

from lt_registry import create_sampler, is_sampler, list_samplers
from lt_registry.samplers import (
    DeferredResampler, PriorPowerSampler, ProgressiveSampler, RandomSampler,
)

COUNTS = [400, 200, 100, 50, 25]  # long tail over 5 classes, rho = 16
N = sum(COUNTS)  # 775
BIG = 200_000  # draws for frequency checks
P_MIN = 1e-4  # chi-square acceptance level (fixed seeds, so the outcome is deterministic)


def _labels(counts=COUNTS, seed=0) -> np.ndarray:
    """Labels with the given class counts in a shuffled order (so index order says nothing about class)."""
    y = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(y)


def _expected_class_probs(counts, tau: float) -> np.ndarray:
    pi = np.asarray(counts, dtype=np.float64) / np.sum(counts)
    w = pi ** tau
    return w / w.sum()


def _class_hist(labels: np.ndarray, idx, num_classes: int) -> np.ndarray:
    return np.bincount(labels[np.asarray(idx)], minlength=num_classes)


def _assert_follows(observed: np.ndarray, probs: np.ndarray) -> None:
    expected = probs * observed.sum()
    p = stats.chisquare(observed, expected).pvalue
    assert p > P_MIN, f"class histogram {observed.tolist()} does not follow {np.round(probs, 4).tolist()} (p={p:.2e})"


# ---- registry ---------------------------------------------------------------------------------------------
def test_registered_names_and_defaults():
    assert {"random", "prior_power", "class_balanced", "sqrt", "progressive", "drs"} <= set(list_samplers())
    y = _labels()
    assert create_sampler("class_balanced", labels=y).tau == 0.0
    assert create_sampler("sqrt", labels=y).tau == 0.5
    assert create_sampler("prior_power", labels=y, tau=-1).tau == -1.0
    assert create_sampler("sqrt", labels=y, tau=0.3).tau == 0.3  # caller overrides the entry default
    assert isinstance(create_sampler("random", labels=y), RandomSampler)
    assert isinstance(create_sampler("progressive", labels=y, total_epochs=10), ProgressiveSampler)
    assert isinstance(create_sampler("drs", labels=y), DeferredResampler)
    assert is_sampler("Class-Balanced") and is_sampler("cb") and is_sampler("instance_balanced")
    for name in ("random", "class_balanced", "sqrt", "drs"):
        s = create_sampler(name, labels=y)
        assert isinstance(s, torch.utils.data.Sampler)
        assert isinstance(s.generator, torch.Generator) and s.generator.device.type == "cpu"
        assert callable(s.set_epoch)
        assert len(s) == N


# ---- prior_power: class frequencies follow pi^tau ------------------------------------------------------------
@pytest.mark.parametrize("tau", [1.0, 0.0, -1.0, 0.5])
def test_prior_power_class_frequencies(tau):
    y = _labels()
    s = create_sampler("prior_power", labels=y, tau=tau, num_samples=BIG, seed=3)
    idx = s.global_indices(0)
    assert idx.shape == (BIG,) and idx.dtype == torch.int64
    probs = _expected_class_probs(COUNTS, tau)
    _assert_follows(_class_hist(y, idx, 5), probs)
    np.testing.assert_allclose(s.class_probs().numpy(), probs, rtol=1e-12)


def test_prior_power_tau_changes_frequencies():
    """Sanity of the frequency check itself: tau = 0 draws are rejected as pi^-1 and as pi^1."""
    y = _labels()
    idx = create_sampler("class_balanced", labels=y, num_samples=BIG).global_indices(0)
    h = _class_hist(y, idx, 5)
    for wrong in (1.0, -1.0, 0.1):
        assert stats.chisquare(h, _expected_class_probs(COUNTS, wrong) * h.sum()).pvalue < 1e-10


def test_named_presets_match_their_tau():
    y = _labels()
    for name, tau in (("class_balanced", 0.0), ("sqrt", 0.5)):
        idx = create_sampler(name, labels=y, num_samples=BIG, seed=1).global_indices(0)
        _assert_follows(_class_hist(y, idx, 5), _expected_class_probs(COUNTS, tau))


def test_prior_power_uniform_within_class():
    """Per-sample weight pi_y^tau / n_y: inside a class every index is equally likely (docs/method.md §1.2)."""
    y = _labels()
    idx = create_sampler("prior_power", labels=y, tau=-1, num_samples=BIG, seed=5).global_indices(0).numpy()
    for c in (0, 4):
        members = np.flatnonzero(y == c)
        hits = np.bincount(idx[y[idx] == c], minlength=len(y))[members]
        assert stats.chisquare(hits).pvalue > P_MIN, f"indices of class {c} are not drawn uniformly"
    assert np.isin(idx, np.arange(len(y))).all()


def test_prior_power_empty_class_never_drawn_and_extreme_tau():
    y = _labels([300, 0, 30, 3])
    s = create_sampler("prior_power", labels=y, tau=-8, num_classes=5, num_samples=20_000)
    idx = s.global_indices(0)
    h = _class_hist(y, idx, 5)
    assert h[1] == 0 and h[4] == 0
    assert torch.isfinite(s.class_probs()).all()
    assert h[3] > 0.99 * h.sum()  # tau = -8 puts almost all mass on the 3-sample class
    cb = create_sampler("class_balanced", labels=y, num_classes=5, num_samples=30_000)
    h = _class_hist(y, cb.global_indices(0), 5)
    _assert_follows(h[[0, 2, 3]], np.full(3, 1 / 3))


# ---- random: permutation, determinism ---------------------------------------------------------------------------
def test_random_is_a_permutation_and_deterministic():
    y = _labels()
    a = create_sampler("random", labels=y, seed=7)
    seq0 = list(a)
    assert sorted(seq0) == list(range(N))
    assert seq0 != list(range(N))
    assert list(a) == seq0  # iterating again without set_epoch repeats the epoch
    b = create_sampler("random", labels=y, seed=7)
    torch.manual_seed(1234)  # the global RNG plays no part
    assert list(b) == seq0
    a.set_epoch(1)
    seq1 = list(a)
    assert sorted(seq1) == list(range(N)) and seq1 != seq0
    b.set_epoch(1)
    assert list(b) == seq1
    c = create_sampler("random", labels=y, seed=8)
    assert list(c) != seq0
    assert a.global_indices(0).tolist() == seq0


def test_draws_do_not_touch_global_rng():
    y = _labels()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    for name in ("random", "class_balanced", "sqrt"):
        list(create_sampler(name, labels=y))
    assert torch.equal(torch.get_rng_state(), state)


def test_random_num_samples_larger_than_dataset():
    y = _labels()
    s = create_sampler("random", labels=y, num_samples=2 * N + 10)
    idx = np.asarray(list(s))
    assert len(idx) == len(s) == 2 * N + 10
    reps = np.bincount(idx, minlength=N)
    assert reps.min() == 2 and reps.max() == 3 and (reps == 3).sum() == 10
    assert sorted(idx[:N].tolist()) == list(range(N))


def test_prior_power_deterministic_in_seed_and_epoch():
    y = _labels()
    s1 = create_sampler("sqrt", labels=y, seed=11)
    s2 = create_sampler("sqrt", labels=y, seed=11)
    s1.set_epoch(4)
    s2.set_epoch(4)
    assert list(s1) == list(s2)
    s2.set_epoch(5)
    assert list(s1) != list(s2)


def test_dataloader_yields_the_sampler_sequence():
    y = _labels()
    s = create_sampler("class_balanced", labels=y, seed=2)
    dl = DataLoader(TensorDataset(torch.arange(N)), batch_size=32, sampler=s)
    s.set_epoch(3)
    got = torch.cat([b[0] for b in dl])
    assert torch.equal(got, s.global_indices(3))


# ---- progressive ------------------------------------------------------------------------------------------------
def test_progressive_interpolates_from_instance_to_class_balanced():
    y = _labels()
    T = 10
    s = create_sampler("progressive", labels=y, total_epochs=T, num_samples=BIG, seed=4)
    pi = np.asarray(COUNTS, dtype=np.float64) / N
    cb = np.full(5, 0.2)
    for epoch, a in ((0, 0.0), (3, 0.3), (5, 0.5), (T, 1.0), (3 * T, 1.0)):
        s.set_epoch(epoch)
        probs = (1 - a) * pi + a * cb
        np.testing.assert_allclose(s.class_probs().numpy(), probs, rtol=1e-12)
        _assert_follows(_class_hist(y, list(s), 5), probs)
    # the endpoints are the plain samplers' distributions (and clearly not each other's)
    s.set_epoch(0)
    h0 = _class_hist(y, list(s), 5)
    assert stats.chisquare(h0, cb * BIG).pvalue < 1e-10
    s.set_epoch(T)
    hT = _class_hist(y, list(s), 5)
    assert stats.chisquare(hT, pi * BIG).pvalue < 1e-10


# ---- drs -----------------------------------------------------------------------------------------------------
def test_drs_switches_at_start_epoch():
    y = _labels()
    s = create_sampler("drs", labels=y, start_epoch=3, seed=9)
    ref_before = RandomSampler(y, seed=9)
    ref_after = PriorPowerSampler(y, tau=0.0, seed=9)
    for epoch in range(6):
        s.set_epoch(epoch)
        assert s.before.epoch == s.after.epoch == epoch  # set_epoch forwards to both
        seq = list(s)
        if epoch < 3:
            assert s.active is s.before
            assert seq == ref_before.global_indices(epoch).tolist()
            assert sorted(seq) == list(range(N))
        else:
            assert s.active is s.after
            assert seq == ref_after.global_indices(epoch).tolist()
            assert sorted(seq) != list(range(N))  # with replacement: not a permutation
        assert torch.equal(s.global_indices(epoch), torch.tensor(seq))


def test_drs_default_and_instances():
    y = _labels()
    d = create_sampler("drs", labels=y)
    assert d.start_epoch == 160 and isinstance(d.before, RandomSampler) and d.after.tau == 0.0
    assert d.before.generator is d.generator and d.after.generator is d.generator
    big = create_sampler("drs", labels=y, before="sqrt", after="progressive", start_epoch=1,
                         after_kwargs={"total_epochs": 2}, num_samples=BIG)
    big.set_epoch(2)  # progressive at t = T: class-balanced
    _assert_follows(_class_hist(y, list(big), 5), np.full(5, 0.2))
    a, b = RandomSampler(y, seed=1), PriorPowerSampler(y, tau=-1, seed=1)
    d = DeferredResampler(y, before=a, after=b, start_epoch=2)
    assert d.before is a and d.after is b
    d.set_epoch(2)
    assert a.epoch == b.epoch == 2
    assert list(d) == b.global_indices(2).tolist()


def test_drs_in_a_dataloader_epoch_loop():
    y = _labels()
    s = create_sampler("drs", labels=y, start_epoch=1)
    dl = DataLoader(TensorDataset(torch.arange(N)), batch_size=64, sampler=s)
    seen = []
    for epoch in range(2):
        s.set_epoch(epoch)
        seen.append(torch.cat([b[0] for b in dl]).tolist())
    assert sorted(seen[0]) == list(range(N))
    assert len(set(seen[1])) < N  # class-balanced draws repeat tail samples


# ---- manual sharding (plain torch DDP, no accelerate) -------------------------------------------------------------
@pytest.mark.parametrize("name,kw,num_samples,replicas", [
    ("random", {}, None, 2), ("random", {}, None, 4), ("prior_power", {"tau": -1}, 1001, 3),
    ("drs", {"start_epoch": 0}, None, 4),
])
def test_manual_sharding(name, kw, num_samples, replicas):
    y = _labels()
    full = create_sampler(name, labels=y, num_samples=num_samples, seed=6, **kw)
    full.set_epoch(2)
    g = full.global_indices().tolist()
    total = math.ceil(len(g) / replicas) * replicas
    padded = (g * 2)[:total]  # DistributedSampler pads by wrapping around
    shards = []
    for rank in range(replicas):
        s = create_sampler(name, labels=y, num_samples=num_samples, seed=6, num_replicas=replicas, rank=rank, **kw)
        s.set_epoch(2)
        shard = list(s)
        assert len(shard) == len(s) == total // replicas
        shards.append(shard)
    # rank r holds global positions r, r + R, r + 2R, ...: disjoint positions, together the padded sequence
    interleaved = [shards[p % replicas][p // replicas] for p in range(total)]
    assert interleaved == padded
    assert sorted(sum(shards, [])) == sorted(padded)
    if name == "random" and total == len(g):
        assert sorted(sum(shards, [])) == list(range(N))


# ---- bad input --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kwargs,match", [
    ("random", dict(labels=[]), "labels are empty"),
    ("random", dict(labels=None), "labels are missing"),
    ("random", dict(labels=[0, 1, -1]), "labels: class index -1 is out of range; class indices must be >= 0"),
    ("random", dict(labels=[0.0, 1.0]), "labels must be integer"),
    ("random", dict(labels=[True, False]), "labels must be integer"),
    ("random", dict(labels=[[0, 1], [1, 0]]), "labels must be 1-D"),
    ("random", dict(labels=[0, 1, 5], num_classes=3), "labels: class index 5 is out of range for num_classes=3"),
    ("random", dict(labels=[0, 1], num_classes=0), "num_classes must be >= 1"),
    ("random", dict(labels=[0, 1], num_samples=0), "num_samples must be >= 1"),
    ("random", dict(labels=[0, 1], num_samples=-5), "num_samples must be >= 1"),
    ("random", dict(labels=[0, 1], num_samples=2.5), "num_samples must be an integer"),
    ("random", dict(labels=[0, 1], num_replicas=2, rank=2), r"rank must be in \[0, num_replicas - 1\]"),
    ("random", dict(labels=[0, 1], num_replicas=2, rank=-1), r"rank must be in \[0, num_replicas - 1\]"),
    ("random", dict(labels=[0, 1], num_replicas=0, rank=0), "num_replicas must be >= 1"),
    ("random", dict(labels=[0, 1], num_replicas=2), "without rank"),
    ("prior_power", dict(labels=[0, 1]), "prior_power needs tau"),
    ("prior_power", dict(labels=[0, 1], tau=float("nan")), "tau must be a finite real number"),
    ("prior_power", dict(labels=[0, 1], tau=float("inf")), "tau must be a finite real number"),
    ("prior_power", dict(labels=[0, 1], tau="0.5"), "tau must be a finite real number"),
    ("progressive", dict(labels=[0, 1]), "progressive needs total_epochs"),
    ("progressive", dict(labels=[0, 1], total_epochs=0), "total_epochs must be >= 1"),
    ("progressive", dict(labels=[0, 1], total_epochs=-3), "total_epochs must be >= 1"),
    ("drs", dict(labels=[0, 1], before="rnadom"), r"Unknown sampler 'rnadom'.*Did you mean 'random'"),
    ("drs", dict(labels=[0, 1], after="no_such"), "Unknown sampler 'no_such'.*Available samplers"),
    ("drs", dict(labels=[0, 1], after="drs"), "drs cannot nest"),
    ("drs", dict(labels=[0, 1], after=[1, 2]), "after must be a registered sampler name"),
    ("drs", dict(labels=[0, 1], start_epoch=-1), "start_epoch must be >= 0"),
    ("drs", dict(labels=[0, 1], after="progressive"), "progressive needs total_epochs"),
    ("drs", dict(labels=[0, -1]), "labels: class index -1 is out of range"),
])
def test_bad_input(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_sampler(name, **kwargs)


def test_bad_epoch():
    s = create_sampler("random", labels=[0, 1])
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        s.set_epoch(-1)
    with pytest.raises(ValueError, match="epoch must be an integer"):
        s.set_epoch(1.5)


# ---- DDP under accelerate ----------------------------------------------------------------------------------------
DDP_BATCH = 16
DDP_COUNTS = [320, 160, 80, 40, 40]  # N = 640 = 20 * (2 * DDP_BATCH)
DDP_CONFIGS = [("random", {}), ("prior_power", {"tau": -1.0}), ("progressive", {"total_epochs": 1})]
DDP_EPOCHS = 2


def _ddp_worker(labels: np.ndarray, references: dict) -> None:
    """Runs in each of 2 processes; raises AssertionError (failing the launcher) if anything is wrong."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    assert acc.num_processes == 2
    n = len(labels)
    results = {}
    for name, kw in DDP_CONFIGS:
        sampler = create_sampler(name, labels=labels, seed=21, **kw)
        dl = acc.prepare(DataLoader(TensorDataset(torch.arange(n)), batch_size=DDP_BATCH, sampler=sampler))
        assert getattr(dl, "synchronized_generator", sampler.generator) is sampler.generator
        for epoch in range(DDP_EPOCHS):
            dl.set_epoch(epoch)  # on the prepared loader: accelerate forwards it to sampler.set_epoch
            batches = [b[0] for b in dl]
            assert sampler.epoch == epoch
            local = torch.cat(batches)
            assert len(local) == n // 2
            # all collectives first, checks after: a failing rank must not leave the other one waiting
            results[(name, epoch)] = acc.gather(local.reshape(1, -1)).reshape(2, -1)
    # without set_epoch the prepared loader counts epochs itself (one per pass) and forwards them
    sampler = create_sampler("random", labels=labels, seed=21)
    dl = acc.prepare(DataLoader(TensorDataset(torch.arange(n)), batch_size=DDP_BATCH, sampler=sampler))
    for epoch in range(DDP_EPOCHS):
        local = torch.cat([b[0] for b in dl])
        mine = references[("random", epoch)].reshape(-1, DDP_BATCH)[acc.process_index::2].reshape(-1)
        assert torch.equal(local, mine), f"rank {acc.process_index}: pass {epoch} is not epoch {epoch}'s shard"
    for (name, epoch), per_rank in results.items():
        ref = references[(name, epoch)]
        # accelerate deals whole batches round robin: global batch k goes to rank k % 2
        batches = per_rank.reshape(2, -1, DDP_BATCH)
        rebuilt = torch.stack([batches[0], batches[1]], dim=1).reshape(-1)
        assert torch.equal(rebuilt, ref), f"{name} epoch {epoch}: ranks do not partition the global sequence"
        assert sorted(per_rank.reshape(-1).tolist()) == sorted(ref.tolist())
        if name == "random":
            assert sorted(per_rank.reshape(-1).tolist()) == list(range(n)), "random must cover every sample once"
    if acc.is_main_process:
        counts = np.asarray(DDP_COUNTS)
        for name, kw in DDP_CONFIGS:
            both = torch.cat([results[(name, e)].reshape(-1) for e in range(DDP_EPOCHS)]).numpy()
            h = np.bincount(labels[both], minlength=len(counts))
            if name == "random":
                assert (h == DDP_EPOCHS * counts).all()
            elif name == "prior_power":
                _assert_follows(h, _expected_class_probs(counts, -1.0))
            else:  # progressive, T = 1: epoch 0 instance-balanced, epoch 1 class-balanced
                h1 = np.bincount(labels[results[(name, 1)].reshape(-1).numpy()], minlength=len(counts))
                _assert_follows(h1, np.full(len(counts), 1 / len(counts)))
    acc.wait_for_everyone()


@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_ddp_under_accelerate_partitions_the_global_sequence():
    from accelerate import debug_launcher

    labels = _labels(DDP_COUNTS, seed=1)
    references = {}
    for name, kw in DDP_CONFIGS:
        for epoch in range(DDP_EPOCHS):
            references[(name, epoch)] = create_sampler(name, labels=labels, seed=21, **kw).global_indices(epoch)
    # fork-based: an AssertionError in either process is re-raised here (ProcessRaisedException)
    debug_launcher(_ddp_worker, args=(labels, references), num_processes=2)
