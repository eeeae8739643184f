"""recipes/calibrate.py (a calibrator fitted on the validation split only, stored in the run folder, before/after
numbers in metrics.json and the card), lt_registry.load_classifier and recipes/predict.py (issue 14, items 2-3)."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_recipe, run_train

TRAIN_ARGS = ["--model", "resnet20_cifar", "--epochs", "2", "-b", "64", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 2-epoch digits_lt run (default options), trained once for this module; copy it before changing it."""
    out = tmp_path_factory.mktemp("calib_run")
    run_train(out, *TRAIN_ARGS, name="run")
    return out / "run"


@pytest.fixture(scope="module")
def calibrated(trained, tmp_path_factory):
    """``recipes/calibrate.py`` on a copy of the run, with every read of the val / test splits and every calibrator
    fit recorded in order."""
    from lt_registry.calibration import Calibrator
    from lt_registry.data.builder import DATASETS

    run = tmp_path_factory.mktemp("calib") / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("checkpoints"))
    events = []

    def probe(kind, cls):
        def getitem(self, i):
            events.append((kind, i))
            return cls.__getitem__(self, i)
        return type(f"Probe{kind}", (cls,), {"__getitem__": getitem})

    key = DATASETS.canonical("digits_lt")
    entry = DATASETS._entries[key]

    def build_probe(*a, **kw):
        ds = entry.factory(*a, **kw)
        for kind, d in (("val", ds.val), ("test", ds.test)):
            d.__class__ = probe(kind, type(d))
        return ds

    original_fit = Calibrator.fit

    def fit(self, logits, labels=None):
        events.append(("fit", torch.as_tensor(logits).detach().clone()))
        return original_fit(self, logits, labels)

    DATASETS._entries[key] = dataclasses.replace(entry, factory=build_probe)
    Calibrator.fit = fit
    out, err = io.StringIO(), io.StringIO()
    try:
        import contextlib
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = load_recipe("calibrate").main([str(run), "--calibrator", "temperature"])
    finally:
        DATASETS._entries[key] = entry
        Calibrator.fit = original_fit
    assert rc == 0, err.getvalue()
    return run, events, out.getvalue()


def test_calibrate_fits_on_validation_only_and_reads_test_afterwards(calibrated):
    from lt_registry.data import build_dataset

    run, events, _ = calibrated
    kinds = [e[0] for e in events]
    fits = [i for i, k in enumerate(kinds) if k == "fit"]
    tests = [i for i, k in enumerate(kinds) if k == "test"]
    assert fits and tests and any(k == "val" for k in kinds)
    assert min(tests) > max(fits), "the test split was read before the calibrator fits ended"
    n_val = len(build_dataset("digits_lt").val)
    assert sum(k == "val" for k in kinds[:min(fits)]) == n_val
    for i in fits:  # every fit saw exactly the validation logits, never a test row
        assert events[i][1].shape[0] == n_val
    assert len(tests) == len(build_dataset("digits_lt").test)


def test_calibrate_writes_files_and_blocks(calibrated, trained):
    run, _, stdout = calibrated
    assert (run / "calibrator.safetensors").is_file()
    cfg = json.loads((run / "config.json").read_text())
    block = cfg["lt"]["calibration"]
    assert block["calibrator"] == "temperature" and block["fitted_on"] == "val" and block["num_samples"] == 100
    assert block["prior_em"] is not None
    m = json.loads((run / "metrics.json").read_text())
    cal = m["calibration"]
    assert set(cal["val"]) == {"before", "after"} and set(cal["test"]) == {"before", "after"}
    assert cal["test"]["before"]["top1"] == pytest.approx(m["final"]["top1"], abs=1e-6)  # same model, same data
    assert cal["val"]["after"]["nll"] <= cal["val"]["before"]["nll"] + 1e-9
    assert cal["test"]["after"]["top1"] == pytest.approx(cal["test"]["before"]["top1"])  # temperature keeps argmax
    assert (run / "calibration" / "reliability_calibrated.png").stat().st_size > 10_000
    card = (run / "README.md").read_text()
    assert "## Calibration" in card and "val before | val after | test before | test after" in card
    assert f"{cal['val']['after']['nll']:.2f}" in card and "reliability_calibrated.png" in card
    assert "## Calibration" not in (trained / "README.md").read_text()
    assert "val NLL" in stdout and "->" in stdout


