"""recipes/ablation.py: the command line, the job pool and grid.json (the grid itself: tests/test_grid_*.py)."""
import csv
import json
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import fake_grid, fake_metrics, load_recipe, offline_env

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "recipes" / "ablation.py"
TINY = ["--model", "resnet20_cifar", "--epochs", "2", "-b", "64", "--workers", "0", "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n"
RECIPE = load_recipe("ablation")


@pytest.fixture
def run_ablation(capsys):
    """``recipes/ablation.py`` in this process (fast: no interpreter start, torch already imported)."""

    def run(*args, check=True):
        rc = RECIPE.main([str(a) for a in args])
        cap = capsys.readouterr()
        p = SimpleNamespace(returncode=rc, stdout=cap.out, stderr=cap.err)
        if check and rc != 0:
            raise AssertionError(f"ablation.py failed ({rc}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p

    return run


def run_ablation_process(*args, check=True, timeout=600):
    p = subprocess.run([sys.executable, str(ABLATION), *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env=offline_env(), cwd=ROOT)
    if check and p.returncode != 0:
        raise AssertionError(f"ablation.py failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def commands(stdout):
    """The command lines of a dry run, split as a shell would."""
    return [shlex.split(ln) for ln in stdout.splitlines() if ln.strip() and not ln.startswith("#")]


def flag(cmd, name):
    """The value of the last ``name`` in a command (argparse semantics), or True for a bare flag."""
    idx = [i for i, a in enumerate(cmd) if a == name]
    if not idx:
        return None
    i = idx[-1]
    return cmd[i + 1] if i + 1 < len(cmd) and not cmd[i + 1].startswith("--") else True


def write_train_args(runs, cells):
    for c in cells:
        if (runs / c.name).is_dir():
            (runs / c.name / "train_args.yaml").write_text(
                f"dataset: cifar10_lt\nimb_factor: 100.0\nmix: {c.mix.name}\npreset: paper\nloss: {c.loss.name}\n"
                f"drw: false\ndrw_epoch: null\nseed: {c.seed}\nepochs: 200\n")


# ---- commands ---------------------------------------------------------------------------------------------
def test_dry_run_prints_the_12_commands_of_table4(run_ablation, tmp_path):
    out = tmp_path / "grid"
    p = run_ablation("--mix", "none", "mixup", "remix", "unimix", "--loss", "ce", "ldam", "bayias",
                     "--dataset", "cifar10_lt", "--imb-factor", "100", "--out", out, "--dry-run")
    cmds = commands(p.stdout)
    assert len(cmds) == 12
    assert "# 12 cells" in p.stdout and "12 to run" in p.stdout
    seen = set()
    for cmd in cmds:
        assert Path(cmd[0]).name.startswith("python") and cmd[1].endswith("recipes/train.py")
        mix, loss = flag(cmd, "--mix"), flag(cmd, "--loss")
        assert flag(cmd, "--dataset") == "cifar10_lt" and flag(cmd, "--imb-factor") == "100"
        assert flag(cmd, "--seed") == "0"
        # bare `unimix` is train.py's default preset ('official'): passed explicitly and named in the folder
        token = "unimix.official" if mix == "unimix" else mix
        assert flag(cmd, "--experiment") == f"cifar10_lt-r100-{token}-{loss}-s0"
        assert Path(flag(cmd, "--output")) == out / "runs"
        assert flag(cmd, "--preset") == ("official" if mix == "unimix" else None)
        assert flag(cmd, "--drw") is None and flag(cmd, "--resume") is None
        seen.add((mix, loss))
    assert seen == {(m, lo) for m in ("none", "mixup", "remix", "unimix") for lo in ("ce", "ldam", "bayias")}
    assert not out.exists()  # a dry run writes nothing


def test_the_example_from_the_docs_runs_from_the_repo_root():
    p = run_ablation_process("--mix", "none", "mixup", "remix", "unimix", "--loss", "ce", "ldam", "bayias",
                             "--dataset", "cifar10_lt", "--imb-factor", "100", "--dry-run")
    assert len(commands(p.stdout)) == 12 and "output/ablation/cifar10_lt-r100" in p.stdout
    assert "Grid file (--grid FILE.yaml" in run_ablation_process("--help").stdout


@pytest.mark.parametrize("grid", sorted((ROOT / "recipes" / "configs").glob("ablation_*.yaml")), ids=lambda p: p.stem)
def test_every_committed_grid_file_expands(run_ablation, grid, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the files name configs relative to the repository
    p = run_ablation("--grid", grid.relative_to(ROOT), "--out", tmp_path / "g", "--dry-run")
    n = int(p.stdout.strip().splitlines()[-1].split()[1])
    assert n >= 2 and len(commands(p.stdout)) == n and "warning" not in p.stdout


def test_dry_run_expands_specs_and_passes_extra_args(run_ablation, tmp_path):
    p = run_ablation("--mix", "none", "unimix:official", "--loss", "ldam+drw", "--dataset", "digits_lt",
                     "--seed", "0", "1", "--out", tmp_path / "g", "--dry-run", "--", "--epochs", "3", "--workers", "0")
    cmds = commands(p.stdout)
    assert len(cmds) == 4
    names = set()
    for cmd in cmds:
        assert flag(cmd, "--loss") == "ldam" and flag(cmd, "--drw") is True
        assert flag(cmd, "--epochs") == "3" and flag(cmd, "--workers") == "0"
        assert flag(cmd, "--imb-factor") is None  # the dataset's default rho
        if flag(cmd, "--mix") == "unimix":
            assert flag(cmd, "--preset") == "official"
        names.add(flag(cmd, "--experiment"))
    assert names == {f"digits_lt-{m}-ldam+drw-s{s}" for m in ("none", "unimix.official") for s in (0, 1)}


@pytest.mark.parametrize("args,message", [
    (["--mix", "unimx"], "Unknown mixer 'unimx'. Did you mean 'unimix'"),
    (["--loss", "bayes"], "Unknown loss 'bayes'"),
    (["--mix", "mixup:official"], "applies to unimix only"),
    (["--dataset", "cifar11_lt"], "Unknown dataset 'cifar11_lt'"),
    (["--", "--loss", "ce"], "may not set --loss"),
    (["--", "--drw"], "use a loss spec such as 'ldam+drw'"),
    (["--", "--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["--", "--lerning-rate", "0.1"], "unrecognized arguments: --lerning-rate"),
    (["--grid", "/nonexistent.yaml"], "grid file not found"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--report-only"], "--dry-run and --report-only exclude each other"),
])
def test_bad_grid_input_ends_with_one_clear_message(run_ablation, tmp_path, args, message):
    own = list(args)
    if "--" in own:
        i = own.index("--")
        own = own[:i] + ["--out", str(tmp_path / "g"), "--dry-run"] + own[i:]
    else:
        own += ["--out", str(tmp_path / "g"), "--dry-run"]
    p = run_ablation(*own, check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, p.stderr
    assert "Traceback" not in p.stderr


def test_yaml_grid_file_with_train_args_overrides_and_variants(run_ablation, tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        "name: mygrid\n"
        "mix: [none, 'unimix:paper']\n"
        "loss: [ce, ldam]\n"
        "dataset: digits_lt\n"
        "seed: [0, 1]\n"
        "train_args: {epochs: 3, no-progress: true, decay-milestones: [2, 3]}\n"
        "cells:\n"
        "  - {mix: unimix, loss: ce, seed: 1, skip: true}\n"
        "  - {loss: ldam, train_args: [--lr, '0.05']}\n"
        "variants:\n"
        "  - {mix: unimix:official, loss: ldam+drw, seed: 0}\n"
        "  - {name: off1, mix: 'unimix:paper', loss: ce, seed: 0, train_args: [--mix-off-epoch, '1']}\n")
    p = run_ablation("--grid", grid, "--out", tmp_path / "o", "--dry-run")
    cmds = {flag(c, "--experiment"): c for c in commands(p.stdout)}
    expected = {f"digits_lt-{m}-{lo}-s{s}" for m in ("none", "unimix") for lo in ("ce", "ldam") for s in (0, 1)}
    expected -= {"digits_lt-unimix-ce-s1"}
    expected |= {"digits_lt-unimix.official-ldam+drw-s0", "digits_lt-unimix-ce-s0-off1"}
    assert set(cmds) == expected
    for name, c in cmds.items():
        assert flag(c, "--epochs") == "3" and flag(c, "--no-progress") is True
        assert c[c.index("--decay-milestones") + 1: c.index("--decay-milestones") + 3] == ["2", "3"]
        assert flag(c, "--lr") == ("0.05" if "-ldam" in name else None)
    off = cmds["digits_lt-unimix.official-ldam+drw-s0"]
    assert (flag(off, "--preset"), flag(off, "--loss"), flag(off, "--drw")) == ("official", "ldam", True)
    assert flag(cmds["digits_lt-unimix-ce-s0-off1"], "--mix-off-epoch") == "1"
    # folder names leave out the 'paper' preset only; every unimix cell passes its preset
    for name, c in cmds.items():
        if flag(c, "--mix") == "unimix":
            assert flag(c, "--preset") == ("official" if "unimix.official" in name else "paper"), name
    assert "# warning: --decay-milestones [3] >= --epochs 3" in p.stdout
    # flags override the file's keys; the default OUT comes from the file's name
    p = run_ablation("--grid", grid, "--seed", "7", "--dry-run")
    seeds = {flag(c, "--experiment"): flag(c, "--seed") for c in commands(p.stdout)}
    assert seeds.pop("digits_lt-unimix.official-ldam+drw-s0") == seeds.pop("digits_lt-unimix-ce-s0-off1") == "0"
    assert set(seeds.values()) == {"7"} and len(seeds) == 4  # variants keep the axes they set
    assert "output/ablation/mygrid" in p.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("mix: [none]\nlosses: [ce]\n")
    p = run_ablation("--grid", bad, "--dry-run", check=False)
    assert p.returncode == 2 and "unknown keys ['losses']" in p.stderr


def test_train_config_template_per_cell(run_ablation, tmp_path):
    p = run_ablation("--mix", "none", "--loss", "ce", "--dataset", "cifar10_lt", "cifar100_lt", "--imb-factor", "100",
                     "200", "--train-config", "paper", "--out", tmp_path / "g", "--dry-run")
    cmds = commands(p.stdout)
    assert len(cmds) == 4
    for c in cmds:
        cfg = Path(flag(c, "--config")).resolve()  # relative to the current directory, like train.py reads it
        assert cfg.name == f"{flag(c, '--dataset')}_r{flag(c, '--imb-factor')}.yaml" and cfg.is_file()


# ---- resume -----------------------------------------------------------------------------------------------
def test_dry_run_skips_finished_cells_and_resumes_incomplete_ones(run_ablation, tmp_path):
    out = tmp_path / "g"
    done, half = out / "runs" / "digits_lt-none-ce-s0", out / "runs" / "digits_lt-none-bayias-s0"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text(json.dumps(fake_metrics(50.0)))
    (half / "checkpoints").mkdir(parents=True)
    (half / "checkpoints" / "latest").write_text("epoch_0000")
    p = run_ablation("--mix", "none", "unimix", "--loss", "ce", "bayias", "--dataset", "digits_lt", "--out", out,
                     "--dry-run")
    cmds = {flag(c, "--experiment"): c for c in commands(p.stdout)}
    assert set(cmds) == {"digits_lt-none-bayias-s0", "digits_lt-unimix.official-ce-s0",
                         "digits_lt-unimix.official-bayias-s0"}  # bare unimix = the default preset, 'official'
    assert Path(flag(cmds["digits_lt-none-bayias-s0"], "--resume")) == half
    assert flag(cmds["digits_lt-unimix.official-ce-s0"], "--resume") is None
    assert "# finished, skipped: digits_lt-none-ce-s0" in p.stdout
    assert "2 to run, 1 to resume, 1 finished" in p.stdout


# ---- report and publish -----------------------------------------------------------------------------------
def test_report_only_from_run_folders_and_from_the_grid(run_ablation, tmp_path):
    cells, runs, _ = fake_grid(tmp_path)
    write_train_args(runs, cells)
    # --report-only with neither a grid nor grid.json: the cells come from the run folders' train_args.yaml
    p = run_ablation("--report-only", "--out", tmp_path)
    assert "7 cells: 7 ok" in p.stdout
    with (tmp_path / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 7
    assert (tmp_path / "results.png").read_bytes()[:8] == PNG
    assert "| UniMix (paper) | 76.00 (+5.00) [n=1] | 82.50 ± 0.71 (+3.50) |" in (tmp_path / "results.md").read_text()
    # with the grid named, the missing cell shows as pending
    p = run_ablation("--report-only", "--out", tmp_path, "--mix", "none", "unimix:paper", "--loss", "ce", "bayias",
                     "--dataset", "cifar10_lt", "--imb-factor", "100", "--seed", "0", "1")
    assert "8 cells: 7 ok, 1 pending" in p.stdout
    p = run_ablation("--report-only", "--out", tmp_path / "empty", check=False)
    assert p.returncode == 2 and "nothing to report" in p.stderr


def test_publish_copies_the_report_and_each_finished_cells_small_files(run_ablation, tmp_path):
    cells, runs, _ = fake_grid(tmp_path)
    out = tmp_path
    write_train_args(runs, cells)
    for c in cells:
        d = runs / c.name
        if d.is_dir():
            (d / "calibration").mkdir(exist_ok=True)
            (d / "calibration" / "bins.csv").write_text("bin,count\n")
            (d / "model.safetensors").write_bytes(b"weights")      # never published
            (d / "checkpoints").mkdir(exist_ok=True)
    dest = tmp_path / "published"
    p = run_ablation("--report-only", "--out", out, "--publish", dest)
    assert "published the report and 7 finished cell(s)" in p.stdout
    assert (dest / "results.png").read_bytes() == (out / "results.png").read_bytes()
    # the grid's output folder is outside the repository here: the published report does not name it
    for f in ("results.md", "results.csv"):
        text = (out / f).read_bytes()
        assert str(out).encode() in text, f
        assert (dest / f).read_bytes() == text.replace(str(out).encode(), f"PATH/TO/{out.name}".encode()), f
    finished = sorted(d.name for d in runs.iterdir() if (d / "metrics.json").is_file())
    assert sorted(d.name for d in (dest / "runs").iterdir()) == finished and len(finished) == 7
    for name in finished:
        got = sorted(str(f.relative_to(dest / "runs" / name)) for f in (dest / "runs" / name).rglob("*") if f.is_file())
        assert got == ["calibration/bins.csv", "metrics.json", "train_args.yaml"], got
        assert (dest / "runs" / name / "metrics.json").read_text() == (runs / name / "metrics.json").read_text()
    p = run_ablation("--report-only", "--out", out, "--publish", out, check=False)
    assert p.returncode == 2 and "--publish needs a folder other than" in p.stderr
    # --publish-models: the whole run folder (weights, card, plots) except checkpoints/
    for name in finished:
        (runs / name / "README.md").write_text("card")
        (runs / name / "checkpoints" / "epoch_0001").mkdir(parents=True, exist_ok=True)
        (runs / name / "checkpoints" / "epoch_0001" / "model.safetensors").write_bytes(b"state")
    dest2 = tmp_path / "with_models"
    run_ablation("--report-only", "--out", out, "--publish", dest2, "--publish-models")
    for name in finished:
        got = sorted(str(f.relative_to(dest2 / "runs" / name)) for f in (dest2 / "runs" / name).rglob("*")
                     if f.is_file())
        want = sorted(str(f.relative_to(runs / name)) for f in (runs / name).rglob("*")
                      if f.is_file() and "checkpoints" not in f.parts)
        assert got == want and "model.safetensors" in got and "README.md" in got, got
        assert (dest2 / "runs" / name / "model.safetensors").read_bytes() == b"weights"
    p = run_ablation("--report-only", "--out", out, "--publish-models", check=False)
    assert p.returncode == 2 and "--publish-models goes with --publish DIR" in p.stderr


# ---- real runs (tiny) -------------------------------------------------------------------------------------
@pytest.fixture
def out_in_repo():
    """An output folder inside the repository (output/ is git-ignored), so paths are recorded relative to it."""
    out = ROOT / "output" / f"_test_ablation_{uuid.uuid4().hex[:8]}"
    yield out
    shutil.rmtree(out, ignore_errors=True)


def test_failed_cell_is_reported_and_does_not_stop_the_others(tmp_path, out_in_repo):
    grid = tmp_path / "g.yaml"
    grid.write_text("mix: none\nloss: [ce, bayias]\ndataset: digits_lt\n"
                    "cells:\n  - {loss: ce, train_args: [--model, resnet33_cifar]}\n")
    out = out_in_repo
    p = run_ablation_process("--grid", grid, "--out", out.relative_to(ROOT), "--", *TINY, "--epochs", "1",
                             check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "FAILED  digits_lt-none-ce-s0" in p.stdout and "error: unknown model 'resnet33_cifar'" in p.stdout
    assert "ok      digits_lt-none-bayias-s0" in p.stdout
    assert "unknown model 'resnet33_cifar'" in (out / "logs" / "digits_lt-none-ce-s0.log").read_text()
    with (out / "results.csv").open() as f:
        status = {r["name"]: (r["status"], r["error"]) for r in csv.DictReader(f)}
    assert status["digits_lt-none-bayias-s0"] == ("ok", "")
    assert status["digits_lt-none-ce-s0"][0] == "failed"
    assert status["digits_lt-none-ce-s0"][1].startswith("error: unknown model 'resnet33_cifar'")
    md = (out / "results.md").read_text()
    assert "| None | failed |" in md and "## Failed cells" in md
    rec = json.loads((out / "grid.json").read_text())
    cells = {c["name"]: c for c in rec["cells"]}
    assert cells["digits_lt-none-ce-s0"]["status"] == "failed" and cells["digits_lt-none-ce-s0"]["returncode"] == 2
    assert cells["digits_lt-none-bayias-s0"]["wall_s"] > 0
    for key in ("command", "git_commit", "hardware", "total_wall_s", "invocations"):
        assert key in rec, key
    assert rec["hardware"]["cpu_count"] >= 1 and "platform" in rec["hardware"]
    assert "--grid" in rec["command"] and rec["invocations"][-1]["cwd"] == "."
    # what gets published names no path of this machine
    for f in ("grid.json", "results.md", "results.csv"):
        text = (out / f).read_text()
        assert str(ROOT) not in text and sys.executable not in text, f


@pytest.mark.slow
def test_small_real_grid_end_to_end_then_skips_finished_cells(tmp_path):
    out = tmp_path / "grid"
    args = ["--mix", "none", "unimix", "--loss", "ce", "bayias", "--dataset", "digits_lt", "--jobs", "2", "--out", out,
            "--", *TINY]
    p = run_ablation_process(*args, timeout=900)
    assert "4 to run" in p.stdout and "4 cells: 4 ok" in p.stdout
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert {(r["mix"], r["loss"]) for r in rows} == {(m, lo) for m in ("none", "unimix") for lo in ("ce", "bayias")}
    for r in rows:
        assert r["epochs"] == "2" and r["dataset"] == "digits_lt" and r["imb_factor"] == "10.0"
        assert 0 <= float(r["top1"]) <= 100 and float(r["wall_s"]) > 0
        assert (Path(r["run_dir"]) / "model.safetensors").is_file()
    md = (out / "results.md").read_text()
    assert "| Mixer \\ Loss | CE | Bayias |" in md and "| UniMix (official) |" in md and "## Long form" in md
    assert "git commit:" in md and "hardware:" in md and "wall time:" in md
    assert (out / "results.png").read_bytes()[:8] == PNG
    rec = json.loads((out / "grid.json").read_text())
    assert rec["invocations"][-1]["jobs"] == 2 and rec["invocations"][-1]["threads_per_job"] >= 1
    stamps = {r["name"]: (Path(r["run_dir"]) / "metrics.json").stat().st_mtime_ns for r in rows}

    p = run_ablation_process(*args, timeout=300)
    assert "0 to run, 0 to resume, 4 finished (skipped)" in p.stdout and "4 cells: 4 ok" in p.stdout
    assert "start" not in p.stdout
    for r in rows:
        assert (Path(r["run_dir"]) / "metrics.json").stat().st_mtime_ns == stamps[r["name"]]
    rec = json.loads((out / "grid.json").read_text())
    assert len(rec["invocations"]) == 2 and len(rec["invocations"][-1]["skipped"]) == 4
