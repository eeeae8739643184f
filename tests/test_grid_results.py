"""lt_registry.grid.results and .figure: rows from run folders, groups over seeds, results.csv / results.md next to
the paper's numbers, results.png; and the published results reproduced from their run folders."""
import csv
import dataclasses
import json
import re
from pathlib import Path

import pytest
from conftest import fake_grid, fake_metrics

from lt_registry.grid import expand_grid
from lt_registry.grid.figure import plot_results
from lt_registry.grid.results import (RESULT_COLUMNS, Group, aggregate, collect_results, format_duration,
                                      load_paper_tables, paper_reference, paper_tables, publish, read_grid_json,
                                      recorded_cells, report_header, results_markdown, write_results_csv)
from lt_registry.metrics.table import metric_keys

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def test_tables_from_run_folders_gain_mean_std_and_failed_cell(tmp_path):
    cells, runs, records = fake_grid(tmp_path)
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
    assert len(table) == 8 and list(table[0]) == RESULT_COLUMNS
    assert set(metric_keys("grid")) <= set(RESULT_COLUMNS)  # the metric columns are the metric table's
    for col in ("mix", "loss", "dataset", "imb_factor", "seed", "epochs", "preset", "status", "run_dir", "wall_s"):
        assert col in table[0], col

    groups = {(g.row, g.col): g for g in aggregate(rows)}
    g = groups[("UniMix (paper)", "Bayias")]
    assert g.n == 2 and g.stat("top1")[0] == pytest.approx(82.5)
    assert g.stat("top1")[1] == pytest.approx(0.70710678)  # sample std of 82, 83
    assert g.gain == pytest.approx(82.5 - 79.0)  # over None + Bayias (mean of 78, 80)
    assert groups[("UniMix (paper)", "CE")].n == 1 and groups[("UniMix (paper)", "CE")].gain == pytest.approx(76.0 - 71.0)
    assert groups[("None", "CE")].gain is None

    md = results_markdown(rows, title="t")
    lines = md.splitlines()
    i = lines.index("**Top-1 accuracy** (gain over None)")
    top1 = lines[i + 2: i + 6]
    assert top1[0] == "| Mixer \\ Loss | CE | Bayias |" and top1[1] == "|---|---:|---:|"
    assert top1[2] == "| None | 71.00 ± 1.41 | 79.00 ± 1.41 |"
    assert top1[3] == "| UniMix (paper) | 76.00 (+5.00) [n=1, 1 failed] | 82.50 ± 0.71 (+3.50) |"
    assert "| None | 19.00 ± 1.41 / 30.00 ± 0.00 |" in md  # ECE / MCE
    i = lines.index("**Head / Mid / Tail** top-1 (class-index thirds, docs/method.md §6)")
    assert lines[i + 4] == "| None | 81.00 ± 1.41 / 71.00 ± 1.41 / 61.00 ± 1.41 | 89.00 ± 1.41 / 79.00 ± 1.41 / 69.00 ± 1.41 |"
    assert "- cells: 8 (7 ok, 1 failed)" in md and "2 seed(s) per cell (seeds 0, 1)" in md
    assert "## Long form" in md and "| cifar10_lt | 100 | 200 | UniMix (paper) | Bayias | 2 | 82.50 ± 0.71 | +3.50 |" in md
    assert "| cifar10_lt | 100 | 200 | UniMix (paper) | CE | 1 | 76.00 | +5.00 | 20.00 | 30.00 | 90.00 | 70.00 | 40.00 | 76.47 " \
           "|  |  | 1 ok, 1 failed |" in md
    assert "## Failed cells" in md and "`cifar10_lt-r100-unimix-ce-s1` (failed): error: CUDA out of memory" in md
    # the paper's numbers for the same cells (Tables 1 and 4)
    assert "| UniMix (paper) | 76.47 | 82.75 |" in md and "| None | 70.36 | 78.70 |" in md
    assert "SPEC" not in md

    png = plot_results(aggregate(rows), tmp_path / "results.png", title="t")
    assert png.read_bytes()[:8] == PNG


def test_pending_incomplete_and_unreadable_cells(tmp_path):
    cells, runs, _ = fake_grid(tmp_path)
    rows = collect_results(cells, runs, {})
    assert {r["status"] for r in rows} == {"ok", "pending"}
    (runs / cells[-1].name / "metrics.json").write_text("{not json")
    (runs / "cifar10_lt-r100-unimix-ce-s1" / "checkpoints").mkdir(parents=True)
    (runs / "cifar10_lt-r100-unimix-ce-s1" / "checkpoints" / "latest").write_text("epoch_0000")
    by = {r["name"]: r for r in collect_results(cells, runs)}
    assert by["cifar10_lt-r100-unimix-ce-s1"]["status"] == "incomplete"
    assert by[cells[-1].name]["status"] == "failed" and "unreadable" in by[cells[-1].name]["error"]


def test_unfinished_cells_with_the_default_rho_join_the_finished_block(tmp_path):
    # rho left to the dataset: known from metrics.json once a cell ran, unknown for the cells still pending
    cells = expand_grid(["none", "unimix"], ["ce"], ["digits_lt"], [None], [0])
    cells = [dataclasses.replace(c, epochs=2) for c in cells]
    run = tmp_path / "runs" / cells[0].name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(fake_metrics(40.0, epochs=2, imb=10.0)))
    rows = collect_results(cells, tmp_path / "runs")
    assert [r["status"] for r in rows] == ["ok", "pending"] and [r["imb_factor"] for r in rows] == [10.0, None]
    assert {g.block for g in aggregate(rows)} == {("digits_lt", 10.0, 2)}
    md = results_markdown(rows)
    assert md.count("## digits_lt") == 1 and "| UniMix (official) | pending |" in md  # bare unimix = the default