def test_load_classifier_prior_shift_is_exact(calibrated):
    from lt_registry import load_classifier
    from lt_registry.data import build_dataset

    run, _, _ = calibrated
    clf = load_classifier(run, device="cpu")
    assert clf.calibrator is not None and clf.calibrator.name == "temperature" and clf.prior_em is not None
    assert len(clf.class_names) == 10
    ds = build_dataset("digits_lt")
    x = torch.stack([ds.test[i][0] for i in range(0, 500, 25)])  # already-transformed tensors
    pu = clf.predict_proba(x, test_prior="uniform")
    pt = clf.predict_proba(x, test_prior="train")
    assert torch.allclose(pu.sum(1), torch.ones(len(x)), atol=1e-5)
    d = pt.double().log() - pu.double().log() - clf.prior.probs.double().log()
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-4)  # log p_train - log p_uniform = log pi + const
    assert torch.allclose(clf.predict_proba(x), pu)
    pl = clf.predict_proba(x, test_prior=[0.1] * 10)
    assert torch.allclose(pl, pu, atol=1e-6)
    with pytest.raises(ValueError, match="has 3 values but the model has 10 classes"):
        clf.predict_proba(x, test_prior=[0.2, 0.3, 0.5])
    pe = clf.predict_proba(x, test_prior="estimate")
    assert clf.estimated_prior is not None and clf.estimated_prior.sum().item() == pytest.approx(1.0)
    assert torch.allclose(pe.sum(1), torch.ones(len(x)), atol=1e-5)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Digits test images as PNG files in nested folders, a truncated PNG, a non-image .png and a .txt file."""
    from PIL import Image

    from lt_registry.data import load_digits_arrays

    root = tmp_path_factory.mktemp("images")
    arr = load_digits_arrays("test")
    for i in range(0, 60, 3):
        d = root / (f"sub/{i % 2}" if i % 2 else "top")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(arr.images[i])).save(d / f"img_{i:03d}.png")
    good = (root / "top" / "img_000.png").read_bytes()
    (root / "sub" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "broken.png").write_bytes(b"this is not an image")
    (root / "notes.txt").write_text("skipped: not an image extension")
    return root, 20


def test_predict_folder_rows_probabilities_and_unreadable(calibrated, image_folder, tmp_path, capsys):
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from lt_registry import adapt_logits_to_prior, load_classifier

    run, _, _ = calibrated
    root, n_good = image_folder
    out = tmp_path / "preds.csv"
    rc = load_recipe("predict").main([str(run), str(root), "--output", str(out), "--topk", "10",
                                      "--batch-size", "8", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == n_good
    assert list(rows[0])[:5] == ["path", "label_1", "prob_1", "label_2", "prob_2"] and "prob_10" in rows[0]
    for r in rows:
        assert sum(float(r[f"prob_{j}"]) for j in range(1, 11)) == pytest.approx(1.0, abs=1e-4)
    bad = [line for line in captured.err.splitlines() if line.startswith("unreadable image")]
    assert len(bad) == 2 and any("truncated.png" in b for b in bad) and any("broken.png" in b for b in bad)
    assert f"{n_good} images predicted, 2 unreadable" in captured.out
    assert "notes.txt" not in captured.err + out.read_text()

    # top-1 = the model's own argmax under the same (uniform) prior, from logits computed here directly
    clf = load_classifier(run, device="cpu")
    model = timm.create_model(f"local-dir:{run}", pretrained=True).eval()
    tf = create_transform(**resolve_data_config(model=model))
    x = torch.stack([tf(Image.open(r["path"]).convert("RGB")) for r in rows])
    with torch.no_grad():
        z = model(x) * clf.logit_scale
    z = clf.calibrator(z.double())
    assumed = None if clf.assumed_prior == "uniform" else clf.prior.probs
    top = adapt_logits_to_prior(z, None, assumed_prior=assumed).argmax(1)
    assert [r["label_1"] for r in rows] == [clf.class_names[i] for i in top.tolist()]


def test_predict_jsonl_topk_and_estimate(calibrated, image_folder, tmp_path, capsys):
    run, _, _ = calibrated
    root, n_good = image_folder
    out = tmp_path / "preds.jsonl"
    rc = load_recipe("predict").main([str(run), str(root / "top"), str(root / "sub"), "--output", str(out),
                                      "--topk", "3", "--test-prior", "estimate", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    lines = [json.loads(v) for v in out.read_text().splitlines()]
    assert len(lines) == n_good and all(len(d["labels"]) == 3 and len(d["probs"]) == 3 for d in lines)
    assert "estimated prior (prior_em over" in captured.out

    prior_file = tmp_path / "prior.json"
    prior_file.write_text(json.dumps([0.1] * 10))
    rc = load_recipe("predict").main([str(run), str(root / "top"), "--output", str(tmp_path / "p.csv"),
                                      "--test-prior", str(prior_file), "--no-progress"])
    assert rc == 0


def test_user_errors_are_one_line(trained, calibrated, tmp_path, capsys):
    run, _, _ = calibrated
    cases = [
        (load_recipe("predict"), [str(trained), str(run / "calibration"), "--output", str(tmp_path / "x.csv"),
                                  "--test-prior", "estimate"], "recipes/calibrate.py"),
        (load_recipe("predict"), [str(run), str(tmp_path / "nothing"), "--output", str(tmp_path / "x.csv")],
         "no such file or folder"),
        (load_recipe("predict"), [str(run), str(run / "calibration"), "--output", str(tmp_path / "x.csv"),
                                  "--test-prior", "sideways"], "is not uniform, train, estimate or an existing file"),
        (load_recipe("calibrate"), [str(trained), "--calibrator", "prior_em"], "prediction time"),
        (load_recipe("calibrate"), ["hf-hub:user/repo"], "pass --output"),
        (load_recipe("calibrate"), [str(tmp_path)], "not a run folder"),
    ]
    for recipe, argv, message in cases:
        assert recipe.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_calibrate_and_predict_own_folder_with_holdout(tmp_path, capsys):
    """Own data without a val folder: the seeded hold-out is rebuilt (and checked against val_split.json), the
    image-file evaluation transform comes from pretrained_cfg, and the test folder is scored before/after."""
    from conftest import make_image_folder

    data = make_image_folder(tmp_path / "data", [30, 12, 6], splits=("train", "test"), test_per_class=3)
    run_train(tmp_path, "--dataset", "folder", "--data-dir", str(data), "--img-size", "32", "--val-fraction", "0.2",
              *TRAIN_ARGS, name="own")
    run = tmp_path / "own"
    assert json.loads((run / "val_split.json").read_text())["source"] == "holdout"
    rc = load_recipe("calibrate").main([str(run), "--calibrator", "bcts"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    cal = json.loads((run / "metrics.json").read_text())["calibration"]
    assert cal["calibrator"] == "bcts" and cal["num_test_samples"] == 9
    assert cal["val"]["after"]["nll"] <= cal["val"]["before"]["nll"] + 1e-9
    out = tmp_path / "preds.csv"
    assert load_recipe("predict").main([str(run), str(data / "test"), "--output", str(out), "--no-progress",
                                        "--topk", "2"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 9 and {r["label_1"] for r in rows} <= {"class_0", "class_1", "class_2"}

    # the hold-out of another seed is not the run's validation split: refused
    split = json.loads((run / "val_split.json").read_text())
    split["seed"] = 99
    (run / "val_split.json").write_text(json.dumps(split))
    capsys.readouterr()
    assert load_recipe("calibrate").main([str(run)]) == 2
    assert "differs from the run's val_split.json" in capsys.readouterr().err


HUB_FLOW = r"""
import json, subprocess, sys
from lt_registry import load_classifier
from lt_registry.hub import push_to_hub

