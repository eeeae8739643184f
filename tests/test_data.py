"""Data (docs/method.md §4, docs/method.md §2 imbalanced test sets): LT selection, CIFAR readers, list files, digits, transforms."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA
from lt_registry.data import (
    CIFAR_MEAN, CIFAR_STD, CifarTestTransform, CifarTrainTransform, ListFileDataset, TensorImageDataset,
    build_dataset, cifar_lt_indices, imbalanced_test_indices, list_datasets, load_cifar, load_digits_arrays,
    read_list_file,
)
from lt_registry.prior import long_tail_counts

CIFAR10_NPZ = DATA / "cifar10-jpeg75"
PLACES_VAL = DATA / "lt_splits" / "Places_LT" / "Places_LT_val.txt"
CIFAR10_RHO100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def reference_selection(labels: np.ndarray, counts: list) -> np.ndarray:
    """The field's code verbatim in spirit: global np.random.seed(0), np.where, np.random.shuffle."""
    state = np.random.get_state()
    try:
        np.random.seed(0)
        out = []
        for c, n in enumerate(counts):
            idx = np.where(labels == c)[0]
            np.random.shuffle(idx)
            out.append(idx[:n])
        return np.concatenate(out)
    finally:
        np.random.set_state(state)


def official_like_labels(C: int, per_class: int, seed: int = 123) -> np.ndarray:
    return np.random.RandomState(seed).permutation(np.repeat(np.arange(C), per_class))


# ---- selection (docs/method.md §4) -------------------------------------------------------------------------------------
@pytest.mark.parametrize("C,per,rho,total", [
    (10, 5000, 100, 12406), (10, 5000, 50, 13996), (10, 5000, 10, 20431), (10, 5000, 200, 11203),
    (100, 500, 100, 10847), (100, 500, 50, 12608), (100, 500, 10, 19573), (100, 500, 200, 9502),
])
def test_lt_selection_counts_and_totals(C, per, rho, total):
    y = official_like_labels(C, per)
    idx, counts = cifar_lt_indices(y, C, rho)
    assert sum(counts) == total == len(idx)
    assert np.bincount(y[idx], minlength=C).tolist() == counts
    assert len(np.unique(idx)) == len(idx)
    if C == 10 and rho == 100:
        assert counts == CIFAR10_RHO100


def test_lt_selection_matches_global_rng_reference_and_leaves_global_state():
    y = official_like_labels(10, 300, seed=5)
    before = np.random.get_state()[1].copy()
    idx, counts = cifar_lt_indices(y, 10, 20)
    assert np.array_equal(np.random.get_state()[1], before)
    assert np.array_equal(idx, reference_selection(y, counts))
    # the order is class by class, as the reference builds its arrays
    assert np.all(np.diff(y[idx]) >= 0)
    idx2, _ = cifar_lt_indices(y, 10, 20, seed=1)
    assert not np.array_equal(idx, idx2)


def test_lt_selection_bad_inputs():
    y = official_like_labels(3, 10)
    with pytest.raises(ValueError, match="out of range"):
        cifar_lt_indices(y, 2, 10)
    with pytest.raises(ValueError, match="no images"):
        cifar_lt_indices(np.array([0, 0, 2, 2]), 3, 10)
    with pytest.raises(ValueError, match="lower n_max"):
        cifar_lt_indices(y, 3, 10, n_max=11)
    with pytest.raises(ValueError, match="integers"):
        cifar_lt_indices(y.astype(float), 3, 10)
    with pytest.raises(ValueError, match="imb_factor"):
        cifar_lt_indices(y, 3, 0)