def test_a_component_registered_outside_appears_in_the_tables_under_its_label(tmp_path, outside_components):
    cells = expand_grid(["none", "outside_mix"], ["ce", "outside_ce"], ["cifar10_lt"], [100.0])
    for i, c in enumerate(cells):
        (tmp_path / c.name).mkdir()
        (tmp_path / c.name / "metrics.json").write_text(json.dumps(fake_metrics(50.0 + i)))
    md = results_markdown(collect_results(cells, tmp_path))
    assert "| Mixer \\ Loss | CE | OutsideCE |" in md and "| OutsideMix | 52.00 (+2.00) | 53.00 (+2.00) |" in md


def test_the_paper_tables_are_data():
    t = paper_tables()
    assert len(t.top1) == 6 * 8 + 6 * 4 and len(t.calibration) == 7
    assert t.top1[("cifar10_lt", 100.0, "unimix", "bayias")] == 82.75               # Table 1
    assert t.top1[("cifar100_lt", 200.0, "remix", "bayias")] == 41.44               # Table 4
    assert t.top1[("cifar10_lt", 10.0, "none", "ldam+drw")] == 88.16
    assert t.calibration[("cifar100_lt", 100.0, "none", "ce")] == (38.23, 87.22)    # Table 2
    # the paper reports one UniMix: a cell of either preset is compared with it
    for spec in ("unimix:paper", "unimix:official"):
        assert paper_reference(Group("cifar10_lt", 100.0, 200, "r", "c", spec, "bayias", "")) == (82.75, (10.19, 25.47))
    assert paper_reference(Group("cifar10_lt", 100.0, 200, "r", "c", "mixup", "bayias", ""))[0] == 81.75
    with pytest.raises(ValueError, match="2 values for 4 imbalance factors"):
        load_paper_tables("top1:\n  - {table: 1, imb_factor: [10, 50, 100, 200], rows: "
                          "[{mix: none, loss: ce, cifar10_lt: [1, 2]}]}\n")
    assert format_duration(3725) == "1h02m05s" and format_duration(3725, short=True) == "1h02m"
    assert format_duration(None) == "n/a" and format_duration(None, short=True) == ""


def test_publish_copies_the_report_and_each_finished_cells_small_files(tmp_path):
    cells, runs, _ = fake_grid(tmp_path)
    (tmp_path / "results.md").write_text("# r")
    for d in runs.iterdir():
        (d / "model.safetensors").write_bytes(b"w")
    assert publish(tmp_path, tmp_path / "pub", cells) == 7
    assert (tmp_path / "pub" / "results.md").read_text() == "# r"
    assert {f.name for f in (tmp_path / "pub" / "runs").rglob("*") if f.is_file()} == {"metrics.json"}
    with pytest.raises(ValueError, match="--publish needs a folder other than"):
        publish(tmp_path, tmp_path, cells)


PUBLISHED = sorted(d for d in (ROOT / "results").iterdir() if (d / "grid.json").is_file() and (d / "runs").is_dir())


@pytest.mark.parametrize("folder", PUBLISHED, ids=lambda d: d.name)
def test_published_results_are_reproduced_from_their_run_folders(folder):
    """results.md / results.csv rebuilt from a committed grid's grid.json and run folders: the same tables and
    numbers (the header holds when and where the report was built; published logs are not committed)."""
    record = read_grid_json(folder)
    cells, records = recorded_cells([], record)
    rows = collect_results(cells, folder / "runs", records)
    title = (folder / "results.md").read_text().splitlines()[0][2:]
    md = results_markdown(rows, title=title)

    def body(text):
        text = text[text.index("- cells:"):]
        return re.sub(r" — log: `[^`]*`", "", text)

    assert body(md) == body((folder / "results.md").read_text())
    with (folder / "results.csv").open() as f:
        published = list(csv.DictReader(f))
    assert len(published) == len(rows)
    for want, got in zip(published, rows):
        for k, v in want.items():
            if k not in ("run_dir", "log"):
                assert str("" if got[k] is None else got[k]) == v, (want["name"], k)


def test_report_header_counts_the_last_invocations_run_resumed_and_skipped_cells():
    inv = {"command": "python recipes/ablation.py --grid g.yaml", "cwd": ".", "git_commit": "abc1234",
           "hardware": {}, "wall_s": 65.0, "ran": ["a"], "resumed": ["b", "c"], "skipped": ["d"], "jobs": 1,
           "threads_per_job": 2, "started": "t0", "finished": "t1"}
    header = report_header({"invocations": [inv]}, {"a": {"wall_s": 60.0}, "b": {"wall_s": 5.0}}, "runs")
    wall = next(h for h in header if h.startswith("wall time"))
    assert "(1 cells run, 2 resumed, 1 skipped as finished; 1 job(s) at once, 2 thread(s) each)" in wall
    assert wall.endswith("1m05s summed over cells")
    inv.pop("resumed")
    wall = next(h for h in report_header({"invocations": [inv]}, {}, "runs") if h.startswith("wall time"))
    assert "(1 cells run, 1 skipped as finished;" in wall
