"""recipes/evaluate.py: a checkpoint evaluated again gives the run's own numbers; imbalanced test sets with
the post-hoc prior adaptation (docs/method.md §2); one-line errors."""
import json
import math
from pathlib import Path

import pytest
import torch

from conftest import load_recipe


@pytest.fixture(scope="module")
def evaluate_recipe():
    return load_recipe("evaluate")


@pytest.fixture
def two_threads():
    # the run was evaluated by a process with OMP_NUM_THREADS=2: same kernels, same summation order
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def test_evaluating_a_run_reproduces_its_final_metrics(tiny_run, evaluate_recipe, tmp_path, two_threads, capsys):
    from lt_registry.report import read_bins_table

    out = tmp_path / "eval"
    assert evaluate_recipe.main([str(tiny_run), "--output", str(out)]) == 0
    assert "500 test images" in capsys.readouterr().out
    got = json.loads((out / "metrics.json").read_text())
    ref = json.loads((tiny_run / "metrics.json").read_text())["final"]
    final = got["final"]
    assert final["top1"] == ref["top1"] and 20 < ref["top1"] < 100  # a model that learned something
    for k in ("many", "medium", "few", "head", "mid", "tail", "per_class_accuracy", "num_test_samples"):
        assert final[k] == ref[k], k
    for k in ("ece", "mce", "ace", "tace", "sce", "brier", "nll"):
        assert final[k] == pytest.approx(ref[k], abs=1e-3), k
    assert set(final) == set(ref)
    assert got["evaluation"]["dataset"] == "digits_lt" and got["evaluation"]["adapt_prior"] is False
    assert got["lt"]["class_counts"] == ref_counts(tiny_run)
    for png in (out / "confusion.png", out / "calibration" / "reliability.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bins = read_bins_table(out / "calibration" / "bins.csv")
    run_bins = read_bins_table(tiny_run / "calibration" / "bins.csv")
    assert list(bins["count"]) == list(run_bins["count"])


def ref_counts(run: Path):
    return json.loads((run / "config.json").read_text())["lt"]["class_counts"]


def test_adapt_prior_on_an_imbalanced_test_set(tiny_run, evaluate_recipe, tmp_path, two_threads):
    from lt_registry.data import build_dataset
    from lt_registry.hub import from_pretrained

    out = tmp_path / "r10"
    argv = [f"local-dir:{tiny_run}", "--test-imb-factor", "10", "--adapt-prior", "--output", str(out)]
    assert evaluate_recipe.main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    ev, final = m["evaluation"], m["final"]
    assert ev["test_imb_factor"] == 10 and ev["adapt_prior"] is True
    assert ev["assumed_prior"] == "uniform"  # a Bayias model: its raw logits assume a uniform test prior
    counts = ev["test_counts"]
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.05) and final["num_test_samples"] == sum(counts) < 500
    assert sum(ev["test_prior"]) == pytest.approx(1.0) and ev["test_prior"][0] > ev["test_prior"][-1]
    for f in ("calibration/reliability.png", "calibration/bins.csv", "confusion.png"):
        assert (out / f).is_file(), f
    # the same numbers by hand: z + log pi'_test - log(1/C) on the imbalanced test set
    ds = build_dataset("digits_lt", test_imb_factor=10)
    model, _ = from_pretrained(tiny_run)
    x = torch.stack([ds.test[i][0] for i in range(len(ds.test))])
    y = torch.tensor([int(ds.test[i][1]) for i in range(len(ds.test))])
    with torch.no_grad():
        z = model(x) + torch.log(torch.tensor(ds.meta["test_prior"])) + math.log(10)
    assert final["top1"] == round(100 * float((z.argmax(1) == y).float().mean()), 4)
    # and the adaptation did something: the plain evaluation of the same set predicts differently
    plain = tmp_path / "r10_plain"
    assert evaluate_recipe.main([str(tiny_run), "--test-imb-factor", "10", "--output", str(plain)]) == 0
    plain_final = json.loads((plain / "metrics.json").read_text())["final"]
    assert plain_final["num_test_samples"] == final["num_test_samples"]
    assert plain_final["per_class_accuracy"] != final["per_class_accuracy"]