@pytest.mark.slow
def test_cifar10_lt_from_shared_npz_selects_the_standard_images():
    if not (CIFAR10_NPZ / "train.npz").is_file():
        pytest.skip("the CIFAR-10 JPEG copy is not in data/cifar10-jpeg75 (README 'Data')")
    z = np.load(CIFAR10_NPZ / "train.npz")
    train = load_cifar("cifar10", CIFAR10_NPZ, "train")
    assert train.images.shape == (50000, 32, 32, 3) and np.array_equal(train.labels, z["labels"])
    assert train.class_names[:3] == ["airplane", "automobile", "bird"]
    idx, counts = cifar_lt_indices(train.labels, 10, 100)
    assert counts == CIFAR10_RHO100 and len(idx) == 12406
    # the shared train set is in the official order, so indices are official indices
    orig = z["orig_index"][idx]
    assert np.array_equal(orig, idx)
    assert np.array_equal(idx, reference_selection(train.labels, counts))
    # restated through class_rank: class c keeps the ranks a seeded shuffle of range(n_c_total) puts first
    rs = np.random.RandomState(0)
    for c, n in enumerate(counts):
        ranks = np.arange(int((train.labels == c).sum()))
        rs.shuffle(ranks)
        sel_c = idx[train.labels[idx] == c]
        assert np.array_equal(z["class_rank"][sel_c], ranks[:n])
    # pinned: the standard CIFAR-10-LT (rho 100) image set
    digest = hashlib.sha256(np.sort(orig).astype("<i8").tobytes()).hexdigest()
    assert digest == "f7669c469c9ddf9afcfabc0b127018ebfa21ac9ecddbe2642455be26c359cb8d"
    assert idx[:5].tolist() == [4030, 38518, 48266, 45556, 6312]
    ds = build_dataset("cifar10_lt", data_dir=CIFAR10_NPZ, imb_factor=100)
    assert ds.class_counts == CIFAR10_RHO100 and len(ds.train) == 12406 and len(ds.test) == 10000
    assert np.array_equal(ds.train.images.numpy(), z["images"][idx])
    assert ds.test.class_counts == [1000] * 10


# ---- CIFAR readers ----------------------------------------------------------------------------------------
def _images(n: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (n, 32, 32, 3)).astype(np.uint8)


def _write_batch(path: Path, images: np.ndarray, labels: list, label_key: bytes) -> None:
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # channel planes, as CIFAR stores them
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", label_key: labels, b"data": data, b"filenames": [b"a"] * len(labels)}, f)


def test_cifar10_python_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_parts = []
    for i in range(1, 6):
        imgs, labs = _images(4, i), [(i + k) % 10 for k in range(4)]
        _write_batch(folder / f"data_batch_{i}", imgs, labs, b"labels")
        train_parts.append((imgs, labs))
    test_imgs = _images(3, 9)
    _write_batch(folder / "test_batch", test_imgs, [0, 1, 2], b"labels")
    names = [f"c{k}".encode() for k in range(10)]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    for d in (tmp_path, folder):  # the parent or the folder itself
        tr = load_cifar("cifar10", d, "train")
        assert np.array_equal(tr.images, np.concatenate([p[0] for p in train_parts]))
        assert tr.labels.tolist() == sum((p[1] for p in train_parts), [])
        assert tr.class_names == [f"c{k}" for k in range(10)] and tr.source.startswith("python:")
    te = load_cifar("cifar-10", tmp_path, "test")
    assert np.array_equal(te.images, test_imgs) and te.labels.dtype == np.int64


def test_cifar100_python_folder_and_refuses_foreign_pickles(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    imgs = _images(5, 0)
    _write_batch(folder / "train", imgs, [0, 99, 5, 5, 1], b"fine_labels")
    _write_batch(folder / "test", imgs[:2], [3, 4], b"fine_labels")
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"n{k}".encode() for k in range(100)]}, f)
    tr = load_cifar("cifar100", tmp_path, "train")
    assert np.array_equal(tr.images, imgs) and tr.labels.tolist() == [0, 99, 5, 5, 1] and tr.class_names[99] == "n99"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "test", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(ValueError, match="refusing builtins.print"):
        load_cifar("cifar100", tmp_path, "test")


