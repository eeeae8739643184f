"""The ablation grid (paper Table 4: mixers x losses): commands, specs, grid files, tables, resume."""
import csv
import dataclasses
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lt_registry.ablation import (RESULT_COLUMNS, LossSpec, MixSpec, aggregate, cell_matches, collect_results,
                                  expand_grid, make_cell, plot_results, results_markdown, write_results_csv)

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "recipes" / "ablation.py"
TINY = ["--model", "resnet20_cifar", "--epochs", "2", "-b", "64", "--workers", "0", "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n"


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    env.pop("HF_TOKEN", None)
    return env


def _load_recipe():
    spec = importlib.util.spec_from_file_location("_ablation_recipe", ABLATION)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RECIPE = _load_recipe()


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
                       timeout=timeout, env=_env(), cwd=ROOT)
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
        assert flag(cmd, "--experiment") == f"cifar10_lt-r100-{mix}-{loss}-s0"
        assert Path(flag(cmd, "--output")) == out / "runs"
        assert flag(cmd, "--preset") == ("paper" if mix == "unimix" else None)
        assert flag(cmd, "--drw") is None and flag(cmd, "--resume") is None
        seen.add((mix, loss))
    assert seen == {(m, lo) for m in ("none", "mixup", "remix", "unimix") for lo in ("ce", "ldam", "bayias")}
    assert not out.exists()  # a dry run writes nothing


def test_the_example_from_the_docs_runs_from_the_repo_root():
    p = run_ablation_process("--mix", "none", "mixup", "remix", "unimix", "--loss", "ce", "ldam", "bayias",
                     "--dataset", "cifar10_lt", "--imb-factor", "100", "--dry-run")
    assert len(commands(p.stdout)) == 12 and "output/ablation/cifar10_lt-r100" in p.stdout


def test_specs_expand_to_train_flags():
    assert MixSpec.parse("unimix:official").train_flags() == ["--mix", "unimix", "--preset", "official"]
    assert MixSpec.parse("unimix").train_flags() == ["--mix", "unimix", "--preset", "paper"]
    assert MixSpec.parse("unimix:paper") == MixSpec.parse("unimix")
    assert MixSpec.parse("mixup").train_flags() == ["--mix", "mixup"]
    assert LossSpec.parse("ldam+drw").train_flags() == ["--loss", "ldam", "--drw"]
    assert LossSpec.parse("bayias").train_flags() == ["--loss", "bayias"]
    assert MixSpec.parse("unimix:official").label == "UniMix (official)" and LossSpec.parse("ldam+drw").label == "LDAM+DRW"
    for bad, msg in (("mixup:official", "unimix only"), ("unimix:fast", "unknown UniMix preset")):
        with pytest.raises(ValueError, match=msg):
            MixSpec.parse(bad)
    for bad in ("ldam+foo", "ldam+drw+drw", "+drw"):
        with pytest.raises(ValueError, match="NAME\\+drw"):
            LossSpec.parse(bad)
    c = make_cell("cifar10_lt", 100, "unimix:official", "ldam+drw", 1)
    assert c.name == "cifar10_lt-r100-unimix.official-ldam+drw-s1"


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
        "mix: [none, unimix]\n"
        "loss: [ce, ldam]\n"
        "dataset: digits_lt\n"
        "seed: [0, 1]\n"
        "train_args: {epochs: 3, no-progress: true, decay-milestones: [2, 3]}\n"
        "cells:\n"
        "  - {mix: unimix, loss: ce, seed: 1, skip: true}\n"
        "  - {loss: ldam, train_args: [--lr, '0.05']}\n"
        "variants:\n"
        "  - {mix: unimix:official, loss: ldam+drw, seed: 0}\n"
        "  - {name: off1, mix: unimix, loss: ce, seed: 0, train_args: [--mix-off-epoch, '1']}\n")
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


def test_cell_matching_by_bare_name_and_spec():
    uo = make_cell("d", None, "unimix:official", "ldam+drw", 0)
    assert cell_matches(uo, {"mix": "unimix"}) and cell_matches(uo, {"loss": "ldam"})
    assert cell_matches(uo, {"mix": "unimix:official", "loss": "ldam+drw"})
    assert not cell_matches(uo, {"mix": "unimix:paper"}) and not cell_matches(uo, {"loss": ["ce", "bayias"]})
    assert not cell_matches(make_cell("d", None, "unimix", "ldam", 0), {"loss": "ldam+drw"})


# ---- resume state -----------------------------------------------------------------------------------------

def _fake_metrics(top1, ece=10.0, mce=30.0, many=90.0, medium=70.0, few=40.0, epochs=200, imb=100.0):
    return {"final": {"top1": top1, "ece": ece, "mce": mce, "many": many, "medium": medium, "few": few, "nll": 80.0,
                      "head": top1 + 10, "mid": top1, "tail": top1 - 10},
            "epochs": [{"epoch": e, "epoch_time_s": 1.5} for e in range(epochs)],
            "lt": {"dataset": "cifar10_lt", "imb_factor": imb, "epochs": epochs, "versions": {"lt_registry_commit": "abc"}}}


