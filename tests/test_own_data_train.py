"""The practitioner's path through the training recipe: an own image folder with its natural counts, a timm model
at another input size, validation monitoring and best-on-validation weights, the test split read once, a run
folder that timm loads back with its own preprocessing, and the recipe-level errors."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_recipe, make_image_folder, run_train

COUNTS = [150, 90, 50, 25, 12, 5]
FAST = ["--epochs", "2", "-b", "32", "--workers", "0", "--no-progress", "--eval-interval", "1", "--lr", "0.05",
        "--warmup-epochs", "0"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("own") / "data", COUNTS, splits=("train", "test"))


@pytest.fixture(scope="module")
def folder_run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("own_runs")
    run_train(out, "--dataset", "folder", "--data-dir", str(folder), "--model", "resnet10t", "--img-size", "48",
              "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "--interpolation", "bilinear", "--crop-pct", "0.9",
              "--mix", "unimix", "--loss", "bayias", *FAST, name="run")
    return out / "run"


@pytest.mark.slow
def test_natural_counts_minus_the_holdout_are_the_prior(folder_run):
    from lt_registry.data.holdout import holdout_counts

    m = json.loads((folder_run / "metrics.json").read_text())
    lt = m["lt"]
    expected = (np.array(COUNTS) - holdout_counts(COUNTS, 0.1)).tolist()
    assert lt["class_counts"] == expected
    np.testing.assert_allclose(lt["prior"], np.array(expected) / sum(expected), rtol=1e-6)
    assert lt["class_names"] == [f"class_{c}" for c in range(6)]
    assert lt["splits"] == {"train": sum(expected), "val": int(holdout_counts(COUNTS, 0.1).sum()), "test": 24}
    held = json.loads((folder_run / "val_split.json").read_text())
    assert held["source"] == "holdout" and held["fraction"] == 0.1 and len(held["paths"]) == lt["splits"]["val"]
    # UniMix's partner sampler and Bayias were built from the same counts
    assert "UniMix" in lt["mixer_repr"] and m["evaluated_on"] == "test"
    assert all("val_top1" in row for row in m["epochs"]) and m["skipped_images"]["count"] == 0


@pytest.mark.slow
def test_config_records_the_input_pipeline_and_timm_reproduces_the_test_numbers(folder_run, folder):
    """config.json says 48 px and the chosen mean/std; timm.create_model("local-dir:") plus timm's data config
    give back the evaluation transform, hence the test numbers of the end of training."""
    import timm
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    import lt_registry  # noqa: F401
    from lt_registry.metrics import report_metrics

    cfg = json.loads((folder_run / "config.json").read_text())
    p = cfg["pretrained_cfg"]
    assert p["input_size"] == [3, 48, 48] and p["mean"] == [0.5] * 3 and p["std"] == [0.25] * 3
    assert p["interpolation"] == "bilinear" and p["crop_pct"] == 0.9 and "tag" not in p
    assert cfg["label_names"] == [f"class_{c}" for c in range(6)] and cfg["num_classes"] == 6

    model = timm.create_model(f"local-dir:{folder_run}", pretrained=True).eval()
    tf = create_transform(**resolve_data_config(model=model))
    xs, ys = [], []
    for c, name in enumerate(cfg["label_names"]):
        for f in sorted((folder / "test" / name).iterdir()):
            with Image.open(f) as im:
                xs.append(tf(im.convert("RGB")))
            ys.append(c)
    with torch.no_grad():
        logits = model(torch.stack(xs))
    lt = cfg["lt"]
    again = report_metrics(logits, torch.tensor(ys), lt["class_counts"])["final"]
    final = json.loads((folder_run / "metrics.json").read_text())["final"]
    for k in ("top1", "nll", "ece"):
        assert again[k] == pytest.approx(final[k], abs=2e-3), k


@pytest.mark.slow
def test_best_on_validation_and_test_read_only_after_training(folder, tmp_path):
    """The best/ weights are the epoch with the best validation score (here the last epoch, trained at a
    destructive LR, is worse), and the test split is read only after the last training batch."""
    from safetensors.torch import load_file

    from lt_registry.data import build_dataset, register_dataset
    from lt_registry.data.builder import DATASETS

    events = []

    def probe(kind, cls):
        def getitem(self, i):
            events.append(kind)
            return cls.__getitem__(self, i)
        return type(f"Probe{kind}", (cls,), {"__getitem__": getitem})

    @register_dataset("probe_folder")
    def build_probe(data_dir=None, **kw):
        ds = build_dataset("folder", data_dir=data_dir, **kw)
        for kind, d in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
            d.__class__ = probe(kind, type(d))
        return ds

    train = load_recipe("train")
    try:
        rc = train.main(["--dataset", "probe_folder", "--data-dir", str(folder), "--model", "resnet20_cifar",
                         "--img-size", "32", "--output", str(tmp_path), "--experiment", "probe", "--epochs", "4",
                         "-b", "32", "--workers", "0", "--no-progress", "--eval-interval", "1", "--lr", "0.05",
                         "--warmup-epochs", "0", "--decay-milestones", "3", "--decay-rate", "60",
                         "--checkpoint-keep", "10"])
    finally:
        DATASETS._entries.pop("probe_folder", None)
        from accelerate.state import AcceleratorState, GradientState
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    assert rc == 0
    last_train = max(i for i, e in enumerate(events) if e == "train")
    first_test = min(i for i, e in enumerate(events) if e == "test")
    assert first_test > last_train, "the test split was read during training"
    assert any(e == "val" for e in events[:last_train]), "validation was not monitored during training"

    run = tmp_path / "probe"
    m = json.loads((run / "metrics.json").read_text())
    val_top1 = [row["val_top1"] for row in m["epochs"]]
    best = m["best"]
    assert best["epoch"] == int(np.argmax(val_top1)) and best["value"] == pytest.approx(max(val_top1))
    assert best["epoch"] < 3, f"the destructive last epoch should not be the best: {val_top1}"
    chosen = load_file(str(run / "best" / "model.safetensors"))
    at_epoch = load_file(str(run / "checkpoints" / f"epoch_{best['epoch']:04d}" / "model.safetensors"))
    final = load_file(str(run / "model.safetensors"))
    assert all(torch.equal(chosen[k], at_epoch[k]) for k in chosen)
    assert any(not torch.equal(chosen[k], final[k]) for k in chosen)
    assert set(best["test"]) >= {"top1", "ece"}
    card = (run / "README.md").read_text()
    assert "best/model.safetensors" in card and "best on validation by top1" in card


@pytest.mark.parametrize("flags,message", [
    (["--dataset", "digits_lt", "--train-list", "x.csv"], "does not take --train-list"),
    (["--dataset", "digits_lt", "--img-size", "48"], "apply to image-file datasets"),
    (["--eval-metric", "accuracy"], "unknown metric 'accuracy'; known metrics: top1"),
    (["--model", "resnet10t", "--pretrained"], "--pretrained-path FILE"),
    (["--pretrained-path", "/nonexistent/weights.safetensors"], "does not exist"),
    (["--initial-checkpoint", "/nonexistent/w.pth"], "does not exist"),
    (["--sched", "wavy"], "timm's schedules: cosine"),
    (["--mean", "0.5", "0.5"], "--mean takes 1 or 3 values"),
])
def test_recipe_errors_are_one_clear_line(tmp_path, flags, message, capsys):
    """In this process (the errors come before any training): exit status 2 and one ``error:`` line."""
    from accelerate.state import AcceleratorState, GradientState

    train = load_recipe("train")
    try:
        rc = train.main(["--output", str(tmp_path), "--experiment", "run", "--epochs", "1", "--workers", "0",
                         "--no-progress", *flags])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err, err
    assert err[-1].startswith("error: ") and message in err[-1], err[-3:]
    assert not any(Path(tmp_path, "run").glob("*.safetensors"))


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_on_an_own_folder_with_a_timm_model(folder, tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 (gloo on the CPU): own folder, a timm model at 40 px,
    UniMix with its dataset-level partner sampler, Bayias; validation and test counted once each."""
    import subprocess
    import sys

    from conftest import ROOT, TRAIN, offline_env

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29519",
           str(TRAIN), "--output", str(tmp_path), "--experiment", "ddp", "--dataset", "folder", "--data-dir",
           str(folder), "--model", "resnet10t", "--img-size", "40", "--mix", "unimix", "--preset", "paper",
           "--loss", "bayias",
           "--model-ema", "--grad-accum-steps", "2", "--clip-grad", "5", *FAST]
    env = offline_env(OMP_NUM_THREADS="1")
    env["CUDA_VISIBLE_DEVICES"] = ""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "2 process(es)" in p.stdout
    run = tmp_path / "ddp"
    m = json.loads((run / "metrics.json").read_text())
    assert m["final"]["num_test_samples"] == 24
    assert m["val"]["num_test_samples"] == m["lt"]["splits"]["val"]
    assert m["epochs"][0]["train_samples"] >= m["lt"]["splits"]["train"]
    assert (run / "best" / "model.safetensors").is_file() and (run / "ema" / "model.safetensors").is_file()
    assert "top1" in m["ema"]["test"]