def test_npz_reader_and_malformed_npz(tmp_path):
    imgs = _images(6, 1)
    np.savez(tmp_path / "train.npz", images=imgs, labels=np.arange(6) % 10)
    a = load_cifar("cifar10", tmp_path, "train")
    assert np.array_equal(a.images, imgs) and a.labels.tolist() == list(range(6))
    np.savez(tmp_path / "test.npz", pics=imgs, labels=np.zeros(6, int))
    with pytest.raises(ValueError, match="lacks array"):
        load_cifar("cifar10", tmp_path, "test")
    np.savez(tmp_path / "test.npz", images=imgs[:, :16], labels=np.zeros(6, int))
    with pytest.raises(ValueError, match="32x32"):
        load_cifar("cifar10", tmp_path, "test")
    np.savez(tmp_path / "test.npz", images=imgs, labels=np.full(6, 10))
    with pytest.raises(ValueError, match="out of range"):
        load_cifar("cifar10", tmp_path, "test")
    np.savez(tmp_path / "test.npz", images=imgs, labels=np.zeros(6, int), class_names=np.array(list("abcdefghij")))
    with pytest.raises(ValueError, match="has 100"):
        load_cifar("cifar100", tmp_path, "test")


def test_image_folder_reader(tmp_path):
    from PIL import Image

    imgs = _images(12, 3)
    for k, img in enumerate(imgs):
        cls = ["airplane", "bird", "cat"][k % 3]
        (tmp_path / "train" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "train" / cls / f"{k // 3 * 5}.png")  # 0, 5, 10, 15: natural order
    for c in range(10):
        (tmp_path / "train" / f"zz{c}").mkdir()  # empty classes pad the label space to 10
    with pytest.raises(ValueError, match="13 classes"):  # 13 folders is not CIFAR-10
        load_cifar("cifar10", tmp_path, "train")
    import shutil
    for c in range(7, 10):
        shutil.rmtree(tmp_path / "train" / f"zz{c}")
    a = load_cifar("cifar10", tmp_path, "train")
    assert a.class_names == ["airplane", "bird", "cat"] + [f"zz{c}" for c in range(7)]
    order = [k for c in range(3) for k in range(c, 12, 3)]  # class by class, files 0, 5, 10, 15
    assert np.array_equal(a.images, imgs[order]) and a.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "train" / "cat" / "99.png")
    with pytest.raises(ValueError, match="99.png"):
        load_cifar("cifar10", tmp_path, "train")


def test_image_folder_with_wrong_class_count(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "test" / cls).mkdir(parents=True)
        Image.fromarray(_images(1, 0)[0]).save(tmp_path / "test" / cls / "0.png")
    with pytest.raises(ValueError, match="2 classes"):
        load_cifar("cifar10", tmp_path, "test")


def _hf_dataset(n: int, label_col: str, names: list):
    import datasets
    from PIL import Image

    imgs = _images(n, 7)
    feats = datasets.Features({"img": datasets.Image(), label_col: datasets.ClassLabel(names=names)})
    labels = [k % len(names) for k in range(n)]
    return datasets.Dataset.from_dict({"img": [Image.fromarray(i) for i in imgs], label_col: labels}, features=feats), imgs, labels


def test_hub_path_with_mocked_load_dataset(monkeypatch):
    import datasets

    names = [f"class{k}" for k in range(100)]
    ds, imgs, labels = _hf_dataset(5, "fine_label", names)
    calls = []

    def fake_load_dataset(repo, split=None, **kw):
        calls.append((repo, split))
        return ds

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    a = load_cifar("cifar100", None, "test")
    assert calls == [("uoft-cs/cifar100", "test")]
    assert np.array_equal(a.images, imgs) and a.labels.tolist() == labels and a.class_names == names
    with pytest.raises(ValueError, match="missing column"):
        load_cifar("cifar10", None, "train")  # cifar10 expects 'label'


def test_saved_datasets_folder(tmp_path):
    import datasets

    names = [f"c{k}" for k in range(10)]
    tr, imgs, labels = _hf_dataset(6, "label", names)
    datasets.DatasetDict({"train": tr, "test": tr.select([0, 1])}).save_to_disk(str(tmp_path / "dd"))
    a = load_cifar("cifar10", tmp_path / "dd", "train")
    assert np.array_equal(a.images, imgs) and a.labels.tolist() == labels and a.source.startswith("saved-dataset")
    assert len(load_cifar("cifar10", tmp_path / "dd", "test").labels) == 2


