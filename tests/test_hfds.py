"""``--dataset hfds/<hub id or local path>`` (issue 13, own long-tailed data; lt_registry/data/hfds.py).

One small long-tailed image set (5 classes, 40/20/10/5/3 training images of mixed sizes and PIL modes, 4 test
images per class) is written as a parquet folder (the Hub's layout), as ``save_to_disk`` output (a DatasetDict and
a single Dataset) and served as a Hub dataset repo by the loopback server of tests/hub_server.py; every form must
give the same classes and counts. The Hub is only ever reached in child processes with ``HF_ENDPOINT`` set
(huggingface_hub and datasets read it at import).
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hub_server import FakeHub, closed_port_url

datasets = pytest.importorskip("datasets")
from PIL import Image  # noqa: E402

from lt_registry.data import DATASETS, build_dataset, is_dataset, list_datasets  # noqa: E402
from lt_registry.data.hfds import DatasetSourceError, HFImageDataset, _parquet_split_name  # noqa: E402
from lt_registry.data.holdout import holdout_counts  # noqa: E402
from lt_registry.prior import long_tail_counts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["cat", "dog", "emu", "fox", "gnu"]
COUNTS = [40, 20, 10, 5, 3]
TEST_PER_CLASS = 4
MODES = ["RGB", "L", "RGBA", "P", "CMYK"]
SIZES = [(8, 8), (12, 10), (9, 16)]


# ---- the data ------------------------------------------------------------------------------------------------
def encode(i: int, mode: str, size) -> bytes:
    """A small image of ``mode`` (CMYK as JPEG, the rest PNG) whose pixels depend on ``i``."""
    rgb = Image.new("RGB", size, ((37 * i) % 256, (91 * i) % 256, (13 * i) % 256))
    im = rgb.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else rgb.convert(mode)
    buf = io.BytesIO()
    im.save(buf, "JPEG" if mode == "CMYK" else "PNG")
    return buf.getvalue()


def rows(counts, start: int = 0):
    """Images and labels, class by class; image i has mode MODES[i % 5] and size SIZES[i % 3]."""
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    images = [encode(start + i, MODES[i % len(MODES)], SIZES[i % len(SIZES)]) for i in range(len(labels))]
    return images, labels


def make_dataset(counts, names=NAMES, start: int = 0, label_feature=None, labels=None, **extra) -> "datasets.Dataset":
    images, y = rows(counts, start)
    feats = {"image": datasets.Image(), "label": label_feature or datasets.ClassLabel(names=names)}
    feats.update({k: f for k, (f, _) in extra.items()})
    data = {"image": [{"bytes": b, "path": None} for b in images], "label": labels if labels is not None else y}
    data.update({k: v for k, (_, v) in extra.items()})
    return datasets.Dataset.from_dict(data, features=datasets.Features(feats))


def lt_dict_of() -> "datasets.DatasetDict":
    """The test data: a long-tailed train split (COUNTS) and a balanced test split, as a DatasetDict."""
    return datasets.DatasetDict(train=make_dataset(COUNTS), test=make_dataset([TEST_PER_CLASS] * 5, start=1000))


@pytest.fixture(scope="module")
def lt_dict():
    return lt_dict_of()


def write_parquet(dd, folder: Path, layout: str = "hub") -> Path:
    for split, ds in dd.items():
        rel = f"data/{split}-00000-of-00001.parquet" if layout == "hub" else f"{split}-00000-of-00001.parquet"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(folder / rel))
    return folder


@pytest.fixture(scope="module")
def sources(lt_dict, tmp_path_factory):
    """The same data as a parquet folder (Hub layout), a saved DatasetDict, and the training split saved alone."""
    base = tmp_path_factory.mktemp("hfds")
    write_parquet(lt_dict, base / "parquet")
    lt_dict.save_to_disk(str(base / "saved_dict"))
    lt_dict["train"].save_to_disk(str(base / "saved_train"))
    return base


@pytest.fixture
def cache(tmp_path):
    """The datasets cache for this test (``data_dir`` of the hfds builder)."""
    return str(tmp_path / "hf_cache")


def build(path, cache_dir=None, **kw):
    return build_dataset(f"hfds/{path}", data_dir=cache_dir, **kw)


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


# ---- names through the registry -------------------------------------------------------------------------------
def test_hfds_names_route_through_the_registry():
    assert is_dataset("hfds/user/my-lt-set") and is_dataset("hfds/./data/my_parquet_folder")
    assert not is_dataset("hfds/") and not is_dataset("nope/user/set")
    assert "hfds/<id or path>" in list_datasets()
    assert DATASETS.canonical("HFDS/User/My-Set") == "hfds/User/My-Set"  # the id is kept verbatim
    assert DATASETS.label("hfds/User/My-Set") == "hfds/User/My-Set"
    entry = DATASETS.get("hfds/user/x")  # what the model card reads: the full name as name and label
    assert entry.name == entry.display == "hfds/user/x" and entry.meta["name_arg"] == "name_or_path"
    with pytest.raises(ValueError, match=r"Unknown dataset 'hfd/user/x'.*Available datasets: .*hfds/<id or path>") as e:
        build_dataset("hfd/user/x")
    one_line(e)
    with pytest.raises(ValueError, match=r"'hfds/' ends at the slash; expected hfds/<id or path>"):
        build_dataset("hfds/")
    with pytest.raises(ValueError, match=r"needs a Hub id or a local path: --dataset hfds/<id or path>"):
        build_dataset("hfds")


@pytest.mark.parametrize("rel,split", [
    ("data/train-00000-of-00001.parquet", "train"), ("train-00000-of-00003.parquet", "train"),
    ("validation.parquet", "validation"), ("test_0.parquet", "test"), ("train/0000.parquet", "train"),
    ("default/val/0001.parquet", "val"), ("data/0000.parquet", "train"), ("holdout-7.parquet", "holdout"),
])
def test_parquet_split_names_from_file_names(rel, split):
    assert _parquet_split_name(Path(rel)) == split


# ---- every local form gives the same set ---------------------------------------------------------------------
def summary(ds) -> dict:
    return {"counts": ds.class_counts, "names": ds.class_names, "num_classes": ds.num_classes,
            "val": ds.meta["val"], "val_counts": ds.meta["val_counts"], "test_counts": ds.meta["test_counts"],
            "before": ds.meta["counts_before_holdout"], "keys": [ds.meta["input_key"], ds.meta["target_key"]],
            "label_type": ds.meta["label_type"]}


def test_parquet_and_saved_forms_agree(sources, cache):
    forms = {
        "parquet": build(sources / "parquet", cache),
        "saved_dict": build(sources / "saved_dict"),
    }
    ref = summary(forms["parquet"])
    assert ref["names"] == NAMES and ref["before"] == COUNTS
    expect_val = holdout_counts(COUNTS, 0.1).tolist()
    assert ref["val_counts"] == expect_val
    assert ref["counts"] == (np.asarray(COUNTS) - expect_val).tolist()
    assert ref["test_counts"] == [TEST_PER_CLASS] * 5
    assert ref["keys"] == ["image", "label"] and ref["label_type"] == "class_label"
    assert summary(forms["saved_dict"]) == ref
    assert forms["parquet"].meta["format"] == "parquet" and forms["saved_dict"].meta["format"] == "saved-dataset"
    assert forms["parquet"].meta["splits"] == {"train": "train", "val": None, "test": "test"}
    assert forms["parquet"].imb_factor is None and forms["parquet"].name == f"hfds/{sources / 'parquet'}"
    # the training split saved alone: same training side, no test split
    alone = build(sources / "saved_train")
    assert summary(alone)["counts"] == ref["counts"] and alone.test is None and alone.class_names == NAMES
    # a flat parquet folder (train-*.parquet) and a single parquet file
    dd = datasets.load_from_disk(str(sources / "saved_dict"))
    flat = write_parquet(dd, Path(cache).parent / "flat", layout="flat")
    assert summary(build(flat, cache)) == ref
    single = build(flat / "train-00000-of-00001.parquet", cache)
    assert single.class_counts == ref["counts"] and single.test is None


def test_a_parquet_folder_whose_readme_declares_its_splits(sources, tmp_path, cache):
    """The Hub layout with a dataset card: README.md's ``configs`` map files to splits, whatever their names."""
    folder = tmp_path / "card"
    (folder / "shards").mkdir(parents=True)
    (folder / "shards" / "a.parquet").write_bytes((sources / "parquet/data/train-00000-of-00001.parquet").read_bytes())
    (folder / "shards" / "b.parquet").write_bytes((sources / "parquet/data/test-00000-of-00001.parquet").read_bytes())
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                                      "    path: shards/a.parquet\n  - split: test\n    path: shards/b.parquet\n---\n")
    ds = build(folder, cache, val_fraction=0)
    assert ds.class_counts == COUNTS and ds.meta["test_counts"] == [TEST_PER_CLASS] * 5 and ds.class_names == NAMES


