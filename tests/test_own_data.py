"""Own long-tailed data (docs/method.md §4.3): the folder and csv builders, the hold-out, imb_factor on own data,
bad images (header check, substitution in and across DataLoader workers), RGB reading of every PIL mode, the
CIFAR/digits validation split and the export tool."""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest
import torch

from lt_registry.data import ImageFileDataset, ListFileDataset, build_dataset, list_datasets, load_rgb
from lt_registry.data.export import export_image_folder, main as export_main
from lt_registry.data.holdout import holdout_counts, left_out_validation, stratified_holdout
from lt_registry.data.own import long_tail_subsample
from lt_registry.prior import long_tail_counts

# 6 classes from 150 down to 5; the names need natural order (class2 before class10) and case-insensitivity
NAMES = ["Apple", "banana", "class2", "class10", "Dog", "zebra"]
COUNTS = [150, 60, 30, 15, 8, 5]
SIZES = [(20, 30), (40, 40), (33, 17)]
MODES = ["RGB", "L", "RGBA", "P", "CMYK", "LA", "I;16", "1"]


def _save(path: Path, mode: str, size=(20, 30), value: int = 0) -> None:
    """An image of ``mode`` (PIL size is (w, h)); the pixel value encodes ``value`` where the mode allows."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = value % 256
    rgb[..., 1] = np.arange(w)[None, :] % 256
    base = Image.fromarray(rgb)
    if mode == "CMYK":
        base.convert("CMYK").save(path.with_suffix(".jpg") if path.suffix.lower() == ".png" else path)
        return
    if mode == "I;16":
        Image.fromarray((np.full((h, w), value % 256, np.uint16) * 257)).save(path)
        return
    im = base.convert(mode) if mode not in ("P",) else base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    if mode == "P":
        im.info["transparency"] = 0
    im.save(path)


def _ext(mode: str) -> str:
    return ".jpg" if mode == "CMYK" else ".png"


def make_folder(root: Path, counts: Sequence[int], names: Sequence[str] = NAMES, split: str = "train",
                start: int = 0) -> Dict[str, List[str]]:
    """``root/split/<name>/img<k>.<ext>`` with mixed sizes and modes; returns the relative paths per class."""
    out: Dict[str, List[str]] = {}
    k = start
    for name, n in zip(names, counts):
        out[name] = []
        for _ in range(n):
            mode = MODES[k % len(MODES)]
            rel = f"{split}/{name}/img{k}{_ext(mode)}"
            _save(root / rel, mode, SIZES[k % len(SIZES)], value=k)
            out[name].append(rel)
            k += 1
    return out


@pytest.fixture(scope="module")
def lt_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own") / "data"
    make_folder(root, COUNTS)
    (root / "train" / "Dog" / "notes.txt").write_text("not an image, skipped")
    (root / "train" / "Dog" / ".DS_Store").write_bytes(b"\0\1")
    return root


def _natural(names):
    return sorted(names, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s.lower())])


# ---- reading -----------------------------------------------------------------------------------------------
def test_loader_turns_every_mode_into_rgb(tmp_path):
    from PIL import Image

    cases = {}
    for mode in ("L", "LA", "RGBA", "P", "CMYK", "I;16", "1", "I", "F"):
        p = tmp_path / f"x_{mode.replace(';', '')}{'.jpg' if mode == 'CMYK' else '.tif' if mode in ('I', 'F') else '.png'}"
        if mode == "LA":
            Image.fromarray(np.dstack([np.full((3, 4), 80, np.uint8), np.array([[0] * 4, [255] * 4, [255] * 4],
                                                                                np.uint8)]), "LA").save(p)
        elif mode == "RGBA":
            a = np.zeros((3, 4, 4), np.uint8)
            a[..., 0] = 200
            a[1:, :, 3] = 255
            Image.fromarray(a, "RGBA").save(p)
        elif mode == "P":
            im = Image.new("P", (4, 3), 1)
            im.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
            im.putpixel((0, 0), 0)
            im.save(p, transparency=0)
        elif mode == "CMYK":
            Image.new("CMYK", (4, 3), (0, 0, 0, 0)).save(p)
        elif mode == "I;16":
            Image.fromarray(np.full((3, 4), 65535, np.uint16)).save(p)
        elif mode == "1":
            Image.new("1", (4, 3), 1).save(p)
        elif mode == "I":
            Image.fromarray(np.full((3, 4), 32896, np.int32), "I").save(p)  # 16-bit range -> 128
        elif mode == "F":
            Image.fromarray(np.full((3, 4), 0.5, np.float32), "F").save(p)
        else:
            Image.new("L", (4, 3), 100).save(p)
        assert Image.open(p).mode == mode, mode
        cases[mode] = np.asarray(load_rgb(p))
    for mode, a in cases.items():
        assert a.shape == (3, 4, 3) and a.dtype == np.uint8, mode
    assert (cases["L"] == 100).all()
    assert (cases["LA"][0] == 255).all() and (cases["LA"][1:] == 80).all()  # transparent row -> white background
    assert (cases["RGBA"][0] == 255).all() and (cases["RGBA"][1:] == [200, 0, 0]).all()
    assert (cases["P"][0, 0] == 255).all() and (cases["P"][0, 1] == [10, 20, 30]).all()  # palette transparency
    assert (cases["CMYK"] >= 250).all()  # no ink -> white
    assert (cases["I;16"] == 255).all() and (cases["1"] == 255).all()
    assert (cases["I"] == 128).all() and (cases["F"] == 128).all()


# ---- the folder builder: natural counts and the hold-out --------------------------------------------------
def test_folder_natural_counts_minus_holdout(lt_folder):
    ds = build_dataset("folder", data_dir=lt_folder)
    assert ds.class_names == _natural(NAMES) == ["Apple", "banana", "class2", "class10", "Dog", "zebra"]
    held = holdout_counts(COUNTS, 0.1)
    assert held.tolist() == [15, 6, 3, 2, 1, 1]
    assert ds.class_counts == (np.array(COUNTS) - held).tolist() == ds.train.class_counts
    assert ds.meta["counts_before_holdout"] == COUNTS and ds.meta["val_counts"] == held.tolist()
    assert ds.imb_factor is None and ds.test is None and ds.meta["splits"] == {"train": "train", "val": None,
                                                                                "test": None}
    assert ds.meta["skipped_files"] == 2 and ds.meta["image_check"] == "header"
    v = ds.meta["val"]
    assert v["source"] == "holdout" and v["fraction"] == 0.1 and v["seed"] == 0 and len(v["paths"]) == held.sum()
    assert all(p.startswith("train/") and (lt_folder / p).is_file() for p in v["paths"])
    # the default transforms are timm's; without a transform each sample is a PIL RGB image of its own size
    x, y = ds.train[0]
    assert isinstance(x, torch.Tensor) and tuple(x.shape) == (3, 224, 224) and y == 0
    ds.set_transforms(train=lambda im: im, eval=lambda im: im)
    sizes = set()
    for d in (ds.train, ds.val):
        for i in range(0, len(d), 7):
            im, y = d[i]
            assert im.mode == "RGB" and y == d.labels[i]
            sizes.add(im.size)
    assert sizes == {(30, 20), (40, 40), (17, 33)}
    # each path sits in its class folder
    assert all(Path(p).parent.name == ds.class_names[y] for p, y in ds.train.samples)


def test_holdout_is_reproducible_stratified_and_disjoint(lt_folder):
    a = build_dataset("folder", data_dir=lt_folder, val_fraction=0.2, seed=3, check_images="none")
    b = build_dataset("folder", data_dir=lt_folder, val_fraction=0.2, seed=3, check_images="none")
    c = build_dataset("folder", data_dir=lt_folder, val_fraction=0.2, seed=4, check_images="none")
    assert a.meta["val"]["paths"] == b.meta["val"]["paths"] != c.meta["val"]["paths"]
    assert a.val.class_counts == c.val.class_counts == holdout_counts(COUNTS, 0.2).tolist()
    tr, va = set(a.train.paths), set(a.val.paths)
    assert not tr & va and len(tr | va) == sum(COUNTS)
    assert {os.path.relpath(p, lt_folder).replace(os.sep, "/") for p in va} == set(a.meta["val"]["paths"])
    # stratified_holdout itself: a class with one image keeps it for training
    y = np.repeat(np.arange(3), [10, 2, 1])
    tr_i, va_i = stratified_holdout(y, 0.5, seed=1)
    assert np.bincount(y[va_i], minlength=3).tolist() == [5, 1, 0] and len(tr_i) + len(va_i) == 13
    assert build_dataset("folder", data_dir=lt_folder, val_fraction=0, check_images="none").val is None


@pytest.mark.parametrize("val_name", ["val", "validation"])
def test_explicit_val_and_optional_test_split(tmp_path, val_name):
    names = ["a", "b", "c"]
    make_folder(tmp_path, [12, 6, 3], names)
    make_folder(tmp_path, [2, 2, 1], names, split=val_name, start=100)
    ds = build_dataset("folder", data_dir=tmp_path, check_images="none")
    assert ds.class_counts == [12, 6, 3] and ds.val.class_counts == [2, 2, 1] and ds.test is None
    assert ds.meta["val"] == {"source": "split", "split": val_name} and "counts_before_imb_factor" not in ds.meta
    # an explicit missing validation folder is an error; None always holds out
    with pytest.raises(FileNotFoundError, match="validation split folder 'dev' not found.*val_split=None"):
        build_dataset("folder", data_dir=tmp_path, val_split="dev")
    held = build_dataset("folder", data_dir=tmp_path, val_split=None, check_images="none")
    assert held.meta["val"]["source"] == "holdout" and sum(held.class_counts) == 21 - 3
    # test split: found when it exists, optional otherwise, and an explicit missing name is an error
    with pytest.raises(FileNotFoundError, match="test split folder 'test' not found"):
        build_dataset("folder", data_dir=tmp_path, test_split="test")
    make_folder(tmp_path, [3, 3, 3], names, split="test", start=200)
    ds = build_dataset("folder", data_dir=tmp_path, check_images="none")
    assert ds.test.class_counts == [3, 3, 3] and ds.meta["test_counts"] == [3, 3, 3]
    assert ds.meta["splits"] == {"train": "train", "val": val_name, "test": "test"}
    assert set(ds.splits()) == {"train", "val", "test"}
    # a test folder with only some of the classes is fine
    make_folder(tmp_path, [2], ["b"], split="holdout_test", start=300)
    ds = build_dataset("folder", data_dir=tmp_path, test_split="holdout_test", check_images="none")
    assert ds.test.class_counts == [0, 2, 0]


# ---- imb_factor on own data ---------------------------------------------------------------------------------
def test_imb_factor_subsamples_by_rank_and_keeps_the_holdout(lt_folder):
    nat = build_dataset("folder", data_dir=lt_folder, check_images="none")
    ds = build_dataset("folder", data_dir=lt_folder, imb_factor=100, check_images="none")
    assert ds.meta["counts_before_imb_factor"] == nat.class_counts == [135, 54, 27, 13, 7, 4]
    assert ds.class_counts == long_tail_counts(135, 6, 100) == [135, 53, 21, 8, 3, 1] and ds.imb_factor == 100
    assert ds.meta["val"] == nat.meta["val"]  # the hold-out comes first: the same validation set for every rho
    assert ds.meta["imb_factor_rule"] == {"n_max": 135, "class_order": [0, 1, 2, 3, 4, 5], "seed": 0}
    assert set(ds.train.paths) <= set(nat.train.paths)
    # the natural tail (27x) is steeper than rho 30 allows at n_max 135: a clear error with the rho that fits
    with pytest.raises(ValueError, match=r"^imb_factor=30 asks class 'banana' \(rank 2 of 6 by size\) for 68 "
                                         r"training images but it has 54 .*imb_factor > 89\.\d+ fits"):
        build_dataset("folder", data_dir=lt_folder, imb_factor=30, check_images="none")
    small = build_dataset("folder", data_dir=lt_folder, imb_factor=30, n_max=40, check_images="none")
    assert small.class_counts == long_tail_counts(40, 6, 30)


def test_long_tail_subsample_rule():
    y = np.repeat([0, 1, 2, 3], [20, 50, 9, 30])  # sizes rank: class 1, 3, 0, 2
    sel, info = long_tail_subsample(y, 4, 10, n_max=30, seed=0)
    assert info["class_order"] == [1, 3, 0, 2] and info["n_max"] == 30
    prof = long_tail_counts(30, 4, 10)
    assert info["counts"] == [prof[2], prof[0], prof[3], prof[1]] and len(sel) == sum(prof)
    assert np.all(np.diff(sel) > 0)
    again, _ = long_tail_subsample(y, 4, 10, n_max=30, seed=0)
    assert np.array_equal(sel, again) and not np.array_equal(sel, long_tail_subsample(y, 4, 10, 30, seed=1)[0])
    # needs rho > max over ranks r of (n_max / (n_r + 1))^((K - 1) / r) = (50 / 10)^1 for class 2 (9 images)
    with pytest.raises(ValueError, match=r"^imb_factor=1\.5 asks class '3' \(rank 2 of 4 by size\) for 43 training "
                                         r"images but it has 30 \(3 class\(es\) fall short, n_max=50\); at n_max=50 "
                                         r"imb_factor > 5 fits"):
        long_tail_subsample(y, 4, 1.5, n_max=50)
    assert long_tail_subsample(y, 4, 5.01, n_max=50)[1]["counts"][2] == 9
    with pytest.raises(ValueError, match="lower n_max|smaller n_max"):
        long_tail_subsample(y, 4, 100, n_max=51)


def test_imb_factor_errors_and_empty_classes(tmp_path):
    names = ["a", "b", "c"]
    make_folder(tmp_path, [20, 12, 3], names)
    with pytest.raises(ValueError, match=r"asks class 'b' \(rank 2 of 3 by size\).*but it has 12"):
        build_dataset("folder", data_dir=tmp_path, imb_factor=2, val_fraction=0, check_images="none")
    # rho 30 at n_max 20: the last class would get int(20 / 30) = 0 images
    with pytest.raises(ValueError, match=r"1 class\(es\) have no training images after the imb_factor=30 subsample: "
                                         r"'c'.*prior_smoothing > 0 \(--prior-smoothing"):
        build_dataset("folder", data_dir=tmp_path, imb_factor=30, val_fraction=0, check_images="none")
    ds = build_dataset("folder", data_dir=tmp_path, imb_factor=30, val_fraction=0, prior_smoothing=1,
                       check_images="none")
    assert ds.class_counts == [20, 3, 0] and ds.meta["prior_smoothing"] == 1.0
    for bad, match in [(dict(imb_factor=0.5), "imb_factor must be a number >= 1"),
                       (dict(val_fraction=1.0), r"val_fraction must be a number in \[0, 1\)"),
                       (dict(prior_smoothing=-1), "prior_smoothing must be a number >= 0"),
                       (dict(check_images="quick"), "check_images must be one of"),
                       (dict(n_max=5), "n_max only applies with imb_factor")]:
        with pytest.raises(ValueError, match=match):
            build_dataset("folder", data_dir=tmp_path, **bad)


# ---- layout errors -------------------------------------------------------------------------------------------
def test_folder_layout_errors(tmp_path):
    with pytest.raises(ValueError, match="folder needs data_dir"):
        build_dataset("folder")
    with pytest.raises(FileNotFoundError, match="does not exist or is not a folder"):
        build_dataset("folder", data_dir=tmp_path / "nope")
    # ROOT/<class>/<image> without a split level: the error lists what it found and how to point at it
    make_folder(tmp_path / "flat", [2, 2], ["cat", "dog"], split=".")
    with pytest.raises(FileNotFoundError, match=r"no training split folder 'train' .*\['cat', 'dog'\].*looks like "
                                                r"ROOT/<class>/<image>.*train_split='flat'"):
        build_dataset("folder", data_dir=tmp_path / "flat")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="training split folder .* has no class folders"):
        build_dataset("folder", data_dir=tmp_path / "empty")
    root = tmp_path / "r"
    make_folder(root, [3, 2], ["cat", "dog"])
    (root / "train" / "eel").mkdir()
    (root / "train" / "eel" / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=r"class folder\(s\) \['eel'\] of the training split folder .* hold no "
                                         r"images.*prior_smoothing > 0"):
        build_dataset("folder", data_dir=root)
    ds = build_dataset("folder", data_dir=root, prior_smoothing=0.5, check_images="none")
    assert ds.class_names == ["cat", "dog", "eel"] and ds.class_counts == [2, 1, 0]
    (root / "train" / "eel" / "readme.md").unlink()
    (root / "train" / "eel").rmdir()
    make_folder(root, [1, 1], ["cat", "fox"], split="val", start=50)
    with pytest.raises(ValueError, match=r"class folder\(s\) \['fox'\] appear in the validation split folder .* "
                                         r"but not in the training split"):
        build_dataset("folder", data_dir=root)
    make_folder(root, [1], ["gnu"], split="test", start=60)
    with pytest.raises(ValueError, match=r"\['gnu'\] appear in the test split folder"):
        build_dataset("folder", data_dir=root, val_split=None)
    with pytest.raises(ValueError, match="must be different folders"):
        build_dataset("folder", data_dir=root, val_split="train")


def test_header_check_lists_non_images(tmp_path):
    make_folder(tmp_path, [8, 4], ["cat", "dog"])
    (tmp_path / "train" / "cat" / "notes.jpg").write_text("this is text, not a JPEG")
    (tmp_path / "train" / "dog" / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError) as e:
        build_dataset("folder", data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("2 of 14 image files of folder")
    assert "notes.jpg (not an image file PIL can read)" in msg and "empty.png (empty file (0 bytes))" in msg
    assert "check_images='none'" in msg
    ds = build_dataset("folder", data_dir=tmp_path, check_images="none", val_fraction=0)
    assert ds.class_counts == [9, 5]
    # more than 5 offenders: 5 listed and the total
    for k in range(6):
        (tmp_path / "train" / "dog" / f"bad{k}.png").write_bytes(b"GIF89a-not-really")
    with pytest.raises(ValueError, match=r"^8 of 20 .*; and 3 more\. Remove or replace"):
        build_dataset("folder", data_dir=tmp_path)


# ---- bad images at training time -------------------------------------------------------------------------
def _truncated_folder(root: Path) -> Path:
    from PIL import Image

    make_folder(root, [6, 5], ["cat", "dog"])
    bad = root / "train" / "dog" / "img_trunc.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(bad, quality=95)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    return bad


class _ToTensor:
    def __call__(self, im):
        return torch.from_numpy(np.asarray(im.resize((8, 8)), dtype=np.uint8).copy())


def test_truncated_jpeg_is_substituted_and_listed(tmp_path):
    bad = _truncated_folder(tmp_path)
    ds = build_dataset("folder", data_dir=tmp_path, val_fraction=0, train_transform=_ToTensor())  # header check passes
    i = ds.train.paths.index(str(bad))
    dog = [k for k, y in enumerate(ds.train.labels.tolist()) if y == 1]
    nxt = dog[(dog.index(i) + 1) % len(dog)]
    assert ds.train.failed_paths() == []
    x, y = ds.train[i]
    assert y == 1 and torch.equal(x, ds.train[nxt][0])
    assert ds.train.failed_paths() == [str(bad)]
    x2, _ = ds.train[i]  # again: no second decode attempt, same substitute
    assert torch.equal(x2, x) and ds.train.failed_paths() == [str(bad)]
    # a full check finds it before training; on_decode_error='raise' gives the decoder's error
    assert [p for p, _ in ds.train.check_images("full", raise_error=False)] == [str(bad)]
    strict = ImageFileDataset([str(bad)], [0], on_decode_error="raise")
    with pytest.raises(OSError):
        strict[0]
    # a class whose every image fails: one clear error
    lone = ImageFileDataset([str(bad)], [0], ["dog"])
    with pytest.raises(ValueError, match=r"all 1 images of class 0 \('dog'\) failed to decode"):
        lone[0]


def test_substitution_marks_reach_the_main_process_from_dataloader_workers(tmp_path):
    bad = _truncated_folder(tmp_path)
    ds = build_dataset("folder", data_dir=tmp_path, val_fraction=0, train_transform=_ToTensor())
    loader = torch.utils.data.DataLoader(ds.train, batch_size=4, num_workers=2, shuffle=False)
    xs, ys = zip(*loader)
    assert torch.cat(ys).tolist() == ds.train.labels.tolist() and sum(len(x) for x in xs) == len(ds.train)
    assert ds.train.failed_paths() == [str(bad)]


def test_list_file_dataset_is_an_image_file_dataset(tmp_path):
    bad = _truncated_folder(tmp_path)
    (tmp_path / "list.txt").write_text(f"train/dog/img6.png 1\n{os.path.relpath(bad, tmp_path)} 1\n")
    ds = ListFileDataset(tmp_path / "list.txt", tmp_path)
    assert isinstance(ds, ImageFileDataset) and ds.rel_paths == ["train/dog/img6.png", "train/dog/img_trunc.jpg"]
    assert ds.samples[0] == (str(tmp_path / "train/dog/img6.png"), 1)
    assert np.array_equal(np.asarray(ds[1][0]), np.asarray(ds[0][0])) and ds.failed_paths() == [str(bad)]


# ---- the csv builder -----------------------------------------------------------------------------------------
def _write_csv(path: Path, rows, header=("path", "label")) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_with_names_and_with_integers_matches_the_folder(lt_folder, tmp_path):
    folder = build_dataset("folder", data_dir=lt_folder, val_fraction=0, check_images="none")
    rows = [(os.path.relpath(p, lt_folder), folder.class_names[y]) for p, y in folder.train.samples][::-1]
    named = _write_csv(tmp_path / "named.csv", rows, header=("image", "label"))
    ds = build_dataset("csv", data_dir=lt_folder, train_list=named, val_fraction=0)
    assert ds.class_names == folder.class_names and ds.class_counts == folder.class_counts == COUNTS
    assert ds.meta["label_kind"] == "name" and ds.meta["lists"]["val"] is None
    # integer labels: class names are the integers, or come from `classes`
    ints = _write_csv(tmp_path / "ints.csv", [(p, folder.class_names.index(n)) for p, n in rows], header=None)
    di = build_dataset("csv", data_dir=lt_folder, train_list=ints, val_fraction=0, check_images="none")
    assert di.class_counts == COUNTS and di.class_names == [str(c) for c in range(6)]
    names_file = tmp_path / "classes.txt"
    names_file.write_text("\n".join(folder.class_names) + "\n")
    dn = build_dataset("csv", data_dir=lt_folder, train_list=ints, classes=names_file, check_images="none")
    assert dn.class_names == folder.class_names and dn.val.class_counts == holdout_counts(COUNTS, 0.1).tolist()
    assert dn.meta["val"]["source"] == "holdout" and dn.meta["val"]["paths"][0] in {r[0] for r in rows}
    # an explicit validation list and a test list; absolute paths; list paths relative to data_dir
    val_rows = [rows.pop(0), rows.pop(-1)]
    _write_csv(lt_folder / "tr.csv", [(str(lt_folder / p), n) for p, n in rows], header=("filepath", "class"))
    _write_csv(lt_folder / "va.csv", val_rows)
    dv = build_dataset("csv", data_dir=lt_folder, train_list="tr.csv", val_list="va.csv", check_images="none")
    assert sum(dv.class_counts) == sum(COUNTS) - 2 and len(dv.val) == 2 and dv.test is None
    assert dv.meta["val"] == {"source": "split", "split": "val", "list": str(lt_folder / "va.csv")}


def test_csv_errors(tmp_path):
    p = lambda k: f"train/cat/img{k}.png" if k < 3 else f"train/dog/img{k}.png"  # noqa: E731
    for k in range(5):
        _save(tmp_path / p(k), "RGB", value=k)
    lst = tmp_path / "l.csv"

    def err(text, match, exc=ValueError, **kw):
        lst.write_text(text)
        with pytest.raises(exc, match=match) as e:
            build_dataset("csv", data_dir=tmp_path, train_list=lst, check_images="none", **kw)
        assert "\n" not in str(e.value)

    err(f"{p(0)},0\n{p(1)},cat\n", r"l\.csv:2: label 'cat' is a class name but line 1's label '0' is an integer")
    err(f"path,label\n{p(0)},1.5\n", r"l\.csv:2: label '1\.5' is a number but not an integer")
    err(f"{p(0)},\n", r"l\.csv:1: empty label")
    err(f"{p(0)},-1\n", r"l\.csv:1: label -1 is negative")
    err(f"{p(0)}\n", r"l\.csv:1: expected 2 comma-separated fields")
    err(f"path,label\n{p(0)},cat\ntrain/cat/nope.png,cat\n",
        r"l\.csv:3: image 'train/cat/nope\.png' not found \(resolved to '.*/train/cat/nope\.png'\); 1 of 2 rows",
        FileNotFoundError)
    err(f"name,cls\n{p(0)},0\n", r"l\.csv:2: label '0' is an integer but line 1's label 'cls' is a class name "
                                 r"\(is line 1 a header\?")
    err("\n# only a comment\n", "has no rows")
    err(f"{p(0)},cat\n", "class 'cat' is not in classes", classes=["dog"])
    err(f"{p(0)},0\n{p(3)},3\n", r"2 class\(es\) have no training images: '1', '2'.*prior_smoothing", val_fraction=0)
    # the other lists
    (tmp_path / "v.csv").write_text(f"{p(3)},fox\n")
    err(f"{p(0)},cat\n{p(4)},dog\n", r"v\.csv:1: class 'fox' appears in this list but not in the training list",
        val_list=tmp_path / "v.csv")
    (tmp_path / "v.csv").write_text(f"{p(3)},1\n")
    err(f"{p(0)},cat\n{p(4)},dog\n", r"v\.csv:1: labels are integers .* but the training list .* has class names",
        val_list=tmp_path / "v.csv")
    (tmp_path / "t.csv").write_text(f"{p(1)},4\n")
    err(f"{p(0)},0\n{p(4)},1\n", r"t\.csv:1: class 4 is not in the training list, whose labels go up to 1",
        test_list=tmp_path / "t.csv")
    (tmp_path / "t.csv").write_text(f"{p(4)},dog\n")
    err(f"{p(0)},cat\n{p(4)},dog\n", r"1 image\(s\) of the test list are in the training list too",
        test_list=tmp_path / "t.csv")
    with pytest.raises(ValueError, match="csv needs train_list"):
        build_dataset("csv", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="train_list 'missing.csv' not found"):
        build_dataset("csv", data_dir=tmp_path, train_list="missing.csv")
    # a non-image file named in a list: the header check names it
    (tmp_path / "train" / "cat" / "x.png").write_text("text")
    lst.write_text(f"{p(0)},cat\ntrain/cat/x.png,cat\n")
    with pytest.raises(ValueError, match=r"^1 of 2 image files of csv .*x\.png \(not an image file PIL can read\)"):
        build_dataset("csv", data_dir=tmp_path, train_list=lst, val_fraction=0)


def test_registry_has_the_own_data_builders():
    from lt_registry.data import DATASETS

    names = list_datasets()
    assert {"folder", "csv"} <= set(names) and "imagefolder" not in names  # an alias
    assert DATASETS.canonical("imagefolder") == "folder" and DATASETS.label("csv") == "CSV lists (own data)"


def test_image_file_dataset_basics(tmp_path):
    for k in range(4):
        _save(tmp_path / f"{k}.png", "RGB", value=10 * k)
    ds = ImageFileDataset([f"{k}.png" for k in range(4)], [0, 1, 1, 0], ["a", "b"], root=tmp_path)
    assert ds.paths[0] == str(tmp_path / "0.png") and ds.class_counts == [2, 2] and ds.targets == [0, 1, 1, 0]
    sub = ds.subset([3, 1])
    assert sub.labels.tolist() == [0, 1] and sub.class_names == ["a", "b"] and np.asarray(sub[0][0])[0, 0, 0] == 30
    assert ds[-1][1] == 0
    with pytest.raises(ValueError, match="one label per path"):
        ImageFileDataset(["0.png"], [0, 1])
    with pytest.raises(ValueError, match="out of range"):
        ImageFileDataset(["0.png"], [2], ["a", "b"])
    with pytest.raises(ValueError, match="check_images must be one of"):
        ds.check_images("deep")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFileDataset([tmp_path / "gone.png"], [0])[0]


# ---- the CIFAR / digits validation split -------------------------------------------------------------------
def test_digits_val_split_is_balanced_left_out_with_recorded_head_overlap():
    ds = build_dataset("digits_lt")
    plain = build_dataset("digits_lt", val_per_class=0)
    assert plain.val is None and plain.meta["val"] == {"source": "none"}
    assert ds.class_counts == plain.class_counts == long_tail_counts(124, 10, 10)
    assert np.array_equal(ds.meta["train_indices"], plain.meta["train_indices"])
    assert ds.val.class_counts == [10] * 10 and ds.meta["val_counts"] == [10] * 10
    from lt_registry.data import load_digits_arrays

    pool = load_digits_arrays("train")
    tr, va = ds.meta["train_indices"], ds.meta["val_indices"]
    both = np.intersect1d(tr, va)
    left_over = {c: int((pool.labels == c).sum()) - ds.class_counts[c] for c in range(10)}
    expect = {c: 10 - left_over[c] for c in range(10) if left_over[c] < 10}
    assert expect and ds.meta["val"] == {"source": "left-out", "per_class": 10, "overlap_with_train": expect}
    assert sorted(pool.labels[both].tolist()) == sorted(c for c, n in expect.items() for _ in range(n))
    assert np.array_equal(ds.val.images.numpy(), pool.images[va])
    x, _ = ds.val[0]
    assert x.dtype == torch.float32  # the test transform
    assert build_dataset("digits_lt", val_per_class=3).val.class_counts == [3] * 10
    with pytest.raises(ValueError, match="val_per_class must be a positive integer"):
        build_dataset("digits_lt", val_per_class=-1)


def test_cifar_val_split_from_left_out_images(tmp_path):
    y = np.random.RandomState(123).permutation(np.repeat(np.arange(10), 20))
    imgs = np.random.RandomState(0).randint(0, 256, (len(y), 32, 32, 3)).astype(np.uint8)
    np.savez(tmp_path / "train.npz", images=imgs, labels=y)
    np.savez(tmp_path / "test.npz", images=imgs[:50], labels=y[:50])
    ds = build_dataset("cifar10_lt", data_dir=tmp_path, imb_factor=10, val_per_class=5)
    assert ds.class_counts == long_tail_counts(20, 10, 10) and ds.val.class_counts == [5] * 10
    assert ds.meta["val"]["overlap_with_train"] == {0: 5}  # the head class keeps all 20 images
    over = np.intersect1d(ds.meta["train_indices"], ds.meta["val_indices"])
    assert len(over) == 5 and set(y[over].tolist()) == {0}
    default = build_dataset("cifar10_lt", data_dir=tmp_path, imb_factor=10)
    assert default.meta["val"]["per_class"] == 100 and default.val.class_counts == [20] * 10  # capped at the class
    val, over = left_out_validation(y, ds.meta["train_indices"], 5, 10, 0, overlap=False)
    assert np.bincount(y[val], minlength=10)[0] == 0 and not np.intersect1d(val, ds.meta["train_indices"]).size


# ---- the export tool -------------------------------------------------------------------------------------
def test_export_digits_builds_with_folder_and_csv(tmp_path, capsys):
    out = tmp_path / "digits"
    assert export_main(["digits", str(out), "--imb-factor", "10", "--val-per-class", "5"]) == 0
    assert "wrote train 503" in capsys.readouterr().out
    lt = build_dataset("digits_lt", imb_factor=10, val_per_class=0)
    names = sorted(os.listdir(out / "train"))
    assert names[0] == "0_zero" and names[-1] == "9_nine" and len(names) == 10
    ds = build_dataset("folder", data_dir=out)
    assert ds.class_counts == lt.class_counts == long_tail_counts(124, 10, 10)
    assert ds.meta["val"] == {"source": "split", "split": "val"} and ds.test.class_counts == [50] * 10
    assert ds.val.class_counts[1:] == [5] * 9 and ds.val.class_counts[0] < 5  # left-out only: no training image
    assert not set(ds.val.paths) & set(ds.train.paths)
    ds.train.transform = None
    first = [i for i, yy in enumerate(ds.train.labels.tolist()) if yy == 3][0]
    im, yy = ds.train[first]
    idx = int(Path(ds.train.paths[first]).stem)
    from lt_registry.data import load_digits_arrays

    assert im.mode == "RGB" and np.array_equal(np.asarray(im), load_digits_arrays("train").images[idx])
    dc = build_dataset("csv", data_dir=out, train_list=out / "train.csv", val_list=out / "val.csv",
                       test_list=out / "test.csv")
    assert dc.class_counts == ds.class_counts and dc.class_names == ds.class_names
    # refuses to overwrite by accident; --overwrite replaces
    assert export_main(["digits", str(out)]) == 2 and "already holds" in capsys.readouterr().err
    info = export_image_folder("digits", out, overwrite=True, fmt="jpg", write_csv=False)
    assert not (out / "val").exists() and not (out / "train.csv").exists()
    assert info["counts"]["train"] == lt.class_counts and next((out / "train" / "0_zero").iterdir()).suffix == ".jpg"