def test_missing_or_empty_data_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar("cifar10", tmp_path / "nope", "train")
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*train\.npz.*train/<class_name>"):
        load_cifar("cifar10", tmp_path, "train")
    with pytest.raises(ValueError, match="unknown CIFAR"):
        load_cifar("cifar7", tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        load_cifar("cifar10", tmp_path, "val")


# ---- list files -------------------------------------------------------------------------------------------
def _places_tree(tmp_path: Path, n_lines: int = 60) -> tuple:
    if not PLACES_VAL.is_file():
        pytest.skip("the Places-LT list files are not in data/lt_splits/Places_LT (README 'Data')")
    from PIL import Image

    lines = PLACES_VAL.read_text().splitlines()[:n_lines]
    root = tmp_path / "places"
    for k, line in enumerate(lines):
        p = root / line.split()[0]
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 24, 3), k, np.uint8)).save(p)
    return root, lines


def test_list_file_dataset_on_places_lines(tmp_path):
    root, lines = _places_tree(tmp_path)
    lst = tmp_path / "val.txt"
    lst.write_text("\n".join(lines) + "\n\n")
    ds = ListFileDataset(lst, root, num_classes=365)
    labels = [int(l.split()[1]) for l in lines]
    assert len(ds) == len(lines) and ds.labels.tolist() == labels
    assert ds.class_counts == np.bincount(labels, minlength=365).tolist() and len(ds.class_counts) == 365
    assert ds.class_names[0] == "airfield" and ds.class_names[364] == "364"
    img, y = ds[7]
    assert img.size == (24, 20) and img.mode == "RGB" and np.asarray(img)[0, 0, 0] == 7 and y == labels[7]
    (root / lines[3].split()[0]).unlink()
    with pytest.raises(FileNotFoundError, match="entry 3"):
        ds[3]


def test_places_lt_builder(tmp_path):
    root, lines = _places_tree(tmp_path, 45)
    lists = tmp_path / "lists" / "Places_LT"
    lists.mkdir(parents=True)
    (lists / "Places_LT_train.txt").write_text("\n".join(lines[:40]) + "\n")
    (lists / "Places_LT_test.txt").write_text("\n".join(lines[40:]) + "\n")
    ds = build_dataset("places_lt", data_dir=root, list_dir=tmp_path / "lists")
    assert ds.num_classes == 365 and sum(ds.class_counts) == 40 and len(ds.test) == 5
    assert ds.class_counts == np.bincount([int(l.split()[1]) for l in lines[:40]], minlength=365).tolist()
    x, _ = ds.train[0]
    assert tuple(x.shape) == (3, 224, 224)
    with pytest.raises(ValueError, match="imb_factor"):
        build_dataset("places_lt", data_dir=root, list_dir=tmp_path / "lists", imb_factor=10)
    with pytest.raises(FileNotFoundError, match="Places_LT_val.txt"):
        build_dataset("places_lt", data_dir=root, list_dir=tmp_path / "lists", split="val")
    with pytest.raises(ValueError, match="data_dir"):
        build_dataset("imagenet_lt")


@pytest.mark.parametrize("content,match", [
    ("a.jpg 0\nb.jpg\n", r"list\.txt:2: expected"),
    ("a.jpg 0\n\nb.jpg x\n", r"list\.txt:3: label 'x' is not an integer"),
    ("a.jpg -1\n", r"list\.txt:1: label -1 is out of range"),
    ("a.jpg 5\n", r"list\.txt:1: label 5 is out of range \[0, 5\)"),
    ("\n\n", "no entries"),
])
def test_list_file_malformed_lines(tmp_path, content, match):
    (tmp_path / "list.txt").write_text(content)
    with pytest.raises(ValueError, match=match):
        read_list_file(tmp_path / "list.txt", num_classes=5)