def test_an_image_folder_and_a_corrupt_parquet_file(tmp_path, cache):
    images, y = rows([6, 3])
    for i, (b, c) in enumerate(zip(images, y)):
        split = "test" if i % 3 == 2 else "train"
        f = tmp_path / "imgs" / split / ["owl", "ant"][c] / f"{i}.{'jpg' if MODES[i % 5] == 'CMYK' else 'png'}"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b)
    ds = build(tmp_path / "imgs", cache, val_fraction=0)
    assert ds.meta["format"] == "imagefolder" and ds.class_names == ["ant", "owl"]
    assert ds.class_counts == [2, 4] and ds.meta["test_counts"] == [1, 2]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "train.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DatasetSourceError, match=r"hfds/.*broken: datasets could not read .*broken'") as e:
        build(tmp_path / "broken", cache)
    one_line(e)


def test_samples_are_rgb_pil_images_of_every_mode(sources):
    ds = build(sources / "saved_dict", val_fraction=0)
    ds.set_transforms(train=lambda im: im)
    tr = ds.train
    assert isinstance(tr, HFImageDataset) and tr.labels.dtype == np.int64 and tr.class_counts == COUNTS
    assert tr.num_classes == 5 and tr.class_names == NAMES
    for i in range(len(MODES) * len(SIZES)):
        img, y = tr[i]
        assert img.mode == "RGB" and img.size == SIZES[i % len(SIZES)] and isinstance(y, int) and y == tr.labels[i]
    # colour survives the conversions (P via its palette, CMYK via JPEG, within JPEG's error)
    want = np.array([(37 * 3) % 256, (91 * 3) % 256, (13 * 3) % 256])
    assert np.abs(np.asarray(tr[3][0], dtype=int)[0, 0] - want).max() <= 2  # index 3 is P
    tr.transform = None
    assert isinstance(tr[0][0], Image.Image)
    # the default transforms: timm's, at 224
    default = build(sources / "saved_dict")
    x, _ = default.train[0]
    assert isinstance(x, torch.Tensor) and tuple(x.shape) == (3, 224, 224)
    assert tuple(default.test[0][0].shape) == (3, 224, 224) and tuple(default.val[0][0].shape) == (3, 224, 224)


