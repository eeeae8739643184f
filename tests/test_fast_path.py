"""The fast path (data on the device, batched augmentation) has the standard path's semantics."""
import json

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader

from lt_registry import create_sampler
from lt_registry.data import CIFAR_MEAN, CIFAR_STD, CifarTestTransform, CifarTrainTransform, TensorImageDataset
from lt_registry.data.device_loader import DeviceTensorLoader, fits_on_device

from conftest import TINY_TRAIN as TINY, offline_env, run_train


def _coded_dataset(n, transform):
    """Images whose pixels encode their own row (R) and column (G), so crop offset and flip can be read back."""
    i = np.arange(32)
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = (i * 8)[:, None]
    img[..., 1] = (i * 8)[None, :]
    img[..., 2] = 255
    labels = np.arange(n) % 5
    return TensorImageDataset(np.repeat(img[None], n, 0), labels, transform, num_classes=5)


def _decode(x):
    """(oy, ox, flip) of each augmented image [B, 3, 32, 32] (normalised floats)."""
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    px = torch.round((x.float() * std + mean) * 255)
    row, c16, c17 = px[:, 0, 16, 16] / 8, px[:, 1, 16, 16] / 8, px[:, 1, 16, 17] / 8
    flip = c17 < c16
    oy = row - 12
    ox = torch.where(flip, c16 - 11, c16 - 12)  # crop then flip: output col c <- original 27 - c + ox
    return oy.long(), ox.long(), flip.long()


def _code(x):
    oy, ox, flip = _decode(x)
    assert oy.min() >= 0 and oy.max() <= 8 and ox.min() >= 0 and ox.max() <= 8
    return ((oy * 9 + ox) * 2 + flip).numpy()


def test_same_augmentation_distribution_as_the_standard_path():
    n = 4000
    torch.manual_seed(0)
    std_ds = _coded_dataset(n, CifarTrainTransform())
    std_codes = np.concatenate([_code(x) for x, _ in DataLoader(std_ds, batch_size=500)])  # per-sample transform
    fast = DeviceTensorLoader(_coded_dataset(n, CifarTrainTransform()), 500, torch.device("cpu"),
                              generator=torch.Generator().manual_seed(1), channels_last=True)
    batches = list(fast)
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in batches)
    fast_codes = np.concatenate([_code(x) for x, _ in batches])
    # 81 crop offsets x 2 flips, uniform in both paths, and the two paths agree with each other
    for codes in (std_codes, fast_codes):
        counts = np.bincount(codes, minlength=162)
        assert stats.chisquare(counts).pvalue > 0.001
    table = np.stack([np.bincount(std_codes, minlength=162), np.bincount(fast_codes, minlength=162)])
    assert stats.chi2_contingency(table).pvalue > 0.001
    assert abs((fast_codes % 2).mean() - 0.5) < 0.03  # flips


def test_fast_path_batches_are_the_standard_transform_for_the_same_draws():
    ds = _coded_dataset(64, CifarTrainTransform())
    g = torch.Generator().manual_seed(3)
    fast = DeviceTensorLoader(ds, 64, torch.device("cpu"), generator=g, channels_last=False)
    x_fast, _ = next(iter(fast))
    ref = CifarTrainTransform(generator=torch.Generator().manual_seed(3))(ds.images[torch.arange(64)])
    assert torch.equal(x_fast, ref)
    x_test, _ = next(iter(DeviceTensorLoader(_coded_dataset(8, CifarTestTransform()), 8, torch.device("cpu"))))
    assert torch.allclose(x_test, CifarTestTransform()(ds.images[:8]))


@pytest.mark.parametrize("sampler_name,opts", [("random", {}), ("class_balanced", {}), ("prior_power", {"tau": -1.0})])
def test_same_indices_and_class_frequencies_per_epoch(sampler_name, opts):
    labels = np.repeat(np.arange(5), [200, 80, 30, 12, 5])
    images = np.random.default_rng(0).integers(0, 255, (len(labels), 32, 32, 3), dtype=np.uint8)
    ds = TensorImageDataset(images, labels, CifarTrainTransform(), num_classes=5)
    for epoch in (0, 3):
        s1 = create_sampler(sampler_name, labels=labels, seed=5, **opts)
        s2 = create_sampler(sampler_name, labels=labels, seed=5, **opts)
        s1.set_epoch(epoch)
        std_labels = torch.cat([y for _, y in DataLoader(ds, batch_size=64, sampler=s1)])
        fast = DeviceTensorLoader(ds, 64, torch.device("cpu"), sampler=s2, generator=torch.Generator())
        fast.set_epoch(epoch)
        fast_labels = torch.cat([y for _, y in fast])
        assert torch.equal(std_labels, fast_labels)
        assert len(fast) == len(list(DataLoader(ds, batch_size=64, sampler=s1)))


def test_two_process_shards_are_disjoint_and_cover_the_epoch():
    labels = np.arange(1000) % 10
    ds = TensorImageDataset(np.zeros((1000, 32, 32, 3), np.uint8), labels, CifarTestTransform(), num_classes=10)
    s = create_sampler("random", labels=labels, seed=0)
    glob = s.global_indices(2)
    seen = []
    for rank in (0, 1):
        loader = DeviceTensorLoader(ds, 64, torch.device("cpu"), sampler=create_sampler("random", labels=labels, seed=0),
                                    num_processes=2, process_index=rank)
        loader.set_epoch(2)
        order = loader._order()
        assert torch.equal(order, glob)
        batches = list(loader._my_batches())
        assert len(batches) == len(loader) == 8  # 1000 / (64 * 2) rounded up, same count on both ranks
        seen.append(torch.stack(batches))
    # batch k of the global sequence goes to rank k % 2, as accelerate shards a prepared DataLoader
    merged = torch.stack([seen[k % 2][k // 2] for k in range(16)]).flatten()
    assert torch.equal(merged[:1000], glob) and torch.equal(merged[1000:], glob[:24])


def test_replicated_eval_loader_yields_every_sample_once_in_order():
    ds = TensorImageDataset(np.zeros((300, 32, 32, 3), np.uint8), np.arange(300) % 3, CifarTestTransform(), num_classes=3)
    loader = DeviceTensorLoader(ds, 128, torch.device("cpu"), num_processes=2, process_index=1, replicated=True)
    ys = torch.cat([y for _, y in loader])
    assert torch.equal(ys, torch.arange(300) % 3) and loader.replicated


def test_fits_on_device_and_clear_error():
    ds = TensorImageDataset(np.zeros((4, 32, 32, 3), np.uint8), np.arange(4), CifarTestTransform(), num_classes=4)
    assert fits_on_device(ds) and not fits_on_device([1, 2])
    with pytest.raises(ValueError, match="needs an in-memory TensorImageDataset"):
        DeviceTensorLoader([(0, 1)], 4, torch.device("cpu"))


def test_fast_path_run_resumes_to_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    common = [*TINY, "--fast-path", "on", "--mix", "unimix", "--loss", "bayias", "--decay-milestones", "1",
              "--warmup-epochs", "1", "--eval-interval", "0"]
    run_train(tmp_path, *common, name="straight")
    run_train(tmp_path, *common, "--epochs", "1", name="split")
    import subprocess
    import sys
    from conftest import ROOT, TRAIN
    # extending a finished run is a change of its options: said explicitly with --resume-override
    p = subprocess.run([sys.executable, str(TRAIN), "--resume", str(tmp_path / "split"), "--epochs", "2",
                        "--resume-override"],
                       capture_output=True, text=True, env=offline_env(OMP_NUM_THREADS="2"), cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "split" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    m = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert m["epochs"][0]["mixing"] is True