def test_list_file_paths_with_spaces(tmp_path):
    (tmp_path / "list.txt").write_text("dir one/a b.jpg 3\n")
    paths, labels = read_list_file(tmp_path / "list.txt")
    assert paths == ["dir one/a b.jpg"] and labels.tolist() == [3]
    with pytest.raises(FileNotFoundError):
        read_list_file(tmp_path / "missing.txt")


# ---- embedded digits --------------------------------------------------------------------------------------
def test_digits_lt_embedded():
    ds = build_dataset("digits_lt", imb_factor=10)
    assert ds.num_classes == 10 and ds.class_names == [str(d) for d in range(10)]
    assert ds.class_counts == long_tail_counts(124, 10, 10) and len(ds.train) == sum(ds.class_counts)
    assert ds.test.class_counts == [50] * 10
    x, y = ds.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0
    tr, te = load_digits_arrays("train"), load_digits_arrays("test")
    assert len(tr.labels) + len(te.labels) == 1797 and np.bincount(tr.labels).min() == 124
    img = tr.images[0]
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and tr.images.max() == 255
    assert np.array_equal(img[..., 0], img[..., 2])
    assert np.array_equal(img[::4, ::4].repeat(4, 0).repeat(4, 1), img)  # 4x4 pixel blocks
    from sklearn.datasets import load_digits
    raw = load_digits()
    pool = np.rint(raw.images * 255 / 16).astype(np.uint8)
    # train + test is exactly the original set (as a multiset of (image, label)), so the splits are disjoint
    ours = sorted(im[::4, ::4, 0].tobytes() + bytes([int(c)]) for im, c in
                  zip(np.concatenate([tr.images, te.images]), np.concatenate([tr.labels, te.labels])))
    assert ours == sorted(p.tobytes() + bytes([int(c)]) for p, c in zip(pool, raw.target))
    again = build_dataset("digits_lt", imb_factor=10)
    assert np.array_equal(again.meta["train_indices"], ds.meta["train_indices"])
    with pytest.raises(ValueError, match="no data_dir"):
        build_dataset("digits_lt", data_dir="/tmp")


# ---- imbalanced test sets (docs/method.md §2) ------------------------------------------------------------------------
@pytest.mark.parametrize("rho", [100, 10, 1, 0.1, 0.01])
def test_imbalanced_test_sets(rho):
    y = official_like_labels(10, 1000, seed=2)
    sel = imbalanced_test_indices(y, 10, rho, seed=0)
    counts = np.bincount(y[sel.indices], minlength=10)
    assert counts.tolist() == sel.counts == long_tail_counts(1000, 10, rho)
    assert len(np.unique(sel.indices)) == len(sel.indices)
    assert sel.prior.sum() == pytest.approx(1.0) and np.allclose(sel.prior, counts / counts.sum())
    if rho == 1:
        assert np.allclose(sel.prior, 0.1) and len(sel.indices) == 10000
    elif rho > 1:
        assert counts[0] == 1000 and counts[-1] == int(1000 / rho) and np.all(np.diff(counts) <= 0)
    else:
        assert counts[-1] == 1000 and counts[0] == int(1000 * rho) and np.all(np.diff(counts) >= 0)
    again = imbalanced_test_indices(y, 10, rho, seed=0)
    assert np.array_equal(again.indices, sel.indices)
    if rho != 1:
        assert not np.array_equal(imbalanced_test_indices(y, 10, rho, seed=1).indices, sel.indices)


def test_imbalanced_test_set_through_builder_and_errors():
    ds = build_dataset("digits_lt", imb_factor=10, test_imb_factor=0.1)
    assert ds.test.class_counts == long_tail_counts(50, 10, 0.1)
    assert ds.meta["test_prior"] == pytest.approx((np.array(ds.test.class_counts) / len(ds.test)).tolist())
    with pytest.raises(ValueError, match="empty"):
        imbalanced_test_indices(np.repeat(np.arange(3), 5), 3, 100)