def test_counting_decodes_no_image(sources, monkeypatch):
    import PIL.Image

    def refuse(*a, **k):
        raise AssertionError("an image was decoded while the dataset was built")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    ds = build(sources / "saved_dict", imb_factor=20, seed=2)
    assert sum(ds.class_counts) == len(ds.train) and ds.meta["counts_before_holdout"] == COUNTS


# ---- validation ------------------------------------------------------------------------------------------------
def test_holdout_is_stratified_reproducible_and_recorded(sources):
    a = build(sources / "saved_dict", seed=3, val_fraction=0.2)
    b = build(sources / "saved_dict", seed=3, val_fraction=0.2)
    c = build(sources / "saved_dict", seed=4, val_fraction=0.2)
    va = a.meta["val"]
    assert set(va) == {"source", "fraction", "seed", "indices"}
    assert va["source"] == "holdout" and va["fraction"] == 0.2 and va["seed"] == 3
    assert va["indices"] == b.meta["val"]["indices"] and va["indices"] != c.meta["val"]["indices"]
    assert a.val.rows.tolist() == va["indices"]
    assert not set(va["indices"]) & set(a.train.rows.tolist())
    assert len(va["indices"]) + len(a.train) == sum(COUNTS)
    assert a.val.class_counts == holdout_counts(COUNTS, 0.2).tolist() == a.meta["val_counts"]
    assert np.array_equal(a.val.labels, np.repeat(np.arange(5), COUNTS)[va["indices"]])
    none = build(sources / "saved_dict", val_fraction=0)
    assert none.val is None and none.meta["val"] == {"source": "none"} and none.class_counts == COUNTS