run, uncal, out, token = sys.argv[1:5]
push_to_hub(run, "user/calibrated", token=token)
push_to_hub(uncal, "user/raw", token=token)
clf = load_classifier("hf-hub:user/calibrated", device="cpu")   # downloads calibrator.safetensors too
p = subprocess.run([sys.executable, "recipes/calibrate.py", "hf-hub:user/raw", "--output", out,
                    "--calibrator", "vector"], capture_output=True, text=True)
json.dump({"calibrator": getattr(clf.calibrator, "name", None), "prior_em": clf.prior_em is not None,
           "rc": p.returncode, "err": p.stderr[-2000:]}, open(f"{out}.json", "w"))
"""


def test_hub_download_brings_the_calibrator_and_hub_runs_calibrate_into_a_copy(calibrated, trained, tmp_path):
    from hub_server import FakeHub
    from test_hub import TOKEN, hub_env, run_python

    run, _, _ = calibrated
    pushed_cal = shutil.copytree(run, tmp_path / "cal")
    pushed_raw = shutil.copytree(trained, tmp_path / "raw", ignore=shutil.ignore_patterns("checkpoints"))
    out = tmp_path / "local_copy"
    with FakeHub(token=TOKEN, user="user") as hub:
        p = run_python(HUB_FLOW, hub_env(hub.url, tmp_path / "hf_home"), pushed_cal, pushed_raw, out, TOKEN)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    res = json.loads(Path(f"{out}.json").read_text())
    assert res["calibrator"] == "temperature" and res["prior_em"]
    assert res["rc"] == 0, res["err"]
    assert json.loads((out / "config.json").read_text())["lt"]["calibration"]["calibrator"] == "vector"
    assert (out / "calibrator.safetensors").is_file() and "## Calibration" in (out / "README.md").read_text()
    assert "hf-hub:user/raw" in (out / "README.md").read_text()
