"""The training recipe end to end: run folder, resume, errors, distributed (issue: training recipe)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import DATA, TINY_TRAIN, offline_env, run_train
from lt_registry.config import RunError
from lt_registry.schedule import lr_at_epoch, resolve_schedule, spec_lr_scheduler

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "recipes" / "train.py"
TINY = TINY_TRAIN


def test_spec_lr_schedule_through_timm_matches_spec5():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    sched = spec_lr_scheduler(opt, epochs=200, lr=0.1)
    seen = []
    for e in range(200):
        sched.step(e)
        seen.append(opt.param_groups[0]["lr"])
    # docs/method.md §5, 1-indexed e: lr * e / 5 for e <= 5, lr * 0.01 for e > 160, lr * 1e-4 for e > 180
    spec = [0.1 * e / 5 if e <= 5 else 0.1 * (1e-4 if e > 180 else 0.01 if e > 160 else 1) for e in range(1, 201)]
    assert seen == pytest.approx(spec, rel=1e-9)
    assert [lr_at_epoch(e, 0.1) for e in range(200)] == pytest.approx(spec, rel=1e-9)


def _args(**kw):
    base = dict(epochs=200, warmup_epochs=None, decay_milestones=None, drw_epoch=None, drw=False, drs_epoch=None,
                mix_off_epoch=None, mix="unimix", preset="paper")
    base.update(kw)
    return SimpleNamespace(**base)


def test_schedule_scales_with_epochs():
    s = resolve_schedule(_args())
    assert s == {"warmup_epochs": 5, "decay_milestones": [160, 180], "decay_rate": 0.01, "drw_epoch": None, "drs_epoch": 160,
                 "mix_off_epoch": 120}
    s = resolve_schedule(_args(epochs=20, drw=True))
    assert (s["decay_milestones"], s["drw_epoch"], s["mix_off_epoch"], s["warmup_epochs"]) == ([16, 18], 16, 12, 4)
    assert resolve_schedule(_args(preset="official"))["mix_off_epoch"] is None
    assert resolve_schedule(_args(mix="mixup"))["mix_off_epoch"] is None
    with pytest.raises(ValueError, match="--epochs must be >= 1"):
        resolve_schedule(_args(epochs=0))


def test_tiny_run_writes_a_complete_run_folder(tmp_path):
    p = run_train(tmp_path, *TINY, "--mix", "unimix", "--loss", "bayias")
    run = tmp_path / "run"
    for f in ("train_args.yaml", "config.json", "model.safetensors", "metrics.json", "confusion.png", "README.md",
              "calibration/reliability.png", "calibration/bins.csv", "checkpoints/latest"):
        assert (run / f).is_file(), f
    m = json.loads((run / "metrics.json").read_text())
    final = m["final"]
    for k in ("top1", "many", "medium", "few", "ece", "mce", "ace", "sce", "brier", "nll"):
        assert isinstance(final[k], float), k
    assert 0 <= final["top1"] <= 100 and len(final["per_class_accuracy"]) == 10
    assert final["num_test_samples"] == 500  # every test image once
    assert [r["epoch"] for r in m["epochs"]] == [0, 1] and m["epochs"][0]["mixing"] is True
    assert "final epoch" in m["protocol"]["reported"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["architecture"] == "resnet20_cifar" and cfg["num_classes"] == 10
    # `--mix unimix` alone is the 'official' preset (the one that reproduces the paper's gain, README)
    assert cfg["lt"]["mixer"] == "unimix" and cfg["lt"]["preset"] == "official" and len(cfg["lt"]["class_counts"]) == 10
    for png in (run / "confusion.png", run / "calibration" / "reliability.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "run folder:" in p.stdout
    assert "note: the UniMix" not in p.stdout  # the official preset's batch is 64, as here

    # the folder loads with timm's local-dir: and predicts like the weights it holds
    import timm
    import lt_registry.models  # noqa: F401
    from safetensors.torch import load_file

    model = timm.create_model(f"local-dir:{run}", pretrained=True).eval()
    ref = timm.create_model("resnet20_cifar", num_classes=10).eval()
    ref.load_state_dict(load_file(run / "model.safetensors"))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_ldam_run_uses_cosine_head_and_drw(tmp_path):
    run_train(tmp_path, *TINY, "--loss", "ldam", "--drw-epoch", "1", name="ldam")
    cfg = json.loads((tmp_path / "ldam" / "config.json").read_text())
    assert cfg["model_args"].get("head") == "cosine"
    assert cfg["lt"]["logit_scale"] == 30.0  # calibration is scored on s * cos, the logits LDAM trains


@pytest.mark.parametrize("flags,message", [
    (["--dataset", "cifar11_lt"], "unknown dataset 'cifar11_lt'; available: cifar100_lt, cifar10_lt"),
    (["--model", "resnet33_cifar"], "unknown model 'resnet33_cifar'"),
    (["--mix", "unimx"], "unknown mixer 'unimx'; available: mixup, none, remix, unimix"),
    (["--loss", "bayes"], "unknown loss 'bayes'; available: bayias"),
    (["--sampler", "balanced_class"], "unknown sampler 'balanced_class'"),
    (["--num-classes", "7"], "--num-classes 7 disagrees with dataset 'digits_lt', which has 10 classes"),
    (["--dataset", "cifar10_lt", "--data-dir", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["--model", "resnet18", "--loss", "ldam"], "no cosine head option"),
    (["--config", "/nonexistent.yaml"], "config file not found"),
])
def test_bad_input_ends_with_one_clear_message(tmp_path, flags, message):
    p = run_train(tmp_path, *TINY, *flags, check=False, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    err = p.stderr.strip().splitlines()
    assert err and err[-1].startswith("error: ") and message in err[-1], p.stderr[-2000:]
    assert "Traceback" not in p.stderr


def test_malformed_data_dir_and_config(tmp_path):
    bad = tmp_path / "cifar"
    bad.mkdir()
    (bad / "train.npz").write_bytes(b"not a zip file")
    p = run_train(tmp_path, *TINY, "--dataset", "cifar10_lt", "--data-dir", str(bad), check=False, timeout=120)
    assert p.returncode == 2 and "error:" in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 2\nlerning_rate: 0.1\n")
    p = run_train(tmp_path, *TINY, "--config", str(cfg), check=False, timeout=120)
    assert p.returncode == 2 and "unknown options ['lerning_rate']" in p.stderr


def test_parse_args_config_does_not_leak_into_the_next_parse(tmp_path):
    from conftest import load_recipe
    from lt_registry.config import read_yaml_mapping
    train = load_recipe("train")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 7\nloss: bayias\n")
    a = train.parse_args(["--config", str(cfg), "--mix", "unimix"])
    assert (a.epochs, a.loss, a.mix) == (7, "bayias", "unimix")
    b = train.parse_args([])  # same module, no config: the defaults again
    assert (b.epochs, b.loss, b.mix) == (20, "ce", "none")
    c = train.parse_args(["-c", str(cfg), "--epochs", "3"])  # flags win over the config
    assert (c.epochs, c.loss) == (3, "bayias")
    for text, msg in (("[1, 2]\n", "must hold a mapping (option: value)"), ("a: [\n", "is not valid YAML")):
        cfg.write_text(text)
        with pytest.raises(RunError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            train.parse_args(["--config", str(cfg)])
    with pytest.raises(RunError, match="config file not found"):
        train.parse_args(["--config", str(tmp_path / "missing.yaml")])
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml_mapping(tmp_path / "empty.yaml", "x", "y") == {}


@pytest.mark.parametrize("flag,groups", [([], {0.0, 2e-4}), (["--wd-norm-bias"], {2e-4})])
def test_weight_decay_on_norm_and_bias_parameters_is_a_choice(tmp_path, flag, groups):
    # timm's default exempts norm / bias parameters from weight decay; --wd-norm-bias decays every parameter
    # (the paper's released code). The saved optimizer state shows which parameters got which decay.
    run_train(tmp_path, *TINY, "--epochs", "1", *flag, name="wd")
    ckpt = tmp_path / "wd" / "checkpoints" / "epoch_0000" / "optimizer.bin"
    state = torch.load(ckpt, weights_only=True)
    decays = {g["weight_decay"]: len(g["params"]) for g in state["param_groups"]}
    assert set(decays) == groups, decays
    from timm import create_model
    import lt_registry  # noqa: F401  (registers the CIFAR ResNets)
    n_params = len(list(create_model("resnet20_cifar", num_classes=10).parameters()))
    assert sum(decays.values()) == n_params
    if not flag:  # exempt: every 1-d parameter (BatchNorm weights and biases, the classifier bias)
        n_1d = sum(p.ndim <= 1 for p in create_model("resnet20_cifar", num_classes=10).parameters())
        assert decays[0.0] == n_1d


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # LR x 1e30 from epoch 1 on: epoch 0 trains normally, epoch 1 overflows
    p = run_train(tmp_path, *TINY, "--epochs", "3", "--warmup-epochs", "1", "--decay-milestones", "1",
                  "--decay-rate", "1e30", name="nan", check=False)
    assert p.returncode == 2, p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert "non-finite loss" in last and "at epoch 1, step" in last and "epoch_0000" in last
    run = tmp_path / "nan"
    assert (run / "checkpoints" / "latest").read_text() == "epoch_0000"
    assert (run / "checkpoints" / "epoch_0000" / "COMPLETE").is_file()
    assert not (run / "model.safetensors").exists()


def _weights(path):
    from safetensors.torch import load_file
    return load_file(path)


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted_run(tmp_path):
    args = [*TINY, "--epochs", "4", "--mix", "unimix", "--loss", "bayias", "--eval-interval", "0"]
    run_train(tmp_path, *args, name="straight")
    cmd = [sys.executable, str(TRAIN), "--output", str(tmp_path), "--experiment", "killed", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=offline_env(OMP_NUM_THREADS="2"), cwd=ROOT)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text() == "epoch_0001":
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    p = subprocess.run([sys.executable, str(TRAIN), "--resume", str(tmp_path / "killed")], capture_output=True,
                       text=True, env=offline_env(OMP_NUM_THREADS="2"), cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed" in p.stdout
    a, b = _weights(tmp_path / "straight" / "model.safetensors"), _weights(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert ma["final"]["top1"] == mb["final"]["top1"]
    assert [r["train_loss"] for r in ma["epochs"]] == [r["train_loss"] for r in mb["epochs"]]
    # the resumed run reports its whole training time: the killed segment's two epochs plus its own
    res = mb["resources"]
    assert res["resumed"] is True
    killed_epochs = sum(r["epoch_time_s"] for r in mb["epochs"][:2])
    assert res["wall_time_s"] >= res["wall_time_this_process_s"] + 0.9 * killed_epochs
    # both process lifetimes are on record: the killed one up to its last checkpoint, then the resume
    first, second = mb["segments"]
    assert (first["resumed_from"], first["from_epoch"], first["to_epoch"]) == (None, 0, 2)
    assert second["resumed_from"]["checkpoint"] == "epoch_0001" and (second["from_epoch"], second["to_epoch"]) == (2, 4)
    assert first["git_commit"] == second["git_commit"] == ma["lt"]["versions"].get("lt_registry_commit")
    assert len(ma["segments"]) == 1 and "resumed_from" not in ma
    card = (tmp_path / "killed" / "README.md").read_text()
    assert "| trained in | epoch 1 to epoch 2 at " in card and "; epoch 3 to epoch 4 at " in card


@pytest.mark.distributed
def test_two_process_run_counts_every_test_sample_once(tmp_path):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
           str(TRAIN), "--output", str(tmp_path), "--experiment", "ddp", *TINY, "--mix", "unimix", "--loss", "bayias"]
    env = offline_env(OMP_NUM_THREADS="2")
    env["CUDA_VISIBLE_DEVICES"] = ""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "2 process(es)" in p.stdout
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert m["final"]["num_test_samples"] == 500
    # both ranks' batches were counted: one epoch covers the whole training set once
    n_train = sum(json.loads((tmp_path / "ddp" / "config.json").read_text())["lt"]["class_counts"])
    assert m["epochs"][0]["train_samples"] >= n_train


@pytest.mark.slow
def test_cifar10_lt_one_epoch_on_real_data(tmp_path):
    if not (DATA / "cifar10-jpeg75" / "train.npz").is_file():
        pytest.skip("the CIFAR-10 JPEG copy is not in data/cifar10-jpeg75 (README 'Data')")
    run_train(tmp_path, "--config", str(ROOT / "recipes/configs/cifar10_lt_r100.yaml"),
              "--data-dir", str(DATA / "cifar10-jpeg75"), "--epochs", "1", "--workers", "2", "--no-progress",
              name="c10", timeout=900)
    m = json.loads((tmp_path / "c10" / "metrics.json").read_text())
    cfg = json.loads((tmp_path / "c10" / "config.json").read_text())
    assert cfg["lt"]["class_counts"] == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert m["final"]["num_test_samples"] == 10000
    assert m["final"]["top1"] > 10.0  # one epoch already beats chance