@pytest.mark.parametrize("name", ["validation", "val", "valid"])
def test_a_validation_split_is_used_under_any_of_its_names(lt_dict, tmp_path, name):
    dd = datasets.DatasetDict(train=lt_dict["train"], **{name: make_dataset([2] * 5, start=500)})
    dd.save_to_disk(str(tmp_path / "d"))
    ds = build(tmp_path / "d")
    assert ds.meta["val"] == {"source": "split", "split": name} and ds.val.class_counts == [2] * 5
    assert ds.class_counts == COUNTS and ds.test is None
    held = build(tmp_path / "d", val_split=None)  # None: always hold out
    assert held.meta["val"]["source"] == "holdout"
    with pytest.raises(DatasetSourceError, match=r"no validation split 'dev'; the dataset has split\(s\) \['train', "
                                                 rf"'{name}'\] \(choose one with --val-split\)") as e:
        build(tmp_path / "d", val_split="dev")
    one_line(e)


# ---- imb_factor, empty classes ---------------------------------------------------------------------------------
def test_imb_factor_subsamples_by_the_folder_builders_rule(sources):
    ds = build(sources / "saved_dict", imb_factor=20, val_fraction=0, seed=1)
    assert ds.class_counts == long_tail_counts(40, 5, 20) and ds.imb_factor == 20.0
    assert ds.meta["imb_factor_rule"] == {"n_max": 40, "class_order": [0, 1, 2, 3, 4], "seed": 1}
    assert ds.meta["counts_before_imb_factor"] == COUNTS
    assert ds.train.rows.tolist() == ds.meta["train_indices"]
    again = build(sources / "saved_dict", imb_factor=20, val_fraction=0, seed=1)
    assert again.meta["train_indices"] == ds.meta["train_indices"]
    with pytest.raises(DatasetSourceError, match=r"imb_factor=2 asks class 'dog' \(rank 2 of 5 by size\) for 33 "
                                                 r"training images but it has 20") as e:
        build(sources / "saved_dict", imb_factor=2, val_fraction=0)
    one_line(e)


def test_classes_without_training_images(tmp_path):
    names = NAMES + ["hen"]
    dd = datasets.DatasetDict(train=make_dataset(COUNTS, names), test=make_dataset([2] * 6, names, start=700))
    dd.save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DatasetSourceError, match=r"1 class\(es\) have no training images after the validation "
                                                 r"hold-out: 'hen' \(only in test\)\..*--prior-smoothing") as e:
        build(tmp_path / "d")
    one_line(e)
    ok = build(tmp_path / "d", prior_smoothing=1.0)
    assert ok.class_counts[-1] == 0 and ok.num_classes == 6 and ok.meta["prior_smoothing"] == 1.0
    # a ClassLabel name no split uses
    dd["train"].save_to_disk(str(tmp_path / "alone"))
    with pytest.raises(DatasetSourceError, match=r"no training images after the validation hold-out: 'hen'\. "):
        build(tmp_path / "alone")