def test_dry_run_skips_finished_cells_and_resumes_interrupted_ones(run_ablation, tmp_path):
    out = tmp_path / "g"
    done, half = out / "runs" / "digits_lt-none-ce-s0", out / "runs" / "digits_lt-none-bayias-s0"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text(json.dumps(_fake_metrics(50.0)))
    (half / "checkpoints").mkdir(parents=True)
    (half / "checkpoints" / "latest").write_text("epoch_0000")
    p = run_ablation("--mix", "none", "unimix", "--loss", "ce", "bayias", "--dataset", "digits_lt", "--out", out,
                     "--dry-run")
    cmds = {flag(c, "--experiment"): c for c in commands(p.stdout)}
    assert set(cmds) == {"digits_lt-none-bayias-s0", "digits_lt-unimix-ce-s0", "digits_lt-unimix-bayias-s0"}
    assert Path(flag(cmds["digits_lt-none-bayias-s0"], "--resume")) == half
    assert flag(cmds["digits_lt-unimix-ce-s0"], "--resume") is None
    assert "# finished, skipped: digits_lt-none-ce-s0" in p.stdout
    assert "2 to run, 1 to resume, 1 finished" in p.stdout


# ---- tables -----------------------------------------------------------------------------------------------

def _fake_grid(tmp_path):
    """2 mixers x 2 losses x 2 seeds at cifar10_lt rho 100, with made-up numbers; UniMix+CE seed 1 failed."""
    cells = expand_grid(["none", "unimix"], ["ce", "bayias"], ["cifar10_lt"], [100.0], [0, 1])
    runs = tmp_path / "runs"
    top1 = {("none", "ce"): (70.0, 72.0), ("none", "bayias"): (78.0, 80.0), ("unimix", "ce"): (76.0, None),
            ("unimix", "bayias"): (82.0, 83.0)}
    for c in cells:
        v = top1[(c.mix.name, c.loss.name)][c.seed]
        if v is None:
            continue
        (runs / c.name).mkdir(parents=True)
        (runs / c.name / "metrics.json").write_text(json.dumps(_fake_metrics(v, ece=20.0 - c.seed * 2)))
    records = {"cifar10_lt-r100-unimix-ce-s1": {"status": "failed", "error": "error: CUDA out of memory", "wall_s": 3.0}}
    return cells, runs, records


def test_tables_from_run_folders_gain_mean_std_and_failed_cell(tmp_path):
    cells, runs, records = _fake_grid(tmp_path)
    rows = collect_results(cells, runs, records)
    assert len(rows) == 8
    by = {r["name"]: r for r in rows}
    assert by["cifar10_lt-r100-unimix-ce-s1"]["status"] == "failed"
    assert by["cifar10_lt-r100-unimix-ce-s1"]["error"] == "error: CUDA out of memory"
    ok = by["cifar10_lt-r100-unimix-bayias-s1"]
    assert ok["status"] == "ok" and ok["top1"] == 83.0 and ok["epochs"] == 200 and ok["train_s"] == 300.0
    assert ok["preset"] == "paper" and ok["commit"] == "abc"

    path = write_results_csv(rows, tmp_path / "results.csv")
    with path.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8
    for col in ("mix", "loss", "dataset", "imb_factor", "seed", "epochs", "top1", "ece", "mce", "many", "medium", "few",
                "preset", "status", "run_dir", "wall_s"):
        assert col in table[0], col
    assert list(table[0]) == RESULT_COLUMNS

    groups = {(g.row, g.col): g for g in aggregate(rows)}
    g = groups[("UniMix", "Bayias")]
    assert g.n == 2 and g.stat("top1")[0] == pytest.approx(82.5)
    assert g.stat("top1")[1] == pytest.approx(0.70710678)  # sample std of 82, 83
    assert g.gain == pytest.approx(82.5 - 79.0)  # over None + Bayias (mean of 78, 80)
    assert groups[("UniMix", "CE")].n == 1 and groups[("UniMix", "CE")].gain == pytest.approx(76.0 - 71.0)
    assert groups[("None", "CE")].gain is None

    md = results_markdown(rows, title="t")
    lines = md.splitlines()
    i = lines.index("**Top-1 accuracy** (gain over None)")
    top1 = lines[i + 2: i + 6]
    assert top1[0] == "| Mixer \\ Loss | CE | Bayias |" and top1[1] == "|---|---:|---:|"
    assert top1[2] == "| None | 71.00 ± 1.41 | 79.00 ± 1.41 |"
    assert top1[3] == "| UniMix | 76.00 (+5.00) [n=1, 1 failed] | 82.50 ± 0.71 (+3.50) |"
    assert all(ln.count("|") == 4 for ln in top1)
    assert "| None | 19.00 ± 1.41 / 30.00 ± 0.00 |" in md  # ECE / MCE
    i = lines.index("**Head / Mid / Tail** top-1 (class-index thirds, SPEC 6)")
    assert lines[i + 4] == "| None | 81.00 ± 1.41 / 71.00 ± 1.41 / 61.00 ± 1.41 | 89.00 ± 1.41 / 79.00 ± 1.41 / 69.00 ± 1.41 |"
    assert "2 seed(s) per cell (seeds 0, 1)" in md
    assert "## Long form" in md and "| cifar10_lt | 100 | 200 | UniMix | Bayias | 2 | 82.50 ± 0.71 | +3.50 |" in md
    assert "| cifar10_lt | 100 | 200 | UniMix | CE | 1 | 76.00 | +5.00 | 20.00 | 30.00 | 90.00 | 70.00 | 40.00 | 76.47 " \
           "|  |  | 1 ok, 1 failed |" in md
    assert "## Failed cells" in md and "`cifar10_lt-r100-unimix-ce-s1` (failed): error: CUDA out of memory" in md
    # the paper's numbers for the same cells (SPEC 7)
    assert "| UniMix | 76.47 | 82.75 |" in md and "| None | 70.36 | 78.70 |" in md

    png = plot_results(aggregate(rows), tmp_path / "results.png", title="t")
    assert png.read_bytes()[:8] == PNG