@pytest.mark.slow
def test_a_hub_dataset_id_trains_end_to_end(tmp_path):
    """--dataset hfds/USER/NAME through the real datasets / huggingface_hub clients against the loopback
    Hub-protocol server: the run's counts and class names are the Hub dataset's."""
    import subprocess
    import sys

    pytest.importorskip("datasets")
    from hub_server import FakeHub
    from test_hfds import COUNTS as HUB_COUNTS, NAMES, hub_env, lt_dict_of, write_parquet

    from conftest import ROOT, TRAIN
    from lt_registry.data.holdout import holdout_counts

    parquet = write_parquet(lt_dict_of(), tmp_path / "parquet")
    with FakeHub() as hub:
        hub.add_dataset("user/my-lt-set", {str(p.relative_to(parquet)): p.read_bytes()
                                           for p in sorted(parquet.rglob("*.parquet"))})
        cmd = [sys.executable, str(TRAIN), "--dataset", "hfds/user/my-lt-set", "--model", "resnet20_cifar",
               "--img-size", "32", "--mix", "unimix", "--loss", "bayias", "--output", str(tmp_path),
               "--experiment", "hub", *FAST]
        p = subprocess.run(cmd, capture_output=True, text=True, env=hub_env(hub.url, tmp_path / "hf_home"),
                           cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    cfg = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert cfg["lt"]["class_names"] == NAMES and cfg["label_names"] == NAMES
    assert cfg["lt"]["class_counts"] == (np.array(HUB_COUNTS) - holdout_counts(HUB_COUNTS, 0.1)).tolist()
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "hfds/user/my-lt-set" in card