def test_a_class_only_in_the_test_split_with_string_labels(tmp_path):
    train = make_dataset([6, 4], label_feature=datasets.Value("string"), labels=["a"] * 6 + ["b"] * 4)
    test = make_dataset([2, 2, 2], label_feature=datasets.Value("string"), labels=["a", "a", "b", "b", "z", "z"])
    datasets.DatasetDict(train=train, test=test).save_to_disk(str(tmp_path / "d"))
    for smoothing in (0.0, 1.0):  # the training split defines the classes: smoothing cannot add one
        with pytest.raises(DatasetSourceError, match=r"class\(es\) \['z'\] appear in split 'test' but not in the "
                                                     r"training split 'train'; every class needs training images") as e:
            build(tmp_path / "d", val_fraction=0, prior_smoothing=smoothing)
        one_line(e)
    # integer labels: a label above the training split's largest one
    ints = datasets.DatasetDict(train=make_dataset([6, 4], label_feature=datasets.Value("int64")),
                                test=make_dataset([2, 2, 2], label_feature=datasets.Value("int64")))
    ints.save_to_disk(str(tmp_path / "i"))
    with pytest.raises(DatasetSourceError, match=r"split 'test' has label 2 in column 'label', which the training "
                                                 r"split 'train' never uses \(its labels go up to 1\)"):
        build(tmp_path / "i", val_fraction=0)


# ---- columns and label types -----------------------------------------------------------------------------------
def test_string_labels_sort_naturally(tmp_path):
    y = ["c10"] * 5 + ["c2"] * 3 + ["c1"] * 7 + ["C3"] * 2
    ds = make_dataset([len(y)], label_feature=datasets.Value("string"), labels=y)
    ds.save_to_disk(str(tmp_path / "s"))
    got = build(tmp_path / "s", val_fraction=0)
    assert got.class_names == ["c1", "c2", "C3", "c10"] and got.class_counts == [7, 3, 2, 5]
    assert got.meta["label_type"] == "string"
    assert got.train[0][1] == 3  # row 0 is "c10"


def test_integer_labels_without_classlabel_and_named_columns(tmp_path):
    n = sum(COUNTS)
    y = np.repeat(np.arange(5), COUNTS).tolist()
    images, _ = rows(COUNTS)
    data = datasets.Dataset.from_dict(
        {"photo": [{"bytes": b, "path": None} for b in images], "thumb": [{"bytes": b, "path": None} for b in images],
         "fine": y, "score": [0.5] * n},
        features=datasets.Features({"photo": datasets.Image(), "thumb": datasets.Image(),
                                    "fine": datasets.Value("int32"), "score": datasets.Value("float32")}))
    data.save_to_disk(str(tmp_path / "p"))
    with pytest.raises(DatasetSourceError, match=r"several image columns \['photo', 'thumb'\]; name the image "
                                                 r"column with --input-key") as e:
        build(tmp_path / "p")
    one_line(e)
    with pytest.raises(DatasetSourceError, match=r"no label column .*--target-key.*Columns: photo \(Image\), thumb "
                                                 r"\(Image\), fine \(Value\('int32'\)\), score \(Value\('float32'\)\)"):
        build(tmp_path / "p", input_key="thumb")
    got = build(tmp_path / "p", input_key="thumb", target_key="fine", val_fraction=0)
    assert got.class_names == ["0", "1", "2", "3", "4"] and got.class_counts == COUNTS
    assert got.meta["input_key"] == "thumb" and got.meta["label_type"] == "int"
    with pytest.raises(DatasetSourceError, match=r"label column 'score' of split 'train' is Value\('float32'\); a label "
                                                 r"column must be a ClassLabel, integers or strings") as e:
        build(tmp_path / "p", input_key="photo", target_key="score")
    one_line(e)
    with pytest.raises(DatasetSourceError, match=r"--target-key 'lbl' is not a column of split 'train'; its columns "
                                                 r"are photo \(Image\)"):
        build(tmp_path / "p", input_key="photo", target_key="lbl")
    with pytest.raises(DatasetSourceError, match=r"--input-key 'fine' is a Value\('int32'\) column, not an image"):
        build(tmp_path / "p", input_key="fine", target_key="fine")