def test_pending_cells_and_report_only_from_run_folders(run_ablation, tmp_path):
    cells, runs, _ = _fake_grid(tmp_path)
    rows = collect_results(cells, runs, {})
    assert {r["status"] for r in rows} == {"ok", "pending"}
    # --report-only with neither a grid nor grid.json: the cells come from the run folders' train_args.yaml
    out = tmp_path
    for c in cells:
        if (runs / c.name).is_dir():
            (runs / c.name / "train_args.yaml").write_text(
                f"dataset: cifar10_lt\nimb_factor: 100.0\nmix: {c.mix.name}\npreset: paper\nloss: {c.loss.name}\n"
                f"drw: false\ndrw_epoch: null\nseed: {c.seed}\nepochs: 200\n")
    p = run_ablation("--report-only", "--out", out)
    assert "7 cells: 7 ok" in p.stdout
    with (out / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 7
    assert (out / "results.png").read_bytes()[:8] == PNG
    assert "| UniMix | 76.00 (+5.00) [n=1] | 82.50 ± 0.71 (+3.50) |" in (out / "results.md").read_text()
    # with the grid named, the missing cell shows as pending
    p = run_ablation("--report-only", "--out", out, "--mix", "none", "unimix", "--loss", "ce", "bayias",
                     "--dataset", "cifar10_lt", "--imb-factor", "100", "--seed", "0", "1")
    assert "8 cells: 7 ok, 1 pending" in p.stdout


def test_publish_copies_the_report_and_each_finished_cells_small_files(run_ablation, tmp_path):
    cells, runs, _ = _fake_grid(tmp_path)
    out = tmp_path
    for c in cells:
        d = runs / c.name
        if d.is_dir():
            (d / "train_args.yaml").write_text(
                f"dataset: cifar10_lt\nimb_factor: 100.0\nmix: {c.mix.name}\npreset: paper\nloss: {c.loss.name}\n"
                f"drw: false\ndrw_epoch: null\nseed: {c.seed}\nepochs: 200\n")
            (d / "calibration").mkdir(exist_ok=True)
            (d / "calibration" / "bins.csv").write_text("bin,count\n")
            (d / "model.safetensors").write_bytes(b"weights")      # never published
            (d / "checkpoints").mkdir(exist_ok=True)
    dest = tmp_path / "published"
    p = run_ablation("--report-only", "--out", out, "--publish", dest)
    assert "published the report and 7 finished cell(s)" in p.stdout
    for f in ("results.md", "results.csv", "results.png"):
        assert (dest / f).read_bytes() == (out / f).read_bytes(), f
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


def test_unfinished_cells_with_the_default_rho_join_the_finished_block(tmp_path):
    # rho left to the dataset: known from metrics.json once a cell ran, unknown for the cells still pending
    cells = expand_grid(["none", "unimix"], ["ce"], ["digits_lt"], [None], [0])
    cells = [dataclasses.replace(c, epochs=2) for c in cells]
    run = tmp_path / "runs" / cells[0].name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(_fake_metrics(40.0, epochs=2, imb=10.0)))
    rows = collect_results(cells, tmp_path / "runs")
    assert [r["status"] for r in rows] == ["ok", "pending"] and [r["imb_factor"] for r in rows] == [10.0, None]
    groups = aggregate(rows)
    assert {g.block for g in groups} == {("digits_lt", 10.0, 2)}
    md = results_markdown(rows)
    assert md.count("## digits_lt") == 1 and "| UniMix | pending |" in md


# ---- real runs (tiny) -------------------------------------------------------------------------------------

def test_failed_cell_is_reported_and_does_not_stop_the_others(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("mix: none\nloss: [ce, bayias]\ndataset: digits_lt\n"
                    "cells:\n  - {loss: ce, train_args: [--model, resnet33_cifar]}\n")
    out = tmp_path / "o"
    p = run_ablation_process("--grid", grid, "--out", out, "--", *TINY, "--epochs", "1", check=False)
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
    assert "--grid" in rec["command"]


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
    assert "| Mixer \\ Loss | CE | Bayias |" in md and "| UniMix |" in md and "## Long form" in md
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