@pytest.mark.parametrize("argv,message", [
    (["/nonexistent/run"], "/nonexistent/run is not a folder"),
    (["{run}", "--dataset", "digits_tl"], "unknown dataset 'digits_tl'"),
])
def test_bad_input_ends_with_one_clear_message(tiny_run, evaluate_recipe, tmp_path, capsys, argv, message):
    argv = [a.format(run=tiny_run) for a in argv] + ["--output", str(tmp_path / "out")]
    assert evaluate_recipe.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


@pytest.fixture(scope="module")
def prior_shift_recipe():
    return load_recipe("prior_shift")


def test_prior_shift_table_matches_single_evaluations(tiny_run, evaluate_recipe, prior_shift_recipe, tmp_path,
                                                      two_threads, capsys):
    """Table D2's recipe: every (rho', raw / + pi') entry is evaluate.py's number for that test set."""
    import csv

    out, reports = tmp_path / "table", tmp_path / "reports"
    argv = [str(tiny_run), "--test-imb-factor", "10", "1", "0.1", "--output", str(out), "--reports", str(reports),
            "--estimators"]  # the flag alone: the known-prior table only
    assert prior_shift_recipe.main(argv) == 0
    with (out / "table.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["label"], float(r["test_imb_factor"]), r["adapted"]) for r in rows] == [
        ("none-bayias", rho, a) for rho in (10.0, 1.0, 0.1) for a in ("False", "True")]
    by = {(float(r["test_imb_factor"]), r["adapted"] == "True"): r for r in rows}
    for (rho, adapted), r in by.items():
        single = tmp_path / f"single-{rho}-{adapted}"
        assert evaluate_recipe.main([str(tiny_run), "--test-imb-factor", str(rho), "--output", str(single)]
                                    + (["--adapt-prior"] if adapted else [])) == 0
        ref = json.loads((single / "metrics.json").read_text())["final"]
        assert float(r["top1"]) == pytest.approx(ref["top1"], abs=1e-3) and int(r["num_test_samples"]) == ref["num_test_samples"]
        assert float(r["ece"]) == pytest.approx(ref["ece"], abs=1e-3)
        assert (reports / "none-bayias" / (f"r{rho:g}" + ("-adapted" if adapted else "")) / "metrics.json").is_file()
    # a Bayias model assumes a uniform test prior: on the balanced set the adaptation changes nothing
    assert by[(1.0, True)]["top1"] == by[(1.0, False)]["top1"] and by[(1.0, True)]["ece"] == by[(1.0, False)]["ece"]
    # the reversed tail (rho' = 0.1) makes the last class the most frequent one
    counts = {rho: json.loads((reports / "none-bayias" / f"r{rho:g}" / "metrics.json").read_text())
              ["evaluation"]["test_counts"] for rho in (10.0, 0.1)}
    assert counts[0.1] == counts[10.0][::-1] and counts[0.1][-1] > counts[0.1][0]
    md = (out / "table.md").read_text()
    assert "| none-bayias | raw |" in md and "| none-bayias | + pi' |" in md and "rho'=0.1" in md
    assert "recipes/prior_shift.py" in (out / "command.txt").read_text()
    capsys.readouterr()
    assert prior_shift_recipe.main([str(tiny_run), "--label", "a", "b", "--output", str(out)]) == 2
    assert "--label needs one name per model" in capsys.readouterr().err
    assert prior_shift_recipe.main([str(tiny_run), "--test-imb-factor", "0", "--output", str(out)]) == 2
    assert "--test-imb-factor values must be > 0" in capsys.readouterr().err