def test_no_image_column_and_missing_splits(sources, tmp_path):
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(str(tmp_path / "t"))
    with pytest.raises(DatasetSourceError, match=r"split 'train' has no image column \(datasets\.Image feature\); "
                                                 r"name the image column with --input-key .*Columns: text "
                                                 r"\(Value\('string'\)\), label \(Value\('int64'\)\)") as e:
        build(tmp_path / "t")
    one_line(e)
    with pytest.raises(DatasetSourceError, match=r"no training split 'training'; the dataset has split\(s\) "
                                                 r"\['train', 'test'\] \(choose one with --train-split\)") as e:
        build(sources / "saved_dict", train_split="training")
    one_line(e)
    with pytest.raises(DatasetSourceError, match=r"no test split 'eval'"):
        build(sources / "saved_dict", test_split="eval")
    with pytest.raises(FileNotFoundError, match=r"local path .*nowhere' does not exist") as e:
        build("./nowhere")
    one_line(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetSourceError, match=r"the folder holds no dataset; expected a datasets save_to_disk"):
        build(tmp_path / "empty")


# ---- images that fail to decode ----------------------------------------------------------------------------------
def _label_of(batch):
    return [y for _, y in batch]


def _size(im):
    return torch.tensor(im.size)


@pytest.mark.parametrize("workers", [0, 2])
def test_undecodable_images_are_substituted_and_listed(tmp_path, workers):
    images, y = rows(COUNTS)
    images[5] = b"this is not an image"
    images[41] = images[41][:-30]  # a truncated PNG: the header parses, the pixels do not
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in images], "label": y},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)}))
    ds.save_to_disk(str(tmp_path / "bad"))
    lt = build(tmp_path / "bad", val_fraction=0)
    tr = lt.train
    tr.transform = _size
    loader = torch.utils.data.DataLoader(tr, batch_size=16, num_workers=workers, collate_fn=_label_of)
    labels = [y for batch in loader for y in batch]
    assert labels == tr.labels.tolist()  # every sample came back, with its own label
    assert tr.failed_indices() == [5, 41]
    assert tr.failed_paths() == [f"hfds/{tmp_path / 'bad'}[train] row 5", f"hfds/{tmp_path / 'bad'}[train] row 41"]
    # the stand-in is the next readable image of the same class, deterministically
    tr.transform = None
    assert np.array_equal(np.asarray(tr[5][0]), np.asarray(tr[6][0])) and tr[5][1] == 0
    assert np.array_equal(np.asarray(tr[41][0]), np.asarray(tr[42][0])) and tr[41][1] == 1
    bad = tr.check_images("full", raise_error=False)
    assert [p for p, _ in bad] == tr.failed_paths()
    with pytest.raises(DatasetSourceError, match=r"1 of 78 images are not readable images \(header check\): "
                                                 r".*row 5 \(ValueError: not an image PIL can read \(20 bytes\)\)\. "):  # not row 41
        build(tmp_path / "bad", val_fraction=0, check_images="header")