# ---- transforms and the tensor dataset --------------------------------------------------------------------
def test_test_transform_normalises():
    img = _images(1, 4)[0]
    out = CifarTestTransform()(img)
    ref = (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - torch.tensor(CIFAR_MEAN)[:, None, None]) \
        / torch.tensor(CIFAR_STD)[:, None, None]
    assert out.shape == (3, 32, 32) and torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(CifarTestTransform()(_images(3, 4))[0], ref, atol=1e-6)


def test_train_transform_is_padded_crop_with_flip():
    imgs = _images(64, 5)
    tf = CifarTrainTransform(generator=torch.Generator().manual_seed(0))
    out = tf(imgs)
    assert out.shape == (64, 3, 32, 32)
    raw = out * torch.tensor(CIFAR_STD)[:, None, None] + torch.tensor(CIFAR_MEAN)[:, None, None]
    raw = (raw * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    flips, offsets = 0, set()
    for k in range(64):
        padded = np.pad(imgs[k], ((4, 4), (4, 4), (0, 0)))
        hits = [(oy, ox, f) for oy in range(9) for ox in range(9) for f in (0, 1)
                if np.array_equal(raw[k], (padded[oy:oy + 32, ox:ox + 32][:, ::-1] if f else padded[oy:oy + 32, ox:ox + 32]))]
        assert hits, f"sample {k} is not a padded crop (maybe flipped) of its input"
        flips += hits[0][2]
        offsets.add(hits[0][:2])
    assert 16 <= flips <= 48 and len(offsets) > 20
    single = CifarTrainTransform(padding=0, flip_p=0.0)(imgs[0])
    assert torch.allclose(single, CifarTestTransform()(imgs[0]))
    with pytest.raises(TypeError, match="uint8"):
        tf(imgs.astype(np.float32))


def test_tensor_dataset_and_subset():
    imgs, labels = _images(6, 0), np.array([0, 1, 1, 2, 2, 2])
    ds = TensorImageDataset(imgs, labels, class_names=["a", "b", "c"])
    assert len(ds) == 6 and ds.class_counts == [1, 2, 3]
    x, y = ds[4]
    assert x.dtype == torch.uint8 and np.array_equal(x.numpy(), imgs[4]) and y == 2
    sub = ds.subset([5, 0], transform=CifarTestTransform())
    assert sub.labels.tolist() == [2, 0] and sub.class_counts == [1, 0, 1] and sub[0][0].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="out of range"):
        TensorImageDataset(imgs, labels, class_names=["a", "b"])
    with pytest.raises(ValueError, match="one label per image"):
        TensorImageDataset(imgs, labels[:3])


# ---- the registry -----------------------------------------------------------------------------------------
def test_registry_names_and_unknown_name():
    assert list_datasets() == ["cifar100_lt", "cifar10_lt", "csv", "digits_lt", "folder", "hfds/<id or path>", "imagenet_lt",
                               "inat2018", "places_lt"]
    with pytest.raises(ValueError, match=r"Unknown dataset 'cifar10lt'.*Available datasets: cifar100_lt, cifar10_lt"):
        build_dataset("cifar10lt")


def test_cifar_builder_on_local_npz(tmp_path):
    y = official_like_labels(10, 20)
    imgs = np.random.RandomState(0).randint(0, 256, (len(y), 32, 32, 3)).astype(np.uint8)
    np.savez(tmp_path / "train.npz", images=imgs, labels=y)
    np.savez(tmp_path / "test.npz", images=imgs[:50], labels=y[:50])
    ds = build_dataset("cifar10_lt", data_dir=tmp_path, imb_factor=10)
    idx, counts = cifar_lt_indices(y, 10, 10)
    assert ds.class_counts == counts == long_tail_counts(20, 10, 10) and ds.imb_factor == 10
    assert np.array_equal(ds.train.images.numpy(), imgs[idx]) and np.array_equal(ds.meta["train_indices"], idx)
    assert len(ds.test) == 50 and ds.meta["source_train"].startswith("npz:")
    assert build_dataset("cifar10", data_dir=tmp_path).imb_factor == 100  # alias, default rho