def test_prior_shift_unknown_prior_rows(tiny_run, evaluate_recipe, prior_shift_recipe, tmp_path, two_threads):
    """The estimator rows (EM, BBSE): fitted on the run's validation split and the unlabelled test logits, their
    TV measured against the true prior of each imbalanced test set."""
    import csv

    from lt_registry import create_calibrator
    from lt_registry.data import build_dataset
    from lt_registry.hub import from_pretrained

    out, reports = tmp_path / "table", tmp_path / "reports"
    argv = [str(tiny_run), "--test-imb-factor", "10", "0.1", "--output", str(out), "--reports", str(reports)]
    assert prior_shift_recipe.main(argv) == 0  # default: --estimators em bbse
    with (out / "table.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(float(r["test_imb_factor"]), r["adapted"]) for r in rows] == [
        (rho, a) for rho in (10.0, 0.1) for a in ("False", "True", "em", "bbse")]
    assert all(r["tv"] == "" for r in rows if r["adapted"] in ("False", "True"))
    priors = json.loads((out / "priors.json").read_text())["rows"]
    assert [(p["test_imb_factor"], p["estimator"]) for p in priors] == [
        (rho, e) for rho in (10.0, 0.1) for e in ("prior_em", "prior_bbse")]

    model, _ = from_pretrained(tiny_run)
    model.eval()

    def logits(split):
        x = torch.stack([split[i][0] for i in range(len(split))])
        with torch.no_grad():
            return model(x).double(), torch.tensor([int(split[i][1]) for i in range(len(split))])

    for rho in (10.0, 0.1):
        ds = build_dataset("digits_lt", test_imb_factor=rho)
        true = torch.tensor(ds.meta["test_prior"], dtype=torch.float64)
        assert true[0] != true[-1]  # an imbalanced test set: the true prior is not the uniform one
        # the same test set as evaluate.py's rows
        single = json.loads((reports / "none-bayias" / f"r{rho:g}" / "metrics.json").read_text())
        for key, calib in (("em", "prior_em"), ("bbse", "prior_bbse")):
            row = next(r for r in rows if float(r["test_imb_factor"]) == rho and r["adapted"] == key)
            rep = json.loads((reports / "none-bayias" / f"r{rho:g}-{key}" / "metrics.json").read_text())
            ev = rep["evaluation"]
            assert ev["estimator"] == calib and ev["test_counts"] == single["evaluation"]["test_counts"]
            assert int(row["num_test_samples"]) == single["final"]["num_test_samples"] == sum(ev["test_counts"])
            assert ev["fitted_on"]["labelled_validation_images"] == len(ds.val)
            assert ev["test_prior"] == pytest.approx(true.tolist(), abs=1e-12)
            q = torch.tensor(ev["estimated_prior"], dtype=torch.float64)
            tv = 0.5 * float((q - true).abs().sum())
            assert ev["tv"] == pytest.approx(tv, abs=1e-12) and float(row["tv"]) == pytest.approx(tv, abs=1e-4)
            assert tv != pytest.approx(0.5 * float((q - 0.1).abs().sum()), abs=1e-6)  # not against the uniform prior
            p = next(p for p in priors if p["test_imb_factor"] == rho and p["estimator"] == calib)
            assert p["tv"] == pytest.approx(tv, abs=1e-12) and p["estimate"] == pytest.approx(ev["estimated_prior"])
        # the EM estimate again by hand: validation split (labelled) + test logits (unlabelled), nothing else
        vz, vy = logits(ds.val)
        tz, _ = logits(ds.test)
        em = create_calibrator("prior_em").fit(tz, val_logits=vz, val_labels=vy)
        got = json.loads((reports / "none-bayias" / f"r{rho:g}-em" / "metrics.json").read_text())["evaluation"]
        assert got["estimated_prior"] == pytest.approx(em.test_prior.tolist(), abs=1e-4)
    md = (out / "table.md").read_text()
    for line in ("| none-bayias | raw |", "| none-bayias | + pi' |", "| none-bayias | + EM |",
                 "| none-bayias | + BBSE |", "## TV distance", "| none-bayias | EM |", "## Summary over rho' != 1"):
        assert line in md, line