# ---- the Hub, through the loopback server ------------------------------------------------------------------------
HUB_SCRIPT = r"""
import json, sys
from lt_registry.data import build_dataset
out = {}
for case in sys.argv[1:]:
    name, _, kw = case.partition("|")
    try:
        ds = build_dataset("hfds/" + name, **json.loads(kw or "{}"))
        ds.set_transforms(train=lambda im: im)
        out[case] = {"counts": ds.class_counts, "names": ds.class_names, "val_counts": ds.meta["val_counts"],
                     "test_counts": ds.meta["test_counts"], "source": ds.meta["source"],
                     "hub_dataset": ds.meta.get("hub_dataset"), "revision": ds.meta.get("revision"),
                     "val": ds.meta["val"], "first": [ds.train[0][0].mode, *ds.train[0][0].size, ds.train[0][1]]}
    except Exception as e:
        out[case] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def hub_env(endpoint: str, hf_home: Path, **extra: str) -> dict:
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_OFFLINE="0",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1",
               HF_DATASETS_DISABLE_PROGRESS_BARS="1", OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_DATASETS_OFFLINE", "HF_DATASETS_CACHE", "HF_HUB_CACHE"):
        env.pop(k, None)
    env.update(extra)
    return env


def run_cases(env: dict, *cases: str) -> dict:
    p = subprocess.run([sys.executable, "-c", HUB_SCRIPT, *cases], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hub(sources):
    with FakeHub() as server:
        files = {str(p.relative_to(sources / "parquet")): p.read_bytes()
                 for p in sorted((sources / "parquet").rglob("*.parquet"))}
        server.add_dataset("user/my-lt-set", files)
        yield server


def test_hub_dataset_matches_the_local_copies(hub, sources, tmp_path):
    home = tmp_path / "hf_home"
    key = "user/my-lt-set|" + json.dumps({"seed": 0})
    got = run_cases(hub_env(hub.url, home), key, "user/no-such-set", "user/my-lt-set@v9",
                    "user/my-lt-set|" + json.dumps({"train_split": "training"}))
    local = summary(build(sources / "saved_dict", seed=0))
    ds = got[key]
    assert isinstance(ds, dict), ds
    assert ds["counts"] == local["counts"] and ds["names"] == NAMES == local["names"]
    assert ds["val_counts"] == local["val_counts"] and ds["test_counts"] == local["test_counts"]
    assert ds["val"] == local["val"]  # the same hold-out from the same labels and seed
    assert ds["first"] == ["RGB", *SIZES[0], 0]
    assert ds["source"] == "hub:user/my-lt-set" and ds["hub_dataset"] == "user/my-lt-set"
    assert ds["revision"] == hub.datasets["user/my-lt-set"].branches["main"]
    assert got["user/no-such-set"].startswith(
        f"DatasetSourceError: hfds/user/no-such-set: Hub dataset 'user/no-such-set' not found at {hub.url}"), got
    assert "save_to_disk" in got["user/no-such-set"] and "hfds/DIR" in got["user/no-such-set"]
    assert got["user/my-lt-set@v9"] == ("DatasetSourceError: hfds/user/my-lt-set@v9: revision 'v9' of Hub dataset "
                                        f"'user/my-lt-set' not found at {hub.url}.")
    assert "no training split 'training'; the dataset has split(s) ['train', 'test']" in \
        got["user/my-lt-set|" + json.dumps({"train_split": "training"})]
    assert hub.unhandled == []
    assert all("\n" not in v for v in got.values() if isinstance(v, str))
    # offline: the cached copy still loads; a dataset never downloaded fails with one line
    off = run_cases(hub_env(hub.url, home, HF_DATASETS_OFFLINE="1"), key, "user/other-set")
    assert off[key]["counts"] == ds["counts"] and off[key]["names"] == NAMES
    assert off["user/other-set"].startswith("DatasetSourceError: hfds/user/other-set: 'user/other-set' is not in the "
                                            "datasets cache and offline mode is on (HF_DATASETS_OFFLINE or "
                                            "HF_HUB_OFFLINE); unset it to download from"), off


def test_hub_unreachable_is_one_line(tmp_path):
    url = closed_port_url()
    got = run_cases(hub_env(url, tmp_path / "hf_home"), "user/my-lt-set")
    msg = got["user/my-lt-set"]
    assert msg.startswith(f"DatasetSourceError: hfds/user/my-lt-set: Hub unreachable at {url} ("), msg
    assert "is not in the datasets cache; check the connection or HF_ENDPOINT" in msg
    assert "save_to_disk(DIR)" in msg and "then pass hfds/DIR" in msg and "\n" not in msg
